// Row-norm backward, parameter gradients, phase 1: invocation (i, block) sums dz * xhat and dz
// over the block's rows for column access i, in row order, into partials[block] (f32): no
// atomics, so the result is the same bit for bit on every run. dz = dy, or dy * act'(z) after a
// fused activation (z = xhat * (weight + offset) + bias).

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: RowGradParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> residual: array<Elem>;
@group(0) @binding(3) var<storage, read> dy: array<Elem>;
// Per row (shift, delta, rstd, 0) from the dx pass: mean = shift + delta.
@group(0) @binding(4) var<storage, read> stats: array<vec4<f32>>;
// [blocks][2][n_vec]: dweight partials, then dbias partials, per block.
@group(0) @binding(5) var<storage, read_write> partials: array<V>;
// With a fused activation: the forward's weight and bias.
@group(0) @binding(6) var<storage, read> weight: array<Elem>;
@group(0) @binding(7) var<storage, read> bias: array<Elem>;

override HAS_WEIGHT: bool = false;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = wid.x * WG + lid;
    let block = wid.y + params.row_base / params.row_block;
    if (i >= params.n_vec) {
        return;
    }
    let r0 = block * params.row_block;
    let r1 = min(params.rows, r0 + params.row_block);
    var aw = V(0.0);
    var ab = V(0.0);
    for (var r = r0; r < r1; r++) {
        let st = stats[r];
        let e = (r - params.row_base) * params.n_vec + i;
        var s = x_load(e);
        if (HAS_RESIDUAL) {
            s += residual_load(e);
        }
        let xhat = centred(s, st.x, st.y) * st.z;
        var d = dy_load(e);
        if (ACT != 0u) {
            var w = V(1.0);
            if (HAS_WEIGHT) {
                w = weight_load(i) + params.weight_offset;
            }
            var b = V(0.0);
            if (HAS_BIAS) {
                b = bias_load(i);
            }
            d *= activate_grad(xhat * w + b);
        }
        aw += d * xhat;
        ab += d;
    }
    partials[(block * 2u) * params.n_vec + i] = aw;
    partials[(block * 2u + 1u) * params.n_vec + i] = ab;
}
