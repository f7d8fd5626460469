// y = wa * a + wb * b, elementwise (a blend of two layers' outputs, lambda and 1 - lambda; a sum
// or scale of gradients), BLOCK consecutive accesses per invocation.

override WG: u32 = 256u;
override BLOCK: u32 = 1u;

struct BlendParams {
    n_v: u32,
    wa: f32,
    wb: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: BlendParams;
@group(0) @binding(1) var<storage, read> a: array<Elem>;
@group(0) @binding(2) var<storage, read> b: array<Elem>;
@group(0) @binding(3) var<storage, read_write> y: array<Elem>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let start = ((wid.x + wid.y * nwg.x) * WG + lid) * BLOCK;
    let end = min(params.n_v, start + BLOCK);
    for (var i = start; i < end; i = i + 1u) {
        y_store(i, params.wa * a_load(i) + params.wb * b_load(i));
    }
}
