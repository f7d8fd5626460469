//! Poincaré midpoint batch norm's backward (docs/methods.md C1): the forward's statistics stages
//! again, then `shaders/poincare/batch_norm_grad.wgsl`: each point's ball algebra in dual numbers
//! over its eight dot products, tile sums of the midpoint's and the bias's gradients, one
//! workgroup for the parameters and the mean's backward, one invocation per point for dx.
//! Deterministic: fixed-order sums, no atomics.

use wgnorm_core::binding::{self, BufferRange};
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{DType, Result, Slot, Tensor};

use crate::{PoincareBatchNorm, PoincareBatchNormInputs, PoincareStatistics};

const WG: u32 = 256;
/// Floats per point in the backward's scratch, and vectors and scalars per tile in its tile sums
/// (`NQ`, `NCOLS`, `NSC` in the shader).
const NQ: usize = 17;
const NCOLS: usize = 7;
const NSC: usize = 6;

/// uniform, x, dy, bias, the forward's scratch, the backward's, dx, dbias, dweight.
const SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
];

/// The batch norm's backward kernel (`GSTAGE`: 0 points, 1 tile sums, 2 parameters, 3 dx).
pub const BATCH_NORM_GRAD_KERNEL: Kernel = Kernel::new(
    "poincare/batch_norm_grad",
    &[
        crate::POINCARE_COMMON,
        wgnorm_core::shader::snippet::WG_SUM,
        wgnorm_core::shader::snippet::WG_SUM4,
        crate::norm::MIDPOINT_SCRATCH,
        crate::MEAN_GRAD,
        wgnorm_core::shader_file!("poincare/dual.wgsl"),
        wgnorm_core::shader_file!("poincare/batch_norm_grad.wgsl"),
    ],
    SLOTS,
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GradStage {
    Points = 0,
    Cols = 1,
    Final = 2,
    Dx = 3,
}

fn spec(dtype: DType, stage: GradStage, pg: u32, running: bool) -> Specialization {
    Specialization::new(BATCH_NORM_GRAD_KERNEL, Io { dtype, vec4: false })
        .set("WG", WG)
        .set("GSTAGE", stage as u32)
        .set("PG", pg)
        .flag("RUNNING", running)
}

/// The backward's pipelines, for `cargo xtask validate`.
pub fn grad_specializations() -> Vec<Specialization> {
    let stages = [
        GradStage::Points,
        GradStage::Cols,
        GradStage::Final,
        GradStage::Dx,
    ];
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for stage in stages {
            for pg in [1, 4] {
                for running in [false, true] {
                    out.push(spec(dtype, stage, pg, running));
                }
            }
        }
    }
    out
}

/// Outputs of [`PoincareBatchNorm::encode_backward`]: `dx` like x (the tangent vectors'
/// gradient); the bias's (f32 `[D]`) and the weight's (f32 `[1]`) when wanted.
#[derive(Clone, Copy, Debug)]
pub struct PoincareBatchNormGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of `bias`.
    pub dbias: Option<&'a Tensor>,
    /// Gradient of `weight`.
    pub dweight: Option<&'a Tensor>,
}

/// What [`PoincareBatchNorm::backward`] allocates.
#[derive(Debug)]
pub struct PoincareBatchNormGrads {
    /// Gradient of x (x's shape and dtype).
    pub dx: Tensor,
    /// Gradient of `bias`, f32 `[D]`.
    pub dbias: Tensor,
    /// Gradient of `weight`, f32 `[1]`.
    pub dweight: Tensor,
}

impl PoincareBatchNorm {
    /// Records the gradients of `sum(y * dy)` (dy like x, in the op's dtype) for x, the bias and
    /// the weight: through every map of the forward (`x = exp0(v)`, the midpoint, the Fréchet
    /// variance, `log_m`, the parallel transport, the gain, `exp_beta`, `log0`, each projection).
    /// With `Batch` or `BatchUpdateRunning` the batch statistics are differentiated (the running
    /// statistics are not updated again); with `Running` they are constants. The forward's
    /// statistics are recomputed. Checked first; nothing is recorded on error.
    pub fn encode_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        inputs: &PoincareBatchNormInputs,
        dy: &Tensor,
        outputs: &PoincareBatchNormGradOutputs,
        statistics: PoincareStatistics,
    ) -> Result<()> {
        let (ctx, dtype) = (&self.ctx, self.cfg.dtype);
        dy.expect_dtype("dy", dtype)?;
        outputs.dx.expect_dtype("dx", dtype)?;
        let checked = self.check(inputs, statistics)?;
        let d = inputs.bias.numel();
        for (what, t, shape) in [
            ("dbias", outputs.dbias, [d]),
            ("dweight", outputs.dweight, [1]),
        ] {
            if let Some(t) = t {
                t.expect_dtype(what, DType::F32)?;
                t.expect_shape(what, &shape)?;
            }
        }
        dy.expect_shape("dy", inputs.x.shape())?;
        outputs.dx.expect_shape("dx", inputs.x.shape())?;
        let Some(view) = checked else {
            return Ok(());
        };
        let running = statistics == PoincareStatistics::Running;
        // The statistics again, without a second running update.
        let stats = if running {
            statistics
        } else {
            PoincareStatistics::Batch
        };
        let engine = self.engine(inputs, outputs.dx, view, stats)?;
        let tiles = engine.tiles();
        let r = |what, t: &Tensor| binding::storage_range(ctx, what, t);
        // An unwanted gradient is written to op-owned scratch (the kernel has no slot to spare
        // for a flag); its range is taken in place, without cloning the tensor.
        let out = |what, t: Option<&Tensor>, key: usize, len: usize| match t {
            Some(t) => r(what, t),
            None => self
                .unwanted
                .with(ctx, &[key, len], &[len], DType::F32, |t| r(what, t))?,
        };
        let (xr, dyr, br) = (r("x", inputs.x)?, r("dy", dy)?, r("bias", inputs.bias)?);
        let (dxr, dbr, dwr) = (
            r("dx", outputs.dx)?,
            out("dbias", outputs.dbias, 0, d)?,
            out("dweight", outputs.dweight, 1, 1)?,
        );
        binding::check_no_alias(&[
            ("x", Some(&xr), false),
            ("dy", Some(&dyr), false),
            ("bias", Some(&br), false),
            ("dx", Some(&dxr), true),
            ("dbias", Some(&dbr), true),
            ("dweight", Some(&dwr), true),
        ])?;
        let len = 3 * view.d + 2 + NQ * view.points() + tiles * (NCOLS * view.d + NSC);
        let key = [view.n, view.d, view.s];
        let gr = self
            .grad_scratch
            .with(ctx, &key, &[len], DType::F32, |g| r("grad", g))??;
        let list: [&BufferRange; 8] = [&xr, &dyr, &br, &engine.scratch, &gr, &dxr, &dbr, &dwr];
        let bind = self.grad_binds.get(ctx, SLOTS, &engine.params, &list)?;
        let pg = engine.point_group();
        let pipe = |stage| ctx.pipeline(&spec(dtype, stage, pg, running));
        let pipes = [
            pipe(GradStage::Points)?,
            pipe(GradStage::Cols)?,
            pipe(GradStage::Final)?,
            pipe(GradStage::Dx)?,
        ];
        engine.run_statistics(enc)?;
        let (gx, gy) = binding::grid(ctx, tiles as u64);
        let label = "wgnorm poincare batch norm grad";
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        pass.set_bind_group(0, &bind, &[]);
        let grids = [(gx, gy, 1), (gx, gy, view.d as u32), (1, 1, 1), (gx, gy, 1)];
        for (pipe, (x, y, z)) in pipes.iter().zip(grids) {
            pass.set_pipeline(pipe);
            pass.dispatch_workgroups(x, y, z);
        }
        Ok(())
    }

    /// Allocates the gradients, encodes the backward and submits (does not wait).
    pub fn backward(
        &self,
        inputs: &PoincareBatchNormInputs,
        dy: &Tensor,
        statistics: PoincareStatistics,
    ) -> Result<PoincareBatchNormGrads> {
        let ctx = &self.ctx;
        let grads = PoincareBatchNormGrads {
            dx: ctx.empty(inputs.x.shape(), self.cfg.dtype)?,
            dbias: ctx.empty(inputs.bias.shape(), DType::F32)?,
            dweight: ctx.empty(&[1], DType::F32)?,
        };
        let outputs = PoincareBatchNormGradOutputs {
            dx: &grads.dx,
            dbias: Some(&grads.dbias),
            dweight: Some(&grads.dweight),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, inputs, dy, &outputs, statistics))?;
        Ok(grads)
    }
}
