//! PowerNorm (docs/methods.md B2) on `x[T, B, C]` with an optional padding mask `[B, T]` (1 = padding).

/// Settings of one PowerNorm call.
#[derive(Clone, Copy, Debug)]
pub struct PowerNormRef {
    pub eps: f64,
    pub alpha_fwd: f64,
    pub warmup: u64,
    pub group_num: usize,
    /// `Some(t)`: a training step (counter after this step's increment); `None`: inference.
    pub step: Option<u64>,
}

/// Returns y; updates `phi` in place in training. A batch of padding only gives psi2 = 0.
#[allow(clippy::too_many_arguments)]
pub fn power_norm(
    x: &[f64],
    t: usize,
    b: usize,
    c: usize,
    mask: Option<&[f64]>,
    weight: &[f64],
    bias: &[f64],
    phi: &mut [f64],
    s: PowerNormRef,
) -> Vec<f64> {
    // 1. GroupScaling1D per token.
    let cg = c / s.group_num;
    let mut xs = x.to_vec();
    for token in xs.chunks_mut(c) {
        for grp in token.chunks_mut(cg) {
            let ms = grp.iter().map(|v| v * v).sum::<f64>() / cg as f64;
            let r = 1.0 / (ms + 1e-5).sqrt();
            grp.iter_mut().for_each(|v| *v *= r);
        }
    }
    // 2. psi2 over non-padded tokens.
    let keep = |ti: usize, bi: usize| mask.is_none_or(|m| m[bi * t + ti] == 0.0);
    let mut psi2 = vec![0.0; c];
    let mut count = 0.0;
    for ti in 0..t {
        for bi in 0..b {
            if keep(ti, bi) {
                count += 1.0;
                for ch in 0..c {
                    let v = xs[(ti * b + bi) * c + ch];
                    psi2[ch] += v * v;
                }
            }
        }
    }
    psi2.iter_mut()
        .for_each(|v| *v = if count > 0.0 { *v / count } else { 0.0 });
    // 3. Which statistic normalizes, then the running update.
    let denom: Vec<f64> = match s.step {
        Some(step) if step <= s.warmup => psi2.iter().map(|v| (v + s.eps).sqrt()).collect(),
        _ => phi.iter().map(|v| (v + s.eps).sqrt()).collect(),
    };
    if let Some(step) = s.step {
        for ch in 0..c {
            if step < s.warmup {
                phi[ch] = phi[ch] * (step - 1) as f64 / step as f64 + psi2[ch] / step as f64;
            }
            phi[ch] = s.alpha_fwd * phi[ch] + (1.0 - s.alpha_fwd) * psi2[ch];
        }
    }
    xs.iter()
        .enumerate()
        .map(|(i, v)| weight[i % c] * v / denom[i % c] + bias[i % c])
        .collect()
}

/// SinkGD: `iterations` times, rows of `x[m, n]` to L2 norm sqrt(n), then columns to sqrt(m),
/// norms clamped below at eps.
pub fn sinkhorn(x: &[f64], m: usize, n: usize, iterations: usize, eps: f64) -> Vec<f64> {
    let mut r = x.to_vec();
    for _ in 0..iterations {
        for row in r.chunks_mut(n) {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(eps);
            row.iter_mut().for_each(|v| *v *= (n as f64).sqrt() / norm);
        }
        for j in 0..n {
            let norm = (0..m)
                .map(|i| r[i * n + j] * r[i * n + j])
                .sum::<f64>()
                .sqrt()
                .max(eps);
            (0..m).for_each(|i| r[i * n + j] *= (m as f64).sqrt() / norm);
        }
    }
    r
}

/// Unified Normalization, inference: `weight * x / sqrt(running_var + eps) + bias` per channel of
/// row-major `[.., c]` data.
pub fn unified_norm_infer(
    x: &[f64],
    c: usize,
    weight: &[f64],
    bias: &[f64],
    running_var: &[f64],
    eps: f64,
) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, v)| weight[i % c] * v / (running_var[i % c] + eps).sqrt() + bias[i % c])
        .collect()
}

/// Unified Normalization state between training steps: the window `[M, C]` of past quadratic
/// means (zeros at first) and the running variance `[C]` (ones).
#[derive(Clone, Debug, PartialEq)]
pub struct UnifiedState {
    pub window: Vec<f64>,
    pub running_var: Vec<f64>,
}

/// One Unified Normalization training step (docs/methods.md B3) on `x[b, n, c]` with an optional
/// padding mask `[b, n]` (1 = padding); `step` counts from 1. Filtration needs a full window
/// (`step >= M`) as well as `step >= warmup`. Returns y and whether the step was filtered as an
/// outlier; updates `state`.
#[allow(clippy::too_many_arguments)]
pub fn unified_norm_train(
    x: &[f64],
    tokens: usize,
    c: usize,
    mask: Option<&[f64]>,
    weight: &[f64],
    bias: &[f64],
    state: &mut UnifiedState,
    step: u64,
    window: usize,
    warmup: u64,
    filter: bool,
    momentum: f64,
    eps: f64,
) -> (Vec<f64>, bool) {
    let keep = |t: usize| mask.is_none_or(|m| m[t] == 0.0);
    let kept = (0..tokens).filter(|&t| keep(t)).count();
    let q: Vec<f64> = (0..c)
        .map(|ch| {
            if kept == 0 {
                return 0.0;
            }
            (0..tokens)
                .filter(|&t| keep(t))
                .map(|t| x[t * c + ch].powi(2))
                .sum::<f64>()
                / kept as f64
        })
        .collect();
    let roots: Vec<f64> = state.window.iter().map(|v| v.max(0.0).sqrt()).collect();
    let mean = roots.iter().sum::<f64>() / roots.len() as f64;
    let r =
        roots.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (roots.len() as f64 - 1.0).max(1.0);
    let slot = (step % window as u64) as usize;
    state.window[slot * c..(slot + 1) * c].copy_from_slice(&q);
    let am: Vec<f64> = (0..c)
        .map(|ch| (0..window).map(|k| state.window[k * c + ch]).sum::<f64>() / window as f64)
        .collect();
    let gm: Vec<f64> = (0..c)
        .map(|ch| {
            ((0..window)
                .map(|k| state.window[k * c + ch].ln())
                .sum::<f64>()
                / window as f64)
                .exp()
        })
        .collect();
    let filtering = filter && step >= warmup && step >= window as u64;
    let skip = filtering && (0..c).any(|ch| am[ch] - gm[ch] > r * window as f64);
    if skip {
        let rv = state.running_var.clone();
        state.window[slot * c..(slot + 1) * c].copy_from_slice(&rv);
    }
    let plain = step <= window as u64 || step < warmup || skip;
    let sigma2: Vec<f64> = (0..c)
        .map(|ch| if plain { q[ch] } else { gm[ch] })
        .collect();
    for (rv, s2) in state.running_var.iter_mut().zip(&sigma2) {
        *rv = (1.0 - momentum) * *rv + momentum * s2;
    }
    let y = (0..tokens * c)
        .map(|i| {
            let ch = i % c;
            weight[ch] * x[i] / (sigma2[ch] + eps).sqrt() + bias[ch]
        })
        .collect();
    (y, skip)
}
