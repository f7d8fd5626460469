// Batch-statistics backward (BatchNorm, GroupNorm, InstanceNorm): the view, the parameter block
// and the per-slot statistics.
//
// x is seen as [P, Q, R, S] as in the forward (channel_norm/common.wgsl): one statistics slot
// per (p, r), CG channels per slot, channel of element (p, q, r, s) = r * CG + s / SDIV. With
// z = xhat * w + b (xhat = (x - mean) * rstd), dz = dy * act'(z) and g = dz * w:
//   dx = rstd * (g - sum_slot(g) / M - xhat * sum_slot(g * xhat) / M)    (batch statistics)
//   dx = g * rstd                                                       (running statistics)
//   dweight[ch] = sum dz * xhat,  dbias[ch] = sum dz                      (over p and the slot)
// Scalar accesses; arithmetic f32; weight, bias, dweight and dbias f32.

// Where the slot statistics come from: 0 merged moments (count, mean, M2) of a reduce pass,
// 1 the forward's saved (mean, rstd) pairs, 2 the running statistics (BatchNorm inference).
override STATS: u32 = 0u;
// What the forward divided by: 0 sqrt(var + eps); 1 std + eps (slot_stats puts the std in
// .w); 2 the L2 norm, 3 the L1 norm (no centring; y = norm_target * x / max(norm, eps), and with
// eps = 0 a zero norm gives 0, as the forward's y = 0).
override NORM: u32 = 0u;
override HAS_WEIGHT: bool = false;
override HAS_BIAS: bool = false;
// ACT (common/activation.wgsl): the activation after the affine, differentiated.

struct ChannelGradParams {
    p: u32,
    q: u32,
    r: u32,
    s: u32,
    cg: u32,
    sdiv: u32,
    // Tiles each (p, channel)'s Q * SDIV elements are split into, and elements per tile.
    tiles: u32,
    tile_len: u32,
    eps: f32,
    // Elements of x (dx: the end of this dispatch's window).
    total: u32,
    // x, dy and dx may be bound in windows: a dispatch covers the call's workgroups (partials)
    // or invocations (dx) from group_base on (partials: up to group_end), its bindings start at
    // element x_base, and every index is the whole call's.
    group_base: u32,
    x_base: u32,
    group_end: u32,
    // SELU's constants (common/activation.wgsl reads them).
    selu_alpha: f32,
    selu_lambda: f32,
    // L1/L2 denominators: y = norm_target * x / max(norm, eps).
    norm_target: f32,
    // A gradient term's two integer parameters.
    term_a: u32,
    term_b: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: ChannelGradParams;

fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn channels() -> u32 {
    return params.r * params.cg;
}

// dz = dy * act'(z) for z = xhat * w + b.
fn act_grad(dy: f32, z: f32) -> f32 {
    return dy * activate_grad(z);
}
