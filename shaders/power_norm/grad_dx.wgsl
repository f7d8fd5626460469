// PowerNorm backward, phase 3: dxs = ca * dy + cb * xs per element (the gradient at the
// GroupScaled input; the row backward then takes it through the GroupScaling).

@group(0) @binding(1) var<storage, read> xs: array<Elem>;
@group(0) @binding(2) var<storage, read> dy: array<Elem>;
@group(0) @binding(3) var<storage, read> coef: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> dxs: array<Elem>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_group(wid, nwg) * WG + lid + params.group_base;
    if (e >= params.tokens * params.c || e >= params.end) {
        return;
    }
    let k = coef[e % params.c];
    let l = e - params.x_base;
    dxs_store(l, k.x * dy_load(l) + k.y * xs_load(l));
}
