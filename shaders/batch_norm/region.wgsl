// Region Normalization RN-B (docs/methods.md A7, geekyutao/RN): BatchNorm statistics per channel
// computed separately inside the region mask M and outside it (batch statistics, biased, also at
// inference), y = (x - mu_r) / sqrt(var_r + eps * NHW / S_r) * (1 + gamma_r) + beta_f + beta_b
// for the pixel's region r (S_r its pixel count, 1 when empty). Stages (STAGE):
//   0 MASK     nearest-neighbour resize of the mask [N, 1, Hm, Wm] to the feature size [N, H*W]
//   1 MOMENTS  per (channel, tile): Welford moments inside and outside, merged in the workgroup
//   2 FINALIZE per channel: tiles merged in order; [mu_in, scale_in, mu_out, scale_out, shift]
//   3 APPLY    per element
// Scratch (f32): [mask (N*HW) | partials (C * tiles * 2 moments) | coefficients (5 * C)].
//
// RN-L (RNL): the mask is learned from x: s = sigmoid(conv7x7_{2->1}([mean_c x, max_c x])),
// M = [s >= threshold]; gamma = conv7x7(s) + b_g and beta = conv7x7(s) + b_b are per-pixel maps;
// y = r * (1 + gamma) + beta with r the region-normalized x. Stages 4 POOL, 5 CONV_MASK and
// 6 CONV_AFFINE replace MASK; bindings 2..6 hold the mask conv's weight [2, 7, 7], the gamma
// conv's weight [7, 7] and bias [1], the beta conv's weight [7, 7] and bias [1]. The scratch
// continues with [pooled (2 * N*HW) | s (N*HW) | gamma map (N*HW) | beta map (N*HW)]. The
// convolutions are cross-correlations with zero padding 3, as torch.nn.Conv2d.

override WG: u32 = 256u;
override STAGE: u32 = 0u;
override RNL: bool = false;


@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> mask_in: array<f32>;
@group(0) @binding(3) var<storage, read> gamma_f: array<f32>;
@group(0) @binding(4) var<storage, read> gamma_b: array<f32>;
@group(0) @binding(5) var<storage, read> beta_f: array<f32>;
@group(0) @binding(6) var<storage, read> beta_b: array<f32>;
@group(0) @binding(7) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<Elem>;

var<workgroup> red_in: array<Moments, WG>;
var<workgroup> red_out: array<Moments, WG>;

fn off_coef() -> u32 {
    return off_partials() + params.c * params.tiles * 6u;
}

fn off_pooled() -> u32 {
    return off_coef() + 5u * params.c;
}
fn off_s() -> u32 {
    return off_pooled() + 2u * params.n * hw();
}
fn off_gamma_map() -> u32 {
    return off_s() + params.n * hw();
}
fn off_beta_map() -> u32 {
    return off_gamma_map() + params.n * hw();
}


fn welford(acc: Moments, v: f32) -> Moments {
    return moments_merge(acc, Moments(1.0, v, 0.0));
}

fn resize(i: u32) {
    if i >= params.n * hw() {
        return;
    }
    let n = i / hw();
    let s = i - n * hw();
    let hh = s / params.w;
    let ww = s - hh * params.w;
    // PyTorch 'nearest': source index floor(dst * in / out).
    let sh = hh * params.hm / params.h;
    let sw = ww * params.wm / params.w;
    let m = mask_in[(n * params.hm + sh) * params.wm + sw];
    scratch[i] = select(0.0, 1.0, m > 0.5);
}

// RN-L stage 4: mean and max over the channels of each pixel.
fn pool(i: u32) {
    if i >= params.n * hw() {
        return;
    }
    let n = i / hw();
    let s = i - n * hw();
    var sum = 0.0;
    var mx = -3.0e38;
    for (var ch = 0u; ch < params.c; ch++) {
        let v = x_load(index(n, ch, s));
        sum += v;
        mx = max(mx, v);
    }
    scratch[off_pooled() + i] = sum / f32(params.c);
    scratch[off_pooled() + params.n * hw() + i] = mx;
}

// 7x7 cross-correlation of plane `base` (N*HW pixels per plane) at pixel i, weights w(k) = the
// k-th of 49, zero padding 3.
fn conv_at(i: u32, base: u32, which: u32, plane: u32) -> f32 {
    let n = i / hw();
    let s = i - n * hw();
    let hh = i32(s / params.w);
    let ww = i32(s % params.w);
    var acc = 0.0;
    for (var dy = 0; dy < 7; dy++) {
        let yy = hh + dy - 3;
        if yy < 0 || yy >= i32(params.h) {
            continue;
        }
        for (var dx = 0; dx < 7; dx++) {
            let xx = ww + dx - 3;
            if xx < 0 || xx >= i32(params.w) {
                continue;
            }
            let k = u32(dy * 7 + dx);
            let v = scratch[base + n * hw() + u32(yy) * params.w + u32(xx)];
            var wv: f32;
            switch which {
                case 0u: {
                    wv = mask_in[plane * 49u + k];
                }
                case 1u: {
                    wv = gamma_f[k];
                }
                default: {
                    wv = beta_f[k];
                }
            }
            acc += wv * v;
        }
    }
    return acc;
}

// RN-L stage 5: s = sigmoid(conv(pooled)), M = [s >= threshold].
fn conv_mask(i: u32) {
    if i >= params.n * hw() {
        return;
    }
    let plane = params.n * hw();
    let z = conv_at(i, off_pooled(), 0u, 0u) + conv_at(i, off_pooled() + plane, 0u, 1u);
    let sv = 1.0 / (1.0 + exp(-z));
    scratch[off_s() + i] = sv;
    scratch[i] = select(0.0, 1.0, sv >= params.threshold);
}

// RN-L stage 6: the gamma and beta maps from s.
fn conv_affine(i: u32) {
    if i >= params.n * hw() {
        return;
    }
    scratch[off_gamma_map() + i] = conv_at(i, off_s(), 1u, 0u) + gamma_b[0];
    scratch[off_beta_map() + i] = conv_at(i, off_s(), 2u, 0u) + beta_b[0];
}

fn moments_stage(g: u32, lid: u32) {
    let live = g < params.c * params.tiles;
    let ch = g / params.tiles;
    let tile = g - ch * params.tiles;
    let len = params.n * hw();
    let start = tile * params.tile_len;
    let end = select(0u, min(len, start + params.tile_len), live);
    var a_in = Moments(0.0, 0.0, 0.0);
    var a_out = Moments(0.0, 0.0, 0.0);
    for (var j = start + lid; j < end; j += WG) {
        let n = j / hw();
        let s = j - n * hw();
        let v = x_load(index(n, ch, s));
        if scratch[j] > 0.5 {
            a_in = welford(a_in, v);
        } else {
            a_out = welford(a_out, v);
        }
    }
    red_in[lid] = a_in;
    red_out[lid] = a_out;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if lid < h {
            red_in[lid] = moments_merge(red_in[lid], red_in[lid + h]);
            red_out[lid] = moments_merge(red_out[lid], red_out[lid + h]);
        }
    }
    if live && lid == 0u {
        let o = off_partials() + g * 6u;
        scratch[o] = red_in[0].n;
        scratch[o + 1u] = red_in[0].mean;
        scratch[o + 2u] = red_in[0].m2;
        scratch[o + 3u] = red_out[0].n;
        scratch[o + 4u] = red_out[0].mean;
        scratch[o + 5u] = red_out[0].m2;
    }
}

fn finalize(ch: u32) {
    if ch >= params.c {
        return;
    }
    let st = region_stats(ch);
    let rs_in = st.rs_in;
    let rs_out = st.rs_out;
    let c = params.c;
    let o = off_coef();
    scratch[o + ch] = st.mean_in;
    scratch[o + 2u * c + ch] = st.mean_out;
    if RNL {
        // The affine is per pixel (apply).
        scratch[o + c + ch] = rs_in;
        scratch[o + 3u * c + ch] = rs_out;
        scratch[o + 4u * c + ch] = 0.0;
    } else {
        scratch[o + c + ch] = rs_in * (1.0 + gamma_f[ch]);
        scratch[o + 3u * c + ch] = rs_out * (1.0 + gamma_b[ch]);
        scratch[o + 4u * c + ch] = beta_f[ch] + beta_b[ch];
    }
}

fn apply(i: u32) {
    let len = params.n * params.c * hw();
    if i >= len {
        return;
    }
    var ch: u32;
    var pix: u32;
    if NHWC {
        ch = i % params.c;
        pix = i / params.c;
    } else {
        let nc = i / hw();
        ch = nc % params.c;
        pix = (nc / params.c) * hw() + (i - nc * hw());
    }
    let c = params.c;
    let o = off_coef();
    let v = x_load(i);
    var out: f32;
    if scratch[pix] > 0.5 {
        out = (v - scratch[o + ch]) * scratch[o + c + ch];
    } else {
        out = (v - scratch[o + 2u * c + ch]) * scratch[o + 3u * c + ch];
    }
    if RNL {
        out = out * (1.0 + scratch[off_gamma_map() + pix]) + scratch[off_beta_map() + pix];
    }
    y_store(i, out + scratch[o + 4u * c + ch]);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    switch STAGE {
        case 0u: {
            resize(g * WG + lid);
        }
        case 1u: {
            moments_stage(g, lid);
        }
        case 2u: {
            finalize(g * WG + lid);
        }
        case 4u: {
            pool(g * WG + lid);
        }
        case 5u: {
            conv_mask(g * WG + lid);
        }
        case 6u: {
            conv_affine(g * WG + lid);
        }
        default: {
            apply(g * WG + lid);
        }
    }
}
