// Row norm, "split" shape, pass 1 of 2: for calls with few rows (decode steps of a language
// model: 1-8 rows of 4096-16384), each row is cut into `params.chunks` chunks of
// `params.chunk_vec` accesses and one workgroup of WG lanes takes each chunk, so a handful of
// rows still spreads over the whole device. This pass writes each chunk's moments
// (count, mean, M2: Welford per lane, Chan-merged across the workgroup) to `partials`, one
// vec4 per (row, chunk), row-major; pass 2 (`split_apply.wgsl`) merges a row's chunks and
// normalizes. RMSNorm keeps mean 0 and sums squares into M2, which the same merge handles.

override WG: u32 = 64u;

// (count, mean, M2, unused) of chunk c of row r at index r * chunks + c.
@group(0) @binding(9) var<storage, read_write> partials: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = linear_group(wid, nwg);
    let row = g / params.chunks;
    // The grid may hold a few groups past the last chunk; they take part in the barriers only.
    let live = row < params.rows;
    let range = chunk_range(g % params.chunks, live);
    let base = row * params.n_vec;

    var acc = Moments(0.0, 0.0, 0.0);
    for (var i = range.x + lid; i < range.y; i = i + WG) {
        acc = row_moments_push(acc, load_x_first(base + i));
    }
    let m = workgroup_merge(acc, lid);
    if (live && lid == 0u) {
        partials[g] = vec4<f32>(m.n, m.mean, m.m2, 0.0);
    }
}
