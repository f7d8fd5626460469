// Merges per-lane moments across a workgroup of WG lanes (WG: a power-of-two override of the
// including kernel) with Chan's formula in workgroup memory. Every lane must call it (it has
// barriers); every lane gets the merged result.

var<workgroup> red_n: array<f32, WG>;
var<workgroup> red_mean: array<f32, WG>;
var<workgroup> red_m2: array<f32, WG>;

fn workgroup_merge(acc: Moments, lid: u32) -> Moments {
    red_n[lid] = acc.n;
    red_mean[lid] = acc.mean;
    red_m2[lid] = acc.m2;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h >> 1u) {
        if (lid < h) {
            let m = moments_merge(
                Moments(red_n[lid], red_mean[lid], red_m2[lid]),
                Moments(red_n[lid + h], red_mean[lid + h], red_m2[lid + h]),
            );
            red_n[lid] = m.n;
            red_mean[lid] = m.mean;
            red_m2[lid] = m.m2;
        }
        workgroupBarrier();
    }
    return Moments(red_n[0], red_mean[0], red_m2[0]);
}
