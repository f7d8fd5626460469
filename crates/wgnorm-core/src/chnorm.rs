//! Channel-statistics normalization, the engine behind BatchNorm, GroupNorm and InstanceNorm (and
//! the research methods built on them): statistics per slot of a `[P, Q, R, S]` view of x (see
//! [`ChannelView`]), then one multiply-add per element.
//!
//! Three dispatches in one compute pass: partial moments per (slot, tile) (skipped when the
//! running statistics normalize), a finalize pass per slot (Chan merge in a fixed order, running
//! statistics update, statistics and affine folded into a scale and shift per (p, channel)), and
//! the elementwise apply pass. Scratch buffers are allocated once per view and reused.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::binding::{self, BindCache};
use crate::context::Slot;
use crate::shader::{Io, Kernel, Specialization};
use crate::uniform::ChannelParams;
use crate::{Context, DType, Error, Result, Tensor};

/// x (row-major) seen as `[p, q, r, s]`, statistics per (p, r) over (q, s). Each slot covers
/// `cg` channels; element (p, q, r, s) belongs to channel `r * cg + s / sdiv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelView {
    pub p: usize,
    pub q: usize,
    pub r: usize,
    pub s: usize,
    pub cg: usize,
    pub sdiv: usize,
}

/// Memory layout of a `(N, C, *)` activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Channels first: `(N, C, *spatial)`.
    #[default]
    Nchw,
    /// Channels last: `(N, *spatial, C)`; no transpose pass is made.
    Nhwc,
}

fn split_nc(shape: &[usize], layout: Layout, what: &'static str) -> Result<(usize, usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::AxisOutOfRange {
            what,
            axis: 1,
            rank: shape.len(),
        });
    }
    let n = shape[0];
    Ok(match layout {
        Layout::Nchw => (n, shape[1], shape[2..].iter().product()),
        Layout::Nhwc => (
            n,
            shape[shape.len() - 1],
            shape[1..shape.len() - 1].iter().product(),
        ),
    })
}

impl ChannelView {
    /// BatchNorm: statistics per channel over N and the spatial dims.
    pub fn batch_norm(shape: &[usize], layout: Layout) -> Result<ChannelView> {
        let (n, c, hw) = split_nc(shape, layout, "batch_norm (input must be (N, C, *))")?;
        Ok(match layout {
            Layout::Nchw => ChannelView {
                p: 1,
                q: n,
                r: c,
                s: hw,
                cg: 1,
                sdiv: hw.max(1),
            },
            Layout::Nhwc => ChannelView {
                p: 1,
                q: n * hw,
                r: c,
                s: 1,
                cg: 1,
                sdiv: 1,
            },
        })
    }

    /// Ghost BatchNorm: statistics per (chunk of `ghost` consecutive samples, channel) over the
    /// chunk and the spatial dims. `ghost` must divide N.
    pub fn ghost_batch_norm(shape: &[usize], layout: Layout, ghost: usize) -> Result<ChannelView> {
        let (n, c, hw) = split_nc(shape, layout, "ghost_batch_norm (input must be (N, C, *))")?;
        if ghost == 0 || n % ghost != 0 {
            return Err(Error::InvalidParameter {
                name: "ghost_size",
                value: format!("{ghost} for a batch of {n}"),
                why: "must be >= 1 and divide the batch (a smaller last chunk is not supported: pad or drop it)",
            });
        }
        Ok(match layout {
            Layout::Nchw => ChannelView {
                p: n / ghost,
                q: ghost,
                r: c,
                s: hw,
                cg: 1,
                sdiv: hw.max(1),
            },
            Layout::Nhwc => ChannelView {
                p: n / ghost,
                q: ghost * hw,
                r: c,
                s: 1,
                cg: 1,
                sdiv: 1,
            },
        })
    }

    /// InstanceNorm: statistics per (sample, channel) over the spatial dims.
    pub fn instance_norm(shape: &[usize], layout: Layout) -> Result<ChannelView> {
        let (n, c, hw) = split_nc(shape, layout, "instance_norm (input must be (N, C, *))")?;
        Ok(match layout {
            Layout::Nchw => ChannelView {
                p: n,
                q: 1,
                r: c,
                s: hw,
                cg: 1,
                sdiv: hw.max(1),
            },
            Layout::Nhwc => ChannelView {
                p: n,
                q: hw,
                r: c,
                s: 1,
                cg: 1,
                sdiv: 1,
            },
        })
    }

    /// One slot per position of the other dims, reduced along `axis` alone (LpNorm).
    pub fn along_axis(shape: &[usize], axis: isize) -> Result<ChannelView> {
        let rank = shape.len();
        let a = if axis < 0 { axis + rank as isize } else { axis };
        if a < 0 || a >= rank as isize {
            return Err(Error::AxisOutOfRange {
                what: "lp_norm",
                axis,
                rank,
            });
        }
        let a = a as usize;
        let (pre, n, post) = (
            shape[..a].iter().product(),
            shape[a],
            shape[a + 1..].iter().product::<usize>(),
        );
        Ok(if post == 1 {
            // Contiguous rows: vector access along them.
            ChannelView {
                p: pre,
                q: 1,
                r: 1,
                s: n,
                cg: 1,
                sdiv: n.max(1),
            }
        } else {
            ChannelView {
                p: pre,
                q: n,
                r: post,
                s: 1,
                cg: 1,
                sdiv: 1,
            }
        })
    }

    /// One slot per position of the dims not in `axes`, reduced over `axes`
    /// (MeanVarianceNormalization). The dims must read as `[kept][reduced][kept][reduced]` (each
    /// block possibly empty), which covers every contiguous choice and NCHW's [0, 2, 3].
    pub fn over_axes(shape: &[usize], axes: &[isize]) -> Result<ChannelView> {
        let rank = shape.len();
        let mut reduced = vec![false; rank];
        for &ax in axes {
            let a = if ax < 0 { ax + rank as isize } else { ax };
            if a < 0 || a >= rank as isize {
                return Err(Error::AxisOutOfRange {
                    what: "mean_variance_norm",
                    axis: ax,
                    rank,
                });
            }
            reduced[a as usize] = true;
        }
        // Runs of kept / reduced dims and their sizes.
        let mut runs: Vec<(bool, usize)> = Vec::new();
        for (d, &red) in reduced.iter().enumerate() {
            match runs.last_mut() {
                Some((r, size)) if *r == red => *size *= shape[d],
                _ => runs.push((red, shape[d])),
            }
        }
        if runs.first().is_some_and(|r| r.0) {
            runs.insert(0, (false, 1));
        }
        if runs.len() > 4 {
            return Err(Error::InvalidParameter {
                name: "axes",
                value: format!("{axes:?}"),
                why: "reduced and kept dims alternate more than [kept][reduced][kept][reduced]: transpose first",
            });
        }
        let get = |i: usize| runs.get(i).map_or(1, |r| r.1);
        let s = get(3);
        Ok(ChannelView {
            p: get(0),
            q: get(1),
            r: get(2),
            s,
            cg: 1,
            sdiv: s.max(1),
        })
    }

    /// GroupNorm: statistics per (sample, group of C / groups channels) over those channels and
    /// the spatial dims. `groups` must divide C.
    pub fn group_norm(shape: &[usize], layout: Layout, groups: usize) -> Result<ChannelView> {
        let (n, c, hw) = split_nc(shape, layout, "group_norm (input must be (N, C, *))")?;
        if groups == 0 || c % groups != 0 {
            return Err(Error::InvalidParameter {
                name: "num_groups",
                value: groups.to_string(),
                why: "must be >= 1 and divide the channel count",
            });
        }
        let cg = c / groups;
        Ok(match layout {
            Layout::Nchw => ChannelView {
                p: n,
                q: 1,
                r: groups,
                s: cg * hw,
                cg,
                sdiv: hw.max(1),
            },
            Layout::Nhwc => ChannelView {
                p: n,
                q: hw,
                r: groups,
                s: cg,
                cg,
                sdiv: 1,
            },
        })
    }

    pub fn slots(&self) -> usize {
        self.p * self.r
    }
    pub fn channels(&self) -> usize {
        self.r * self.cg
    }
    pub fn numel(&self) -> usize {
        self.p * self.q * self.r * self.s
    }
    /// Elements each slot's statistics are taken over.
    pub fn count(&self) -> usize {
        self.q * self.s
    }
}

pub use crate::activation::Activation;

/// What the slot statistics are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Mean and variance: `y = (x - mean) * rstd` (then affine).
    #[default]
    MeanVariance,
    /// `y = x / ||x||_2` over the slot, 0 where the norm is 0.
    L2,
    /// `y = x / ||x||_1` over the slot, 0 where the norm is 0.
    L1,
    /// Quadratic mean without centring, `y = x / sqrt(mean(x^2) + eps)` (PowerNorm's batch
    /// statistic), optionally over the unmasked tokens only and with a running value.
    QuadraticMean,
}

impl Reduction {
    /// REDUCE of the finalize pass.
    fn code(self) -> f64 {
        match self {
            Reduction::MeanVariance => 0.0,
            Reduction::L2 => 1.0,
            Reduction::L1 => 2.0,
            Reduction::QuadraticMean => 3.0,
        }
    }

    /// REDUCE of the moments pass (a quadratic mean accumulates the sum of squares).
    fn moments_code(self) -> f64 {
        match self {
            Reduction::QuadraticMean => 1.0,
            other => other.code(),
        }
    }
}

/// A running-value update of the quadratic mean (PowerNorm): `phi += (psi2 - phi) * warm`
/// (`warm` = 1/t during warm-up, else 0), then `phi = (1 - momentum) phi + momentum psi2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QmUpdate {
    pub momentum: f32,
    pub warm: f32,
}

/// Which statistics normalize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Statistics {
    /// Statistics of this batch; optionally update running statistics (BatchNorm training).
    Batch(Option<RunningUpdate>),
    /// The running statistics (BatchNorm inference).
    Running,
    /// Update the running statistics from this batch (`r = (1 - momentum) r + momentum s`), then
    /// normalize with the **updated** running statistics. `estimated`: the variance fed to the
    /// running one is EstBN's `mean((x - rm_old)^2) = var_b + (mean_b - rm_old)^2` (centred on
    /// the old running mean, BCN's EstBN, NORMS.md A6); otherwise the unbiased or biased batch
    /// variance (adaptive BN with "adapted" statistics, A13).
    UpdatedRunning {
        momentum: f32,
        unbiased: bool,
        estimated: bool,
    },
    /// Test-time BN: `w_src * running + (1 - w_src) * batch` for the mean and the variance
    /// (batch variance unbiased); the running (source) statistics are read, not updated.
    Mixed { w_src: f32 },
    /// With [`Reduction::QuadraticMean`]: normalize with this batch's quadratic mean or (when
    /// `use_running`) the running value in `running_var` as it was before this step, and
    /// optionally update the running value.
    QuadraticMean {
        use_running: bool,
        update: Option<QmUpdate>,
    },
}

/// How running statistics are updated from a batch: `r = (1 - m) r + m s` (PyTorch convention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunningUpdate {
    /// `None`: cumulative moving average, `m = 1 / num_batches_tracked` (PyTorch momentum=None).
    pub momentum: Option<f32>,
    /// Feed the unbiased variance `n / (n - 1) var` to the running variance (PyTorch); else biased.
    pub unbiased: bool,
}

/// Tensors of one call. `weight`/`bias` are f32 with one value per channel;
/// `running_mean`/`running_var` are f32 with one value per slot of `r` (BatchNorm: per channel),
/// updated in place; `stats` receives `(mean, rstd)` f32 pairs per slot (`[slots, 2]`).
#[derive(Clone, Copy, Debug)]
pub struct ChannelNormArgs<'a> {
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    pub view: ChannelView,
    pub weight: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    pub running_mean: Option<&'a Tensor>,
    pub running_var: Option<&'a Tensor>,
    pub stats: Option<&'a Tensor>,
    pub statistics: Statistics,
    /// With `Statistics::Batch`: normalize with these merged moments (f32 `[slots, 3]`:
    /// count, mean, M2 per slot, see [`Moments`]) instead of this tensor's own; the running
    /// update uses them too. The seam for synchronised BatchNorm across devices.
    pub moments: Option<&'a Tensor>,
    /// An extra per-call input of the apply pass: RepBN's `alpha` or EvoNorm-S0's `v`.
    pub aux: Option<Aux<'a>>,
    /// Token padding mask, f32 `[B, T]` with 1 = padding, for token views `[1, T*B, C, 1]` of
    /// `x[T, B, C]` with a quadratic mean: padded tokens are left out of the statistics (they are
    /// still normalized).
    pub mask: Option<&'a Tensor>,
}

impl<'a> ChannelNormArgs<'a> {
    /// `x` to `y` in `view` with batch statistics and nothing else: no affine, no running
    /// statistics, no saved statistics, no merged moments, aux input or mask. Set the rest with
    /// struct update syntax: `ChannelNormArgs { weight, ..ChannelNormArgs::new(x, y, view) }`.
    pub fn new(x: &'a Tensor, y: &'a Tensor, view: ChannelView) -> ChannelNormArgs<'a> {
        ChannelNormArgs {
            x,
            y,
            view,
            weight: None,
            bias: None,
            running_mean: None,
            running_var: None,
            stats: None,
            statistics: Statistics::Batch(None),
            moments: None,
            aux: None,
            mask: None,
        }
    }
}

/// Extra inputs of the apply pass.
#[derive(Clone, Copy, Debug)]
pub enum Aux<'a> {
    /// RepBN: f32 `[1]` scalar; `y = norm(x) + alpha * x`.
    Alpha(&'a Tensor),
    /// EvoNorm-S0: f32 `[C]`; `y = x * sigmoid(v * x) * rstd * weight + bias` (no centring).
    EvoS0(&'a Tensor),
}

/// Mergeable per-slot statistics on the host: count, mean and M2 (sum of squared deviations).
/// GPU tensors of moments are f32 `[slots, 3]` in this order.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub count: Vec<f64>,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl Moments {
    /// From the f32 `[slots, 3]` layout of a downloaded moments tensor.
    pub fn from_f32(data: &[f32]) -> Moments {
        let g = |k: usize| data.iter().skip(k).step_by(3).map(|&v| v as f64).collect();
        Moments {
            count: g(0),
            mean: g(1),
            m2: g(2),
        }
    }

    /// The f32 `[slots, 3]` layout, for uploading merged moments.
    pub fn to_f32(&self) -> Vec<f32> {
        (0..self.count.len())
            .flat_map(|i| [self.count[i] as f32, self.mean[i] as f32, self.m2[i] as f32])
            .collect()
    }

    /// Chan et al.'s pairwise merge, slot by slot, in f64: the moments of the union of both
    /// sets of values. Associative, so any all-reduce tree gives the same result up to rounding.
    pub fn merge(&self, other: &Moments) -> Moments {
        let mut out = self.clone();
        for i in 0..self.count.len() {
            let (na, nb) = (self.count[i], other.count[i]);
            let n = na + nb;
            if n == 0.0 {
                continue;
            }
            let delta = other.mean[i] - self.mean[i];
            out.count[i] = n;
            out.mean[i] = self.mean[i] + delta * nb / n;
            out.m2[i] = self.m2[i] + other.m2[i] + delta * delta * na * nb / n;
        }
        out
    }

    /// Biased variance per slot.
    pub fn variance(&self) -> Vec<f64> {
        self.m2
            .iter()
            .zip(&self.count)
            .map(|(m, n)| m / n)
            .collect()
    }
}

const MOMENTS_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::Read];
const FINALIZE_SLOTS: &[Slot] = &[
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
const APPLY_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // x
    Slot::Read,      // coefficients
    Slot::ReadWrite, // y
    Slot::ReadWrite, // num_batches_tracked
    Slot::Read,      // aux (RepBN alpha, EvoNorm-S0 v)
    Slot::Read,      // coefficients as vec4 (the same range)
];

const MERGE_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
const FINALIZE_WG: u32 = 64;
const APPLY_WG: u32 = 256;
/// Accesses per invocation of the apply pass on CPU adapters (a contiguous block per lane).
const APPLY_CPU_BLOCK: u32 = 16;

/// Pipeline constants of the apply pass besides block size and activation.
#[derive(Clone, Copy)]
struct ApplyFlags {
    count_batch: bool,
    ch_vec: bool,
    straddle: bool,
    alpha: bool,
    evo_s0: bool,
    evo_b0: bool,
}

/// The outcome of [`ChannelNorm::validate`]: bound ranges and access types of a call.
struct Checked {
    x: binding::BufferRange,
    y: binding::BufferRange,
    w: Option<binding::BufferRange>,
    b: Option<binding::BufferRange>,
    rm: Option<binding::BufferRange>,
    rv: Option<binding::BufferRange>,
    st: Option<binding::BufferRange>,
    given: Option<binding::BufferRange>,
    al: Option<binding::BufferRange>,
    mk: Option<binding::BufferRange>,
    io: Io,
    aio: Io,
    ch_vec: bool,
    straddle: bool,
    update: Option<RunningUpdate>,
}

/// Scratch of one view: partial moments, per-slot statistics, per-(p, channel) scale/shift.
struct Scratch {
    tiles: u32,
    tile_len: u32,
    partials: Tensor,
    stats: Tensor,
    scale_shift: Tensor,
}

/// The engine: checks calls, owns scratch and the num_batches_tracked counter, records passes.
pub struct ChannelNorm {
    ctx: Context,
    eps: f32,
    reduction: Reduction,
    eps_outside: bool,
    unbiased_norm: bool,
    affine_per_slot: bool,
    norm_target: f32,
    dtype: DType,
    activation: Activation,
    batches: Tensor,
    scratch: Mutex<HashMap<ChannelView, std::sync::Arc<Scratch>>>,
    binds: BindCache,
    plan: LanePlan,
}

/// How the moments and apply passes map work to lanes; `None` fields follow the adapter (the
/// defaults).
/// Forcing them runs the other adapter class's code path, which is how the tests check on a
/// software rasterizer the paths a GPU takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LanePlan {
    /// Each lane reduces a contiguous block (default on CPU adapters) instead of every WG-th
    /// access (default on GPUs).
    pub lane_blocks: Option<bool>,
    /// Views with S = 1 use one lane per channel (default when there are at least 8 channels).
    pub channel_lanes: Option<bool>,
    /// Accesses per lane of the apply pass (default 16 on CPU adapters, 1 on GPUs).
    pub apply_block: Option<u32>,
}

fn moments_wg(ctx: &Context) -> u32 {
    if ctx.is_cpu() {
        8
    } else {
        256
    }
}

impl ChannelNorm {
    pub fn new(
        ctx: &Context,
        eps: f32,
        dtype: DType,
        activation: Activation,
    ) -> Result<ChannelNorm> {
        crate::check_eps(eps)?;
        ctx.check_dtype(dtype)?;
        let batches = ctx.upload_f32(&[0.0; 4], &[4])?;
        Ok(ChannelNorm {
            ctx: ctx.clone(),
            eps,
            reduction: Reduction::MeanVariance,
            eps_outside: false,
            unbiased_norm: false,
            affine_per_slot: false,
            norm_target: 1.0,
            dtype,
            activation,
            batches,
            scratch: Mutex::default(),
            binds: BindCache::default(),
            plan: LanePlan::default(),
        })
    }

    /// Overrides the lane mapping of the moments and apply passes (see [`LanePlan`]).
    pub fn with_lane_plan(mut self, plan: LanePlan) -> ChannelNorm {
        self.plan = plan;
        self
    }

    /// The apply pass's pipeline for this engine's block size and activation.
    fn apply_pipeline(&self, aio: Io, f: ApplyFlags) -> Result<wgpu::ComputePipeline> {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let act = self.activation.constants();
        self.ctx.pipeline(
            Kernel::ChannelApply,
            aio,
            APPLY_SLOTS,
            &[
                ("WG", APPLY_WG as f64),
                ("BLOCK", self.apply_block() as f64),
                ("ACT", act[0].1),
                ("SELU_ALPHA", act[1].1),
                ("SELU_LAMBDA", act[2].1),
                ("COUNT_BATCH", flag(f.count_batch)),
                ("CH_VEC", flag(f.ch_vec)),
                ("STRADDLE", flag(f.straddle)),
                ("HAS_ALPHA", flag(f.alpha)),
                ("EVO_S0", flag(f.evo_s0)),
                ("EVO_B0", flag(f.evo_b0)),
            ],
        )
    }

    fn apply_block(&self) -> u32 {
        self.plan
            .apply_block
            .unwrap_or(if self.ctx.is_cpu() {
                APPLY_CPU_BLOCK
            } else {
                1
            })
            .max(1)
    }

    fn lane_blocks(&self) -> bool {
        self.plan.lane_blocks.unwrap_or(self.ctx.is_cpu())
    }

    fn channel_lanes(&self, view: &ChannelView) -> bool {
        view.s == 1 && view.cg == 1 && self.plan.channel_lanes.unwrap_or(view.r >= 8)
    }

    /// The coefficients bound again as `array<vec4<f32>>` need at least one vector; shorter ranges
    /// (a single channel) never take the vector path and bind the dummy instead.
    fn vec4_view<'a>(
        r: &'a binding::BufferRange,
        dummy: &'a binding::BufferRange,
    ) -> &'a binding::BufferRange {
        if r.size >= 16 {
            r
        } else {
            dummy
        }
    }

    /// Workgroups of the moments pass.
    fn moments_groups(&self, view: &ChannelView, tiles: u32, wg: u32, masked: bool) -> u64 {
        if !masked && self.channel_lanes(view) {
            (view.p * view.r.div_ceil(wg as usize)) as u64 * tiles as u64
        } else {
            view.slots() as u64 * tiles as u64
        }
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Normalizes by an L1/L2 norm instead of mean and variance (LpNorm).
    pub fn with_reduction(mut self, reduction: Reduction) -> ChannelNorm {
        self.reduction = reduction;
        self
    }

    /// L1/L2 reductions scale each slot to this norm instead of 1 (SinkGD's sqrt(n)); with
    /// `eps > 0` the norm is clamped at eps from below instead of mapping 0 to 0.
    pub fn with_norm_target(mut self, target: f32) -> ChannelNorm {
        self.norm_target = target;
        self
    }

    /// Weight and bias have one value per slot `r` (per group) instead of per channel
    /// (Batch-Channel Normalization's group affine).
    pub fn with_affine_per_slot(mut self, per_slot: bool) -> ChannelNorm {
        self.affine_per_slot = per_slot;
        self
    }

    /// Normalize with the unbiased variance `n / (n - 1) var` (Weight Standardization).
    pub fn with_unbiased_variance(mut self, unbiased: bool) -> ChannelNorm {
        self.unbiased_norm = unbiased;
        self
    }

    /// `1 / (sqrt(var) + eps)` instead of `1 / sqrt(var + eps)` (MeanVarianceNormalization).
    pub fn with_eps_outside_sqrt(mut self, outside: bool) -> ChannelNorm {
        self.eps_outside = outside;
        self
    }

    /// The num_batches_tracked counter (a u32 in the first word), advanced by every call that
    /// updates running statistics.
    pub fn batches_tracked(&self) -> &Tensor {
        &self.batches
    }

    fn scratch(&self, view: ChannelView) -> Result<std::sync::Arc<Scratch>> {
        if let Some(s) = self.scratch.lock().unwrap().get(&view) {
            return Ok(s.clone());
        }
        let wg = moments_wg(&self.ctx) as usize;
        let io = self.io_for(&view, true);
        let per_slot = (view.count() / io.width() as usize).max(1);
        // Tiles of about 16 accesses per lane: enough workgroups to fill the device, few enough
        // partials that the finalize merge stays cheap (and inside CPU loop budgets). With one
        // lane per channel, a lane walks its whole tile.
        let target = match (self.channel_lanes(&view), self.ctx.is_cpu()) {
            (true, true) => 4096,
            (true, false) => 256,
            (false, true) => wg * 256,
            (false, false) => wg * 16,
        };
        let tiles = per_slot.div_ceil(target).clamp(1, 4096) as u32;
        let tile_len = per_slot.div_ceil(tiles as usize) as u32;
        let slots = view.slots().max(1);
        let s = std::sync::Arc::new(Scratch {
            tiles,
            tile_len,
            partials: self.ctx.empty(&[slots * tiles as usize * 3], DType::F32)?,
            stats: self.ctx.empty(&[slots * 2], DType::F32)?,
            scale_shift: self
                .ctx
                .empty(&[view.p * view.channels() * 3], DType::F32)?,
        });
        self.scratch.lock().unwrap().insert(view, s.clone());
        Ok(s)
    }

    /// Access type of the apply pass, and whether one access spans VW channels (channels-last
    /// with C a multiple of 4) rather than lying in one channel.
    /// Also whether vector accesses straddle channel runs (runs of at least 4 elements that are
    /// not a multiple of 4 long, e.g. 7x7 maps, over a tensor whose length is).
    fn apply_io(&self, view: &ChannelView, aligned: bool) -> (Io, bool, bool) {
        let one_channel = view.sdiv.is_multiple_of(4) && view.s.is_multiple_of(4);
        let ch_vec = view.sdiv == 1 && view.channels().is_multiple_of(4) && view.channels() > 0;
        let straddle = !one_channel && !ch_vec && view.sdiv >= 4 && view.numel().is_multiple_of(4);
        let vec4 = aligned && (one_channel || ch_vec || straddle);
        (
            Io {
                dtype: self.dtype,
                vec4,
            },
            vec4 && ch_vec && !one_channel,
            vec4 && straddle,
        )
    }

    /// Access type of the moments pass: vectors along s.
    fn io_for(&self, view: &ChannelView, aligned: bool) -> Io {
        let vec4 = aligned && view.s.is_multiple_of(4) && view.sdiv.is_multiple_of(4);
        Io {
            dtype: self.dtype,
            vec4,
        }
    }

    fn check(&self, what: &str, t: &Tensor, numel: usize, dtype: DType) -> Result<()> {
        if t.numel() != numel {
            return Err(Error::ShapeMismatch {
                what: what.into(),
                expected: vec![numel],
                got: t.shape().to_vec(),
            });
        }
        if t.dtype() != dtype {
            return Err(Error::DTypeMismatch {
                what: what.into(),
                expected: dtype,
                got: t.dtype(),
            });
        }
        Ok(())
    }

    /// Checks a call without recording anything (what [`ChannelNorm::encode`] checks first), so a
    /// caller recording several passes can fail before the first.
    pub fn check_args(&self, a: &ChannelNormArgs) -> Result<()> {
        self.validate(a).map(|_| ())
    }

    /// Every check of a call; the bound ranges and access types, or `None` for an empty tensor.
    fn validate(&self, a: &ChannelNormArgs) -> Result<Option<Checked>> {
        let v = a.view;
        if v.cg == 0 || v.sdiv == 0 || (v.s != 0 && v.s != v.cg * v.sdiv) {
            return Err(Error::InvalidParameter {
                name: "view",
                value: format!("{v:?}"),
                why: "inconsistent channel view",
            });
        }
        self.check("x", a.x, v.numel(), self.dtype)?;
        if a.y.shape() != a.x.shape() {
            return Err(Error::ShapeMismatch {
                what: "y".into(),
                expected: a.x.shape().to_vec(),
                got: a.y.shape().to_vec(),
            });
        }
        self.check("y", a.y, v.numel(), self.dtype)?;
        let affine_len = if self.affine_per_slot {
            v.r
        } else {
            v.channels()
        };
        for (what, t) in [("weight", a.weight), ("bias", a.bias)] {
            if let Some(t) = t {
                self.check(what, t, affine_len, DType::F32)?;
            }
        }
        let (needs_running, update) = match a.statistics {
            Statistics::Running => (true, None),
            Statistics::Batch(u) => (u.is_some(), u),
            Statistics::UpdatedRunning {
                momentum,
                unbiased,
                estimated,
            } => {
                crate::check_unit_interval("momentum", momentum)?;
                (
                    true,
                    Some(RunningUpdate {
                        momentum: Some(momentum),
                        unbiased: unbiased && !estimated,
                    }),
                )
            }
            Statistics::QuadraticMean {
                use_running,
                update,
            } => {
                if self.reduction != Reduction::QuadraticMean {
                    return Err(Error::InvalidParameter {
                        name: "statistics",
                        value: "QuadraticMean".into(),
                        why: "needs an engine created with Reduction::QuadraticMean",
                    });
                }
                if (use_running || update.is_some()) && a.running_var.is_none() {
                    return Err(Error::InvalidParameter {
                        name: "running statistics",
                        value: "running_var missing".into(),
                        why: "the running quadratic mean lives in running_var: pass it",
                    });
                }
                (false, None)
            }
            Statistics::Mixed { w_src } => {
                crate::check_unit_interval("w_src", w_src)?;
                if v.count() < 2 && v.numel() > 0 {
                    return Err(Error::InvalidParameter {
                        name: "batch",
                        value: "1 value per channel".into(),
                        why:
                            "the unbiased test-batch variance needs more than one value per channel",
                    });
                }
                (true, None)
            }
        };
        match a.aux {
            Some(Aux::Alpha(t)) => self.check("alpha", t, 1, DType::F32)?,
            Some(Aux::EvoS0(t)) => self.check("v", t, v.channels(), DType::F32)?,
            None => {}
        }
        // A quadratic mean has no running mean: only its running_var is read.
        let qm_running = self.reduction == Reduction::QuadraticMean;
        for (what, t) in [
            ("running_mean", a.running_mean),
            ("running_var", a.running_var),
        ] {
            match t {
                Some(t) => self.check(what, t, v.r, DType::F32)?,
                None if needs_running && !(qm_running && what == "running_mean") => {
                    return Err(Error::InvalidParameter {
                        name: "running statistics",
                        value: format!("{what} missing"),
                        why: "running statistics are read (inference) or updated (training): pass running_mean and running_var",
                    })
                }
                None => {}
            }
        }
        if let Some(s) = a.stats {
            self.check("stats", s, v.slots() * 2, DType::F32)?;
        }
        if let Some(m) = a.mask {
            let ok = self.reduction == Reduction::QuadraticMean
                && v.p == 1
                && v.s == 1
                && m.shape().len() == 2
                && m.numel() == v.q
                && m.shape()[0] > 0;
            if !ok {
                return Err(Error::InvalidParameter {
                    name: "mask",
                    value: format!("{:?}", m.shape()),
                    why: "a padding mask is [B, T] for a token tensor [T, B, C] with a quadratic mean",
                });
            }
            self.check("mask", m, v.q, DType::F32)?;
        }
        if let Some(m) = a.moments {
            self.check("moments", m, v.slots() * 3, DType::F32)?;
            if !matches!(a.statistics, Statistics::Batch(_)) {
                return Err(Error::InvalidParameter {
                    name: "moments",
                    value: "with running or mixed statistics".into(),
                    why: "merged moments replace batch statistics: use Statistics::Batch",
                });
            }
        }
        if let Some(u) = update {
            if let Some(m) = u.momentum {
                crate::check_unit_interval("momentum", m)?;
            }
            if u.unbiased && v.count() == 1 && v.numel() > 0 {
                return Err(Error::InvalidParameter {
                    name: "batch",
                    value: "1 value per channel".into(),
                    why: "training needs more than one value per channel to estimate the unbiased variance (as in PyTorch)",
                });
            }
        }
        if v.numel() == 0 {
            return Ok(None);
        }
        let ctx = &self.ctx;
        let x = binding::storage_range(ctx, "x", a.x)?;
        let y = binding::storage_range(ctx, "y", a.y)?;
        let opt =
            |what, t: Option<&Tensor>| t.map(|t| binding::storage_range(ctx, what, t)).transpose();
        let w = opt("weight", a.weight)?;
        let b = opt("bias", a.bias)?;
        let rm = opt("running_mean", a.running_mean)?;
        let rv = opt("running_var", a.running_var)?;
        let st = opt("stats", a.stats)?;
        let given = opt("moments", a.moments)?;
        let mk = opt("mask", a.mask)?;
        let al = opt(
            "aux",
            a.aux.map(|x| match x {
                Aux::Alpha(t) | Aux::EvoS0(t) => t,
            }),
        )?;
        binding::check_no_alias(&[
            ("alpha", al.as_ref(), false),
            ("mask", mk.as_ref(), false),
            ("x", Some(&x), false),
            ("weight", w.as_ref(), false),
            ("bias", b.as_ref(), false),
            ("y", Some(&y), true),
            ("running_mean", rm.as_ref(), true),
            ("running_var", rv.as_ref(), true),
            ("stats", st.as_ref(), true),
            ("moments", given.as_ref(), false),
        ])?;
        let align = Io {
            dtype: self.dtype,
            vec4: true,
        }
        .alignment();
        let aligned = x.offset % align == 0 && y.offset % align == 0;
        let io = self.io_for(&v, aligned);
        let (aio, ch_vec, straddle) = self.apply_io(&v, aligned);
        ctx.check_io(io)?;
        ctx.check_io(aio)?;
        for (n, what) in [(v.p * v.q * v.r, "p*q*r"), (v.s, "s")] {
            if n > u32::MAX as usize / 2 {
                return Err(Error::InvalidParameter {
                    name: "shape",
                    value: format!("{what} = {n}"),
                    why: "too large for 32-bit indexing",
                });
            }
        }
        Ok(Some(Checked {
            x,
            y,
            w,
            b,
            rm,
            rv,
            st,
            given,
            al,
            mk,
            io,
            aio,
            ch_vec,
            straddle,
            update,
        }))
    }

    /// Records the passes into `encoder`. Everything is checked first; nothing is recorded on
    /// error, and nothing for an empty tensor.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, a: &ChannelNormArgs) -> Result<()> {
        let Some(Checked {
            x,
            y,
            w,
            b,
            rm,
            rv,
            st,
            given,
            al,
            mk,
            io,
            aio,
            ch_vec,
            straddle,
            update,
        }) = self.validate(a)?
        else {
            return Ok(());
        };
        let v = a.view;
        let ctx = &self.ctx;
        let scratch = self.scratch(v)?;
        let wgm = moments_wg(ctx);
        // Batch statistics computed here (not given, not the running ones).
        let batch = !matches!(a.statistics, Statistics::Running) && given.is_none();
        let w_src = match a.statistics {
            Statistics::Mixed { w_src } => Some(w_src),
            _ => None,
        };
        let total_v = (v.numel() / aio.width() as usize) as u32;

        let tiles = if given.is_some() { 1 } else { scratch.tiles };
        let (qm_running, qm_update) = match a.statistics {
            Statistics::QuadraticMean {
                use_running,
                update,
            } => (use_running, update),
            _ => (false, None),
        };
        let base = channel_params(&v, io, tiles, scratch.tile_len, self.eps, update);
        let params = ChannelParams {
            // The test-time mix weight, or the quadratic mean's warm-up factor.
            w_src: w_src.or(qm_update.map(|u| u.warm)).unwrap_or(0.0),
            momentum: qm_update.map_or(base.momentum, |u| u.momentum),
            mask_b: a.mask.map_or(0, |m| m.shape()[0] as u32),
            norm_target: self.norm_target,
            ..base
        };
        let apply_params = ChannelParams { total_v, ..params };
        let block = self.apply_block();

        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let sio = Io {
            dtype: DType::F32,
            vec4: false,
        };
        let fin = ctx.pipeline(
            Kernel::ChannelFinalize,
            sio,
            FINALIZE_SLOTS,
            &[
                ("WG", FINALIZE_WG as f64),
                ("INFER", flag(a.statistics == Statistics::Running)),
                (
                    "UPDATE_RUNNING",
                    flag(update.is_some() || qm_update.is_some()),
                ),
                ("UNBIASED_RUNNING", flag(update.is_none_or(|u| u.unbiased))),
                ("QM_USE_RUNNING", flag(qm_running)),
                ("HAS_WEIGHT", flag(w.is_some())),
                ("HAS_BIAS", flag(b.is_some())),
                ("REDUCE", self.reduction.code()),
                ("EPS_OUTSIDE", flag(self.eps_outside)),
                ("MIX", flag(w_src.is_some())),
                ("UNBIASED_NORM", flag(self.unbiased_norm)),
                ("AFFINE_PER_SLOT", flag(self.affine_per_slot)),
                (
                    "NORM_UPDATED",
                    flag(matches!(a.statistics, Statistics::UpdatedRunning { .. })),
                ),
                (
                    "EST_VAR",
                    flag(matches!(
                        a.statistics,
                        Statistics::UpdatedRunning {
                            estimated: true,
                            ..
                        }
                    )),
                ),
            ],
        )?;
        let apply = self.apply_pipeline(
            aio,
            ApplyFlags {
                count_batch: update.is_some(),
                ch_vec,
                straddle,
                alpha: matches!(a.aux, Some(Aux::Alpha(_))),
                evo_s0: matches!(a.aux, Some(Aux::EvoS0(_))),
                evo_b0: false,
            },
        )?;
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let partials = match &given {
            Some(g) => g.clone(),
            None => r(&scratch.partials, "partials")?,
        };
        let ss = r(&scratch.scale_shift, "scale_shift")?;
        let stats = match st {
            Some(s) => s,
            None => r(&scratch.stats, "stats")?,
        };
        let batches = r(&self.batches, "batches")?;
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw0 = binding::dummy_range(ctx.dummy_write(0));
        let dw1 = binding::dummy_range(ctx.dummy_write(1));
        let fin_bind = self.binds.get(
            ctx,
            FINALIZE_SLOTS,
            &params,
            &[
                &partials,
                w.as_ref().unwrap_or(&dr),
                b.as_ref().unwrap_or(&dr),
                rm.as_ref().unwrap_or(&dw0),
                rv.as_ref().unwrap_or(&dw1),
                &stats,
                &ss,
                &batches,
            ],
        )?;
        let apply_bind = self.binds.get(
            ctx,
            APPLY_SLOTS,
            &apply_params,
            &[
                &x,
                &ss,
                &y,
                &batches,
                al.as_ref().unwrap_or(&dr),
                Self::vec4_view(&ss, &dr),
            ],
        )?;
        let moments = if batch {
            let p = ctx.pipeline(
                Kernel::ChannelMoments,
                io,
                MOMENTS_SLOTS,
                &[
                    ("WG", wgm as f64),
                    ("REDUCE", self.reduction.moments_code()),
                    ("HAS_MASK", flag(mk.is_some())),
                    ("LANE_BLOCK", flag(self.lane_blocks())),
                    (
                        "CHANNEL_LANES",
                        flag(mk.is_none() && self.channel_lanes(&v)),
                    ),
                ],
            )?;
            let bg = self.binds.get(
                ctx,
                MOMENTS_SLOTS,
                &params,
                &[&x, &partials, mk.as_ref().unwrap_or(&dr)],
            )?;
            Some((p, bg))
        } else {
            None
        };
        if ctx.is_cpu() {
            let per_lane =
                scratch.tile_len.div_ceil(wgm) as u64 + scratch.tiles as u64 + v.cg as u64;
            if per_lane > crate::rownorm::CPU_LOOP_BUDGET {
                return Err(Error::InvalidParameter {
                    name: "shape",
                    value: format!("{v:?}"),
                    why: "a lane would loop past the software rasterizer's 65535-iteration limit",
                });
            }
        }

        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm channel_norm"),
            timestamp_writes: None,
        });
        if let Some((p, bg)) = &moments {
            let groups = self.moments_groups(&v, scratch.tiles, wgm, mk.is_some());
            let (gx, gy) = binding::grid(ctx, groups);
            pass.set_pipeline(p);
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        let (gx, gy) = binding::grid(ctx, (v.slots() as u64).div_ceil(FINALIZE_WG as u64));
        pass.set_pipeline(&fin);
        pass.set_bind_group(0, &fin_bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        let invocations = (total_v as u64).div_ceil(block as u64);
        let (gx, gy) = binding::grid(ctx, invocations.div_ceil(APPLY_WG as u64));
        pass.set_pipeline(&apply);
        pass.set_bind_group(0, &apply_bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }

    /// Records the statistics of `x` per slot into `out` (f32 `[slots, 3]`: count, mean, M2),
    /// the first half of a synchronised normalization: reduce on every device, merge (e.g.
    /// [`Moments::merge`] after an all-reduce of the downloaded moments), upload the merged
    /// moments and pass them as [`ChannelNormArgs::moments`]. An empty `x` records nothing.
    pub fn encode_reduce(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        view: ChannelView,
        out: &Tensor,
    ) -> Result<()> {
        self.encode_reduce_masked(encoder, x, view, None, out)
    }

    /// [`ChannelNorm::encode_reduce`] over the unpadded tokens only: with a
    /// [`Reduction::QuadraticMean`] engine, a token view `[1, B*N, C, 1]` of `x[B, N, C]` and an
    /// f32 `mask` of B*N values (1 = padding, token `b*N + n`), the moments hold (count of kept
    /// tokens, 0, sum of squares) per channel.
    pub fn encode_reduce_masked(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        view: ChannelView,
        mask: Option<&Tensor>,
        out: &Tensor,
    ) -> Result<()> {
        self.check("x", x, view.numel(), self.dtype)?;
        self.check("moments", out, view.slots() * 3, DType::F32)?;
        if let Some(m) = mask {
            self.check("mask", m, view.q, DType::F32)?;
            if self.reduction != Reduction::QuadraticMean || view.p != 1 || view.s != 1 {
                return Err(Error::InvalidParameter {
                    name: "mask",
                    value: format!("{view:?}"),
                    why: "a token mask needs a quadratic-mean engine and a token view [1, tokens, C, 1]",
                });
            }
        }
        if view.numel() == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let xr = binding::storage_range(ctx, "x", x)?;
        let or = binding::storage_range(ctx, "moments", out)?;
        let mr = mask
            .map(|m| binding::storage_range(ctx, "mask", m))
            .transpose()?;
        binding::check_no_alias(&[
            ("x", Some(&xr), false),
            ("mask", mr.as_ref(), false),
            ("moments", Some(&or), true),
        ])?;
        let align = Io {
            dtype: self.dtype,
            vec4: true,
        }
        .alignment();
        let io = self.io_for(&view, xr.offset % align == 0);
        ctx.check_io(io)?;
        let scratch = self.scratch(view)?;
        let params = ChannelParams {
            // Token b*N + n is mask[b*N + n]: the moments kernel's [B, T] indexing with B = 1.
            mask_b: 1,
            ..channel_params(&view, io, scratch.tiles, scratch.tile_len, self.eps, None)
        };
        let wgm = moments_wg(ctx);
        let moments = ctx.pipeline(
            Kernel::ChannelMoments,
            io,
            MOMENTS_SLOTS,
            &[
                ("WG", wgm as f64),
                ("REDUCE", self.reduction.moments_code()),
                ("HAS_MASK", if mask.is_some() { 1.0 } else { 0.0 }),
                ("LANE_BLOCK", if self.lane_blocks() { 1.0 } else { 0.0 }),
                (
                    "CHANNEL_LANES",
                    if mask.is_none() && self.channel_lanes(&view) {
                        1.0
                    } else {
                        0.0
                    },
                ),
            ],
        )?;
        let merge = ctx.pipeline(
            Kernel::ChannelMerge,
            Io {
                dtype: DType::F32,
                vec4: false,
            },
            MERGE_SLOTS,
            &[("WG", FINALIZE_WG as f64)],
        )?;
        let partials = binding::storage_range(ctx, "partials", &scratch.partials)?;
        let dr = binding::dummy_range(ctx.dummy_read());
        let mb = self.binds.get(
            ctx,
            MOMENTS_SLOTS,
            &params,
            &[&xr, &partials, mr.as_ref().unwrap_or(&dr)],
        )?;
        let gb = self
            .binds
            .get(ctx, MERGE_SLOTS, &params, &[&partials, &or])?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm channel_norm reduce"),
            timestamp_writes: None,
        });
        let groups = self.moments_groups(&view, scratch.tiles, wgm, mask.is_some());
        let (gx, gy) = binding::grid(ctx, groups);
        pass.set_pipeline(&moments);
        pass.set_bind_group(0, &mb, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        let (gx, gy) = binding::grid(ctx, (view.slots() as u64).div_ceil(FINALIZE_WG as u64));
        pass.set_pipeline(&merge);
        pass.set_bind_group(0, &gb, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }

    /// Every check of [`ChannelNorm::encode_running_from_moments`], recording nothing.
    pub fn check_running_from_moments(
        &self,
        view: ChannelView,
        merged: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
    ) -> Result<()> {
        self.instance_running_ranges(view, merged, running_mean, running_var, momentum)
            .map(|_| ())
    }

    #[allow(clippy::type_complexity)]
    fn instance_running_ranges(
        &self,
        view: ChannelView,
        merged: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
    ) -> Result<
        Option<(
            binding::BufferRange,
            binding::BufferRange,
            binding::BufferRange,
        )>,
    > {
        self.check("moments", merged, view.slots() * 3, DType::F32)?;
        self.check("running_mean", running_mean, view.r, DType::F32)?;
        self.check("running_var", running_var, view.r, DType::F32)?;
        crate::check_unit_interval("momentum", momentum)?;
        if view.count() < 2 && view.numel() > 0 {
            return Err(Error::InvalidParameter {
                name: "input",
                value: "1 value per instance".into(),
                why: "tracking running statistics needs more than one spatial value per instance",
            });
        }
        if view.numel() == 0 {
            return Ok(None);
        }
        let ctx = &self.ctx;
        let r = |what: &str, t: &Tensor| binding::storage_range(ctx, what, t);
        let (mr, rm, rv) = (
            r("moments", merged)?,
            r("running_mean", running_mean)?,
            r("running_var", running_var)?,
        );
        binding::check_no_alias(&[
            ("moments", Some(&mr), false),
            ("running_mean", Some(&rm), true),
            ("running_var", Some(&rv), true),
        ])?;
        Ok(Some((mr, rm, rv)))
    }

    /// Running statistics (f32 `[C]`, `r = (1 - momentum) r + momentum s`, unbiased variance)
    /// from merged per-(p, channel) moments written by [`ChannelNorm::encode_reduce`]:
    /// `sequential = false` averages the P statistics first and updates once (InstanceNorm
    /// `track_running_stats`); `sequential = true` updates once per p, in order (Ghost BN chunks).
    #[allow(clippy::too_many_arguments)] // one per tensor and setting; all are needed
    pub fn encode_running_from_moments(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        view: ChannelView,
        merged: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
        sequential: bool,
    ) -> Result<()> {
        let Some((mr, rm, rv)) =
            self.instance_running_ranges(view, merged, running_mean, running_var, momentum)?
        else {
            return Ok(());
        };
        let ctx = &self.ctx;
        const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite];
        let sio = Io {
            dtype: DType::F32,
            vec4: false,
        };
        let pipeline = ctx.pipeline(
            Kernel::ChannelInstanceRunning,
            sio,
            SLOTS,
            &[
                ("WG", FINALIZE_WG as f64),
                ("SEQUENTIAL", if sequential { 1.0 } else { 0.0 }),
            ],
        )?;
        let update = RunningUpdate {
            momentum: Some(momentum),
            unbiased: true,
        };
        let params = channel_params(&view, sio, 1, 1, self.eps, Some(update));
        let bind = self.binds.get(ctx, SLOTS, &params, &[&mr, &rm, &rv])?;
        let (gx, gy) = binding::grid(ctx, (view.r as u64).div_ceil(FINALIZE_WG as u64));
        binding::dispatch(
            encoder,
            "wgnorm running statistics from moments",
            &pipeline,
            &bind,
            (gx, gy, 1),
        );
        Ok(())
    }

    /// Records only the apply pass, with coefficients computed elsewhere (f32, per sample p of
    /// `view`: `[mean][scale][shift]` arrays of C, or five arrays `[a][b][weight][bias][v]` when
    /// `evo_b0`): `y = act((x - mean) * scale + shift)` or EvoNorm-B0's
    /// `y = x / max(a, v x + b) * weight + bias`. For engines built on this one
    /// ([`crate::instmix`]); `coef` must not alias x or y.
    pub fn encode_apply(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
        view: ChannelView,
        coef: &Tensor,
        evo_b0: bool,
    ) -> Result<()> {
        self.check("x", x, view.numel(), self.dtype)?;
        self.check("y", y, view.numel(), self.dtype)?;
        let ncoef = if evo_b0 { 5 } else { 3 };
        self.check(
            "coefficients",
            coef,
            view.p * ncoef * view.channels(),
            DType::F32,
        )?;
        if view.numel() == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let (xr, yr, cr) = (r(x, "x")?, r(y, "y")?, r(coef, "coefficients")?);
        binding::check_no_alias(&[
            ("x", Some(&xr), false),
            ("coefficients", Some(&cr), false),
            ("y", Some(&yr), true),
        ])?;
        let align = Io {
            dtype: self.dtype,
            vec4: true,
        }
        .alignment();
        let (aio, ch_vec, straddle) =
            self.apply_io(&view, xr.offset % align == 0 && yr.offset % align == 0);
        ctx.check_io(aio)?;
        let total_v = (view.numel() / aio.width() as usize) as u32;
        let params = ChannelParams {
            total_v,
            ..channel_params(&view, aio, 1, 1, self.eps, None)
        };
        let block = self.apply_block();
        let apply = self.apply_pipeline(
            aio,
            ApplyFlags {
                count_batch: false,
                ch_vec,
                straddle,
                alpha: false,
                evo_s0: false,
                evo_b0,
            },
        )?;
        let batches = r(&self.batches, "batches")?;
        let dr = binding::dummy_range(ctx.dummy_read());
        let bind = self.binds.get(
            ctx,
            APPLY_SLOTS,
            &params,
            &[&xr, &cr, &yr, &batches, &dr, Self::vec4_view(&cr, &dr)],
        )?;
        let invocations = (total_v as u64).div_ceil(block as u64);
        let (gx, gy) = binding::grid(ctx, invocations.div_ceil(APPLY_WG as u64));
        binding::dispatch(
            encoder,
            "wgnorm channel_norm apply",
            &apply,
            &bind,
            (gx, gy, 1),
        );
        Ok(())
    }

    /// Bind groups cached so far.
    pub fn cached_bind_groups(&self) -> usize {
        self.binds.len()
    }
}

/// The uniform block of every channel-norm kernel for a view, its access type and tiling.
fn channel_params(
    v: &ChannelView,
    io: Io,
    tiles: u32,
    tile_len: u32,
    eps: f32,
    update: Option<RunningUpdate>,
) -> ChannelParams {
    ChannelParams {
        p: v.p as u32,
        q: v.q as u32,
        r: v.r as u32,
        s_v: (v.s / io.width() as usize) as u32,
        cg: v.cg as u32,
        sdiv: v.sdiv as u32,
        tiles,
        tile_len,
        eps,
        momentum: update.and_then(|u| u.momentum).unwrap_or(0.0),
        cumulative: update.is_some_and(|u| u.momentum.is_none()) as u32,
        total_v: (v.numel() / io.width() as usize) as u32,
        per_p: (v.q * v.r * v.s) as u32,
        w_src: 0.0,
        mask_b: 0,
        norm_target: 0.0,
    }
}

/// Specialisations for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for io in Io::ALL {
        for wg in [8.0, 256.0] {
            for bits in 0..4u32 {
                let f = |i: u32| if bits & (1 << i) != 0 { 1.0 } else { 0.0 };
                out.push(Specialization {
                    kernel: Kernel::ChannelMoments,
                    io,
                    constants: vec![("WG", wg), ("LANE_BLOCK", f(0)), ("CHANNEL_LANES", f(1))],
                });
            }
        }
        for bits in 0..16u32 {
            let f = |i: u32| if bits & (1 << i) != 0 { 1.0 } else { 0.0 };
            out.push(Specialization {
                kernel: Kernel::ChannelApply,
                io,
                constants: vec![
                    ("WG", APPLY_WG as f64),
                    (
                        "BLOCK",
                        if f(0) == 1.0 {
                            APPLY_CPU_BLOCK as f64
                        } else {
                            1.0
                        },
                    ),
                    ("ACT", f(1)),
                    ("COUNT_BATCH", f(2)),
                    ("CH_VEC", if io.vec4 { f(3) } else { 0.0 }),
                ],
            });
        }
    }
    for io in Io::ALL {
        for (block, ch_vec, straddle) in [
            (1.0, 0.0, 0.0),
            (APPLY_CPU_BLOCK as f64, 0.0, 0.0),
            (1.0, 1.0, 0.0),
            (1.0, 0.0, 1.0),
            (APPLY_CPU_BLOCK as f64, 0.0, 1.0),
        ] {
            if (ch_vec == 1.0 || straddle == 1.0) && !io.vec4 {
                continue;
            }
            out.push(Specialization {
                kernel: Kernel::ChannelApply,
                io,
                constants: vec![
                    ("WG", APPLY_WG as f64),
                    ("BLOCK", block),
                    ("CH_VEC", ch_vec),
                    ("STRADDLE", straddle),
                    ("EVO_B0", 1.0),
                ],
            });
        }
    }
    out.extend(crate::instmix::specializations());
    for seq in [0.0, 1.0] {
        out.push(Specialization {
            kernel: Kernel::ChannelInstanceRunning,
            io: Io {
                dtype: DType::F32,
                vec4: false,
            },
            constants: vec![("WG", FINALIZE_WG as f64), ("SEQUENTIAL", seq)],
        });
    }
    out.push(Specialization {
        kernel: Kernel::ChannelMerge,
        io: Io {
            dtype: DType::F32,
            vec4: false,
        },
        constants: vec![("WG", FINALIZE_WG as f64)],
    });
    for bits in 0..8u32 {
        let f = |i: u32| if bits & (1 << i) != 0 { 1.0 } else { 0.0 };
        out.push(Specialization {
            kernel: Kernel::FoldBatchNorm,
            io: Io {
                dtype: DType::F32,
                vec4: false,
            },
            constants: vec![
                ("WG", 256.0),
                ("HAS_BIAS", f(0)),
                ("HAS_GAMMA", f(1)),
                ("HAS_BETA", f(2)),
            ],
        });
    }
    for bits in 0..8u32 {
        let f = |i: u32| if bits & (1 << i) != 0 { 1.0 } else { 0.0 };
        // EstBN / adaptive BN: update, then normalize with the updated statistics.
        out.push(Specialization {
            kernel: Kernel::ChannelFinalize,
            io: Io {
                dtype: DType::F32,
                vec4: false,
            },
            constants: vec![
                ("WG", FINALIZE_WG as f64),
                ("UPDATE_RUNNING", 1.0),
                ("UNBIASED_RUNNING", f(0)),
                ("HAS_WEIGHT", f(1)),
                ("HAS_BIAS", f(1)),
                ("NORM_UPDATED", f(2)),
                ("EST_VAR", 1.0 - f(0)),
            ],
        });
    }
    for bits in 0..128u32 {
        let f = |i: u32| if bits & (1 << i) != 0 { 1.0 } else { 0.0 };
        // REDUCE 0..2 from bits 5-6 (3 unused), EPS_OUTSIDE only with mean/variance.
        let reduce = (bits >> 5) & 3;
        out.push(Specialization {
            kernel: Kernel::ChannelFinalize,
            io: Io {
                dtype: DType::F32,
                vec4: false,
            },
            constants: vec![
                ("WG", FINALIZE_WG as f64),
                ("INFER", f(0)),
                ("UPDATE_RUNNING", f(1)),
                ("UNBIASED_RUNNING", f(2)),
                ("HAS_WEIGHT", f(3)),
                ("HAS_BIAS", f(4)),
                ("REDUCE", reduce as f64),
                ("EPS_OUTSIDE", if reduce == 0 { f(0) } else { 0.0 }),
                // Mixing only with batch statistics of mean/variance.
                (
                    "MIX",
                    if reduce == 0 && f(0) == 0.0 {
                        f(2)
                    } else {
                        0.0
                    },
                ),
            ],
        });
    }
    out
}
