//! Batched ball operations: one invocation per point, the op chosen by a pipeline constant.

use crate::BallParams;
use wgnorm_core::binding::{self, BindCache, BufferRange};
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Error, Result, Slot, Tensor};

use crate::{check_curvature, check_u32, max_norm, PointView, CPU_LOOP_BUDGET};

const SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
];
const WG: u32 = 64;

/// Poincaré ball operations, one invocation per point (`OP` selects which).
pub const BALL_KERNEL: Kernel = Kernel::new(
    "poincare/ball",
    &[
        crate::POINCARE_COMMON,
        wgnorm_core::shader_file!("poincare/ball.wgsl"),
    ],
    SLOTS,
);

/// Which operation (the `OP` constant of `shaders/poincare/ball.wgsl`) and its input count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Project = 0,
    Exp0 = 1,
    Log0 = 2,
    MobiusAdd = 3,
    ExpMap = 4,
    LogMap = 5,
    Distance = 6,
    Lambda = 7,
    Gyration = 8,
    Transport = 9,
}

impl Op {
    const ALL: [Op; 10] = [
        Op::Project,
        Op::Exp0,
        Op::Log0,
        Op::MobiusAdd,
        Op::ExpMap,
        Op::LogMap,
        Op::Distance,
        Op::Lambda,
        Op::Gyration,
        Op::Transport,
    ];

    fn inputs(self) -> usize {
        match self {
            Op::Project | Op::Exp0 | Op::Log0 | Op::Lambda => 1,
            Op::MobiusAdd | Op::ExpMap | Op::LogMap | Op::Distance => 2,
            Op::Gyration | Op::Transport => 3,
        }
    }

    /// One value per point instead of a vector.
    fn scalar(self) -> bool {
        matches!(self, Op::Distance | Op::Lambda)
    }

    /// Passes over the feature dim per point (the CPU loop budget).
    fn passes(self) -> u64 {
        match self {
            Op::ExpMap | Op::LogMap => 3,
            Op::Distance => 2,
            Op::Lambda => 1,
            _ => 2,
        }
    }

    fn spec(self, io: Io) -> Specialization {
        Specialization::new(BALL_KERNEL, io)
            .set("WG", WG)
            .set("OP", self as u32)
            .set("N_IN", self.inputs() as u32)
    }
}

/// What [`BallOps::new`] takes; `Default` gives the usual defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BallConfig {
    /// Curvature magnitude: the ball has curvature -c (Poincaré ResNet: 0.1).
    pub c: f32,
    /// The axis holding a point's coordinates (`[P, D]`: -1; NCHW: 1).
    pub feature_axis: isize,
    /// Storage type of inputs and outputs.
    pub dtype: DType,
}

impl Default for BallConfig {
    fn default() -> Self {
        BallConfig {
            c: 0.1,
            feature_axis: -1,
            dtype: DType::F32,
        }
    }
}

/// Poincaré-ball operations on batches of points along a feature axis (see the crate docs for
/// the conventions). Every input is either a full tensor (one vector per point, all of one shape)
/// or a single vector of shape `[D]` used for every point (e.g. one base point). Vector outputs
/// have the full shape; [`distance`](Self::distance) and
/// [`conformal_factor`](Self::conformal_factor) write one value per point, the full shape without
/// the feature axis.
pub struct BallOps {
    ctx: Context,
    c: f32,
    axis: isize,
    dtype: DType,
    binds: BindCache,
}

impl BallOps {
    /// Ops on the ball of curvature `-c`, points along `feature_axis` (may be negative), tensors
    /// of `dtype`.
    pub fn new(ctx: &Context, cfg: BallConfig) -> Result<BallOps> {
        let BallConfig {
            c,
            feature_axis,
            dtype,
        } = cfg;
        check_curvature(c)?;
        ctx.check_io(Io { dtype, vec4: false })?;
        Ok(BallOps {
            ctx: ctx.clone(),
            c,
            axis: feature_axis,
            dtype,
            binds: BindCache::default(),
        })
    }

    /// `project(x)`: points outside radius `(1 - 4e-3)/sqrt(c)` are scaled back onto it.
    pub fn project(&self, enc: &mut wgpu::CommandEncoder, x: &Tensor, y: &Tensor) -> Result<()> {
        self.encode(enc, Op::Project, &[x], y)
    }

    /// `exp0(v) = project(tanh(sqrt(c)|v|) v / (sqrt(c)|v|))`: tangent vectors at the origin to
    /// points.
    pub fn exp0(&self, enc: &mut wgpu::CommandEncoder, v: &Tensor, y: &Tensor) -> Result<()> {
        self.encode(enc, Op::Exp0, &[v], y)
    }

    /// `log0(x) = artanh(sqrt(c)|x|) x / (sqrt(c)|x|)`: points to tangent vectors at the origin.
    pub fn log0(&self, enc: &mut wgpu::CommandEncoder, x: &Tensor, y: &Tensor) -> Result<()> {
        self.encode(enc, Op::Log0, &[x], y)
    }

    /// Möbius addition `x (+) y` (not projected, as in hypll).
    pub fn mobius_add(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        self.encode(enc, Op::MobiusAdd, &[x, y], out)
    }

    /// `exp_x(v)`: the tangent vector `v` at the point `x` to a point (projected).
    pub fn expmap(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &Tensor,
        v: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        self.encode(enc, Op::ExpMap, &[x, v], out)
    }

    /// `log_x(y)`: the point `y` to a tangent vector at the point `x`.
    pub fn logmap(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        self.encode(enc, Op::LogMap, &[x, y], out)
    }

    /// Geodesic distance `2/sqrt(c) artanh(sqrt(c)|(-x) (+) y|)`, one value per point.
    pub fn distance(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        self.encode(enc, Op::Distance, &[x, y], out)
    }

    /// Conformal factor `lambda_x = 2 / (1 - c|x|^2)`, one value per point.
    pub fn conformal_factor(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        self.encode(enc, Op::Lambda, &[x], out)
    }

    /// Gyration `gyr[u, v] w` (closed form; u, v points, w a tangent vector).
    pub fn gyration(
        &self,
        enc: &mut wgpu::CommandEncoder,
        u: &Tensor,
        v: &Tensor,
        w: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        self.encode(enc, Op::Gyration, &[u, v, w], out)
    }

    /// Parallel transport of the tangent vector `v` from the point `x` to the point `y`:
    /// `gyr[y, -x] v * lambda_x / lambda_y`.
    pub fn transport(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
        v: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        self.encode(enc, Op::Transport, &[x, y, v], out)
    }

    fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        op: Op,
        inputs: &[&Tensor],
        out: &Tensor,
    ) -> Result<()> {
        const NAMES: [&str; 3] = ["input 0", "input 1", "input 2"];
        for (i, t) in inputs.iter().enumerate() {
            t.expect_dtype(NAMES[i], self.dtype)?;
        }
        out.expect_dtype("out", self.dtype)?;
        // The full shape: the first input that is not a lone [D] vector, else [D].
        let full = inputs
            .iter()
            .map(|t| t.shape())
            .find(|s| s.len() != 1)
            .unwrap_or(inputs[0].shape())
            .to_vec();
        let view = PointView::new(&full, self.axis, "poincare ball op")?;
        let mut bcast = 0u32;
        for (i, t) in inputs.iter().enumerate() {
            if t.shape() == full.as_slice() {
                continue;
            }
            if t.shape() == [view.d] {
                bcast |= 1 << i;
                continue;
            }
            return Err(Error::ShapeMismatch {
                what: format!(
                    "{} (a full tensor or one vector of the feature dim)",
                    NAMES[i]
                ),
                expected: full.clone(),
                got: t.shape().to_vec(),
            });
        }
        let out_shape = if op.scalar() {
            PointView::point_shape(&full, self.axis)
        } else {
            full.clone()
        };
        out.expect_shape("out", &out_shape)?;
        if view.points() == 0 || view.d == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        if ctx.is_cpu() && op.passes() * view.d as u64 > CPU_LOOP_BUDGET {
            return Err(Error::InvalidParameter {
                name: "feature dim",
                value: view.d.to_string(),
                why: "on a CPU adapter one invocation per point would loop past the driver's 65535-iteration limit",
            });
        }
        let mut ranges: Vec<BufferRange> = Vec::with_capacity(4);
        for (i, t) in inputs.iter().enumerate() {
            ranges.push(binding::storage_range(ctx, NAMES[i], t)?);
        }
        while ranges.len() < 3 {
            ranges.push(binding::dummy_range(ctx.dummy_read()));
        }
        let or = binding::storage_range(ctx, "out", out)?;
        binding::check_no_alias(&[
            (NAMES[0], Some(&ranges[0]), false),
            (NAMES[1], Some(&ranges[1]), false),
            (NAMES[2], Some(&ranges[2]), false),
            ("out", Some(&or), true),
        ])?;
        let p = check_u32("points", view.points())?;
        let params = BallParams {
            d: check_u32("feature dim", view.d)?,
            s: check_u32("stride", view.s)?,
            p,
            bcast,
            c: self.c,
            max_norm: max_norm(self.c),
            ..Default::default()
        };
        let io = Io {
            dtype: self.dtype,
            vec4: false,
        };
        let pipeline = ctx.pipeline(&op.spec(io))?;
        let bind = self.binds.get(
            ctx,
            SLOTS,
            &params,
            &[&ranges[0], &ranges[1], &ranges[2], &or],
        )?;
        let (gx, gy) = binding::grid(ctx, (p as u64).div_ceil(WG as u64));
        binding::dispatch(enc, "wgnorm poincare ball", &pipeline, &bind, (gx, gy, 1));
        Ok(())
    }
}

/// The pipelines the ball ops create, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for op in Op::ALL {
            out.push(op.spec(Io { dtype, vec4: false }));
        }
    }
    out
}
