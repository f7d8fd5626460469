// IBN's backward statistics (docs/methods.md A8), one invocation per (sample, channel) slot of
// the InstanceNorm view: (mean, rstd) into `saved`, the slot's own for the first
// params.term_a channels (InstanceNorm), for the others (BatchNorm) the channel's over the batch
// (training, params.term_b = 1: a Chan merge of the samples' moments in sample order) or the
// running statistics (inference). Moments: the reduce pass's centred layout (per slot (count,
// mean of x - shift, M2), then per slot (0, shift, 0)).

override WG: u32 = 64u;

@group(0) @binding(1) var<storage, read> moments: array<f32>;
@group(0) @binding(2) var<storage, read> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read> running_var: array<f32>;
@group(0) @binding(4) var<storage, read_write> saved: array<f32>;

// Slot's (count, mean, M2).
fn moments_of(slot: u32) -> vec3<f32> {
    let shift = moments[3u * (params.p * params.r + slot) + 1u];
    return vec3<f32>(moments[3u * slot], shift + moments[3u * slot + 1u], moments[3u * slot + 2u]);
}

// Chan's merge of b into a.
fn merge(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    let n = a.x + b.x;
    if (n == 0.0) {
        return a;
    }
    let d = b.y - a.y;
    return vec3<f32>(n, a.y + d * (b.x / n), a.z + b.z + d * d * (a.x * b.x / n));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let item = linear_group(wid, nwg) * WG + lid;
    if (item >= params.p * params.r) {
        return;
    }
    let ch = item % params.r;
    var mv = vec2<f32>(0.0);
    if (ch < params.term_a) {
        let m = moments_of(item);
        mv = vec2<f32>(m.y, m.z / m.x);
    } else if (params.term_b == 0u) {
        mv = vec2<f32>(running_mean[ch - params.term_a], running_var[ch - params.term_a]);
    } else {
        var acc = vec3<f32>(0.0);
        for (var q = 0u; q < params.p; q++) {
            acc = merge(acc, moments_of(q * params.r + ch));
        }
        mv = vec2<f32>(acc.y, acc.z / acc.x);
    }
    saved[2u * item] = mv.x;
    saved[2u * item + 1u] = 1.0 / sqrt(mv.y + params.eps);
}
