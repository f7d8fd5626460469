//! The progressive LayerNorm -> RepBN replacement's gradients (docs/methods.md A16):
//! `y = lambda LN(x) + (1 - lambda) RepBN(x)` on tokens `[tokens, C]` (row-major), LN over C,
//! RepBN's BatchNorm over the tokens per channel.

use super::{layer_norm_grad, rep_batch_norm_grad};
use crate::chnorm::to_nhwc;

/// Gradients of the progressive norm: `dx` like x; the LayerNorm affine's and RepBN's
/// BatchNorm affine's per channel; `dalpha` RepBN's scalar.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressiveGrads {
    pub dx: Vec<f64>,
    pub dln_weight: Vec<f64>,
    pub dln_bias: Vec<f64>,
    pub dbn_weight: Vec<f64>,
    pub dbn_bias: Vec<f64>,
    pub dalpha: f64,
}

/// The parameters of a progressive-norm call: LayerNorm's affine, RepBN's BatchNorm weight and
/// alpha, the blend weight lambda, and RepBN's running statistics (`None`: training, through
/// the batch statistics).
#[derive(Clone, Copy, Debug)]
pub struct Progressive<'a> {
    pub ln_weight: &'a [f64],
    pub bn_weight: &'a [f64],
    pub alpha: f64,
    pub lambda: f64,
    pub running: Option<(&'a [f64], &'a [f64])>,
    pub eps: f64,
}

impl Progressive<'_> {
    /// The gradients of `sum(y * dy)` (the LN bias and the BN bias do not change them).
    pub fn grad(&self, x: &[f64], c: usize, dy: &[f64]) -> ProgressiveGrads {
        let tokens = x.len() / c.max(1);
        let lam = self.lambda;
        let ln = layer_norm_grad(x, c, Some(self.ln_weight), dy, self.eps);
        // RepBN's BatchNorm as NCHW with one sample: the tokens transposed to [C, tokens].
        let (xt, dyt) = (to_nhwc(x, 1, tokens, c), to_nhwc(dy, 1, tokens, c));
        let w = Some(self.bn_weight);
        let (bn, dalpha) = rep_batch_norm_grad(
            &xt,
            1,
            c,
            tokens,
            w,
            self.alpha,
            &dyt,
            self.running,
            self.eps,
        );
        let bn_dx = to_nhwc(&bn.dx, 1, c, tokens);
        let out = ProgressiveGrads {
            dx: ln
                .dx
                .iter()
                .zip(&bn_dx)
                .map(|(l, b)| lam * l + (1.0 - lam) * b)
                .collect(),
            dln_weight: ln.dweight.iter().map(|g| lam * g).collect(),
            dln_bias: (0..c)
                .map(|ch| lam * (0..tokens).map(|k| dy[k * c + ch]).sum::<f64>())
                .collect(),
            dbn_weight: bn.dweight.iter().map(|g| (1.0 - lam) * g).collect(),
            dbn_bias: bn.dbias.iter().map(|g| (1.0 - lam) * g).collect(),
            dalpha: (1.0 - lam) * dalpha,
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, dot, numeric, values};
    use super::*;
    use crate::chnorm::batch_norm;
    use crate::rownorm::layer_norm;

    /// Every gradient against central differences of `lambda LN(x) + (1 - lambda) RepBN(x)`
    /// composed from the f64 forwards, training and inference; spreads about eps at an offset.
    #[test]
    fn progressive_rep_norm_grad_matches_finite_differences() {
        let (tokens, c, eps, lambda) = (6, 4, 1e-3, 0.3);
        let x: Vec<f64> = values(171, tokens * c)
            .iter()
            .map(|e| 0.05 * e + 1.5)
            .collect();
        let dy = values(172, x.len());
        let (lw, lb, bw, bb) = (
            values(173, c),
            values(174, c),
            values(175, c),
            values(176, c),
        );
        let (rm, rv) = (vec![1.4; c], vec![0.002; c]);
        let alpha = 0.6;
        for training in [true, false] {
            let running = (!training).then_some((rm.as_slice(), rv.as_slice()));
            let lam = if training { lambda } else { 0.0 };
            let p = Progressive {
                ln_weight: &lw,
                bn_weight: &bw,
                alpha,
                lambda: lam,
                running,
                eps,
            };
            let g = p.grad(&x, c, &dy);
            let fwd = |x: &[f64], lw: &[f64], lb: &[f64], bw: &[f64], bb: &[f64], al: f64| {
                let ln = layer_norm(x, c, Some(lw), Some(lb), eps).y;
                let xt = to_nhwc(x, 1, tokens, c);
                let bn = batch_norm(
                    &xt,
                    1,
                    c,
                    tokens,
                    Some(bw),
                    Some(bb),
                    &rm,
                    &rv,
                    training,
                    0.1,
                    true,
                    eps,
                )
                .y;
                let bn = to_nhwc(&bn, 1, c, tokens);
                let y: Vec<f64> = (0..x.len())
                    .map(|i| lam * ln[i] + (1.0 - lam) * (bn[i] + al * x[i]))
                    .collect();
                dot(&y, &dy)
            };
            close(
                "dx",
                &g.dx,
                &numeric(&x, |e| fwd(e, &lw, &lb, &bw, &bb, alpha)),
            );
            close(
                "dln_weight",
                &g.dln_weight,
                &numeric(&lw, |e| fwd(&x, e, &lb, &bw, &bb, alpha)),
            );
            close(
                "dln_bias",
                &g.dln_bias,
                &numeric(&lb, |e| fwd(&x, &lw, e, &bw, &bb, alpha)),
            );
            close(
                "dbn_weight",
                &g.dbn_weight,
                &numeric(&bw, |e| fwd(&x, &lw, &lb, e, &bb, alpha)),
            );
            close(
                "dbn_bias",
                &g.dbn_bias,
                &numeric(&bb, |e| fwd(&x, &lw, &lb, &bw, e, alpha)),
            );
            let da = numeric(&[alpha], |a| fwd(&x, &lw, &lb, &bw, &bb, a[0]));
            close("dalpha", &[g.dalpha], &da);
        }
    }
}
