//! IBN-a's gradients (docs/methods.md A8): channels `[0, half)` InstanceNorm (through each
//! sample's statistics), `[half, C)` BatchNorm (through the batch statistics in training, the
//! running statistics `[C - half]` as constants at inference); per-channel affine. x is NCHW
//! `(n, c, hw)`.

use super::Grads;

/// The gradients of `sum(y * dy)`; `running`: inference with these BatchNorm statistics.
pub fn ibn_grad(
    x: &[f64],
    (n, c, hw, half): (usize, usize, usize, usize),
    weight: &[f64],
    dy: &[f64],
    running: Option<(&[f64], &[f64])>,
    eps: f64,
) -> Grads {
    let mut out = Grads {
        dx: vec![0.0; x.len()],
        dweight: vec![0.0; c],
        dbias: vec![0.0; c],
    };
    for ch in 0..c {
        let at = |i: usize| (i * c + ch) * hw..(i * c + ch + 1) * hw;
        // The element sets sharing statistics: one per sample (IN) or the whole channel (BN).
        let sets: Vec<Vec<usize>> = match ch < half {
            true => (0..n).map(|i| at(i).collect()).collect(),
            false => vec![(0..n).flat_map(at).collect()],
        };
        for idx in sets {
            let m = idx.len() as f64;
            let constant = running.filter(|_| ch >= half);
            let (mean, var) = match constant {
                Some((rm, rv)) => (rm[ch - half], rv[ch - half]),
                None => {
                    let mean = idx.iter().map(|&e| x[e]).sum::<f64>() / m;
                    let var = idx.iter().map(|&e| (x[e] - mean).powi(2)).sum::<f64>() / m;
                    (mean, var)
                }
            };
            let rstd = 1.0 / (var + eps).sqrt();
            let w = weight[ch];
            let xhat = |e: usize| (x[e] - mean) * rstd;
            let mean_g = idx.iter().map(|&e| dy[e] * w).sum::<f64>() / m;
            let mean_gx = idx.iter().map(|&e| dy[e] * w * xhat(e)).sum::<f64>() / m;
            for &e in &idx {
                let g = dy[e] * w;
                out.dx[e] = match constant {
                    Some(_) => g * rstd,
                    None => rstd * (g - mean_g - xhat(e) * mean_gx),
                };
                out.dweight[ch] += dy[e] * xhat(e);
                out.dbias[ch] += dy[e];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close_affine, dot, values};
    use super::*;
    use crate::research::ibn_norm;

    /// Training and inference against central differences of the f64 forward; values 0.05
    /// apart at an offset next to eps = 1e-3.
    #[test]
    fn ibn_grad_matches_finite_differences() {
        let (n, c, hw, half, eps) = (3, 5, 4, 2, 1e-3);
        let x: Vec<f64> = values(161, n * c * hw)
            .iter()
            .map(|e| 0.05 * e + 1.5)
            .collect();
        let dy = values(162, x.len());
        let (w, b) = (values(163, c), values(164, c));
        let rm: Vec<f64> = values(165, c - half)
            .iter()
            .map(|e| 1.5 + 0.02 * e)
            .collect();
        let rv: Vec<f64> = values(166, c - half)
            .iter()
            .map(|e| 1e-3 + 5e-4 * e.abs())
            .collect();
        for training in [true, false] {
            let running = (!training).then_some((rm.as_slice(), rv.as_slice()));
            let g = ibn_grad(&x, (n, c, hw, half), &w, &dy, running, eps);
            let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
                let y = ibn_norm(x, n, c, hw, half, w, b, &rm, &rv, training, 0.1, eps).y;
                dot(&y, &dy)
            };
            close_affine(&format!("ibn training {training}"), &g, (&x, &w, &b), fwd);
        }
    }
}
