//! Pipeline planning of the channel engine: which kernels, access types and override constants a
//! call records, as a pure function of typed inputs ([`EngineConfig`], [`CallShape`],
//! [`ViewFacts`], the adapter's CPU-ness). The runtime calls [`plan`] for every call;
//! [`specializations`] calls the same function over the whole input space, so the list that
//! `cargo xtask validate` translates cannot drift from what the runtime creates.

use super::{ChannelView, LanePlan, Reduction, RunningUpdate, Statistics};
use crate::context::Slot;
use crate::shader::{snippet, Io, Kernel, Specialization};
use crate::{Activation, DType};

pub(crate) const MOMENTS_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::Read];
pub(crate) const FINALIZE_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // partials
    Slot::Read,      // weight
    Slot::Read,      // bias
    Slot::ReadWrite, // running_mean
    Slot::ReadWrite, // running_var
    Slot::ReadWrite, // stats
    Slot::ReadWrite, // scale_shift
    Slot::Read,      // batches
];
pub(crate) const APPLY_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // x
    Slot::Read,      // coefficients
    Slot::ReadWrite, // y
    Slot::ReadWrite, // num_batches_tracked
    Slot::Read,      // aux (an epilogue's per-call input)
    Slot::Read,      // coefficients as vec4 (the same range)
];
pub(crate) const MERGE_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
pub(crate) const RUNNING_SLOTS: &[Slot] =
    &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite];

/// Phase 1: partial moments per (slot, tile).
pub const MOMENTS_KERNEL: Kernel = Kernel::new(
    "channel_norm/moments",
    &[
        snippet::MOMENTS,
        snippet::WG_MOMENTS,
        snippet::CHANNEL_COMMON,
        crate::shader_file!("channel_norm/moments.wgsl"),
        snippet::CHUNK,
    ],
    MOMENTS_SLOTS,
);
/// Phase 2: merge, running statistics, scale and shift per (p, channel).
pub const FINALIZE_KERNEL: Kernel = Kernel::new(
    "channel_norm/finalize",
    &[
        snippet::MOMENTS,
        snippet::CHANNEL_COMMON,
        crate::shader_file!("channel_norm/finalize.wgsl"),
    ],
    FINALIZE_SLOTS,
);
/// The apply pass's body; an apply kernel is `[ACTIVATION, CHANNEL_COMMON, <epilogue>,
/// APPLY_BODY]` (see [`Epilogue::new`]).
pub const APPLY_BODY: &str = crate::shader_file!("channel_norm/apply.wgsl");

/// Phase 3 with the engine's own epilogue: `y = act((x - mean) * scale + shift)`.
pub const APPLY_KERNEL: Kernel = Epilogue::AFFINE.kernel;

/// Partial moments merged into one (count, mean, M2) per slot.
pub const MERGE_KERNEL: Kernel = Kernel::new(
    "channel_norm/merge",
    &[
        snippet::MOMENTS,
        snippet::CHANNEL_COMMON,
        crate::shader_file!("channel_norm/merge.wgsl"),
    ],
    MERGE_SLOTS,
);
/// Running statistics from per-(p, channel) moments, averaged or in sequence over p.
pub const RUNNING_KERNEL: Kernel = Kernel::new(
    "channel_norm/instance_running",
    &[
        snippet::MOMENTS,
        snippet::CHANNEL_COMMON,
        crate::shader_file!("channel_norm/instance_running.wgsl"),
    ],
    RUNNING_SLOTS,
);

/// Lanes per workgroup of the finalize, merge and running-statistics passes.
pub(crate) const FINALIZE_WG: u32 = 64;
/// Lanes per workgroup of the apply pass.
pub(crate) const APPLY_WG: u32 = 256;
/// Accesses per invocation of the apply pass on CPU adapters (a contiguous block per lane).
pub(crate) const APPLY_CPU_BLOCK: u32 = 16;

/// Lanes per workgroup of the moments pass: one 8-lane SIMD chunk on CPU adapters.
pub(crate) fn moments_wg(cpu: bool) -> u32 {
    if cpu {
        8
    } else {
        256
    }
}

/// The engine's configuration: what is fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EngineConfig {
    /// What the slot statistics are.
    pub reduction: Reduction,
    /// eps outside the square root.
    pub eps_outside: bool,
    /// Normalize with the unbiased variance.
    pub unbiased_norm: bool,
    /// Weight and bias per slot instead of per channel.
    pub affine_per_slot: bool,
    /// Storage type of x and y (arithmetic is f32).
    pub dtype: DType,
    /// Activation fused after the affine.
    pub activation: ActivationKey,
    /// Lane mapping (defaults follow the adapter).
    pub lanes: LanePlan,
}

/// An [`Activation`]'s pipeline constant (its kind; SELU's values travel in the uniform block).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActivationKey(u32);

impl ActivationKey {
    /// The key of an activation.
    pub fn of(a: Activation) -> ActivationKey {
        ActivationKey(a.code())
    }
}

/// The statistics of a call without its values (momenta, weights): what pipelines depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatKind {
    /// Batch statistics, with a running update (cumulative or not, unbiased or not) or none.
    Batch {
        /// `(cumulative, unbiased)` of the running update, if any.
        update: Option<(bool, bool)>,
    },
    /// The running statistics normalize.
    Running,
    /// Update the running statistics, then normalize with them.
    UpdatedRunning {
        /// Feed the unbiased variance.
        unbiased: bool,
        /// Feed the variance centred on the old running mean.
        estimated: bool,
    },
    /// A mix of running and batch statistics.
    Mixed,
    /// A quadratic mean (batch or running).
    QuadraticMean {
        /// Normalize with the running value.
        use_running: bool,
        /// Update the running value.
        update: bool,
    },
}

impl StatKind {
    /// The kind of these statistics.
    pub fn of(s: &Statistics) -> StatKind {
        match *s {
            Statistics::Batch(u) => StatKind::Batch {
                update: u.map(|u| (u.momentum.is_none(), u.unbiased)),
            },
            Statistics::Running => StatKind::Running,
            Statistics::UpdatedRunning {
                unbiased,
                estimated,
                ..
            } => StatKind::UpdatedRunning {
                unbiased,
                estimated,
            },
            Statistics::Mixed { .. } => StatKind::Mixed,
            Statistics::QuadraticMean {
                use_running,
                update,
            } => StatKind::QuadraticMean {
                use_running,
                update: update.is_some(),
            },
        }
    }

    /// The running-statistics update a call makes, as [`RunningUpdate`]'s flags:
    /// `(cumulative, unbiased)`.
    pub fn update(self) -> Option<(bool, bool)> {
        match self {
            StatKind::Batch { update } => update,
            StatKind::UpdatedRunning {
                unbiased,
                estimated,
            } => Some((false, unbiased && !estimated)),
            _ => None,
        }
    }

    const ALL: [StatKind; 15] = [
        StatKind::Batch { update: None },
        StatKind::Batch {
            update: Some((false, false)),
        },
        StatKind::Batch {
            update: Some((false, true)),
        },
        StatKind::Batch {
            update: Some((true, false)),
        },
        StatKind::Batch {
            update: Some((true, true)),
        },
        StatKind::Running,
        StatKind::UpdatedRunning {
            unbiased: false,
            estimated: false,
        },
        StatKind::UpdatedRunning {
            unbiased: true,
            estimated: false,
        },
        StatKind::UpdatedRunning {
            unbiased: false,
            estimated: true,
        },
        StatKind::UpdatedRunning {
            unbiased: true,
            estimated: true,
        },
        StatKind::Mixed,
        StatKind::QuadraticMean {
            use_running: false,
            update: false,
        },
        StatKind::QuadraticMean {
            use_running: true,
            update: false,
        },
        StatKind::QuadraticMean {
            use_running: false,
            update: true,
        },
        StatKind::QuadraticMean {
            use_running: true,
            update: true,
        },
    ];
}

impl From<RunningUpdate> for (bool, bool) {
    fn from(u: RunningUpdate) -> (bool, bool) {
        (u.momentum.is_none(), u.unbiased)
    }
}

/// The per-call input an epilogue reads (bound as `aux`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EpilogueInput {
    /// No per-call input.
    None,
    /// One f32.
    Scalar,
    /// One f32 per channel.
    PerChannel,
}

/// The epilogue of the apply pass: a WGSL snippet composed into the apply kernel, like the I/O
/// snippets. The engine's own is [`Epilogue::AFFINE`], `(x - mean) * scale + shift`; a method
/// declares its own (a scaled residual, a gate, a different denominator) in its family crate
/// with [`Epilogue::new`]. Two epilogues are the same when their kernels are.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue {
    /// The apply kernel composed with this epilogue.
    pub kernel: Kernel,
    /// Coefficient arrays per sample it reads: 3 (mean, scale, shift) from the finalize pass, or
    /// more, written by a mixing pass.
    pub coef_arrays: u32,
    /// Its per-call input.
    pub input: EpilogueInput,
    /// It computes `x - mean` (so the finalize pass may keep a shift apart from the mean).
    pub centred: bool,
}

impl PartialEq for Epilogue {
    fn eq(&self, other: &Self) -> bool {
        self.kernel == other.kernel
    }
}
impl Eq for Epilogue {}
impl std::hash::Hash for Epilogue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kernel.hash(state)
    }
}

impl Epilogue {
    /// The engine's `(x - mean) * scale + shift`.
    pub const AFFINE: Epilogue = Epilogue::new(
        "channel_norm/apply",
        &[
            snippet::ACTIVATION,
            snippet::CHANNEL_COMMON,
            crate::shader_file!("channel_norm/epilogue_affine.wgsl"),
            APPLY_BODY,
        ],
        3,
        EpilogueInput::None,
    );

    /// An epilogue from its apply kernel's name and parts: `[snippet::ACTIVATION,
    /// snippet::CHANNEL_COMMON, <the epilogue's WGSL>, APPLY_BODY]`. The snippet defines
    /// `COEF_ARRAYS`, `epilogue_extra(p, ch, c, k: Coefs) -> Coefs` and
    /// `epilogue(x: V, k: Coefs) -> V` (see `shaders/channel_norm/apply.wgsl`).
    pub const fn new(
        name: &'static str,
        parts: &'static [&'static str],
        coef_arrays: u32,
        input: EpilogueInput,
    ) -> Epilogue {
        Epilogue {
            kernel: Kernel::new(name, parts, APPLY_SLOTS),
            coef_arrays,
            input,
            centred: true,
        }
    }

    /// The same epilogue, declared as not reading the mean coefficient (a gate of x itself).
    pub const fn not_centred(self) -> Epilogue {
        Epilogue {
            centred: false,
            ..self
        }
    }
}

impl Default for Epilogue {
    fn default() -> Self {
        Epilogue::AFFINE
    }
}

/// A call's shape as far as pipelines are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallShape {
    /// The statistics' kind.
    pub stats: StatKind,
    /// A weight is bound.
    pub has_weight: bool,
    /// A bias is bound.
    pub has_bias: bool,
    /// The apply pass's epilogue.
    pub epilogue: Epilogue,
    /// A token mask is bound.
    pub mask: bool,
    /// Merged moments are given: no moments pass.
    pub given_moments: bool,
    /// x and y offsets allow vector accesses.
    pub aligned: bool,
    /// The call's lane plan ([`super::ChannelNorm::lanes_for`]: forced, tuned or default).
    pub lanes: LanePlan,
    /// Channels-last groups reduced per channel: the moments pass runs on the per-channel view
    /// (vector channel lanes) and the finalize merges each group's channels' tiles.
    pub grouped: bool,
}

/// The properties of a [`ChannelView`] its access types and lane mapping depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ViewFacts {
    /// S and the channel run are multiples of 4: vectors along s stay in one channel.
    pub one_channel: bool,
    /// Channels-last with a channel count that is a multiple of 4: one vector spans 4 channels.
    pub ch_vec: bool,
    /// Channel runs of at least 4 elements, not a multiple of 4, over a tensor whose length is.
    pub straddle: bool,
    /// One channel per slot and S = 1: a lane per channel is possible.
    pub token_view: bool,
    /// At least 8 slots along r (the default for lanes per channel).
    pub many_channels: bool,
}

impl ViewFacts {
    /// The facts of a view.
    pub fn of(v: &ChannelView) -> ViewFacts {
        let one_channel = v.sdiv.is_multiple_of(4) && v.s.is_multiple_of(4);
        let ch_vec = v.sdiv == 1 && v.channels().is_multiple_of(4) && v.channels() > 0;
        ViewFacts {
            one_channel,
            ch_vec,
            straddle: !one_channel && !ch_vec && v.sdiv >= 4 && v.numel().is_multiple_of(4),
            token_view: v.s == 1 && v.cg == 1,
            many_channels: v.r >= 8,
        }
    }

    fn all() -> impl Iterator<Item = ViewFacts> {
        (0..32u32).map(|b| ViewFacts {
            one_channel: b & 1 != 0,
            ch_vec: b & 2 != 0,
            straddle: b & 4 != 0,
            token_view: b & 8 != 0,
            many_channels: b & 16 != 0,
        })
    }
}

/// The pipelines of one call and the access types they use.
#[derive(Clone, Debug)]
pub struct ChannelPlan {
    /// Access type of the moments pass (vectors along s).
    pub io: Io,
    /// Access type of the apply pass.
    pub aio: Io,
    /// `None` when the statistics are not computed here (running or given).
    pub moments: Option<Specialization>,
    /// The finalize pass.
    pub finalize: Specialization,
    /// The apply pass.
    pub apply: Specialization,
    /// Lanes per channel in the moments pass (its dispatch size depends on it).
    pub channel_lanes: bool,
    /// Elements per access along the reduced axes in the moments pass (see `reduced_width`).
    pub reduced_width: u32,
    /// Accesses per lane of the apply pass.
    pub apply_block: u32,
    /// The apply pass maps channels-last vectors of four channels (see [`apply_invocations`]).
    pub ch_vec: bool,
}

/// Invocations of the apply pass over `total_v` accesses of `channels` channels, `block` per
/// invocation. Channels-last vectors (`ch_vec`) give each invocation `block` tokens of one
/// channel vector, so every channel vector's last block of tokens is an invocation of its own.
pub fn apply_invocations(total_v: u32, block: u32, ch_vec: bool, channels: usize) -> u64 {
    let block = block.max(1) as u64;
    if ch_vec {
        let cv = (channels / 4).max(1) as u64;
        cv * (total_v as u64 / cv).div_ceil(block)
    } else {
        (total_v as u64).div_ceil(block)
    }
}

/// Accesses per lane of the apply pass.
pub(crate) fn apply_block(lanes: &LanePlan, cpu: bool) -> u32 {
    lanes
        .apply_block
        .unwrap_or(if cpu { APPLY_CPU_BLOCK } else { 1 })
        .max(1)
}

/// Whether the moments pass maps one lane per channel.
pub(crate) fn channel_lanes(lanes: &LanePlan, f: &ViewFacts, mask: bool) -> bool {
    !mask && f.token_view && lanes.channel_lanes.unwrap_or(f.many_channels)
}

/// Whether the moments pass's channel lanes take four channels per vector access
/// (channels-last, C a multiple of 4, mean and variance without a mask).
pub(crate) fn vec_channel_lanes(
    reduction: Reduction,
    f: &ViewFacts,
    mask: bool,
    channel_lanes: bool,
) -> bool {
    channel_lanes && f.ch_vec && reduction == Reduction::MeanVariance && !mask
}

/// Access type of the moments pass (`vec_lanes`: see [`vec_channel_lanes`]).
pub(crate) fn moments_io(dtype: DType, f: &ViewFacts, aligned: bool, vec_lanes: bool) -> Io {
    Io {
        dtype,
        vec4: aligned && (f.one_channel || vec_lanes),
    }
}

/// Elements per access along the reduced axes in the moments pass: its tiles, windows and
/// uniform block count accesses of this width (vector channel lanes read one token per access).
pub(crate) fn reduced_width(io: Io, vec_lanes: bool) -> u32 {
    if vec_lanes {
        1
    } else {
        io.width()
    }
}

/// Access type of the apply pass, whether a vector spans channels, whether it straddles runs.
pub(crate) fn apply_io(dtype: DType, f: &ViewFacts, aligned: bool) -> (Io, bool, bool) {
    let vec4 = aligned && (f.one_channel || f.ch_vec || f.straddle);
    (
        Io { dtype, vec4 },
        vec4 && f.ch_vec && !f.one_channel,
        vec4 && f.straddle && !f.one_channel && !f.ch_vec,
    )
}

/// Whether a reduction's moments are taken of `x - shift` (mean and variance without a token
/// mask: the sums of squares of the other reductions need no shift).
pub(crate) fn shifted(reduction: Reduction, mask: bool) -> bool {
    reduction == Reduction::MeanVariance && !mask
}

/// The moments pass of a reduction (also the first half of [`super::ChannelNorm::encode_reduce`]).
pub(crate) fn moments_spec(
    reduction: Reduction,
    io: Io,
    cpu: bool,
    lanes: &LanePlan,
    mask: bool,
    channel_lanes: bool,
) -> Specialization {
    Specialization::new(MOMENTS_KERNEL, io)
        .set("WG", moments_wg(cpu))
        .set("REDUCE", reduction.moments_code())
        .flag("HAS_MASK", mask)
        .flag("LANE_BLOCK", lanes.lane_blocks.unwrap_or(cpu && io.vec4))
        .flag("CHANNEL_LANES", channel_lanes)
        .flag("SHIFTED", shifted(reduction, mask))
}

/// The apply pass (also [`super::ChannelNorm::encode_apply`]'s only pass).
pub(crate) fn apply_spec(
    aio: Io,
    block: u32,
    activation: ActivationKey,
    count_batch: bool,
    (ch_vec, straddle): (bool, bool),
    epilogue: Epilogue,
) -> Specialization {
    Specialization::new(epilogue.kernel, aio)
        .set("WG", APPLY_WG)
        .set("BLOCK", block)
        .set("ACT", activation.0)
        .flag("COUNT_BATCH", count_batch)
        .flag("CH_VEC", ch_vec)
        .flag("STRADDLE", straddle)
}

fn finalize_spec(e: &EngineConfig, c: &CallShape) -> Specialization {
    let update = c.stats.update();
    let (qm_running, qm_update) = match c.stats {
        StatKind::QuadraticMean {
            use_running,
            update,
        } => (use_running, update),
        _ => (false, false),
    };
    let moments_here = c.stats != StatKind::Running && !c.given_moments;
    Specialization::new(FINALIZE_KERNEL, Io::F32)
        .set("WG", FINALIZE_WG)
        .flag("SHIFTED", moments_here && shifted(e.reduction, c.mask))
        .flag("CENTRED", c.epilogue.centred)
        .flag("INFER", c.stats == StatKind::Running)
        .flag("UPDATE_RUNNING", update.is_some() || qm_update)
        .flag("UNBIASED_RUNNING", update.is_none_or(|u| u.1))
        .flag("QM_USE_RUNNING", qm_running)
        .flag("HAS_WEIGHT", c.has_weight)
        .flag("HAS_BIAS", c.has_bias)
        .set("REDUCE", e.reduction.code())
        .flag("EPS_OUTSIDE", e.eps_outside)
        .flag("MIX", c.stats == StatKind::Mixed)
        .flag("UNBIASED_NORM", e.unbiased_norm)
        .flag("AFFINE_PER_SLOT", e.affine_per_slot)
        .flag(
            "NORM_UPDATED",
            matches!(c.stats, StatKind::UpdatedRunning { .. }),
        )
        .flag(
            "EST_VAR",
            matches!(
                c.stats,
                StatKind::UpdatedRunning {
                    estimated: true,
                    ..
                }
            ),
        )
}

/// The pipelines of one [`super::ChannelNorm::encode`] call.
pub fn plan(e: &EngineConfig, c: &CallShape, f: &ViewFacts, cpu: bool) -> ChannelPlan {
    let (lanes, vec_lanes) = if c.grouped {
        (true, true)
    } else {
        let lanes = channel_lanes(&c.lanes, f, c.mask);
        (lanes, vec_channel_lanes(e.reduction, f, c.mask, lanes))
    };
    let io = moments_io(e.dtype, f, c.aligned, vec_lanes);
    let (aio, ch_vec, straddle) = apply_io(e.dtype, f, c.aligned);
    let block = apply_block(&c.lanes, cpu);
    let batch = c.stats != StatKind::Running && !c.given_moments;
    ChannelPlan {
        io,
        aio,
        moments: batch.then(|| moments_spec(e.reduction, io, cpu, &c.lanes, c.mask, lanes)),
        finalize: finalize_spec(e, c),
        apply: apply_spec(
            aio,
            block,
            e.activation,
            c.stats.update().is_some(),
            (ch_vec, straddle),
            c.epilogue,
        ),
        channel_lanes: lanes,
        reduced_width: reduced_width(io, vec_lanes),
        apply_block: block,
        ch_vec,
    }
}

/// The merge pass of [`super::ChannelNorm::encode_reduce`], after a moments pass that did
/// (`shifted`) or did not take moments of `x - shift`.
/// `keep_shift`: the shift is written apart from the moments (see
/// `ChannelNorm::encode_reduce_centred`).
pub(crate) fn merge_spec(shifted: bool, keep_shift: bool) -> Specialization {
    Specialization::new(MERGE_KERNEL, Io::F32)
        .set("WG", FINALIZE_WG)
        .flag("SHIFTED", shifted)
        .flag("KEEP_SHIFT", keep_shift)
}

/// The running-statistics pass of [`super::ChannelNorm::encode_running_from_moments`].
pub(crate) fn running_spec(sequential: bool) -> Specialization {
    Specialization::new(RUNNING_KERNEL, Io::F32)
        .set("WG", FINALIZE_WG)
        .flag("SEQUENTIAL", sequential)
}

/// Every pipeline the channel engine can create with its own epilogue, for `cargo xtask
/// validate`; [`specializations_with`] adds the family crates' epilogues.
pub fn specializations() -> Vec<Specialization> {
    specializations_with(&[Epilogue::AFFINE])
}

/// Every pipeline the channel engine can create with these epilogues. Each pass's
/// specialisation is made by the same functions [`plan`] composes, over the whole space of the
/// inputs that pass depends on (a pass's constants depend on a few of a call's facts, so the
/// passes are enumerated one by one rather than as one product).
pub fn specializations_with(epilogues: &[Epilogue]) -> Vec<Specialization> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut push = |s: Specialization| {
        if seen.insert(s.key()) {
            out.push(s);
        }
    };
    let facts: Vec<ViewFacts> = ViewFacts::all().collect();
    for dtype in [DType::F32, DType::F16] {
        for cpu in [false, true] {
            for lanes in LanePlan::ALL_FORCED {
                for f in &facts {
                    for aligned in [false, true] {
                        for mask in [false, true] {
                            let cl = channel_lanes(&lanes, f, mask);
                            for reduction in Reduction::ALL {
                                let vec = vec_channel_lanes(reduction, f, mask, cl);
                                let io = moments_io(dtype, f, aligned, vec);
                                push(moments_spec(reduction, io, cpu, &lanes, mask, cl));
                            }
                        }
                        let (aio, ch_vec, straddle) = apply_io(dtype, f, aligned);
                        let block = apply_block(&lanes, cpu);
                        for act in Activation::ALL {
                            for count_batch in [false, true] {
                                for &epilogue in epilogues {
                                    push(apply_spec(
                                        aio,
                                        block,
                                        ActivationKey::of(act),
                                        count_batch,
                                        (ch_vec, straddle),
                                        epilogue,
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for reduction in Reduction::ALL {
        for bits in 0..128u32 {
            let e = EngineConfig {
                reduction,
                eps_outside: bits & 1 != 0,
                unbiased_norm: bits & 2 != 0,
                affine_per_slot: bits & 4 != 0,
                dtype: DType::F32,
                activation: ActivationKey::of(Activation::None),
                lanes: LanePlan::default(),
            };
            for stats in StatKind::ALL {
                for &epilogue in epilogues {
                    let c = CallShape {
                        stats,
                        has_weight: bits & 8 != 0,
                        has_bias: bits & 16 != 0,
                        epilogue,
                        mask: bits & 32 != 0,
                        given_moments: bits & 64 != 0,
                        aligned: false,
                        lanes: LanePlan::default(),
                        grouped: false,
                    };
                    push(finalize_spec(&e, &c));
                }
            }
        }
    }
    for shifted in [false, true] {
        for keep in [false, true] {
            push(merge_spec(shifted, keep));
        }
    }
    for seq in [false, true] {
        push(running_spec(seq));
    }
    out
}
