//! LayerNorm (Ba et al. 2016, PyTorch semantics) as one GPU dispatch.
//!
//! `y = (x - mean) / sqrt(var + eps) * weight + bias`, with mean and biased variance over every
//! dim from `axis` to the last (PyTorch's `normalized_shape` is `x.shape[axis..]`). Storage f32 or
//! f16, arithmetic f32. Optionally writes the per-row `mean` and `rstd = 1/sqrt(var + eps)` (f32),
//! as a backward pass needs them.

#![deny(missing_docs)]

pub mod placement;

use wgnorm_core::rowgrad::{RowGrad, RowGradArgs, RowGradConfig};
pub use wgnorm_core::rownorm::RowKernel;
use wgnorm_core::rownorm::{RowMode, RowNorm, RowNormArgs, RowNormConfig};
use wgnorm_core::{Context, DType, Result, Tensor};

/// What is fixed when the layer is created.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormConfig {
    /// First normalized dim; negative counts from the end. Default -1 (the last dim).
    pub axis: isize,
    /// Default 1e-5 (PyTorch). Must be finite and >= 0.
    pub eps: f32,
    /// Storage type of x, y, weight and bias.
    pub dtype: DType,
}

impl Default for LayerNormConfig {
    fn default() -> Self {
        LayerNormConfig {
            axis: -1,
            eps: 1e-5,
            dtype: DType::F32,
        }
    }
}

/// Inputs: `x`, and optional `weight` / `bias` of shape `x.shape[axis..]`.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Shift (beta) added after the scale; `None`: 0.
    pub bias: Option<&'a Tensor>,
}

/// Outputs: `y` shaped like `x`; optional f32 `mean` and `rstd` with one element per row.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormOutputs<'a> {
    /// Output: the shape and dtype of `x`.
    pub y: &'a Tensor,
    /// Saved statistics: the mean of each normalized row or slot (f32), written when given.
    pub mean: Option<&'a Tensor>,
    /// Saved statistics: `1/sqrt(var + eps)` of each normalized row or slot (f32), written when given.
    pub rstd: Option<&'a Tensor>,
}

/// Tensors allocated by [`LayerNorm::forward`].
#[derive(Clone, Debug)]
pub struct LayerNormOutput {
    /// Output: the shape and dtype of `x`.
    pub y: Tensor,
    /// Saved statistics: the mean of each normalized row or slot (f32).
    pub mean: Tensor,
    /// Saved statistics: `1/sqrt(var + eps)` of each normalized row or slot (f32).
    pub rstd: Tensor,
}

/// Inputs of the fused residual add: the row normalized is `x + residual` (same shape as x).
#[derive(Clone, Copy, Debug)]
pub struct AddLayerNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Added to `x` before normalizing (the residual stream), same shape and dtype.
    pub residual: &'a Tensor,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Shift (beta) added after the scale; `None`: 0.
    pub bias: Option<&'a Tensor>,
}

/// Outputs of the fused residual add: `y = layer_norm(x + residual)`, optionally the sum itself
/// (pre-LN blocks carry it to the next residual) and the statistics.
#[derive(Clone, Copy, Debug)]
pub struct AddLayerNormOutputs<'a> {
    /// Output: the shape and dtype of `x`.
    pub y: &'a Tensor,
    /// Receives `x + residual` (the next block's residual stream), same shape and dtype, written when given.
    pub sum: Option<&'a Tensor>,
    /// Saved statistics: the mean of each normalized row or slot (f32), written when given.
    pub mean: Option<&'a Tensor>,
    /// Saved statistics: `1/sqrt(var + eps)` of each normalized row or slot (f32), written when given.
    pub rstd: Option<&'a Tensor>,
}

/// Inputs of the backward: the forward's `x` and `weight`, the upstream gradient `dy` (x's shape
/// and dtype) and, when the caller kept them, the forward's saved `mean` and `rstd` (f32, one
/// per row; both or neither: recomputed from x otherwise).
#[derive(Clone, Copy, Debug)]
pub struct LayerNormGradInputs<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// The forward's weight; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// The forward's bias, read only when an activation follows the affine (its argument
    /// is `xhat * weight + bias`); `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
    /// The forward's saved row means.
    pub mean: Option<&'a Tensor>,
    /// The forward's saved row rstd.
    pub rstd: Option<&'a Tensor>,
}

/// Inputs of the fused add's backward: as [`LayerNormGradInputs`] plus the residual, and `dsum`,
/// the upstream gradient of the `sum` output when a pre-LN block used it (added to dx).
#[derive(Clone, Copy, Debug)]
pub struct AddLayerNormGradInputs<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// The forward's residual.
    pub residual: &'a Tensor,
    /// The forward's weight; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// The forward's bias, read only when an activation follows the affine (its argument
    /// is `xhat * weight + bias`); `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
    /// Upstream gradient of the sum output.
    pub dsum: Option<&'a Tensor>,
    /// The forward's saved row means.
    pub mean: Option<&'a Tensor>,
    /// The forward's saved row rstd.
    pub rstd: Option<&'a Tensor>,
}

/// Outputs of the backward: `dx` (x's shape and dtype; for the fused add also the gradient of
/// the residual), and `dweight` / `dbias` (the weight's shape and dtype) when wanted.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of the weight, written when given.
    pub dweight: Option<&'a Tensor>,
    /// Gradient of the bias, written when given.
    pub dbias: Option<&'a Tensor>,
}

/// Tensors allocated by [`LayerNorm::backward`].
#[derive(Clone, Debug)]
pub struct LayerNormGrads {
    /// Gradient of x.
    pub dx: Tensor,
    /// Gradients of the weight and the bias (of the reduced shape).
    pub dweight: Tensor,
    /// Gradient of the bias.
    pub dbias: Tensor,
}

/// A LayerNorm bound to a device. Create once, call many times: pipelines and bind groups are
/// cached, so warm calls allocate no GPU objects.
pub struct LayerNorm {
    engine: RowNorm,
    grad: RowGrad,
}

impl LayerNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: LayerNormConfig) -> Result<LayerNorm> {
        let engine = RowNorm::new(
            ctx,
            RowNormConfig {
                mode: RowMode::LayerNorm,
                axis: cfg.axis,
                eps: cfg.eps,
                weight_offset: 0.0,
                dtype: cfg.dtype,
            },
        )?;
        let grad = RowGrad::new(
            ctx,
            RowGradConfig {
                mode: RowMode::LayerNorm,
                axis: cfg.axis,
                eps: cfg.eps,
                weight_offset: 0.0,
                dtype: cfg.dtype,
                unbiased: false,
                eps_outside: false,
            },
        )?;
        Ok(LayerNorm { engine, grad })
    }

    /// Applies an activation after the affine in the same kernel (e.g. `Activation::GeluErf`);
    /// the backward differentiates through it (pass the forward's bias to it).
    pub fn with_activation(self, activation: wgnorm_core::Activation) -> LayerNorm {
        LayerNorm {
            engine: self.engine.with_activation(activation),
            grad: self.grad.with_activation(activation),
        }
    }

    /// Lets calls of few rows (decode steps) take kernels chosen for their row count: faster on
    /// GPUs, but a row's bits then depend on its call's row count (see
    /// [`RowNorm::with_few_row_kernels`]). Off by default: results are batch-invariant.
    pub fn with_few_row_kernels(self, on: bool) -> LayerNorm {
        LayerNorm {
            engine: self.engine.with_few_row_kernels(on),
            ..self
        }
    }

    /// Forces one kernel shape instead of the per-adapter choice (tests, benchmarks).
    pub fn with_kernel(self, kernel: RowKernel) -> LayerNorm {
        LayerNorm {
            engine: self.engine.with_kernel(kernel),
            ..self
        }
    }

    /// The row-norm engine (kernel reports, cache statistics).
    pub fn engine(&self) -> &RowNorm {
        &self.engine
    }

    /// Records the op into the caller's encoder. No submit, no readback, no GPU allocation once
    /// warm; every argument is checked first and nothing is recorded on error.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &LayerNormInputs,
        outputs: &LayerNormOutputs,
    ) -> Result<()> {
        self.engine.encode(
            encoder,
            &RowNormArgs {
                x: inputs.x,
                weight: inputs.weight,
                bias: inputs.bias,
                y: outputs.y,
                mean: outputs.mean,
                rstd: outputs.rstd,
                residual: None,
                sum: None,
            },
        )
    }

    /// Fused residual add + LayerNorm in one kernel: reads x and residual once, writes y (and
    /// the sum) once. Post-LN is `y = LN(x + sublayer(x))` with `sum: None`; pre-LN keeps `sum`
    /// as the next block's residual.
    pub fn encode_add(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &AddLayerNormInputs,
        outputs: &AddLayerNormOutputs,
    ) -> Result<()> {
        self.engine.encode(
            encoder,
            &RowNormArgs {
                x: inputs.x,
                weight: inputs.weight,
                bias: inputs.bias,
                y: outputs.y,
                mean: outputs.mean,
                rstd: outputs.rstd,
                residual: Some(inputs.residual),
                sum: outputs.sum,
            },
        )
    }

    /// Allocates `y` and the sum, encodes the fused add + LayerNorm and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_layernorm::{AddLayerNormInputs, LayerNorm, LayerNormConfig};
    ///
    /// // Pre-norm transformer block: h = x + attn_out; y = LayerNorm(h), in one pass.
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[1.0, 2.0, 3.0, 4.0], &[1, 4])?;
    /// let attn = ctx.upload_f32(&[0.5, 0.5, 0.5, 0.5], &[1, 4])?;
    /// let ln = LayerNorm::new(&ctx, LayerNormConfig::default())?;
    /// let (y, sum) = ln.forward_add(&AddLayerNormInputs {
    ///     x: &x,
    ///     residual: &attn,
    ///     weight: None,
    ///     bias: None,
    /// })?;
    /// assert_eq!(ctx.download(&sum)?, vec![1.5, 2.5, 3.5, 4.5]);
    /// let y = ctx.download(&y)?;
    /// assert!(y[0] < 0.0 && y[3] > 0.0 && y.iter().sum::<f32>().abs() < 1e-5);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward_add(&self, inputs: &AddLayerNormInputs) -> Result<(Tensor, Tensor)> {
        let ctx = self.engine.context();
        let dtype = self.engine.config().dtype;
        let y = ctx.empty(inputs.x.shape(), dtype)?;
        let sum = ctx.empty(inputs.x.shape(), dtype)?;
        let outputs = AddLayerNormOutputs {
            y: &y,
            sum: Some(&sum),
            mean: None,
            rstd: None,
        };
        ctx.record_and_submit(|enc| self.encode_add(enc, inputs, &outputs))?;
        Ok((y, sum))
    }

    /// Allocates the outputs, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::{Context, DType};
    /// use wgnorm_layernorm::{LayerNorm, LayerNormConfig, LayerNormInputs};
    ///
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.5], &[2, 4])?;
    /// let ln = LayerNorm::new(&ctx, LayerNormConfig::default())?;
    /// let out = ln.forward(&LayerNormInputs { x: &x, weight: None, bias: None })?;
    /// let y = ctx.download(&out.y)?;
    /// // Each row of [rows, n] now has mean 0 and (biased) variance 1, up to eps.
    /// for row in y.chunks(4) {
    ///     let mean = row.iter().sum::<f32>() / 4.0;
    ///     let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 4.0;
    ///     assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "{mean} {var}");
    /// }
    /// let mean = ctx.download(&out.mean)?;
    /// assert!((mean[0] - 2.5).abs() < 1e-6 && (mean[1] - 10.125).abs() < 1e-5);
    /// # assert_eq!(out.y.dtype(), DType::F32);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, inputs: &LayerNormInputs) -> Result<LayerNormOutput> {
        let (y, mean, rstd) = self
            .engine
            .forward(inputs.x, inputs.weight, inputs.bias, true)?;
        Ok(LayerNormOutput {
            y,
            mean: mean.expect("requested"),
            rstd: rstd.expect("requested"),
        })
    }

    /// Records the backward into the caller's encoder: `dx` (one workgroup per row: the two row
    /// reductions `sum(dy w)` and `sum(dy w xhat)` in f32 tree sums) and, when wanted, `dweight` /
    /// `dbias` (per-block partial sums reduced in a fixed order: bitwise reproducible). Checked
    /// first; nothing is recorded on error; no allocation once warm.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &LayerNormGradInputs,
        outputs: &LayerNormGradOutputs,
    ) -> Result<()> {
        self.grad.encode(
            encoder,
            &RowGradArgs {
                x: inputs.x,
                residual: None,
                weight: inputs.weight,
                bias: inputs.bias,
                dy: inputs.dy,
                dsum: None,
                mean: inputs.mean,
                rstd: inputs.rstd,
                dx: outputs.dx,
                dweight: outputs.dweight,
                dbias: outputs.dbias,
            },
        )
    }

    /// The fused add's backward: `dx` is the gradient of both `x` and `residual` (plus `dsum`).
    pub fn encode_add_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &AddLayerNormGradInputs,
        outputs: &LayerNormGradOutputs,
    ) -> Result<()> {
        self.grad.encode(
            encoder,
            &RowGradArgs {
                x: inputs.x,
                residual: Some(inputs.residual),
                weight: inputs.weight,
                bias: inputs.bias,
                dy: inputs.dy,
                dsum: inputs.dsum,
                mean: inputs.mean,
                rstd: inputs.rstd,
                dx: outputs.dx,
                dweight: outputs.dweight,
                dbias: outputs.dbias,
            },
        )
    }

    /// Allocates dx, dweight and dbias, encodes the backward and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_layernorm::{LayerNorm, LayerNormConfig, LayerNormGradInputs, LayerNormInputs};
    ///
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[0.0, 1.0, 3.0, 8.0], &[1, 4])?;
    /// let w = ctx.upload_f32(&[1.0, 1.0, 1.0, 1.0], &[4])?;
    /// let dy = ctx.upload_f32(&[1.0, 1.0, 1.0, 1.0], &[1, 4])?;
    /// let ln = LayerNorm::new(&ctx, LayerNormConfig::default())?;
    /// let fwd = ln.forward(&LayerNormInputs { x: &x, weight: Some(&w), bias: None })?;
    /// let g = ln.backward(&LayerNormGradInputs {
    ///     x: &x,
    ///     weight: Some(&w),
    ///     bias: None,
    ///     dy: &dy,
    ///     mean: Some(&fwd.mean), // saved by the forward; None recomputes them
    ///     rstd: Some(&fwd.rstd),
    /// })?;
    /// // A constant upstream gradient moves every output alike: LayerNorm is blind to it.
    /// assert!(ctx.download(&g.dx)?.iter().all(|d| d.abs() < 1e-5));
    /// assert_eq!(ctx.download(&g.dbias)?, vec![1.0; 4]);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn backward(&self, inputs: &LayerNormGradInputs) -> Result<LayerNormGrads> {
        let ctx = self.engine.context();
        let dtype = self.engine.config().dtype;
        let shape = inputs.x.shape();
        let reduced = self.engine.reduced_shape(shape)?;
        let dx = ctx.empty(shape, dtype)?;
        let dweight = ctx.empty(&reduced, dtype)?;
        let dbias = ctx.empty(&reduced, dtype)?;
        let outputs = LayerNormGradOutputs {
            dx: &dx,
            dweight: Some(&dweight),
            dbias: Some(&dbias),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, inputs, &outputs))?;
        Ok(LayerNormGrads { dx, dweight, dbias })
    }
}
