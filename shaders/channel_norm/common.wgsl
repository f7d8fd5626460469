// Channel-statistics normalization (BatchNorm, GroupNorm, InstanceNorm, ...): shared view.
//
// x is a dense row-major tensor seen as [P, Q, R, S]; one statistics slot per (p, r), reduced
// over q and s:
//   BatchNorm NCHW [1, N, C, HW]     BatchNorm NHWC [1, N*HW, C, 1]
//   InstanceNorm NCHW [N, 1, C, HW]  InstanceNorm NHWC [N, HW, C, 1]
//   GroupNorm NCHW [N, 1, G, C/G*HW] GroupNorm NHWC [N, HW, G, C/G]
// Each slot covers CG channels (C/G for GroupNorm, 1 otherwise); element (p, q, r, s) belongs
// to channel r * CG + s / SDIV (SDIV = HW for GroupNorm NCHW, 1 for NHWC).
// S_V counts accesses of VW elements (S is a multiple of VW).

struct ChannelParams {
    p: u32,
    q: u32,
    r: u32,
    s_v: u32,
    // Channels per slot, and elements of s per channel.
    cg: u32,
    sdiv: u32,
    // Tiles each slot's Q * S_V accesses are split into, and accesses per tile.
    tiles: u32,
    tile_len: u32,
    eps: f32,
    momentum: f32,
    // 1: the momentum is 1 / num_batches_tracked (PyTorch momentum=None).
    cumulative: u32,
    // Total accesses of x (apply pass).
    total_v: u32,
    // Elements per sample p (Q * R * S; apply pass).
    per_p: u32,
    // Weight of the source (running) statistics when mixing them with the batch's (MIX).
    w_src: f32,
    // Batch size B of a token mask (moments HAS_MASK).
    mask_b: u32,
    // L1/L2 reductions: the norm each slot is scaled to.
    norm_target: f32,
    // SELU epilogue constants (the activation snippet reads them).
    selu_alpha: f32,
    selu_lambda: f32,
    // x (and y) may be bound in binding windows: a dispatch covers the call's workgroups (moments)
    // or invocations (apply) from group_base on, and its binding starts at access x_base of the
    // tensor. Every index is the whole call's, so a window computes what the unsplit call would.
    // group_end: the moments dispatch's end (its 2D grid may round past it).
    group_base: u32,
    x_base: u32,
    group_end: u32,
    _pad1: u32,
    // Moments pass: consecutive channels whose moments a grouped finalize merges (channels-last
    // GroupNorm reduced per channel); they share their group's shift. 1 otherwise.
    shift_cg: u32,
    _pad2: u32,
}

fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
