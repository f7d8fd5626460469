//! The gyromidpoint's backward (docs/methods.md C1): the forward's reduction stages again, then
//! `shaders/poincare/midpoint_grad.wgsl`: one workgroup differentiates the Möbius half and the
//! weighted mean into `[dS | dT]`, then one invocation per point the conformal weight and the
//! projection. Deterministic: the forward's fixed-order sums and per-point arithmetic.

use wgnorm_core::binding::{self, BufferRange};
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{DType, Result, Slot, Tensor};

use crate::norm::has_points;
use crate::{PoincareMidpoint, PointView};

const WG: u32 = 256;

/// uniform, x, dy, the forward's scratch, `[dS | dT]`, dx.
const GRAD_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
];

/// The midpoint's backward kernel (`GSTAGE` 0: the mean's gradient, 1: the points').
pub const MIDPOINT_GRAD_KERNEL: Kernel = Kernel::new(
    "poincare/midpoint_grad",
    &[
        crate::POINCARE_COMMON,
        wgnorm_core::shader::snippet::WG_SUM,
        crate::norm::MIDPOINT_SCRATCH,
        crate::MEAN_GRAD,
        wgnorm_core::shader_file!("poincare/midpoint_grad.wgsl"),
    ],
    GRAD_SLOTS,
);

fn grad_spec(dtype: DType, stage: u32) -> Specialization {
    Specialization::new(MIDPOINT_GRAD_KERNEL, Io { dtype, vec4: false })
        .set("WG", WG)
        .set("GSTAGE", stage)
}

/// The backward's pipelines, for `cargo xtask validate`.
pub fn grad_specializations() -> Vec<Specialization> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|dtype| [grad_spec(dtype, 0), grad_spec(dtype, 1)])
        .collect()
}

impl PoincareMidpoint {
    /// Records the Euclidean gradient of `sum(m * dy)` with respect to the points of `x` into
    /// `dx` (x's shape and dtype; `dy` `[D]` in the op's dtype): through the projection of each
    /// point onto the ball, the conformal weights, the weighted mean, the Möbius half and the
    /// projection of the result. The forward's reduction is recomputed. Checked first; nothing
    /// is recorded on error.
    pub fn encode_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        let ctx = &self.ctx;
        x.expect_dtype("x", self.dtype)?;
        let view = PointView::new(x.shape(), self.axis, "poincare midpoint")?;
        dy.expect_dtype("dy", self.dtype)?;
        dy.expect_shape("dy", &[view.d])?;
        dx.expect_dtype("dx", self.dtype)?;
        dx.expect_shape("dx", x.shape())?;
        if !has_points(x, &view)? {
            return Ok(());
        }
        let r = |what, t: &Tensor| binding::storage_range(ctx, what, t);
        let (xr, dyr, dxr) = (r("x", x)?, r("dy", dy)?, r("dx", dx)?);
        binding::check_no_alias(&[
            ("x", Some(&xr), false),
            ("dy", Some(&dyr), false),
            ("dx", Some(&dxr), true),
        ])?;
        // The forward's stages bind dx as their output, which they do not write (no OUT_M).
        let engine = self.midpoint_engine(x, dx, view, false)?;
        let (key, len) = ([view.d], [view.d + 1]);
        let gr = self
            .grad_scratch
            .with(ctx, &key, &len, DType::F32, |g| r("grad", g))??;
        let list: [&BufferRange; 5] = [&xr, &dyr, &engine.scratch, &gr, &dxr];
        let bind = self
            .grad_binds
            .get(ctx, GRAD_SLOTS, &engine.params, &list)?;
        let pipes = [
            ctx.pipeline(&grad_spec(self.dtype, 0))?,
            ctx.pipeline(&grad_spec(self.dtype, 1))?,
        ];
        engine.run(enc, false)?;
        binding::dispatch(
            enc,
            "wgnorm poincare midpoint grad",
            &pipes[0],
            &bind,
            (1, 1, 1),
        );
        let (gx, gy) = binding::grid(ctx, view.points().div_ceil(WG as usize) as u64);
        binding::dispatch(
            enc,
            "wgnorm poincare midpoint grad",
            &pipes[1],
            &bind,
            (gx, gy, 1),
        );
        Ok(())
    }

    /// Allocates dx, encodes the backward and submits (does not wait).
    pub fn backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dx = self.ctx.empty(x.shape(), self.dtype)?;
        self.ctx
            .record_and_submit(|enc| self.encode_backward(enc, x, dy, &dx))?;
        Ok(dx)
    }
}
