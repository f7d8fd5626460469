//! SLAB's progressive LayerNorm -> RepBN replacement (Guo et al. 2024; docs/methods.md A16, official
//! `prepbn.py`).

use std::sync::Mutex;
use wgnorm_core::Mode;

use wgnorm_core::elementwise::Blend;
use wgnorm_core::rowgrad::{RowGrad, RowGradConfig};
use wgnorm_core::rownorm::{RowMode, RowNorm, RowNormArgs, RowNormConfig};
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::{Context, DType, Error, Result, Tensor};

use crate::{BatchNorm, BatchNormConfig, BatchNormInputs, BatchNormOutputs, Layout};

/// `y = lambda * LN(x) + (1 - lambda) * RepBN(x)` on tokens `x[B, T, C]`, with the official
/// schedule: while `warm > 0` a training call decrements it and outputs `LN(x)` only (RepBN is
/// not run, so its running statistics stay put); afterwards `lambda = r0 * iter / total_step`
/// (computed before `iter` is decremented, down to 0). Inference is RepBN with its running
/// statistics. LN over C with its own affine (`ln_weight`/`ln_bias`, the I/O dtype); RepBN as
/// [`crate::RepBatchNorm`] (f32 parameters, `alpha` `[1]`).
///
/// The counters live on the host, in this object: they depend only on the number of training
/// calls, so keeping them here needs no GPU state and no readback, and lets the warm-up calls
/// skip the RepBN pass entirely (a GPU-side counter could not skip a dispatch without a
/// readback). [`ProgressiveRepNorm::counters`] / [`ProgressiveRepNorm::set_counters`] save and
/// restore them with a checkpoint.
pub struct ProgressiveRepNorm {
    pub(crate) ctx: Context,
    pub(crate) dtype: DType,
    ln: RowNorm,
    pub(crate) bn: BatchNorm,
    pub(crate) blend: Blend,
    total_step: u64,
    r0: f32,
    counters: Mutex<(u64, u64)>,
    pub(crate) ln_out: ScratchCache,
    pub(crate) bn_out: ScratchCache,
    /// The backward (`progressive_grad.rs`): LayerNorm's, and the two scaled upstream gradients.
    pub(crate) ln_grad: RowGrad,
    pub(crate) dy_ln: ScratchCache,
    pub(crate) dy_bn: ScratchCache,
}

/// Tensors of a progressive-norm call.
#[derive(Clone, Copy, Debug)]
pub struct ProgressiveRepNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// LayerNorm's scale `[C]`; `None`: 1.
    pub ln_weight: Option<&'a Tensor>,
    /// LayerNorm's shift `[C]`; `None`: 0.
    pub ln_bias: Option<&'a Tensor>,
    /// RepBN's BatchNorm scale `[C]`; `None`: 1.
    pub bn_weight: Option<&'a Tensor>,
    /// RepBN's BatchNorm shift `[C]`; `None`: 0.
    pub bn_bias: Option<&'a Tensor>,
    /// Running mean (f32, one per channel): read at inference, updated in training.
    pub running_mean: &'a Tensor,
    /// Running variance (f32, one per channel): read at inference, updated in training.
    pub running_var: &'a Tensor,
    /// RepBN's learnable scalar alpha, f32 `[1]`.
    pub alpha: &'a Tensor,
}

/// What [`ProgressiveRepNorm::new`] takes; `Default` gives the paper's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProgressiveRepNormConfig {
    /// Warm-up calls that output LayerNorm alone.
    pub warm: u64,
    /// Calls over which the blend moves from LayerNorm to RepBN.
    pub total_step: u64,
    /// Added to the variances inside the square root.
    pub eps: f32,
    /// RepBN running-statistics momentum (PyTorch convention).
    pub momentum: f32,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for ProgressiveRepNormConfig {
    fn default() -> Self {
        ProgressiveRepNormConfig {
            warm: 0,
            total_step: 60000,
            eps: 1e-5,
            momentum: 0.1,
            dtype: DType::F32,
        }
    }
}

impl ProgressiveRepNorm {
    /// `warm` warm-up calls (official default 0), then `total_step` blending calls (e.g.
    /// 60000) with `r0` = 1; `eps` for both norms, `momentum` for RepBN's running statistics.
    pub fn new(ctx: &Context, cfg: ProgressiveRepNormConfig) -> Result<ProgressiveRepNorm> {
        let ProgressiveRepNormConfig {
            warm,
            total_step,
            eps,
            momentum,
            dtype,
        } = cfg;
        if total_step == 0 {
            return Err(Error::InvalidParameter {
                name: "total_step",
                value: "0".into(),
                why: "the blend needs at least one step",
            });
        }
        let ln = RowNorm::new(
            ctx,
            RowNormConfig {
                eps,
                ..RowNormConfig::last_axis(RowMode::LayerNorm, dtype)
            },
        )?;
        let ln_grad = RowGrad::new(
            ctx,
            RowGradConfig {
                mode: RowMode::LayerNorm,
                axis: -1,
                eps,
                weight_offset: 0.0,
                dtype,
                unbiased: false,
                eps_outside: false,
            },
        )?;
        let bn = BatchNorm::new(
            ctx,
            BatchNormConfig {
                eps,
                momentum: Some(momentum),
                layout: Layout::Nhwc,
                dtype,
                ..Default::default()
            },
        )?;
        Ok(ProgressiveRepNorm {
            ctx: ctx.clone(),
            dtype,
            ln,
            bn,
            blend: Blend::new(ctx, dtype)?,
            total_step,
            r0: 1.0,
            counters: Mutex::new((warm, total_step)),
            ln_out: ScratchCache::default(),
            bn_out: ScratchCache::default(),
            ln_grad,
            dy_ln: ScratchCache::default(),
            dy_bn: ScratchCache::default(),
        })
    }

    /// `(warm, iter)` as they are now.
    pub fn counters(&self) -> (u64, u64) {
        *wgnorm_core::locked(&self.counters)
    }

    /// Sets `(warm, iter)`, e.g. when resuming training from a checkpoint.
    pub fn set_counters(&self, warm: u64, iter: u64) {
        *wgnorm_core::locked(&self.counters) = (warm, iter);
    }

    /// Records one call; returns the LN weight lambda this call used (1 in warm-up, 0 at
    /// inference). Training calls advance the counters once the passes are recorded.
    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        a: &ProgressiveRepNormInputs,
        y: &Tensor,
        mode: Mode,
    ) -> Result<f32> {
        let training = mode.is_train();
        let bn_inputs = BatchNormInputs {
            x: a.x,
            weight: a.bn_weight,
            bias: a.bn_bias,
            running_mean: Some(a.running_mean),
            running_var: Some(a.running_var),
        };
        if !training {
            let out = BatchNormOutputs { y, saved: None };
            self.bn
                .encode_rep(enc, &bn_inputs, a.alpha, &out, Mode::Infer)?;
            return Ok(0.0);
        }
        if a.x.shape().len() != 3 {
            return Err(Error::ShapeMismatch {
                what: "x [B, T, C]".into(),
                expected: vec![0, 0, 0],
                got: a.x.shape().to_vec(),
            });
        }
        let mut counters = wgnorm_core::locked(&self.counters);
        let (warm, iter) = *counters;
        fn ln_args<'t>(a: &ProgressiveRepNormInputs<'t>, out: &'t Tensor) -> RowNormArgs<'t> {
            RowNormArgs {
                x: a.x,
                weight: a.ln_weight,
                bias: a.ln_bias,
                y: out,
                mean: None,
                rstd: None,
                residual: None,
                sum: None,
            }
        }
        if warm > 0 {
            self.ln.encode(enc, &ln_args(a, y))?;
            *counters = (warm - 1, iter);
            return Ok(1.0);
        }
        let lambda = (self.r0 as f64 * iter as f64 / self.total_step as f64) as f32;
        let shape = a.x.shape();
        let s1 = self.ln_out.get(&self.ctx, shape, shape, self.dtype)?;
        let s2 = self.bn_out.get(&self.ctx, shape, shape, self.dtype)?;
        let out = BatchNormOutputs {
            y: &s2,
            saved: None,
        };
        // Three passes: every input is checked before the first is recorded.
        self.ln.check_args(&ln_args(a, &s1))?;
        self.bn
            .check_forward(&bn_inputs, Some(a.alpha), &out, Mode::Train)?;
        y.expect_dtype("y", self.dtype)?;
        y.expect_shape("y", shape)?;
        wgnorm_core::binding::storage_range(&self.ctx, "y", y)?;
        self.ln.encode(enc, &ln_args(a, &s1))?;
        self.bn
            .encode_rep(enc, &bn_inputs, a.alpha, &out, Mode::Train)?;
        self.blend.encode(enc, &s1, &s2, lambda, y)?;
        *counters = (0, iter.saturating_sub(1));
        Ok(lambda)
    }
}
