// Row-norm backward (LayerNorm / RMSNorm, the fused add variants): the shared parameter block and
// the value normalized.
//
// Layout as the forward's: x, residual, dy, dsum and dx row-major [rows, n]; weight, dweight and
// dbias n elements; indices count accesses of VW elements. Per row, with s = x (+ residual),
// xhat = (s - mean) * rstd and g = dy * (weight + weight_offset):
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      (RMSNorm: no mean(g), mean = 0)
//   dweight = sum over rows of dy * xhat,  dbias = sum over rows of dy.

// 0: LayerNorm (centred), 1: RMSNorm.
override MODE: u32 = 0u;
override HAS_RESIDUAL: bool = false;
// A bias is bound (read only with a fused activation: z = xhat * w + bias).
override HAS_BIAS: bool = false;

struct RowGradParams {
    rows: u32,
    // Row length in accesses of VW elements, and in elements.
    n_vec: u32,
    n: u32,
    eps: f32,
    weight_offset: f32,
    // Rows per block of the parameter-gradient pass, and the number of blocks.
    row_block: u32,
    blocks: u32,
    // x, residual, dy, dsum and dx may be bound in windows of whole blocks of rows: the window's
    // first row (its bindings start there; rows is then the window's end). Rows keep the whole
    // call's indices.
    row_base: u32,
    // SELU's constants (common/activation.wgsl reads them).
    selu_alpha: f32,
    selu_lambda: f32,
    _pad0: u32,
    _pad1: u32,
}

fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// s - mean as (s - shift) - delta, mean = shift + delta: the shift (an element of the row)
// makes s - shift exact-ish and delta small, so a large common offset keeps full precision.
fn centred(s: V, shift: f32, delta: f32) -> V {
    return (s - V(shift)) - V(delta);
}
