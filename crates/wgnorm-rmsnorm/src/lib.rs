//! RMSNorm (Zhang & Sennrich 2019) as one GPU dispatch.
//!
//! `y = x / sqrt(mean(x^2) + eps) * (weight_offset + weight)`, the mean of squares over every dim
//! from `axis` to the last; no centring and no bias. `weight_offset = 1.0` gives Gemma's
//! convention (the checkpoint stores `weight - 1`). Storage f32 or f16, arithmetic f32.
//! Optionally writes `rstd = 1/sqrt(mean(x^2) + eps)` per row (f32).

#![deny(missing_docs)]

use wgnorm_core::rowgrad::{RowGrad, RowGradArgs, RowGradConfig};
pub mod qk_rope;

pub use qk_rope::{
    QkNormRope, QkNormRopeConfig, QkNormRopeGradInputs, QkNormRopeGradOutputs, QkNormRopeInputs,
    RopeAngles, RopeLayout,
};
pub use wgnorm_core::rownorm::RowKernel;
use wgnorm_core::rownorm::{RowMode, RowNorm, RowNormArgs, RowNormConfig};
use wgnorm_core::{Context, DType, Result, Tensor};

/// What is fixed when the layer is created.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsNormConfig {
    /// First normalized dim; negative counts from the end. Default -1.
    pub axis: isize,
    /// Default 1e-5. PyTorch's default is the dtype's machine epsilon, LLaMA uses 1e-6: always
    /// set it to what the checkpoint was trained with.
    pub eps: f32,
    /// Added to the weight before it multiplies: 0.0 (default), 1.0 for Gemma.
    pub weight_offset: f32,
    /// Storage type of x and y (arithmetic is f32).
    pub dtype: DType,
}

impl Default for RmsNormConfig {
    fn default() -> Self {
        RmsNormConfig {
            axis: -1,
            eps: 1e-5,
            weight_offset: 0.0,
            dtype: DType::F32,
        }
    }
}

/// Inputs: `x` and an optional `weight` of shape `x.shape[axis..]`.
#[derive(Clone, Copy, Debug)]
pub struct RmsNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
}

/// Outputs: `y` shaped like `x`; optional f32 `rstd`, one element per row.
#[derive(Clone, Copy, Debug)]
pub struct RmsNormOutputs<'a> {
    /// Output: the shape and dtype of `x`.
    pub y: &'a Tensor,
    /// Saved statistics: `1/sqrt(var + eps)` of each normalized row or slot (f32), written when given.
    pub rstd: Option<&'a Tensor>,
}

/// Tensors allocated by [`RmsNorm::forward`].
#[derive(Clone, Debug)]
pub struct RmsNormOutput {
    /// Output: the shape and dtype of `x`.
    pub y: Tensor,
    /// Saved statistics: `1/sqrt(var + eps)` of each normalized row or slot (f32).
    pub rstd: Tensor,
}

/// Inputs of the fused residual add: the row normalized is `x + residual` (same shape as x).
#[derive(Clone, Copy, Debug)]
pub struct AddRmsNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Added to `x` before normalizing (the residual stream), same shape and dtype.
    pub residual: &'a Tensor,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
}

/// Outputs of the fused residual add: `y = rms_norm(x + residual)`, optionally the sum.
#[derive(Clone, Copy, Debug)]
pub struct AddRmsNormOutputs<'a> {
    /// Output: the shape and dtype of `x`.
    pub y: &'a Tensor,
    /// Receives `x + residual` (the next block's residual stream), same shape and dtype, written when given.
    pub sum: Option<&'a Tensor>,
    /// Saved statistics: `1/sqrt(var + eps)` of each normalized row or slot (f32), written when given.
    pub rstd: Option<&'a Tensor>,
}

/// Inputs of the backward: the forward's `x` and `weight`, the upstream gradient `dy` (x's shape
/// and dtype), the residual and `dsum` (the upstream gradient of the sum output) for the fused
/// add, and the forward's saved `rstd` (f32, one per row) when the caller kept it.
#[derive(Clone, Copy, Debug)]
pub struct RmsNormGradInputs<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// The fused add's residual (`None`: plain RMSNorm).
    pub residual: Option<&'a Tensor>,
    /// The forward's weight; `None`: 1 (plus the offset).
    pub weight: Option<&'a Tensor>,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
    /// Upstream gradient of the fused add's sum output, added to dx.
    pub dsum: Option<&'a Tensor>,
    /// The forward's saved row rstd.
    pub rstd: Option<&'a Tensor>,
}

/// Outputs of the backward: `dx` (x's shape and dtype; for the fused add also the residual's
/// gradient) and `dweight` (the weight's shape and dtype) when wanted.
#[derive(Clone, Copy, Debug)]
pub struct RmsNormGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of the weight, written when given.
    pub dweight: Option<&'a Tensor>,
}

/// An RMSNorm bound to a device; pipelines and bind groups are cached.
pub struct RmsNorm {
    engine: RowNorm,
    grad: RowGrad,
}

impl RmsNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: RmsNormConfig) -> Result<RmsNorm> {
        let engine = RowNorm::new(
            ctx,
            RowNormConfig {
                mode: RowMode::RmsNorm,
                axis: cfg.axis,
                eps: cfg.eps,
                weight_offset: cfg.weight_offset,
                dtype: cfg.dtype,
            },
        )?;
        let grad = RowGrad::new(
            ctx,
            RowGradConfig {
                mode: RowMode::RmsNorm,
                axis: cfg.axis,
                eps: cfg.eps,
                weight_offset: cfg.weight_offset,
                dtype: cfg.dtype,
                unbiased: false,
                eps_outside: false,
            },
        )?;
        Ok(RmsNorm { engine, grad })
    }

    /// Applies an activation after the affine in the same kernel (e.g. `Activation::GeluErf`);
    /// the backward differentiates through it.
    pub fn with_activation(self, activation: wgnorm_core::Activation) -> RmsNorm {
        RmsNorm {
            engine: self.engine.with_activation(activation),
            grad: self.grad.with_activation(activation),
        }
    }

    /// Lets calls of few rows (decode steps) take kernels chosen for their row count: faster on
    /// GPUs, but a row's bits then depend on its call's row count (see
    /// [`RowNorm::with_few_row_kernels`]). Off by default: results are batch-invariant.
    pub fn with_few_row_kernels(self, on: bool) -> RmsNorm {
        RmsNorm {
            engine: self.engine.with_few_row_kernels(on),
            ..self
        }
    }

    /// Forces one kernel shape instead of the per-adapter choice (tests, benchmarks).
    pub fn with_kernel(self, kernel: RowKernel) -> RmsNorm {
        RmsNorm {
            engine: self.engine.with_kernel(kernel),
            ..self
        }
    }

    /// The row engine under this op (for tools that inspect its kernel choice).
    pub fn engine(&self) -> &RowNorm {
        &self.engine
    }

    /// Records the op into the caller's encoder (see `LayerNorm::encode`).
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &RmsNormInputs,
        outputs: &RmsNormOutputs,
    ) -> Result<()> {
        self.engine.encode(
            encoder,
            &RowNormArgs {
                x: inputs.x,
                weight: inputs.weight,
                bias: None,
                y: outputs.y,
                mean: None,
                rstd: outputs.rstd,
                residual: None,
                sum: None,
            },
        )
    }

    /// Fused residual add + RMSNorm in one kernel (see `LayerNorm::encode_add`).
    pub fn encode_add(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &AddRmsNormInputs,
        outputs: &AddRmsNormOutputs,
    ) -> Result<()> {
        self.engine.encode(
            encoder,
            &RowNormArgs {
                x: inputs.x,
                weight: inputs.weight,
                bias: None,
                y: outputs.y,
                mean: None,
                rstd: outputs.rstd,
                residual: Some(inputs.residual),
                sum: outputs.sum,
            },
        )
    }

    /// Allocates `y` and the sum, encodes the fused add + RMSNorm and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_rmsnorm::{AddRmsNormInputs, RmsNorm, RmsNormConfig};
    ///
    /// // A LLaMA-style decoder carries the residual stream: h = h + block_out; y = RMSNorm(h) * w.
    /// let ctx = Context::new()?;
    /// let h = ctx.upload_f32(&[1.0, -1.0, 1.0, -1.0], &[1, 4])?;
    /// let out = ctx.upload_f32(&[1.0, 1.0, 1.0, 1.0], &[1, 4])?;
    /// let rms = RmsNorm::new(&ctx, RmsNormConfig { eps: 0.0, ..Default::default() })?;
    /// let (y, h_next) = rms.forward_add(&AddRmsNormInputs { x: &h, residual: &out, weight: None })?;
    /// assert_eq!(ctx.download(&h_next)?, vec![2.0, 0.0, 2.0, 0.0]);
    /// // rms([2, 0, 2, 0]) = sqrt(2)
    /// let y = ctx.download(&y)?;
    /// assert!((y[0] - std::f32::consts::SQRT_2).abs() < 1e-6 && y[1] == 0.0);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward_add(&self, inputs: &AddRmsNormInputs) -> Result<(Tensor, Tensor)> {
        let ctx = self.engine.context();
        let dtype = self.engine.config().dtype;
        let y = ctx.empty(inputs.x.shape(), dtype)?;
        let sum = ctx.empty(inputs.x.shape(), dtype)?;
        let outputs = AddRmsNormOutputs {
            y: &y,
            sum: Some(&sum),
            rstd: None,
        };
        ctx.record_and_submit(|enc| self.encode_add(enc, inputs, &outputs))?;
        Ok((y, sum))
    }

    /// Allocates the outputs, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_rmsnorm::{RmsNorm, RmsNormConfig, RmsNormInputs};
    ///
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[3.0, 4.0, 0.0, 0.0], &[1, 4])?;
    /// let w = ctx.upload_f32(&[1.0, 2.0, 1.0, 1.0], &[4])?;
    /// let rms = RmsNorm::new(&ctx, RmsNormConfig { eps: 0.0, ..Default::default() })?;
    /// let out = rms.forward(&RmsNormInputs { x: &x, weight: Some(&w) })?;
    /// // The root mean square of [3, 4, 0, 0] is 2.5.
    /// let y = ctx.download(&out.y)?;
    /// assert!((y[0] - 1.2).abs() < 1e-6 && (y[1] - 3.2).abs() < 1e-6 && y[2] == 0.0);
    /// assert!((ctx.download(&out.rstd)?[0] - 0.4).abs() < 1e-7);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, inputs: &RmsNormInputs) -> Result<RmsNormOutput> {
        let (rows, _) = self.engine.split(inputs.x.shape())?;
        let ctx = self.engine.context();
        let y = ctx.empty(inputs.x.shape(), self.engine.config().dtype)?;
        let rstd = ctx.empty(&[rows], DType::F32)?;
        ctx.record_and_submit(|enc| {
            self.encode(
                enc,
                inputs,
                &RmsNormOutputs {
                    y: &y,
                    rstd: Some(&rstd),
                },
            )
        })?;
        Ok(RmsNormOutput { y, rstd })
    }

    /// Records the backward into the caller's encoder: `dx` (one workgroup per row) and, when
    /// wanted, `dweight` (per-block partials reduced in a fixed order: bitwise reproducible). The
    /// weight offset is differentiated through (`d/dw (w + offset) = 1`). Checked first; nothing
    /// is recorded on error.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &RmsNormGradInputs,
        outputs: &RmsNormGradOutputs,
    ) -> Result<()> {
        self.grad.encode(
            encoder,
            &RowGradArgs {
                x: inputs.x,
                residual: inputs.residual,
                weight: inputs.weight,
                bias: None,
                dy: inputs.dy,
                dsum: inputs.dsum,
                mean: None,
                rstd: inputs.rstd,
                dx: outputs.dx,
                dweight: outputs.dweight,
                dbias: None,
            },
        )
    }

    /// Allocates dx and dweight, encodes the backward and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_rmsnorm::{RmsNorm, RmsNormConfig, RmsNormGradInputs};
    ///
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[3.0, 4.0], &[1, 2])?;
    /// let dy = ctx.upload_f32(&[4.0, -3.0], &[1, 2])?; // orthogonal to x
    /// let rms = RmsNorm::new(&ctx, RmsNormConfig { eps: 0.0, ..Default::default() })?;
    /// let (dx, dweight) = rms.backward(&RmsNormGradInputs {
    ///     x: &x,
    ///     residual: None,
    ///     weight: None,
    ///     dy: &dy,
    ///     dsum: None,
    ///     rstd: None, // recomputed
    /// })?;
    /// // dx = rstd * (dy - x * mean(dy * x) * rstd^2); dy . x = 0, rstd = 1 / sqrt(12.5).
    /// let r = 1.0 / 12.5f32.sqrt();
    /// let dx = ctx.download(&dx)?;
    /// assert!((dx[0] - 4.0 * r).abs() < 1e-6 && (dx[1] + 3.0 * r).abs() < 1e-6);
    /// assert_eq!(ctx.download(&dweight)?.len(), 2);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn backward(&self, inputs: &RmsNormGradInputs) -> Result<(Tensor, Tensor)> {
        let ctx = self.engine.context();
        let dtype = self.engine.config().dtype;
        let shape = inputs.x.shape();
        let dx = ctx.empty(shape, dtype)?;
        let dweight = ctx.empty(&self.engine.reduced_shape(shape)?, dtype)?;
        let outputs = RmsNormGradOutputs {
            dx: &dx,
            dweight: Some(&dweight),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, inputs, &outputs))?;
        Ok((dx, dweight))
    }
}
