//! Row normalization, the engine behind LayerNorm and RMSNorm (and, later, their fused variants):
//! every row of a row-major `[rows, n]` view is normalized on its own.
//!
//! Kernel choice is data: [`RowKernel`] names a kernel shape and its tuning, [`choose`] maps
//! (adapter, row length, I/O) to one, and [`specializations`] lists every pipeline the choice can
//! produce so `cargo xtask validate` checks exactly what runs.

use crate::binding::{self, BindCache};
use crate::context::Slot;
use crate::shader::{snippet, Io, Kernel, Specialization};
use crate::uniform::RowParams;
use crate::{Context, DType, Error, Result, Tensor};

/// Centred (LayerNorm) or quadratic-mean (RMSNorm) statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowMode {
    /// `y = (x - mean) / sqrt(var_biased + eps) * w + b`.
    LayerNorm,
    /// `y = x / sqrt(mean(x^2) + eps) * (w + weight_offset)`.
    RmsNorm,
}

/// Configuration fixed when a row-norm op is created (everything but the data).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowNormConfig {
    pub mode: RowMode,
    /// First reduced dim; negative counts from the end. Every dim from `axis` on is reduced.
    pub axis: isize,
    /// Added to the variance (or mean square) inside the square root. Finite, >= 0.
    pub eps: f32,
    /// Added to the weight before it multiplies (RMSNorm: 1.0 for Gemma's `1 + w`). Finite.
    pub weight_offset: f32,
    /// Storage type of x, y, weight and bias. Statistics are always f32.
    pub dtype: DType,
}

/// A kernel shape and its tuning for one row length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowKernel {
    /// `team` lanes of one subgroup per row, `rows_per_group` rows per workgroup (needs
    /// subgroups). `cached`: the rows are read once into workgroup memory (they must fit);
    /// otherwise x is read from memory in each pass (LayerNorm: Chan-merged statistics, then
    /// the output, two reads).
    Team {
        team: u32,
        rows_per_group: u32,
        cached: bool,
    },
    /// As `Team`, with each lane's share of the row in registers (at most [`TEAM_REGS`]
    /// accesses per lane): short rows without workgroup-memory traffic.
    /// `rows_per_team` consecutive rows per team reuse the lane's registers of weight and bias.
    TeamRegs {
        team: u32,
        rows_per_group: u32,
        rows_per_team: u32,
    },
    /// One workgroup of `wg` lanes (a power of two) per row; caches the row when it fits,
    /// otherwise reads x twice.
    Workgroup { wg: u32 },
}

/// Bind-group slots of every row-norm kernel (the naive baseline too).
pub const SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // x
    Slot::Read,      // weight
    Slot::Read,      // bias
    Slot::ReadWrite, // y
    Slot::ReadWrite, // mean
    Slot::ReadWrite, // rstd
    Slot::Read,      // residual
    Slot::ReadWrite, // sum
];

const ROW_COMMON: &str = crate::shader_file!("row_norm/common.wgsl");

/// A subgroup team per row (needs `SUBGROUP`).
pub const TEAM_KERNEL: Kernel = Kernel::new(
    "row_norm/team",
    &[
        snippet::ACTIVATION,
        snippet::MOMENTS,
        ROW_COMMON,
        snippet::TEAM_SUM,
        crate::shader_file!("row_norm/team.wgsl"),
    ],
    SLOTS,
)
.with_features(wgpu::Features::SUBGROUP);

/// A subgroup team per row, the row in registers (needs `SUBGROUP`).
pub const TEAM_REGS_KERNEL: Kernel = Kernel::new(
    "row_norm/team_regs",
    &[
        snippet::ACTIVATION,
        snippet::MOMENTS,
        ROW_COMMON,
        snippet::TEAM_SUM,
        crate::shader_file!("row_norm/team_regs.wgsl"),
    ],
    SLOTS,
)
.with_features(wgpu::Features::SUBGROUP);

/// A workgroup per row (no optional feature).
pub const WORKGROUP_KERNEL: Kernel = Kernel::new(
    "row_norm/workgroup",
    &[
        snippet::ACTIVATION,
        snippet::MOMENTS,
        snippet::WG_MOMENTS,
        ROW_COMMON,
        crate::shader_file!("row_norm/workgroup.wgsl"),
    ],
    SLOTS,
);

/// One invocation per row, three passes: the benchmarks' baseline for row norms.
pub const NAIVE_KERNEL: Kernel = Kernel::new(
    "naive/row_norm",
    &[
        snippet::ACTIVATION,
        ROW_COMMON,
        crate::shader_file!("naive/row_norm.wgsl"),
    ],
    SLOTS,
);

/// Accesses each lane of a LayerNorm team holds at least on CPU adapters (see `choose_for`).
const CPU_LN_MIN_PER_LANE: u32 = 8;

/// Rows each register team normalizes on CPU adapters.
const CPU_ROWS_PER_TEAM: u32 = 8;

/// Accesses each lane of the register team kernel holds (`REGS` in `team_regs.wgsl`).
pub const TEAM_REGS: u32 = 32;

/// Bytes of workgroup memory the workgroup kernel needs besides its cache (three f32 per lane).
fn reduction_bytes(wg: u32) -> u64 {
    3 * 4 * wg as u64
}

/// Accesses (of `io.width()` elements, cached as f32) of workgroup cache `kernel` gets for rows of
/// `n_vec` accesses, or `None` when they do not fit `budget` bytes of workgroup memory.
///
/// Lengths are rounded up to a power of two (capped at what the budget holds): the cache size is
/// a pipeline constant, and rounding keeps the pipelines a small finite set that `cargo xtask
/// validate` can list, shared by neighbouring row lengths.
fn cache_len_for(budget: u64, kernel: RowKernel, io: Io, n_vec: u64) -> Option<u32> {
    let access = 4 * io.width() as u64;
    let bucket = |need: u64, cap: u64| need.max(1).next_power_of_two().min(cap).max(1) as u32;
    match kernel {
        RowKernel::Team {
            rows_per_group,
            cached,
            ..
        } => {
            let need = n_vec * rows_per_group as u64;
            let cap = budget / access;
            (cached && need <= cap).then(|| bucket(need, cap))
        }
        RowKernel::TeamRegs { team, .. } => (n_vec <= (team * TEAM_REGS) as u64).then_some(1),
        RowKernel::Workgroup { wg } => {
            let cap = budget.saturating_sub(reduction_bytes(wg)) / access;
            (n_vec <= cap).then(|| bucket(n_vec, cap))
        }
    }
}

/// The per-adapter choice for rows of `n` elements. Software rasterisers punish workgroup
/// barriers and like few lanes per row; GPUs want a wide, coalesced team per long row.
pub fn choose(ctx: &Context, mode: RowMode, n: u64, io: Io) -> RowKernel {
    choose_for(&AdapterClass::of(ctx), mode, n, io)
}

fn choose_for(a: &AdapterClass, mode: RowMode, n: u64, io: Io) -> RowKernel {
    let n_vec = n.div_ceil(io.width() as u64).max(1);
    let budget = a.workgroup_storage as u64;
    let (sg_min, sg_max) = (a.subgroup_min.max(1), a.subgroup_max.max(1));
    if a.subgroups && sg_min.is_power_of_two() && sg_max.is_power_of_two() {
        let mut team = sg_min.min(32);
        // CPU adapters, LayerNorm on short rows: narrower teams, so each lane holds at least
        // CPU_LN_MIN_PER_LANE accesses (llvmpipe, N = 64: 0.56 of copy with 8 lanes per row,
        // 0.65 with 2, medians of 5 runs). RMSNorm has half the arithmetic per element and
        // runs best with the whole subgroup (0.70 with 8 lanes, 0.59 with 2).
        if a.cpu && mode == RowMode::LayerNorm {
            while team > 1 && n_vec < (team * CPU_LN_MIN_PER_LANE) as u64 {
                team /= 2;
            }
        }
        // Rows per group: enough lanes to fill the subgroups, as many as the cache holds, and
        // the workgroup a multiple of the largest subgroup so no subgroup is partial.
        let lanes_target: u32 = if a.cpu { 64 } else { 256 };
        let step = (sg_max / team).max(1);
        let mut rows = (lanes_target / team).max(step).div_ceil(step) * step;
        // Registers, with loops of a pipeline-constant trip count that compilers unroll. On CPU
        // adapters each team also takes several rows, so the weight and bias it keeps in
        // registers are loaded once per several rows (each load is a gather there).
        if n_vec <= (team * TEAM_REGS) as u64 && rows * team <= a.max_invocations {
            return RowKernel::TeamRegs {
                team,
                rows_per_group: rows,
                rows_per_team: if a.cpu { CPU_ROWS_PER_TEAM } else { 1 },
            };
        }
        // CPU adapters: the uncached team (x read twice: Chan-merged statistics, then the
        // output) beats caching the row in workgroup memory, whose traffic costs as much as
        // memory's there and the cached LayerNorm's extra pass over it more (llvmpipe,
        // 1024 x 4096, three runs each: LayerNorm 0.36 -> 0.48 of copy, RMSNorm 0.41 -> 0.57).
        // It also beats a barrier-bound workgroup, within the loop budget.
        let uncached = RowKernel::Team {
            team,
            rows_per_group: step,
            cached: false,
        };
        if a.cpu && loop_iterations(uncached, n_vec) <= CPU_LOOP_BUDGET {
            return uncached;
        }
        let fits = |rows: u32| {
            cache_len_for(
                budget,
                RowKernel::Team {
                    team,
                    rows_per_group: rows,
                    cached: true,
                },
                io,
                n_vec,
            )
            .is_some()
        };
        while rows > step && !fits(rows) {
            rows -= step;
        }
        let team_fits = a.cpu || n <= 1024;
        if team_fits && rows * team <= a.max_invocations && fits(rows) {
            return RowKernel::Team {
                team,
                rows_per_group: rows,
                cached: true,
            };
        }
    }
    // Wide enough that each lane has a few accesses, narrow enough to keep barriers few.
    let hard_cap = prev_power_of_two(a.max_invocations.max(1));
    let cap = (if a.cpu { 128 } else { 1024 }).min(hard_cap);
    let mut wg = 32u32.min(cap);
    while wg < cap && (wg as u64) * 4 < n_vec {
        wg *= 2;
    }
    // CPU adapters: widen past the preferred size when a lane's loops would exceed the budget.
    while a.cpu
        && wg < hard_cap
        && loop_iterations(RowKernel::Workgroup { wg }, n_vec) > CPU_LOOP_BUDGET
    {
        wg *= 2;
    }
    RowKernel::Workgroup { wg }
}

/// Loop iterations one invocation may run on a CPU adapter. lavapipe (llvmpipe) gives each
/// invocation a budget of 65535 loop iterations *shared by all loops of the shader* and silently
/// stops looping past it; keep a margin for the reduction loops.
pub const CPU_LOOP_BUDGET: u64 = 60_000;

/// Loop iterations per invocation of `kernel` on rows of `n_vec` accesses (upper bound).
pub fn loop_iterations(kernel: RowKernel, n_vec: u64) -> u64 {
    match kernel {
        // Three passes over the lane's share of the row, three team reductions.
        RowKernel::Team { team, .. } => 3 * n_vec.div_ceil(team as u64) + 3 * 6,
        RowKernel::TeamRegs { rows_per_team, .. } => {
            2 * TEAM_REGS as u64 + rows_per_team as u64 * (3 * TEAM_REGS as u64 + 3 * 6)
        }
        // Two passes over the lane's share, one tree reduction.
        RowKernel::Workgroup { wg } => 2 * n_vec.div_ceil(wg as u64) + 32,
    }
}

fn prev_power_of_two(v: u32) -> u32 {
    1 << (31 - v.leading_zeros())
}

/// Which optional per-element tensors a row-norm call binds; each is an override constant of the
/// kernels (the per-row saved statistics are a uniform flag, `RowParams::write_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RowFlags {
    pub has_weight: bool,
    pub has_bias: bool,
    pub has_residual: bool,
    /// Store `x + residual` (only with a residual).
    pub write_sum: bool,
}

impl RowFlags {
    /// Every combination a call can bind (a sum needs a residual).
    pub fn all() -> impl Iterator<Item = RowFlags> {
        (0..16u32)
            .map(|bits| {
                let f = |i: u32| bits & (1 << i) != 0;
                RowFlags {
                    has_weight: f(0),
                    has_bias: f(1),
                    has_residual: f(2),
                    write_sum: f(3),
                }
            })
            .filter(|f| f.has_residual || !f.write_sum)
    }
}

/// The override constants of a row-norm pipeline, as typed values: the one place their WGSL
/// names are written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowConstants {
    pub mode: RowMode,
    pub flags: RowFlags,
    pub kernel: RowKernel,
    /// Row length in accesses.
    pub n_vec: u64,
    /// Accesses of workgroup cache, or `None` to read x from memory in each pass.
    pub cache: Option<u32>,
    pub activation: crate::Activation,
}

impl RowConstants {
    /// The pipeline these constants select for I/O type `io`.
    pub fn spec(&self, io: Io) -> Specialization {
        let f = self.flags;
        let kernel = match self.kernel {
            RowKernel::Team { .. } => TEAM_KERNEL,
            RowKernel::TeamRegs { .. } => TEAM_REGS_KERNEL,
            RowKernel::Workgroup { .. } => WORKGROUP_KERNEL,
        };
        let s = Specialization::new(kernel, io)
            .set(
                "MODE",
                if self.mode == RowMode::LayerNorm {
                    0
                } else {
                    1
                },
            )
            .flag("HAS_WEIGHT", f.has_weight)
            .flag("HAS_BIAS", f.has_bias)
            .flag("HAS_RESIDUAL", f.has_residual)
            .flag("WRITE_SUM", f.write_sum)
            .with(&self.activation.constants());
        match self.kernel {
            RowKernel::Team {
                team,
                rows_per_group,
                ..
            } => s
                .set("TEAM", team)
                .set("WG", team * rows_per_group)
                .flag("USE_CACHE", self.cache.is_some())
                .set("CACHE_V", self.cache.unwrap_or(1)),
            RowKernel::TeamRegs {
                team,
                rows_per_group,
                rows_per_team,
            } => s
                .set("ROWS_PER_TEAM", rows_per_team)
                .set("TEAM", team)
                .set("WG", team * rows_per_group)
                .set("PER_LANE", regs_per_lane(self.n_vec, team).0)
                .flag("EXACT", regs_per_lane(self.n_vec, team).1),
            RowKernel::Workgroup { wg } => s
                .set("WG", wg)
                .flag("USE_CACHE", self.cache.is_some())
                .set("CACHE_V", self.cache.unwrap_or(1)),
        }
    }
}

/// The naive baseline's constants (benchmarks only).
pub fn naive_spec(mode: RowMode, has_bias: bool, io: Io) -> Specialization {
    Specialization::new(NAIVE_KERNEL, io)
        .set("WG", 64)
        .set("MODE", if mode == RowMode::LayerNorm { 0 } else { 1 })
        .flag("HAS_WEIGHT", true)
        .flag("HAS_BIAS", has_bias)
}

/// Accesses each lane of the register kernel holds for rows of `n_vec` accesses, and whether the
/// team's lanes hold exactly the row (no bounds test). The count is rounded up to one of two
/// values per octave (1, 2, 3, 4, 6, 8, ..., 24, 32): it is the unrolled trip count, a pipeline
/// constant, and the rounding keeps one pipeline for neighbouring row lengths (at most a third
/// of a lane's iterations are masked).
fn regs_per_lane(n_vec: u64, team: u32) -> (u32, bool) {
    const BUCKETS: [u32; 10] = [1, 2, 3, 4, 6, 8, 12, 16, 24, TEAM_REGS];
    let need = n_vec.div_ceil(team as u64).max(1);
    let per = BUCKETS
        .into_iter()
        .find(|&b| b as u64 >= need)
        .unwrap_or(TEAM_REGS);
    (per, n_vec == per as u64 * team as u64)
}

/// Row lengths that reach every kernel shape [`choose`] can make: every length up to 65536 (the
/// longest row any adapter class caches), then powers of two up to 2^26 (each workgroup size of
/// the uncached kernels is chosen for a range `(a, 2a]` of lengths, which holds a power of two).
fn enumerated_lengths() -> impl Iterator<Item = u64> {
    (1..=65536u64).chain((17..=26).map(|e| 1u64 << e))
}

/// Every specialisation the runtime can create on adapters like `classes`: the kernel choice
/// replayed over every row length that makes a different choice, each with every flag
/// combination and activation. Used by `cargo xtask validate`.
pub fn specializations(classes: &[AdapterClass]) -> Vec<Specialization> {
    // (mode, io, kernel, cache, PER_LANE/EXACT of the register kernel): what a length decides.
    type Shape = (RowMode, Io, RowKernel, Option<u32>, Option<(u32, bool)>);
    let mut shapes: Vec<(Shape, u64)> = Vec::new();
    let mut seen = std::collections::HashSet::<Shape>::new();
    for class in classes {
        for n in enumerated_lengths() {
            for io in Io::ALL {
                if io.vec4 && n % 4 != 0 {
                    continue;
                }
                let n_vec = n / io.width() as u64;
                for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
                    let kernel = class.choose(mode, n, io);
                    let cache = class.cache_len(kernel, io, n_vec);
                    let regs = match kernel {
                        RowKernel::TeamRegs { team, .. } => Some(regs_per_lane(n_vec, team)),
                        _ => None,
                    };
                    let shape = (mode, io, kernel, cache, regs);
                    if seen.insert(shape) {
                        shapes.push((shape, n_vec));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for ((mode, io, kernel, cache, _), n_vec) in shapes {
        for flags in RowFlags::all() {
            for activation in crate::Activation::ALL {
                let c = RowConstants {
                    mode,
                    flags,
                    kernel,
                    n_vec,
                    cache,
                    activation,
                };
                out.push(c.spec(io));
            }
        }
    }
    out
}

/// The adapter facts kernel choice depends on, so the choice can be replayed without a device.
#[derive(Clone, Copy, Debug)]
pub struct AdapterClass {
    pub cpu: bool,
    pub subgroups: bool,
    pub subgroup_min: u32,
    pub subgroup_max: u32,
    pub workgroup_storage: u32,
    pub max_invocations: u32,
}

impl AdapterClass {
    /// lavapipe (AVX2), an NVIDIA-like GPU, an AMD-like GPU with 32..64 subgroups, and a
    /// device without subgroups at the WebGPU minimum of 16 KiB workgroup memory.
    pub const TYPICAL: [AdapterClass; 4] = [
        AdapterClass {
            cpu: true,
            subgroups: true,
            subgroup_min: 8,
            subgroup_max: 8,
            workgroup_storage: 32768,
            max_invocations: 1024,
        },
        AdapterClass {
            cpu: false,
            subgroups: true,
            subgroup_min: 32,
            subgroup_max: 32,
            workgroup_storage: 49152,
            max_invocations: 1024,
        },
        AdapterClass {
            cpu: false,
            subgroups: true,
            subgroup_min: 32,
            subgroup_max: 64,
            workgroup_storage: 65536,
            max_invocations: 1024,
        },
        AdapterClass {
            cpu: false,
            subgroups: false,
            subgroup_min: 4,
            subgroup_max: 128,
            workgroup_storage: 16384,
            max_invocations: 256,
        },
    ];

    pub fn of(ctx: &Context) -> AdapterClass {
        let info = ctx.adapter_info();
        AdapterClass {
            cpu: ctx.is_cpu(),
            subgroups: ctx.has_subgroups(),
            subgroup_min: info.subgroup_min_size,
            subgroup_max: info.subgroup_max_size,
            workgroup_storage: ctx.limits().max_compute_workgroup_storage_size,
            max_invocations: ctx.limits().max_compute_invocations_per_workgroup,
        }
    }

    fn choose(&self, mode: RowMode, n: u64, io: Io) -> RowKernel {
        choose_for(self, mode, n, io)
    }

    fn cache_len(&self, kernel: RowKernel, io: Io, n_vec: u64) -> Option<u32> {
        cache_len_for(self.workgroup_storage as u64, kernel, io, n_vec)
    }
}

/// Tensors of one row-norm call. `x` and `y` have the same shape; `weight`/`bias` have the
/// reduced shape `x.shape[axis..]`; `mean`/`rstd` are f32 with one element per row.
#[derive(Clone, Copy, Debug)]
pub struct RowNormArgs<'a> {
    pub x: &'a Tensor,
    pub weight: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    pub y: &'a Tensor,
    pub mean: Option<&'a Tensor>,
    pub rstd: Option<&'a Tensor>,
    /// Fused residual add: normalize `x + residual` (same shape and dtype as x).
    pub residual: Option<&'a Tensor>,
    /// With `residual`: also store `x + residual` here (same shape and dtype as x).
    pub sum: Option<&'a Tensor>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    n: u64,
    io: Io,
    flags: RowFlags,
}

#[derive(Clone)]
struct Plan {
    kernel: RowKernel,
    pipeline: wgpu::ComputePipeline,
}

/// A row-norm op bound to a device: validates calls, picks and caches pipelines and bind groups,
/// and records one dispatch per call.
pub struct RowNorm {
    ctx: Context,
    cfg: RowNormConfig,
    activation: crate::Activation,
    forced: Option<RowKernel>,
    plans: std::sync::Mutex<std::collections::HashMap<PlanKey, Plan>>,
    binds: BindCache,
}

impl RowNorm {
    /// Checks the configuration (eps finite and >= 0, weight_offset finite, dtype usable on the
    /// device). Pipelines are compiled on the first call of each row length.
    pub fn new(ctx: &Context, cfg: RowNormConfig) -> Result<RowNorm> {
        crate::check_eps(cfg.eps)?;
        if !cfg.weight_offset.is_finite() {
            return Err(Error::InvalidParameter {
                name: "weight_offset",
                value: cfg.weight_offset.to_string(),
                why: "must be finite",
            });
        }
        ctx.check_dtype(cfg.dtype)?;
        Ok(RowNorm {
            ctx: ctx.clone(),
            cfg,
            activation: crate::Activation::None,
            forced: None,
            plans: Default::default(),
            binds: BindCache::default(),
        })
    }

    /// Uses `kernel` for every row length instead of the per-adapter choice (tests, benchmarks,
    /// autotuning). A call it cannot serve fails with [`Error::InvalidParameter`].
    pub fn with_kernel(mut self, kernel: RowKernel) -> RowNorm {
        self.forced = Some(kernel);
        self.plans.get_mut().unwrap().clear();
        self
    }

    /// Applies `activation` after the affine, in the same kernel (LayerNorm + GELU, ...).
    pub fn with_activation(mut self, activation: crate::Activation) -> RowNorm {
        self.activation = activation;
        self.plans.get_mut().unwrap().clear();
        self
    }

    pub fn config(&self) -> &RowNormConfig {
        &self.cfg
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Splits `shape` at the configured axis into (rows, row length).
    pub fn split(&self, shape: &[usize]) -> Result<(usize, usize)> {
        let rank = shape.len();
        let axis = self.cfg.axis;
        let a = if axis < 0 { axis + rank as isize } else { axis };
        if rank == 0 || a < 0 || a >= rank as isize {
            return Err(Error::AxisOutOfRange {
                what: "row norm",
                axis,
                rank,
            });
        }
        let a = a as usize;
        Ok((shape[..a].iter().product(), shape[a..].iter().product()))
    }

    /// The kernel a call on `x` would run (after validation), for reports.
    pub fn kernel_for(&self, x: &Tensor) -> Result<(RowKernel, Io)> {
        let (_, n) = self.split(x.shape())?;
        let io = Io {
            dtype: self.cfg.dtype,
            vec4: n % 4 == 0 && x.offset().is_multiple_of(16),
        };
        Ok((
            self.forced
                .unwrap_or_else(|| choose(&self.ctx, self.cfg.mode, n as u64, io)),
            io,
        ))
    }

    fn check_tensor(&self, what: &str, t: &Tensor, shape: &[usize], dtype: DType) -> Result<()> {
        if t.shape() != shape {
            return Err(Error::ShapeMismatch {
                what: what.into(),
                expected: shape.to_vec(),
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

    fn check_stats(&self, what: &str, t: &Tensor, rows: usize) -> Result<()> {
        if t.numel() != rows {
            return Err(Error::ShapeMismatch {
                what: format!("{what} (one value per row)"),
                expected: vec![rows],
                got: t.shape().to_vec(),
            });
        }
        if t.dtype() != DType::F32 {
            return Err(Error::DTypeMismatch {
                what: what.into(),
                expected: DType::F32,
                got: t.dtype(),
            });
        }
        Ok(())
    }

    /// Records the op into `encoder`: one compute pass with one dispatch, or nothing for an empty
    /// tensor. Everything is checked before anything is recorded. Never submits or blocks; after
    /// the first call with given buffers and shape it creates no GPU object.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, a: &RowNormArgs) -> Result<()> {
        let dtype = self.cfg.dtype;
        let shape = a.x.shape();
        let (rows, n) = self.split(shape)?;
        let reduced = &shape[self.axis_index(shape)..];
        self.check_tensor("x", a.x, shape, dtype)?;
        self.check_tensor("y", a.y, shape, dtype)?;
        if let Some(t) = a.residual {
            self.check_tensor("residual", t, shape, dtype)?;
        }
        if let Some(t) = a.sum {
            if a.residual.is_none() {
                return Err(Error::InvalidParameter {
                    name: "sum",
                    value: "without residual".into(),
                    why: "the sum output is x + residual: pass the residual too",
                });
            }
            self.check_tensor("sum", t, shape, dtype)?;
        }
        if let Some(w) = a.weight {
            self.check_tensor("weight", w, reduced, dtype)?;
        }
        if let Some(b) = a.bias {
            self.check_tensor("bias", b, reduced, dtype)?;
        }
        if let Some(m) = a.mean {
            self.check_stats("mean", m, rows)?;
        }
        if let Some(r) = a.rstd {
            self.check_stats("rstd", r, rows)?;
        }
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let x = binding::storage_range(&self.ctx, "x", a.x)?;
        let y = binding::storage_range(&self.ctx, "y", a.y)?;
        let opt = |what, t: Option<&Tensor>| {
            t.map(|t| binding::storage_range(&self.ctx, what, t))
                .transpose()
        };
        let w = opt("weight", a.weight)?;
        let b = opt("bias", a.bias)?;
        let m = opt("mean", a.mean)?;
        let r = opt("rstd", a.rstd)?;
        let res = opt("residual", a.residual)?;
        let sum = opt("sum", a.sum)?;
        binding::check_no_alias(&[
            ("residual", res.as_ref(), false),
            ("sum", sum.as_ref(), true),
            ("x", Some(&x), false),
            ("weight", w.as_ref(), false),
            ("bias", b.as_ref(), false),
            ("y", Some(&y), true),
            ("mean", m.as_ref(), true),
            ("rstd", r.as_ref(), true),
        ])?;

        let vec_align = Io { dtype, vec4: true }.alignment();
        let aligned = [
            Some(&x),
            Some(&y),
            w.as_ref(),
            b.as_ref(),
            res.as_ref(),
            sum.as_ref(),
        ]
        .iter()
        .flatten()
        .all(|r| r.offset % vec_align == 0);
        let io = Io {
            dtype,
            vec4: n % 4 == 0 && aligned,
        };
        let key = PlanKey {
            n: n as u64,
            io,
            flags: RowFlags {
                has_weight: w.is_some(),
                has_bias: b.is_some(),
                has_residual: res.is_some(),
                write_sum: sum.is_some(),
            },
        };
        let plan = self.plan(key)?;

        let n_vec = (n / io.width() as usize) as u32;
        let params = RowParams {
            rows: rows as u32,
            n_vec,
            n: n as u32,
            write_stats: m.is_some() as u32 | (r.is_some() as u32) << 1,
            eps: self.cfg.eps,
            weight_offset: self.cfg.weight_offset,
            selu_alpha: self.activation.selu_params().0,
            selu_lambda: self.activation.selu_params().1,
        };

        let dr = binding::dummy_range(self.ctx.dummy_read());
        let dw0 = binding::dummy_range(self.ctx.dummy_write(0));
        let dw1 = binding::dummy_range(self.ctx.dummy_write(1));
        let dw2 = binding::dummy_range(self.ctx.dummy_write(2));
        let bind = self.binds.get(
            &self.ctx,
            SLOTS,
            &params,
            &[
                &x,
                w.as_ref().unwrap_or(&dr),
                b.as_ref().unwrap_or(&dr),
                &y,
                m.as_ref().unwrap_or(&dw0),
                r.as_ref().unwrap_or(&dw1),
                res.as_ref().unwrap_or(&dr),
                sum.as_ref().unwrap_or(&dw2),
            ],
        )?;
        let groups = match plan.kernel {
            RowKernel::Team { rows_per_group, .. } => (rows as u64).div_ceil(rows_per_group as u64),
            RowKernel::TeamRegs {
                rows_per_group,
                rows_per_team,
                ..
            } => (rows as u64).div_ceil(rows_per_group as u64 * rows_per_team as u64),
            RowKernel::Workgroup { .. } => rows as u64,
        };
        let (gx, gy) = binding::grid(&self.ctx, groups);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(match self.cfg.mode {
                RowMode::LayerNorm => "wgnorm layer_norm",
                RowMode::RmsNorm => "wgnorm rms_norm",
            }),
            timestamp_writes: None,
        });
        pass.set_pipeline(&plan.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }

    fn axis_index(&self, shape: &[usize]) -> usize {
        let a = self.cfg.axis;
        (if a < 0 { a + shape.len() as isize } else { a }) as usize
    }

    fn plan(&self, key: PlanKey) -> Result<Plan> {
        if let Some(p) = self.plans.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let class = AdapterClass::of(&self.ctx);
        let n_vec = key.n / key.io.width() as u64;
        let kernel = self
            .forced
            .unwrap_or_else(|| choose_for(&class, self.cfg.mode, key.n, key.io));
        let cache = cache_len_for(class.workgroup_storage as u64, kernel, key.io, n_vec);
        match kernel {
            RowKernel::Team {
                team,
                rows_per_group,
                ..
            }
            | RowKernel::TeamRegs {
                team,
                rows_per_group,
                ..
            } => {
                let sg_ok = class.subgroups
                    && team.is_power_of_two()
                    && team <= class.subgroup_min
                    && (team * rows_per_group) % class.subgroup_max.max(1) == 0;
                let needs_cache = matches!(
                    kernel,
                    RowKernel::TeamRegs { .. } | RowKernel::Team { cached: true, .. }
                );
                let regs_fit = !needs_cache || cache.is_some();
                if !sg_ok || !regs_fit {
                    return Err(Error::InvalidParameter {
                        name: "kernel",
                        value: format!("{kernel:?}"),
                        why: "the team kernels need subgroups, team <= the minimum subgroup size, a workgroup that is a multiple of the maximum subgroup size, and rows that fit workgroup memory (or TEAM_REGS accesses per lane)",
                    });
                }
            }
            RowKernel::Workgroup { wg } => {
                if !wg.is_power_of_two() || wg > class.max_invocations {
                    return Err(Error::InvalidParameter {
                        name: "kernel",
                        value: format!("{kernel:?}"),
                        why:
                            "the workgroup kernel needs a power-of-two size within the device limit",
                    });
                }
            }
        }
        if class.cpu && loop_iterations(kernel, n_vec) > CPU_LOOP_BUDGET {
            return Err(Error::InvalidParameter {
                name: "kernel",
                value: format!("{kernel:?}"),
                why: "on a CPU adapter each lane of this kernel would loop past the driver's silent 65535-iteration limit for this row length: use more lanes",
            });
        }
        let spec = RowConstants {
            mode: self.cfg.mode,
            flags: key.flags,
            kernel,
            n_vec,
            cache,
            activation: self.activation,
        }
        .spec(key.io);
        let pipeline = self.ctx.pipeline(&spec)?;
        let plan = Plan { kernel, pipeline };
        self.plans.lock().unwrap().insert(key, plan.clone());
        Ok(plan)
    }

    /// Convenience path: allocates `y` (and f32 `mean`/`rstd`, one per row, when `stats`), encodes
    /// and submits.
    /// Returns without waiting for the GPU.
    pub fn forward(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        stats: bool,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let (rows, _) = self.split(x.shape())?;
        let y = self.ctx.empty(x.shape(), self.cfg.dtype)?;
        let (mean, rstd) = if stats {
            (
                Some(self.ctx.empty(&[rows], DType::F32)?),
                Some(self.ctx.empty(&[rows], DType::F32)?),
            )
        } else {
            (None, None)
        };
        self.ctx.record_and_submit(|enc| {
            self.encode(
                enc,
                &RowNormArgs {
                    x,
                    weight,
                    bias,
                    y: &y,
                    mean: mean.as_ref(),
                    rstd: rstd.as_ref(),
                    residual: None,
                    sum: None,
                },
            )
        })?;
        Ok((y, mean, rstd))
    }

    /// Bind groups cached so far (tests of the no-allocation path).
    pub fn cached_bind_groups(&self) -> usize {
        self.binds.len()
    }
}
