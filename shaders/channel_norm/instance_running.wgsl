// InstanceNorm with track_running_stats (PyTorch): one invocation per channel averages the
// instance statistics of that channel over the P samples (mean, and the unbiased variance) and
// applies r = (1 - m) r + m s to the running statistics. Reads merged per-(sample, channel)
// moments written by channel_norm/merge.

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: ChannelParams;
@group(0) @binding(1) var<storage, read> merged: array<Moments>;
@group(0) @binding(2) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_var: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = linear_group(wid, nwg) * WG + lid;
    if (c >= params.r) {
        return;
    }
    var mean = 0.0;
    var var_u = 0.0;
    for (var p = 0u; p < params.p; p = p + 1u) {
        let m = merged[p * params.r + c];
        mean = mean + m.mean;
        var_u = var_u + m.m2 / (m.n - 1.0);
    }
    let inv_p = 1.0 / f32(params.p);
    let k = params.momentum;
    running_mean[c] = (1.0 - k) * running_mean[c] + k * mean * inv_p;
    running_var[c] = (1.0 - k) * running_var[c] + k * var_u * inv_p;
}
