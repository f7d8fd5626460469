//! Region Normalization RN-B's gradients (docs/methods.md A7): inside and outside the mask,
//! each channel's pixels of the batch are a BatchNorm slot (`eps * NHW / S`), with
//! `y = xhat (1 + gamma_R) + beta_f + beta_b`. x is NCHW `(n, c, hw)`, the mask `[n, hw]`.

/// Gradients of RN-B: dx like x, the affine's per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionGrads {
    pub dx: Vec<f64>,
    pub dgamma_f: Vec<f64>,
    pub dgamma_b: Vec<f64>,
    pub dbeta_f: Vec<f64>,
    pub dbeta_b: Vec<f64>,
}

/// The gradients of `sum(y * dy)` (the mask is not differentiated).
pub fn region_norm_b_grad(
    x: &[f64],
    (n, c, hw): (usize, usize, usize),
    mask: &[f64],
    (gamma_f, gamma_b): (&[f64], &[f64]),
    dy: &[f64],
    eps: f64,
) -> RegionGrads {
    let mut out = RegionGrads {
        dx: vec![0.0; x.len()],
        dgamma_f: vec![0.0; c],
        dgamma_b: vec![0.0; c],
        dbeta_f: vec![0.0; c],
        dbeta_b: vec![0.0; c],
    };
    let total = (n * hw) as f64;
    for ch in 0..c {
        for inside in [true, false] {
            let idx: Vec<usize> = (0..n * hw)
                .filter(|&p| (mask[p] > 0.5) == inside)
                .map(|p| ((p / hw) * c + ch) * hw + p % hw)
                .collect();
            if idx.is_empty() {
                continue;
            }
            let s = idx.len() as f64;
            let mean = idx.iter().map(|&e| x[e]).sum::<f64>() / s;
            let var = idx.iter().map(|&e| (x[e] - mean).powi(2)).sum::<f64>() / s;
            let rs = 1.0 / (var + eps * total / s).sqrt();
            let k = 1.0 + if inside { gamma_f[ch] } else { gamma_b[ch] };
            let xhat = |e: usize| (x[e] - mean) * rs;
            let sd = idx.iter().map(|&e| dy[e]).sum::<f64>();
            let sdx = idx.iter().map(|&e| dy[e] * xhat(e)).sum::<f64>();
            for &e in &idx {
                out.dx[e] = rs * k * (dy[e] - sd / s - xhat(e) * sdx / s);
            }
            match inside {
                true => out.dgamma_f[ch] = sdx,
                false => out.dgamma_b[ch] = sdx,
            }
            out.dbeta_f[ch] += sd;
            out.dbeta_b[ch] += sd;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, dot, numeric, values};
    use super::*;
    use crate::research::region_norm_b;

    /// Every gradient against central differences of the f64 forward; values 0.05 apart next
    /// to eps = 1e-3 (scaled by NHW / S) make eps matter.
    #[test]
    fn region_norm_b_grad_matches_finite_differences() {
        let (n, c, hw, eps) = (2, 3, 6, 1e-3);
        let x: Vec<f64> = values(191, n * c * hw)
            .iter()
            .map(|e| 0.05 * e + 1.0)
            .collect();
        let dy = values(192, x.len());
        let mask: Vec<f64> = (0..n * hw).map(|p| (p % 3 == 0) as u8 as f64).collect();
        let (gf, gb, bf, bb) = (
            values(193, c),
            values(194, c),
            values(195, c),
            values(196, c),
        );
        let g = region_norm_b_grad(&x, (n, c, hw), &mask, (&gf, &gb), &dy, eps);
        let loss = |x: &[f64], gf: &[f64], gb: &[f64], bf: &[f64], bb: &[f64]| {
            dot(&region_norm_b(x, n, c, hw, &mask, gf, gb, bf, bb, eps), &dy)
        };
        close("dx", &g.dx, &numeric(&x, |v| loss(v, &gf, &gb, &bf, &bb)));
        close(
            "dgamma_f",
            &g.dgamma_f,
            &numeric(&gf, |v| loss(&x, v, &gb, &bf, &bb)),
        );
        close(
            "dgamma_b",
            &g.dgamma_b,
            &numeric(&gb, |v| loss(&x, &gf, v, &bf, &bb)),
        );
        close(
            "dbeta_f",
            &g.dbeta_f,
            &numeric(&bf, |v| loss(&x, &gf, &gb, v, &bb)),
        );
        close(
            "dbeta_b",
            &g.dbeta_b,
            &numeric(&bb, |v| loss(&x, &gf, &gb, &bf, v)),
        );
    }
}
