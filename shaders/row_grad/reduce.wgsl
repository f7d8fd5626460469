// Row-norm backward, parameter gradients, phase 2: dweight and dbias per column access, the
// blocks' partials summed in block order (fixed: bitwise reproducible), one rounding to the I/O
// type on store. With no rows (blocks = 0) the gradients are zeros.

override WG: u32 = 64u;
override HAS_DWEIGHT: bool = false;
override HAS_DBIAS: bool = false;

@group(0) @binding(0) var<uniform> params: RowGradParams;
@group(0) @binding(1) var<storage, read> partials: array<V>;
@group(0) @binding(2) var<storage, read_write> dweight: array<Elem>;
@group(0) @binding(3) var<storage, read_write> dbias: array<Elem>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = wid.x * WG + lid;
    if (i >= params.n_vec) {
        return;
    }
    var aw = V(0.0);
    var ab = V(0.0);
    for (var b = 0u; b < params.blocks; b++) {
        aw += partials[(b * 2u) * params.n_vec + i];
        ab += partials[(b * 2u + 1u) * params.n_vec + i];
    }
    if (HAS_DWEIGHT) {
        dweight_store(i, aw);
    }
    if (HAS_DBIAS) {
        dbias_store(i, ab);
    }
}
