//! Batch-Channel Normalization's gradients: `y = GroupAffine(ChannelNorm(BN(x)))` differentiated
//! as the chain it is. The BN part goes through its batch statistics in training and takes the
//! running statistics as constants otherwise (inference, and EstBN, whose statistics the
//! paper's code estimates without gradient); the channel part always goes through its
//! per-(sample, group) statistics. x is NCHW `(n, c, hw)`.

use super::{batch_norm_grad, group_norm_grad};
use crate::chnorm;

/// A Batch-Channel Norm's shape and parameters: `(n, c, hw, groups)`, the BN part's per-channel
/// `bn_weight`/`bn_bias` (`None`: 1 / 0), the per-group `weight`/`bias` (`[groups]`) and eps
/// (both parts').
#[derive(Clone, Copy, Debug)]
pub struct BatchChannel<'a> {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub groups: usize,
    pub bn_weight: Option<&'a [f64]>,
    pub bn_bias: Option<&'a [f64]>,
    pub weight: &'a [f64],
    pub bias: &'a [f64],
    pub eps: f64,
}

/// Gradients of [`BatchChannel`]: dx like x, the BN part's per channel, the affine's per group.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchChannelGrads {
    pub dx: Vec<f64>,
    pub dbn_weight: Vec<f64>,
    pub dbn_bias: Vec<f64>,
    pub dweight: Vec<f64>,
    pub dbias: Vec<f64>,
}

impl BatchChannel<'_> {
    /// The forward: the BN part with the batch statistics, or with `running` (the statistics
    /// the forward normalized with) as constants; running statistics are not updated.
    pub fn forward(&self, x: &[f64], running: Option<(&[f64], &[f64])>) -> Vec<f64> {
        let u = self.bn_part(x, running);
        let cg = self.c / self.groups;
        // The per-group affine is GroupNorm's with every channel of a group sharing its value.
        let per_channel = |v: &[f64]| (0..self.c).map(|ch| v[ch / cg]).collect::<Vec<_>>();
        let (w, b) = (per_channel(self.weight), per_channel(self.bias));
        chnorm::group_norm(
            &u,
            self.n,
            self.c,
            self.hw,
            self.groups,
            Some(&w),
            Some(&b),
            self.eps,
            false,
        )
    }

    fn bn_part(&self, x: &[f64], running: Option<(&[f64], &[f64])>) -> Vec<f64> {
        let zeros = vec![0.0; self.c];
        let ones = vec![1.0; self.c];
        let (rm, rv) = running.unwrap_or((&zeros, &ones));
        let (n, c, hw) = (self.n, self.c, self.hw);
        let (w, b) = (self.bn_weight, self.bn_bias);
        chnorm::batch_norm(
            x,
            n,
            c,
            hw,
            w,
            b,
            rm,
            rv,
            running.is_none(),
            0.1,
            true,
            self.eps,
        )
        .y
    }

    /// The gradients of `sum(y * dy)`; `running` as in [`BatchChannel::forward`].
    pub fn grad(
        &self,
        x: &[f64],
        dy: &[f64],
        running: Option<(&[f64], &[f64])>,
    ) -> BatchChannelGrads {
        let u = self.bn_part(x, running);
        // The channel part as an InstanceNorm of `(n, groups, cg * hw)`: one weight per group.
        let cg = self.c / self.groups;
        let (n, g) = (self.n, self.groups);
        let part = group_norm_grad(
            &u,
            n,
            g,
            cg * self.hw,
            g,
            self.weight,
            self.bias,
            dy,
            self.eps,
            false,
        );
        let bn = batch_norm_grad(
            x,
            n,
            self.c,
            self.hw,
            self.bn_weight,
            &part.dx,
            running,
            self.eps,
        );
        BatchChannelGrads {
            dx: bn.dx,
            dbn_weight: bn.dweight,
            dbn_bias: bn.dbias,
            dweight: part.dweight,
            dbias: part.dbias,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, dot, numeric, values};
    use super::*;

    /// Every gradient against central differences of the f64 forward, training and with
    /// running statistics; a small spread next to eps = 1e-2 makes eps matter in both parts.
    #[test]
    fn batch_channel_grad_matches_finite_differences() {
        let (n, c, hw, groups) = (3, 6, 4, 2);
        let x: Vec<f64> = values(71, n * c * hw)
            .iter()
            .map(|v| 0.1 * v + 1.5)
            .collect();
        let dy = values(72, x.len());
        let (bw, bb) = (values(73, c), values(74, c));
        let (w, b) = (values(75, groups), values(76, groups));
        let rm: Vec<f64> = values(77, c).iter().map(|v| 1.5 + 0.05 * v).collect();
        let rv: Vec<f64> = values(78, c)
            .iter()
            .map(|v| 0.01 + 0.005 * v.abs())
            .collect();
        // (n, c, hw, groups) fixed; the parameters vary.
        fn op<'a>(bw: &'a [f64], bb: &'a [f64], w: &'a [f64], b: &'a [f64]) -> BatchChannel<'a> {
            BatchChannel {
                n: 3,
                c: 6,
                hw: 4,
                groups: 2,
                bn_weight: Some(bw),
                bn_bias: Some(bb),
                weight: w,
                bias: b,
                eps: 1e-2,
            }
        }
        for running in [None, Some((rm.as_slice(), rv.as_slice()))] {
            let what = if running.is_some() {
                "running"
            } else {
                "batch"
            };
            let g = op(&bw, &bb, &w, &b).grad(&x, &dy, running);
            let loss = |x: &[f64], bw: &[f64], bb: &[f64], w: &[f64], b: &[f64]| {
                dot(&op(bw, bb, w, b).forward(x, running), &dy)
            };
            close(
                &format!("{what} dx"),
                &g.dx,
                &numeric(&x, |v| loss(v, &bw, &bb, &w, &b)),
            );
            close(
                &format!("{what} dbn_weight"),
                &g.dbn_weight,
                &numeric(&bw, |v| loss(&x, v, &bb, &w, &b)),
            );
            close(
                &format!("{what} dbn_bias"),
                &g.dbn_bias,
                &numeric(&bb, |v| loss(&x, &bw, v, &w, &b)),
            );
            close(
                &format!("{what} dweight"),
                &g.dweight,
                &numeric(&w, |v| loss(&x, &bw, &bb, v, &b)),
            );
            close(
                &format!("{what} dbias"),
                &g.dbias,
                &numeric(&b, |v| loss(&x, &bw, &bb, &w, v)),
            );
        }
    }
}
