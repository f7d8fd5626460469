// QK-norm + RoPE (docs: README "QK-norm"): the parameters, bindings, angles and the pipeline
// constants shared by the workgroup kernel (`qk_rope.wgsl`) and the team kernel
// (`qk_rope_team.wgsl`). x and y are [tokens, heads, D] row-major, one (token, head) row of D
// values each; weight [D]. Indices into x, y and weight count accesses of VW elements.

override HAS_WEIGHT: bool = false;
// 0: NeoX pairs (p, p + ROT/2); 1: GPT-J pairs (2p, 2p + 1).
override LAYOUT: u32 = 0u;
// 0: angles from positions (pos[t] * inv_freq[p]); 1: cos / sin tables; 2: no rotation.
override ANGLES: u32 = 0u;
// False: the rotation alone (rstd 1, no weight): the second pass of the benchmarks' unfused
// baseline, and with INVERSE the backward's first pass.
override NORM: bool = true;
// Rotate by the negated angles: the rotation's transpose (the backward takes the upstream
// gradient back through the rotation with it).
override INVERSE: bool = false;

struct QkRopeParams {
    rows: u32,
    heads: u32,
    // Head dim D, and the rotated dims ROT (even, <= D).
    d: u32,
    rot: u32,
    eps: f32,
    weight_offset: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: QkRopeParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> weight: array<Elem>;
@group(0) @binding(3) var<storage, read> pos: array<f32>;
// Bindings 4 and 5, cos[t, p] (ANGLES 1) or inv_freq[p] (ANGLES 0) and sin[t, p], are declared
// by each kernel: as f32 in the workgroup kernel, as vec4s in the team kernel.
@group(0) @binding(6) var<storage, read_write> y: array<Elem>;

fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// weight + offset at access i (1 without a weight).
fn scale(i: u32) -> V {
    if (HAS_WEIGHT) {
        return weight_load(i) + params.weight_offset;
    }
    return V(1.0);
}

// (cos a, sin a) to about an f32 ulp: WGSL only promises an absolute error of 2^-11 for its
// sin and cos on [-pi, pi], and SwiftShader's are that coarse (1.7e-4 off at 0.156 rad). As
// Cephes' sinf/cosf: a = r + j pi/2 with r in [-pi/4, pi/4] (pi/2 split in three parts, so the
// products with j are exact for |j| < 2^16), minimax polynomials on r, and the quarter turns
// j mod 4 swap and negate them.
fn cos_sin(a: f32) -> vec2<f32> {
    let j = round(a * 0.6366197723675814);
    let r = ((a - j * 1.5703125) - j * 4.837512969970703125e-4) - j * 7.54978995489188216e-8;
    let z = r * r;
    let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
    let c = 1.0 - 0.5 * z
        + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
    let q = u32(i32(j)) & 3u;
    let cs = select(vec2<f32>(c, s), vec2<f32>(-s, c), (q & 1u) == 1u);
    return select(cs, -cs, q >= 2u);
}

