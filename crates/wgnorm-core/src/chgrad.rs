//! The batch-statistics backward engine (BatchNorm, GroupNorm, InstanceNorm; NCHW and
//! channels-last through the forward's [`ChannelView`]): for an upstream gradient `dy`, the
//! gradients of `sum(y * dy)` with respect to x, the per-channel weight and bias, the SiLU after
//! the affine differentiated when the forward had it.
//!
//! Passes (`shaders/channel_grad/`): the slot statistics (the forward's saved ones, the running
//! ones, or a reduce pass of the forward engine), `partials` (per (sample, channel, tile): the
//! sums of dz and dz * xhat, workgroup tree sums), `finalize` (per slot the two coefficients of
//! dx, per channel dweight/dbias, summed in a fixed order), `dx` (elementwise). No atomics:
//! bitwise reproducible.

use crate::binding::{self, BindCache, BufferRange};
use crate::chnorm::split::{apply_spans, Budget, MomentsGroups, Span};
use crate::chnorm::{ChannelNorm, ChannelView};
use crate::context::Slot;
use crate::scratch::ScratchCache;
use crate::shader::{Io, Kernel, Specialization};
use crate::uniform::ChannelGradParams;
use crate::{Activation, Context, DType, Result, Tensor};

mod check;
mod term;
pub use term::{
    GradTerm, TermArgs, TermLen, DX_BODY, DX_HEAD, FINALIZE_BODY, FINALIZE_HEAD, PARTIALS_BODY,
    PARTIALS_HEAD,
};

const COMMON: &str = crate::shader_file!("channel_grad/common.wgsl");
const STATS: &str = crate::shader_file!("channel_grad/stats.wgsl");

/// partials: uniform, moments, running_mean, running_var, x, dy, weight, bias, partials.
pub const PARTIALS_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
];
/// finalize: uniform, moments, running_mean, running_var, partials, weight, coef, dweight (or
/// the gradient term's output, role 2), dbias.
pub const FINALIZE_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
];
/// dx: uniform, x, dy, weight, bias, coef, dx, term input.
pub const DX_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::Read,
];

/// Per (sample, channel, tile) sums of dz and dz * xhat (no gradient term).
pub const PARTIALS_KERNEL: Kernel = GradTerm::NONE.partials;
/// Per-slot dx coefficients and per-channel parameter gradients (no gradient term).
pub const FINALIZE_KERNEL: Kernel = GradTerm::NONE.finalize;
/// dx, elementwise (no gradient term).
pub const DX_KERNEL: Kernel = GradTerm::NONE.dx;

/// Lanes of a partials workgroup: 64 on CPU adapters (a workgroup is a loop there, each tree
/// level a pass over it), 256 on GPUs.
fn partials_wg(cpu: bool) -> u32 {
    if cpu {
        64
    } else {
        256
    }
}
const SMALL_WG: u32 = 64;

/// Where the backward's slot statistics come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GradStats {
    /// Recomputed from x by the forward engine's reduce pass (training, statistics not kept).
    Batch,
    /// The forward's saved `(mean, rstd)` pairs (training).
    Saved,
    /// The running statistics (BatchNorm inference): constants, dx = dy * w * rstd.
    Running,
}

impl GradStats {
    fn value(self) -> u32 {
        match self {
            GradStats::Batch => 0,
            GradStats::Saved => 1,
            GradStats::Running => 2,
        }
    }
}

/// The override constants of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GradShape {
    /// The statistics' source.
    pub stats: GradStats,
    /// A weight / bias is bound.
    pub weight: bool,
    /// A bias is bound.
    pub bias: bool,
    /// The activation after the affine ([`Activation::code`]; SELU's constants travel in the
    /// uniform block), differentiated.
    pub act: u32,
    /// dweight / dbias are written.
    pub dweight: bool,
    /// dbias is written.
    pub dbias: bool,
    /// A method's gradient term ([`GradTerm::NONE`]: none).
    pub term: GradTerm,
    /// What the forward divided by.
    pub norm: GradNorm,
}

/// The denominator of the differentiated forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GradNorm {
    /// `sqrt(var + eps)` after centring (BatchNorm, GroupNorm, InstanceNorm).
    #[default]
    Variance,
    /// `std + eps` after centring.
    StdPlusEps,
    /// The L2 norm, no centring (0 where the norm is 0).
    L2,
    /// The L1 norm, no centring.
    L1,
}

impl GradNorm {
    fn code(self) -> u32 {
        match self {
            GradNorm::Variance => 0,
            GradNorm::StdPlusEps => 1,
            GradNorm::L2 => 2,
            GradNorm::L1 => 3,
        }
    }

    /// The forward engine's reduction that gives this backward's statistics.
    fn reduction(self) -> crate::chnorm::Reduction {
        match self {
            GradNorm::Variance | GradNorm::StdPlusEps => crate::chnorm::Reduction::MeanVariance,
            GradNorm::L2 => crate::chnorm::Reduction::L2,
            GradNorm::L1 => crate::chnorm::Reduction::L1,
        }
    }
}

fn base(kernel: Kernel, io: Io, s: GradShape) -> Specialization {
    Specialization::new(kernel, io)
        .set("STATS", s.stats.value())
        .flag("HAS_WEIGHT", s.weight)
        .set("ACT", s.act)
        .set("NORM", s.norm.code())
}

/// The partials pipeline.
pub fn partials_spec(io: Io, s: GradShape, cpu: bool) -> Specialization {
    base(s.term.partials, io, s)
        .set("WG", partials_wg(cpu))
        .flag("LANE_BLOCK", cpu)
        .flag("HAS_BIAS", s.bias)
        .flag("TERM_PARTIALS", s.term.own_partials)
}

/// The finalize pipeline of a role (0: dx coefficients, 1: parameter gradients, 2: the
/// gradient term's own gradient; only role 2 is composed with the term).
pub fn finalize_spec(s: GradShape, role: u32) -> Specialization {
    let (centred, per_channel) = (s.term.centred, s.term.grad == TermLen::PerChannel);
    let slot_sums = role == 0 && s.term.own_slot_sums;
    let s = match role {
        1 => GradShape {
            stats: GradStats::Batch,
            weight: false,
            act: 0,
            term: GradTerm::NONE,
            ..s
        },
        2 => GradShape {
            bias: false,
            act: 0,
            dweight: false,
            dbias: false,
            ..s
        },
        _ => GradShape {
            dweight: false,
            dbias: false,
            // Role 0 is the term's only where it sums its own slots.
            term: if slot_sums { s.term } else { GradTerm::NONE },
            ..s
        },
    };
    base(s.term.finalize, Io::F32, s)
        .set("WG", SMALL_WG)
        .set("ROLE", role)
        .flag("THROUGH_STATS", s.stats != GradStats::Running)
        .flag("HAS_DWEIGHT", s.dweight)
        .flag("HAS_DBIAS", s.dbias)
        .flag("CENTRED", role != 0 || centred)
        .flag("TERM_PER_CHANNEL", role == 2 && per_channel)
        .flag("TERM_SLOT_SUMS", slot_sums)
}

/// Elements per invocation of the dx kernel.
fn dx_block(cpu: bool) -> u32 {
    if cpu {
        256
    } else {
        1
    }
}

/// The dx pipeline.
pub fn dx_spec(io: Io, s: GradShape, cpu: bool) -> Specialization {
    base(
        s.term.dx,
        io,
        GradShape {
            stats: GradStats::Batch,
            ..s
        },
    )
    .set("WG", SMALL_WG)
    .set("BLOCK", dx_block(cpu))
    .flag("HAS_BIAS", s.bias)
    .flag("TERM_G", s.term.own_g)
}

/// Every pipeline the engine can create without a gradient term, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    specializations_with(&[GradTerm::NONE])
}

/// Every pipeline the engine can create with each of `terms`.
pub fn specializations_with(terms: &[GradTerm]) -> Vec<Specialization> {
    let mut out = Vec::new();
    for (stats, act, term) in [GradStats::Batch, GradStats::Saved, GradStats::Running]
        .into_iter()
        .flat_map(|s| Activation::ALL.map(|a| (s, a.code())))
        .flat_map(|(s, a)| terms.iter().map(move |t| (s, a, *t)))
        // A method's term composes with no activation (the check refuses the others).
        .filter(|&(_, a, t)| a == 0 || t == GradTerm::NONE)
    {
        for bits in 0..16u32 {
            let b = |k: u32| bits & (1 << k) != 0;
            let s = GradShape {
                stats,
                weight: b(0),
                bias: b(1),
                act,
                dweight: b(2),
                dbias: b(3),
                term,
                norm: GradNorm::Variance,
            };
            for dtype in [DType::F32, DType::F16] {
                let io = Io { dtype, vec4: false };
                out.push(partials_spec(io, s, true));
                out.push(partials_spec(io, s, false));
                out.push(dx_spec(io, s, true));
                out.push(dx_spec(io, s, false));
            }
            out.push(finalize_spec(s, 0));
            out.push(finalize_spec(s, 1));
            if term != GradTerm::NONE {
                out.push(finalize_spec(s, 2));
            }
        }
    }
    // The other denominators: batch statistics, no affine, no activation.
    for norm in [GradNorm::StdPlusEps, GradNorm::L2, GradNorm::L1] {
        let s = GradShape {
            norm,
            ..GradShape::plain()
        };
        for dtype in [DType::F32, DType::F16] {
            let io = Io { dtype, vec4: false };
            for cpu in [false, true] {
                out.push(partials_spec(io, s, cpu));
                out.push(dx_spec(io, s, cpu));
            }
        }
        for role in 0..2 {
            out.push(finalize_spec(s, role));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.key()));
    out
}

impl GradShape {
    /// Batch statistics, nothing bound or written but dx.
    fn plain() -> GradShape {
        GradShape {
            stats: GradStats::Batch,
            weight: false,
            bias: false,
            act: 0,
            dweight: false,
            dbias: false,
            term: GradTerm::NONE,
            norm: GradNorm::Variance,
        }
    }
}

/// Tensors of one backward call over `view` (the forward's). `dy` and `dx` have x's shape and
/// dtype; `weight`, `bias`, `dweight`, `dbias`, `running_mean` and `running_var` are f32, one per
/// channel; `saved` the forward's f32 `(mean, rstd)` pairs, one per slot.
#[derive(Clone, Copy, Debug)]
pub struct ChannelGradArgs<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
    /// The forward's view of x.
    pub view: ChannelView,
    /// The statistics' source.
    pub stats: GradStats,
    /// The forward's weight; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// The forward's bias (needed only with the SiLU: it shifts z); `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// With [`GradStats::Saved`]: the forward's saved statistics.
    pub saved: Option<&'a Tensor>,
    /// With [`GradStats::Running`]: the running statistics.
    pub running_mean: Option<&'a Tensor>,
    /// With [`GradStats::Running`].
    pub running_var: Option<&'a Tensor>,
    /// Output: the gradient of x.
    pub dx: &'a Tensor,
    /// Output: the gradient of the weight, when wanted.
    pub dweight: Option<&'a Tensor>,
    /// Output: the gradient of the bias, when wanted.
    pub dbias: Option<&'a Tensor>,
    /// A method's gradient term, its input and output (`None`: the engine's own backward).
    pub term: Option<TermArgs<'a>>,
}

/// Bound ranges of a checked call.
struct Ranges {
    x: BufferRange,
    dy: BufferRange,
    weight: Option<BufferRange>,
    bias: Option<BufferRange>,
    saved: Option<BufferRange>,
    running_mean: Option<BufferRange>,
    running_var: Option<BufferRange>,
    dx: BufferRange,
    dweight: Option<BufferRange>,
    dbias: Option<BufferRange>,
    term_input: Option<BufferRange>,
    term_grad: Option<BufferRange>,
}

/// The bind groups of a call: per binding window the partials' (with their workgroups) and
/// dx's (with their invocations); the finalize roles once.
struct GradBinds {
    partials: Vec<(wgpu::BindGroup, u64)>,
    coef: wgpu::BindGroup,
    params: Option<wgpu::BindGroup>,
    term_grad: Option<wgpu::BindGroup>,
    dx: Vec<(wgpu::BindGroup, u64)>,
}

/// A batch-statistics backward bound to a device.
pub struct ChannelGrad {
    ctx: Context,
    eps: f32,
    dtype: DType,
    activation: Activation,
    /// An activation follows the affine: the backward goes through it (and binds the bias).
    activated: bool,
    /// What the forward divided by.
    norm: GradNorm,
    /// L1/L2 denominators: the norm the forward scaled each slot to.
    norm_target: f32,
    reduce: ChannelNorm,
    binds: BindCache,
    moments: ScratchCache,
    partials: ScratchCache,
    coef: ScratchCache,
}

impl ChannelGrad {
    /// The backward of a forward with `eps`, tensors of `dtype` and `activation` after the
    /// affine (`None` or `Silu`).
    /// Another activation is refused when a call is recorded (the forward op stays usable).
    pub fn new(
        ctx: &Context,
        eps: f32,
        dtype: DType,
        activation: Activation,
    ) -> Result<ChannelGrad> {
        Ok(ChannelGrad {
            ctx: ctx.clone(),
            eps,
            dtype,
            activation,
            activated: activation != Activation::None,
            norm: GradNorm::Variance,
            norm_target: 1.0,
            reduce: ChannelNorm::new(ctx, eps, dtype, Activation::None)?,
            binds: BindCache::default(),
            moments: ScratchCache::default(),
            partials: ScratchCache::default(),
            coef: ScratchCache::default(),
        })
    }

    /// Differentiates a forward that divided by `norm` (`std + eps`, an L2 or L1 norm) instead
    /// of `sqrt(var + eps)`; its statistics are recomputed by the matching reduction.
    pub fn with_norm(mut self, norm: GradNorm) -> Result<ChannelGrad> {
        self.reduce = ChannelNorm::new(&self.ctx, self.eps, self.dtype, Activation::None)?
            .with_reduction(norm.reduction());
        self.norm = norm;
        Ok(self)
    }

    /// With an L1/L2 [`GradNorm`]: the forward scaled each slot to norm `target`
    /// (`y = target * x / max(norm, eps)`, the forward engine's `with_norm_target`). A norm
    /// below eps (the `eps` of [`ChannelGrad::new`]) is a constant denominator there.
    pub fn with_norm_target(mut self, target: f32) -> Result<ChannelGrad> {
        // (0 is the target of an empty dim's slots: y = 0, and so is dx.)
        if !target.is_finite() || target < 0.0 {
            return Err(crate::Error::InvalidParameter {
                name: "norm target",
                value: target.to_string(),
                why: "must be finite and >= 0",
            });
        }
        self.norm_target = target;
        Ok(self)
    }

    /// Tiles of each (p, channel)'s `q * sdiv` elements, `target` elements each or the
    /// adapter's default.
    fn tiling(&self, v: &ChannelView, target: Option<usize>) -> (u32, u32) {
        let len = (v.q * v.sdiv).max(1);
        let target = target.unwrap_or(if self.ctx.is_cpu() {
            256 * 64
        } else {
            256 * 16
        });
        let tiles = len.div_ceil(target.max(1)).clamp(1, 256);
        (tiles as u32, len.div_ceil(tiles) as u32)
    }

    /// x (and dy, dx) of a view under the device's binding limits, in elements.
    fn budget(&self, v: &ChannelView) -> Budget {
        Budget::of(&self.ctx, v.numel() as u64, self.dtype.size())
    }

    /// The partials pass's dispatches, one per binding window of x and dy (see
    /// `chnorm::split`): its workgroups are `(p, channel, tile)` with the channel's elements
    /// the slot runs of a per-channel view. Tiles are the adapter's whatever the windows, so
    /// the sums do not depend on them; only where one tile of every channel of a sample does
    /// not fit a binding are they shortened (in `params`).
    fn partials_windows(
        &self,
        v: &ChannelView,
        params: &mut ChannelGradParams,
    ) -> Result<Vec<Span>> {
        let per_channel = ChannelView {
            r: v.channels(),
            s: v.sdiv,
            cg: 1,
            ..*v
        };
        let wg = partials_wg(self.ctx.is_cpu());
        loop {
            let (tiles, tile_len) = (params.tiles, params.tile_len);
            let groups = MomentsGroups::of(per_channel, (false, false), 1, (tiles, tile_len), wg);
            match groups.spans(self.budget(v)) {
                Err(crate::Error::TooLargeForBinding { .. })
                    if self.tiling(v, Some(tile_len as usize / 2)).1 < tile_len =>
                {
                    (params.tiles, params.tile_len) = self.tiling(v, Some(tile_len as usize / 2));
                    self.check_loop_budget(v, params.tiles)?;
                }
                r => return r,
            }
        }
    }

    /// Every check of [`ChannelGrad::encode`], recording nothing (for ops that record several
    /// passes and must fail before the first).
    pub fn check_args(&self, a: &ChannelGradArgs) -> Result<()> {
        let r = self.check(a)?;
        self.ctx.check_io(Io {
            dtype: self.dtype,
            vec4: false,
        })?;
        if a.view.numel() > 0 {
            let (_, mut params) = self.call_params(a, &r);
            self.partials_windows(&a.view, &mut params)?;
            apply_spans(self.budget(&a.view), dx_block(self.ctx.is_cpu()) as u64, 1)?;
        }
        Ok(())
    }

    /// Records the backward into `encoder`: the statistics (a reduce pass of x unless saved or
    /// running ones are given), partials, finalize and dx. Everything is checked and every bind
    /// group made first; nothing is recorded on error. An empty x records only the zeroing of
    /// dweight/dbias (sums over nothing).
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, a: &ChannelGradArgs) -> Result<()> {
        let r = self.check(a)?;
        let v = a.view;
        let ctx = &self.ctx;
        let io = Io {
            dtype: self.dtype,
            vec4: false,
        };
        ctx.check_io(io)?;
        let (shape, params) = self.call_params(a, &r);
        if v.numel() == 0 {
            return self.encode_empty(encoder, params, shape, &r, v.channels());
        }
        let moments = match a.stats {
            GradStats::Batch => {
                Some(
                    self.moments
                        .get(ctx, a.x.shape(), &[2 * v.slots(), 3], DType::F32)?,
                )
            }
            _ => None,
        };
        let mut params = params;
        let spans = [
            self.partials_windows(&v, &mut params)?,
            apply_spans(self.budget(&v), dx_block(ctx.is_cpu()) as u64, 1)?,
        ];
        let binds = self.bind_groups(a, &r, params, moments.as_ref(), &spans)?;
        let cpu = ctx.is_cpu();
        let pipes = [
            ctx.pipeline(&partials_spec(io, shape, cpu))?,
            ctx.pipeline(&finalize_spec(shape, 0))?,
            ctx.pipeline(&finalize_spec(shape, 1))?,
            ctx.pipeline(&dx_spec(io, shape, cpu))?,
        ];
        let term_pipe = match &binds.term_grad {
            Some(_) => Some(ctx.pipeline(&finalize_spec(shape, 2))?),
            None => None,
        };
        if let Some(m) = &moments {
            self.reduce.encode_reduce_centred(encoder, a.x, v, m)?;
        }
        let c = v.channels() as u64;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm channel_grad"),
            timestamp_writes: None,
        });
        let mut record = |pipe: &wgpu::ComputePipeline, bind: &wgpu::BindGroup, n: u64| {
            let (gx, gy) = binding::grid(ctx, n);
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        };
        for (bind, groups) in &binds.partials {
            record(&pipes[0], bind, *groups);
        }
        let slots = (v.slots() as u64).div_ceil(SMALL_WG as u64);
        record(&pipes[1], &binds.coef, slots);
        if let Some(bind) = &binds.params {
            record(&pipes[2], bind, c.div_ceil(SMALL_WG as u64));
        }
        if let (Some(pipe), Some(bind)) = (&term_pipe, &binds.term_grad) {
            record(
                pipe,
                bind,
                (shape.term.grad.of(c as usize) as u64).div_ceil(SMALL_WG as u64),
            );
        }
        for (bind, invocations) in &binds.dx {
            record(&pipes[3], bind, invocations.div_ceil(SMALL_WG as u64));
        }
        Ok(())
    }

    /// The override constants and parameter block of a checked call.
    fn call_params(&self, a: &ChannelGradArgs, r: &Ranges) -> (GradShape, ChannelGradParams) {
        let v = a.view;
        let shape = GradShape {
            stats: a.stats,
            weight: r.weight.is_some(),
            bias: r.bias.is_some() && self.activated,
            act: self.activation.code(),
            norm: self.norm,
            dweight: r.dweight.is_some(),
            dbias: r.dbias.is_some(),
            term: a.term.map_or(GradTerm::NONE, |t| t.term),
        };
        let (tiles, tile_len) = self.tiling(&v, None);
        let (selu_alpha, selu_lambda) = self.activation.selu_params();
        let params = ChannelGradParams {
            p: v.p as u32,
            q: v.q as u32,
            r: v.r as u32,
            s: v.s as u32,
            cg: v.cg as u32,
            sdiv: v.sdiv as u32,
            tiles,
            tile_len,
            eps: self.eps,
            total: v.numel() as u32,
            group_base: 0,
            x_base: 0,
            group_end: u32::MAX,
            selu_alpha,
            selu_lambda,
            norm_target: self.norm_target,
            term_a: a.term.map_or(0, |t| t.params[0]),
            term_b: a.term.map_or(0, |t| t.params[1]),
            _pad0: 0,
            _pad1: 0,
        };
        (shape, params)
    }

    /// The bind groups of the partials (one per span of `spans[0]`), finalize (the dx
    /// coefficients; the parameter gradients when dweight or dbias is wanted; the term's
    /// gradient when wanted) and dx (one per span of `spans[1]`) passes. `moments`: the reduce pass's output,
    /// when it runs.
    fn bind_groups(
        &self,
        a: &ChannelGradArgs,
        r: &Ranges,
        params: ChannelGradParams,
        moments: Option<&Tensor>,
        spans: &[Vec<Span>; 2],
    ) -> Result<GradBinds> {
        let ctx = &self.ctx;
        let v = a.view;
        let key = a.x.shape();
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw = [0, 1, 2].map(|i| binding::dummy_range(ctx.dummy_write(i)));
        let f32_range = |cache: &ScratchCache, what, len: usize| -> Result<BufferRange> {
            let t = cache.get(ctx, key, &[len.max(1)], DType::F32)?;
            binding::storage_range(ctx, what, &t)
        };
        // The statistics' source, bound at slots 1-3 of partials and finalize.
        let source = match (moments, &r.saved) {
            (Some(t), _) => binding::storage_range(ctx, "moments", t)?,
            (None, Some(s)) => s.clone(),
            (None, None) => dr.clone(),
        };
        let rm = r.running_mean.clone().unwrap_or_else(|| dr.clone());
        let rv = r.running_var.clone().unwrap_or_else(|| dr.clone());
        let len = v.p * v.channels() * params.tiles as usize * 4;
        let partials = f32_range(&self.partials, "partials", len)?;
        let coef = f32_range(&self.coef, "coef", v.slots() * 8)?;
        let weight = r.weight.clone().unwrap_or_else(|| dr.clone());
        let bias = r
            .bias
            .clone()
            .filter(|_| self.activated)
            .unwrap_or_else(|| dr.clone());
        // A term's own partials read its input in the bias's place (no activation with it).
        let partials_bias = match (a.term, &r.term_input) {
            (Some(t), Some(input)) if t.term.own_partials => input.clone(),
            _ => bias.clone(),
        };
        let total = v.numel() as u64;
        let eb = self.dtype.size();
        let win = |t: &BufferRange, s: &Span| s.bind(t, total, eb);
        let on = |s: &Span| ChannelGradParams {
            group_base: s.first as u32,
            group_end: (s.first + s.count) as u32,
            x_base: s.base as u32,
            ..params
        };
        let partials_binds = spans[0]
            .iter()
            .map(|s| {
                let (x, dy) = (win(&r.x, s), win(&r.dy, s));
                let ranges = [
                    &source,
                    &rm,
                    &rv,
                    &x,
                    &dy,
                    &weight,
                    &partials_bias,
                    &partials,
                ];
                Ok((
                    self.binds.get(ctx, PARTIALS_SLOTS, &on(s), &ranges)?,
                    s.count,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let coef_bind = self.binds.get(
            ctx,
            FINALIZE_SLOTS,
            &params,
            &[&source, &rm, &rv, &partials, &weight, &coef, &dw[1], &dw[2]],
        )?;
        let params_bind = self.finalize_params_bind(params, &partials, &coef, r)?;
        let term_bind = self.finalize_term_bind(params, [&source, &rm, &rv], &partials, r)?;
        let term_input = r.term_input.as_ref().unwrap_or(&dr);
        let dx_binds = spans[1]
            .iter()
            .map(|s| {
                let (x, dy, dx) = (win(&r.x, s), win(&r.dy, s), win(&r.dx, s));
                let pr = ChannelGradParams {
                    total: s.end as u32,
                    ..on(s)
                };
                let ranges = [&x, &dy, &weight, &bias, &coef, &dx, term_input];
                Ok((self.binds.get(ctx, DX_SLOTS, &pr, &ranges)?, s.count))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GradBinds {
            partials: partials_binds,
            coef: coef_bind,
            params: params_bind,
            term_grad: term_bind,
            dx: dx_binds,
        })
    }

    /// The bind group of the parameter-gradient role, when dweight or dbias is wanted.
    /// `coef`: the dx coefficients (their per-slot correction `e` is read).
    fn finalize_params_bind(
        &self,
        params: ChannelGradParams,
        partials: &BufferRange,
        coef: &BufferRange,
        r: &Ranges,
    ) -> Result<Option<wgpu::BindGroup>> {
        if r.dweight.is_none() && r.dbias.is_none() {
            return Ok(None);
        }
        let ctx = &self.ctx;
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw = [0, 1, 2].map(|i| binding::dummy_range(ctx.dummy_write(i)));
        Ok(Some(self.binds.get(
            ctx,
            FINALIZE_SLOTS,
            &params,
            &[
                &dr,
                &dr,
                &dr,
                partials,
                &dr,
                coef,
                r.dweight.as_ref().unwrap_or(&dw[1]),
                r.dbias.as_ref().unwrap_or(&dw[2]),
            ],
        )?))
    }

    /// The bind group of the gradient term's role, when its gradient is wanted: the statistics'
    /// source (`[moments, running_mean, running_var]`) and the partials in, the term's gradient
    /// out.
    fn finalize_term_bind(
        &self,
        params: ChannelGradParams,
        source: [&BufferRange; 3],
        partials: &BufferRange,
        r: &Ranges,
    ) -> Result<Option<wgpu::BindGroup>> {
        let Some(term_grad) = &r.term_grad else {
            return Ok(None);
        };
        let ctx = &self.ctx;
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw = [0, 1, 2].map(|i| binding::dummy_range(ctx.dummy_write(i)));
        Ok(Some(self.binds.get(
            ctx,
            FINALIZE_SLOTS,
            &params,
            &[
                source[0],
                source[1],
                source[2],
                partials,
                r.weight.as_ref().unwrap_or(&dr),
                &dw[0],
                term_grad,
                &dw[2],
            ],
        )?))
    }

    /// An empty x: dweight and dbias (one per channel) are zeros; nothing else is recorded.
    fn encode_empty(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        params: ChannelGradParams,
        shape: GradShape,
        r: &Ranges,
        c: usize,
    ) -> Result<()> {
        if c == 0 {
            return Ok(());
        }
        let dr = binding::dummy_range(self.ctx.dummy_read());
        let params = ChannelGradParams { p: 0, ..params };
        let dw0 = binding::dummy_range(self.ctx.dummy_write(0));
        if let Some(bind) = self.finalize_params_bind(params, &dr, &dw0, r)? {
            let pipe = self.ctx.pipeline(&finalize_spec(shape, 1))?;
            let (gx, gy) = binding::grid(&self.ctx, (c as u64).div_ceil(SMALL_WG as u64));
            binding::dispatch(encoder, "wgnorm channel_grad", &pipe, &bind, (gx, gy, 1));
        }
        if let Some(bind) = self.finalize_term_bind(params, [&dr, &dr, &dr], &dr, r)? {
            let pipe = self.ctx.pipeline(&finalize_spec(shape, 2))?;
            let groups = (shape.term.grad.of(c) as u64).div_ceil(SMALL_WG as u64);
            let (gx, gy) = binding::grid(&self.ctx, groups);
            binding::dispatch(encoder, "wgnorm channel_grad", &pipe, &bind, (gx, gy, 1));
        }
        Ok(())
    }
}
