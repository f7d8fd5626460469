//! EvoNorm-S0 (docs/methods.md A15): its forward, the channel engine with the sigmoid-gate
//! epilogue, and its backward, the batch-statistics backward engine with the sigmoid gate's
//! gradient term.

use wgnorm_core::chgrad::{ChannelGrad, ChannelGradArgs, GradStats, GradTerm, TermArgs, TermLen};
use wgnorm_core::chnorm::{ChannelNorm, ChannelNormArgs, ChannelView};
use wgnorm_core::{Activation, Context, DType, Error, Result, Tensor};

use crate::{forward, Layout, NormGradInputs, NormInputs, NormOutputs, SIGMOID_GATE};

/// The backward of [`SIGMOID_GATE`]: EvoNorm-S0's numerator `x * sigmoid(v x)` is not centred,
/// so the engine sums `(dy, dy h rstd, 0, dy rstd x^2 s (1 - s))` per channel (dbias, dweight,
/// the dx coefficient, dv), dx uses `g = w dy h'(x)`, and `dv` is one value per channel.
pub const SIGMOID_GATE_GRAD: GradTerm = GradTerm::new(
    (
        "channel_grad/dx+sigmoid_gate",
        &[
            wgnorm_core::chgrad::DX_HEAD[0],
            wgnorm_core::chgrad::DX_HEAD[1],
            wgnorm_core::shader_file!("group_norm/grad_sigmoid_gate_dx.wgsl"),
            wgnorm_core::chgrad::DX_BODY,
        ],
    ),
    (
        "channel_grad/finalize+sigmoid_gate",
        &[
            wgnorm_core::chgrad::FINALIZE_HEAD[0],
            wgnorm_core::chgrad::FINALIZE_HEAD[1],
            wgnorm_core::chgrad::FINALIZE_HEAD[2],
            wgnorm_core::shader_file!("group_norm/grad_sigmoid_gate_finalize.wgsl"),
            wgnorm_core::chgrad::FINALIZE_BODY,
        ],
    ),
    (TermLen::PerChannel, TermLen::PerChannel),
)
.with_partials((
    "channel_grad/partials+sigmoid_gate",
    &[
        wgnorm_core::chgrad::PARTIALS_HEAD[0],
        wgnorm_core::chgrad::PARTIALS_HEAD[1],
        wgnorm_core::chgrad::PARTIALS_HEAD[2],
        wgnorm_core::shader::snippet::WG_SUM4,
        wgnorm_core::shader_file!("group_norm/grad_sigmoid_gate_partials.wgsl"),
        wgnorm_core::chgrad::PARTIALS_BODY,
    ],
))
.replacing_g()
.not_centred();

/// EvoNorm-S0 (Liu et al. 2020; docs/methods.md A15, TF and timm agree):
/// `y = x * sigmoid(v * x) / sqrt(var_G(x) + eps) * weight + bias` with `var_G` the biased
/// variance per (sample, group) over the group's channels and the spatial dims, of x before the
/// gating; `v`, `weight`, `bias` f32 `[C]`. `groups` must divide C (timm asserts; TF lowers G
/// instead: do that before creating the op if you need it). No running statistics.
pub struct EvoNormS0 {
    engine: ChannelNorm,
    grad: ChannelGrad,
    groups: usize,
    layout: Layout,
    dtype: DType,
}

/// What [`EvoNormS0::new`] takes; `Default` gives the paper's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvoNormS0Config {
    /// Channel groups G (must divide C).
    pub groups: usize,
    /// Added to the group variance inside the square root.
    pub eps: f32,
    /// Layout of x and y.
    pub layout: Layout,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for EvoNormS0Config {
    fn default() -> Self {
        EvoNormS0Config {
            groups: 32,
            eps: 1e-5,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

impl EvoNormS0 {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: EvoNormS0Config) -> Result<EvoNormS0> {
        let EvoNormS0Config {
            groups,
            eps,
            layout,
            dtype,
        } = cfg;
        Ok(EvoNormS0 {
            engine: ChannelNorm::new(ctx, eps, dtype, Activation::None)?,
            grad: ChannelGrad::new(ctx, eps, dtype, Activation::None)?,
            groups,
            layout,
            dtype,
        })
    }

    /// Records `y = x * sigmoid(v x) / sqrt(var_G + eps) * weight + bias` with `v` f32 `[C]`.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NormInputs,
        v: &Tensor,
        outputs: &NormOutputs,
    ) -> Result<()> {
        let view = ChannelView::group_norm(inputs.x.shape(), self.layout, self.groups)?;
        self.engine.encode(
            encoder,
            &ChannelNormArgs {
                weight: inputs.weight,
                bias: inputs.bias,
                stats: outputs.saved,
                epilogue: SIGMOID_GATE,
                aux: Some(v),
                ..ChannelNormArgs::new(inputs.x, outputs.y, view)
            },
        )
    }

    /// Allocates `y`, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &NormInputs, v: &Tensor) -> Result<Tensor> {
        forward(&self.engine, self.dtype, inputs, |enc, o| {
            self.encode(enc, inputs, v, o)
        })
    }
}

/// Outputs of [`EvoNormS0::encode_backward`]: `dx` like x; `dv`, `dweight`, `dbias` f32 `[C]`
/// when wanted.
#[derive(Clone, Copy, Debug)]
pub struct EvoNormS0GradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of the gate's `v`.
    pub dv: Option<&'a Tensor>,
    /// Gradient of the weight.
    pub dweight: Option<&'a Tensor>,
    /// Gradient of the bias.
    pub dbias: Option<&'a Tensor>,
}

/// Tensors allocated by [`EvoNormS0::backward`].
#[derive(Clone, Debug)]
pub struct EvoNormS0Grads {
    /// Gradient of x.
    pub dx: Tensor,
    /// Gradient of `v` (f32 `[C]`).
    pub dv: Tensor,
    /// Gradient of the weight (f32 `[C]`).
    pub dweight: Tensor,
    /// Gradient of the bias (f32 `[C]`).
    pub dbias: Tensor,
}

impl EvoNormS0 {
    /// Records the backward into the caller's encoder: with `h = x sigmoid(v x)`, `r` the
    /// (sample, group)'s rstd and `xhat = (x - mean) r`,
    /// `dx = r (w dy h'(x) - xhat mean(w dy h r))`, `dweight = sum dy h r`, `dbias = sum dy`,
    /// `dv = w sum dy r x^2 s (1 - s)` per channel, through the group statistics (recomputed:
    /// `inputs.saved` must be `None`). `inputs.bias` is not read. Fixed-order sums: bitwise
    /// reproducible. Checked first; nothing is recorded on error.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &NormGradInputs,
        v: &Tensor,
        outputs: &EvoNormS0GradOutputs,
    ) -> Result<()> {
        if inputs.saved.is_some() {
            return Err(Error::InvalidParameter {
                name: "saved",
                value: "Some".into(),
                why: "EvoNorm-S0's backward recomputes its group statistics: pass None",
            });
        }
        let view = ChannelView::group_norm(inputs.x.shape(), self.layout, self.groups)?;
        self.grad.encode(
            encoder,
            &ChannelGradArgs {
                x: inputs.x,
                dy: inputs.dy,
                view,
                stats: GradStats::Batch,
                weight: inputs.weight,
                bias: None,
                saved: None,
                running_mean: None,
                running_var: None,
                dx: outputs.dx,
                dweight: outputs.dweight,
                dbias: outputs.dbias,
                term: Some(TermArgs {
                    term: SIGMOID_GATE_GRAD,
                    input: Some(v),
                    grad: outputs.dv,
                    params: [0, 0],
                }),
            },
        )
    }

    /// Allocates the gradients, encodes the backward and submits (does not wait).
    pub fn backward(&self, inputs: &NormGradInputs, v: &Tensor) -> Result<EvoNormS0Grads> {
        let ctx = self.engine.context();
        let view = ChannelView::group_norm(inputs.x.shape(), self.layout, self.groups)?;
        let c = view.channels();
        let g = EvoNormS0Grads {
            dx: ctx.empty(inputs.x.shape(), self.dtype)?,
            dv: ctx.empty(&[c], DType::F32)?,
            dweight: ctx.empty(&[c], DType::F32)?,
            dbias: ctx.empty(&[c], DType::F32)?,
        };
        let outputs = EvoNormS0GradOutputs {
            dx: &g.dx,
            dv: Some(&g.dv),
            dweight: Some(&g.dweight),
            dbias: Some(&g.dbias),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, inputs, v, &outputs))?;
        Ok(g)
    }
}
