// Four tree sums over a workgroup of WG invocations at once (WG: an override of the including
// kernel, a power of two): one tree of barriers instead of four, barriers being dear on CPU
// drivers.
var<workgroup> red4: array<vec4<f32>, WG>;

// Sums of `v` over the workgroup, returned to every invocation (uniform control flow only).
fn wg_sum4(lid: u32, v: vec4<f32>) -> vec4<f32> {
    workgroupBarrier();
    red4[lid] = v;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if lid < h {
            red4[lid] += red4[lid + h];
        }
    }
    workgroupBarrier();
    return red4[0];
}
