//! EvoNorm-S0's and EvoNorm-B0's gradients (docs/methods.md A15, A14). x is NCHW `(n, c, hw)`.
//!
//! S0: `y = w h r + b` with `h = x sigmoid(v x)` and `r = 1 / sqrt(var + eps)` of each (sample,
//! group) (biased variance of x over the group's channels and positions).
//!
//! B0: `y = x / d * w + b` with `d = max(a, v x + s)`, `a = sqrt(var_B + eps)` per channel (the
//! batch's biased variance in training, the running one at inference) and `s = sqrt(var_I + eps)`
//! per (sample, channel).

use crate::chnorm::moments;

/// Gradients of EvoNorm-S0: `dx` like x; `dv`, `dweight`, `dbias` per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct EvoNormS0Grads {
    pub dx: Vec<f64>,
    pub dv: Vec<f64>,
    pub dweight: Vec<f64>,
    pub dbias: Vec<f64>,
}

/// The gradients of `sum(y * dy)`: with `s = sigmoid(v x)`, `h' = s + v x s (1 - s)`,
/// `dx = r (w dy h' - xhat mean_group(w dy h r))` (`xhat = (x - mean) r`: the variance's
/// gradient), `dweight = sum dy h r`, `dbias = sum dy`, `dv = w sum dy r x^2 s (1 - s)`.
pub fn evonorm_s0_grad(
    x: &[f64],
    (n, c, hw, groups): (usize, usize, usize, usize),
    (v, weight): (&[f64], &[f64]),
    dy: &[f64],
    eps: f64,
) -> EvoNormS0Grads {
    let cg = c / groups;
    let mut out = EvoNormS0Grads {
        dx: vec![0.0; x.len()],
        dv: vec![0.0; c],
        dweight: vec![0.0; c],
        dbias: vec![0.0; c],
    };
    let m = (cg * hw) as f64;
    for i in 0..n {
        for g in 0..groups {
            let start = (i * c + g * cg) * hw;
            let slab = &x[start..start + cg * hw];
            let mean = slab.iter().sum::<f64>() / m;
            let var = slab.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / m;
            let r = 1.0 / (var + eps).sqrt();
            let ch = |k: usize| g * cg + k / hw;
            let gate = |k: usize| 1.0 / (1.0 + (-v[ch(k)] * slab[k]).exp());
            let c2 = (0..slab.len())
                .map(|k| weight[ch(k)] * dy[start + k] * slab[k] * gate(k) * r)
                .sum::<f64>()
                / m;
            for (k, &e) in slab.iter().enumerate() {
                let (s, d, w, vc) = (gate(k), dy[start + k], weight[ch(k)], v[ch(k)]);
                let dh = s + vc * e * s * (1.0 - s);
                out.dx[start + k] = r * (w * d * dh - (e - mean) * r * c2);
                out.dweight[ch(k)] += d * e * s * r;
                out.dbias[ch(k)] += d;
                out.dv[ch(k)] += w * d * r * e * e * s * (1.0 - s);
            }
        }
    }
    out
}

/// Gradients of EvoNorm-B0: `dx` like x; `dweight`, `dbias`, `dv` per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct EvoNormB0Grads {
    pub dx: Vec<f64>,
    pub dweight: Vec<f64>,
    pub dbias: Vec<f64>,
    pub dv: Vec<f64>,
}

/// Where EvoNorm-B0's batch denominator comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EvoB0Variance<'a> {
    /// Training: the batch's biased variance per channel, differentiated through.
    Batch,
    /// Inference: the running variance per channel, a constant.
    Running(&'a [f64]),
}

/// The gradients of `sum(y * dy)` for EvoNorm-B0. With `g = dy w` and `h = -g x / d^2` (the
/// gradient reaching `d`), the branch of the max that is larger takes h; at an exact tie each
/// takes `h / 2` (PyTorch's and JAX's `maximum`). Then, summing over the batch branch's elements
/// `H_a` of a channel and the instance branch's `H_s` of a (sample, channel):
/// `dx = g / d + [inst] v h + (x - mean_B) H_a / (a N hw) + (x - mean_I) H_s / (s hw)`,
/// `dv = sum [inst] h x`, `dweight = sum dy x / d`, `dbias = sum dy` (`[inst]` the instance
/// branch's share; the `H_a` term only in training).
pub fn evonorm_b0_grad(
    x: &[f64],
    (n, c, hw): (usize, usize, usize),
    (v, weight): (&[f64], &[f64]),
    var_b: EvoB0Variance,
    dy: &[f64],
    eps: f64,
) -> EvoNormB0Grads {
    let mut out = EvoNormB0Grads {
        dx: vec![0.0; x.len()],
        dweight: vec![0.0; c],
        dbias: vec![0.0; c],
        dv: vec![0.0; c],
    };
    let at = |i: usize, ch: usize| (i * c + ch) * hw;
    for ch in 0..c {
        let all: Vec<f64> = (0..n)
            .flat_map(|i| x[at(i, ch)..at(i, ch) + hw].to_vec())
            .collect();
        let (mean_b, var) = moments(&all);
        let a = match var_b {
            EvoB0Variance::Batch => (var + eps).sqrt(),
            EvoB0Variance::Running(rv) => (rv[ch] + eps).sqrt(),
        };
        let mut h_a = 0.0;
        let mut inst = Vec::with_capacity(n);
        for i in 0..n {
            let slab = &x[at(i, ch)..at(i, ch) + hw];
            let (mean_i, var_i) = moments(slab);
            let s = (var_i + eps).sqrt();
            let mut h_s = 0.0;
            for (k, &e) in slab.iter().enumerate() {
                let (dyv, b) = (dy[at(i, ch) + k], v[ch] * e + s);
                let d = a.max(b);
                let h = -dyv * weight[ch] * e / (d * d);
                let share = if b > a {
                    1.0
                } else if b < a {
                    0.0
                } else {
                    0.5
                };
                h_a += (1.0 - share) * h;
                h_s += share * h;
                out.dx[at(i, ch) + k] = dyv * weight[ch] / d + share * v[ch] * h;
                out.dv[ch] += share * h * e;
                out.dweight[ch] += dyv * e / d;
                out.dbias[ch] += dyv;
            }
            inst.push((mean_i, s, h_s));
        }
        let k_a = match var_b {
            EvoB0Variance::Batch => h_a / (a * (n * hw) as f64),
            EvoB0Variance::Running(_) => 0.0,
        };
        for (i, (mean_i, s, h_s)) in inst.into_iter().enumerate() {
            for k in 0..hw {
                let e = x[at(i, ch) + k];
                out.dx[at(i, ch) + k] += (e - mean_b) * k_a + (e - mean_i) * h_s / (s * hw as f64);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, dot, numeric, values};
    use super::*;
    use crate::chnorm::evonorm_s0;
    use crate::research::evonorm_b0;

    /// Every gradient against central differences of the f64 forward; a spread of 0.05 next to
    /// eps = 1e-3 makes eps matter, an offset of 2 makes the centring matter.
    #[test]
    fn evonorm_s0_grad_matches_finite_differences() {
        let (n, c, hw, groups, eps) = (2, 6, 5, 3, 1e-3);
        let x: Vec<f64> = values(131, n * c * hw)
            .iter()
            .map(|e| 0.05 * e + 2.0)
            .collect();
        let dy = values(132, x.len());
        let (v, w, b) = (values(133, c), values(134, c), values(135, c));
        let g = evonorm_s0_grad(&x, (n, c, hw, groups), (&v, &w), &dy, eps);
        let loss = |x: &[f64], v: &[f64], w: &[f64], b: &[f64]| {
            dot(&evonorm_s0(x, n, c, hw, groups, v, w, b, eps), &dy)
        };
        close("dx", &g.dx, &numeric(&x, |e| loss(e, &v, &w, &b)));
        close("dv", &g.dv, &numeric(&v, |e| loss(&x, e, &w, &b)));
        close("dweight", &g.dweight, &numeric(&w, |e| loss(&x, &v, e, &b)));
        close("dbias", &g.dbias, &numeric(&b, |e| loss(&x, &v, &w, e)));
    }

    /// Every gradient of EvoNorm-B0 against central differences, training and inference. x
    /// spreads 0.05 about 0.3 next to eps = 1e-3 (eps matters); v of both signs puts elements
    /// on both branches of the max (asserted), none within the differences' step of a tie.
    #[test]
    fn evonorm_b0_grad_matches_finite_differences() {
        let (n, c, hw, eps) = (3, 4, 5, 1e-3);
        let x: Vec<f64> = values(141, n * c * hw)
            .iter()
            .map(|e| 0.05 * e + 0.3)
            .collect();
        let dy = values(142, x.len());
        let v: Vec<f64> = values(143, c).iter().map(|e| 0.2 * e).collect();
        let (w, b) = (values(144, c), values(145, c));
        let rv: Vec<f64> = values(146, c).iter().map(|e| 0.002 * (e + 1.5)).collect();
        for training in [true, false] {
            let var_b = if training {
                EvoB0Variance::Batch
            } else {
                EvoB0Variance::Running(&rv)
            };
            let g = evonorm_b0_grad(&x, (n, c, hw), (&v, &w), var_b, &dy, eps);
            let fwd = |x: &[f64], v: &[f64], w: &[f64], b: &[f64]| {
                let y = evonorm_b0(x, n, c, hw, w, b, v, &rv, training, 0.1, true, eps).y;
                dot(&y, &dy)
            };
            let on_inst = g.dv.iter().filter(|d| **d != 0.0).count();
            assert!(
                on_inst > 0 && on_inst < c || !training,
                "both branches: {:?}",
                g.dv
            );
            close("dx", &g.dx, &numeric(&x, |e| fwd(e, &v, &w, &b)));
            close("dv", &g.dv, &numeric(&v, |e| fwd(&x, e, &w, &b)));
            close("dweight", &g.dweight, &numeric(&w, |e| fwd(&x, &v, e, &b)));
            close("dbias", &g.dbias, &numeric(&b, |e| fwd(&x, &v, &w, e)));
        }
    }
}
