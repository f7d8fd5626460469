// Normalizations whose statistics are built from per-instance moments (count, mean, M2 per
// (n, c), from the reduce pass over an InstanceNorm view), written as the apply pass's
// coefficients per (n, c): [mean][scale][shift] (or EvoNorm-B0's five arrays).
//
// MODE 0, IBN-Net (NORMS.md A8): channels c < half keep their instance statistics (InstanceNorm);
//   the others merge theirs over n with Chan's formula (BatchNorm), or take the running
//   statistics (inference); training updates running_mean/var [C - half] (unbiased variance).
// MODE 1, EvoNorm-B0 (A14): var_B per channel merged over n (biased; training) or running_var
//   (inference), var_I per (n, c); training updates running_var with the unbiased (timm) or
//   biased (TF) var_B. Writes [sqrt(var_B + eps)][sqrt(var_I + eps)][weight][bias][v] for
//   y = x / max(a, v x + b) * weight + bias.
// MODE 3, AdaB2N with task weights (A10): per-sample weights w_n = p_t / count_t for sample n of
//   task t (task ids in `assign` as f32), p_t = (exp(theta_t) + count_t) / sum_t'(exp(theta_t') +
//   count_t') with theta = aux [T]; mean = sum_n w_n mean_n, var = sum_n w_n (var_n + (mean_n -
//   mean)^2); running mean and (biased) variance move by `momentum` (this step's eta).
// MODE 4, Unified Normalization training (B3), one workgroup: moments of a token view (count of
//   kept tokens, 0, sum of squares per channel, n = 1) give q; a window buf [M, C] (run_a) of past
//   q and the running variance (run_b) decide the variance sigma^2 (q, or the window's geometric
//   mean, with outlier filtration when FILTER), then y = weight x / sqrt(sigma^2 + eps) + bias.
// MODE 2, UnMix-TNS (A12), one workgroup: K components (mean, var) [K, C] mixed per sample by
//   p_nk = softmax_k(cos(mu_n, mu_k) / temperature), then the components move towards the
//   samples: mu_k += M mean_n(p_nk (mu_n - mu_k)), same for the variances.

override WG: u32 = 64u;
override MODE: u32 = 0u;
override TRAINING: bool = false;
override UNBIASED_RUNNING: bool = true;
// Unified Norm: outlier filtration on.
override FILTER: bool = false;

struct InstanceParams {
    n: u32,
    c: u32,
    // IBN: channels of the InstanceNorm part. Unified Norm: the step t (>= 1, incremented first).
    half: u32,
    // UnMix-TNS: components K. AdaB2N: tasks T. Unified Norm: window M.
    k: u32,
    eps: f32,
    momentum: f32,
    temperature: f32,
    // Unified Norm: warm-up steps.
    warmup: u32,
}

@group(0) @binding(0) var<uniform> params: InstanceParams;
// Per (n, c): count, mean, M2.
@group(0) @binding(1) var<storage, read> moments: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// EvoNorm-B0: v [C].
@group(0) @binding(4) var<storage, read> aux: array<f32>;
// IBN: running_mean [C - half]; EvoNorm-B0: running_var [C]; UnMix-TNS: component means [K, C].
@group(0) @binding(5) var<storage, read_write> run_a: array<f32>;
// IBN: running_var [C - half]; UnMix-TNS: component variances [K, C].
@group(0) @binding(6) var<storage, read_write> run_b: array<f32>;
@group(0) @binding(7) var<storage, read_write> coef: array<f32>;
// UnMix-TNS: the assignment p [N, K]. AdaB2N: the task id of each sample (read only).
@group(0) @binding(8) var<storage, read_write> assign: array<f32>;

fn inst(n: u32, ch: u32) -> Moments {
    let i = (n * params.c + ch) * 3u;
    return Moments(moments[i], moments[i + 1u], moments[i + 2u]);
}

// Moments of channel ch merged over the batch, in sample order.
fn batch_moments(ch: u32) -> Moments {
    var acc = Moments(0.0, 0.0, 0.0);
    for (var n = 0u; n < params.n; n++) {
        acc = moments_merge(acc, inst(n, ch));
    }
    return acc;
}

fn running_value(acc: Moments) -> f32 {
    if UNBIASED_RUNNING {
        return acc.m2 / max(acc.n - 1.0, 1.0);
    }
    return acc.m2 / acc.n;
}

fn set_coef(ncoef: u32, n: u32, which: u32, ch: u32, v: f32) {
    coef[(n * ncoef + which) * params.c + ch] = v;
}

fn ibn(ch: u32) {
    let c = params.c;
    if ch < params.half {
        for (var n = 0u; n < params.n; n++) {
            let m = inst(n, ch);
            set_coef(3u, n, 0u, ch, m.mean);
            set_coef(3u, n, 1u, ch, inverseSqrt(m.m2 / m.n + params.eps) * weight[ch]);
            set_coef(3u, n, 2u, ch, bias[ch]);
        }
        return;
    }
    let rc = ch - params.half;
    var mean = run_a[rc];
    var var_b = run_b[rc];
    if TRAINING {
        let acc = batch_moments(ch);
        mean = acc.mean;
        var_b = acc.m2 / acc.n;
        let m = params.momentum;
        run_a[rc] = (1.0 - m) * run_a[rc] + m * mean;
        run_b[rc] = (1.0 - m) * run_b[rc] + m * running_value(acc);
    }
    let sc = inverseSqrt(var_b + params.eps) * weight[ch];
    for (var n = 0u; n < params.n; n++) {
        set_coef(3u, n, 0u, ch, mean);
        set_coef(3u, n, 1u, ch, sc);
        set_coef(3u, n, 2u, ch, bias[ch]);
    }
}

fn evo_b0(ch: u32) {
    var var_b = run_a[ch];
    if TRAINING {
        let acc = batch_moments(ch);
        var_b = acc.m2 / acc.n;
        let m = params.momentum;
        run_a[ch] = (1.0 - m) * run_a[ch] + m * running_value(acc);
    }
    let a = sqrt(var_b + params.eps);
    for (var n = 0u; n < params.n; n++) {
        let mi = inst(n, ch);
        set_coef(5u, n, 0u, ch, a);
        set_coef(5u, n, 1u, ch, sqrt(mi.m2 / mi.n + params.eps));
        set_coef(5u, n, 2u, ch, weight[ch]);
        set_coef(5u, n, 3u, ch, bias[ch]);
        set_coef(5u, n, 4u, ch, aux[ch]);
    }
}

fn unified(lid: u32) {
    let c = params.c;
    let m = params.k;
    let t = params.half;
    let entries = m * c;
    // r = unbiased variance of sqrt(buf) over all M*C entries, before this step's insertion
    // (two passes).
    var part = 0.0;
    for (var i = lid; i < entries; i += WG) {
        part += sqrt(max(run_a[i], 0.0));
    }
    let mean_sq = wg_sum(lid, part) / f32(entries);
    part = 0.0;
    for (var i = lid; i < entries; i += WG) {
        let d = sqrt(max(run_a[i], 0.0)) - mean_sq;
        part += d * d;
    }
    let r = wg_sum(lid, part) / max(f32(entries) - 1.0, 1.0);
    let slot = t % m;
    for (var ch = lid; ch < c; ch += WG) {
        let mo = inst(0u, ch);
        // A batch of padding only has no statistic: q = 0 (as PowerNorm's psi2).
        run_a[slot * c + ch] = select(0.0, mo.m2 / mo.n, mo.n > 0.0);
    }
    storageBarrier();
    // The window's arithmetic and geometric means per channel; filtration needs a full window
    // (log of the zeros it starts with is -inf).
    let filtering = FILTER && t >= params.warmup && t >= m;
    var outlier = 0.0;
    for (var ch = lid; ch < c; ch += WG) {
        var am = 0.0;
        var lg = 0.0;
        for (var k = 0u; k < m; k++) {
            let v = run_a[k * c + ch];
            am += v;
            lg += log(v);
        }
        am /= f32(m);
        let gm = exp(lg / f32(m));
        if filtering && am - gm > r * f32(m) {
            outlier = 1.0;
        }
    }
    let skip = wg_sum(lid, outlier) > 0.0;
    for (var ch = lid; ch < c; ch += WG) {
        let mo = inst(0u, ch);
        let q = select(0.0, mo.m2 / mo.n, mo.n > 0.0);
        var sigma2 = q;
        if !(t <= m || t < params.warmup || skip) {
            var lg = 0.0;
            for (var k = 0u; k < m; k++) {
                lg += log(run_a[k * c + ch]);
            }
            sigma2 = exp(lg / f32(m));
        }
        if skip {
            run_a[slot * c + ch] = run_b[ch];
        }
        set_coef(3u, 0u, 0u, ch, 0.0);
        set_coef(3u, 0u, 1u, ch, inverseSqrt(sigma2 + params.eps) * weight[ch]);
        set_coef(3u, 0u, 2u, ch, bias[ch]);
        run_b[ch] = (1.0 - params.momentum) * run_b[ch] + params.momentum * sigma2;
    }
}

fn task_of(n: u32) -> u32 {
    return min(u32(max(assign[n], 0.0)), params.k - 1u);
}

fn task_count(t: u32) -> f32 {
    var cnt = 0.0;
    for (var n = 0u; n < params.n; n++) {
        cnt += select(0.0, 1.0, task_of(n) == t);
    }
    return cnt;
}

// Every channel recomputes the task weights, O(N^2 + N T) per channel (a count per sample):
// fine for the small batches and task counts of continual learning, and no extra pass or
// scratch binding (the mixing kernel has none left).
fn adab2n(ch: u32) {
    var total = 0.0;
    for (var t = 0u; t < params.k; t++) {
        total += exp(aux[t]) + task_count(t);
    }
    var mean = 0.0;
    for (var n = 0u; n < params.n; n++) {
        let t = task_of(n);
        let w = (exp(aux[t]) + task_count(t)) / total / task_count(t);
        mean += w * inst(n, ch).mean;
    }
    var var_w = 0.0;
    for (var n = 0u; n < params.n; n++) {
        let t = task_of(n);
        let w = (exp(aux[t]) + task_count(t)) / total / task_count(t);
        let m = inst(n, ch);
        let d = m.mean - mean;
        var_w += w * (m.m2 / m.n + d * d);
    }
    let eta = params.momentum;
    run_a[ch] = run_a[ch] + eta * (mean - run_a[ch]);
    run_b[ch] = (1.0 - eta) * run_b[ch] + eta * var_w;
    let sc = inverseSqrt(var_w + params.eps) * weight[ch];
    for (var n = 0u; n < params.n; n++) {
        set_coef(3u, n, 0u, ch, mean);
        set_coef(3u, n, 1u, ch, sc);
        set_coef(3u, n, 2u, ch, bias[ch]);
    }
}

fn unmix(lid: u32) {
    let nb = params.n;
    let c = params.c;
    let kk = params.k;
    // Logits: cosine similarity of each sample's channel means with each component's means.
    for (var i = lid; i < nb * kk; i += WG) {
        let n = i / kk;
        let k = i - n * kk;
        var dot = 0.0;
        var nn = 0.0;
        var mk = 0.0;
        for (var ch = 0u; ch < c; ch++) {
            let a = inst(n, ch).mean;
            let b = run_a[k * c + ch];
            dot += a * b;
            nn += a * a;
            mk += b * b;
        }
        // torch.cosine_similarity: each norm clamped at 1e-8.
        assign[i] = dot / (max(sqrt(nn), 1e-8) * max(sqrt(mk), 1e-8)) / params.temperature;
    }
    storageBarrier();
    for (var n = lid; n < nb; n += WG) {
        var mx = assign[n * kk];
        for (var k = 1u; k < kk; k++) {
            mx = max(mx, assign[n * kk + k]);
        }
        var sum = 0.0;
        for (var k = 0u; k < kk; k++) {
            let e = exp(assign[n * kk + k] - mx);
            assign[n * kk + k] = e;
            sum += e;
        }
        for (var k = 0u; k < kk; k++) {
            assign[n * kk + k] /= sum;
        }
    }
    storageBarrier();
    // Per-sample statistics: the mixture over k of ((1 - p) mu_k + p mu_n, (1 - p) var_k + p
    // var_n). Its variance is mean_k(var) + mean_k((mean - mu)^2) (= mean_k(mean^2) - mu^2,
    // without the cancellation).
    let inv_k = 1.0 / f32(kk);
    for (var i = lid; i < nb * c; i += WG) {
        let n = i / c;
        let ch = i - n * c;
        let m = inst(n, ch);
        let var_n = m.m2 / m.n;
        var mu = 0.0;
        var vv = 0.0;
        for (var k = 0u; k < kk; k++) {
            let p = assign[n * kk + k];
            mu += (1.0 - p) * run_a[k * c + ch] + p * m.mean;
            vv += (1.0 - p) * run_b[k * c + ch] + p * var_n;
        }
        mu *= inv_k;
        var spread = 0.0;
        for (var k = 0u; k < kk; k++) {
            let p = assign[n * kk + k];
            let d = (1.0 - p) * run_a[k * c + ch] + p * m.mean - mu;
            spread += d * d;
        }
        let var_mix = vv * inv_k + spread * inv_k;
        set_coef(3u, n, 0u, ch, mu);
        set_coef(3u, n, 1u, ch, inverseSqrt(var_mix + params.eps) * weight[ch]);
        set_coef(3u, n, 2u, ch, bias[ch]);
    }
    storageBarrier();
    let inv_n = 1.0 / f32(nb);
    for (var i = lid; i < kk * c; i += WG) {
        let k = i / c;
        let ch = i - k * c;
        let mu_k = run_a[i];
        let var_k = run_b[i];
        var dm = 0.0;
        var dv = 0.0;
        for (var n = 0u; n < nb; n++) {
            let p = assign[n * kk + k];
            let m = inst(n, ch);
            dm += p * (m.mean - mu_k);
            dv += p * (m.m2 / m.n - var_k);
        }
        run_a[i] = mu_k + params.momentum * dm * inv_n;
        run_b[i] = var_k + params.momentum * dv * inv_n;
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if MODE == 2u {
        unmix(lid);
        return;
    }
    if MODE == 4u {
        unified(lid);
        return;
    }
    let ch = (wid.x + wid.y * nwg.x) * WG + lid;
    if ch >= params.c {
        return;
    }
    if MODE == 0u {
        ibn(ch);
    } else if MODE == 1u {
        evo_b0(ch);
    } else {
        adab2n(ch);
    }
}
