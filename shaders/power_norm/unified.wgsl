// Unified Normalization training step (docs/methods.md), one workgroup: moments of a token view
// (count of kept tokens, 0, sum of squares per channel, n = 1) give q; a window [M, C] (run_a) of
// past q and the running variance (run_b) decide the variance sigma^2 (q, or the window's
// geometric mean, with outlier filtration when FILTER), then y = weight x / sqrt(sigma^2 + eps)
// + bias. The backward's approximation is `unified_grad_finalize.wgsl`.

struct UnifiedParams {
    n: u32,
    c: u32,
    // The step t (>= 1).
    step: u32,
    // The window M.
    window: u32,
    eps: f32,
    momentum: f32,
    // Warm-up steps.
    warmup: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: UnifiedParams;

override WG: u32 = 64u;
// Outlier filtration on.
override FILTER: bool = false;
// Save, per channel, what the backward needs into the per-sample slot (`assign`, f32 [C, 2]):
// the gradient compensation ratio r (-1 for an outlier step) and 1 / sqrt(sigma^2 + eps).
override SAVE: bool = false;

fn unified(lid: u32) {
    let c = params.c;
    let m = params.window;
    let t = params.step;
    let entries = m * c;
    // r = unbiased variance of sqrt(buf) over all M*C entries, before this step's insertion
    // (two passes).
    var part = 0.0;
    for (var i = lid; i < entries; i += WG) {
        part += sqrt(max(run_a[i], 0.0));
    }
    let mean_sq = wg_sum(lid, part) / f32(entries);
    part = 0.0;
    for (var i = lid; i < entries; i += WG) {
        let d = sqrt(max(run_a[i], 0.0)) - mean_sq;
        part += d * d;
    }
    let r = wg_sum(lid, part) / max(f32(entries) - 1.0, 1.0);
    let slot = t % m;
    for (var ch = lid; ch < c; ch += WG) {
        let mo = inst(0u, ch);
        // A batch of padding only has no statistic: q = 0 (as PowerNorm's psi2).
        run_a[slot * c + ch] = select(0.0, mo.m2 / mo.n, mo.n > 0.0);
    }
    storageBarrier();
    // The window's arithmetic and geometric means per channel; filtration needs a full window
    // (log of the zeros it starts with is -inf).
    let filtering = FILTER && t >= params.warmup && t >= m;
    var outlier = 0.0;
    for (var ch = lid; ch < c; ch += WG) {
        var am = 0.0;
        var lg = 0.0;
        for (var k = 0u; k < m; k++) {
            let v = run_a[k * c + ch];
            am += v;
            lg += log(v);
        }
        am /= f32(m);
        let gm = exp(lg / f32(m));
        if filtering && am - gm > r * f32(m) {
            outlier = 1.0;
        }
    }
    let skip = wg_sum(lid, outlier) > 0.0;
    for (var ch = lid; ch < c; ch += WG) {
        let mo = inst(0u, ch);
        let q = select(0.0, mo.m2 / mo.n, mo.n > 0.0);
        var sigma2 = q;
        if !(t <= m || t < params.warmup || skip) {
            var lg = 0.0;
            for (var k = 0u; k < m; k++) {
                lg += log(run_a[k * c + ch]);
            }
            sigma2 = exp(lg / f32(m));
        }
        if skip {
            run_a[slot * c + ch] = run_b[ch];
        }
        if SAVE {
            // The official code's r = sqrt(sigma^2 + eps) / sqrt(running_var + eps) (the
            // running variance before this step): 1 in the first max(1000, warmup) steps and
            // for an outlier, else clamped to [1/5, 5].
            var ratio = clamp(sqrt(sigma2 + params.eps) / sqrt(run_b[ch] + params.eps), 0.2, 5.0);
            if t <= max(1000u, params.warmup) {
                ratio = 1.0;
            }
            assign[2u * ch] = select(ratio, -1.0, skip);
            assign[2u * ch + 1u] = rsqrt_var(sigma2 + params.eps);
        }
        set_coef(3u, 0u, 0u, ch, 0.0);
        set_coef(3u, 0u, 1u, ch, rsqrt_var(sigma2 + params.eps) * weight[ch]);
        set_coef(3u, 0u, 2u, ch, bias[ch]);
        run_b[ch] = (1.0 - params.momentum) * run_b[ch] + params.momentum * sigma2;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    unified(lid);
}
