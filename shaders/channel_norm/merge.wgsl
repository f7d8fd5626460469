// Merges each slot's partial moments (in tile order) into one (count, mean, M2) per slot: the
// mergeable statistics an application all-reduces across devices for synchronised BatchNorm.

override WG: u32 = 64u;
// The partials are moments of x - shift (moments.wgsl SHIFTED): add the slot's shift back.
override SHIFTED: bool = false;
// Keep the shift apart instead: merged[slot] holds the moments of x - shift and
// merged[slots + slot] = (0, shift, 0), so a consumer can centre exactly as (x - shift) - mean
// (the batch-statistics backward); 0 when the moments are not shifted.
override KEEP_SHIFT: bool = false;

@group(0) @binding(0) var<uniform> params: ChannelParams;
@group(0) @binding(1) var<storage, read> partials: array<Moments>;
@group(0) @binding(2) var<storage, read_write> merged: array<Moments>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let slot = linear_group(wid, nwg) * WG + lid;
    if (slot >= params.p * params.r) {
        return;
    }
    var acc = Moments(0.0, 0.0, 0.0);
    for (var t = 0u; t < params.tiles; t = t + 1u) {
        acc = moments_merge(acc, partials[slot * params.tiles + t]);
    }
    var shift = 0.0;
    if (SHIFTED) {
        shift = partials[params.p * params.r * params.tiles + slot].mean;
    }
    if (KEEP_SHIFT) {
        merged[params.p * params.r + slot] = Moments(0.0, shift, 0.0);
    } else {
        acc.mean = acc.mean + shift;
    }
    merged[slot] = acc;
}
