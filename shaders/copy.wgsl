// Copy kernel: the bandwidth roofline the benchmarks divide by. Two shapes, chosen by BLOCK:
// BLOCK = 1: one access per invocation per grid step (coalesced across lanes);
// BLOCK > 1: each invocation copies one contiguous block of BLOCK accesses (what CPU
// rasterisers like lavapipe prefer: one lane streams through memory). The benches copy f32x4,
// where the accessors are plain loads and stores.

override WG: u32 = 256u;
override BLOCK: u32 = 1u;

struct CopyParams {
    // Number of accesses of VW elements.
    n_vec: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dst: array<Elem>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    if (BLOCK == 1u) {
        let i = g * WG + lid;
        if (i < params.n_vec) {
            dst_store(i, src_load(i));
        }
    } else {
        let start = (g * WG + lid) * BLOCK;
        let end = min(params.n_vec, start + BLOCK);
        for (var i = start; i < end; i = i + 1u) {
            dst_store(i, src_load(i));
        }
    }
}
