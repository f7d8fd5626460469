//! References of the research methods built on instance statistics (docs/methods.md A8, A12, A14), on
//! NCHW `x` seen as `[n, c, hw]`.

use crate::chnorm::moments;

fn slab(x: &[f64], c: usize, hw: usize, i: usize, ch: usize) -> &[f64] {
    &x[(i * c + ch) * hw..(i * c + ch + 1) * hw]
}

fn channel(x: &[f64], n: usize, c: usize, hw: usize, ch: usize) -> Vec<f64> {
    (0..n)
        .flat_map(|i| slab(x, c, hw, i, ch).to_vec())
        .collect()
}

/// Outputs and updated state of a stateful op.
#[derive(Clone, Debug)]
pub struct StatefulOut {
    pub y: Vec<f64>,
    pub state_a: Vec<f64>,
    pub state_b: Vec<f64>,
}

/// IBN-a: InstanceNorm (affine) on channels `[0, half)`, BatchNorm (PyTorch semantics, unbiased
/// running variance) on `[half, c)`; `running_*` have `c - half` entries.
#[allow(clippy::too_many_arguments)]
pub fn ibn_norm(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    half: usize,
    weight: &[f64],
    bias: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    training: bool,
    momentum: f64,
    eps: f64,
) -> StatefulOut {
    let mut y = vec![0.0; x.len()];
    let (mut rm, mut rv) = (running_mean.to_vec(), running_var.to_vec());
    for ch in 0..c {
        let per_sample: Vec<(f64, f64)> = if ch < half {
            (0..n).map(|i| moments(slab(x, c, hw, i, ch))).collect()
        } else {
            let r = ch - half;
            let stats = if training {
                let vals = channel(x, n, c, hw, ch);
                let (m, v) = moments(&vals);
                let cnt = vals.len() as f64;
                rm[r] = (1.0 - momentum) * rm[r] + momentum * m;
                rv[r] = (1.0 - momentum) * rv[r] + momentum * v * cnt / (cnt - 1.0);
                (m, v)
            } else {
                (running_mean[r], running_var[r])
            };
            vec![stats; n]
        };
        for (i, (m, v)) in per_sample.into_iter().enumerate() {
            let rstd = 1.0 / (v + eps).sqrt();
            for k in 0..hw {
                let idx = (i * c + ch) * hw + k;
                y[idx] = (x[idx] - m) * rstd * weight[ch] + bias[ch];
            }
        }
    }
    StatefulOut {
        y,
        state_a: rm,
        state_b: rv,
    }
}

/// EvoNorm-B0: `y = x / max(sqrt(var_B + eps), v x + sqrt(var_I + eps)) * weight + bias`, var_B
/// per channel over (n, hw) (batch in training, `running_var` otherwise), var_I per (n, c);
/// training updates `running_var` with the unbiased or biased batch variance. Returns y and the
/// running variance in `state_a`.
#[allow(clippy::too_many_arguments)]
pub fn evonorm_b0(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    weight: &[f64],
    bias: &[f64],
    v: &[f64],
    running_var: &[f64],
    training: bool,
    momentum: f64,
    unbiased_running: bool,
    eps: f64,
) -> StatefulOut {
    let mut y = vec![0.0; x.len()];
    let mut rv = running_var.to_vec();
    for ch in 0..c {
        let var_b = if training {
            let vals = channel(x, n, c, hw, ch);
            let (_, var) = moments(&vals);
            let cnt = vals.len() as f64;
            let v_run = if unbiased_running {
                var * cnt / (cnt - 1.0)
            } else {
                var
            };
            rv[ch] = (1.0 - momentum) * rv[ch] + momentum * v_run;
            var
        } else {
            running_var[ch]
        };
        let a = (var_b + eps).sqrt();
        for i in 0..n {
            let (_, var_i) = moments(slab(x, c, hw, i, ch));
            let b = (var_i + eps).sqrt();
            for k in 0..hw {
                let idx = (i * c + ch) * hw + k;
                let d = a.max(v[ch] * x[idx] + b);
                y[idx] = x[idx] / d * weight[ch] + bias[ch];
            }
        }
    }
    StatefulOut {
        y,
        state_a: rv,
        state_b: Vec::new(),
    }
}

/// UnMix-TNS forward and component update (`comp_mean`, `comp_var` `[k, c]`; `momentum` is M,
/// already `1 - (1 - m_bn)^(n/64)`). Returns y and the updated components.
#[allow(clippy::too_many_arguments)]
pub fn unmix_tns(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    weight: &[f64],
    bias: &[f64],
    comp_mean: &[f64],
    comp_var: &[f64],
    k: usize,
    momentum: f64,
    temperature: f64,
    eps: f64,
) -> StatefulOut {
    let inst: Vec<Vec<(f64, f64)>> = (0..n)
        .map(|i| (0..c).map(|ch| moments(slab(x, c, hw, i, ch))).collect())
        .collect();
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|a| a * a).sum::<f64>().sqrt().max(1e-8);
    // p[i][j]: softmax over components of the cosine similarity / temperature.
    let p: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mu: Vec<f64> = inst[i].iter().map(|s| s.0).collect();
            let nm = norm(&mut mu.iter().copied());
            let logits: Vec<f64> = (0..k)
                .map(|j| {
                    let comp = &comp_mean[j * c..(j + 1) * c];
                    let dot: f64 = mu.iter().zip(comp).map(|(a, b)| a * b).sum();
                    dot / (nm * norm(&mut comp.iter().copied())) / temperature
                })
                .collect();
            let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - mx).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        })
        .collect();
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            let (mb, vb) = inst[i][ch];
            let means: Vec<f64> = (0..k)
                .map(|j| (1.0 - p[i][j]) * comp_mean[j * c + ch] + p[i][j] * mb)
                .collect();
            let vars: Vec<f64> = (0..k)
                .map(|j| (1.0 - p[i][j]) * comp_var[j * c + ch] + p[i][j] * vb)
                .collect();
            let mu = means.iter().sum::<f64>() / k as f64;
            // As docs/methods.md writes it: mean_k(var) + mean_k(mean^2) - mu^2 (f64 here).
            let var = vars.iter().sum::<f64>() / k as f64
                + means.iter().map(|m| m * m).sum::<f64>() / k as f64
                - mu * mu;
            let rstd = 1.0 / (var + eps).sqrt();
            for q in 0..hw {
                let idx = (i * c + ch) * hw + q;
                y[idx] = (x[idx] - mu) * rstd * weight[ch] + bias[ch];
            }
        }
    }
    let mut cm = comp_mean.to_vec();
    let mut cv = comp_var.to_vec();
    for j in 0..k {
        for ch in 0..c {
            let (mut dm, mut dv) = (0.0, 0.0);
            for i in 0..n {
                dm += p[i][j] * (inst[i][ch].0 - comp_mean[j * c + ch]);
                dv += p[i][j] * (inst[i][ch].1 - comp_var[j * c + ch]);
            }
            cm[j * c + ch] += momentum * dm / n as f64;
            cv[j * c + ch] += momentum * dv / n as f64;
        }
    }
    StatefulOut {
        y,
        state_a: cm,
        state_b: cv,
    }
}

/// UnMix-TNS's momentum for a test batch of `n`: `1 - (1 - m_bn)^(n / 64)`.
pub fn unmix_momentum(m_bn: f64, n: usize) -> f64 {
    1.0 - (1.0 - m_bn).powf(n as f64 / 64.0)
}

/// PyTorch `interpolate(mode="nearest")` of masks `[n, hm, wm]` to `[n, h, w]`.
pub fn nearest_resize(
    mask: &[f64],
    n: usize,
    hm: usize,
    wm: usize,
    h: usize,
    w: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * h * w);
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                out.push(mask[(i * hm + y * hm / h) * wm + x * wm / w]);
            }
        }
    }
    out
}

/// The official `rn(x, M)` written as the code does it: `BN(x*M + (1-M)*mu) * sqrt(S / NHW)`
/// with `mu = sum(x M) / S` per channel (S = 0 -> 1), BN without affine, biased, eps.
fn rn_core(x: &[f64], n: usize, c: usize, hw: usize, m: &[f64], eps: f64) -> Vec<f64> {
    let mut z = vec![0.0; x.len()];
    let total = (n * hw) as f64;
    let s = m.iter().sum::<f64>();
    let s = if s == 0.0 { 1.0 } else { s };
    for ch in 0..c {
        let idx = |i: usize, k: usize| (i * c + ch) * hw + k;
        let mut mu = 0.0;
        for i in 0..n {
            for k in 0..hw {
                mu += x[idx(i, k)] * m[i * hw + k];
            }
        }
        mu /= s;
        let t: Vec<f64> = (0..n * hw)
            .map(|j| {
                let mj = m[j];
                x[idx(j / hw, j % hw)] * mj + (1.0 - mj) * mu
            })
            .collect();
        let (tm, tv) = moments(&t);
        for j in 0..n * hw {
            z[idx(j / hw, j % hw)] = (t[j] - tm) / (tv + eps).sqrt() * (s / total).sqrt();
        }
    }
    z
}

/// RN-B on NCHW `x` with a mask `[n, h*w]` (1 = foreground) at the feature size:
/// `r = rn(x, M) + rn(x, 1 - M)`, `y = r M (1 + gamma_f) + r (1 - M)(1 + gamma_b) + beta_f +
/// beta_b`.
#[allow(clippy::too_many_arguments)]
pub fn region_norm_b(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    mask: &[f64],
    gamma_f: &[f64],
    gamma_b: &[f64],
    beta_f: &[f64],
    beta_b: &[f64],
    eps: f64,
) -> Vec<f64> {
    let inv: Vec<f64> = mask.iter().map(|m| 1.0 - m).collect();
    let a = rn_core(x, n, c, hw, mask, eps);
    let b = rn_core(x, n, c, hw, &inv, eps);
    (0..x.len())
        .map(|e| {
            let ch = (e / hw) % c;
            let m = mask[(e / (c * hw)) * hw + e % hw];
            let r = a[e] + b[e];
            r * m * (1.0 + gamma_f[ch])
                + r * (1.0 - m) * (1.0 + gamma_b[ch])
                + beta_f[ch]
                + beta_b[ch]
        })
        .collect()
}

/// Running-statistics update from a batch, then normalization with the updated statistics:
/// EstBN (`estimated`: the variance fed is `mean((x - rm_old)^2)`, docs/methods.md A6) or adaptive BN
/// with adapted statistics (A13, the unbiased or biased batch variance fed). Training only;
/// returns y and the updated running mean / variance.
#[allow(clippy::too_many_arguments)]
pub fn bn_updated_running(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    weight: &[f64],
    bias: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    momentum: f64,
    estimated: bool,
    unbiased: bool,
    eps: f64,
) -> StatefulOut {
    let mut y = vec![0.0; x.len()];
    let (mut rm, mut rv) = (running_mean.to_vec(), running_var.to_vec());
    for ch in 0..c {
        let vals = channel(x, n, c, hw, ch);
        let (m, v) = moments(&vals);
        let cnt = vals.len() as f64;
        let fed = if estimated {
            vals.iter()
                .map(|e| (e - running_mean[ch]).powi(2))
                .sum::<f64>()
                / cnt
        } else if unbiased {
            v * cnt / (cnt - 1.0)
        } else {
            v
        };
        rm[ch] = (1.0 - momentum) * running_mean[ch] + momentum * m;
        rv[ch] = (1.0 - momentum) * running_var[ch] + momentum * fed;
        let rstd = 1.0 / (rv[ch] + eps).sqrt();
        for i in 0..n {
            for k in 0..hw {
                let idx = (i * c + ch) * hw + k;
                y[idx] = (x[idx] - rm[ch]) * rstd * weight[ch] + bias[ch];
            }
        }
    }
    StatefulOut {
        y,
        state_a: rm,
        state_b: rv,
    }
}

/// AdaB²N's task-weighted training step (docs/methods.md A10) on NCHW x: returns y and the running
/// mean / biased running variance after `rm += eta (mean - rm)`, `rv = (1 - eta) rv + eta var`.
#[allow(clippy::too_many_arguments)]
pub fn adab2n_task_weighted(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    weight: &[f64],
    bias: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    theta: &[f64],
    tasks: &[usize],
    eta: f64,
    eps: f64,
) -> StatefulOut {
    let t_count = theta.len();
    let counts: Vec<f64> = (0..t_count)
        .map(|t| tasks.iter().filter(|&&k| k == t).count() as f64)
        .collect();
    let total: f64 = (0..t_count).map(|t| theta[t].exp() + counts[t]).sum();
    let w: Vec<f64> = tasks
        .iter()
        .map(|&t| (theta[t].exp() + counts[t]) / total / counts[t])
        .collect();
    let mut y = vec![0.0; x.len()];
    let (mut rm, mut rv) = (running_mean.to_vec(), running_var.to_vec());
    for ch in 0..c {
        let mean: f64 = (0..n)
            .map(|i| w[i] * slab(x, c, hw, i, ch).iter().sum::<f64>() / hw as f64)
            .sum();
        let var: f64 = (0..n)
            .map(|i| {
                w[i] * slab(x, c, hw, i, ch)
                    .iter()
                    .map(|v| (v - mean).powi(2))
                    .sum::<f64>()
                    / hw as f64
            })
            .sum();
        rm[ch] += eta * (mean - rm[ch]);
        rv[ch] = (1.0 - eta) * rv[ch] + eta * var;
        let rstd = 1.0 / (var + eps).sqrt();
        for i in 0..n {
            for k in 0..hw {
                let idx = (i * c + ch) * hw + k;
                y[idx] = (x[idx] - mean) * rstd * weight[ch] + bias[ch];
            }
        }
    }
    StatefulOut {
        y,
        state_a: rm,
        state_b: rv,
    }
}

/// 7x7 cross-correlation with zero padding 3 of planes `[n, h, w]` (one per input channel, summed)
/// with weights `[planes, 7, 7]`.
pub fn conv7x7(planes: &[&[f64]], weight: &[f64], n: usize, h: usize, w: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * h * w];
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (p, plane) in planes.iter().enumerate() {
                    for dy in 0..7 {
                        for dx in 0..7 {
                            let (yy, xx) =
                                (y as isize + dy as isize - 3, x as isize + dx as isize - 3);
                            if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                                continue;
                            }
                            acc += weight[p * 49 + dy * 7 + dx]
                                * plane[(i * h + yy as usize) * w + xx as usize];
                        }
                    }
                }
                out[(i * h + y) * w + x] = acc;
            }
        }
    }
    out
}

/// RN-L's learned region: `s = sigmoid(conv7x7([mean_c x, max_c x]))` per pixel `[n, h*w]`.
pub fn region_norm_l_s(
    x: &[f64],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    mask_conv: &[f64],
) -> Vec<f64> {
    let hw = h * w;
    let mean: Vec<f64> = (0..n * hw)
        .map(|p| {
            (0..c)
                .map(|ch| x[((p / hw) * c + ch) * hw + p % hw])
                .sum::<f64>()
                / c as f64
        })
        .collect();
    let max: Vec<f64> = (0..n * hw)
        .map(|p| {
            (0..c)
                .map(|ch| x[((p / hw) * c + ch) * hw + p % hw])
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();
    conv7x7(&[&mean, &max], mask_conv, n, h, w)
        .iter()
        .map(|z| 1.0 / (1.0 + (-z).exp()))
        .collect()
}

/// RN-L (docs/methods.md A7): `y = (rn(x, M) + rn(x, 1 - M)) (1 + gamma) + beta`, `M = [s >= threshold]`,
/// gamma and beta per-pixel maps `conv7x7(s) + bias`.
#[allow(clippy::too_many_arguments)]
pub fn region_norm_l(
    x: &[f64],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    mask_conv: &[f64],
    gamma_conv: &[f64],
    gamma_bias: f64,
    beta_conv: &[f64],
    beta_bias: f64,
    threshold: f64,
    eps: f64,
) -> Vec<f64> {
    let hw = h * w;
    let s = region_norm_l_s(x, n, c, h, w, mask_conv);
    let m: Vec<f64> = s.iter().map(|&v| (v >= threshold) as u8 as f64).collect();
    let inv: Vec<f64> = m.iter().map(|v| 1.0 - v).collect();
    let gamma = conv7x7(&[&s], gamma_conv, n, h, w);
    let beta = conv7x7(&[&s], beta_conv, n, h, w);
    let a = rn_core(x, n, c, hw, &m, eps);
    let b = rn_core(x, n, c, hw, &inv, eps);
    (0..x.len())
        .map(|e| {
            let p = (e / (c * hw)) * hw + e % hw;
            (a[e] + b[e]) * (1.0 + gamma[p] + gamma_bias) + beta[p] + beta_bias
        })
        .collect()
}
