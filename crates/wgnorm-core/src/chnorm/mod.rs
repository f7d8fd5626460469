//! Channel-statistics normalization, the engine behind BatchNorm, GroupNorm and InstanceNorm (and
//! the research methods built on them): statistics per slot of a `[P, Q, R, S]` view of x (see
//! [`ChannelView`]), then one multiply-add per element.
//!
//! Three dispatches in one compute pass: partial moments per (slot, tile) (skipped when the
//! running statistics normalize), a finalize pass per slot (Chan merge in a fixed order, running
//! statistics update, statistics and affine folded into a scale and shift per (p, channel)), and
//! the elementwise apply pass. Scratch buffers are allocated once per view and reused.
//!
//! The modules follow a call: `view` (what is reduced), `args` (what the call asks for),
//! `check` (every input checked, nothing recorded), [`plan`] (pipelines as a pure function of
//! the checked call) and `record` (bind and dispatch; fails only on device errors).

mod args;
mod check;
pub(crate) use check::expect;
pub mod plan;
mod record;
pub mod split;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use crate::activation::Activation;
pub use args::{ChannelNormArgs, Moments, QmUpdate, Reduction, RunningUpdate, Statistics};
pub use plan::{specializations, specializations_with, Epilogue, EpilogueInput};
pub use view::{ChannelView, Layout};

use crate::binding::BindCache;
use crate::{Context, DType, Result, Tensor};
use plan::{ActivationKey, EngineConfig};

/// How the moments and apply passes map work to lanes; `None` fields follow the adapter (the
/// defaults). Forcing them runs the other adapter class's code path, which is how the tests
/// check on a software rasterizer the paths a GPU takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LanePlan {
    /// Each lane reduces a contiguous block (default on CPU adapters with vector accesses)
    /// instead of every WG-th access (default on GPUs, and for scalar accesses on CPU adapters:
    /// `cargo xtask bench --autotune`, BatchNorm training 256x512x7x7 NCHW, 1.42-1.48x faster
    /// strided in two runs; blocks and strided within noise on the vector-access shapes).
    pub lane_blocks: Option<bool>,
    /// Views with S = 1 use one lane per channel (default when there are at least 8 channels).
    pub channel_lanes: Option<bool>,
    /// Accesses per lane of the apply pass: 16 (default on CPU adapters) or 1 (GPUs).
    pub apply_block: Option<u32>,
    /// Accesses of a slot per moments tile (one workgroup's share): a power of two from
    /// [`MIN_TILE`] to [`MAX_TILE`]. Default: 4096 (CPU adapters) or 256 (GPUs) with one lane per
    /// channel, 256 or 16 per lane of the workgroup otherwise. Not a pipeline constant.
    pub tile: Option<u32>,
}

/// Smallest moments tile a lane plan may set (accesses).
pub const MIN_TILE: u32 = 64;
/// Largest moments tile a lane plan may set (accesses): a CPU adapter's lane walks at most this
/// many, far inside its loop budget.
pub const MAX_TILE: u32 = 16384;

impl LanePlan {
    /// The defaults and every forced choice, for the pipeline enumeration.
    pub(crate) const ALL_FORCED: [LanePlan; 27] = {
        let opts = [None, Some(false), Some(true)];
        let blocks = [None, Some(1), Some(plan::APPLY_CPU_BLOCK)];
        let mut out = [LanePlan {
            lane_blocks: None,
            channel_lanes: None,
            apply_block: None,
            tile: None,
        }; 27];
        let mut i = 0;
        while i < 27 {
            out[i] = LanePlan {
                lane_blocks: opts[i % 3],
                channel_lanes: opts[(i / 3) % 3],
                apply_block: blocks[i / 9],
                tile: None,
            };
            i += 1;
        }
        out
    };
}

impl LanePlan {
    /// Whether every choice follows the adapter (no field forced).
    pub fn is_default(&self) -> bool {
        *self == LanePlan::default()
    }
}

/// The names the autotune and tuning tables use: `default`, or the three choices joined by `+`:
/// `blocks`/`strided`/`auto-blocks`, `channel-lanes`/`slot-lanes`/`auto-lanes`,
/// `apply{accesses}`/`apply-auto`, then `+tile{accesses}` when the tile is set (e.g.
/// `strided+channel-lanes+apply16`, `auto-blocks+auto-lanes+apply-auto+tile1024`).
impl std::fmt::Display for LanePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_default() {
            return write!(f, "default");
        }
        let blocks = match self.lane_blocks {
            Some(true) => "blocks",
            Some(false) => "strided",
            None => "auto-blocks",
        };
        let lanes = match self.channel_lanes {
            Some(true) => "channel-lanes",
            Some(false) => "slot-lanes",
            None => "auto-lanes",
        };
        match self.apply_block {
            Some(b) => write!(f, "{blocks}+{lanes}+apply{b}")?,
            None => write!(f, "{blocks}+{lanes}+apply-auto")?,
        }
        match self.tile {
            Some(t) => write!(f, "+tile{t}"),
            None => Ok(()),
        }
    }
}

impl std::str::FromStr for LanePlan {
    type Err = String;

    /// Parses the [`Display`](std::fmt::Display) names back; apply blocks other than the ones
    /// the pipelines are built for (1 and 16) are refused.
    fn from_str(s: &str) -> std::result::Result<LanePlan, String> {
        if s == "default" {
            return Ok(LanePlan::default());
        }
        let bad = || {
            format!(
                "unknown lane plan {s:?} (default, or blocks|strided|auto-blocks + channel-lanes|slot-lanes|auto-lanes + apply1|apply16|apply-auto [+ tileN, N a power of two from {MIN_TILE} to {MAX_TILE}])"
            )
        };
        let parts: Vec<&str> = s.split('+').collect();
        let (blocks, lanes, apply, tile) = match parts[..] {
            [b, l, a] => (b, l, a, None),
            [b, l, a, t] => (b, l, a, Some(t)),
            _ => return Err(bad()),
        };
        let tile = match tile.map(|t| t.strip_prefix("tile").and_then(|n| n.parse::<u32>().ok())) {
            None => None,
            Some(Some(t)) if t.is_power_of_two() && (MIN_TILE..=MAX_TILE).contains(&t) => Some(t),
            Some(_) => return Err(bad()),
        };
        let lane_blocks = match blocks {
            "blocks" => Some(true),
            "strided" => Some(false),
            "auto-blocks" => None,
            _ => return Err(bad()),
        };
        let channel_lanes = match lanes {
            "channel-lanes" => Some(true),
            "slot-lanes" => Some(false),
            "auto-lanes" => None,
            _ => return Err(bad()),
        };
        let apply_block = match apply {
            "apply-auto" => None,
            "apply1" => Some(1),
            a if a == format!("apply{}", plan::APPLY_CPU_BLOCK) => Some(plan::APPLY_CPU_BLOCK),
            _ => return Err(bad()),
        };
        Ok(LanePlan {
            lane_blocks,
            channel_lanes,
            apply_block,
            tile,
        })
    }
}

/// Scratch of one view: partial moments, per-slot statistics, per-(p, channel) scale/shift.
struct Scratch {
    partials: Tensor,
    stats: Tensor,
    scale_shift: Tensor,
}

/// The engine: checks calls, owns scratch and the num_batches_tracked counter, records passes.
pub struct ChannelNorm {
    ctx: Context,
    eps: f32,
    norm_target: f32,
    /// The epilogue (its kind is in `config`; SELU's values go in the uniform block).
    activation: Activation,
    config: EngineConfig,
    batches: Tensor,
    scratch: Mutex<HashMap<ChannelView, Arc<Scratch>>>,
    pipelines: Mutex<HashMap<(plan::CallShape, plan::ViewFacts), Arc<record::Pipelines>>>,
    binds: BindCache,
}

/// Tiles of a slot's accesses and accesses per tile for the moments pass: enough workgroups to
/// fill the device, few enough partials that the finalize merge stays cheap (and inside CPU loop
/// budgets). With one lane per channel, a lane walks its whole tile. `tile`: a lane plan's
/// accesses per tile instead of the adapter's.
fn tiling(
    view: &ChannelView,
    width: u32,
    cpu: bool,
    channel_lanes: bool,
    tile: Option<u32>,
) -> (u32, u32) {
    let wg = plan::moments_wg(cpu) as usize;
    let per_slot = (view.count() / width as usize).max(1);
    let target = tile.map_or(
        match (channel_lanes, cpu) {
            (true, true) => 4096,
            (true, false) => 256,
            (false, true) => wg * 256,
            (false, false) => wg * 16,
        },
        |t| t.clamp(MIN_TILE, MAX_TILE) as usize,
    );
    let tiles = per_slot.div_ceil(target).clamp(1, 4096) as u32;
    (tiles, per_slot.div_ceil(tiles as usize) as u32)
}

impl ChannelNorm {
    /// An engine normalizing by mean and variance with `eps` inside the square root, tensors of
    /// `dtype` and `activation` after the affine. The `with_*` methods change the rest.
    pub fn new(
        ctx: &Context,
        eps: f32,
        dtype: DType,
        activation: Activation,
    ) -> Result<ChannelNorm> {
        crate::check_eps(eps)?;
        let batches = ctx.upload_f32(&[0.0; 4], &[4])?;
        Ok(ChannelNorm {
            ctx: ctx.clone(),
            eps,
            norm_target: 1.0,
            activation,
            config: EngineConfig {
                reduction: Reduction::MeanVariance,
                eps_outside: false,
                unbiased_norm: false,
                affine_per_slot: false,
                dtype,
                activation: ActivationKey::of(activation),
                lanes: LanePlan::default(),
            },
            batches,
            scratch: Mutex::default(),
            pipelines: Mutex::default(),
            binds: BindCache::default(),
        })
    }

    /// Overrides the lane mapping of the moments and apply passes (see [`LanePlan`]); a
    /// forced plan also takes precedence over the context's tuning table.
    pub fn with_lane_plan(mut self, plan: LanePlan) -> ChannelNorm {
        self.config.lanes = plan;
        self
    }

    /// The lane plan of a call on `view` (`moments`: the call computes batch statistics): the
    /// forced one, else the context's tuning table's entry for views of that geometry, else the
    /// adapter's defaults.
    pub fn lanes_for(&self, view: &ChannelView, moments: bool) -> LanePlan {
        if !self.config.lanes.is_default() {
            return self.config.lanes;
        }
        self.ctx
            .tuning()
            .and_then(|t| t.lane_plan(moments, self.dtype(), view))
            .unwrap_or_default()
    }

    /// Normalizes by an L1/L2 norm or a quadratic mean instead of mean and variance.
    pub fn with_reduction(mut self, reduction: Reduction) -> ChannelNorm {
        self.config.reduction = reduction;
        self
    }

    /// L1/L2 reductions scale each slot to this norm instead of 1; with `eps > 0` the norm is
    /// clamped at eps from below instead of mapping 0 to 0.
    pub fn with_norm_target(mut self, target: f32) -> ChannelNorm {
        self.norm_target = target;
        self
    }

    /// Weight and bias have one value per slot `r` (per group) instead of per channel.
    pub fn with_affine_per_slot(mut self, per_slot: bool) -> ChannelNorm {
        self.config.affine_per_slot = per_slot;
        self
    }

    /// Normalize with the unbiased variance `n / (n - 1) var`.
    pub fn with_unbiased_variance(mut self, unbiased: bool) -> ChannelNorm {
        self.config.unbiased_norm = unbiased;
        self
    }

    /// `1 / (sqrt(var) + eps)` instead of `1 / sqrt(var + eps)`.
    pub fn with_eps_outside_sqrt(mut self, outside: bool) -> ChannelNorm {
        self.config.eps_outside = outside;
        self
    }

    /// The context the engine records for.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The num_batches_tracked counter (a u32 in the first word), advanced by every call that
    /// updates running statistics.
    pub fn batches_tracked(&self) -> &Tensor {
        &self.batches
    }

    /// Bind groups cached so far.
    pub fn cached_bind_groups(&self) -> usize {
        self.binds.len()
    }

    fn dtype(&self) -> DType {
        self.config.dtype
    }

    /// Scratch for `view`, sized by the moments pass's tiling (`tiles` partials per slot).
    fn scratch(&self, view: ChannelView, tiles: u32) -> Result<Arc<Scratch>> {
        if let Some(s) = crate::locked(&self.scratch).get(&view) {
            if s.partials.numel() >= view.slots().max(1) * (tiles as usize + 1) * 3 {
                return Ok(s.clone());
            }
        }
        let slots = view.slots().max(1);
        let s = Arc::new(Scratch {
            // The tiles' partial moments, then one shift per slot (moments.wgsl SHIFTED).
            partials: self
                .ctx
                .empty(&[slots * (tiles as usize + 1) * 3], DType::F32)?,
            stats: self.ctx.empty(&[slots * 2], DType::F32)?,
            scale_shift: self
                .ctx
                .empty(&[view.p * view.channels() * 3], DType::F32)?,
        });
        crate::locked(&self.scratch).insert(view, s.clone());
        Ok(s)
    }
}
