// Row-norm backward, dx: one workgroup per row, three passes over the row (the statistics, the
// two reductions sum(g) and sum(g * (s - mean)), then dx), each a strided loop whose re-reads
// hit the cache. Also stores the row's (mean, rstd) for the parameter-gradient pass.

override WG: u32 = 256u;
override HAS_WEIGHT: bool = false;
// Add the upstream gradient of the fused add's sum output (pre-LN blocks) to dx.
override HAS_DSUM: bool = false;
// Use the forward's saved statistics (mean_in for LayerNorm, rstd_in) instead of recomputing.
override GIVEN_STATS: bool = false;

@group(0) @binding(0) var<uniform> params: RowGradParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> residual: array<Elem>;
@group(0) @binding(3) var<storage, read> weight: array<Elem>;
@group(0) @binding(4) var<storage, read> dy: array<Elem>;
@group(0) @binding(5) var<storage, read> dsum: array<Elem>;
@group(0) @binding(6) var<storage, read> mean_in: array<f32>;
@group(0) @binding(7) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(9) var<storage, read_write> stats: array<vec2<f32>>;

fn load_s(e: u32) -> V {
    if (HAS_RESIDUAL) {
        return to_v(x[e]) + to_v(residual[e]);
    }
    return to_v(x[e]);
}

// g = dy * (weight + offset) at access e, column access i.
fn load_g(e: u32, i: u32) -> V {
    let d = to_v(dy[e]);
    if (HAS_WEIGHT) {
        return d * (to_v(weight[i]) + params.weight_offset);
    }
    return d;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Uniform per workgroup: every invocation of a workgroup returns or none does.
    let row = linear_group(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let base = row * params.n_vec;
    let nf = f32(params.n);
    // Pass 1: sum(s - shift) with the row's first element as the shift (LayerNorm), and sum(g).
    var shift = 0.0;
    if (MODE == 0u && !GIVEN_STATS) {
        shift = hsum(first_lanes(load_s(base), V(0.0), 1u));
    }
    var a1 = 0.0;
    var ag = 0.0;
    for (var i = lid; i < params.n_vec; i += WG) {
        if (MODE == 0u && !GIVEN_STATS) {
            a1 += hsum(load_s(base + i) - V(shift));
        }
        ag += hsum(load_g(base + i, i));
    }
    let sum1 = wg_sum(lid, a1);
    let sum_g = wg_sum(lid, ag);
    var mean = 0.0;
    if (MODE == 0u) {
        mean = shift + sum1 / nf;
        // (An if, not select: the dummy bound without saved statistics has no element `row`.)
        if (GIVEN_STATS) {
            mean = mean_in[row];
        }
    }
    // Pass 2: the centred squares (or squares) and sum(g * (s - mean)).
    var a2 = 0.0;
    var agd = 0.0;
    for (var i = lid; i < params.n_vec; i += WG) {
        let d = load_s(base + i) - V(mean);
        a2 += hsum(d * d);
        agd += hsum(load_g(base + i, i) * d);
    }
    let m2 = wg_sum(lid, a2);
    let sum_gd = wg_sum(lid, agd);
    // 1 / sqrt, not inverseSqrt: eps = 0 on a constant row gives +inf (then NaN), as the forward.
    var rstd = 1.0 / sqrt(m2 / nf + params.eps);
    if (GIVEN_STATS) {
        rstd = rstd_in[row];
    }
    let mean_g = select(0.0, sum_g / nf, MODE == 0u);
    let mean_gx = rstd * sum_gd / nf;
    // Pass 3: dx.
    for (var i = lid; i < params.n_vec; i += WG) {
        let e = base + i;
        let xhat = (load_s(e) - V(mean)) * rstd;
        var d = rstd * (load_g(e, i) - V(mean_g) - xhat * mean_gx);
        if (HAS_DSUM) {
            d += to_v(dsum[e]);
        }
        dx[e] = from_v(d);
    }
    if (lid == 0u) {
        stats[row] = vec2<f32>(mean, rstd);
    }
}
