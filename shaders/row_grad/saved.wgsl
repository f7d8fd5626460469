// Row-norm backward with the forward's saved statistics: gathers them (mean for LayerNorm,
// rstd) into the per-row (mean, rstd) pairs that the dx and parameter passes read, so dx binds
// no more than WebGPU's default 8 storage buffers. One invocation per row.

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: RowGradParams;
@group(0) @binding(1) var<storage, read> mean_in: array<f32>;
@group(0) @binding(2) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<vec2<f32>>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_group(wid, nwg) * WG + lid;
    if (row >= params.rows) {
        return;
    }
    // (An if, not select: RMSNorm binds a dummy without element `row` for the mean.)
    var mean = 0.0;
    if (MODE == 0u) {
        mean = mean_in[row];
    }
    stats[row] = vec2<f32>(mean, rstd_in[row]);
}
