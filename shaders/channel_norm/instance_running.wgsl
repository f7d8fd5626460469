// Running statistics from merged per-(p, channel) moments (written by channel_norm/merge), one
// invocation per channel, r = (1 - m) r + m s with the unbiased variance:
// - InstanceNorm with track_running_stats (PyTorch): s = the average over the P samples of the
//   instance statistics, one update.
// - SEQUENTIAL (per-chunk batch statistics): one update per chunk p, in chunk order.

override WG: u32 = 64u;
override SEQUENTIAL: bool = false;

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
    let k = params.momentum;
    var rm = running_mean[c];
    var rv = running_var[c];
    var mean = 0.0;
    var var_u = 0.0;
    for (var p = 0u; p < params.p; p = p + 1u) {
        let m = merged[p * params.r + c];
        if (SEQUENTIAL) {
            rm = (1.0 - k) * rm + k * m.mean;
            rv = (1.0 - k) * rv + k * m.m2 / (m.n - 1.0);
        } else {
            mean = mean + m.mean;
            var_u = var_u + m.m2 / (m.n - 1.0);
        }
    }
    if (!SEQUENTIAL) {
        let inv_p = 1.0 / f32(params.p);
        rm = (1.0 - k) * rm + k * mean * inv_p;
        rv = (1.0 - k) * rv + k * var_u * inv_p;
    }
    running_mean[c] = rm;
    running_var[c] = rv;
}
