// Row norm, "split" shape, saved statistics (recorded only when the caller keeps mean or rstd):
// one workgroup per row merges the row's chunk moments exactly as the output pass does and
// writes the row's mean and rstd.

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_group(wid, nwg);
    let live = row < params.rows;
    let merged = merge_chunks(row, live, lid);
    if (live && lid == 0u) {
        write_stats(row, merged.mean, merged_rstd(merged));
    }
}
