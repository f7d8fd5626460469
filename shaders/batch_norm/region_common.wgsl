// What both region kernels share (`region.wgsl`, `region_grad.wgsl`): the parameter block,
// the layout of x, the forward scratch's moments, and the statistics of a channel's two
// regions merged from them.

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
    // RN-L: the mask threshold on s.
    threshold: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: RegionParams;

fn hw() -> u32 {
    return params.h * params.w;
}

// The scratch starts with [mask (N HW) | moments (C tiles 6) | coefficients (5 C)].
fn off_partials() -> u32 {
    return params.n * hw();
}

fn index(n: u32, ch: u32, s: u32) -> u32 {
    if NHWC {
        return (n * hw() + s) * params.c + ch;
    }
    return (n * params.c + ch) * hw() + s;
}

// A channel's regions: means, rstds (eps * NHW / S) and pixel counts S (an empty region counts
// 1, as the official code's S = 0 -> 1).
struct RegionStats {
    mean_in: f32,
    rs_in: f32,
    mean_out: f32,
    rs_out: f32,
    s_in: f32,
    s_out: f32,
}

// The moments of channel ch's tiles merged in order. A region with no variance and eps = 0
// makes the official code's BatchNorm of the filled tensor 0/0 at every pixel, and its mask
// products keep the NaN (NaN * 0): the whole channel is NaN, not just that region.
fn region_stats(ch: u32) -> RegionStats {
    var a_in = Moments(0.0, 0.0, 0.0);
    var a_out = Moments(0.0, 0.0, 0.0);
    for (var t = 0u; t < params.tiles; t++) {
        let o = off_partials() + (ch * params.tiles + t) * 6u;
        a_in = moments_merge(a_in, Moments(scratch[o], scratch[o + 1u], scratch[o + 2u]));
        a_out = moments_merge(a_out, Moments(scratch[o + 3u], scratch[o + 4u], scratch[o + 5u]));
    }
    let total = f32(params.n * hw());
    let s_in = max(a_in.n, 1.0);
    let s_out = max(a_out.n, 1.0);
    let v_in = a_in.m2 / s_in + params.eps * total / s_in;
    let v_out = a_out.m2 / s_out + params.eps * total / s_out;
    // (Through a `let`: a constant NaN is a shader-creation error in Tint.)
    let nan_bits = 0x7fc00000u;
    let nan = bitcast<f32>(nan_bits);
    let degenerate = v_in == 0.0 || v_out == 0.0;
    let rs_in = select(rsqrt_var(v_in), nan, degenerate);
    let rs_out = select(rsqrt_var(v_out), nan, degenerate);
    return RegionStats(a_in.mean, rs_in, a_out.mean, rs_out, s_in, s_out);
}
