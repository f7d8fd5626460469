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

/// PowerNorm's approximate backward (Shen et al. 2020, the official `mask_powernorm.py`) for
/// training step `s.step` of a forward that started from running value `phi_old`: with `xs` the
/// GroupScaled x, `z = xs / sqrt(v + eps)` as the forward normalized (`v` = psi2 through the
/// warm-up, `phi_old` after), `g = dy * weight`, `ĝ = g - (1 - alpha_bkw) * nu * z`, then
/// `nu += mean over unpadded tokens of ĝ * z` (per channel, the GPU-resident `ema_gz`),
/// `dL/dxs = ĝ / sqrt(psi2 + eps)` (this batch's psi2 even after warm-up), and dL/dx through the
/// GroupScaling (an RMSNorm per token group, eps 1e-5); `dweight = sum dy * z`,
/// `dbias = sum dy`. Not the exact gradient of the forward (psi2's dependence on x is replaced by
/// the running estimate `nu`): that is the method.
#[allow(clippy::too_many_arguments)]
pub fn power_norm_grad(
    x: &[f64],
    t: usize,
    b: usize,
    c: usize,
    mask: Option<&[f64]>,
    weight: &[f64],
    dy: &[f64],
    phi_old: &[f64],
    s: PowerNormRef,
    alpha_bkw: f64,
    nu: &mut [f64],
) -> crate::grad::Grads {
    let cg = c / s.group_num;
    let mut xs = x.to_vec();
    for token in xs.chunks_mut(cg) {
        let ms = token.iter().map(|v| v * v).sum::<f64>() / cg as f64;
        let r = 1.0 / (ms + 1e-5).sqrt();
        token.iter_mut().for_each(|v| *v *= r);
    }
    let keep = |tok: usize| mask.is_none_or(|m| m[(tok % b) * t + tok / b] == 0.0);
    let kept = (0..t * b).filter(|&tok| keep(tok)).count() as f64;
    let mut psi2 = vec![0.0; c];
    for tok in (0..t * b).filter(|&tok| keep(tok)) {
        for ch in 0..c {
            psi2[ch] += xs[tok * c + ch] * xs[tok * c + ch];
        }
    }
    psi2.iter_mut()
        .for_each(|v| *v = if kept > 0.0 { *v / kept } else { 0.0 });
    let warm = s.step.is_some_and(|st| st <= s.warmup);
    let denom: Vec<f64> = (0..c)
        .map(|ch| (if warm { psi2[ch] } else { phi_old[ch] } + s.eps).sqrt())
        .collect();
    let mut out = crate::grad::Grads {
        dx: vec![0.0; x.len()],
        dweight: vec![0.0; c],
        dbias: vec![0.0; c],
    };
    let mut dxs = vec![0.0; x.len()];
    for ch in 0..c {
        let nu_old = nu[ch];
        let mut gz = 0.0;
        for tok in 0..t * b {
            let e = tok * c + ch;
            let z = xs[e] / denom[ch];
            let ghat = dy[e] * weight[ch] - (1.0 - alpha_bkw) * nu_old * z;
            if keep(tok) {
                gz += ghat * z;
            }
            dxs[e] = ghat / (psi2[ch] + s.eps).sqrt();
            out.dweight[ch] += dy[e] * z;
            out.dbias[ch] += dy[e];
        }
        if kept > 0.0 {
            nu[ch] = nu_old + gz / kept;
        }
    }
    // Through the GroupScaling: an RMSNorm without weight over each token group.
    out.dx = crate::grad::rms_norm_grad(x, cg, None, 0.0, &dxs, 1e-5).dx;
    out
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

/// What a Unified Normalization training step leaves for its backward: per channel the
/// official code's gradient compensation ratio `r` (`sqrt(sigma^2 + eps) / sqrt(running_var +
/// eps)` with the running variance before the step, clamped to [1/5, 5]; 1 in the first
/// `max(1000, warmup)` steps and for an outlier step) and `1 / sqrt(sigma^2 + eps)`.
#[derive(Clone, Debug, PartialEq)]
pub struct UnifiedSaved {
    pub ratio: Vec<f64>,
    pub inv: Vec<f64>,
    pub skip: bool,
}

/// The backward's state between steps: `ema_gz` `[C]` and the window `buffer_gz` `[M, C]`
/// (zeros at the start).
#[derive(Clone, Debug, PartialEq)]
pub struct UnifiedGradState {
    pub ema_gz: Vec<f64>,
    pub buffer_gz: Vec<f64>,
}

/// Unified Normalization's approximate backward of step `step` (the official code's gradient
/// compensation, docs/methods.md B3) on `x[tokens, c]`: with `z = x·inv`, `g = dy·w·r`,
/// `gz = mean(g·z)` over all tokens goes into `buffer_gz[step mod M]` (an outlier step: the old
/// `ema_gz`); `mean_gz` is gz while `step <= M`, `step < warmup` or an outlier step, else the
/// window's mean; `ema_gz ← (1 − momentum)·ema_gz + momentum·mean_gz`;
/// `dx = (g − K·z)·inv` with `K = ema_gz` (`mean_gz` for an outlier step);
/// `dweight = Σ dy·r·z`, `dbias = Σ dy`. A step without tokens leaves the state.
#[allow(clippy::too_many_arguments)]
pub fn unified_norm_grad(
    x: &[f64],
    c: usize,
    weight: &[f64],
    dy: &[f64],
    saved: &UnifiedSaved,
    state: &mut UnifiedGradState,
    (step, window, warmup): (u64, usize, u64),
    momentum: f64,
) -> crate::grad::Grads {
    let tokens = x.len() / c.max(1);
    let mut out = crate::grad::Grads {
        dx: vec![0.0; x.len()],
        dweight: vec![0.0; c],
        dbias: vec![0.0; c],
    };
    for ch in 0..c {
        let (r, inv) = (saved.ratio[ch], saved.inv[ch]);
        let z = |k: usize| x[k * c + ch] * inv;
        out.dweight[ch] = (0..tokens).map(|k| dy[k * c + ch] * r * z(k)).sum();
        out.dbias[ch] = (0..tokens).map(|k| dy[k * c + ch]).sum();
        if tokens == 0 {
            continue;
        }
        let g = |k: usize| dy[k * c + ch] * weight[ch] * r;
        let gz = (0..tokens).map(|k| g(k) * z(k)).sum::<f64>() / tokens as f64;
        let slot = (step % window as u64) as usize;
        let old = state.ema_gz[ch];
        state.buffer_gz[slot * c + ch] = if saved.skip { old } else { gz };
        let plain = step <= window as u64 || step < warmup || saved.skip;
        let mean_gz = if plain {
            gz
        } else {
            (0..window)
                .map(|m| state.buffer_gz[m * c + ch])
                .sum::<f64>()
                / window as f64
        };
        state.ema_gz[ch] = (1.0 - momentum) * old + momentum * mean_gz;
        let kk = if saved.skip {
            mean_gz
        } else {
            state.ema_gz[ch]
        };
        for k in 0..tokens {
            out.dx[k * c + ch] = (g(k) - kk * z(k)) * inv;
        }
    }
    out
}

/// One Unified Normalization training step (docs/methods.md B3) on `x[b, n, c]` with an optional
/// padding mask `[b, n]` (1 = padding); `step` counts from 1. Filtration needs a full window
/// (`step >= M`) as well as `step >= warmup`. Returns y and what the backward needs (whether the
/// step was filtered as an outlier among it); updates `state`.
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
) -> (Vec<f64>, UnifiedSaved) {
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
    let ratio: Vec<f64> = (0..c)
        .map(|ch| {
            let r =
                ((sigma2[ch] + eps).sqrt() / (state.running_var[ch] + eps).sqrt()).clamp(0.2, 5.0);
            if step <= warmup.max(1000) || skip {
                1.0
            } else {
                r
            }
        })
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
    let inv = sigma2.iter().map(|s2| 1.0 / (s2 + eps).sqrt()).collect();
    (y, UnifiedSaved { ratio, inv, skip })
}

#[cfg(test)]
mod grad_tests {
    use super::*;

    fn numeric(v: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        let h = 1e-5;
        (0..v.len())
            .map(|i| {
                let (mut a, mut b) = (v.to_vec(), v.to_vec());
                a[i] += h;
                b[i] -= h;
                (loss(&a) - loss(&b)) / (2.0 * h)
            })
            .collect()
    }

    fn close(what: &str, got: &[f64], want: &[f64]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                "{what}[{i}]: {g} vs numeric {w}"
            );
        }
    }

    /// Where the approximation is exact: after warm-up (z uses the running phi, a constant), with
    /// alpha_bkw = 1 (no nu term) and phi equal to this batch's psi2, dx is the true gradient of
    /// the forward through the GroupScaling; dweight and dbias always are.
    #[test]
    fn power_norm_grad_is_exact_where_the_approximation_vanishes() {
        let (t, b, c, groups) = (3, 2, 6, 2);
        let x: Vec<f64> = (0..t * b * c)
            .map(|i| ((i * 37 % 17) as f64 - 8.0) * 0.13)
            .collect();
        let dy: Vec<f64> = (0..t * b * c)
            .map(|i| ((i * 11 % 13) as f64 - 6.0) * 0.1)
            .collect();
        let (w, bias) = (vec![1.3, 0.7, 0.9, 1.1, 0.5, 1.2], vec![0.1; 6]);
        let s = PowerNormRef {
            eps: 1e-5,
            alpha_fwd: 0.9,
            warmup: 2,
            group_num: groups,
            step: Some(5),
        };
        // psi2 of this batch, as the forward computes it (no padding).
        let cg = c / groups;
        let mut xs = x.clone();
        for grp in xs.chunks_mut(cg) {
            let r = 1.0 / (grp.iter().map(|v| v * v).sum::<f64>() / cg as f64 + 1e-5).sqrt();
            grp.iter_mut().for_each(|v| *v *= r);
        }
        let psi2: Vec<f64> = (0..c)
            .map(|ch| (0..t * b).map(|k| xs[k * c + ch].powi(2)).sum::<f64>() / (t * b) as f64)
            .collect();
        let mut nu = vec![0.3; c];
        let g = power_norm_grad(&x, t, b, c, None, &w, &dy, &psi2, s, 1.0, &mut nu);
        let loss = |x: &[f64], w: &[f64], bias: &[f64]| {
            let mut phi = psi2.clone();
            let y = power_norm(x, t, b, c, None, w, bias, &mut phi, s);
            y.iter().zip(&dy).map(|(a, d)| a * d).sum::<f64>()
        };
        close("dx", &g.dx, &numeric(&x, |v| loss(v, &w, &bias)));
        close("dweight", &g.dweight, &numeric(&w, |v| loss(&x, v, &bias)));
        close("dbias", &g.dbias, &numeric(&bias, |v| loss(&x, &w, v)));
        // alpha_bkw = 1 leaves nu moving by mean(g z) alone.
        assert!(nu.iter().all(|v| v.is_finite()));
    }

    /// Where Unified Normalization's approximation is exact: a step inside the first window
    /// (sigma^2 = this batch's quadratic mean, r = 1) with momentum 1 (ema_gz = gz), no padding:
    /// dx, dweight and dbias are the true gradients of the forward.
    #[test]
    fn unified_norm_grad_is_exact_where_the_approximation_vanishes() {
        let (tokens, c, window) = (7, 3, 4);
        let x: Vec<f64> = (0..tokens * c)
            .map(|i| ((i * 37 % 17) as f64 - 8.0) * 0.013 + 0.02)
            .collect();
        let dy: Vec<f64> = (0..tokens * c)
            .map(|i| ((i * 11 % 13) as f64 - 6.0) * 0.1)
            .collect();
        let (w, bias) = (vec![1.3, 0.7, 0.9], vec![0.1; 3]);
        let eps = 1e-3;
        let fresh = || UnifiedState {
            window: vec![0.0; window * c],
            running_var: vec![1.0; c],
        };
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let (y, _) = unified_norm_train(
                x,
                tokens,
                c,
                None,
                w,
                b,
                &mut fresh(),
                2,
                window,
                10,
                false,
                1.0,
                eps,
            );
            y.iter().zip(&dy).map(|(a, d)| a * d).sum::<f64>()
        };
        let (_, saved) = unified_norm_train(
            &x,
            tokens,
            c,
            None,
            &w,
            &bias,
            &mut fresh(),
            2,
            window,
            10,
            false,
            1.0,
            eps,
        );
        assert_eq!(saved.ratio, vec![1.0; c]);
        let mut st = UnifiedGradState {
            ema_gz: vec![0.4; c],
            buffer_gz: vec![0.0; window * c],
        };
        let g = unified_norm_grad(&x, c, &w, &dy, &saved, &mut st, (2, window, 10), 1.0);
        close("dx", &g.dx, &numeric(&x, |v| loss(v, &w, &bias)));
        close("dweight", &g.dweight, &numeric(&w, |v| loss(&x, v, &bias)));
        close("dbias", &g.dbias, &numeric(&bias, |v| loss(&x, &w, v)));
        assert_eq!(
            &st.buffer_gz[2 * c..3 * c],
            &st.ema_gz[..],
            "gz entered slot 2 and ema"
        );
    }
}
