// The slot statistics of the backward, from STATS's source, as (shift, delta, rstd, 0): the
// slot's mean is shift + delta, and values are centred as (x - shift) - delta, so the merged
// moments' shift (an element of the slot) keeps a large common offset out of the centred
// values. Saved and running statistics have one f32 mean (delta 0); the finalize pass corrects
// for its rounding. Bindings 1-3.

@group(0) @binding(1) var<storage, read> moments: array<f32>;
@group(0) @binding(2) var<storage, read> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read> running_var: array<f32>;

fn slot_stats(slot: u32) -> vec4<f32> {
    if (STATS == 1u) {
        return vec4<f32>(moments[2u * slot], 0.0, moments[2u * slot + 1u], 0.0);
    }
    if (STATS == 2u) {
        let rr = slot % params.r;
        return vec4<f32>(running_mean[rr], 0.0, 1.0 / sqrt(running_var[rr] + params.eps), 0.0);
    }
    // Merged moments (count, mean of x - shift, M2) per slot, then (0, shift, 0) per slot: the
    // biased variance, as the forward normalizes with.
    let n = moments[3u * slot];
    let shift = moments[3u * (params.p * params.r + slot) + 1u];
    let m2 = moments[3u * slot + 2u];
    if (NORM == 1u) {
        let sd = sqrt(m2 / n);
        return vec4<f32>(shift, moments[3u * slot + 1u], 1.0 / (sd + params.eps), sd);
    }
    if (NORM >= 2u) {
        // L1/L2 moments hold the sum in M2 and mean 0. A norm clamped at eps is a constant
        // denominator: .w = 0 drops the norm's own gradient.
        let norm = select(m2, sqrt(m2), NORM == 2u);
        let den = max(norm, params.eps);
        return vec4<f32>(0.0, 0.0, select(0.0, 1.0 / den, den > 0.0), select(0.0, 1.0, norm >= params.eps));
    }
    let rstd = 1.0 / sqrt(m2 / n + params.eps);
    return vec4<f32>(shift, moments[3u * slot + 1u], rstd, 0.0);
}

// x centred on the slot's mean, in units of std: ((x - shift) - delta) * rstd.
fn centred_hat(x: f32, st: vec4<f32>) -> f32 {
    return ((x - st.x) - st.y) * st.z;
}
