// Row-norm backward dx, entry point with team sums in workgroup memory (no optional feature).

var<workgroup> red2: array<vec2<f32>, WG>;

// The sums of `v` over each team, returned to every lane of the team (uniform control flow).
fn team_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    workgroupBarrier();
    red2[lid] = v;
    let lane = lid % TEAM;
    for (var h = TEAM / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if lane < h {
            red2[lid] += red2[lid + h];
        }
    }
    workgroupBarrier();
    return red2[lid - lane];
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    dx_main(linear_group(wid, nwg), lid / TEAM, lid % TEAM, lid);
}
