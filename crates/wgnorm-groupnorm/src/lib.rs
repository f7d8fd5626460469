//! GroupNorm (Wu & He 2018) and InstanceNorm (Ulyanov et al. 2016), NCHW or channels-last.
//!
//! GroupNorm: statistics per (sample, group of C / G channels) over those channels and the
//! spatial dims (biased variance), per-channel affine, and an optional activation in the same
//! pass (`Activation::Silu`: the diffusion-UNet GroupNorm+SiLU block). InstanceNorm is GroupNorm
//! with G = C. Batch statistics in training and inference alike (PyTorch's defaults);
//! InstanceNorm's `track_running_stats` is [`InstanceNorm::encode_tracked`]. x, y in f32 or f16;
//! weight and bias f32 `[C]`.

#![deny(missing_docs)]

mod evonorm_s0;
mod grad;

pub use evonorm_s0::{
    EvoNormS0, EvoNormS0Config, EvoNormS0GradOutputs, EvoNormS0Grads, SIGMOID_GATE_GRAD,
};

pub use grad::{NormGradInputs, NormGradOutputs, NormGrads};
pub use wgnorm_core::chnorm::{Activation, Layout};
use wgnorm_core::chnorm::{
    ChannelNorm, ChannelNormArgs, ChannelView, Epilogue, EpilogueInput, Statistics,
};
use wgnorm_core::{Context, DType, Mode, Result, Tensor};

/// EvoNorm-S0's apply epilogue: `y = x * sigmoid(v x) * scale + shift` with a per-channel `v`.
pub const SIGMOID_GATE: Epilogue = Epilogue::new(
    "channel_norm/apply+sigmoid_gate",
    &[
        wgnorm_core::shader::snippet::ACTIVATION,
        wgnorm_core::shader::snippet::CHANNEL_COMMON,
        wgnorm_core::shader_file!("group_norm/epilogue_sigmoid_gate.wgsl"),
        wgnorm_core::chnorm::plan::APPLY_BODY,
    ],
    3,
    EpilogueInput::PerChannel,
)
.not_centred();

/// What is fixed when a GroupNorm is created.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormConfig {
    /// Must divide C (checked per call: a typed error otherwise).
    pub num_groups: usize,
    /// Default 1e-5.
    pub eps: f32,
    /// Activation fused after the affine.
    pub activation: Activation,
    /// Layout of x and y: NCHW or channels-last.
    pub layout: Layout,
    /// Storage type of x and y (arithmetic is f32).
    pub dtype: DType,
}

impl GroupNormConfig {
    /// GroupNorm over `num_groups` groups with the other fields at their defaults.
    pub fn new(num_groups: usize) -> GroupNormConfig {
        GroupNormConfig {
            num_groups,
            eps: 1e-5,
            activation: Activation::None,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

/// Inputs of GroupNorm and InstanceNorm: `x` `(N, C, *)` (or `(N, *, C)`), f32 weight/bias `[C]`.
#[derive(Clone, Copy, Debug)]
pub struct NormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Shift (beta) added after the scale; `None`: 0.
    pub bias: Option<&'a Tensor>,
}

/// Outputs: `y` like x; optional f32 `[N * groups, 2]` of (mean, rstd) per (sample, group).
#[derive(Clone, Copy, Debug)]
pub struct NormOutputs<'a> {
    /// Output: the shape and dtype of `x`.
    pub y: &'a Tensor,
    /// Receives the per-slot `(mean, rstd)` pairs (f32) when given.
    pub saved: Option<&'a Tensor>,
}

/// A GroupNorm bound to a device.
pub struct GroupNorm {
    engine: ChannelNorm,
    cfg: GroupNormConfig,
    grad: wgnorm_core::chgrad::ChannelGrad,
}

impl GroupNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: GroupNormConfig) -> Result<GroupNorm> {
        let engine = ChannelNorm::new(ctx, cfg.eps, cfg.dtype, cfg.activation)?;
        let grad = wgnorm_core::chgrad::ChannelGrad::new(ctx, cfg.eps, cfg.dtype, cfg.activation)?;
        Ok(GroupNorm { engine, cfg, grad })
    }

    /// Records the op into the caller's encoder.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NormInputs,
        outputs: &NormOutputs,
    ) -> Result<()> {
        let view = ChannelView::group_norm(inputs.x.shape(), self.cfg.layout, self.cfg.num_groups)?;
        encode(&self.engine, encoder, view, inputs, outputs)
    }

    /// Allocates `y`, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::chnorm::Layout;
    /// use wgnorm_core::{Activation, Context};
    /// use wgnorm_groupnorm::{GroupNorm, GroupNormConfig, NormInputs};
    ///
    /// // A diffusion ResNet block's GroupNorm(2) + SiLU, channels-last: x is NHWC [1, 1, 2, 4].
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[0.0, 2.0, 5.0, 5.0, 4.0, 6.0, 5.0, 5.0], &[1, 1, 2, 4])?;
    /// let gn = GroupNorm::new(
    ///     &ctx,
    ///     GroupNormConfig {
    ///         eps: 0.0,
    ///         activation: Activation::Silu,
    ///         layout: Layout::Nhwc,
    ///         ..GroupNormConfig::new(2)
    ///     },
    /// )?;
    /// let y = ctx.download(&gn.forward(&NormInputs { x: &x, weight: None, bias: None })?)?;
    /// // Group 0 is channels 0-1 (values 0, 2, 4, 6: mean 3, std sqrt(5)); group 1 is constant.
    /// let z = 3.0 / 5.0f32.sqrt();
    /// let silu = |v: f32| v / (1.0 + (-v).exp());
    /// assert!((y[0] - silu(-z)).abs() < 1e-6 && (y[5] - silu(z)).abs() < 1e-6);
    /// assert!(y[2].is_nan(), "a constant group with eps = 0 is 0/0, as in PyTorch");
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, inputs: &NormInputs) -> Result<Tensor> {
        forward(&self.engine, self.cfg.dtype, inputs, |enc, o| {
            self.encode(enc, inputs, o)
        })
    }
}

/// What is fixed when an InstanceNorm is created.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstanceNormConfig {
    /// Added to the variance inside the square root (finite, >= 0).
    pub eps: f32,
    /// Weight of the new value in the running-statistics update of
    /// [`InstanceNorm::encode_tracked`] (PyTorch convention, default 0.1).
    pub momentum: f32,
    /// Layout of x and y: NCHW or channels-last.
    pub layout: Layout,
    /// Storage type of x and y (arithmetic is f32).
    pub dtype: DType,
}

impl Default for InstanceNormConfig {
    fn default() -> Self {
        InstanceNormConfig {
            eps: 1e-5,
            momentum: 0.1,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

/// An InstanceNorm bound to a device.
pub struct InstanceNorm {
    engine: ChannelNorm,
    cfg: InstanceNormConfig,
    /// Per-(sample, channel) moments of the tracked training path, one tensor per shape.
    moments: wgnorm_core::scratch::ScratchCache,
    grad: wgnorm_core::chgrad::ChannelGrad,
}

impl InstanceNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: InstanceNormConfig) -> Result<InstanceNorm> {
        let engine = ChannelNorm::new(ctx, cfg.eps, cfg.dtype, Activation::None)?;
        let grad =
            wgnorm_core::chgrad::ChannelGrad::new(ctx, cfg.eps, cfg.dtype, Activation::None)?;
        Ok(InstanceNorm {
            engine,
            cfg,
            moments: Default::default(),
            grad,
        })
    }

    /// Records the op into the caller's encoder (`saved`: `[N * C, 2]`).
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NormInputs,
        outputs: &NormOutputs,
    ) -> Result<()> {
        let view = ChannelView::instance_norm(inputs.x.shape(), self.cfg.layout)?;
        encode(&self.engine, encoder, view, inputs, outputs)
    }

    /// Allocates `y`, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_groupnorm::{InstanceNorm, InstanceNormConfig, NormInputs};
    ///
    /// // Style transfer: statistics per (sample, channel) over H*W. x: NCHW [2, 1, 1, 2].
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[1.0, 3.0, 100.0, 300.0], &[2, 1, 1, 2])?;
    /// let inorm = InstanceNorm::new(&ctx, InstanceNormConfig { eps: 0.0, ..Default::default() })?;
    /// let y = ctx.download(&inorm.forward(&NormInputs { x: &x, weight: None, bias: None })?)?;
    /// for (got, want) in y.iter().zip([-1.0f32, 1.0, -1.0, 1.0]) {
    ///     assert!((got - want).abs() < 1e-6, "{got} {want}");
    /// }
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, inputs: &NormInputs) -> Result<Tensor> {
        forward(&self.engine, self.cfg.dtype, inputs, |enc, o| {
            self.encode(enc, inputs, o)
        })
    }

    /// PyTorch's `track_running_stats=True`. Training: normalizes each instance with its own
    /// statistics and updates `running_mean`/`running_var` (f32 `[C]`) with the instance means
    /// and unbiased variances averaged over the batch, `r = (1 - momentum) r + momentum s`
    /// (x is read once for the statistics: the normalize pass reuses the merged moments).
    /// Inference: normalizes with the running statistics, as BatchNorm does.
    pub fn encode_tracked(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NormInputs,
        running_mean: &Tensor,
        running_var: &Tensor,
        outputs: &NormOutputs,
        mode: Mode,
    ) -> Result<()> {
        let training = mode.is_train();
        let view = ChannelView::instance_norm(inputs.x.shape(), self.cfg.layout)?;
        let mut args = ChannelNormArgs {
            weight: inputs.weight,
            bias: inputs.bias,
            running_mean: Some(running_mean),
            running_var: Some(running_var),
            stats: outputs.saved,
            statistics: Statistics::Running,
            ..ChannelNormArgs::new(inputs.x, outputs.y, view)
        };
        if !training {
            return self.engine.encode(encoder, &args);
        }
        let ctx = self.engine.context();
        let moments = self
            .moments
            .get(ctx, inputs.x.shape(), &[view.slots(), 3], DType::F32)?;
        // Check what the last pass needs before recording the first.
        args.statistics = Statistics::Batch(None);
        args.moments = Some(&moments);
        args.running_mean = None;
        args.running_var = None;
        self.engine.check_args(&args)?;
        self.engine.check_running_from_moments(
            view,
            &moments,
            running_mean,
            running_var,
            self.cfg.momentum,
        )?;
        self.engine
            .encode_reduce(encoder, inputs.x, view, &moments)?;
        self.engine.encode_running_from_moments(
            encoder,
            view,
            &moments,
            running_mean,
            running_var,
            self.cfg.momentum,
            false,
        )?;
        self.engine.encode(encoder, &args)
    }
}

fn encode(
    engine: &ChannelNorm,
    encoder: &mut wgpu::CommandEncoder,
    view: ChannelView,
    inputs: &NormInputs,
    outputs: &NormOutputs,
) -> Result<()> {
    engine.encode(
        encoder,
        &ChannelNormArgs {
            weight: inputs.weight,
            bias: inputs.bias,
            stats: outputs.saved,
            ..ChannelNormArgs::new(inputs.x, outputs.y, view)
        },
    )
}

fn forward(
    engine: &ChannelNorm,
    dtype: DType,
    inputs: &NormInputs,
    enc_fn: impl FnOnce(&mut wgpu::CommandEncoder, &NormOutputs) -> Result<()>,
) -> Result<Tensor> {
    let ctx = engine.context();
    let y = ctx.empty(inputs.x.shape(), dtype)?;
    ctx.record_and_submit(|enc| enc_fn(enc, &NormOutputs { y: &y, saved: None }))?;
    Ok(y)
}

/// What [`MeanVarianceNorm::new`] takes; `Default` gives the usual defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct MeanVarianceNormConfig {
    /// The reduced axes (negative from the end); ONNX default `[0, 2, 3]`.
    pub axes: Vec<isize>,
    /// Added to the standard deviation (outside the square root, as ONNX).
    pub eps: f32,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for MeanVarianceNormConfig {
    fn default() -> Self {
        MeanVarianceNormConfig {
            axes: vec![0, 2, 3],
            eps: 1e-9,
            dtype: DType::F32,
        }
    }
}

/// MeanVarianceNormalization (ONNX): `y = (x - mean) / (sqrt(var) + eps)` with the mean and
/// biased variance over `axes` (default `[0, 2, 3]`, per channel of NCHW) — eps outside the
/// square root (default 1e-9), no affine. Axes must read as `[kept][reduced][kept][reduced]`.
pub struct MeanVarianceNorm {
    engine: ChannelNorm,
    grad: wgnorm_core::chgrad::ChannelGrad,
    axes: Vec<isize>,
    dtype: DType,
}

impl MeanVarianceNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: MeanVarianceNormConfig) -> Result<MeanVarianceNorm> {
        let MeanVarianceNormConfig { axes, eps, dtype } = cfg;
        let engine =
            ChannelNorm::new(ctx, eps, dtype, Activation::None)?.with_eps_outside_sqrt(true);
        let grad = wgnorm_core::chgrad::ChannelGrad::new(ctx, eps, dtype, Activation::None)?
            .with_norm(wgnorm_core::chgrad::GradNorm::StdPlusEps)?;
        Ok(MeanVarianceNorm {
            engine,
            grad,
            axes: axes.to_vec(),
            dtype,
        })
    }

    /// Records `y = (x - mean) / (std + eps)` over the configured axes.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, x: &Tensor, y: &Tensor) -> Result<()> {
        let view = ChannelView::over_axes(x.shape(), &self.axes)?;
        encode(
            &self.engine,
            encoder,
            view,
            &NormInputs {
                x,
                weight: None,
                bias: None,
            },
            &NormOutputs { y, saved: None },
        )
    }

    /// Allocates y, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_groupnorm::{MeanVarianceNorm, MeanVarianceNormConfig};
    ///
    /// // ONNX MeanVarianceNormalization over axes [0, 2, 3] of NCHW: per channel.
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[1.0, 3.0, 7.0, 7.0, 5.0, 7.0, 9.0, 9.0], &[2, 2, 1, 2])?;
    /// let mvn = MeanVarianceNorm::new(&ctx, MeanVarianceNormConfig::default())?;
    /// let y = ctx.download(&mvn.forward(&x)?)?;
    /// // Channel 0 holds 1, 3, 5, 7: mean 4, std sqrt(5).
    /// let s = 5.0f32.sqrt();
    /// assert!((y[0] + 3.0 / s).abs() < 1e-5 && (y[5] - 3.0 / s).abs() < 1e-5);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let inputs = NormInputs {
            x,
            weight: None,
            bias: None,
        };
        forward(&self.engine, self.dtype, &inputs, |enc, o| {
            self.encode(enc, x, o.y)
        })
    }
}

/// What [`LpNorm::new`] takes; `Default` gives the usual defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LpNormConfig {
    /// The reduced axis (negative from the end).
    pub axis: isize,
    /// The norm: 1 or 2.
    pub p: u32,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for LpNormConfig {
    fn default() -> Self {
        LpNormConfig {
            axis: -1,
            p: 2,
            dtype: DType::F32,
        }
    }
}

/// LpNorm (ONNX): `y = x / ||x||_p` along one `axis`, p = 1 or 2, 0 where the norm is 0.
pub struct LpNorm {
    engine: ChannelNorm,
    grad: wgnorm_core::chgrad::ChannelGrad,
    axis: isize,
    dtype: DType,
}

impl LpNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: LpNormConfig) -> Result<LpNorm> {
        let LpNormConfig { axis, p, dtype } = cfg;
        let reduction = match p {
            1 => wgnorm_core::chnorm::Reduction::L1,
            2 => wgnorm_core::chnorm::Reduction::L2,
            _ => {
                return Err(wgnorm_core::Error::InvalidParameter {
                    name: "p",
                    value: p.to_string(),
                    why: "LpNorm supports p = 1 or 2",
                })
            }
        };
        let engine = ChannelNorm::new(ctx, 0.0, dtype, Activation::None)?.with_reduction(reduction);
        let norm = if p == 1 {
            wgnorm_core::chgrad::GradNorm::L1
        } else {
            wgnorm_core::chgrad::GradNorm::L2
        };
        let grad = wgnorm_core::chgrad::ChannelGrad::new(ctx, 0.0, dtype, Activation::None)?
            .with_norm(norm)?;
        Ok(LpNorm {
            engine,
            grad,
            axis,
            dtype,
        })
    }

    /// Records `y = x / ||x||_p` along the axis (0 where the norm is 0).
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, x: &Tensor, y: &Tensor) -> Result<()> {
        let view = ChannelView::along_axis(x.shape(), self.axis)?;
        encode(
            &self.engine,
            encoder,
            view,
            &NormInputs {
                x,
                weight: None,
                bias: None,
            },
            &NormOutputs { y, saved: None },
        )
    }

    /// Allocates y, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_groupnorm::{LpNorm, LpNormConfig};
    ///
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[3.0, 4.0, 0.0, 0.0], &[2, 2])?;
    /// let l2 = LpNorm::new(&ctx, LpNormConfig::default())?; // p = 2 along the last axis
    /// let y = ctx.download(&l2.forward(&x)?)?;
    /// assert!((y[0] - 0.6).abs() < 1e-6 && (y[1] - 0.8).abs() < 1e-6);
    /// assert_eq!(&y[2..], &[0.0, 0.0], "a zero row stays zero (ONNX)");
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let inputs = NormInputs {
            x,
            weight: None,
            bias: None,
        };
        forward(&self.engine, self.dtype, &inputs, |enc, o| {
            self.encode(enc, x, o.y)
        })
    }
}

/// Which Weight Standardization (Qiao et al. 2019; docs/methods.md A5) formula, per output channel over
/// the remaining dims of `W[O, ..]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WsVariant {
    /// `(W - mean) / (std_unbiased + eps)`: the paper's PyTorch README. Default.
    #[default]
    UnbiasedStdPlusEps,
    /// `(W - mean) / sqrt(var_unbiased + eps)`: Batch-Channel-Normalization `layers.py`.
    UnbiasedVarInsideSqrt,
    /// `(W - mean) / (std_biased + eps)`: the README's TensorFlow version.
    BiasedStdPlusEps,
    /// `(W - mean) / sqrt(var_biased + eps)`.
    BiasedVarInsideSqrt,
}

impl WsVariant {
    /// From the two switches of the conformance format (`unbiased`, `eps_inside_sqrt`).
    pub fn from_flags(unbiased: bool, eps_inside_sqrt: bool) -> WsVariant {
        match (unbiased, eps_inside_sqrt) {
            (true, false) => WsVariant::UnbiasedStdPlusEps,
            (true, true) => WsVariant::UnbiasedVarInsideSqrt,
            (false, false) => WsVariant::BiasedStdPlusEps,
            (false, true) => WsVariant::BiasedVarInsideSqrt,
        }
    }
}

/// What [`WeightStandardization::new`] takes; `Default` gives the usual defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightStandardizationConfig {
    /// Which of the published formulas.
    pub variant: WsVariant,
    /// The variant's eps.
    pub eps: f32,
    /// Storage type of the weights.
    pub dtype: DType,
}

impl Default for WeightStandardizationConfig {
    fn default() -> Self {
        WeightStandardizationConfig {
            variant: WsVariant::default(),
            eps: 1e-5,
            dtype: DType::F32,
        }
    }
}

/// Weight Standardization of convolution / linear weights `W[O, ..]`: statistics per output
/// channel over the other dims. For inference standardize once and keep the result (the weights
/// do not change between calls).
pub struct WeightStandardization {
    engine: ChannelNorm,
    dtype: DType,
    grad: wgnorm_core::rowgrad::RowGrad,
}

impl WeightStandardization {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: WeightStandardizationConfig) -> Result<WeightStandardization> {
        let WeightStandardizationConfig {
            variant,
            eps,
            dtype,
        } = cfg;
        let unbiased = matches!(
            variant,
            WsVariant::UnbiasedStdPlusEps | WsVariant::UnbiasedVarInsideSqrt
        );
        let outside = matches!(
            variant,
            WsVariant::UnbiasedStdPlusEps | WsVariant::BiasedStdPlusEps
        );
        let engine = ChannelNorm::new(ctx, eps, dtype, Activation::None)?
            .with_unbiased_variance(unbiased)
            .with_eps_outside_sqrt(outside);
        // The backward sees the weight as rows [O, K] (every dim after the first reduced).
        let grad = wgnorm_core::rowgrad::RowGrad::new(
            ctx,
            wgnorm_core::rowgrad::RowGradConfig {
                mode: wgnorm_core::rownorm::RowMode::LayerNorm,
                axis: 1,
                eps,
                weight_offset: 0.0,
                dtype,
                unbiased,
                eps_outside: outside,
            },
        )?;
        Ok(WeightStandardization {
            engine,
            dtype,
            grad,
        })
    }

    /// Allocates dw, encodes the backward and submits (does not wait).
    pub fn backward(&self, w: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let ctx = self.engine.context();
        let dw = ctx.empty(w.shape(), self.dtype)?;
        ctx.record_and_submit(|enc| self.encode_backward(enc, w, dy, &dw))?;
        Ok(dw)
    }

    /// Records the backward of the standardization into `dw`: for the upstream gradient `dy` of
    /// the standardized weights (w's shape and dtype), the gradient of the raw weights `w`,
    /// through each output channel's mean and standard deviation (the variant's variance and
    /// eps placement). One workgroup team per output channel. Checked first; nothing recorded
    /// on error.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        w: &Tensor,
        dy: &Tensor,
        dw: &Tensor,
    ) -> Result<()> {
        if w.shape().len() < 2 || w.numel() / w.shape()[0].max(1) < 2 {
            return Err(wgnorm_core::Error::InvalidParameter {
                name: "weight",
                value: format!("{:?}", w.shape()),
                why: "one value per output channel has no spread to standardize",
            });
        }
        self.grad.encode(
            encoder,
            &wgnorm_core::rowgrad::RowGradArgs {
                x: w,
                residual: None,
                weight: None,
                bias: None,
                dy,
                dsum: None,
                mean: None,
                rstd: None,
                dx: dw,
                dweight: None,
                dbias: None,
            },
        )
    }

    /// Records the standardized weights `[O, ..]` (statistics per output channel) into `out`.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        w: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        let shape = w.shape();
        if shape.is_empty() {
            return Err(wgnorm_core::Error::AxisOutOfRange {
                what: "weight_standardization (W must be [O, ..])",
                axis: 0,
                rank: 0,
            });
        }
        let k: usize = shape[1..].iter().product();
        if k == 1 && shape[0] > 0 {
            return Err(wgnorm_core::Error::InvalidParameter {
                name: "weight",
                value: format!("{shape:?}"),
                why: "one value per output channel has no spread to standardize",
            });
        }
        let view = ChannelView {
            p: shape[0],
            q: 1,
            r: 1,
            s: k,
            cg: 1,
            sdiv: k.max(1),
        };
        encode(
            &self.engine,
            encoder,
            view,
            &NormInputs {
                x: w,
                weight: None,
                bias: None,
            },
            &NormOutputs {
                y: out,
                saved: None,
            },
        )
    }

    /// Allocates the standardized weights, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_groupnorm::{WeightStandardization, WeightStandardizationConfig};
    ///
    /// // Conv weights [out, in, kh, kw] standardized per output channel before the convolution.
    /// let ctx = Context::new()?;
    /// let w = ctx.upload_f32(&[1.0, 2.0, 3.0, 4.0, -2.0, 2.0, -2.0, 2.0], &[2, 1, 2, 2])?;
    /// let ws = WeightStandardization::new(&ctx, WeightStandardizationConfig::default())?;
    /// let out = ctx.download(&ws.forward(&w)?)?;
    /// for filter in out.chunks(4) {
    ///     let mean = filter.iter().sum::<f32>() / 4.0;
    ///     assert!(mean.abs() < 1e-5, "each filter is centred: {mean}");
    /// }
    /// assert!(out[0] < 0.0 && out[3] > 0.0);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, w: &Tensor) -> Result<Tensor> {
        let inputs = NormInputs {
            x: w,
            weight: None,
            bias: None,
        };
        forward(&self.engine, self.dtype, &inputs, |enc, o| {
            self.encode(enc, w, o.y)
        })
    }
}
