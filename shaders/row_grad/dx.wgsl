// Row-norm backward, dx: a team of TEAM lanes per row, ROWS rows per workgroup (WG = TEAM *
// ROWS), three strided passes over the row (the statistics; the two reductions sum(g) and
// sum(g * (s - mean)); dx) whose re-reads hit the cache. Team sums (`team_sum2`, two values at
// once) come with the entry point: a tree in workgroup memory (`dx_entry_wg.wgsl`, any device)
// or a butterfly of subgroup shuffles (`dx_entry_sg.wgsl`, a team within a subgroup), which a
// software rasterizer runs without the barriers' switch per SIMD chunk. Also stores the row's statistics for the parameter pass.
// With a fused activation (ACT, common/activation.wgsl) g = dy * act'(z) * w with
// z = xhat * w + bias needs the statistics first: the two reductions take a pass of their own.
//
// Centred values are ((s - shift) - delta), never s - mean: the mean is shift + delta with the
// row's first element as the shift (as the forward shifts) and delta = mean(s - shift), so a
// common offset of 1e4 costs x-hat no precision (a rounded f32 mean would cost ulp(1e4) / 2).
// For the same reason the forward's saved mean is not read: pass 1 reads the row anyway.

override TEAM: u32 = 64u;
override ROWS: u32 = 1u;
override WG: u32 = 64u;
override HAS_WEIGHT: bool = false;
// Add the upstream gradient of the fused add's sum output (pre-LN blocks) to dx.
override HAS_DSUM: bool = false;
// Use the forward's saved rstd (in `stats`, gathered by `saved.wgsl`) instead of recomputing.
override GIVEN_STATS: bool = false;
// Standardization conventions: the variance over n - 1 (unbiased), and the denominator std + eps
// instead of sqrt(var + eps).
override UNBIASED: bool = false;
override EPS_OUTSIDE: bool = false;

@group(0) @binding(0) var<uniform> params: RowGradParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> residual: array<Elem>;
@group(0) @binding(3) var<storage, read> weight: array<Elem>;
@group(0) @binding(4) var<storage, read> dy: array<Elem>;
@group(0) @binding(5) var<storage, read> dsum: array<Elem>;
@group(0) @binding(6) var<storage, read_write> dx: array<Elem>;
// Per row (shift, delta, rstd, 0), written here for the parameter pass; with GIVEN_STATS its
// rstd is the forward's, gathered by `saved.wgsl` (which keeps this pass within 8 storage
// buffers).
@group(0) @binding(7) var<storage, read_write> stats: array<vec4<f32>>;
// The forward's bias (LayerNorm with an activation: z needs it).
@group(0) @binding(8) var<storage, read> bias: array<Elem>;

fn load_s(e: u32) -> V {
    if (HAS_RESIDUAL) {
        return x_load(e) + residual_load(e);
    }
    return x_load(e);
}

// The multiplier of column access i: weight + offset, or 1.
fn weight_at(i: u32) -> V {
    if (HAS_WEIGHT) {
        return weight_load(i) + params.weight_offset;
    }
    return V(1.0);
}

// g = dz * (weight + offset) at access e, column access i: dz = dy, or dy * act'(z) after a
// fused activation, z = xhat * w + bias (xhat: the normalized value, unused without ACT).
fn load_g(e: u32, i: u32, xhat: V) -> V {
    let w = weight_at(i);
    var d = dy_load(e);
    if (ACT != 0u) {
        var b = V(0.0);
        if (HAS_BIAS) {
            b = bias_load(i);
        }
        d *= activate_grad(xhat * w + b);
    }
    return d * w;
}

// The rows of workgroup `group`: `team` is the row in the group, `lane` the lane in its team,
// `lid` the invocation's index for the team sums of the entry point (`dx_entry_*.wgsl`).
fn dx_main(group: u32, team: u32, lane: u32, lid: u32) {
    // Every lane reaches every team sum: a team past the last row computes on the window's first
    // row and stores nothing.
    let want = group * ROWS + team + params.row_base;
    let live = want < params.rows;
    let row = select(params.row_base, want, live);
    // Element accesses count from the window's first row (the bindings start there).
    let base = (row - params.row_base) * params.n_vec;
    let nf = f32(params.n);
    // Read before the first barrier: lane 0 rewrites the row's statistics after the last one.
    var saved_rstd = 0.0;
    if (GIVEN_STATS) {
        saved_rstd = stats[row].z;
    }
    // Pass 1: sum(s - shift) with the row's first element as the shift (LayerNorm), and sum(g).
    var shift = 0.0;
    if (MODE == 0u) {
        shift = hsum(first_lanes(load_s(base), V(0.0), 1u));
    }
    var a1 = vec2<f32>(0.0);
    for (var i = lane; i < params.n_vec; i += TEAM) {
        if (MODE == 0u) {
            a1.x += hsum(load_s(base + i) - V(shift));
        }
        if (ACT == 0u) {
            a1.y += hsum(load_g(base + i, i, V(0.0)));
        }
    }
    let sums1 = team_sum2(lid, a1);
    let delta = select(0.0, sums1.x / nf, MODE == 0u);
    // Pass 2: the centred squares (or squares) and sum(g * (s - mean)).
    var a2 = vec2<f32>(0.0);
    for (var i = lane; i < params.n_vec; i += TEAM) {
        let d = centred(load_s(base + i), shift, delta);
        a2.x += hsum(d * d);
        if (ACT == 0u) {
            a2.y += hsum(load_g(base + i, i, V(0.0)) * d);
        }
    }
    let sums2 = team_sum2(lid, a2);
    // With D the variance's divisor and u = s - mean: dx = inv_d (g - mean(g)) - u * cu, where
    // sqrt(var + eps) gives inv_d = rstd, cu = rstd^3 sum(g u) / D (LayerNorm, RMSNorm), and
    // std + eps gives inv_d = 1 / (std + eps), cu = sum(g u) / ((std + eps)^2 D std).
    let dn = select(nf, nf - 1.0, UNBIASED);
    // 1 / sqrt, not inverseSqrt: eps = 0 on a constant row gives +inf (then NaN), as the forward.
    var rstd = 1.0 / sqrt(sums2.x / dn + params.eps);
    if (GIVEN_STATS) {
        rstd = saved_rstd;
    }
    var inv_d = rstd;
    let sd = sqrt(sums2.x / dn);
    if (EPS_OUTSIDE) {
        inv_d = 1.0 / (sd + params.eps);
    }
    // With a fused activation, g depends on xhat: sum(g) and sum(g * u) once inv_d is known.
    var sum_g = sums1.y;
    var sum_gu = sums2.y;
    if (ACT != 0u) {
        var a3 = vec2<f32>(0.0);
        for (var i = lane; i < params.n_vec; i += TEAM) {
            let d = centred(load_s(base + i), shift, delta);
            let g = load_g(base + i, i, d * inv_d);
            a3 += vec2<f32>(hsum(g), hsum(g * d));
        }
        let sums3 = team_sum2(lid, a3);
        sum_g = sums3.x;
        sum_gu = sums3.y;
    }
    var cu = rstd * rstd * rstd * sum_gu / dn;
    if (EPS_OUTSIDE) {
        let d = sd + params.eps;
        cu = sum_gu / (d * d * dn * sd);
        rstd = inv_d;
    }
    let mean_g = select(0.0, sum_g / nf, MODE == 0u);
    if (!live) {
        return;
    }
    // Pass 3: dx.
    for (var i = lane; i < params.n_vec; i += TEAM) {
        let e = base + i;
        let u = centred(load_s(e), shift, delta);
        var d = inv_d * (load_g(e, i, u * inv_d) - V(mean_g)) - u * cu;
        if (HAS_DSUM) {
            d += dsum_load(e);
        }
        dx_store(e, d);
    }
    if (lane == 0u) {
        stats[row] = vec4<f32>(shift, delta, rstd, 0.0);
    }
}
