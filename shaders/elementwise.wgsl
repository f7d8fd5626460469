// Elementwise activation (SELU and the other epilogues as standalone ops): y = act(x), BLOCK
// consecutive accesses per invocation.

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
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read_write> y: array<Elem>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let start = ((wid.x + wid.y * nwg.x) * WG + lid) * BLOCK;
    let end = min(params.n_v, start + BLOCK);
    for (var i = start; i < end; i = i + 1u) {
        y_store(i, activate(x_load(i)));
    }
}
