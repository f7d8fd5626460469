// Region Normalization RN-B's backward (docs/methods.md A7): each pixel's region R (inside or
// outside the mask) is a BatchNorm slot of the channel over its S_R pixels of the batch, with
// y = (x - mu_R) * rs_R * (1 + gamma_R) + beta_f + beta_b, rs_R = 1 / sqrt(var_R + eps NHW / S_R):
//   dx = rs_R ((1 + gamma_R) (dy - sum_R(dy) / S_R) - xhat (1 + gamma_R) sum_R(dy xhat) / S_R),
//   dgamma_R = sum_R dy xhat, dbeta_f = dbeta_b = sum dy.
// Runs after the forward kernel's stages 0-2 (mask, moments, merge) in the same scratch, whose
// tail it uses: [stats (6 C) | partials (4 C tiles) | sums (4 C)]. Stages (GSTAGE):
//   0 STATS    per channel: (mu_in, rs_in, mu_out, rs_out, S_in, S_out) from the moments
//   1 PARTIALS per (channel, tile): (sum dy, sum dy xhat) inside and outside, workgroup sums
//   2 FINALIZE per channel: tiles summed in order; the parameter gradients (PARAMS 0: dgamma_f,
//              dgamma_b into out_a, out_b; 1: dbeta into both)
//   3 DX       per element

override WG: u32 = 256u;
override GSTAGE: u32 = 0u;
override PARAMS: u32 = 0u;


@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> dy: array<Elem>;
@group(0) @binding(3) var<storage, read> gamma_f: array<f32>;
@group(0) @binding(4) var<storage, read> gamma_b: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(7) var<storage, read_write> out_a: array<f32>;
@group(0) @binding(8) var<storage, read_write> out_b: array<f32>;

var<workgroup> red: array<vec4<f32>, WG>;

fn off_stats() -> u32 {
    return off_partials() + params.c * params.tiles * 6u + 5u * params.c;
}
fn off_gpartials() -> u32 {
    return off_stats() + 6u * params.c;
}
fn off_sums() -> u32 {
    return off_gpartials() + 4u * params.c * params.tiles;
}


fn stats(ch: u32) {
    if ch >= params.c {
        return;
    }
    let st = region_stats(ch);
    let o = off_stats() + 6u * ch;
    scratch[o] = st.mean_in;
    scratch[o + 1u] = st.rs_in;
    scratch[o + 2u] = st.mean_out;
    scratch[o + 3u] = st.rs_out;
    scratch[o + 4u] = st.s_in;
    scratch[o + 5u] = st.s_out;
}

fn partials(g: u32, lid: u32) {
    let live = g < params.c * params.tiles;
    let ch = min(g / params.tiles, params.c - 1u);
    let tile = g - (g / params.tiles) * params.tiles;
    let len = params.n * hw();
    let start = tile * params.tile_len;
    let end = select(0u, min(len, start + params.tile_len), live);
    let o = off_stats() + 6u * ch;
    var acc = vec4<f32>(0.0);
    for (var j = start + lid; j < end; j += WG) {
        let n = j / hw();
        let s = j - n * hw();
        let e = index(n, ch, s);
        let d = dy_load(e);
        if scratch[j] > 0.5 {
            let xhat = (x_load(e) - scratch[o]) * scratch[o + 1u];
            acc += vec4<f32>(d, d * xhat, 0.0, 0.0);
        } else {
            let xhat = (x_load(e) - scratch[o + 2u]) * scratch[o + 3u];
            acc += vec4<f32>(0.0, 0.0, d, d * xhat);
        }
    }
    red[lid] = acc;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if lid < h {
            red[lid] += red[lid + h];
        }
    }
    if live && lid == 0u {
        let p = off_gpartials() + g * 4u;
        scratch[p] = red[0].x;
        scratch[p + 1u] = red[0].y;
        scratch[p + 2u] = red[0].z;
        scratch[p + 3u] = red[0].w;
    }
}

fn finalize(ch: u32) {
    if ch >= params.c {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var t = 0u; t < params.tiles; t++) {
        let p = off_gpartials() + (ch * params.tiles + t) * 4u;
        acc += vec4<f32>(scratch[p], scratch[p + 1u], scratch[p + 2u], scratch[p + 3u]);
    }
    if PARAMS == 0u {
        let o = off_sums() + 4u * ch;
        scratch[o] = acc.x;
        scratch[o + 1u] = acc.y;
        scratch[o + 2u] = acc.z;
        scratch[o + 3u] = acc.w;
        out_a[ch] = acc.y;
        out_b[ch] = acc.w;
    } else {
        out_a[ch] = acc.x + acc.z;
        out_b[ch] = acc.x + acc.z;
    }
}

fn dx_at(i: u32) {
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
    let o = off_stats() + 6u * ch;
    let q = off_sums() + 4u * ch;
    let inside = scratch[pix] > 0.5;
    let mu = select(scratch[o + 2u], scratch[o], inside);
    let rs = select(scratch[o + 3u], scratch[o + 1u], inside);
    let count = select(scratch[o + 5u], scratch[o + 4u], inside);
    let sd = select(scratch[q + 2u], scratch[q], inside);
    let sdx = select(scratch[q + 3u], scratch[q + 1u], inside);
    let k = 1.0 + select(gamma_b[ch], gamma_f[ch], inside);
    let xhat = (x_load(i) - mu) * rs;
    dx_store(i, rs * k * (dy_load(i) - sd / count - xhat * sdx / count));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    switch GSTAGE {
        case 0u: {
            stats(g * WG + lid);
        }
        case 1u: {
            partials(g, lid);
        }
        case 2u: {
            finalize(g * WG + lid);
        }
        default: {
            dx_at(g * WG + lid);
        }
    }
}
