//! The gyromidpoint reduction and Poincaré midpoint batch normalization: the staged kernel of
//! `shaders/poincare/midpoint.wgsl` and the host plan around it.

use crate::{BallConfig, BallParams};
use wgnorm_core::binding::{self, BindCache, BufferRange};
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Error, Result, Slot, Tensor};

use crate::{check_curvature, check_u32, max_norm, PointView, CPU_LOOP_BUDGET};

const SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
];
const WG: usize = 256;
/// The finishing stages sum the tile partials in one workgroup: keep them few.
const MAX_TILES: usize = 4096;
/// Floats per point in the scratch (`PS` in `scratch.wgsl`).
const PS: usize = 5;
const N_SCALARS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Weights = 0,
    Colsum = 1,
    Mean = 2,
    Dist = 3,
    Var = 4,
    Apply = 5,
}

/// Every stage, in the order they run.
const STAGES: [Stage; 6] = [
    Stage::Weights,
    Stage::Colsum,
    Stage::Mean,
    Stage::Dist,
    Stage::Var,
    Stage::Apply,
];

/// Terms one invocation adds in sequence in the row-layout tile sums (the rest is trees).
const CT_RUN: usize = 32;

/// Pipeline constants besides the stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags {
    tangent: bool,
    rows: bool,
    use_running: bool,
    update_running: bool,
    out_m: bool,
    /// Row layout: coordinates per workgroup in the tile sums (a power of two <= WG).
    dw: usize,
    /// Point blocks: the per-point stages and the tile sums take 4 consecutive points per
    /// access (channel-major layouts whose points run in multiples of 4, aligned bindings).
    blocks: bool,
}

/// Points per block when [`Flags::blocks`] (the shader's `VW` and `PG`).
const BLOCK: usize = 4;

/// Whether a stage reads or writes points (the finishing stages run one workgroup over `[d]`).
fn per_point(stage: Stage) -> bool {
    !matches!(stage, Stage::Mean | Stage::Var)
}

/// The midpoint kernel's scratch layout (offsets of each part), shared with its backward.
pub(crate) const MIDPOINT_SCRATCH: &str = wgnorm_core::shader_file!("poincare/scratch.wgsl");

/// The staged gyromidpoint / midpoint batch-norm kernel (`STAGE` selects the stage).
pub const MIDPOINT_KERNEL: Kernel = Kernel::new(
    "poincare/midpoint",
    &[
        crate::POINCARE_COMMON,
        wgnorm_core::shader::snippet::WG_SUM,
        MIDPOINT_SCRATCH,
        wgnorm_core::shader_file!("poincare/midpoint.wgsl"),
    ],
    SLOTS,
);

fn stage_spec(dtype: DType, stage: Stage, f: Flags) -> Specialization {
    let io = Io {
        dtype,
        vec4: f.blocks && per_point(stage),
    };
    let s = Specialization::new(MIDPOINT_KERNEL, io)
        .set("WG", WG as u32)
        .set("PG", if f.blocks { BLOCK as u32 } else { 1 })
        .set("STAGE", stage as u32)
        .flag("TANGENT", f.tangent)
        .flag("ROWS", f.rows)
        .flag("USE_RUNNING", f.use_running)
        .flag("UPDATE_RUNNING", f.update_running)
        .flag("OUT_M", f.out_m);
    if stage == Stage::Colsum && f.rows {
        s.set("DW", f.dw as u32)
    } else {
        s
    }
}

/// How points are tiled over workgroups.
#[derive(Clone, Copy, Debug)]
struct Tiling {
    /// Per-point stages: `ppt` points per invocation, `tiles` workgroups of WG*ppt points.
    ppt: usize,
    tiles: usize,
    /// Tile sums: `ctiles` workgroups (times the coordinate groups) of `ct_points` points.
    ctiles: usize,
    ct_points: usize,
    /// Row layout: coordinates per tile-sum workgroup.
    dw: usize,
}

impl Tiling {
    fn new(ctx: &Context, view: &PointView, blocks: bool) -> Result<Tiling> {
        let (p, d) = (view.points(), view.d);
        // A software rasterizer wants longer invocations; a GPU one point per invocation. Up
        // to 4 points (one block) per invocation on CPU adapters: 16 measured the same on
        // 32x64x28x28 (midpoint 0.12-0.15, batch norm 0.09-0.10 either way) with a quarter of
        // the workgroups (7), which two cores share unevenly.
        let base = if ctx.is_cpu() {
            (16384 / d.max(1)).clamp(1, 4)
        } else {
            1
        };
        let mut ppt = base.max(p.div_ceil(WG * MAX_TILES));
        if blocks {
            ppt = ppt.next_multiple_of(BLOCK);
        }
        let tiles = p.div_ceil(WG * ppt);
        let rows = view.s == 1;
        let dw = d.next_power_of_two().min(WG);
        // Channel layout: a workgroup tree per (tile, coordinate). On a software rasterizer each
        // barrier of that tree costs a switch per SIMD chunk, so its tiles are long (64 points
        // in sequence per invocation; measured 10.5 -> see README on [32, 64, 28, 28]).
        let ct_ppt = if ctx.is_cpu() { 64 } else { ppt };
        let ct_points = if rows { WG / dw * CT_RUN } else { WG * ct_ppt };
        let ctiles = p.div_ceil(ct_points);
        if ctx.is_cpu() {
            let per_lane = [
                2 * ppt * d,
                CT_RUN.max(ct_ppt),
                tiles.div_ceil(WG) + (ctiles * d).div_ceil(WG) + 8 * d.div_ceil(WG),
            ];
            if per_lane.iter().any(|&n| n as u64 > CPU_LOOP_BUDGET) {
                return Err(Error::InvalidParameter {
                    name: "shape",
                    value: format!("{p} points of dim {d}"),
                    why: "on a CPU adapter an invocation would loop past the driver's 65535-iteration limit",
                });
            }
        }
        Ok(Tiling {
            ppt,
            tiles,
            ctiles,
            ct_points,
            dw,
        })
    }

    fn scratch_len(&self, view: &PointView) -> usize {
        // Groups of up to BLOCK points: the per-point part is padded to whole groups.
        let points = view.points().next_multiple_of(BLOCK);
        2 * view.d + N_SCALARS + PS * points + self.ctiles * view.d + 2 * self.tiles
    }
}

/// The staged kernel bound to one call: a bind group and the dispatch plan.
pub(crate) struct Engine<'a> {
    ctx: &'a Context,
    dtype: DType,
    view: PointView,
    tiling: Tiling,
    flags: Flags,
    bind: wgpu::BindGroup,
    /// The call's parameter block and scratch, which the midpoint's backward reads after the
    /// forward's stages.
    pub(crate) params: BallParams,
    pub(crate) scratch: BufferRange,
}

impl Engine<'_> {
    fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, stage: Stage, flags: Flags) -> Result<()> {
        let pipeline = self.ctx.pipeline(&stage_spec(self.dtype, stage, flags))?;
        let (gx, gy, gz) = match stage {
            Stage::Mean | Stage::Var => (1, 1, 1),
            Stage::Colsum => {
                let (gx, gy) = binding::grid(self.ctx, self.tiling.ctiles as u64);
                let gz = if flags.rows {
                    self.view.d.div_ceil(self.tiling.dw)
                } else {
                    self.view.d
                };
                (gx, gy, gz as u32)
            }
            _ => {
                let (gx, gy) = binding::grid(self.ctx, self.tiling.tiles as u64);
                (gx, gy, 1)
            }
        };
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(gx, gy, gz);
        Ok(())
    }

    /// Records the stages: the midpoint (or the running mean), then for batch norm the variance
    /// and the output.
    pub(crate) fn run(&self, enc: &mut wgpu::CommandEncoder, batch_norm: bool) -> Result<()> {
        let last = if batch_norm {
            Stage::Apply
        } else {
            Stage::Mean
        };
        self.record(enc, last)
    }

    /// Records the batch norm's statistics (midpoint, variance, gain) into the scratch without
    /// the output: what its backward reads.
    pub(crate) fn run_statistics(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        self.record(enc, Stage::Var)
    }

    /// The stages up to `last` (in the order of [`Stage`]).
    fn record(&self, enc: &mut wgpu::CommandEncoder, last: Stage) -> Result<()> {
        let f = self.flags;
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm poincare midpoint"),
            timestamp_writes: None,
        });
        for stage in STAGES.into_iter().filter(|s| *s as u32 <= last as u32) {
            if stage == Stage::Colsum && f.use_running {
                continue;
            }
            self.dispatch(&mut pass, stage, f)?;
        }
        Ok(())
    }

    /// Points per scratch group of this call (the shaders' `PG`).
    pub(crate) fn point_group(&self) -> u32 {
        if self.flags.blocks {
            BLOCK as u32
        } else {
            1
        }
    }

    /// Workgroups of the per-point stages.
    pub(crate) fn tiles(&self) -> usize {
        self.tiling.tiles
    }
}

/// Everything the staged kernel binds, checked.
struct Bound<'a> {
    x: &'a Tensor,
    bias: Option<&'a Tensor>,
    weight: Option<&'a Tensor>,
    y: &'a Tensor,
    running_mean: Option<&'a Tensor>,
    running_var: Option<&'a Tensor>,
}

#[allow(clippy::too_many_arguments)]
fn prepare<'a>(
    ctx: &'a Context,
    binds: &BindCache,
    scratch: &ScratchCache,
    c: f32,
    momentum: f32,
    dtype: DType,
    view: PointView,
    b: &Bound,
    flags: Flags,
) -> Result<Engine<'a>> {
    let xr = binding::storage_range(ctx, "x", b.x)?;
    let yr = binding::storage_range(ctx, "y", b.y)?;
    let vec_io = Io { dtype, vec4: true };
    // y is bound as vectors too: the midpoint's m must be whole vectors.
    let blocks = view.s > 1
        && view.s.is_multiple_of(BLOCK)
        && b.y.numel().is_multiple_of(BLOCK)
        && xr.offset % vec_io.alignment() == 0
        && yr.offset % vec_io.alignment() == 0
        && ctx.check_io(vec_io).is_ok();
    let tiling = Tiling::new(ctx, &view, blocks)?;
    let opt = |what: &str, t: Option<&Tensor>, dummy: &wgpu::Buffer| -> Result<BufferRange> {
        match t {
            Some(t) => binding::storage_range(ctx, what, t),
            None => Ok(binding::dummy_range(dummy)),
        }
    };
    let br = opt("bias", b.bias, ctx.dummy_read())?;
    let wr = opt("weight", b.weight, ctx.dummy_read())?;
    let rmr = opt("running_mean", b.running_mean, ctx.dummy_write(0))?;
    let rvr = opt("running_var", b.running_var, ctx.dummy_write(1))?;
    binding::check_no_alias(&[
        ("x", Some(&xr), false),
        ("bias", b.bias.map(|_| &br), false),
        ("weight", b.weight.map(|_| &wr), false),
        ("y", Some(&yr), true),
        ("running_mean", b.running_mean.map(|_| &rmr), true),
        ("running_var", b.running_var.map(|_| &rvr), true),
    ])?;
    let len = tiling.scratch_len(&view);
    let key = [view.n, view.d, view.s, usize::MAX];
    let st = scratch.get(ctx, &key, &[len], DType::F32)?;
    let sr = binding::storage_range(ctx, "scratch", &st)?;
    let params = BallParams {
        d: check_u32("feature dim", view.d)?,
        s: check_u32("stride", view.s)?,
        p: check_u32("points", view.points())?,
        bcast: 0,
        tiles: tiling.tiles as u32,
        tile_points: (WG * tiling.ppt) as u32,
        ppt: tiling.ppt as u32,
        ctiles: check_u32("tiles", tiling.ctiles)?,
        c,
        max_norm: max_norm(c),
        momentum,
        ct_points: tiling.ct_points as u32,
    };
    check_u32("scratch length", len)?;
    let bind = binds.get(ctx, SLOTS, &params, &[&xr, &br, &wr, &sr, &yr, &rmr, &rvr])?;
    Ok(Engine {
        ctx,
        dtype,
        view,
        tiling,
        flags: Flags {
            rows: view.s == 1,
            dw: tiling.dw,
            blocks,
            ..flags
        },
        bind,
        params,
        scratch: sr,
    })
}

/// Whether the midpoint of `x`'s points (`view`) has anything to compute: not when they have no
/// coordinates; a batch without points has no midpoint, an error.
pub(crate) fn has_points(x: &Tensor, view: &PointView) -> Result<bool> {
    if view.d == 0 {
        return Ok(false);
    }
    if view.points() == 0 {
        return Err(Error::InvalidParameter {
            name: "x",
            value: format!("{:?}", x.shape()),
            why: "the midpoint of no points is undefined",
        });
    }
    Ok(true)
}

/// The gyromidpoint (Möbius gyromidpoint, docs/methods.md C1) of a batch of points:
/// `z = sum_i lambda_i x_i / sum_i (lambda_i - 1)`, `m = z / (1 + sqrt(1 - c|z|^2))`, with the
/// conformal factors `lambda_i = 2 / (1 - c|x_i|^2)`. Points along the feature axis (see the
/// crate docs); inputs are projected into the ball first.
///
/// A reduction in two phases: per-tile weighted sums (one tile per workgroup, `f32`, at most 32
/// terms added in sequence, the rest trees), then one workgroup adds the tiles pairwise, so the
/// rounding error grows with the logarithm of the point count, not with the count.
pub struct PoincareMidpoint {
    pub(crate) ctx: Context,
    pub(crate) c: f32,
    pub(crate) axis: isize,
    pub(crate) dtype: DType,
    pub(crate) binds: BindCache,
    pub(crate) scratch: ScratchCache,
    /// The backward's bind groups and its `[dS | dT]` vector.
    pub(crate) grad_binds: BindCache,
    pub(crate) grad_scratch: ScratchCache,
}

impl PoincareMidpoint {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: BallConfig) -> Result<Self> {
        let BallConfig {
            c,
            feature_axis,
            dtype,
        } = cfg;
        check_curvature(c)?;
        ctx.check_io(Io { dtype, vec4: false })?;
        Ok(PoincareMidpoint {
            ctx: ctx.clone(),
            c,
            axis: feature_axis,
            dtype,
            binds: BindCache::default(),
            scratch: ScratchCache::default(),
            grad_binds: BindCache::default(),
            grad_scratch: ScratchCache::default(),
        })
    }

    /// Records the midpoint of the points of `x` into `m` (shape `[D]`, this op's dtype).
    /// A batch without points has no midpoint: that is an error, not a no-op.
    pub fn encode(&self, enc: &mut wgpu::CommandEncoder, x: &Tensor, m: &Tensor) -> Result<()> {
        x.expect_dtype("x", self.dtype)?;
        m.expect_dtype("m", self.dtype)?;
        let view = PointView::new(x.shape(), self.axis, "poincare midpoint")?;
        m.expect_shape("m", &[view.d])?;
        if !has_points(x, &view)? {
            return Ok(());
        }
        self.midpoint_engine(x, m, view, true)?.run(enc, false)
    }

    /// The forward's staged kernel bound to the points of `x` (`view`), its output `y` written
    /// only with `out_m` (the backward binds dx there and reads the stages' scratch).
    pub(crate) fn midpoint_engine(
        &self,
        x: &Tensor,
        y: &Tensor,
        view: PointView,
        out_m: bool,
    ) -> Result<Engine<'_>> {
        let b = Bound {
            x,
            bias: None,
            weight: None,
            y,
            running_mean: None,
            running_var: None,
        };
        let flags = Flags {
            out_m,
            ..Flags::default()
        };
        let (binds, scratch) = (&self.binds, &self.scratch);
        prepare(
            &self.ctx, binds, scratch, self.c, 0.0, self.dtype, view, &b, flags,
        )
    }

    /// Allocates `m`, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_poincare::{BallConfig, PoincareMidpoint};
    ///
    /// // The gyromidpoint of points of the Poincare ball (curvature -c), features on the last axis.
    /// let ctx = Context::new()?;
    /// let pts = ctx.upload_f32(&[0.5, 0.0, -0.5, 0.0, 0.0, 0.3, 0.0, -0.3], &[4, 2])?;
    /// let mid = PoincareMidpoint::new(&ctx, BallConfig { c: 1.0, ..Default::default() })?;
    /// let m = ctx.download(&mid.forward(&pts)?)?;
    /// // Points symmetric about the origin have the origin as their midpoint.
    /// assert!(m.len() == 2 && m.iter().all(|v| v.abs() < 1e-6), "{m:?}");
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let view = PointView::new(x.shape(), self.axis, "poincare midpoint")?;
        let m = self.ctx.empty(&[view.d], self.dtype)?;
        self.ctx.record_and_submit(|enc| self.encode(enc, x, &m))?;
        Ok(m)
    }
}

/// What is fixed when a Poincaré batch norm is created.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoincareBatchNormConfig {
    /// Curvature -c of the ball. Default 0.1 (Poincaré ResNet).
    pub c: f32,
    /// The feature axis (D): 1 for NCHW and for `[P, D]`. Default 1.
    pub feature_axis: isize,
    /// Weight of the batch statistics in the running update (the extension). Default 0.1.
    pub momentum: f32,
    /// Storage type of x and y (arithmetic is f32).
    pub dtype: DType,
}

impl Default for PoincareBatchNormConfig {
    fn default() -> Self {
        PoincareBatchNormConfig {
            c: 0.1,
            feature_axis: 1,
            momentum: 0.1,
            dtype: DType::F32,
        }
    }
}

/// Which statistics normalize, and whether the running ones are updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoincareStatistics {
    /// The batch midpoint and variance: what the official code does in training **and**
    /// inference.
    Batch,
    /// Training with the running-statistics extension: normalize with the batch statistics and
    /// move the running ones towards them (`running_mean <- exp_r(momentum * log_r(m))`,
    /// `running_var <- (1 - momentum) running_var + momentum * var`, biased var).
    BatchUpdateRunning,
    /// Inference with the running-statistics extension: normalize with `running_mean` and
    /// `running_var`.
    Running,
}

/// Inputs of a Poincaré batch norm. `x`: tangent vectors at the origin along the feature axis
/// (NCHW: every pixel a point of dimension C). `bias`: `[D]` f32, a tangent vector at the origin
/// (beta = exp0(bias)). `weight`: `[1]` f32, the variance parameter w. `running_mean` (`[D]`,
/// a point) and `running_var` (`[1]`), f32, for the running-statistics modes.
#[derive(Clone, Copy, Debug)]
pub struct PoincareBatchNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Shift (beta) added after the scale.
    pub bias: &'a Tensor,
    /// Scale (gamma) applied after normalizing.
    pub weight: &'a Tensor,
    /// Running mean (f32, one per channel): read at inference, updated in training.
    pub running_mean: Option<&'a Tensor>,
    /// Running variance (f32, one per channel): read at inference, updated in training.
    pub running_var: Option<&'a Tensor>,
}

/// Poincaré midpoint batch normalization (van Spengler et al. 2023, docs/methods.md C1):
///
/// 1. `x_i = exp0(v_i)`;
/// 2. `m` = gyromidpoint of the `x_i`, `sigma^2 = (1/P) sum_i d(x_i, m)^2` (one scalar, biased);
/// 3. `u_i = transp_{m->beta}(log_m x_i) * sqrt(w / (sigma^2 + 1e-6))`, `beta = exp0(bias)`;
/// 4. `y_i = log0(exp_beta(u_i))` — a tangent vector at the origin again.
///
/// Six dispatches in one compute pass: point weights, tile sums, midpoint, distances, variance,
/// output. x is read five times (twice in the distance stage); the scratch holds five floats per
/// point so the output stage needs one pass over x.
pub struct PoincareBatchNorm {
    pub(crate) ctx: Context,
    pub(crate) cfg: PoincareBatchNormConfig,
    binds: BindCache,
    scratch: ScratchCache,
    /// The backward's bind groups, its scratch and the stand-ins for unwanted gradients.
    pub(crate) grad_binds: BindCache,
    pub(crate) grad_scratch: ScratchCache,
    pub(crate) unwanted: ScratchCache,
}

impl PoincareBatchNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: PoincareBatchNormConfig) -> Result<Self> {
        check_curvature(cfg.c)?;
        wgnorm_core::check_unit_interval("momentum", cfg.momentum)?;
        ctx.check_io(Io {
            dtype: cfg.dtype,
            vec4: false,
        })?;
        Ok(PoincareBatchNorm {
            ctx: ctx.clone(),
            cfg,
            binds: BindCache::default(),
            scratch: ScratchCache::default(),
            grad_binds: BindCache::default(),
            grad_scratch: ScratchCache::default(),
            unwanted: ScratchCache::default(),
        })
    }

    /// Records the layer into `y` (the shape of x).
    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        inputs: &PoincareBatchNormInputs,
        y: &Tensor,
        statistics: PoincareStatistics,
    ) -> Result<()> {
        y.expect_dtype("y", self.cfg.dtype)?;
        let Some(view) = self.check(inputs, statistics)? else {
            return Ok(());
        };
        y.expect_shape("y", inputs.x.shape())?;
        self.engine(inputs, y, view, statistics)?.run(enc, true)
    }

    /// Checks the inputs against the configuration and the statistics mode: the points' view,
    /// or `None` when there is nothing to compute.
    pub(crate) fn check(
        &self,
        inputs: &PoincareBatchNormInputs,
        statistics: PoincareStatistics,
    ) -> Result<Option<PointView>> {
        let dtype = self.cfg.dtype;
        inputs.x.expect_dtype("x", dtype)?;
        let view = PointView::new(
            inputs.x.shape(),
            self.cfg.feature_axis,
            "poincare batch norm",
        )?;
        inputs.bias.expect_dtype("bias", DType::F32)?;
        inputs.bias.expect_shape("bias", &[view.d])?;
        inputs.weight.expect_dtype("weight", DType::F32)?;
        inputs.weight.expect_shape("weight", &[1])?;
        let running = statistics != PoincareStatistics::Batch;
        for (what, t, shape) in [
            ("running_mean", inputs.running_mean, [view.d]),
            ("running_var", inputs.running_var, [1]),
        ] {
            match t {
                Some(t) => {
                    t.expect_dtype(what, DType::F32)?;
                    t.expect_shape(what, &shape)?;
                }
                None if running => {
                    return Err(Error::InvalidParameter {
                        name: what,
                        value: "None".into(),
                        why: "the running-statistics modes need running_mean and running_var",
                    })
                }
                None => {}
            }
        }
        if view.points() == 0 || view.d == 0 {
            return Ok(None);
        }
        // One point is its own midpoint with variance 0: y would be its f32 distance from the
        // computed midpoint divided by sqrt(eps), rounding error amplified ~300x. Refused, as
        // BatchNorm refuses one value per channel in training.
        if statistics != PoincareStatistics::Running && view.points() < 2 {
            return Err(Error::InvalidParameter {
                name: "x",
                value: "1 point".into(),
                why: "batch statistics need more than one point (the variance of one point is 0)",
            });
        }
        Ok(Some(view))
    }

    /// The forward's staged kernel bound to checked inputs; `y` is written only by its last
    /// stage (the backward binds dx there and stops before it).
    pub(crate) fn engine(
        &self,
        inputs: &PoincareBatchNormInputs,
        y: &Tensor,
        view: PointView,
        statistics: PoincareStatistics,
    ) -> Result<Engine<'_>> {
        let running = statistics != PoincareStatistics::Batch;
        let b = Bound {
            x: inputs.x,
            bias: Some(inputs.bias),
            weight: Some(inputs.weight),
            y,
            running_mean: if running { inputs.running_mean } else { None },
            running_var: if running { inputs.running_var } else { None },
        };
        let flags = Flags {
            tangent: true,
            use_running: statistics == PoincareStatistics::Running,
            update_running: statistics == PoincareStatistics::BatchUpdateRunning,
            ..Flags::default()
        };
        prepare(
            &self.ctx,
            &self.binds,
            &self.scratch,
            self.cfg.c,
            self.cfg.momentum,
            self.cfg.dtype,
            view,
            &b,
            flags,
        )
    }

    /// Allocates `y`, encodes and submits (does not wait).
    pub fn forward(
        &self,
        inputs: &PoincareBatchNormInputs,
        statistics: PoincareStatistics,
    ) -> Result<Tensor> {
        let y = self.ctx.empty(inputs.x.shape(), self.cfg.dtype)?;
        self.ctx
            .record_and_submit(|enc| self.encode(enc, inputs, &y, statistics))?;
        Ok(y)
    }
}

/// The pipelines of the midpoint and the batch norm, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for stage in STAGES {
            for bits in 0..64u32 {
                let f = Flags {
                    tangent: bits & 1 != 0,
                    rows: bits & 2 != 0,
                    use_running: bits & 4 != 0,
                    update_running: bits & 8 != 0,
                    out_m: bits & 16 != 0,
                    dw: WG,
                    blocks: bits & 32 != 0,
                };
                // The combinations the host records.
                let midpoint = !f.tangent && !f.use_running && !f.update_running && f.out_m;
                let bn = f.tangent && !f.out_m && !(f.use_running && f.update_running);
                // Blocks are points along a channel-major axis, never rows.
                if !(midpoint || bn) || (f.blocks && f.rows) {
                    continue;
                }
                let dws: Vec<usize> = if stage == Stage::Colsum && f.rows {
                    (0..=WG.trailing_zeros()).map(|e| 1 << e).collect()
                } else {
                    vec![WG]
                };
                for dw in dws {
                    out.push(stage_spec(dtype, stage, Flags { dw, ..f }));
                }
            }
        }
    }
    out
}
