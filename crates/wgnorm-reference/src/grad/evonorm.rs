//! EvoNorm-S0's gradients (docs/methods.md A15): `y = w h r + b` with `h = x sigmoid(v x)` and
//! `r = 1 / sqrt(var + eps)` of each (sample, group) (biased variance of x over the group's
//! channels and positions). x is NCHW `(n, c, hw)`.

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

#[cfg(test)]
mod tests {
    use super::super::tests::{close, dot, numeric, values};
    use super::*;
    use crate::chnorm::evonorm_s0;

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
}
