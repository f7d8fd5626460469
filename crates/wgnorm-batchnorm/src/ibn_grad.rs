//! IBN's backward (docs/methods.md A8): the batch-statistics backward over the InstanceNorm
//! view, the first `half` channels through their (sample, channel) statistics, the others
//! through the channel's batch statistics (training) or with the running ones as constants
//! (inference). Three steps: the forward engine's reduce pass (per-slot moments), a statistics
//! pass writing every slot's `(mean, rstd)` (the BatchNorm channels' merged over the batch), then
//! the engine's backward with those as saved statistics and the IBN gradient term, which makes
//! a BatchNorm channel's slots sum over the batch.

use wgnorm_core::binding::{self, BindCache};
use wgnorm_core::chgrad::{self, ChannelGrad, ChannelGradArgs, GradStats, GradTerm, TermArgs};
use wgnorm_core::chnorm::{ChannelNorm, ChannelView, Layout};
use wgnorm_core::instmix::expect_f32;
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::uniform::ChannelGradParams;
use wgnorm_core::{Activation, Context, DType, Error, Mode, Result, Slot, Tensor};

/// IBN's gradient term: a BatchNorm channel's slots take the channel's sums over the batch
/// (training) or none (inference); `params = [half, training]`.
pub const IBN_GRAD: GradTerm = GradTerm::NONE
    .with_finalize((
        "channel_grad/finalize+ibn",
        &[
            chgrad::FINALIZE_HEAD[0],
            chgrad::FINALIZE_HEAD[1],
            chgrad::FINALIZE_HEAD[2],
            wgnorm_core::shader_file!("batch_norm/grad_ibn_finalize.wgsl"),
            chgrad::FINALIZE_BODY,
        ],
    ))
    .mixing_slots();

/// uniform, moments, running_mean, running_var, saved.
const STATS_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
];

/// Every slot's `(mean, rstd)` for the backward.
pub const IBN_GRAD_STATS_KERNEL: Kernel = Kernel::new(
    "batch_norm/ibn_grad_stats",
    &[
        chgrad::DX_HEAD[0],
        chgrad::DX_HEAD[1],
        wgnorm_core::shader_file!("batch_norm/ibn_grad_stats.wgsl"),
    ],
    STATS_SLOTS,
);

const STATS_WG: u32 = 64;

/// The statistics pass's pipeline.
pub fn ibn_grad_stats_spec() -> Specialization {
    Specialization::new(IBN_GRAD_STATS_KERNEL, Io::F32).set("WG", STATS_WG)
}

/// The engines and scratch of IBN's backward.
pub(crate) struct IbnGrad {
    ctx: Context,
    eps: f32,
    layout: Layout,
    dtype: DType,
    reduce: ChannelNorm,
    grad: ChannelGrad,
    binds: BindCache,
    moments: ScratchCache,
    saved: ScratchCache,
}

/// Inputs of [`crate::IbnNorm::encode_backward`]: the forward's `x`, `weight` (`[C]`) and
/// running statistics (`[C - half]`, read at inference), and the upstream gradient `dy`.
#[derive(Clone, Copy, Debug)]
pub struct IbnGradInputs<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// The forward's weight (f32 `[C]`).
    pub weight: &'a Tensor,
    /// The running mean of the BatchNorm channels (f32 `[C - half]`).
    pub running_mean: &'a Tensor,
    /// The running variance of the BatchNorm channels (f32 `[C - half]`).
    pub running_var: &'a Tensor,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
}

/// Outputs of [`crate::IbnNorm::encode_backward`]: `dx` like x, `dweight` and `dbias` f32 `[C]`
/// when wanted.
#[derive(Clone, Copy, Debug)]
pub struct IbnGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of the weight.
    pub dweight: Option<&'a Tensor>,
    /// Gradient of the bias.
    pub dbias: Option<&'a Tensor>,
}

impl IbnGrad {
    pub(crate) fn new(ctx: &Context, eps: f32, layout: Layout, dtype: DType) -> Result<IbnGrad> {
        Ok(IbnGrad {
            ctx: ctx.clone(),
            eps,
            layout,
            dtype,
            reduce: ChannelNorm::new(ctx, eps, dtype, Activation::None)?,
            grad: ChannelGrad::new(ctx, eps, dtype, Activation::None)?,
            binds: BindCache::default(),
            moments: ScratchCache::default(),
            saved: ScratchCache::default(),
        })
    }

    /// Records the three steps; `half` IN channels. Every step is checked first.
    pub(crate) fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &IbnGradInputs,
        outputs: &IbnGradOutputs,
        (half, mode): (usize, Mode),
    ) -> Result<()> {
        let shape = inputs.x.shape();
        let view = ChannelView::instance_norm(shape, self.layout)?;
        let c = view.channels();
        expect_f32("running_mean", Some(inputs.running_mean), c - half)?;
        expect_f32("running_var", Some(inputs.running_var), c - half)?;
        let training = mode.is_train();
        if training && half < c && view.numel() > 0 && view.p * view.q * view.sdiv < 2 {
            return Err(Error::InvalidParameter {
                name: "batch",
                value: "1 value per channel".into(),
                why: "training needs more than one value per BatchNorm channel (as in PyTorch)",
            });
        }
        let slots = view.slots();
        let moments = self
            .moments
            .get(&self.ctx, shape, &[2 * slots.max(1), 3], DType::F32)?;
        let saved = self
            .saved
            .get(&self.ctx, shape, &[slots.max(1), 2], DType::F32)?;
        // (Empty: nothing to normalize, the parameter gradients are zeros; no statistics.)
        let empty = view.numel() == 0;
        let args = ChannelGradArgs {
            x: inputs.x,
            dy: inputs.dy,
            view,
            stats: if empty {
                GradStats::Batch
            } else {
                GradStats::Saved
            },
            weight: Some(inputs.weight),
            bias: None,
            saved: (!empty).then_some(&saved),
            running_mean: None,
            running_var: None,
            dx: outputs.dx,
            dweight: outputs.dweight,
            dbias: outputs.dbias,
            term: Some(TermArgs {
                term: IBN_GRAD,
                input: None,
                grad: None,
                params: [half as u32, training as u32],
            }),
        };
        self.grad.check_args(&args)?;
        if empty {
            return self.grad.encode(encoder, &args);
        }
        let params = self.stats_params(&view, [half as u32, training as u32]);
        let r = |what, t: &Tensor| binding::storage_range(&self.ctx, what, t);
        let bind = self.binds.get(
            &self.ctx,
            STATS_SLOTS,
            &params,
            &[
                &r("moments", &moments)?,
                &r("running_mean", inputs.running_mean)?,
                &r("running_var", inputs.running_var)?,
                &r("saved", &saved)?,
            ],
        )?;
        let pipe = self.ctx.pipeline(&ibn_grad_stats_spec())?;
        self.reduce
            .encode_reduce_centred(encoder, inputs.x, view, &moments)?;
        let groups = (slots as u64).div_ceil(STATS_WG as u64);
        let (gx, gy) = binding::grid(&self.ctx, groups);
        binding::dispatch(encoder, "wgnorm ibn_grad_stats", &pipe, &bind, (gx, gy, 1));
        self.grad.encode(encoder, &args)
    }

    /// The statistics pass's parameter block: the view's dims, eps and the term's parameters.
    fn stats_params(&self, v: &ChannelView, term: [u32; 2]) -> ChannelGradParams {
        ChannelGradParams {
            p: v.p as u32,
            q: v.q as u32,
            r: v.r as u32,
            s: v.s as u32,
            cg: v.cg as u32,
            sdiv: v.sdiv as u32,
            tiles: 1,
            tile_len: 1,
            eps: self.eps,
            total: v.numel() as u32,
            group_base: 0,
            x_base: 0,
            group_end: u32::MAX,
            selu_alpha: 0.0,
            selu_lambda: 0.0,
            norm_target: 1.0,
            term_a: term[0],
            term_b: term[1],
            _pad0: 0,
            _pad1: 0,
        }
    }
}

/// Tensors allocated by [`crate::IbnNorm::backward`].
#[derive(Clone, Debug)]
pub struct IbnGrads {
    /// Gradient of x.
    pub dx: Tensor,
    /// Gradient of the weight (f32 `[C]`).
    pub dweight: Tensor,
    /// Gradient of the bias (f32 `[C]`).
    pub dbias: Tensor,
}

impl crate::IbnNorm {
    /// Records the backward of a `mode` forward into the caller's encoder: the first `half`
    /// channels through their per-(sample, channel) statistics (InstanceNorm's backward), the
    /// others through the channel's batch statistics in training (BatchNorm's) or with the
    /// running statistics as constants at inference (`dx = dy w rstd`). Fixed-order sums:
    /// bitwise reproducible. Checked first; nothing is recorded on error.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &IbnGradInputs,
        outputs: &IbnGradOutputs,
        mode: Mode,
    ) -> Result<()> {
        let view = ChannelView::instance_norm(inputs.x.shape(), self.grad.layout)?;
        let half = self.half(view.channels());
        self.grad.encode(encoder, inputs, outputs, (half, mode))
    }

    /// Allocates dx, dweight and dbias, encodes the backward and submits (does not wait).
    pub fn backward(&self, inputs: &IbnGradInputs, mode: Mode) -> Result<IbnGrads> {
        let ctx = &self.grad.ctx;
        let view = ChannelView::instance_norm(inputs.x.shape(), self.grad.layout)?;
        let c = view.channels();
        let g = IbnGrads {
            dx: ctx.empty(inputs.x.shape(), self.grad.dtype)?,
            dweight: ctx.empty(&[c], DType::F32)?,
            dbias: ctx.empty(&[c], DType::F32)?,
        };
        let outputs = IbnGradOutputs {
            dx: &g.dx,
            dweight: Some(&g.dweight),
            dbias: Some(&g.dbias),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, inputs, &outputs, mode))?;
        Ok(g)
    }
}
