// Tree sum over a workgroup of WG invocations (WG: an override of the including kernel, a power
// of two). `red` is also free for a kernel's own reductions, provided each starts, as wg_sum
// does, with a barrier: then no reader of the previous result can see it overwritten.
var<workgroup> red: array<f32, WG>;

// Sum of `v` over the workgroup, returned to every invocation (uniform control flow only).
fn wg_sum(lid: u32, v: f32) -> f32 {
    workgroupBarrier();
    red[lid] = v;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if lid < h {
            red[lid] += red[lid + h];
        }
    }
    workgroupBarrier();
    return red[0];
}
