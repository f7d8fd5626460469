// Phase 2: one invocation per slot. Merges the slot's partial moments in tile order (so the
// result does not depend on scheduling), or takes the running statistics (INFER), then writes
// the slot's mean and rstd, updates the running statistics (UPDATE_RUNNING, BatchNorm
// training), and folds rstd and affine into (mean, scale, shift) per (p, channel), so the
// apply pass is a subtract and a multiply-add per element.

override WG: u32 = 64u;
// 0: batch statistics from the partials. 1: running statistics (inference).
override INFER: bool = false;
override UPDATE_RUNNING: bool = false;
// Running variance updated with the unbiased batch variance (PyTorch) or the biased one.
override UNBIASED_RUNNING: bool = true;
override HAS_WEIGHT: bool = false;
override HAS_BIAS: bool = false;
// As in moments.wgsl: 0 mean/variance, 1 L2 norm, 2 L1 norm (y = x / norm, 0 where norm = 0).
override REDUCE: u32 = 0u;
// rstd = 1 / (sqrt(var) + eps) instead of 1 / sqrt(var + eps).
override EPS_OUTSIDE: bool = false;
// Normalize with w_src * running + (1 - w_src) * batch statistics, the batch variance
// unbiased; running statistics are read, not updated.
override MIX: bool = false;
// Normalize with the unbiased variance n / (n - 1) var.
override UNBIASED_NORM: bool = false;
// Weight and bias indexed per slot r (one per group) instead of per channel.
override AFFINE_PER_SLOT: bool = false;
// REDUCE 3 (quadratic mean): psi2 = mean of x^2 over the kept tokens;
// normalize by sqrt(psi2 + eps), or by sqrt(phi + eps) with phi = running_var before this
// step's update when QM_USE_RUNNING; UPDATE_RUNNING: phi += (psi2 - phi) * w_src (the warm-up
// average, w_src = 1/t or 0), then phi = (1 - momentum) phi + momentum psi2.
override QM_USE_RUNNING: bool = false;
// With UPDATE_RUNNING: normalize with the updated running statistics.
override NORM_UPDATED: bool = false;
// The variance fed to the running one is mean((x - rm_old)^2) = var_b + (mean - rm_old)^2
// (a sum of two non-negative terms: no cancellation).
override EST_VAR: bool = false;
// The partials are moments of x - shift (moments.wgsl SHIFTED), the slot's shift stored after
// them. The statistics (saved, running) get the shift added back; when batch statistics
// normalize and CENTRED (the epilogue computes x - mean), the coefficients keep it apart:
// mean = shift and the mean of x - shift folded into the additive term, so the apply pass's
// x - shift is exact and the small remainder keeps its digits.
override SHIFTED: bool = false;
override CENTRED: bool = true;

@group(0) @binding(0) var<uniform> params: ChannelParams;
@group(0) @binding(1) var<storage, read> partials: array<Moments>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> coef: array<f32>;
@group(0) @binding(8) var<storage, read> batches: array<u32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let slot = linear_group(wid, nwg) * WG + lid;
    if (slot >= params.p * params.r) {
        return;
    }
    let pp = slot / params.r;
    let rr = slot % params.r;
    var mean: f32;
    var var_b: f32;
    var m2_sum = 0.0;
    // Coefficient mean and the part of the mean folded into the additive term.
    var shift = 0.0;
    var folded = 0.0;
    if (INFER) {
        mean = select(running_mean[rr], 0.0, REDUCE == 3u);
        var_b = running_var[rr];
    } else if (REDUCE == 3u) {
        var acc = Moments(0.0, 0.0, 0.0);
        for (var t = 0u; t < params.tiles; t = t + 1u) {
            acc = moments_merge(acc, partials[slot * params.tiles + t]);
        }
        // A batch of padding only has no statistics: psi2 = 0 (documented choice).
        let psi2 = select(0.0, acc.m2 / acc.n, acc.n > 0.0);
        let phi_old = running_var[rr];
        mean = 0.0;
        var_b = select(psi2, phi_old, QM_USE_RUNNING);
        if (UPDATE_RUNNING) {
            var phi = phi_old + (psi2 - phi_old) * params.w_src;
            phi = (1.0 - params.momentum) * phi + params.momentum * psi2;
            running_var[rr] = phi;
        }
    } else {
        var acc = Moments(0.0, 0.0, 0.0);
        for (var t = 0u; t < params.tiles; t = t + 1u) {
            acc = moments_merge(acc, partials[slot * params.tiles + t]);
        }
        if (SHIFTED) {
            shift = partials[params.p * params.r * params.tiles + slot].mean;
        }
        mean = shift + acc.mean;
        folded = acc.mean;
        var_b = acc.m2 / acc.n;
        m2_sum = acc.m2;
        if (UNBIASED_NORM) {
            var_b = acc.m2 / (acc.n - 1.0);
        }
        if (MIX) {
            let w = params.w_src;
            mean = w * running_mean[rr] + (1.0 - w) * mean;
            var_b = w * running_var[rr] + (1.0 - w) * (acc.m2 / (acc.n - 1.0));
        }
        if (UPDATE_RUNNING) {
            var m = params.momentum;
            if (params.cumulative != 0u) {
                // num_batches_tracked after this step's increment.
                m = 1.0 / f32(batches[0] + 1u);
            }
            var v_run = var_b;
            if (UNBIASED_RUNNING) {
                v_run = acc.m2 / (acc.n - 1.0);
            }
            let rm_old = running_mean[rr];
            if (EST_VAR) {
                let d = mean - rm_old;
                v_run = acc.m2 / acc.n + d * d;
            }
            let rm_new = (1.0 - m) * rm_old + m * mean;
            let rv_new = (1.0 - m) * running_var[rr] + m * v_run;
            running_mean[rr] = rm_new;
            running_var[rr] = rv_new;
            if (NORM_UPDATED) {
                mean = rm_new;
                var_b = rv_new;
            }
        }
    }
    var rstd: f32;
    if (REDUCE == 0u || REDUCE == 3u) {
        if (EPS_OUTSIDE) {
            rstd = 1.0 / (sqrt(var_b) + params.eps);
        } else {
            rstd = rsqrt_var(var_b + params.eps);
        }
    } else {
        // The sum sits in M2; the mean stays 0.
        var norm = m2_sum;
        if (REDUCE == 1u) {
            norm = sqrt(norm);
        }
        // eps > 0 clamps the norm from below; eps = 0 maps a zero norm to 0.
        if (params.eps > 0.0) {
            rstd = params.norm_target / max(norm, params.eps);
        } else {
            rstd = select(0.0, params.norm_target / norm, norm > 0.0);
        }
    }
    stats[slot] = vec2<f32>(mean, rstd);
    let c_total = params.r * params.cg;
    for (var k = 0u; k < params.cg; k = k + 1u) {
        let ch = rr * params.cg + k;
        let ai = select(ch, rr, AFFINE_PER_SLOT);
        var sc = rstd;
        if (HAS_WEIGHT) {
            sc = sc * weight[ai];
        }
        var sh = 0.0;
        if (HAS_BIAS) {
            sh = bias[ai];
        }
        var coef_mean = mean;
        if (SHIFTED && CENTRED && !MIX && !NORM_UPDATED && !INFER && REDUCE == 0u) {
            coef_mean = shift;
            sh = sh - folded * sc;
        }
        // (mean, scale, shift): apply computes (x - mean) * scale + shift. Folding the mean into
        // the shift (x * scale + (shift - mean * scale)) would cancel two large terms whenever
        // the spread is small against the mean.
        // Structure of arrays per sample, so channels-last apply loads 4 channels at once.
        let base = pp * 3u * c_total + ch;
        coef[base] = coef_mean;
        coef[base + c_total] = sc;
        coef[base + 2u * c_total] = sh;
    }
}
