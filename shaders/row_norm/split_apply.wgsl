// Row norm, "split" shape, output pass (see `split_partials.wgsl`): the workgroup of each chunk
// merges its row's chunk moments in the same fixed order as every other chunk of the row (so
// all chunks normalize with bit-identical statistics), then normalizes its own chunk. The saved
// statistics are a pass of their own (`split_stats.wgsl`), so this one binds at most 7 storage
// buffers (WebGPU's default limit is 8).

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = linear_group(wid, nwg);
    let row = g / params.chunks;
    let live = row < params.rows;
    let merged = merge_chunks(row, live, lid);
    let mean = merged.mean;
    let rstd = merged_rstd(merged);

    let range = chunk_range(g % params.chunks, live);
    let base = row * params.n_vec;
    for (var i = range.x + lid; i < range.y; i = i + WG) {
        y_store(base + i, normalize_affine(load_x(base + i), i, mean, rstd));
    }
}
