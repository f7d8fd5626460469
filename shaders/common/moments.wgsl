// Mergeable moments (count, mean, M2) and Chan et al.'s pairwise merge.
// This is how every mean/variance reduction in wgnorm combines partial results: it never forms
// E[x^2] - E[x]^2, so a large common offset does not cancel the variance away.
struct Moments {
    n: f32,
    mean: f32,
    m2: f32,
}

fn moments_merge(a: Moments, b: Moments) -> Moments {
    let n = a.n + b.n;
    if (n == 0.0) {
        return a;
    }
    let delta = b.mean - a.mean;
    let fb = b.n / n;
    var r: Moments;
    r.n = n;
    r.mean = a.mean + delta * fb;
    r.m2 = a.m2 + b.m2 + delta * delta * a.n * fb;
    return r;
}

// Folds a vector of VW elements into running moments: the vector's own mean and centred M2
// first, then one Chan merge (one division per vector, not per element).
fn moments_push(acc: Moments, v: V) -> Moments {
    let k = f32(VW);
    let m = hsum(v) / k;
    let d = v - m;
    return moments_merge(acc, Moments(k, m, hsum(d * d)));
}


// max(v, 0) that keeps a NaN: SPIR-V's FMax may return the other operand when one is NaN, which
// would make a NaN row's variance 0 and its output finite.
fn nonneg(v: f32) -> f32 {
    return select(v, 0.0, v < 0.0);
}

// 1 / sqrt(v) for a variance plus eps: +inf at exactly 0 (eps = 0 on a constant slice), where
// inverseSqrt is undefined in SPIR-V, so every backend gives rstd = inf and y = 0 * inf = NaN,
// as PyTorch does; NaN stays NaN. The infinity is a runtime value: as a constant expression
// (`bitcast<f32>(0x7f800000u)`) it is a shader-creation error in WGSL, which Tint enforces.
fn rsqrt_var(v: f32) -> f32 {
    let inf_bits = 0x7f800000u;
    return select(inverseSqrt(v), bitcast<f32>(inf_bits), v == 0.0);
}
