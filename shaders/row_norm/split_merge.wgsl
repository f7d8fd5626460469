// Row norm, split shape: the merge of a row's chunk moments (`split_partials.wgsl`'s output)
// that the output pass and the statistics pass both run, in one fixed order, so the saved
// statistics are the bits the row was normalized with. The body declares `WG`.

@group(0) @binding(9) var<storage, read> partials: array<vec4<f32>>;

// The row's moments, to every lane of the workgroup (every lane must call: barriers inside).
fn merge_chunks(row: u32, live: bool, lid: u32) -> Moments {
    let nchunks = select(0u, params.chunks, live);
    var acc = Moments(0.0, 0.0, 0.0);
    for (var c = lid; c < nchunks; c = c + WG) {
        let p = partials[row * params.chunks + c];
        acc = moments_merge(acc, Moments(p.x, p.y, p.z));
    }
    return workgroup_merge(acc, lid);
}

fn merged_rstd(m: Moments) -> f32 {
    return rsqrt_var(m.m2 / f32(params.n) + params.eps);
}
