//! The progressive LayerNorm -> RepBN replacement's backward (docs/methods.md A16): the blend
//! `y = lambda LN(x) + (1 - lambda) RepBN(x)` is linear in its two parts, so the backward runs
//! LayerNorm's on `lambda dy` and RepBN's on `(1 - lambda) dy` (their parameter gradients come
//! out scaled) and sums the two dx: two scalings, the two backward passes and a sum, each
//! deterministic.

use wgnorm_core::rowgrad::RowGradArgs;
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::{DType, Error, Mode, Result, Tensor};

use crate::{
    BatchNormGradInputs, BatchNormGradOutputs, ProgressiveRepNorm, ProgressiveRepNormInputs,
};

/// Outputs of [`ProgressiveRepNorm::encode_backward`]: `dx` like x; the gradients of the
/// LayerNorm affine (the I/O dtype, `[C]`), of RepBN's BatchNorm affine (f32 `[C]`) and of
/// `alpha` (f32 `[1]`) when wanted.
#[derive(Clone, Copy, Debug)]
pub struct ProgressiveRepNormGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of `ln_weight`.
    pub dln_weight: Option<&'a Tensor>,
    /// Gradient of `ln_bias`.
    pub dln_bias: Option<&'a Tensor>,
    /// Gradient of `bn_weight`.
    pub dbn_weight: Option<&'a Tensor>,
    /// Gradient of `bn_bias`.
    pub dbn_bias: Option<&'a Tensor>,
    /// Gradient of `alpha`.
    pub dalpha: Option<&'a Tensor>,
}

impl ProgressiveRepNorm {
    /// Records the gradients of `sum(y * dy)` for the forward call that returned `lambda` (its
    /// LayerNorm weight: 1 in warm-up, 0 at inference, `iter / total_step` while blending):
    /// training differentiates LayerNorm and RepBN through their statistics (RepBN's running
    /// statistics are not written), inference (`lambda` must be 0; no LayerNorm gradients) RepBN
    /// with its running statistics as constants. Every pass is checked before the first is recorded.
    pub fn encode_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        a: &ProgressiveRepNormInputs,
        dy: &Tensor,
        lambda: f32,
        o: &ProgressiveRepNormGradOutputs,
        mode: Mode,
    ) -> Result<()> {
        if !(0.0..=1.0).contains(&lambda) || (!mode.is_train() && lambda != 0.0) {
            return Err(Error::InvalidParameter {
                name: "lambda",
                value: lambda.to_string(),
                why: "pass the LayerNorm weight the forward call returned (in [0, 1]; 0 at inference)",
            });
        }
        if !mode.is_train() && (o.dln_weight.is_some() || o.dln_bias.is_some()) {
            return Err(Error::InvalidParameter {
                name: "dln_weight",
                value: "an output at inference".into(),
                why: "LayerNorm takes no part in the inference form (y = RepBN(x)): pass None",
            });
        }
        if mode.is_train() && a.x.shape().len() != 3 {
            return Err(Error::ShapeMismatch {
                what: "x [B, T, C]".into(),
                expected: vec![0, 0, 0],
                got: a.x.shape().to_vec(),
            });
        }
        for (what, t) in [("alpha", Some(a.alpha)), ("dalpha", o.dalpha)] {
            if let Some(t) = t {
                t.expect_dtype(what, DType::F32)?;
                t.expect_shape(what, &[1])?;
            }
        }
        let shape = a.x.shape();
        for (what, t) in [("dy", dy), ("dx", o.dx)] {
            t.expect_dtype(what, self.dtype)?;
            t.expect_shape(what, shape)?;
        }
        wgnorm_core::binding::check_output_distinct(("dx", o.dx), &[("x", a.x), ("dy", dy)])?;
        let term = || Some(crate::variants::rep_term(a.alpha, o.dalpha));
        let bn_outputs = |dx| BatchNormGradOutputs {
            dx,
            dweight: o.dbn_weight,
            dbias: o.dbn_bias,
        };
        let bn_inputs = |dy| BatchNormGradInputs {
            x: a.x,
            weight: a.bn_weight,
            dy,
            saved: None,
            running_mean: Some(a.running_mean),
            running_var: Some(a.running_var),
        };
        if !mode.is_train() {
            // y = RepBN(x): its backward alone.
            let (i, out) = (bn_inputs(dy), bn_outputs(o.dx));
            return self.bn.encode_backward_with(enc, &i, &out, mode, term());
        }
        let ctx = &self.ctx;
        let scratch = |c: &ScratchCache| c.get(ctx, shape, shape, self.dtype);
        // (the forward's part outputs serve as the two dx: the forward has read them by then)
        let (dy_ln, dy_bn) = (scratch(&self.dy_ln)?, scratch(&self.dy_bn)?);
        let (dx_ln, dx_bn) = (scratch(&self.ln_out)?, scratch(&self.bn_out)?);
        let ln_args = RowGradArgs {
            x: a.x,
            residual: None,
            weight: a.ln_weight,
            bias: a.ln_bias,
            dy: &dy_ln,
            dsum: None,
            mean: None,
            rstd: None,
            dx: &dx_ln,
            dweight: o.dln_weight,
            dbias: o.dln_bias,
        };
        let (bn_in, bn_out) = (bn_inputs(&dy_bn), bn_outputs(&dx_bn));
        self.ln_grad.check_args(&ln_args)?;
        self.bn.check_backward(&bn_in, &bn_out, mode)?;
        let blend = &self.blend;
        blend.encode_weighted(enc, (dy, dy), (lambda, 0.0), &dy_ln)?;
        blend.encode_weighted(enc, (dy, dy), (1.0 - lambda, 0.0), &dy_bn)?;
        self.ln_grad.encode(enc, &ln_args)?;
        self.bn
            .encode_backward_with(enc, &bn_in, &bn_out, mode, term())?;
        blend.encode_weighted(enc, (&dx_ln, &dx_bn), (1.0, 1.0), o.dx)
    }
}
