//! BatchNorm, GroupNorm and InstanceNorm on NCHW `(N, C, *)` data (`hw` = product of the
//! spatial dims), per docs/methods.md A2-A4. Two-pass statistics in f64.

/// Mean and biased variance of `vals` (two passes).
pub(crate) fn moments(vals: &[f64]) -> (f64, f64) {
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    (
        mean,
        vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n,
    )
}

fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

/// Result of BatchNorm: `y`, the batch mean and biased variance per channel (training) and the
/// running statistics after the update.
#[derive(Clone, Debug)]
pub struct BatchNormOut {
    pub y: Vec<f64>,
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub running_mean: Vec<f64>,
    pub running_var: Vec<f64>,
}

/// PyTorch BatchNorm. Training normalizes with the batch mean and biased variance and updates
/// `r = (1 - m) r + m s` (unbiased variance into running_var unless `unbiased_running` is false);
/// inference uses the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
    running_mean: &[f64],
    running_var: &[f64],
    training: bool,
    momentum: f64,
    unbiased_running: bool,
    eps: f64,
) -> BatchNormOut {
    let mut out = BatchNormOut {
        y: vec![0.0; x.len()],
        mean: vec![0.0; c],
        var: vec![0.0; c],
        running_mean: running_mean.to_vec(),
        running_var: running_var.to_vec(),
    };
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| x[(i * c + ch) * hw..(i * c + ch + 1) * hw].to_vec())
            .collect();
        let (mean, var) = if training {
            let (m, v) = moments(&vals);
            let cnt = vals.len() as f64;
            let v_run = if unbiased_running {
                v * cnt / (cnt - 1.0)
            } else {
                v
            };
            out.running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * m;
            out.running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * v_run;
            (m, v)
        } else {
            (running_mean[ch], running_var[ch])
        };
        out.mean[ch] = mean;
        out.var[ch] = var;
        let rstd = 1.0 / (var + eps).sqrt();
        for i in 0..n {
            for k in 0..hw {
                let idx = (i * c + ch) * hw + k;
                let mut o = (x[idx] - mean) * rstd;
                if let Some(w) = weight {
                    o *= w[ch];
                }
                if let Some(b) = bias {
                    o += b[ch];
                }
                out.y[idx] = o;
            }
        }
    }
    out
}

/// GroupNorm with per-channel affine and an optional SiLU after it.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
    eps: f64,
    silu_after: bool,
) -> Vec<f64> {
    let cg = c / groups;
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for g in 0..groups {
            let start = (i * c + g * cg) * hw;
            let slab = &x[start..start + cg * hw];
            let (mean, var) = moments(slab);
            let rstd = 1.0 / (var + eps).sqrt();
            for (k, v) in slab.iter().enumerate() {
                let ch = g * cg + k / hw;
                let mut o = (v - mean) * rstd;
                if let Some(w) = weight {
                    o *= w[ch];
                }
                if let Some(b) = bias {
                    o += b[ch];
                }
                y[start + k] = if silu_after { silu(o) } else { o };
            }
        }
    }
    y
}

/// InstanceNorm: GroupNorm with one group per channel.
#[allow(clippy::too_many_arguments)]
pub fn instance_norm(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
    eps: f64,
) -> Vec<f64> {
    group_norm(x, n, c, hw, c, weight, bias, eps, false)
}

/// NCHW -> NHWC for `(n, c, hw)` data.
pub fn to_nhwc(x: &[f64], n: usize, c: usize, hw: usize) -> Vec<f64> {
    let mut o = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for k in 0..hw {
                o[(i * hw + k) * c + ch] = x[(i * c + ch) * hw + k];
            }
        }
    }
    o
}

/// Groups the flat indices of a row-major `shape` by their coordinates outside `reduced` dims.
pub(crate) fn groups_over(shape: &[usize], reduced: &[bool]) -> Vec<Vec<usize>> {
    let numel: usize = shape.iter().product();
    let mut map: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
    for flat in 0..numel {
        let mut rem = flat;
        let mut key = Vec::new();
        for d in (0..shape.len()).rev() {
            let coord = rem % shape[d];
            rem /= shape[d];
            if !reduced[d] {
                key.push(coord);
            }
        }
        map.entry(key).or_default().push(flat);
    }
    map.into_values().collect()
}

pub(crate) fn normalize_axis(axis: isize, rank: usize) -> usize {
    (if axis < 0 { axis + rank as isize } else { axis }) as usize
}

/// MeanVarianceNormalization (ONNX): `(x - mean) / (sqrt(var_biased) + eps)` over `axes`.
pub fn mean_variance_norm(x: &[f64], shape: &[usize], axes: &[isize], eps: f64) -> Vec<f64> {
    let mut reduced = vec![false; shape.len()];
    for &a in axes {
        reduced[normalize_axis(a, shape.len())] = true;
    }
    let mut y = vec![0.0; x.len()];
    for idx in groups_over(shape, &reduced) {
        let vals: Vec<f64> = idx.iter().map(|&i| x[i]).collect();
        let (mean, var) = moments(&vals);
        for &i in &idx {
            y[i] = (x[i] - mean) / (var.sqrt() + eps);
        }
    }
    y
}

/// LpNorm: `x / ||x||_p` along `axis` (p = 1 or 2), 0 where the norm is 0.
pub fn lp_norm(x: &[f64], shape: &[usize], axis: isize, p: u32) -> Vec<f64> {
    let mut reduced = vec![false; shape.len()];
    reduced[normalize_axis(axis, shape.len())] = true;
    let mut y = vec![0.0; x.len()];
    for idx in groups_over(shape, &reduced) {
        let norm = match p {
            1 => idx.iter().map(|&i| x[i].abs()).sum::<f64>(),
            _ => idx.iter().map(|&i| x[i] * x[i]).sum::<f64>().sqrt(),
        };
        for &i in &idx {
            y[i] = if norm == 0.0 { 0.0 } else { x[i] / norm };
        }
    }
    y
}

/// Weight Standardization per output channel of a row-major `[o, k]` weight:
/// `(w - mean) / (std + eps)` or `/ sqrt(var + eps)` (`eps_inside_sqrt`), unbiased or biased var.
pub fn weight_standardization(
    w: &[f64],
    o: usize,
    unbiased: bool,
    eps_inside_sqrt: bool,
    eps: f64,
) -> Vec<f64> {
    let k = w.len() / o;
    w.chunks(k)
        .flat_map(|row| {
            let m = row.iter().sum::<f64>() / k as f64;
            let ss = row.iter().map(|v| (v - m) * (v - m)).sum::<f64>();
            let var = if unbiased {
                ss / (k - 1) as f64
            } else {
                ss / k as f64
            };
            let denom = if eps_inside_sqrt {
                (var + eps).sqrt()
            } else {
                var.sqrt() + eps
            };
            row.iter().map(move |v| (v - m) / denom).collect::<Vec<_>>()
        })
        .collect()
}

/// EvoNorm-S0 on NCHW: `x * sigmoid(v x) / sqrt(var_group + eps) * weight + bias`.
#[allow(clippy::too_many_arguments)]
pub fn evonorm_s0(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
    v: &[f64],
    weight: &[f64],
    bias: &[f64],
    eps: f64,
) -> Vec<f64> {
    let cg = c / groups;
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for g in 0..groups {
            let start = (i * c + g * cg) * hw;
            let slab = &x[start..start + cg * hw];
            let (_, var) = moments(slab);
            for (k, &e) in slab.iter().enumerate() {
                let ch = g * cg + k / hw;
                let gate = 1.0 / (1.0 + (-v[ch] * e).exp());
                y[start + k] = e * gate / (var + eps).sqrt() * weight[ch] + bias[ch];
            }
        }
    }
    y
}

/// Test-time BN: normalize with `w_src * running + (1 - w_src) * batch` statistics, the batch
/// variance unbiased (docs/methods.md A11).
#[allow(clippy::too_many_arguments)]
pub fn test_time_bn(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
    running_mean: &[f64],
    running_var: &[f64],
    w_src: f64,
    eps: f64,
) -> Vec<f64> {
    let batch = batch_norm(
        x,
        n,
        c,
        hw,
        None,
        None,
        running_mean,
        running_var,
        true,
        0.0,
        true,
        eps,
    );
    let cnt = (n * hw) as f64;
    let mean: Vec<f64> = (0..c)
        .map(|i| w_src * running_mean[i] + (1.0 - w_src) * batch.mean[i])
        .collect();
    let var: Vec<f64> = (0..c)
        .map(|i| w_src * running_var[i] + (1.0 - w_src) * batch.var[i] * cnt / (cnt - 1.0))
        .collect();
    batch_norm(
        x, n, c, hw, weight, bias, &mean, &var, false, 0.0, true, eps,
    )
    .y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norm_training_known_values() {
        // One channel, values 1..4: mean 2.5, biased var 1.25, unbiased 5/3.
        let o = batch_norm(
            &[1.0, 2.0, 3.0, 4.0],
            2,
            1,
            2,
            None,
            None,
            &[0.0],
            &[1.0],
            true,
            0.1,
            true,
            0.0,
        );
        assert!((o.mean[0] - 2.5).abs() < 1e-12);
        assert!((o.running_mean[0] - 0.25).abs() < 1e-12);
        assert!((o.running_var[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-12);
        assert!((o.y[0] + 1.5 / 1.25f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn group_norm_with_one_group_per_channel_is_instance_norm() {
        let x: Vec<f64> = (0..24).map(|i| (i as f64 * 0.37).sin()).collect();
        let a = group_norm(&x, 2, 3, 4, 3, None, None, 1e-5, false);
        let b = instance_norm(&x, 2, 3, 4, None, None, 1e-5);
        assert_eq!(a, b);
        assert!((silu(0.0)).abs() < 1e-15 && (silu(50.0) - 50.0).abs() < 1e-9);
    }
}
