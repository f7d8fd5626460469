// Row norm, "team" shape: a team of TEAM lanes of one subgroup per row, several rows per
// workgroup, no workgroup barrier at all (barriers are what software rasterisers pay most for).
// The row is read from global memory once into this team's slice of workgroup memory (each
// lane only reads back what it wrote itself, so no barrier is needed); the statistics are the
// corrected two-pass algorithm over the cached row, and the output pass reads the cache again.
// With USE_CACHE, requires n_vec <= CACHE_V / (WG / TEAM): the host checks.
//
// Teams are formed from subgroup_id/subgroup_invocation_id, not local_invocation_index, so a
// team never straddles two subgroups whatever the adapter's subgroup size (TEAM <= the minimum
// subgroup size, WG a multiple of the maximum: the host guarantees both).

override TEAM: u32 = 8u;
override WG: u32 = 64u;
override CACHE_V: u32 = 1024u;
// Rows too long for the cache are read from global memory in every pass instead (CPU adapters,
// where the kernel is bound by arithmetic, not memory traffic).
override USE_CACHE: bool = true;

var<workgroup> cache: array<V, CACHE_V>;

fn row_value(cbase: u32, base: u32, i: u32) -> V {
    if (USE_CACHE) {
        return cache[cbase + i];
    }
    return load_x(base + i);
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
    // Inactive teams run the same reductions on nothing, so every lane of a subgroup stays in
    // uniform control flow through the shuffles.
    let nv = select(0u, params.n_vec, live);
    let seg = CACHE_V / teams;
    let cbase = team * seg;
    let base = row * params.n_vec;
    let inv_n = 1.0 / f32(params.n);

    // Corrected two-pass statistics: mean0 from the first pass; the centred pass also sums the
    // residuals d = x - mean0, whose mean c corrects the rounding error of mean0 (it would
    // otherwise be amplified by rstd on rows with a large offset and a small spread). The output
    // pass subtracts mean0 and c separately, so the correction is not lost by rounding mean0 + c.
    if (MODE == 0u && !USE_CACHE) {
        // Uncached LayerNorm: x comes from memory in every pass, and memory is what these
        // rows pay for. Chan-merged moments (one merge per access) give the statistics in
        // one read instead of two; the output pass is the second and last.
        // The moments are of x - shift, shift the mean of the row's first access: running
        // means then carry rounding errors of the size of the spread, not of a large common
        // offset (for |x| ~ 100 the unshifted merges were 30x less accurate than two passes).
        let shift = hsum(load_x(select(0u, base, live))) / f32(VW);
        var m = Moments(0.0, 0.0, 0.0);
        for (var i = lane; i < nv; i = i + TEAM) {
            m = moments_push(m, load_x_first(base + i) - shift);
        }
        m = team_moments(m, sg_lane - lane);
        let rstd = rsqrt_var(nonneg(m.m2 / f32(params.n)) + params.eps);
        for (var i = lane; i < nv; i = i + TEAM) {
            y_store(base + i, normalize_affine(load_x(base + i) - shift, i, m.mean, rstd));
        }
        if (live && lane == 0u) {
            write_stats(row, shift + m.mean, rstd);
        }
        return;
    }
    var mean0 = 0.0;
    var s = 0.0;
    for (var i = lane; i < nv; i = i + TEAM) {
        let v = load_x_first(base + i);
        if (USE_CACHE) {
            cache[cbase + i] = v;
        }
        s = s + hsum(v);
    }
    if (MODE == 0u) {
        mean0 = team_sum(s, sg_size) * inv_n;
    }
    var q = 0.0;
    var r = 0.0;
    for (var i = lane; i < nv; i = i + TEAM) {
        let d = row_value(cbase, base, i) - mean0;
        r = r + hsum(d);
        q = q + hsum(d * d);
    }
    var c = 0.0;
    if (MODE == 0u) {
        c = team_sum(r, sg_size) * inv_n;
    }
    let var_ = nonneg(team_sum(q, sg_size) * inv_n - c * c);
    let rstd = rsqrt_var(var_ + params.eps);
    for (var i = lane; i < nv; i = i + TEAM) {
        y_store(base + i, normalize_affine(row_value(cbase, base, i) - mean0, i, c, rstd));
    }
    let mean = mean0 + c;
    if (live && lane == 0u) {
        write_stats(row, mean, rstd);
    }
}
