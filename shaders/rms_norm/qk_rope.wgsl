// Per-head RMSNorm with a rotary-embedding epilogue (QK-norm as in Qwen3, Gemma 3, OLMo 2): x is
// [tokens, heads, D] row-major, one workgroup per (token, head) row. The row is normalized into
// workgroup memory (y = x / sqrt(mean(x^2) + eps) * (weight + offset)), then its first ROT dims
// are rotated in pairs: NeoX (LAYOUT 0) pairs (p, p + ROT/2), GPT-J (LAYOUT 1) pairs (2p, 2p+1),
// by the angle of token t and pair p: from a table (ANGLES 1: cos[t, p], sin[t, p]) or from the
// position (ANGLES 0: pos[t] * inv_freq[p], inv_freq[p] = base^(-2p / ROT) computed in f64 on
// the host and bound in the cos table's place: a device's pow is not accurate enough, and
// SwiftShader's was 1.7e-4 off at a 134-radian angle); ANGLES 2: no rotation. Dims past ROT
// pass through.

override WG: u32 = 64u;
override MAX_D: u32 = 256u;
override HAS_WEIGHT: bool = false;
override LAYOUT: u32 = 0u;
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
// cos[t, p] (ANGLES 1) or inv_freq[p] (ANGLES 0).
@group(0) @binding(4) var<storage, read> cos_t: array<f32>;
@group(0) @binding(5) var<storage, read> sin_t: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<Elem>;

var<workgroup> row: array<f32, MAX_D>;
var<workgroup> red: array<f32, WG>;

fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn scale(i: u32) -> f32 {
    if (HAS_WEIGHT) {
        return weight_load(i) + params.weight_offset;
    }
    return 1.0;
}

// (cos, sin) of token t's angle for pair p.
fn angle(t: u32, p: u32) -> vec2<f32> {
    let half = params.rot / 2u;
    if (ANGLES == 1u) {
        return vec2<f32>(cos_t[t * half + p], sin_t[t * half + p]);
    }
    return cos_sin(pos[t] * cos_t[p]);
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

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_group(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let base = r * params.d;
    var acc = 0.0;
    for (var i = lid; i < params.d; i += WG) {
        let v = x_load(base + i);
        row[i] = v;
        acc += v * v;
    }
    red[lid] = acc;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if lid < h {
            red[lid] += red[lid + h];
        }
    }
    workgroupBarrier();
    // 1 / sqrt: eps = 0 on a zero row gives +inf, then NaN, as RMSNorm.
    let rstd = 1.0 / sqrt(red[0] / f32(params.d) + params.eps);
    if (NORM) {
        for (var i = lid; i < params.d; i += WG) {
            row[i] = row[i] * rstd * scale(i);
        }
    }
    workgroupBarrier();
    let t = r / params.heads;
    let half = params.rot / 2u;
    if (ANGLES != 2u) {
        for (var p = lid; p < half; p += WG) {
            var i = p;
            var j = p + half;
            if (LAYOUT == 1u) {
                i = 2u * p;
                j = 2u * p + 1u;
            }
            var cs = angle(t, p);
            if (INVERSE) {
                cs.y = -cs.y;
            }
            let a = row[i];
            let b = row[j];
            y_store(base + i, a * cs.x - b * cs.y);
            y_store(base + j, a * cs.y + b * cs.x);
        }
    }
    let first = select(params.rot, 0u, ANGLES == 2u);
    for (var i = first + lid; i < params.d; i += WG) {
        y_store(base + i, row[i]);
    }
}
