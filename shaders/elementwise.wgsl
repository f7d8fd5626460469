// y = act(x) (with elementwise_common.wgsl).

@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read_write> y: array<Elem>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = block_of(wid, nwg, lid);
    for (var i = r.x; i < r.y; i = i + 1u) {
        y_store(i, activate(x_load(i)));
    }
}
