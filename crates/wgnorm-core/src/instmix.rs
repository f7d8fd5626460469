//! The instance-statistics engine: normalizations whose statistics are built from per-instance
//! moments. One reduce pass over an instance (or token) view of x gives (count, mean, M2) per
//! (p, channel); a method's **mixing kernel** turns them into the apply pass's coefficients
//! (merging over p where the method needs batch statistics, and updating the method's GPU
//! state); the channel engine's apply pass writes y. x is read twice.
//!
//! The methods live in their family crates: each declares its mixing kernel (its own WGSL file
//! composed with [`MIX_COMMON`]) and its uniform block, checks its own tensors, and hands this
//! engine a [`Mixer`].

use crate::binding::{self, BindCache};
use crate::chnorm::{ChannelNorm, ChannelView, Epilogue, EpilogueInput, Layout};
use crate::context::Slot;
use crate::scratch::ScratchCache;
use crate::shader::{snippet, Specialization};
use crate::uniform::UniformBlock;
use crate::{Activation, Context, DType, Error, Result, Tensor};

/// The binding layout of every mixing kernel.
pub const MIX_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // instance moments
    Slot::Read,      // weight
    Slot::Read,      // bias
    Slot::Read,      // aux: a per-call input
    Slot::ReadWrite, // state a
    Slot::ReadWrite, // state b
    Slot::ReadWrite, // coefficients
    Slot::ReadWrite, // per-sample scratch (or a per-sample input bound in its place)
];

/// Lanes per workgroup of the mixing kernels (their `WG`).
pub const MIX_WG: u32 = 64;

/// The snippets a mixing kernel is composed with, in order, before its own body: moment merging,
/// a workgroup sum, and the bindings 1-8 with their helpers (`inst`, `batch_moments`,
/// `running_variance`, `set_coef`, `mix_channel`). The body declares its uniform struct (with
/// fields `n`, `c`, `eps`) as `params` at binding 0.
pub const MIX_COMMON: [&str; 3] = [
    snippet::MOMENTS,
    snippet::WG_SUM,
    crate::shader_file!("channel_norm/instance_mix.wgsl"),
];

/// How a mixing kernel is dispatched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixDispatch {
    /// One lane per channel.
    PerChannel,
    /// One workgroup for everything (methods whose state couples channels).
    OneWorkgroup,
}

/// A method's mixing pass for one call, made by the method after checking its own tensors.
#[derive(Clone, Debug)]
pub struct Mixer<P: UniformBlock> {
    /// The mixing kernel's pipeline (a kernel with layout [`MIX_SLOTS`]).
    pub spec: Specialization,
    /// Its uniform block.
    pub params: P,
    /// The apply pass's epilogue, reading the coefficient arrays the mixing kernel writes
    /// (`epilogue.coef_arrays` per sample) and no per-call input.
    pub epilogue: Epilogue,
    /// f32 scratch values per sample in the assignment slot (at least 1).
    pub per_sample: usize,
    /// How the mixing kernel is dispatched.
    pub dispatch: MixDispatch,
    /// Loop iterations of one lane (lavapipe stops a lane past 65535 in total).
    pub lane_iterations: u64,
}

/// The tensors of one call. weight and bias are f32 `[C]`.
#[derive(Clone, Copy, Debug)]
pub struct MixTensors<'a> {
    /// `(N, C, *)` in the engine's layout and dtype.
    pub x: &'a Tensor,
    /// Output: the shape and dtype of `x`.
    pub y: &'a Tensor,
    /// Scale (gamma) applied after normalizing.
    pub weight: &'a Tensor,
    /// Shift (beta) added after the scale.
    pub bias: &'a Tensor,
    /// The method's per-call input (read only).
    pub aux: Option<&'a Tensor>,
    /// The method's state, updated in place.
    pub state_a: Option<&'a Tensor>,
    /// The method's second state tensor, updated in place.
    pub state_b: Option<&'a Tensor>,
    /// A per-sample input bound in the scratch slot (read-write there: it may share a buffer with
    /// nothing else).
    pub per_sample_input: Option<&'a Tensor>,
}

/// `t` is present, f32 and has `len` elements; `what` names it in the error.
pub fn expect_f32(what: &str, t: Option<&Tensor>, len: usize) -> Result<()> {
    let t = t.ok_or_else(|| Error::InvalidParameter {
        name: "tensor",
        value: format!("{what}: None"),
        why: "this method needs the tensor",
    })?;
    if t.dtype() != DType::F32 || t.numel() != len {
        return Err(Error::ShapeMismatch {
            what: format!("{what} (f32)"),
            expected: vec![len],
            got: t.shape().to_vec(),
        });
    }
    Ok(())
}

/// The engine: a channel engine for the reduce and apply passes, and scratch per input shape.
pub struct InstanceMix {
    ctx: Context,
    layout: Layout,
    dtype: DType,
    engine: ChannelNorm,
    binds: BindCache,
    moments: ScratchCache,
    coef: ScratchCache,
    assign: ScratchCache,
}

impl InstanceMix {
    /// An engine for x in `layout` and `dtype`.
    pub fn new(ctx: &Context, layout: Layout, dtype: DType) -> Result<InstanceMix> {
        Ok(InstanceMix {
            ctx: ctx.clone(),
            layout,
            dtype,
            engine: ChannelNorm::new(ctx, 0.0, dtype, Activation::None)?,
            binds: BindCache::default(),
            moments: ScratchCache::default(),
            coef: ScratchCache::default(),
            assign: ScratchCache::default(),
        })
    }

    /// The instance view `[N, ., C, .]` of `x` in this engine's layout.
    pub fn view(&self, x: &Tensor) -> Result<ChannelView> {
        ChannelView::instance_norm(x.shape(), self.layout)
    }

    /// Records reduce (over the instance view), mix and apply.
    pub fn encode<P: UniformBlock>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        t: &MixTensors,
        mixer: &Mixer<P>,
    ) -> Result<()> {
        let view = self.view(t.x)?;
        let engine = &self.engine;
        self.encode_view(encoder, t, mixer, view, |enc, moments| {
            engine.encode_reduce(enc, t.x, view, moments)
        })
    }

    /// [`InstanceMix::encode`] over any view with one slot per (p, channel), the moments
    /// recorded by `reduce` into the given f32 `[slots, 3]` tensor (a masked token reduction,
    /// say).
    pub fn encode_view<P: UniformBlock>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        t: &MixTensors,
        mixer: &Mixer<P>,
        view: ChannelView,
        reduce: impl FnOnce(&mut wgpu::CommandEncoder, &Tensor) -> Result<()>,
    ) -> Result<()> {
        self.check(t, mixer, &view)?;
        if view.numel() == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let (n, c) = (view.p, view.r);
        let ncoef = mixer.epilogue.coef_arrays as usize;
        // Keyed by the input shape and the method's sizes.
        let mut key = t.x.shape().to_vec();
        key.extend([ncoef, mixer.per_sample]);
        let moments = self.moments.get(ctx, &key, &[n * c * 3], DType::F32)?;
        let coef = self.coef.get(ctx, &key, &[n * ncoef * c], DType::F32)?;
        let scratch = match t.per_sample_input {
            Some(input) => input.clone(),
            None => self
                .assign
                .get(ctx, &key, &[n * mixer.per_sample.max(1)], DType::F32)?,
        };
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let opt = |t: Option<&Tensor>, what| t.map(|t| r(t, what)).transpose();
        let (mr, wr, br, cr, ar) = (
            r(&moments, "moments")?,
            r(t.weight, "weight")?,
            r(t.bias, "bias")?,
            r(&coef, "coefficients")?,
            r(&scratch, "per-sample input")?,
        );
        let (vr, sa, sb) = (
            opt(t.aux, "aux")?,
            opt(t.state_a, "state")?,
            opt(t.state_b, "state")?,
        );
        let (xr, yr) = (r(t.x, "x")?, r(t.y, "y")?);
        binding::check_no_alias(&[
            ("x", Some(&xr), false),
            ("weight", Some(&wr), false),
            ("bias", Some(&br), false),
            ("aux", vr.as_ref(), false),
            ("per-sample input", t.per_sample_input.map(|_| &ar), true),
            ("state a", sa.as_ref(), true),
            ("state b", sb.as_ref(), true),
            ("y", Some(&yr), true),
        ])?;
        let pipeline = ctx.pipeline(&mixer.spec)?;
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw0 = binding::dummy_range(ctx.dummy_write(0));
        let dw1 = binding::dummy_range(ctx.dummy_write(1));
        let bind = self.binds.get(
            ctx,
            MIX_SLOTS,
            &mixer.params,
            &[
                &mr,
                &wr,
                &br,
                vr.as_ref().unwrap_or(&dr),
                sa.as_ref().unwrap_or(&dw0),
                sb.as_ref().unwrap_or(&dw1),
                &cr,
                &ar,
            ],
        )?;
        reduce(encoder, &moments)?;
        let (gx, gy) = match mixer.dispatch {
            MixDispatch::OneWorkgroup => (1, 1),
            MixDispatch::PerChannel => binding::grid(ctx, (c as u64).div_ceil(MIX_WG as u64)),
        };
        binding::dispatch(
            encoder,
            "wgnorm instance mix",
            &pipeline,
            &bind,
            (gx, gy, 1),
        );
        self.engine
            .encode_apply(encoder, t.x, t.y, view, &coef, mixer.epilogue)
    }

    /// The generic checks of a call: the view, y, weight and bias, the loop budget.
    fn check<P: UniformBlock>(
        &self,
        t: &MixTensors,
        mixer: &Mixer<P>,
        view: &ChannelView,
    ) -> Result<()> {
        if view.cg != 1 {
            return Err(Error::InvalidParameter {
                name: "view",
                value: format!("{view:?}"),
                why: "instance statistics need one channel per slot",
            });
        }
        t.x.expect_dtype("x", self.dtype)?;
        t.y.expect_dtype("y", self.dtype)?;
        t.y.expect_shape("y", t.x.shape())?;
        expect_f32("weight", Some(t.weight), view.r)?;
        expect_f32("bias", Some(t.bias), view.r)?;
        if mixer.epilogue.input != EpilogueInput::None || mixer.epilogue.coef_arrays < 3 {
            return Err(Error::InvalidParameter {
                name: "epilogue",
                value: mixer.epilogue.kernel.name().into(),
                why: "a mixing kernel's epilogue reads its coefficient arrays (at least 3) and no per-call input",
            });
        }
        if self.ctx.is_cpu()
            && view.numel() > 0
            && mixer.lane_iterations > crate::rownorm::CPU_LOOP_BUDGET
        {
            return Err(Error::InvalidParameter {
                name: "shape",
                value: format!("{:?}", t.x.shape()),
                why: "on a CPU adapter an invocation would loop past the driver's 65535-iteration limit",
            });
        }
        Ok(())
    }

    /// Storage type of x and y.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The context the engine records for.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}
