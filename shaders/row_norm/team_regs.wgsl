// Row norm, "team in registers" shape: like the team kernel, but each lane keeps its share of
// the row in a fixed-size private array instead of workgroup memory. Every loop has the constant
// trip count REGS (bounds-checked against the row inside), so compilers can unroll them and
// keep the array in registers. Serves rows of n_vec <= TEAM * REGS accesses.

override TEAM: u32 = 8u;
override WG: u32 = 64u;

const REGS: u32 = 16u;

fn team_sum(v: f32, sg_size: u32) -> f32 {
    if (TEAM == sg_size) {
        return subgroupAdd(v);
    }
    var s = v;
    for (var o = TEAM / 2u; o > 0u; o = o >> 1u) {
        s = s + subgroupShuffleXor(s, o);
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
    let teams = WG / TEAM;
    let team = sg_id * (sg_size / TEAM) + sg_lane / TEAM;
    let lane = sg_lane % TEAM;
    let row = linear_group(wid, nwg) * teams + team;
    let live = row < params.rows;
    let nv = select(0u, params.n_vec, live);
    let base = row * params.n_vec;
    let inv_n = 1.0 / f32(params.n);

    // Corrected two-pass statistics, as in the team kernel.
    var v: array<V, REGS>;
    var s = 0.0;
    for (var k = 0u; k < REGS; k = k + 1u) {
        let i = lane + k * TEAM;
        if (i < nv) {
            v[k] = to_v(x[base + i]);
            s = s + hsum(v[k]);
        }
    }
    var mean0 = 0.0;
    if (MODE == 0u) {
        mean0 = team_sum(s, sg_size) * inv_n;
    }
    var q = 0.0;
    var r = 0.0;
    for (var k = 0u; k < REGS; k = k + 1u) {
        if (lane + k * TEAM < nv) {
            let d = v[k] - mean0;
            r = r + hsum(d);
            q = q + hsum(d * d);
        }
    }
    var c = 0.0;
    if (MODE == 0u) {
        c = team_sum(r, sg_size) * inv_n;
    }
    let var_ = max(team_sum(q, sg_size) * inv_n - c * c, 0.0);
    let rstd = inverseSqrt(var_ + params.eps);
    for (var k = 0u; k < REGS; k = k + 1u) {
        let i = lane + k * TEAM;
        if (i < nv) {
            y[base + i] = from_v(normalize_affine(v[k] - mean0, i, c, rstd));
        }
    }
    if (live && lane == 0u) {
        write_stats(row, mean0 + c, rstd);
    }
}
