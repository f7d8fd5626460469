//! Pipelines of the row-norm kernels: their binding layout, the kernels, their typed override
//! constants, and the enumeration `cargo xtask validate` translates.

use crate::context::Slot;
use crate::shader::{snippet, Io, Kernel, Specialization};

use super::choose::{split_wg, AdapterClass, RowKernel, TEAM_REGS};
use super::RowMode;

/// Bind-group slots of every one-pass row-norm kernel (the naive baseline too); the split
/// kernel's passes bind subsets of them plus the chunk moments at binding 9.
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

/// The split kernel's first pass: x (+ residual, and the sum store) in, chunk moments out
/// (count, mean, M2, 0 per chunk of each row).
pub const SPLIT_PARTIALS_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read, // x
    Slot::Unused,
    Slot::Unused,
    Slot::Unused,
    Slot::Unused,
    Slot::Unused,
    Slot::Read,      // residual
    Slot::ReadWrite, // sum
    Slot::ReadWrite, // partials
];

/// The split kernel's output pass: [`SLOTS`] without the saved statistics and the sum, plus the
/// chunk moments; 7 storage buffers.
pub const SPLIT_APPLY_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // x
    Slot::Read,      // weight
    Slot::Read,      // bias
    Slot::ReadWrite, // y
    Slot::Unused,
    Slot::Unused,
    Slot::Read, // residual
    Slot::Unused,
    Slot::Read, // partials
];

/// The split kernel's statistics pass: chunk moments in, mean and rstd out.
pub const SPLIT_STATS_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Unused,
    Slot::Unused,
    Slot::Unused,
    Slot::Unused,
    Slot::ReadWrite, // mean
    Slot::ReadWrite, // rstd
    Slot::Unused,
    Slot::Unused,
    Slot::Read, // partials
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
.with_features(wgpu::Features::SUBGROUP)
.with_bf16();

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
.with_features(wgpu::Features::SUBGROUP)
.with_bf16();

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
)
.with_bf16();

/// Split rows, pass 1: chunk moments (no optional feature).
pub const SPLIT_PARTIALS_KERNEL: Kernel = Kernel::new(
    "row_norm/split_partials",
    &[
        snippet::ACTIVATION,
        snippet::MOMENTS,
        snippet::WG_MOMENTS,
        ROW_COMMON,
        crate::shader_file!("row_norm/split_partials.wgsl"),
    ],
    SPLIT_PARTIALS_SLOTS,
)
.with_bf16();

const SPLIT_MERGE: &str = crate::shader_file!("row_norm/split_merge.wgsl");

/// Split rows, pass 2: merge of a row's chunk moments, then the output of one chunk.
pub const SPLIT_APPLY_KERNEL: Kernel = Kernel::new(
    "row_norm/split_apply",
    &[
        snippet::ACTIVATION,
        snippet::MOMENTS,
        snippet::WG_MOMENTS,
        ROW_COMMON,
        SPLIT_MERGE,
        crate::shader_file!("row_norm/split_apply.wgsl"),
    ],
    SPLIT_APPLY_SLOTS,
)
.with_bf16();

/// Split rows, statistics pass (when mean or rstd is kept): the same merge, one workgroup per
/// row, writing the saved statistics.
pub const SPLIT_STATS_KERNEL: Kernel = Kernel::new(
    "row_norm/split_stats",
    &[
        snippet::ACTIVATION,
        snippet::MOMENTS,
        snippet::WG_MOMENTS,
        ROW_COMMON,
        SPLIT_MERGE,
        crate::shader_file!("row_norm/split_stats.wgsl"),
    ],
    SPLIT_STATS_SLOTS,
)
.with_bf16();

/// One invocation per row, three passes: the benchmarks' baseline for row norms.
pub const NAIVE_KERNEL: Kernel = Kernel::new(
    "naive/row_norm",
    &[
        snippet::ACTIVATION,
        snippet::MOMENTS,
        ROW_COMMON,
        crate::shader_file!("naive/row_norm.wgsl"),
    ],
    SLOTS,
);

/// Which optional tensors a row-norm call binds; each is an override constant of the kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RowFlags {
    /// A weight is bound.
    pub has_weight: bool,
    /// A bias is bound.
    pub has_bias: bool,
    /// Any saved statistics (which ones is `RowParams::write_stats`).
    pub write_stats: bool,
    /// A residual is added first.
    pub has_residual: bool,
    /// Store `x + residual` (only with a residual).
    pub write_sum: bool,
}

impl RowFlags {
    /// Every combination a call can bind (a sum needs a residual).
    pub fn all() -> impl Iterator<Item = RowFlags> {
        (0..32u32)
            .map(|bits| {
                let f = |i: u32| bits & (1 << i) != 0;
                RowFlags {
                    has_weight: f(0),
                    has_bias: f(1),
                    has_residual: f(2),
                    write_sum: f(3),
                    write_stats: f(4),
                }
            })
            .filter(|f| f.has_residual || !f.write_sum)
    }
}

/// The override constants of a row-norm pipeline, as typed values: the one place their WGSL
/// names are written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowConstants {
    /// LayerNorm or RMSNorm.
    pub mode: RowMode,
    /// The bound optional tensors.
    pub flags: RowFlags,
    /// The kernel shape and its tuning.
    pub kernel: RowKernel,
    /// Row length in accesses.
    pub n_vec: u64,
    /// Accesses of workgroup cache, or `None` to read x from memory in each pass.
    pub cache: Option<u32>,
    /// Activation fused after the affine.
    pub activation: crate::Activation,
}

impl RowConstants {
    /// The pipeline these constants select for I/O type `io` (the split kernel's output pass).
    pub fn spec(&self, io: Io) -> Specialization {
        let f = self.flags;
        let kernel = match self.kernel {
            RowKernel::Team { .. } => TEAM_KERNEL,
            RowKernel::TeamRegs { .. } => TEAM_REGS_KERNEL,
            RowKernel::Workgroup { .. } => WORKGROUP_KERNEL,
            RowKernel::Split { .. } => SPLIT_APPLY_KERNEL,
        };
        // The split kernel's output pass reads x (+ residual) and stores neither the sum (its
        // first pass did) nor the statistics (its statistics pass does).
        let f = match self.kernel {
            RowKernel::Split { .. } => RowFlags {
                write_sum: false,
                write_stats: false,
                ..f
            },
            _ => f,
        };
        let s = Specialization::new(kernel, io)
            .set("MODE", self.mode.code())
            .flag("HAS_WEIGHT", f.has_weight)
            .flag("HAS_BIAS", f.has_bias)
            .flag("WRITE_STATS", f.write_stats)
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
            RowKernel::Split { wg, .. } => s.set("WG", wg),
        }
    }

    /// The split kernel's first pass (chunk moments; `None` for the one-pass kernels). Only the
    /// statistics mode, the residual and the sum store matter to it, so every weight, bias,
    /// statistics and activation variant shares one pipeline.
    pub fn partials_spec(&self, io: Io) -> Option<Specialization> {
        let RowKernel::Split { wg, .. } = self.kernel else {
            return None;
        };
        Some(
            Specialization::new(SPLIT_PARTIALS_KERNEL, io)
                .set("MODE", self.mode.code())
                .flag("HAS_RESIDUAL", self.flags.has_residual)
                .flag("WRITE_SUM", self.flags.write_sum)
                .set("WG", wg),
        )
    }

    /// The split kernel's statistics pass, when the call keeps mean or rstd (`None` otherwise
    /// and for the one-pass kernels, which write them themselves).
    pub fn stats_spec(&self, io: Io) -> Option<Specialization> {
        let RowKernel::Split { wg, .. } = self.kernel else {
            return None;
        };
        self.flags.write_stats.then(|| {
            Specialization::new(SPLIT_STATS_KERNEL, io)
                .flag("WRITE_STATS", true)
                .set("WG", wg)
        })
    }
}

/// The naive baseline's constants (benchmarks only).
pub fn naive_spec(mode: RowMode, has_bias: bool, io: Io) -> Specialization {
    Specialization::new(NAIVE_KERNEL, io)
        .set("WG", 64)
        .set("MODE", mode.code())
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
            for io in Io::ROWS {
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
    // The split kernel serves calls of few rows of any length: its workgroup size is the only
    // constant the choice sets (the chunk count is a uniform).
    for class in classes {
        let kernel = RowKernel::Split {
            wg: split_wg(class),
            chunks: 2,
        };
        for io in Io::ROWS {
            for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
                let shape = (mode, io, kernel, None, None);
                if seen.insert(shape) {
                    shapes.push((shape, 4));
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut split_specs = std::collections::HashSet::new();
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
                // The split passes ignore some flags: list each of their pipelines once.
                let split = matches!(kernel, RowKernel::Split { .. });
                let passes = std::iter::once(c.spec(io))
                    .chain(c.partials_spec(io))
                    .chain(c.stats_spec(io));
                for s in passes {
                    if !split || split_specs.insert(s.key()) {
                        out.push(s);
                    }
                }
            }
        }
    }
    out
}
