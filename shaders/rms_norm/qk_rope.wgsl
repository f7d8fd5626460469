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

// cos[t, p] (ANGLES 1) or inv_freq[p] (ANGLES 0), and sin[t, p].
@group(0) @binding(4) var<storage, read> cos_t: array<f32>;
@group(0) @binding(5) var<storage, read> sin_t: array<f32>;

// (cos, sin) of token t's angle for pair p, sin negated for the transpose.
fn angle(t: u32, p: u32) -> vec2<f32> {
    let half = params.rot / 2u;
    var cs: vec2<f32>;
    if (ANGLES == 1u) {
        cs = vec2<f32>(cos_t[t * half + p], sin_t[t * half + p]);
    } else {
        cs = cos_sin(pos[t] * cos_t[p]);
    }
    if (INVERSE) {
        cs.y = -cs.y;
    }
    return cs;
}

var<workgroup> row: array<f32, MAX_D>;
var<workgroup> red: array<f32, WG>;

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
            let cs = angle(t, p);
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
