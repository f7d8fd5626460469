// QK-norm + RoPE, "team in registers" shape (as the row engine's `row_norm/team_regs.wgsl`):
// TEAM lanes of one subgroup per (token, head) row, WG / TEAM rows per workgroup, each team
// ROWS_PER_TEAM consecutive rows; a lane holds PER_LANE vec4 accesses of its row (access
// lane + k * TEAM) in registers, the row's sum of squares is a team sum, and the rotation is
// applied from registers: GPT-J pairs (2p, 2p + 1) lie inside one access, and a NeoX pair
// (p, p + ROT/2) lies ROT/8 accesses apart, ROT_K = ROT / (8 TEAM) of the lane's own slots (the
// host picks TEAM dividing ROT / 8, or ROT / 4 for GPT-J, so the rotated slots are the same
// for every lane). A lane's cos and sin are kept in registers too and loaded
// (or computed from the position) again only when its team's next row is another token's: the
// heads of a token share them. Serves D % 4 == 0, D / 4 = TEAM * PER_LANE <= TEAM * REGS.

override TEAM: u32 = 8u;
override WG: u32 = 64u;
override PER_LANE: u32 = 1u;
override ROWS_PER_TEAM: u32 = 1u;
// Rotated slots per lane: NeoX, those of the first half (rot / (8 TEAM)), each paired with the
// slot ROT_K further; GPT-J, those of the rotary part (rot / (4 TEAM)). 0: no rotation.
override ROT_K: u32 = 0u;

// REGS, the slots of a lane's arrays, is a constant the kernel variant prepends (8, 16 or 32):
// private arrays are sized by constants, and lavapipe's compile time grows with their size
// (six arrays of 32 vec4s: 2.8 s for one pipeline, of 8: 0.44 s).

// cos[t, p] (ANGLES 1) or inv_freq[p] (ANGLES 0), and sin[t, p], four pairs per access: rows of
// ROT/2 pairs, a multiple of 4 for NeoX (ROT % 8 == 0) and of 2 for GPT-J (ROT % 4 == 0).
@group(0) @binding(4) var<storage, read> cos_t: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> sin_t: array<vec4<f32>>;

// (cos, sin) of the four angles of pairs p .. p + 3 (p a multiple of 4) of token t.
fn angles4(t: u32, p: u32) -> array<vec4<f32>, 2> {
    let half = params.rot / 2u;
    var c: vec4<f32>;
    var s: vec4<f32>;
    if (ANGLES == 1u) {
        let i = (t * half + p) / 4u;
        c = cos_t[i];
        s = sin_t[i];
    } else {
        let a = pos[t] * cos_t[p / 4u];
        let c0 = cos_sin(a.x);
        let c1 = cos_sin(a.y);
        let c2 = cos_sin(a.z);
        let c3 = cos_sin(a.w);
        c = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
        s = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
    }
    if (INVERSE) {
        s = -s;
    }
    return array<vec4<f32>, 2>(c, s);
}

// GPT-J: the (cos, sin) of pairs p and p + 1 (p even) of token t, each repeated for its two dims.
fn angles2(t: u32, p: u32) -> array<vec4<f32>, 2> {
    let half = params.rot / 2u;
    var c: vec2<f32>;
    var s: vec2<f32>;
    if (ANGLES == 1u) {
        let e = t * half + p;
        let c4 = cos_t[e / 4u];
        let s4 = sin_t[e / 4u];
        let hi = (e & 2u) != 0u;
        c = select(c4.xy, c4.zw, hi);
        s = select(s4.xy, s4.zw, hi);
    } else {
        let f4 = cos_t[p / 4u];
        let f = select(f4.xy, f4.zw, (p & 2u) != 0u);
        let c0 = cos_sin(pos[t] * f.x);
        let c1 = cos_sin(pos[t] * f.y);
        c = vec2<f32>(c0.x, c1.x);
        s = vec2<f32>(c0.y, c1.y);
    }
    if (INVERSE) {
        s = -s;
    }
    return array<vec4<f32>, 2>(c.xxyy, s.xxyy);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    let teams = WG / TEAM;
    let team = sg_id * (sg_size / TEAM) + sg_lane / TEAM;
    let lane = sg_lane % TEAM;
    let first_row = (linear_group(wid, nwg) * teams + team) * ROWS_PER_TEAM;
    let n_vec = params.d / 4u;

    var wv: array<V, REGS>;
    for (var k = 0u; k < PER_LANE; k++) {
        wv[k] = scale(lane + k * TEAM);
    }
    // Per rotated slot, the weights folded into the angles (y = rstd x w rotated): NeoX
    // y_a = a (w_a c) - b (w_b s), y_b = a (w_a s) + b (w_b c) for a in slot k and b in slot
    // k + ROT_K; GPT-J y = a (w c) + (-a.y, a.x, -a.w, a.z) (w' s), w' the weights of the pair's
    // other dims.
    var wc_a: array<vec4<f32>, REGS>;
    var ws_a: array<vec4<f32>, REGS>;
    var wc_b: array<vec4<f32>, REGS>;
    var ws_b: array<vec4<f32>, REGS>;
    // No token's angles loaded yet.
    var t_loaded = 0xffffffffu;
    // The rotated slots of a lane are its slots k < ROT_K (NeoX: and their partners k + ROT_K).
    let rotated = select(select(ROT_K, 2u * ROT_K, LAYOUT == 0u), 0u, ANGLES == 2u);
    for (var rr = 0u; rr < ROWS_PER_TEAM; rr++) {
        let row = first_row + rr;
        let live = row < params.rows;
        // A team past the last row reads the last row again and stores nothing.
        let r = min(row, params.rows - 1u);
        let base = r * n_vec;
        var v: array<V, REGS>;
        var q = 0.0;
        for (var k = 0u; k < PER_LANE; k++) {
            v[k] = x_load(base + lane + k * TEAM);
            q += dot(v[k], v[k]);
        }
        if (NORM) {
            // 1 / sqrt: eps = 0 on a zero row gives +inf, then NaN, as RMSNorm.
            let rstd = 1.0 / sqrt(team_sum(q, sg_size) / f32(params.d) + params.eps);
            for (var k = 0u; k < PER_LANE; k++) {
                v[k] = v[k] * rstd;
            }
        }
        // Dims past the rotary part: the weight alone.
        for (var k = rotated; k < PER_LANE; k++) {
            v[k] = v[k] * wv[k];
        }
        let t = r / params.heads;
        if (ANGLES != 2u) {
            if (t != t_loaded) {
                for (var k = 0u; k < ROT_K; k++) {
                    let i = lane + k * TEAM;
                    if (LAYOUT == 0u) {
                        let cs = angles4(t, 4u * i);
                        let wb = wv[k + ROT_K];
                        wc_a[k] = wv[k] * cs[0];
                        ws_a[k] = wv[k] * cs[1];
                        wc_b[k] = wb * cs[0];
                        ws_b[k] = wb * cs[1];
                    } else {
                        let cs = angles2(t, 2u * i);
                        wc_a[k] = wv[k] * cs[0];
                        ws_b[k] = wv[k].yxwz * cs[1];
                    }
                }
                t_loaded = t;
            }
            for (var k = 0u; k < ROT_K; k++) {
                let a = v[k];
                if (LAYOUT == 0u) {
                    let b = v[k + ROT_K];
                    v[k] = fma(a, wc_a[k], -b * ws_b[k]);
                    v[k + ROT_K] = fma(a, ws_a[k], b * wc_b[k]);
                } else {
                    v[k] = fma(a, wc_a[k], vec4<f32>(-a.y, a.x, -a.w, a.z) * ws_b[k]);
                }
            }
        }
        if (live) {
            for (var k = 0u; k < PER_LANE; k++) {
                y_store(base + lane + k * TEAM, v[k]);
            }
        }
    }
}
