//! The row-norm backward engine (LayerNorm, RMSNorm and their fused residual adds): for an
//! upstream gradient `dy` of `y`, the gradients of `sum(y * dy)` with respect to `x` (and the
//! residual, which is the same), `weight` and `bias`.
//!
//! Three kernels (`shaders/row_grad/`): `dx` (one workgroup per row: statistics, the two row
//! reductions in f32 tree sums, dx), `params` (dweight/dbias partial sums per block of rows) and
//! `reduce` (the blocks summed in a fixed order). No float atomics: every gradient is the same
//! bit for bit from run to run. Layout as the forward's: row-major `[rows, n]` with every dim
//! from `axis` on reduced.

use crate::binding::{self, BindCache, BufferRange};
use crate::context::Slot;
use crate::rownorm::{AdapterClass, RowMode};
use crate::scratch::ScratchCache;
use crate::shader::{Io, Kernel, Specialization};
use crate::uniform::RowGradParams;
use crate::{Context, DType, Error, Result, Tensor};

const COMMON: &str = crate::shader_file!("row_grad/common.wgsl");

/// dx: uniform, x, residual, weight, dy, dsum, dx, stats.
pub const DX_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::Read, // bias (a fused activation's z)
];
/// saved: uniform, rstd, stats.
pub const SAVED_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
/// params: uniform, x, residual, dy, stats, partials, weight, bias (the last two read only
/// with a fused activation).
pub const PARAMS_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::Read,
    Slot::Read,
];
/// reduce: uniform, partials, dweight, dbias.
pub const REDUCE_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite];

/// dx, one workgroup per row.
pub const DX_KERNEL: Kernel = Kernel::new(
    "row_grad/dx",
    &[
        crate::shader::snippet::ACTIVATION,
        COMMON,
        crate::shader_file!("row_grad/dx.wgsl"),
        crate::shader_file!("row_grad/dx_entry_wg.wgsl"),
    ],
    DX_SLOTS,
);
/// [`DX_KERNEL`] with its team sums by subgroup shuffles (needs `SUBGROUP`).
pub const DX_SG_KERNEL: Kernel = Kernel::new(
    "row_grad/dx_sg",
    &[
        crate::shader::snippet::ACTIVATION,
        COMMON,
        crate::shader_file!("row_grad/dx.wgsl"),
        crate::shader_file!("row_grad/dx_entry_sg.wgsl"),
    ],
    DX_SLOTS,
)
.with_features(wgpu::Features::SUBGROUP);
/// The forward's saved rstd into the per-row statistics dx reads (when the call has it).
pub const SAVED_KERNEL: Kernel = Kernel::new(
    "row_grad/saved",
    &[COMMON, crate::shader_file!("row_grad/saved.wgsl")],
    SAVED_SLOTS,
);
/// dweight/dbias partials per block of rows.
pub const PARAMS_KERNEL: Kernel = Kernel::new(
    "row_grad/params",
    &[
        crate::shader::snippet::ACTIVATION,
        COMMON,
        crate::shader_file!("row_grad/params.wgsl"),
    ],
    PARAMS_SLOTS,
);
/// dweight/dbias from the partials, in block order.
pub const REDUCE_KERNEL: Kernel = Kernel::new(
    "row_grad/reduce",
    &[COMMON, crate::shader_file!("row_grad/reduce.wgsl")],
    REDUCE_SLOTS,
);

/// The benchmarks' baseline for dx: one invocation per row, three serial passes (bindings and
/// parameters as [`DX_KERNEL`]).
pub const NAIVE_DX_KERNEL: Kernel = Kernel::new(
    "naive/row_grad",
    &[COMMON, crate::shader_file!("naive/row_grad.wgsl")],
    DX_SLOTS,
);

/// The naive baseline's pipeline (64 rows per workgroup).
pub fn naive_dx_spec(mode: RowMode, io: Io, weight: bool) -> Specialization {
    Specialization::new(NAIVE_DX_KERNEL, io)
        .set("WG", 64)
        .set("MODE", mode.code())
        .flag("HAS_WEIGHT", weight)
}

/// Workgroup size of the column kernels.
const COL_WG: u32 = 64;
/// Blocks of rows in the parameter-gradient pass, at most: enough workgroups for a GPU, few
/// enough partials to stay small (blocks * 2 * n f32).
const MAX_BLOCKS: usize = 128;
/// Rows one lane of the partials pass sums, at most (software rasterisers stop long loops).
const MAX_ROW_BLOCK: usize = 4096;

/// Which optional tensors a call binds: the override constants of the three kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GradFlags {
    /// A weight multiplies the normalized value.
    pub weight: bool,
    /// The fused add: the row is `x + residual`.
    pub residual: bool,
    /// An upstream gradient of the fused add's sum is added to dx.
    pub dsum: bool,
    /// The forward's saved statistics are reused.
    pub given_stats: bool,
    /// dweight is written.
    pub dweight: bool,
    /// dbias is written.
    pub dbias: bool,
    /// The activation fused after the affine ([`crate::Activation::code`]), differentiated.
    pub act: u32,
    /// A bias is bound (read with an activation: z = xhat * w + bias).
    pub bias: bool,
}

/// Lanes per row and rows per workgroup of the dx kernel: on CPU adapters a short team and
/// several rows per workgroup (a workgroup is a loop there, and each barrier level a pass over
/// it), on GPUs a wide team for long rows; team sums by subgroup shuffles where a team fits in
/// a subgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DxShape {
    /// Lanes per row (a power of two).
    pub team: u32,
    /// Rows per workgroup.
    pub rows: u32,
    /// Team sums by subgroup shuffles ([`DX_SG_KERNEL`]) instead of workgroup-memory trees
    /// (llvmpipe, 1024 x 1024 RMSNorm backward: 0.19-0.22 of copy -> 0.23-0.30).
    pub subgroups: bool,
}

impl DxShape {
    /// The shape for rows of `n_vec` accesses on an adapter of `class`.
    pub fn choose(class: &AdapterClass, n_vec: usize) -> DxShape {
        let (team, rows) = match (class.cpu, n_vec) {
            (true, _) => (8, 8),
            (false, 0..=1024) => (32, 8),
            (false, _) => (256, 1),
        };
        let subgroups = class.subgroups
            && team <= class.subgroup_min
            && (team * rows) % class.subgroup_max.max(1) == 0;
        DxShape {
            team,
            rows,
            subgroups,
        }
    }

    /// Every shape [`DxShape::choose`] returns on the typical adapter classes.
    pub fn all() -> Vec<DxShape> {
        let mut out = Vec::new();
        for class in &AdapterClass::TYPICAL {
            for n_vec in [64, 4096] {
                let s = DxShape::choose(class, n_vec);
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }
}

/// The variance convention of a backward: the row norms' (biased, eps inside the square root)
/// or a standardization's (unbiased, or eps outside the square root).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Variance {
    /// Divide by `n - 1`.
    pub unbiased: bool,
    /// `std + eps` instead of `sqrt(var + eps)`.
    pub eps_outside: bool,
}

/// The dx pipeline of a call shape.
pub fn dx_spec(mode: RowMode, io: Io, f: GradFlags, shape: DxShape) -> Specialization {
    dx_spec_with(mode, io, f, shape, Variance::default())
}

/// [`dx_spec`] with a variance convention.
pub fn dx_spec_with(
    mode: RowMode,
    io: Io,
    f: GradFlags,
    shape: DxShape,
    var: Variance,
) -> Specialization {
    let kernel = if shape.subgroups {
        DX_SG_KERNEL
    } else {
        DX_KERNEL
    };
    Specialization::new(kernel, io)
        .flag("UNBIASED", var.unbiased)
        .flag("EPS_OUTSIDE", var.eps_outside)
        .set("WG", shape.team * shape.rows)
        .set("TEAM", shape.team)
        .set("ROWS", shape.rows)
        .set("MODE", mode.code())
        .flag("HAS_RESIDUAL", f.residual)
        .flag("HAS_WEIGHT", f.weight)
        .flag("HAS_DSUM", f.dsum)
        .flag("GIVEN_STATS", f.given_stats)
        .set("ACT", f.act)
        .flag("HAS_BIAS", f.bias && f.act != 0)
}

/// The saved-rstd gather pipeline (the same for LayerNorm and RMSNorm: it copies rstd only).
pub fn saved_spec() -> Specialization {
    Specialization::new(SAVED_KERNEL, Io::F32).set("WG", COL_WG)
}

/// The partials pipeline.
pub fn params_spec(mode: RowMode, io: Io, f: GradFlags) -> Specialization {
    let act = f.act != 0;
    Specialization::new(PARAMS_KERNEL, io)
        .set("WG", COL_WG)
        .set("MODE", mode.code())
        .flag("HAS_RESIDUAL", f.residual)
        .set("ACT", f.act)
        .flag("HAS_WEIGHT", f.weight && act)
        .flag("HAS_BIAS", f.bias && act)
}

/// The reduce pipeline.
pub fn reduce_spec(mode: RowMode, io: Io, f: GradFlags) -> Specialization {
    Specialization::new(REDUCE_KERNEL, io)
        .set("WG", COL_WG)
        .set("MODE", mode.code())
        .flag("HAS_DWEIGHT", f.dweight)
        .flag("HAS_DBIAS", f.dbias)
}

/// The (activation code, bias bound) pairs a mode's backward may have: no bias without an
/// activation (it does not enter the gradients) or under RMSNorm.
fn act_bias(mode: RowMode) -> Vec<(u32, bool)> {
    let mut out = vec![(0, false)];
    for a in crate::Activation::ALL.into_iter().filter(|a| a.code() != 0) {
        out.push((a.code(), false));
        if mode == RowMode::LayerNorm {
            out.push((a.code(), true));
        }
    }
    out
}

/// Every pipeline the engine can create, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = vec![saved_spec()];
    for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
        for io in Io::ALL {
            for (act, bias) in act_bias(mode) {
                for bits in 0..16u32 {
                    let b = |k: u32| bits & (1 << k) != 0;
                    let f = GradFlags {
                        weight: b(0),
                        residual: b(1),
                        dsum: b(2),
                        given_stats: b(3),
                        act,
                        bias,
                        ..Default::default()
                    };
                    for shape in DxShape::all() {
                        out.push(dx_spec(mode, io, f, shape));
                    }
                    out.push(params_spec(mode, io, f));
                }
            }
            out.push(naive_dx_spec(mode, Io { vec4: false, ..io }, true));
            if mode == RowMode::LayerNorm {
                // Standardizations: plain rows, each variance convention.
                for (unbiased, eps_outside) in [(true, false), (false, true), (true, true)] {
                    for shape in DxShape::all() {
                        let var = Variance {
                            unbiased,
                            eps_outside,
                        };
                        let f = GradFlags::default();
                        out.push(dx_spec_with(mode, io, f, shape, var));
                    }
                }
            }
            for (dweight, dbias) in [(true, false), (false, true), (true, true)] {
                let f = GradFlags {
                    dweight,
                    dbias,
                    ..Default::default()
                };
                out.push(reduce_spec(mode, io, f));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.key()));
    out
}

/// Configuration fixed when a row-norm backward is created: the forward's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowGradConfig {
    /// LayerNorm or RMSNorm statistics.
    pub mode: RowMode,
    /// First reduced dim; negative counts from the end.
    pub axis: isize,
    /// The forward's eps.
    pub eps: f32,
    /// RMSNorm: added to the weight before it multiplies (Gemma: 1).
    pub weight_offset: f32,
    /// Storage type of x, residual, weight, dy, dsum, dx, dweight and dbias.
    pub dtype: DType,
    /// The variance over `n - 1` (unbiased standardizations); false for the row norms.
    pub unbiased: bool,
    /// The denominator `std + eps` instead of `sqrt(var + eps)`.
    pub eps_outside: bool,
}

/// Tensors of one backward call. `dy`, `dx`, `residual` and `dsum` have x's shape and dtype;
/// `weight`, `dweight`, `dbias` the reduced shape `x.shape[axis..]` in the same dtype; `mean`
/// and `rstd` (f32, one per row) are the forward's saved statistics when the caller kept them
/// (LayerNorm needs both, RMSNorm `rstd`), recomputed from x otherwise. The saved rstd is used;
/// the saved mean is checked but the kernel recomputes the mean as `shift + delta` from the row
/// (its first pass reads the row anyway), so centred values stay exact at large offsets where an
/// f32-rounded mean would not.
#[derive(Clone, Copy, Debug)]
pub struct RowGradArgs<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// The fused add's second input: the row normalized is `x + residual`.
    pub residual: Option<&'a Tensor>,
    /// The forward's weight (`None`: 1, plus the offset).
    pub weight: Option<&'a Tensor>,
    /// The forward's bias (LayerNorm), read only when an activation follows the affine: the
    /// activation's argument is `xhat * weight + bias`.
    pub bias: Option<&'a Tensor>,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
    /// Upstream gradient of the fused add's `sum` output, added to dx.
    pub dsum: Option<&'a Tensor>,
    /// The forward's saved row means (LayerNorm; checked, then recomputed more precisely).
    pub mean: Option<&'a Tensor>,
    /// The forward's saved row rstd.
    pub rstd: Option<&'a Tensor>,
    /// Output: the gradient of x (and of the residual).
    pub dx: &'a Tensor,
    /// Output: the gradient of the weight, when wanted.
    pub dweight: Option<&'a Tensor>,
    /// Output: the gradient of the bias (LayerNorm), when wanted.
    pub dbias: Option<&'a Tensor>,
}

/// Bound ranges of a checked call.
struct Ranges {
    x: BufferRange,
    residual: Option<BufferRange>,
    weight: Option<BufferRange>,
    bias: Option<BufferRange>,
    dy: BufferRange,
    dsum: Option<BufferRange>,
    mean: Option<BufferRange>,
    rstd: Option<BufferRange>,
    dx: BufferRange,
    dweight: Option<BufferRange>,
    dbias: Option<BufferRange>,
}

/// One binding window of the tensors shaped like x: rows `first..first + len` of `rows`.
#[derive(Clone, Copy, Debug)]
struct RowWindow {
    first: u64,
    len: u64,
    rows: u64,
    row_bytes: u64,
}

impl RowWindow {
    /// The window of `t` (the tensor itself when the window covers every row).
    fn bind(&self, t: &BufferRange) -> BufferRange {
        if self.len == self.rows {
            t.clone()
        } else {
            t.window(self.first * self.row_bytes, self.len * self.row_bytes)
        }
    }

    /// The uniform block of a dispatch over this window: its rows end the call, its first row
    /// is where the bindings start.
    fn params(&self, p: RowGradParams) -> RowGradParams {
        RowGradParams {
            rows: (self.first + self.len) as u32,
            row_base: self.first as u32,
            ..p
        }
    }
}

/// One recorded dispatch: pipeline, bind group and grid.
type Pass = (wgpu::ComputePipeline, wgpu::BindGroup, (u32, u32));

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b).max(1) * b
}

/// A row-norm backward bound to a device.
pub struct RowGrad {
    ctx: Context,
    cfg: RowGradConfig,
    activation: crate::Activation,
    binds: BindCache,
    stats: ScratchCache,
    partials: ScratchCache,
}

mod check;

impl RowGrad {
    /// Checks the configuration (eps finite and >= 0, weight_offset finite).
    pub fn new(ctx: &Context, cfg: RowGradConfig) -> Result<RowGrad> {
        crate::check_eps(cfg.eps)?;
        if !cfg.weight_offset.is_finite() {
            return Err(Error::InvalidParameter {
                name: "weight_offset",
                value: cfg.weight_offset.to_string(),
                why: "must be finite",
            });
        }
        Ok(RowGrad {
            ctx: ctx.clone(),
            cfg,
            activation: crate::Activation::None,
            binds: BindCache::default(),
            stats: ScratchCache::default(),
            partials: ScratchCache::default(),
        })
    }

    /// Checks a call without recording anything (what [`RowGrad::encode`] checks first), so a
    /// caller recording several passes can fail before the first.
    pub fn check_args(&self, a: &RowGradArgs) -> Result<()> {
        self.check(a).map(|_| ())
    }

    /// Differentiates `activation` after the affine (the forward's fused activation): the
    /// calls then read the forward's bias for the activation's argument.
    pub fn with_activation(mut self, activation: crate::Activation) -> RowGrad {
        self.activation = activation;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &RowGradConfig {
        &self.cfg
    }

    /// Records the backward passes into `encoder`. Everything is checked and every bind group
    /// made before the first pass is recorded; nothing is recorded on error. An empty x records
    /// nothing, except that dweight/dbias of a call with no rows are zeroed (the sum over no
    /// rows).
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, a: &RowGradArgs) -> Result<()> {
        let Some((rows, n, r)) = self.check(a)? else {
            return Ok(());
        };
        let (io, flags, params) = self.call_params(rows, n, &r)?;
        let passes = self.passes(a.x.shape(), io, flags, params, &r)?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm row_grad"),
            timestamp_writes: None,
        });
        for (pipeline, bind, (gx, gy)) in &passes {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind, &[]);
            pass.dispatch_workgroups(*gx, *gy, 1);
        }
        Ok(())
    }

    /// The I/O type, override flags and parameter block of a checked call.
    fn call_params(
        &self,
        rows: usize,
        n: usize,
        r: &Ranges,
    ) -> Result<(Io, GradFlags, RowGradParams)> {
        let dtype = self.cfg.dtype;
        let aligned = [
            Some(&r.x),
            r.residual.as_ref(),
            Some(&r.dy),
            r.dsum.as_ref(),
            Some(&r.dx),
            r.weight.as_ref(),
            r.dweight.as_ref(),
            r.dbias.as_ref(),
        ]
        .into_iter()
        .flatten()
        .all(|b| b.offset % Io { dtype, vec4: true }.alignment() == 0);
        let io = Io {
            dtype,
            vec4: n.is_multiple_of(4) && aligned,
        };
        self.ctx.check_io(io)?;
        let flags = GradFlags {
            weight: r.weight.is_some(),
            residual: r.residual.is_some(),
            dsum: r.dsum.is_some(),
            given_stats: r.rstd.is_some(),
            dweight: r.dweight.is_some(),
            dbias: r.dbias.is_some(),
            act: self.activation.code(),
            bias: r.bias.is_some(),
        };
        let (selu_alpha, selu_lambda) = self.activation.selu_params();
        // At most MAX_BLOCKS blocks, each at most MAX_ROW_BLOCK rows (a lane's loop).
        let row_block = rows.div_ceil(MAX_BLOCKS).clamp(1, MAX_ROW_BLOCK);
        let params = RowGradParams {
            rows: rows as u32,
            n_vec: (n / io.width() as usize) as u32,
            n: n as u32,
            eps: self.cfg.eps,
            weight_offset: self.cfg.weight_offset,
            row_block: row_block as u32,
            blocks: rows.div_ceil(row_block) as u32,
            row_base: 0,
            selu_alpha,
            selu_lambda,
            _pad0: 0,
            _pad1: 0,
        };
        Ok((io, flags, self.fit_blocks(params)?))
    }

    /// Bytes per row of the tensors shaped like x, and the device's binding limit and offset
    /// alignment.
    fn row_limits(&self, params: &RowGradParams) -> (u64, u64, u64) {
        let limits = self.ctx.limits();
        (
            params.n as u64 * self.cfg.dtype.size(),
            limits.max_storage_buffer_binding_size,
            limits.min_storage_buffer_offset_alignment as u64,
        )
    }

    /// Rows per binding window (all of them when x fits one binding): a multiple of the
    /// parameter pass's blocks, so every block sums the same rows in the same order whatever
    /// the windows, and of the rows that keep each window's offset aligned.
    fn window_rows(&self, params: &RowGradParams) -> u64 {
        let (row_bytes, limit, align) = self.row_limits(params);
        let rows = params.rows as u64;
        if rows * row_bytes <= limit {
            return rows.max(1);
        }
        let step = lcm(
            params.row_block as u64,
            align / gcd(row_bytes.max(1), align),
        );
        limit / row_bytes.max(1) / step * step
    }

    /// The binding windows of a call's tensors shaped like x (one when they fit a binding).
    fn row_windows(&self, params: &RowGradParams) -> Vec<RowWindow> {
        let per_window = self.window_rows(params).max(1);
        let rows = params.rows as u64;
        let row_bytes = params.n as u64 * self.cfg.dtype.size();
        (0..rows)
            .step_by(per_window as usize)
            .map(|first| RowWindow {
                first,
                len: per_window.min(rows - first),
                rows,
                row_bytes,
            })
            .collect()
    }

    /// The call's parameters with blocks small enough that a window holds whole ones: the
    /// adapter's blocks unless one block of rows exceeds a binding (then the parameter sums,
    /// still deterministic, follow the binding limit). A row past the limit is refused.
    fn fit_blocks(&self, mut params: RowGradParams) -> Result<RowGradParams> {
        let (row_bytes, limit, align) = self.row_limits(&params);
        while self.window_rows(&params) == 0 {
            let unit = align / gcd(row_bytes.max(1), align);
            if params.row_block <= 1 || row_bytes * unit > limit {
                return Err(Error::TooLargeForBinding {
                    what: "x (the rows of one aligned binding window)".into(),
                    bytes: row_bytes * unit,
                    limit,
                });
            }
            params.row_block = params.row_block.div_ceil(2);
            params.blocks = params.rows.div_ceil(params.row_block);
        }
        Ok(params)
    }

    /// The pipelines, bind groups and grids of a call: dx (when there are rows), then the
    /// partials and the reduce (when dweight or dbias is wanted).
    fn passes(
        &self,
        key: &[usize],
        io: Io,
        flags: GradFlags,
        params: RowGradParams,
        r: &Ranges,
    ) -> Result<Vec<Pass>> {
        let ctx = &self.ctx;
        let rows = params.rows as usize;
        // Per row (shift, delta, rstd, 0).
        let stats = self.stats.get(ctx, key, &[rows.max(1), 4], DType::F32)?;
        let stats = binding::storage_range(ctx, "stats", &stats)?;
        let dr = binding::dummy_range(ctx.dummy_read());
        let mode = self.cfg.mode;
        let mut passes = Vec::new();
        if let (Some(rstd), true) = (&r.rstd, rows > 0) {
            let bind = self.binds.get(ctx, SAVED_SLOTS, &params, &[rstd, &stats])?;
            let groups = binding::grid(ctx, (rows as u64).div_ceil(COL_WG as u64));
            passes.push((ctx.pipeline(&saved_spec())?, bind, groups));
        }
        let windows = self.row_windows(&params);
        let shape = DxShape::choose(&AdapterClass::of(ctx), params.n_vec as usize);
        let var = Variance {
            unbiased: self.cfg.unbiased,
            eps_outside: self.cfg.eps_outside,
        };
        let dx_pipeline = ctx.pipeline(&dx_spec_with(mode, io, flags, shape, var))?;
        for w in &windows {
            let bind = self.binds.get(
                ctx,
                DX_SLOTS,
                &w.params(params),
                &[
                    &w.bind(&r.x),
                    &r.residual.as_ref().map_or(dr.clone(), |t| w.bind(t)),
                    r.weight.as_ref().unwrap_or(&dr),
                    &w.bind(&r.dy),
                    &r.dsum.as_ref().map_or(dr.clone(), |t| w.bind(t)),
                    &w.bind(&r.dx),
                    &stats,
                    r.bias.as_ref().unwrap_or(&dr),
                ],
            )?;
            let groups = binding::grid(ctx, w.len.div_ceil(shape.rows as u64));
            passes.push((dx_pipeline.clone(), bind, groups));
        }
        if flags.dweight || flags.dbias {
            passes.extend(self.param_passes((key, io, flags, params), r, &stats, &windows)?);
        }
        Ok(passes)
    }

    /// The parameter gradients' passes: per window the partials of its blocks of rows, then one
    /// reduce over every block in order.
    fn param_passes(
        &self,
        (key, io, flags, params): (&[usize], Io, GradFlags, RowGradParams),
        r: &Ranges,
        stats: &BufferRange,
        windows: &[RowWindow],
    ) -> Result<Vec<Pass>> {
        let ctx = &self.ctx;
        let (mode, n) = (self.cfg.mode, params.n as usize);
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw = binding::dummy_range(ctx.dummy_write(0));
        let mut passes = Vec::new();
        let blocks = params.blocks as usize;
        let partials = self
            .partials
            .get(ctx, key, &[(blocks * 2 * n).max(4)], DType::F32)?;
        let partials = binding::storage_range(ctx, "partials", &partials)?;
        let col_groups = (params.n_vec as u64).div_ceil(COL_WG as u64) as u32;
        let params_pipeline = ctx.pipeline(&params_spec(mode, io, flags))?;
        for w in windows {
            let residual = r.residual.as_ref().map_or(dr.clone(), |t| w.bind(t));
            let bind = self.binds.get(
                ctx,
                PARAMS_SLOTS,
                &w.params(params),
                &[
                    &w.bind(&r.x),
                    &residual,
                    &w.bind(&r.dy),
                    stats,
                    &partials,
                    r.weight.as_ref().unwrap_or(&dr),
                    r.bias.as_ref().unwrap_or(&dr),
                ],
            )?;
            let window_blocks = w.len.div_ceil(params.row_block as u64) as u32;
            passes.push((params_pipeline.clone(), bind, (col_groups, window_blocks)));
        }
        let outs = [r.dweight.as_ref(), r.dbias.as_ref()].map(|o| o.unwrap_or(&dw));
        let bind = self
            .binds
            .get(ctx, REDUCE_SLOTS, &params, &[&partials, outs[0], outs[1]])?;
        let pipeline = ctx.pipeline(&reduce_spec(mode, io, flags))?;
        passes.push((pipeline, bind, (col_groups, 1)));
        Ok(passes)
    }
}
