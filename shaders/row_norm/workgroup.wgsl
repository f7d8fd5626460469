// Row norm, "workgroup" shape: one workgroup of WG lanes per row, partial moments merged in
// workgroup memory (Chan's formula). Serves long rows, and every row on adapters without
// subgroup operations.
//
// Pass 1 streams the row once: each lane keeps Welford moments of its accesses (RMSNorm keeps
// mean 0 and sums squares into m2, which the same merge handles exactly), and stores them in the
// workgroup cache when the whole row fits (USE_CACHE). Pass 2 normalizes from the cache, or
// reads x a second time when the row is too long to cache.
//
// lavapipe stops an invocation's loops silently once they have run 65535 iterations *in total*
// (one budget per invocation, shared by every loop of the shader, not one per loop). The host
// therefore sizes WG so that 2 * n_vec / WG plus the reduction steps stay well inside it.

override WG: u32 = 256u;
override USE_CACHE: bool = false;
override CACHE_V: u32 = 1u;

var<workgroup> cache: array<V, CACHE_V>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_group(wid, nwg);
    // The grid may hold a few groups past the last row; they take part in the barriers only.
    let live = row < params.rows;
    let nv = select(0u, params.n_vec, live);
    let base = row * params.n_vec;

    var acc = Moments(0.0, 0.0, 0.0);
    for (var i = lid; i < nv; i = i + WG) {
        let v = load_x_first(base + i);
        if (USE_CACHE) {
            cache[i] = v;
        }
        acc = row_moments_push(acc, v);
    }

    let merged = workgroup_merge(acc, lid);
    let mean = merged.mean;
    let rstd = rsqrt_var(merged.m2 / f32(params.n) + params.eps);

    for (var i = lid; i < nv; i = i + WG) {
        var v: V;
        if (USE_CACHE) {
            v = cache[i];
        } else {
            v = load_x(base + i);
        }
        y_store(base + i, normalize_affine(v, i, mean, rstd));
    }
    if (live && lid == 0u) {
        write_stats(row, mean, rstd);
    }
}
