// Row-norm backward dx, entry point with team sums by subgroup shuffles: a team is TEAM
// consecutive lanes of one subgroup (TEAM <= the minimum subgroup size, the workgroup a multiple
// of the largest), found from the subgroup builtins rather than the invocation index.

// The sums of `v` over each team, for every lane of the team: a butterfly whose every step adds
// the same two values on both lanes of a pair (a + b and b + a are the same bits), so all the
// team's lanes end with the same sums.
fn team_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    var s = v;
    for (var o = TEAM / 2u; o > 0u; o >>= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    return s;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    let team = sg_id * (sg_size / TEAM) + sg_lane / TEAM;
    dx_main(linear_group(wid, nwg), team, sg_lane % TEAM, 0u);
}
