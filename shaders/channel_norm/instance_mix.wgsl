// Mixing kernels: statistics built from per-instance moments. The reduce pass of the channel
// engine gives (count, mean, M2) per (n, c) of an instance (or token) view; a method's mixing
// kernel turns them into the apply pass's coefficients per (n, c), [mean][scale][shift] (or
// five arrays for the max-denominator epilogue), and updates the method's state.
//
// This header holds the bindings 1-8 and helpers. Each method's file declares its uniform
// struct (with at least `n`, `c` and `eps` fields) as `params` at binding 0, its constants and
// `main`.

// Per (n, c): count, mean, M2.
@group(0) @binding(1) var<storage, read> moments: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// A per-call input of the method (read only).
@group(0) @binding(4) var<storage, read> aux: array<f32>;
// The method's state (running statistics, components, a window), updated in place.
@group(0) @binding(5) var<storage, read_write> run_a: array<f32>;
@group(0) @binding(6) var<storage, read_write> run_b: array<f32>;
@group(0) @binding(7) var<storage, read_write> coef: array<f32>;
// Per-sample scratch of the method, or a per-sample input bound in its place.
@group(0) @binding(8) var<storage, read_write> assign: array<f32>;

fn inst(n: u32, ch: u32) -> Moments {
    let i = (n * params.c + ch) * 3u;
    return Moments(moments[i], moments[i + 1u], moments[i + 2u]);
}

// Moments of channel ch merged over the batch, in sample order.
fn batch_moments(ch: u32) -> Moments {
    var acc = Moments(0.0, 0.0, 0.0);
    for (var n = 0u; n < params.n; n++) {
        acc = moments_merge(acc, inst(n, ch));
    }
    return acc;
}

// The variance fed to a running statistic: unbiased or biased.
fn running_variance(acc: Moments, unbiased: bool) -> f32 {
    if unbiased {
        return acc.m2 / max(acc.n - 1.0, 1.0);
    }
    return acc.m2 / acc.n;
}

fn set_coef(ncoef: u32, n: u32, which: u32, ch: u32, v: f32) {
    coef[(n * ncoef + which) * params.c + ch] = v;
}

// The three coefficients of a normalization followed by the affine: y = (x - mean) * scale + bias.
fn set_norm_coefs(n: u32, ch: u32, mean: f32, scale: f32) {
    set_coef(3u, n, 0u, ch, mean);
    set_coef(3u, n, 1u, ch, scale);
    set_coef(3u, n, 2u, ch, bias[ch]);
}

// The channel of a per-channel mixing kernel, or c (past the end) for lanes with none.
fn mix_channel(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return min((wid.x + wid.y * nwg.x) * WG + lid, params.c);
}
