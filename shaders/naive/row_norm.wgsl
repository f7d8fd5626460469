// Naive row norm, the benchmark baseline: one invocation per row, a pass for the mean, a pass
// for the centred variance, a pass to normalize (x read three times, no cooperation between
// lanes, uncoalesced across lanes). Correct, stable, and what a first attempt looks like.

override WG: u32 = 64u;

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
    let base = row * params.n_vec;
    let inv_n = 1.0 / f32(params.n);
    var mean = 0.0;
    if (MODE == 0u) {
        var s = 0.0;
        for (var i = 0u; i < params.n_vec; i = i + 1u) {
            s = s + hsum(load_x(base + i));
        }
        mean = s * inv_n;
    }
    var q = 0.0;
    for (var i = 0u; i < params.n_vec; i = i + 1u) {
        let d = load_x(base + i) - mean;
        q = q + hsum(d * d);
    }
    let rstd = inverseSqrt(q * inv_n + params.eps);
    for (var i = 0u; i < params.n_vec; i = i + 1u) {
        y_store(base + i, normalize_affine(load_x(base + i), i, mean, rstd));
    }
    write_stats(row, mean, rstd);
}
