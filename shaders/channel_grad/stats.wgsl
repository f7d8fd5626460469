// The slot statistics (mean, rstd) of the backward, from STATS's source. Bindings 1-3.

@group(0) @binding(1) var<storage, read> moments: array<f32>;
@group(0) @binding(2) var<storage, read> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read> running_var: array<f32>;

fn slot_stats(slot: u32) -> vec2<f32> {
    if (STATS == 1u) {
        return vec2<f32>(moments[2u * slot], moments[2u * slot + 1u]);
    }
    if (STATS == 2u) {
        let rr = slot % params.r;
        return vec2<f32>(running_mean[rr], 1.0 / sqrt(running_var[rr] + params.eps));
    }
    // Merged moments (count, mean, M2): the biased variance, as the forward normalizes with.
    let n = moments[3u * slot];
    return vec2<f32>(moments[3u * slot + 1u], 1.0 / sqrt(moments[3u * slot + 2u] / n + params.eps));
}
