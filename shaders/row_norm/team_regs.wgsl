// Row norm, "team in registers" shape: like the team kernel, but each lane keeps its share of
// the row in a private array instead of workgroup memory. Every loop runs PER_LANE times, a
// pipeline constant (ceil(n_vec / TEAM)), so compilers unroll them and keep the array in
// registers; EXACT (n_vec == TEAM * PER_LANE) drops the per-access bounds test. Serves rows of
// n_vec <= TEAM * REGS accesses; one pipeline per row length.

override TEAM: u32 = 8u;
override WG: u32 = 64u;
override PER_LANE: u32 = 1u;
override EXACT: bool = false;
// Consecutive rows each team normalizes, reusing its registers of weight and bias.
override ROWS_PER_TEAM: u32 = 1u;

const REGS: u32 = 32u;

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
    let first_row = (linear_group(wid, nwg) * teams + team) * ROWS_PER_TEAM;
    let inv_n = 1.0 / f32(params.n);

    // The affine parameters are the same for every row: load this lane's share once and reuse
    // it for the team's ROWS_PER_TEAM rows.
    var wv: array<V, REGS>;
    var bv: array<V, REGS>;
    for (var k = 0u; k < PER_LANE; k = k + 1u) {
        let i = lane + k * TEAM;
        if (EXACT || i < params.n_vec) {
            if (HAS_WEIGHT) {
                wv[k] = weight_load(i) + params.weight_offset;
            }
            if (HAS_BIAS) {
                bv[k] = bias_load(i);
            }
        }
    }

    for (var rr = 0u; rr < ROWS_PER_TEAM; rr = rr + 1u) {
        let row = first_row + rr;
        let live = row < params.rows;
        let nv = select(0u, params.n_vec, live);
        // Exact rows load unconditionally (no per-access test): a team past the last row loads
        // the last row again and stores nothing, so no access leaves the binding.
        let base = min(row, params.rows - 1u) * params.n_vec;

        // Corrected two-pass statistics, as in the team kernel.
        var v: array<V, REGS>;
        var s = 0.0;
        for (var k = 0u; k < PER_LANE; k = k + 1u) {
            let i = lane + k * TEAM;
            if (EXACT || i < nv) {
                v[k] = load_x(base + i);
                if (WRITE_SUM && live) {
                    sum_out_store(base + i, v[k]);
                }
                s = s + hsum(v[k]);
            }
        }
        var mean0 = 0.0;
        if (MODE == 0u) {
            mean0 = team_sum(s, sg_size) * inv_n;
        }
        var q = 0.0;
        var r = 0.0;
        for (var k = 0u; k < PER_LANE; k = k + 1u) {
            if (EXACT || lane + k * TEAM < nv) {
                let d = v[k] - mean0;
                r = r + hsum(d);
                q = q + hsum(d * d);
            }
        }
        var c = 0.0;
        if (MODE == 0u) {
            c = team_sum(r, sg_size) * inv_n;
        }
        let var_ = nonneg(team_sum(q, sg_size) * inv_n - c * c);
        let rstd = rsqrt_var(var_ + params.eps);
        for (var k = 0u; k < PER_LANE; k = k + 1u) {
            let i = lane + k * TEAM;
            if (live && (EXACT || i < nv)) {
                var o = (v[k] - mean0 - c) * rstd;
                if (HAS_WEIGHT) {
                    o = o * wv[k];
                }
                if (HAS_BIAS) {
                    o = o + bv[k];
                }
                y_store(base + i, activate(o));
            }
        }
        if (live && lane == 0u) {
            write_stats(row, mean0 + c, rstd);
        }
    }
}
