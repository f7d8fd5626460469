//! GroupNorm's and InstanceNorm's backward: the gradients of `sum(y * dy)` through the
//! per-(sample, group) statistics (the SiLU after the affine differentiated when the layer has
//! it), on the batch-statistics backward engine ([`wgnorm_core::chgrad`]).

use wgnorm_core::chgrad::{ChannelGradArgs, GradStats};
use wgnorm_core::chnorm::ChannelView;
use wgnorm_core::{DType, Result, Tensor};

use crate::{GroupNorm, InstanceNorm, LpNorm, MeanVarianceNorm};

/// Inputs of the backward: the forward's `x`, `weight` and `bias` (f32 `[C]`; the bias matters
/// only with the SiLU), the upstream gradient `dy` (x's shape and dtype) and, when the caller
/// kept them, the forward's saved `(mean, rstd)` pairs (f32 `[N * groups, 2]`; recomputed from x
/// otherwise).
#[derive(Clone, Copy, Debug)]
pub struct NormGradInputs<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// The forward's weight; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// The forward's bias; `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
    /// The forward's saved statistics.
    pub saved: Option<&'a Tensor>,
}

/// Outputs of the backward: `dx` like x; `dweight`, `dbias` f32 `[C]` when wanted.
#[derive(Clone, Copy, Debug)]
pub struct NormGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of the weight, written when given.
    pub dweight: Option<&'a Tensor>,
    /// Gradient of the bias, written when given.
    pub dbias: Option<&'a Tensor>,
}

/// Tensors allocated by the `backward` convenience calls.
#[derive(Clone, Debug)]
pub struct NormGrads {
    /// Gradient of x.
    pub dx: Tensor,
    /// Gradient of the weight (f32 `[C]`).
    pub dweight: Tensor,
    /// Gradient of the bias (f32 `[C]`).
    pub dbias: Tensor,
}

fn args<'a>(
    view: ChannelView,
    inputs: &NormGradInputs<'a>,
    outputs: &NormGradOutputs<'a>,
) -> ChannelGradArgs<'a> {
    ChannelGradArgs {
        x: inputs.x,
        dy: inputs.dy,
        view,
        stats: if inputs.saved.is_some() {
            GradStats::Saved
        } else {
            GradStats::Batch
        },
        weight: inputs.weight,
        bias: inputs.bias,
        saved: inputs.saved,
        running_mean: None,
        running_var: None,
        dx: outputs.dx,
        dweight: outputs.dweight,
        dbias: outputs.dbias,
        term: None,
    }
}

/// Allocates dx, dweight and dbias for `x` with `c` channels and submits `encode`.
fn backward(
    ctx: &wgnorm_core::Context,
    dtype: DType,
    x: &Tensor,
    c: usize,
    encode: impl FnOnce(&mut wgpu::CommandEncoder, &NormGradOutputs) -> Result<()>,
) -> Result<NormGrads> {
    let dx = ctx.empty(x.shape(), dtype)?;
    let dweight = ctx.empty(&[c], DType::F32)?;
    let dbias = ctx.empty(&[c], DType::F32)?;
    let outputs = NormGradOutputs {
        dx: &dx,
        dweight: Some(&dweight),
        dbias: Some(&dbias),
    };
    ctx.record_and_submit(|enc| encode(enc, &outputs))?;
    Ok(NormGrads { dx, dweight, dbias })
}

impl GroupNorm {
    /// Records the backward into the caller's encoder: per (sample, channel) tree sums, per-slot
    /// coefficients and per-channel dweight/dbias in a fixed order (bitwise reproducible), then
    /// dx elementwise. Checked first; nothing is recorded on error.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NormGradInputs,
        outputs: &NormGradOutputs,
    ) -> Result<()> {
        let view = ChannelView::group_norm(inputs.x.shape(), self.cfg.layout, self.cfg.num_groups)?;
        self.grad.encode(encoder, &args(view, inputs, outputs))
    }

    /// Allocates dx, dweight and dbias, encodes the backward and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_groupnorm::{GroupNorm, GroupNormConfig, NormGradInputs};
    ///
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[1.0, 2.0, 3.0, 5.0], &[1, 2, 2])?; // [N, C, L]
    /// let w = ctx.upload_f32(&[2.0, 2.0], &[2])?;
    /// let dy = ctx.upload_f32(&[1.0, 0.0, 0.0, 0.0], &[1, 2, 2])?;
    /// let gn = GroupNorm::new(&ctx, GroupNormConfig::new(1))?;
    /// let g = gn.backward(&NormGradInputs {
    ///     x: &x,
    ///     weight: Some(&w),
    ///     bias: None,
    ///     dy: &dy,
    ///     saved: None, // statistics recomputed
    /// })?;
    /// // The normalization's gradient sums to zero over each group.
    /// let dx = ctx.download(&g.dx)?;
    /// assert!(dx.iter().sum::<f32>().abs() < 1e-5 && dx[0] > 0.0);
    /// assert_eq!(ctx.download(&g.dbias)?, vec![1.0, 0.0]);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn backward(&self, inputs: &NormGradInputs) -> Result<NormGrads> {
        let view = ChannelView::group_norm(inputs.x.shape(), self.cfg.layout, self.cfg.num_groups)?;
        backward(
            self.engine.context(),
            self.cfg.dtype,
            inputs.x,
            view.channels(),
            |enc, o| self.encode_backward(enc, inputs, o),
        )
    }
}

impl InstanceNorm {
    /// Records the backward (statistics per (sample, channel)); see [`GroupNorm::encode_backward`].
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NormGradInputs,
        outputs: &NormGradOutputs,
    ) -> Result<()> {
        let view = ChannelView::instance_norm(inputs.x.shape(), self.cfg.layout)?;
        self.grad.encode(encoder, &args(view, inputs, outputs))
    }

    /// The backward of [`InstanceNorm::encode_tracked`] (`track_running_stats`): training is
    /// [`InstanceNorm::encode_backward`]'s (through each instance's statistics); inference
    /// takes the running statistics (f32 `[C]`) as constants, as BatchNorm's inference backward
    /// does: `dx = dy * weight * rstd_running`, `dweight = sum dy * xhat`, `dbias = sum dy`.
    pub fn encode_tracked_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NormGradInputs,
        (running_mean, running_var): (&Tensor, &Tensor),
        outputs: &NormGradOutputs,
        mode: wgnorm_core::Mode,
    ) -> Result<()> {
        if mode.is_train() {
            return self.encode_backward(encoder, inputs, outputs);
        }
        // Running statistics are per channel: the BatchNorm view of x has one slot per channel.
        let view = ChannelView::batch_norm(inputs.x.shape(), self.cfg.layout)?;
        let a = ChannelGradArgs {
            stats: GradStats::Running,
            saved: None,
            running_mean: Some(running_mean),
            running_var: Some(running_var),
            ..args(view, inputs, outputs)
        };
        self.grad.encode(encoder, &a)
    }

    /// Allocates dx, dweight and dbias, encodes the backward and submits (does not wait).
    pub fn backward(&self, inputs: &NormGradInputs) -> Result<NormGrads> {
        let view = ChannelView::instance_norm(inputs.x.shape(), self.cfg.layout)?;
        backward(
            self.engine.context(),
            self.cfg.dtype,
            inputs.x,
            view.channels(),
            |enc, o| self.encode_backward(enc, inputs, o),
        )
    }
}

/// The gradient of x of an op without parameters over `view`: batch statistics recomputed.
fn encode_plain(
    grad: &wgnorm_core::chgrad::ChannelGrad,
    encoder: &mut wgpu::CommandEncoder,
    view: ChannelView,
    (x, dy, dx): (&Tensor, &Tensor, &Tensor),
) -> Result<()> {
    let inputs = NormGradInputs {
        x,
        weight: None,
        bias: None,
        dy,
        saved: None,
    };
    let outputs = NormGradOutputs {
        dx,
        dweight: None,
        dbias: None,
    };
    grad.encode(encoder, &args(view, &inputs, &outputs))
}

impl MeanVarianceNorm {
    /// Records the backward: `dx = (g - mean(g)) / (std + eps) - u sum(g u) / (M (std + eps)^2
    /// std)` over each slot (u = x - mean, g = dy), through the slot's statistics, recomputed;
    /// the same fixed-order sums as the batch-statistics backward. dx has x's shape and dtype.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        let view = ChannelView::over_axes(x.shape(), &self.axes)?;
        encode_plain(&self.grad, encoder, view, (x, dy, dx))
    }

    /// Allocates dx, encodes the backward and submits (does not wait).
    pub fn backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dx = self.engine.context().empty(x.shape(), self.dtype)?;
        self.engine
            .context()
            .record_and_submit(|enc| self.encode_backward(enc, x, dy, &dx))?;
        Ok(dx)
    }
}

impl LpNorm {
    /// Records the backward: with `n` the slot's norm and `xhat = x / n`,
    /// `dx = (dy - xhat sum(dy xhat)) / n` (p = 2) or `(dy - sign(x) sum(dy xhat)) / n` (p = 1);
    /// 0 where the norm is 0 (the forward's y is 0 there). dx has x's shape and dtype.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        let view = ChannelView::along_axis(x.shape(), self.axis)?;
        encode_plain(&self.grad, encoder, view, (x, dy, dx))
    }

    /// Allocates dx, encodes the backward and submits (does not wait).
    pub fn backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dx = self.engine.context().empty(x.shape(), self.dtype)?;
        self.engine
            .context()
            .record_and_submit(|enc| self.encode_backward(enc, x, dy, &dx))?;
        Ok(dx)
    }
}
