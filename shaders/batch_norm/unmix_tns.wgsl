// UnMix-TNS mixing (docs/methods.md), one workgroup: K components (mean, var) [K, C] (run_a,
// run_b) mixed per sample by p_nk = softmax_k(cos(mu_n, mu_k) / temperature) (kept in `assign`
// [N, K]), then the components move towards the samples: mu_k += M mean_n(p_nk (mu_n - mu_k)),
// the same for the variances.

struct UnmixParams {
    n: u32,
    c: u32,
    // Components K.
    k: u32,
    _pad0: u32,
    eps: f32,
    // The update rate M.
    momentum: f32,
    temperature: f32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: UnmixParams;

override WG: u32 = 64u;

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
        set_norm_coefs(n, ch, mu, rsqrt_var(var_mix + params.eps) * weight[ch]);
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
fn main(@builtin(local_invocation_index) lid: u32) {
    unmix(lid);
}
