// Row norm, "split" shape, pass 2 of 2 (see `split_partials.wgsl`): the workgroup of each chunk
// merges its row's chunk moments in the same fixed order as every other chunk of the row (so
// all chunks normalize with bit-identical statistics), then normalizes its own chunk. The first
// chunk writes the saved statistics.

override WG: u32 = 64u;

@group(0) @binding(9) var<storage, read_write> partials: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = linear_group(wid, nwg);
    let row = g / params.chunks;
    let chunk = g % params.chunks;
    let live = row < params.rows;
    let nchunks = select(0u, params.chunks, live);

    var acc = Moments(0.0, 0.0, 0.0);
    for (var c = lid; c < nchunks; c = c + WG) {
        let p = partials[row * params.chunks + c];
        acc = moments_merge(acc, Moments(p.x, p.y, p.z));
    }
    let merged = workgroup_merge(acc, lid);
    let mean = merged.mean;
    let rstd = rsqrt_var(merged.m2 / f32(params.n) + params.eps);

    let range = chunk_range(chunk, live);
    let base = row * params.n_vec;
    for (var i = range.x + lid; i < range.y; i = i + WG) {
        y[base + i] = from_v(normalize_affine(load_x(base + i), i, mean, rstd));
    }
    if (live && chunk == 0u && lid == 0u) {
        write_stats(row, mean, rstd);
    }
}
