//! Gradients of the core norms: for an upstream gradient `dy` of `y`, the gradients of
//! `sum(y * dy)` with respect to `x`, `weight` and `bias`, written out from the chain rule
//! (training-mode statistics differentiated through). Each is checked in this module's tests
//! against central finite differences of the f64 forward in [`crate::rownorm`] and
//! [`crate::chnorm`]: the oracle is checked, not trusted.
//!
//! Row norms see `x` as row-major `[rows, n]`; the batch family NCHW `(N, C, hw)`.

use crate::activation::Act;

mod batch_channel;
mod evonorm;
mod ibn;
mod poincare;
mod progressive;
mod region;
mod sinkhorn;
pub use batch_channel::{BatchChannel, BatchChannelGrads};
pub use evonorm::{
    evonorm_b0_grad, evonorm_s0_grad, EvoB0Variance, EvoNormB0Grads, EvoNormS0Grads,
};
pub use ibn::ibn_grad;
pub use poincare::{
    poincare_batch_norm_grad, poincare_batch_norm_grad_with, poincare_midpoint_grad,
    PoincareBnGrads,
};
pub use progressive::{Progressive, ProgressiveGrads};
pub use region::{region_norm_b_grad, RegionGrads};
pub use sinkhorn::sinkhorn_grad;

/// Gradients of a norm: `dx` like `x`; `dweight` and `dbias` one per parameter (empty when the
/// layer has none).
#[derive(Clone, Debug, PartialEq)]
pub struct Grads {
    pub dx: Vec<f64>,
    pub dweight: Vec<f64>,
    pub dbias: Vec<f64>,
}

/// LayerNorm's gradients per row: with `xhat = (x - mean) rstd` and `g = dy * weight`,
/// `dx = rstd (g - mean(g) - xhat mean(g xhat))`, `dweight = sum_rows dy xhat`,
/// `dbias = sum_rows dy`.
pub fn layer_norm_grad(x: &[f64], n: usize, weight: Option<&[f64]>, dy: &[f64], eps: f64) -> Grads {
    layer_norm_act_grad(x, n, (weight, None), dy, eps, Act::None)
}

/// [`layer_norm_grad`] with `act` after the affine: `dz = dy * act'(xhat * weight + bias)`
/// replaces dy (`g = dz * weight`, `dweight = sum dz xhat`, `dbias = sum dz`).
pub fn layer_norm_act_grad(
    x: &[f64],
    n: usize,
    (weight, bias): (Option<&[f64]>, Option<&[f64]>),
    dy: &[f64],
    eps: f64,
    act: Act,
) -> Grads {
    row_grad(
        x,
        n,
        dy,
        |row| {
            let mean = row.iter().sum::<f64>() / n as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            (mean, 1.0 / (var + eps).sqrt())
        },
        RowAffine {
            weight: weight.map(|w| (w, 0.0)),
            bias,
            act,
        },
        true,
    )
}

/// RMSNorm's gradients per row: with `xhat = x rstd` and `g = dy * (weight_offset + weight)`,
/// `dx = rstd (g - xhat mean(g xhat))`, `dweight = sum_rows dy xhat`.
pub fn rms_norm_grad(
    x: &[f64],
    n: usize,
    weight: Option<&[f64]>,
    weight_offset: f64,
    dy: &[f64],
    eps: f64,
) -> Grads {
    rms_norm_act_grad(x, n, (weight, weight_offset), dy, eps, Act::None)
}

/// [`rms_norm_grad`] with `act` after the scale: `dz = dy * act'(xhat * (weight_offset +
/// weight))` replaces dy.
pub fn rms_norm_act_grad(
    x: &[f64],
    n: usize,
    (weight, weight_offset): (Option<&[f64]>, f64),
    dy: &[f64],
    eps: f64,
    act: Act,
) -> Grads {
    let mut g = row_grad(
        x,
        n,
        dy,
        |row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / n as f64;
            (0.0, 1.0 / (ms + eps).sqrt())
        },
        RowAffine {
            weight: weight.map(|w| (w, weight_offset)),
            bias: None,
            act,
        },
        false,
    );
    g.dbias.clear();
    g
}

/// QK-norm + RoPE's gradients for `x[tokens, heads, d]` (see [`crate::rownorm::qk_norm_rope`]):
/// the rotation is orthogonal, so the gradient at its input is `dy` rotated back (`R^T dy`);
/// then per-head RMSNorm's gradients with the weight shared by every head (`dweight` summed
/// over tokens and heads).
pub fn qk_norm_rope_grad(
    x: &[f64],
    (heads, d): (usize, usize),
    (weight, weight_offset): (Option<&[f64]>, f64),
    eps: f64,
    (rot, neox, angles): (usize, bool, crate::rownorm::RopeRef),
    dy: &[f64],
) -> Grads {
    let mut dz = dy.to_vec();
    crate::rownorm::rope_rotate(&mut dz, (heads, d), (rot, neox), angles, true);
    rms_norm_act_grad(x, d, (weight, weight_offset), &dz, eps, Act::None)
}

/// MVN's dx (ONNX MeanVarianceNormalization, `y = u / (std + eps)`, u = x - mean, biased std
/// over `axes`): per group, `dx = (dy - mean(dy)) / D - u sum(dy u) / (M D^2 std)`, D = std + eps
/// (0 for the second term where std = 0).
pub fn mean_variance_norm_grad(
    x: &[f64],
    shape: &[usize],
    axes: &[isize],
    eps: f64,
    dy: &[f64],
) -> Vec<f64> {
    let mut reduced = vec![false; shape.len()];
    for &a in axes {
        reduced[crate::chnorm::normalize_axis(a, shape.len())] = true;
    }
    let mut dx = vec![0.0; x.len()];
    for idx in crate::chnorm::groups_over(shape, &reduced) {
        let m = idx.len() as f64;
        let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / m;
        let sd = (idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m).sqrt();
        let d = sd + eps;
        let mean_g = idx.iter().map(|&i| dy[i]).sum::<f64>() / m;
        let s = idx.iter().map(|&i| dy[i] * (x[i] - mean)).sum::<f64>();
        for &i in &idx {
            let second = if sd > 0.0 {
                (x[i] - mean) * s / (m * d * d * sd)
            } else {
                0.0
            };
            dx[i] = (dy[i] - mean_g) / d - second;
        }
    }
    dx
}

/// LpNorm's dx (`y = x / n` along `axis`, n the L1 or L2 norm, y = 0 where n = 0): with
/// `xhat = x / n`, `dx = (dy - t sum(dy xhat)) / n`, t = xhat (p = 2) or sign(x) (p = 1); 0
/// where n = 0.
pub fn lp_norm_grad(x: &[f64], shape: &[usize], axis: isize, p: u32, dy: &[f64]) -> Vec<f64> {
    let mut reduced = vec![false; shape.len()];
    reduced[crate::chnorm::normalize_axis(axis, shape.len())] = true;
    let mut dx = vec![0.0; x.len()];
    for idx in crate::chnorm::groups_over(shape, &reduced) {
        let n = match p {
            1 => idx.iter().map(|&i| x[i].abs()).sum::<f64>(),
            _ => idx.iter().map(|&i| x[i] * x[i]).sum::<f64>().sqrt(),
        };
        if n == 0.0 {
            continue;
        }
        let s = idx.iter().map(|&i| dy[i] * x[i] / n).sum::<f64>();
        for &i in &idx {
            let t = match p {
                // f64::signum(0.0) is 1; the subgradient of |x| at 0 taken here is 0.
                1 if x[i] == 0.0 => 0.0,
                1 => x[i].signum(),
                _ => x[i] / n,
            };
            dx[i] = (dy[i] - t * s) / n;
        }
    }
    dx
}

/// A row norm's affine and activation: weight with its offset, bias, the activation after.
struct RowAffine<'a> {
    weight: Option<(&'a [f64], f64)>,
    bias: Option<&'a [f64]>,
    act: Act,
}

/// Both row norms: `stats` gives a row's (mean, rstd); `centred` subtracts mean(g) (LayerNorm).
fn row_grad(
    x: &[f64],
    n: usize,
    dy: &[f64],
    stats: impl Fn(&[f64]) -> (f64, f64),
    affine: RowAffine,
    centred: bool,
) -> Grads {
    let weight = affine.weight;
    let w_at = |i: usize| weight.map_or(1.0, |(w, off)| off + w[i]);
    let mut out = Grads {
        dx: Vec::with_capacity(x.len()),
        dweight: vec![0.0; if weight.is_some() { n } else { 0 }],
        dbias: vec![0.0; if weight.is_some() { n } else { 0 }],
    };
    for (row, dyr) in x.chunks(n).zip(dy.chunks(n)) {
        let (mean, rstd) = stats(row);
        let xhat: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
        let dz: Vec<f64> = (0..n)
            .map(|i| {
                let z = xhat[i] * w_at(i) + affine.bias.map_or(0.0, |b| b[i]);
                dyr[i] * affine.act.grad(z)
            })
            .collect();
        let g: Vec<f64> = (0..n).map(|i| dz[i] * w_at(i)).collect();
        let mean_g = if centred {
            g.iter().sum::<f64>() / n as f64
        } else {
            0.0
        };
        let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n as f64;
        for i in 0..n {
            out.dx.push(rstd * (g[i] - mean_g - xhat[i] * mean_gx));
        }
        if weight.is_some() {
            for i in 0..n {
                out.dweight[i] += dz[i] * xhat[i];
                out.dbias[i] += dz[i];
            }
        }
    }
    out
}

/// `(n, c, hw)` NCHW index of sample `i`, channel `ch`, position `k`.
fn at(c: usize, hw: usize, i: usize, ch: usize, k: usize) -> usize {
    (i * c + ch) * hw + k
}

/// BatchNorm's gradients. Training (through the batch statistics of each channel over
/// `M = n * hw` values): `dx = rstd (g - mean(g) - xhat mean(g xhat))` with `g = dy * weight`;
/// inference (running statistics, constants): `dx = g * rstd_running`.
/// `dweight = sum dy xhat`, `dbias = sum dy` per channel.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_grad(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    weight: Option<&[f64]>,
    dy: &[f64],
    running: Option<(&[f64], &[f64])>,
    eps: f64,
) -> Grads {
    let mut out = Grads {
        dx: vec![0.0; x.len()],
        dweight: vec![0.0; c],
        dbias: vec![0.0; c],
    };
    let m = (n * hw) as f64;
    for ch in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|i| (0..hw).map(move |k| at(c, hw, i, ch, k)))
            .collect();
        let (mean, var) = match running {
            Some((rm, rv)) => (rm[ch], rv[ch]),
            None => {
                let mean = idx.iter().map(|&e| x[e]).sum::<f64>() / m;
                let var = idx.iter().map(|&e| (x[e] - mean).powi(2)).sum::<f64>() / m;
                (mean, var)
            }
        };
        let rstd = 1.0 / (var + eps).sqrt();
        let w = weight.map_or(1.0, |w| w[ch]);
        let xhat = |e: usize| (x[e] - mean) * rstd;
        let (mut sum_g, mut sum_gx) = (0.0, 0.0);
        for &e in &idx {
            sum_g += dy[e] * w;
            sum_gx += dy[e] * w * xhat(e);
            out.dweight[ch] += dy[e] * xhat(e);
            out.dbias[ch] += dy[e];
        }
        for &e in &idx {
            let g = dy[e] * w;
            out.dx[e] = match running {
                Some(_) => g * rstd,
                None => rstd * (g - sum_g / m - xhat(e) * sum_gx / m),
            };
        }
    }
    out
}

/// RepBN's gradients (`y = BN(x) + alpha * x`): BatchNorm's plus `alpha * dy` in dx, and
/// `dalpha = sum(dy * x)` (returned beside the BatchNorm gradients).
#[allow(clippy::too_many_arguments)]
pub fn rep_batch_norm_grad(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    weight: Option<&[f64]>,
    alpha: f64,
    dy: &[f64],
    running: Option<(&[f64], &[f64])>,
    eps: f64,
) -> (Grads, f64) {
    let mut g = batch_norm_grad(x, n, c, hw, weight, dy, running, eps);
    for (d, v) in g.dx.iter_mut().zip(dy) {
        *d += alpha * v;
    }
    (g, x.iter().zip(dy).map(|(a, b)| a * b).sum())
}

/// Weight Standardization's gradient: for `dy` the upstream gradient of the standardized
/// `[o, k]` weights, the gradient of the raw weights through each row's mean and deviation
/// (variance over `k - 1` when `unbiased`; denominator `sqrt(var + eps)` or `std + eps`).
pub fn weight_standardization_grad(
    w: &[f64],
    o: usize,
    unbiased: bool,
    eps_inside_sqrt: bool,
    eps: f64,
    dy: &[f64],
) -> Vec<f64> {
    let k = w.len() / o;
    let dn = if unbiased { (k - 1) as f64 } else { k as f64 };
    let mut out = Vec::with_capacity(w.len());
    for (row, d) in w.chunks(k).zip(dy.chunks(k)) {
        let m = row.iter().sum::<f64>() / k as f64;
        let u: Vec<f64> = row.iter().map(|v| v - m).collect();
        let var = u.iter().map(|v| v * v).sum::<f64>() / dn;
        let mean_dy = d.iter().sum::<f64>() / k as f64;
        let sum_du = d.iter().zip(&u).map(|(a, b)| a * b).sum::<f64>();
        // y = u / den: dy/dw = (d - mean(d)) / den - u * sum(d u) / den^2 * dden/dvar * 2 / dn.
        let (den, dden_dvar) = if eps_inside_sqrt {
            let den = (var + eps).sqrt();
            (den, 0.5 / den)
        } else {
            let sd = var.sqrt();
            (sd + eps, 0.5 / sd)
        };
        for i in 0..k {
            let g = (d[i] - mean_dy) / den - u[i] * sum_du / (den * den) * dden_dvar * 2.0 / dn;
            out.push(g);
        }
    }
    out
}

/// GroupNorm's gradients (InstanceNorm: `groups = c`), the SiLU after the affine differentiated
/// when `silu_after` ([`group_norm_act_grad`] with [`Act::Silu`] or [`Act::None`]).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_grad(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
    weight: &[f64],
    bias: &[f64],
    dy: &[f64],
    eps: f64,
    silu_after: bool,
) -> Grads {
    let act = if silu_after { Act::Silu } else { Act::None };
    group_norm_act_grad(x, (n, c, hw, groups), weight, bias, dy, eps, act)
}

/// GroupNorm's gradients with `act` after the affine: with `z = xhat * weight + bias` and
/// `dz = dy * act'(z)`, each group of `cg * hw` values of a sample gets
/// `dx = rstd (g - mean(g) - xhat mean(g xhat))`, `g = dz * weight[channel]`;
/// `dweight = sum dz xhat`, `dbias = sum dz` per channel. x is NCHW `(n, c, hw)`.
pub fn group_norm_act_grad(
    x: &[f64],
    (n, c, hw, groups): (usize, usize, usize, usize),
    weight: &[f64],
    bias: &[f64],
    dy: &[f64],
    eps: f64,
    act: Act,
) -> Grads {
    let cg = c / groups;
    let mut out = Grads {
        dx: vec![0.0; x.len()],
        dweight: vec![0.0; c],
        dbias: vec![0.0; c],
    };
    let len = (cg * hw) as f64;
    for i in 0..n {
        for grp in 0..groups {
            let start = (i * c + grp * cg) * hw;
            let slab = &x[start..start + cg * hw];
            let mean = slab.iter().sum::<f64>() / len;
            let var = slab.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len;
            let rstd = 1.0 / (var + eps).sqrt();
            let ch = |k: usize| grp * cg + k / hw;
            let xhat: Vec<f64> = slab.iter().map(|v| (v - mean) * rstd).collect();
            let dz: Vec<f64> = (0..slab.len())
                .map(|k| {
                    let z = xhat[k] * weight[ch(k)] + bias[ch(k)];
                    dy[start + k] * act.grad(z)
                })
                .collect();
            let g: Vec<f64> = (0..slab.len()).map(|k| dz[k] * weight[ch(k)]).collect();
            let mean_g = g.iter().sum::<f64>() / len;
            let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / len;
            for k in 0..slab.len() {
                out.dx[start + k] = rstd * (g[k] - mean_g - xhat[k] * mean_gx);
                out.dweight[ch(k)] += dz[k] * xhat[k];
                out.dbias[ch(k)] += dz[k];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{chnorm, rownorm};

    /// Deterministic values in about [-1, 1].
    pub(super) fn values(seed: u64, len: usize) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 20001) as f64 / 10000.0 - 1.0
            })
            .collect()
    }

    /// dx, dweight and dbias of `g` against central differences of `fwd(x, w, b)`.
    pub(super) fn close_affine(
        what: &str,
        g: &Grads,
        (x, w, b): (&[f64], &[f64], &[f64]),
        fwd: impl Fn(&[f64], &[f64], &[f64]) -> f64,
    ) {
        close(&format!("{what} dx"), &g.dx, &numeric(x, |v| fwd(v, w, b)));
        close(
            &format!("{what} dweight"),
            &g.dweight,
            &numeric(w, |v| fwd(x, v, b)),
        );
        close(
            &format!("{what} dbias"),
            &g.dbias,
            &numeric(b, |v| fwd(x, w, v)),
        );
    }

    /// Central differences of `loss` at `v`, one coordinate at a time.
    pub(super) fn numeric(v: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
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

    pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    pub(super) fn close(what: &str, got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                "{what}[{i}]: analytic {g}, numeric {w}"
            );
        }
    }

    #[test]
    fn layer_norm_grad_matches_finite_differences() {
        // A small variance (0.01 * values) next to eps = 1e-3 makes eps matter.
        let (rows, n, eps) = (3, 7, 1e-3);
        let x: Vec<f64> = values(1, rows * n).iter().map(|v| 0.1 * v + 2.0).collect();
        let (w, b, dy) = (values(2, n), values(3, n), values(4, rows * n));
        let g = layer_norm_grad(&x, n, Some(&w), &dy, eps);
        let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
            dot(&rownorm::layer_norm(x, n, Some(w), Some(b), eps).y, &dy)
        };
        close("dx", &g.dx, &numeric(&x, |v| fwd(v, &w, &b)));
        close("dweight", &g.dweight, &numeric(&w, |v| fwd(&x, v, &b)));
        close("dbias", &g.dbias, &numeric(&b, |v| fwd(&x, &w, v)));
        let plain = layer_norm_grad(&x, n, None, &dy, eps);
        let want = numeric(&x, |v| {
            dot(&rownorm::layer_norm(v, n, None, None, eps).y, &dy)
        });
        close("dx without affine", &plain.dx, &want);
        assert!(plain.dweight.is_empty());
    }

    #[test]
    fn rms_norm_grad_matches_finite_differences() {
        let (rows, n, eps) = (4, 9, 1e-2);
        let x = values(5, rows * n);
        let (w, dy) = (values(6, n), values(7, rows * n));
        for offset in [0.0, 1.0] {
            let g = rms_norm_grad(&x, n, Some(&w), offset, &dy, eps);
            let fwd =
                |x: &[f64], w: &[f64]| dot(&rownorm::rms_norm(x, n, Some(w), offset, eps).y, &dy);
            close("dx", &g.dx, &numeric(&x, |v| fwd(v, &w)));
            close("dweight", &g.dweight, &numeric(&w, |v| fwd(&x, v)));
            assert!(g.dbias.is_empty());
        }
    }

    #[test]
    fn batch_norm_grad_matches_finite_differences_in_training_and_inference() {
        let (n, c, hw, eps) = (3, 4, 5, 1e-3);
        let x: Vec<f64> = values(8, n * c * hw)
            .iter()
            .map(|v| 0.05 * v - 1.0)
            .collect();
        let (w, b, dy) = (values(9, c), values(10, c), values(11, n * c * hw));
        let (rm, rv) = (
            values(12, c),
            values(13, c)
                .iter()
                .map(|v| v.abs() + 0.1)
                .collect::<Vec<_>>(),
        );
        for training in [true, false] {
            let running = (!training).then_some((rm.as_slice(), rv.as_slice()));
            let g = batch_norm_grad(&x, n, c, hw, Some(&w), &dy, running, eps);
            let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
                let y = chnorm::batch_norm(
                    x,
                    n,
                    c,
                    hw,
                    Some(w),
                    Some(b),
                    &rm,
                    &rv,
                    training,
                    0.1,
                    true,
                    eps,
                )
                .y;
                dot(&y, &dy)
            };
            close("dx", &g.dx, &numeric(&x, |v| fwd(v, &w, &b)));
            close("dweight", &g.dweight, &numeric(&w, |v| fwd(&x, v, &b)));
            close("dbias", &g.dbias, &numeric(&b, |v| fwd(&x, &w, v)));
        }
    }

    #[test]
    fn rep_batch_norm_grad_matches_finite_differences() {
        let (n, c, hw, eps, alpha) = (2, 3, 4, 1e-5, 0.7);
        let x = values(18, n * c * hw);
        let (w, b, dy) = (values(19, c), values(20, c), values(21, n * c * hw));
        let (rm, rv) = (vec![0.0; c], vec![1.0; c]);
        let fwd = |x: &[f64], alpha: f64| {
            let y = chnorm::batch_norm(
                x,
                n,
                c,
                hw,
                Some(&w),
                Some(&b),
                &rm,
                &rv,
                true,
                0.1,
                true,
                eps,
            )
            .y;
            let y: Vec<f64> = y.iter().zip(x).map(|(a, v)| a + alpha * v).collect();
            dot(&y, &dy)
        };
        let (g, dalpha) = rep_batch_norm_grad(&x, n, c, hw, Some(&w), alpha, &dy, None, eps);
        close("dx", &g.dx, &numeric(&x, |v| fwd(v, alpha)));
        close("dalpha", &[dalpha], &numeric(&[alpha], |a| fwd(&x, a[0])));
    }

    #[test]
    fn weight_standardization_grad_matches_finite_differences_in_every_variant() {
        let (o, k) = (3, 8);
        let w: Vec<f64> = values(22, o * k).iter().map(|v| 0.05 * v + 0.3).collect();
        let dy = values(23, o * k);
        for (unbiased, inside) in [(true, false), (true, true), (false, false), (false, true)] {
            let eps = 1e-3;
            let g = weight_standardization_grad(&w, o, unbiased, inside, eps, &dy);
            let fwd = |w: &[f64]| {
                dot(
                    &chnorm::weight_standardization(w, o, unbiased, inside, eps),
                    &dy,
                )
            };
            close(
                &format!("unbiased {unbiased} inside {inside}"),
                &g,
                &numeric(&w, fwd),
            );
        }
    }

    #[test]
    fn group_norm_grad_matches_finite_differences_with_and_without_silu() {
        let (n, c, hw, groups, eps) = (2, 6, 4, 3, 1e-3);
        let x: Vec<f64> = values(14, n * c * hw)
            .iter()
            .map(|v| 0.1 * v + 0.5)
            .collect();
        let (w, b, dy) = (values(15, c), values(16, c), values(17, n * c * hw));
        for (groups, silu) in [(groups, false), (groups, true), (c, false)] {
            let g = group_norm_grad(&x, n, c, hw, groups, &w, &b, &dy, eps, silu);
            let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
                dot(
                    &chnorm::group_norm(x, n, c, hw, groups, Some(w), Some(b), eps, silu),
                    &dy,
                )
            };
            let what = format!("groups {groups} silu {silu}");
            close_affine(&what, &g, (&x, &w, &b), fwd);
        }
    }

    /// Every fused activation: GroupNorm then the activation, against central differences of
    /// that forward (the activation applied to the f64 GroupNorm's output).
    #[test]
    fn group_norm_grad_through_every_activation_matches_finite_differences() {
        let (n, c, hw, groups, eps) = (2, 6, 4, 3, 1e-3);
        let x: Vec<f64> = values(24, n * c * hw)
            .iter()
            .map(|v| 0.1 * v + 0.5)
            .collect();
        let (w, b, dy) = (values(25, c), values(26, c), values(27, n * c * hw));
        let acts = [
            Act::GeluTanh,
            Act::GeluErf,
            Act::Relu,
            crate::activation::SELU,
        ];
        for act in acts {
            let g = group_norm_act_grad(&x, (n, c, hw, groups), &w, &b, &dy, eps, act);
            let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
                let y = chnorm::group_norm(x, n, c, hw, groups, Some(w), Some(b), eps, false);
                let y: Vec<f64> = y.iter().map(|&v| act.apply(v)).collect();
                dot(&y, &dy)
            };
            let what = format!("{act:?}");
            close_affine(&what, &g, (&x, &w, &b), fwd);
        }
    }

    /// LayerNorm and RMSNorm with every fused activation, against central differences of the
    /// forward (the activation applied to the f64 row norm's output).
    #[test]
    fn row_norm_grad_through_every_activation_matches_finite_differences() {
        let (rows, n, eps) = (3, 7, 1e-3);
        let x: Vec<f64> = values(34, rows * n).iter().map(|v| 0.4 * v + 0.3).collect();
        let (w, b, dy) = (values(35, n), values(36, n), values(37, rows * n));
        let acts = [
            Act::Silu,
            Act::GeluTanh,
            Act::GeluErf,
            Act::Relu,
            crate::activation::SELU,
        ];
        for act in acts {
            let post = |y: Vec<f64>| y.iter().map(|&v| act.apply(v)).collect::<Vec<_>>();
            let g = layer_norm_act_grad(&x, n, (Some(&w), Some(&b)), &dy, eps, act);
            let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
                dot(
                    &post(rownorm::layer_norm(x, n, Some(w), Some(b), eps).y),
                    &dy,
                )
            };
            let what = format!("layer_norm {act:?}");
            close_affine(&what, &g, (&x, &w, &b), fwd);
            let g = rms_norm_act_grad(&x, n, (Some(&w), 1.0), &dy, eps, act);
            let fwd = |x: &[f64], w: &[f64]| {
                dot(&post(rownorm::rms_norm(x, n, Some(w), 1.0, eps).y), &dy)
            };
            let what = format!("rms_norm {act:?}");
            close(&format!("{what} dx"), &g.dx, &numeric(&x, |v| fwd(v, &w)));
            close(
                &format!("{what} dweight"),
                &g.dweight,
                &numeric(&w, |v| fwd(&x, v)),
            );
        }
    }

    /// QK-norm + RoPE: both layouts, a partial rotary dim, positions and tables, Gemma's offset.
    #[test]
    fn qk_norm_rope_grad_matches_finite_differences() {
        use crate::rownorm::{qk_norm_rope, RopeRef};
        let (tokens, heads, d, eps) = (3, 2, 8, 1e-3);
        let x: Vec<f64> = values(44, tokens * heads * d)
            .iter()
            .map(|v| v + 0.2)
            .collect();
        let (w, dy) = (values(45, d), values(46, tokens * heads * d));
        let pos = [0.0, 3.0, 17.0];
        let cos: Vec<f64> = (0..tokens * 2).map(|i| (i as f64 * 0.7).cos()).collect();
        let sin: Vec<f64> = (0..tokens * 2).map(|i| (i as f64 * 0.7).sin()).collect();
        let positions = RopeRef::Positions {
            pos: &pos,
            base: 100.0,
        };
        let table = RopeRef::Table {
            cos: &cos,
            sin: &sin,
        };
        for (rot, neox, angles, offset) in [(8, true, positions, 0.0), (4, false, table, 1.0)] {
            let g = qk_norm_rope_grad(
                &x,
                (heads, d),
                (Some(&w), offset),
                eps,
                (rot, neox, angles),
                &dy,
            );
            let fwd = |x: &[f64], w: &[f64]| {
                dot(
                    &qk_norm_rope(x, heads, d, Some(w), offset, eps, rot, neox, angles),
                    &dy,
                )
            };
            let what = format!("qk_norm_rope rot {rot} neox {neox}");
            close(&format!("{what} dx"), &g.dx, &numeric(&x, |v| fwd(v, &w)));
            close(
                &format!("{what} dweight"),
                &g.dweight,
                &numeric(&w, |v| fwd(&x, v)),
            );
        }
    }

    /// MVN over two axes and LpNorm (p = 1, 2) along an axis, against central differences.
    #[test]
    fn mvn_and_lp_norm_grads_match_finite_differences() {
        let shape = [2, 3, 4];
        let x: Vec<f64> = values(54, 24).iter().map(|v| v + 0.1).collect();
        let dy = values(55, 24);
        let g = mean_variance_norm_grad(&x, &shape, &[0, 2], 1e-3, &dy);
        let fwd = |x: &[f64]| dot(&chnorm::mean_variance_norm(x, &shape, &[0, 2], 1e-3), &dy);
        close("mvn dx", &g, &numeric(&x, fwd));
        for p in [1, 2] {
            let g = lp_norm_grad(&x, &shape, 1, p, &dy);
            let fwd = |x: &[f64]| dot(&chnorm::lp_norm(x, &shape, 1, p), &dy);
            close(&format!("lp{p} dx"), &g, &numeric(&x, fwd));
        }
    }
}
