// PowerNorm's approximate backward (Shen et al. 2020, official mask_powernorm.py) on the token
// view of the GroupScaled input xs[tokens, C] (token = t * B + b; mask[b * T + t] = 1 marks
// padding). With z = xs * rz (rz: the forward's 1 / sqrt(v + eps), saved), g = dy * w:
//   ĝ = g - (1 - alpha_bkw) * nu * z, nu += mean over unpadded tokens of ĝ * z,
//   dxs = ĝ / sqrt(psi2 + eps) (this batch's psi2), dw = sum dy * z, db = sum dy.

struct PowerGradParams {
    tokens: u32,
    c: u32,
    // Batch size B and sequence length T of the mask.
    b: u32,
    t: u32,
    // Token tiles of the partials pass, and tokens per tile.
    tiles: u32,
    tile_len: u32,
    eps: f32,
    // 1 - alpha_bkw.
    one_minus_alpha: f32,
    // xs, dy and dxs may be bound in windows: the dispatch's first workgroup (partials) or
    // element (dx) in the whole call's numbering, the element the bindings start at, and the
    // dispatch's end (partials: workgroups; dx: elements). Indices stay the whole call's.
    group_base: u32,
    x_base: u32,
    end: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: PowerGradParams;

override WG: u32 = 64u;
override HAS_MASK: bool = false;
override HAS_WEIGHT: bool = false;

fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
