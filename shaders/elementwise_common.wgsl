// Elementwise activations (SELU and the other epilogues as standalone ops) and their backward:
// the parameter block and lane mapping, BLOCK consecutive accesses per invocation.

override WG: u32 = 256u;
override BLOCK: u32 = 1u;

struct EwParams {
    // Number of accesses of VW elements.
    n_v: u32,
    // SELU epilogue constants (the activation snippet reads them).
    selu_alpha: f32,
    selu_lambda: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: EwParams;

// The accesses [start, end) of invocation (wid, lid).
fn block_of(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> vec2<u32> {
    let start = ((wid.x + wid.y * nwg.x) * WG + lid) * BLOCK;
    return vec2<u32>(start, min(params.n_v, start + BLOCK));
}
