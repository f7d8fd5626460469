//! Kernel choice: which kernel shape and tuning a row length gets on an adapter, as a pure
//! function of a few adapter facts ([`AdapterClass`]) so `cargo xtask validate` can replay it
//! without a device.

use crate::shader::Io;
use crate::Context;

use super::RowMode;

/// A kernel shape and its tuning for one row length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowKernel {
    /// `team` lanes of one subgroup per row, `rows_per_group` rows per workgroup (needs
    /// subgroups). `cached`: the rows are read once into workgroup memory (they must fit);
    /// otherwise x is read from memory in each pass (LayerNorm: Chan-merged statistics, then
    /// the output, two reads).
    Team {
        /// Lanes per row (a power of two, at most the minimum subgroup size).
        team: u32,
        /// Rows per workgroup.
        rows_per_group: u32,
        /// Rows read once into workgroup memory.
        cached: bool,
    },
    /// As `Team`, with each lane's share of the row in registers (at most [`TEAM_REGS`]
    /// accesses per lane): short rows without workgroup-memory traffic.
    /// `rows_per_team` consecutive rows per team reuse the lane's registers of weight and bias.
    TeamRegs {
        /// Lanes per row.
        team: u32,
        /// Teams per workgroup.
        rows_per_group: u32,
        /// Consecutive rows each team normalizes.
        rows_per_team: u32,
    },
    /// One workgroup of `wg` lanes (a power of two) per row; caches the row when it fits,
    /// otherwise reads x twice.
    Workgroup {
        /// Lanes per workgroup (a power of two).
        wg: u32,
    },
    /// Each row cut into `chunks` chunks with one workgroup of `wg` lanes each, in two
    /// dispatches (chunk moments, then a merge of the row's chunks and the output): calls with
    /// too few rows to fill the device otherwise (decode steps). Chosen per call from the row
    /// count by [`split_for`]; x is read twice.
    Split {
        /// Lanes per workgroup (a power of two).
        wg: u32,
        /// Chunks per row (the last may be shorter, trailing ones empty).
        chunks: u32,
    },
}

impl RowKernel {
    /// Workgroups a dispatch of `rows` rows launches (the split kernel: per pass).
    pub fn groups(self, rows: u64) -> u64 {
        match self {
            RowKernel::Team { rows_per_group, .. } => rows.div_ceil(rows_per_group as u64),
            RowKernel::TeamRegs {
                rows_per_group,
                rows_per_team,
                ..
            } => rows.div_ceil(rows_per_group as u64 * rows_per_team as u64),
            RowKernel::Workgroup { .. } => rows,
            RowKernel::Split { chunks, .. } => rows * chunks as u64,
        }
    }
}

/// Lanes per workgroup of the split kernel (every adapter class: its chunks are short).
pub const SPLIT_WG: u32 = 64;

/// Most chunks a split row gets: each chunk's partial moments are merged again by every chunk
/// of the row in the output pass.
pub const SPLIT_MAX_CHUNKS: u32 = 256;

/// Calls with fewer rows than this are considered for the split kernel; the plan cache keys
/// them by their row count.
pub const SPLIT_MAX_ROWS: u64 = 64;

/// The split kernel for a call of `rows` rows of `n_vec` accesses when the kernel chosen for its
/// row length, `base`, would launch too few workgroups to occupy `a`; `None` when it would not
/// pay (enough workgroups, or rows too short to cut into chunks of a few accesses per lane).
///
/// Targets: GPUs get about 256 workgroups (a few per compute unit of a large GPU), each lane at
/// least 2 accesses (unmeasured: no GPU yet; the autotune times 2..256 chunks on decode shapes);
/// CPU adapters (a workgroup is one thread's loop) 8 workgroups, each lane at least 256
/// accesses: below that the second dispatch costs more than the idle cores save (llvmpipe,
/// 1x16384 f32: 0.24 ms split, 0.10 ms whole; 1x2^20: 0.21 -> 0.60 of copy).
pub fn split_for(a: &AdapterClass, rows: u64, n_vec: u64, base: RowKernel) -> Option<RowKernel> {
    let (target, per_lane) = if a.cpu { (8u64, 256u64) } else { (256, 2) };
    if matches!(base, RowKernel::Split { .. }) {
        return Some(base);
    }
    let groups = base.groups(rows);
    if rows == 0 || rows >= SPLIT_MAX_ROWS || 2 * groups > target {
        return None;
    }
    let wg = split_wg(a);
    let by_length = n_vec / (wg as u64 * per_lane);
    let chunks = target
        .div_ceil(rows)
        .min(by_length)
        .min(SPLIT_MAX_CHUNKS as u64);
    (chunks >= 2).then_some(RowKernel::Split {
        wg,
        chunks: chunks as u32,
    })
}

/// Lanes per workgroup of the split kernel on `a`.
pub fn split_wg(a: &AdapterClass) -> u32 {
    SPLIT_WG.min(prev_power_of_two(a.max_invocations.max(1)))
}

/// Accesses per chunk when rows of `n_vec` accesses are cut into `chunks` (at least 1).
pub fn split_chunk_len(n_vec: u64, chunks: u32) -> u64 {
    n_vec.div_ceil(chunks.max(1) as u64).max(1)
}

/// Accesses each lane of a team holds at least on CPU adapters (see `choose_for`).
const CPU_MIN_PER_LANE: u32 = 8;

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
pub(super) fn cache_len_for(budget: u64, kernel: RowKernel, io: Io, n_vec: u64) -> Option<u32> {
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
        RowKernel::Split { .. } => None,
    }
}

/// The per-adapter choice for rows of `n` elements. Software rasterisers punish workgroup
/// barriers and like few lanes per row; GPUs want a wide, coalesced team per long row.
pub fn choose(ctx: &Context, mode: RowMode, n: u64, io: Io) -> RowKernel {
    choose_for(&AdapterClass::of(ctx), mode, n, io)
}

pub(super) fn choose_for(a: &AdapterClass, _mode: RowMode, n: u64, io: Io) -> RowKernel {
    let n_vec = n.div_ceil(io.width() as u64).max(1);
    let budget = a.workgroup_storage as u64;
    let (sg_min, sg_max) = (a.subgroup_min.max(1), a.subgroup_max.max(1));
    if a.subgroups && sg_min.is_power_of_two() && sg_max.is_power_of_two() {
        let mut team = sg_min.min(32);
        // CPU adapters, short rows: narrower teams, so each lane holds at least
        // CPU_MIN_PER_LANE accesses (`cargo xtask bench --autotune` on llvmpipe, 16384 x 64,
        // both ops and dtypes: 2 lanes per row within 10% of the best; 8 lanes up to 1.7x and
        // one lane up to 3x slower).
        if a.cpu {
            while team > 1 && n_vec < (team * CPU_MIN_PER_LANE) as u64 {
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
        // Several rows per workgroup (llvmpipe, 256 x 4096 f16 LayerNorm: 64 lanes per group
        // 1.4x faster than one row's 8).
        let uncached = RowKernel::Team {
            team,
            rows_per_group: rows,
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
        // Each pass: the lane's share of one chunk; the output pass also merges the chunks.
        RowKernel::Split { wg, chunks } => {
            let share = split_chunk_len(n_vec, chunks).div_ceil(wg as u64);
            share + 32 + (chunks as u64).div_ceil(wg as u64) + share + 32
        }
    }
}

fn prev_power_of_two(v: u32) -> u32 {
    1 << (31 - v.leading_zeros())
}

/// The adapter facts kernel choice depends on, so the choice can be replayed without a device.
#[derive(Clone, Copy, Debug)]
pub struct AdapterClass {
    /// A CPU adapter (software rasterizer).
    pub cpu: bool,
    /// Subgroup operations are available.
    pub subgroups: bool,
    /// The adapter's minimum subgroup size.
    pub subgroup_min: u32,
    /// The adapter's maximum subgroup size.
    pub subgroup_max: u32,
    /// Bytes of workgroup memory.
    pub workgroup_storage: u32,
    /// Invocations per workgroup.
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

    /// The class of `ctx`'s adapter and device.
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

    /// [`choose`] for this class.
    pub fn choose(&self, mode: RowMode, n: u64, io: Io) -> RowKernel {
        choose_for(self, mode, n, io)
    }

    pub(super) fn cache_len(&self, kernel: RowKernel, io: Io, n_vec: u64) -> Option<u32> {
        cache_len_for(self.workgroup_storage as u64, kernel, io, n_vec)
    }
}

/// The names the bench and tuning tables use: `team{lanes}x{rows}` (cached),
/// `team{lanes}x{rows}-uncached`, `regs{lanes}x{teams}x{rows per team}`, `workgroup{lanes}`,
/// `split{lanes}x{chunks}`.
impl std::fmt::Display for RowKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            RowKernel::Team {
                team,
                rows_per_group,
                cached,
            } => {
                let tail = if cached { "" } else { "-uncached" };
                write!(f, "team{team}x{rows_per_group}{tail}")
            }
            RowKernel::TeamRegs {
                team,
                rows_per_group,
                rows_per_team,
            } => write!(f, "regs{team}x{rows_per_group}x{rows_per_team}"),
            RowKernel::Workgroup { wg } => write!(f, "workgroup{wg}"),
            RowKernel::Split { wg, chunks } => write!(f, "split{wg}x{chunks}"),
        }
    }
}

impl std::str::FromStr for RowKernel {
    type Err = String;

    /// Parses the [`Display`](std::fmt::Display) names back.
    fn from_str(s: &str) -> std::result::Result<RowKernel, String> {
        let nums = |body: &str, count: usize| -> Option<Vec<u32>> {
            let v: Vec<u32> = body
                .split('x')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            (v.len() == count && v.iter().all(|&x| x > 0)).then_some(v)
        };
        let parsed = if let Some(b) = s.strip_prefix("workgroup") {
            nums(b, 1).map(|v| RowKernel::Workgroup { wg: v[0] })
        } else if let Some(b) = s.strip_prefix("split") {
            nums(b, 2).map(|v| RowKernel::Split {
                wg: v[0],
                chunks: v[1],
            })
        } else if let Some(b) = s.strip_prefix("regs") {
            nums(b, 3).map(|v| RowKernel::TeamRegs {
                team: v[0],
                rows_per_group: v[1],
                rows_per_team: v[2],
            })
        } else if let Some(b) = s.strip_prefix("team") {
            let (b, cached) = match b.strip_suffix("-uncached") {
                Some(b) => (b, false),
                None => (b, true),
            };
            nums(b, 2).map(|v| RowKernel::Team {
                team: v[0],
                rows_per_group: v[1],
                cached,
            })
        } else {
            None
        };
        parsed.ok_or_else(|| {
            format!(
                "unknown row kernel {s:?} (teamAxB, teamAxB-uncached, regsAxBxC, workgroupA, splitAxB)"
            )
        })
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn every_kernel_name_parses_back() {
        for k in [
            RowKernel::Team {
                team: 8,
                rows_per_group: 16,
                cached: true,
            },
            RowKernel::Team {
                team: 2,
                rows_per_group: 4,
                cached: false,
            },
            RowKernel::TeamRegs {
                team: 32,
                rows_per_group: 8,
                rows_per_team: 1,
            },
            RowKernel::Workgroup { wg: 256 },
            RowKernel::Split { wg: 64, chunks: 16 },
        ] {
            assert_eq!(k.to_string().parse::<RowKernel>(), Ok(k));
        }
        for bad in [
            "team8",
            "regs8x8",
            "workgroup0",
            "warp32",
            "team8x8-cached",
            "split64",
            "split64x0",
        ] {
            assert!(bad.parse::<RowKernel>().is_err(), "{bad}");
        }
    }
}
