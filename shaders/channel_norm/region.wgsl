// Region Normalization RN-B (NORMS.md A7, geekyutao/RN): BatchNorm statistics per channel
// computed separately inside the region mask M and outside it (batch statistics, biased, also at
// inference), y = (x - mu_r) / sqrt(var_r + eps * NHW / S_r) * (1 + gamma_r) + beta_f + beta_b
// for the pixel's region r (S_r its pixel count, 1 when empty). Stages (STAGE):
//   0 MASK     nearest-neighbour resize of the mask [N, 1, Hm, Wm] to the feature size [N, H*W]
//   1 MOMENTS  per (channel, tile): Welford moments inside and outside, merged in the workgroup
//   2 FINALIZE per channel: tiles merged in order; [mu_in, scale_in, mu_out, scale_out, shift]
//   3 APPLY    per element
// Scratch (f32): [mask (N*HW) | partials (C * tiles * 2 moments) | coefficients (5 * C)].

override WG: u32 = 256u;
override STAGE: u32 = 0u;
// x is (N, H, W, C) instead of (N, C, H, W).
override NHWC: bool = false;

struct RegionParams {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    hm: u32,
    wm: u32,
    tiles: u32,
    tile_len: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: RegionParams;
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

fn hw() -> u32 {
    return params.h * params.w;
}
fn off_partials() -> u32 {
    return params.n * hw();
}
fn off_coef() -> u32 {
    return off_partials() + params.c * params.tiles * 6u;
}

fn index(n: u32, ch: u32, s: u32) -> u32 {
    if NHWC {
        return (n * hw() + s) * params.c + ch;
    }
    return (n * params.c + ch) * hw() + s;
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
        let v = to_v(x[index(n, ch, s)]);
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
    var a_in = Moments(0.0, 0.0, 0.0);
    var a_out = Moments(0.0, 0.0, 0.0);
    for (var t = 0u; t < params.tiles; t++) {
        let o = off_partials() + (ch * params.tiles + t) * 6u;
        a_in = moments_merge(a_in, Moments(scratch[o], scratch[o + 1u], scratch[o + 2u]));
        a_out = moments_merge(a_out, Moments(scratch[o + 3u], scratch[o + 4u], scratch[o + 5u]));
    }
    let total = f32(params.n * hw());
    // An empty region counts 1 pixel, as the official code's S = 0 -> 1 (its pixels: none).
    let s_in = max(a_in.n, 1.0);
    let s_out = max(a_out.n, 1.0);
    let rs_in = inverseSqrt(a_in.m2 / s_in + params.eps * total / s_in);
    let rs_out = inverseSqrt(a_out.m2 / s_out + params.eps * total / s_out);
    let c = params.c;
    let o = off_coef();
    scratch[o + ch] = a_in.mean;
    scratch[o + c + ch] = rs_in * (1.0 + gamma_f[ch]);
    scratch[o + 2u * c + ch] = a_out.mean;
    scratch[o + 3u * c + ch] = rs_out * (1.0 + gamma_b[ch]);
    scratch[o + 4u * c + ch] = beta_f[ch] + beta_b[ch];
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
    let v = to_v(x[i]);
    var out: f32;
    if scratch[pix] > 0.5 {
        out = (v - scratch[o + ch]) * scratch[o + c + ch];
    } else {
        out = (v - scratch[o + 2u * c + ch]) * scratch[o + 3u * c + ch];
    }
    y[i] = from_v(out + scratch[o + 4u * c + ch]);
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
        default: {
            apply(g * WG + lid);
        }
    }
}
