//! BatchNorm's backward: training through the batch statistics (the forward's saved ones when
//! kept, recomputed otherwise), inference with the running statistics as constants; NCHW and
//! channels-last. On the batch-statistics backward engine ([`wgnorm_core::chgrad`]).

use wgnorm_core::chgrad::{ChannelGradArgs, GradStats, TermArgs};
use wgnorm_core::chnorm::ChannelView;
use wgnorm_core::{DType, Mode, Result, Tensor};

use crate::BatchNorm;

/// Inputs of the backward: the forward's `x` and `weight` (f32 `[C]`), the upstream gradient
/// `dy` (x's shape and dtype), the forward's saved `(mean, rstd)` pairs (f32 `[C, 2]`) when kept
/// (training), and the running statistics (f32 `[C]`; inference).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormGradInputs<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// The forward's weight; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
    /// Training: the forward's saved statistics (recomputed from x when `None`).
    pub saved: Option<&'a Tensor>,
    /// Inference: the running mean the forward normalized with.
    pub running_mean: Option<&'a Tensor>,
    /// Inference: the running variance the forward normalized with.
    pub running_var: Option<&'a Tensor>,
}

/// Outputs of the backward: `dx` like x; `dweight`, `dbias` f32 `[C]` when wanted.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of the weight, written when given.
    pub dweight: Option<&'a Tensor>,
    /// Gradient of the bias, written when given.
    pub dbias: Option<&'a Tensor>,
}

/// Tensors allocated by [`BatchNorm::backward`].
#[derive(Clone, Debug)]
pub struct BatchNormGrads {
    /// Gradient of x.
    pub dx: Tensor,
    /// Gradient of the weight (f32 `[C]`).
    pub dweight: Tensor,
    /// Gradient of the bias (f32 `[C]`).
    pub dbias: Tensor,
}

/// The backward engine's arguments of a call over `view`: the statistics' source from the mode
/// and whether saved statistics are given.
fn grad_args<'a>(
    view: ChannelView,
    mode: Mode,
    inputs: &BatchNormGradInputs<'a>,
    outputs: &BatchNormGradOutputs<'a>,
) -> ChannelGradArgs<'a> {
    let stats = match (mode.is_train(), inputs.saved.is_some()) {
        (false, _) => GradStats::Running,
        (true, true) => GradStats::Saved,
        (true, false) => GradStats::Batch,
    };
    ChannelGradArgs {
        x: inputs.x,
        dy: inputs.dy,
        view,
        stats,
        weight: inputs.weight,
        bias: None,
        saved: inputs.saved,
        running_mean: inputs.running_mean,
        running_var: inputs.running_var,
        dx: outputs.dx,
        dweight: outputs.dweight,
        dbias: outputs.dbias,
        term: None,
    }
}

impl BatchNorm {
    /// Records the backward of a `mode` forward into the caller's encoder: training goes through
    /// the batch statistics (`dx = rstd (g - mean(g) - xhat mean(g xhat))`, `g = dy w`),
    /// inference treats the running statistics as constants (`dx = g rstd`). Per-channel sums
    /// in a fixed order: bitwise reproducible. Checked first; nothing is recorded on error.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormGradInputs,
        outputs: &BatchNormGradOutputs,
        mode: Mode,
    ) -> Result<()> {
        self.encode_backward_with(encoder, inputs, outputs, mode, None)
    }

    /// [`BatchNorm::encode_backward`] with a method's gradient term (RepBN's
    /// [`crate::SCALED_RESIDUAL_GRAD`]).
    pub(crate) fn encode_backward_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormGradInputs,
        outputs: &BatchNormGradOutputs,
        mode: Mode,
        term: Option<TermArgs>,
    ) -> Result<()> {
        let view = ChannelView::batch_norm(inputs.x.shape(), self.cfg.layout)?;
        let a = ChannelGradArgs {
            term,
            ..grad_args(view, mode, inputs, outputs)
        };
        self.grad.encode(encoder, &a)
    }

    /// Every check of [`BatchNorm::encode_backward`], recording nothing (for ops that record
    /// several passes and must fail before the first).
    pub(crate) fn check_backward(
        &self,
        inputs: &BatchNormGradInputs,
        outputs: &BatchNormGradOutputs,
        mode: Mode,
    ) -> Result<()> {
        let view = ChannelView::batch_norm(inputs.x.shape(), self.cfg.layout)?;
        self.grad
            .check_args(&grad_args(view, mode, inputs, outputs))
    }

    /// The backward over a view of x other than BatchNorm's own (Ghost BatchNorm's chunks):
    /// training through each slot's statistics.
    pub(crate) fn encode_backward_in(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormGradInputs,
        outputs: &BatchNormGradOutputs,
        view: ChannelView,
    ) -> Result<()> {
        let a = grad_args(view, Mode::Train, inputs, outputs);
        self.grad.encode(encoder, &a)
    }

    /// Allocates dx, dweight and dbias, encodes the backward and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_batchnorm::{BatchNorm, BatchNormConfig, BatchNormGradInputs};
    /// use wgnorm_core::{Context, Mode};
    ///
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[1.0, 2.0, 4.0, 8.0], &[4, 1])?; // [N, C], C = 1
    /// let dy = ctx.upload_f32(&[1.0, 1.0, 1.0, 1.0], &[4, 1])?;
    /// let bn = BatchNorm::new(&ctx, BatchNormConfig::default())?;
    /// let g = bn.backward(
    ///     &BatchNormGradInputs {
    ///         x: &x,
    ///         weight: None,
    ///         dy: &dy,
    ///         saved: None, // the batch statistics are recomputed
    ///         running_mean: None,
    ///         running_var: None,
    ///     },
    ///     Mode::Train,
    /// )?;
    /// // Training BN subtracts the batch mean: a constant gradient does not reach x.
    /// assert!(ctx.download(&g.dx)?.iter().all(|d| d.abs() < 1e-5));
    /// assert_eq!(ctx.download(&g.dbias)?, vec![4.0]);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn backward(&self, inputs: &BatchNormGradInputs, mode: Mode) -> Result<BatchNormGrads> {
        self.backward_with(inputs, mode, None)
    }

    /// [`BatchNorm::backward`] with a method's gradient term.
    pub(crate) fn backward_with(
        &self,
        inputs: &BatchNormGradInputs,
        mode: Mode,
        term: Option<TermArgs>,
    ) -> Result<BatchNormGrads> {
        let view = ChannelView::batch_norm(inputs.x.shape(), self.cfg.layout)?;
        let ctx = self.engine.context();
        let c = view.channels();
        let dx = ctx.empty(inputs.x.shape(), self.cfg.dtype)?;
        let dweight = ctx.empty(&[c], DType::F32)?;
        let dbias = ctx.empty(&[c], DType::F32)?;
        let outputs = BatchNormGradOutputs {
            dx: &dx,
            dweight: Some(&dweight),
            dbias: Some(&dbias),
        };
        ctx.record_and_submit(|enc| self.encode_backward_with(enc, inputs, &outputs, mode, term))?;
        Ok(BatchNormGrads { dx, dweight, dbias })
    }
}
