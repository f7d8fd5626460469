//! The hyperbolic family (docs/methods.md C1): batched Poincaré-ball operations, the gyromidpoint
//! reduction and Poincaré midpoint batch normalization, as wgpu kernels.
//!
//! Conventions:
//! - The ball has curvature **-c** with `c > 0` given as a positive number (Poincaré ResNet uses
//!   `c = 0.1`): it is the open ball `|x| < 1/sqrt(c)`.
//! - A **point** is a vector inside that ball; a **tangent vector** is any vector of R^D, at the
//!   origin unless an op names a base point. `exp0`/`expmap` take tangent vectors to points,
//!   `log0`/`logmap` points to tangent vectors.
//! - Tensors hold points (or tangent vectors) along a **feature axis**: `[P, D]` rows use axis
//!   -1, NCHW feature maps use axis 1 (the points are the N*H*W pixels, D = C). No transpose is
//!   made: the kernels read with the stride of the axis.
//! - f32 arithmetic; I/O in f32 or f16 (on any device; it rounds inputs and outputs to
//!   f16, which near the boundary of the ball is a relative error of ~1e-3 in `1 - c|x|^2`).
//! - Guards (as the official code, hypll): points are projected back to radius
//!   `(1 - 4e-3)/sqrt(c)` after `exp0`/`expmap` and before the midpoint weights; `artanh` clamps
//!   its argument at `1 - 1e-7` and is computed as `0.5*log((1+u)/(1-u))` (a series near 0);
//!   `tanh` cannot overflow; norms and denominators are clamped at 1e-15; `1 - c|z|^2` at 0.

#![deny(missing_docs)]

mod ball;
mod batch_norm_grad;
mod midpoint_grad;
mod norm;

pub use ball::specializations as ball_specializations;
pub use ball::{BallConfig, BallOps, BALL_KERNEL};
pub use batch_norm_grad::{
    grad_specializations as batch_norm_grad_specializations, PoincareBatchNormGradOutputs,
    PoincareBatchNormGrads, BATCH_NORM_GRAD_KERNEL,
};
pub use midpoint_grad::{
    grad_specializations as midpoint_grad_specializations, MIDPOINT_GRAD_KERNEL,
};
pub use norm::specializations as norm_specializations;
pub use norm::{
    PoincareBatchNorm, PoincareBatchNormConfig, PoincareBatchNormInputs, PoincareMidpoint,
    PoincareStatistics, MIDPOINT_KERNEL,
};

use wgnorm_core::{Error, Result};

wgnorm_core::uniform_block! {
    /// `BallParams` (`poincare/common.wgsl`): Poincaré ball operations and the midpoint reduction
    /// over points of `d` coordinates with stride `s`.
    pub struct BallParams {
        pub d: u32,
        pub s: u32,
        /// Points (`n * s`).
        pub p: u32,
        /// Ball ops: bit i set = input i is one point shared by all points.
        pub bcast: u32,
        /// Midpoint: tiles of `tile_points` points, `ppt` per invocation, and `ctiles` tiles of
        /// `ct_points` points for the coordinate sums.
        pub tiles: u32,
        pub tile_points: u32,
        pub ppt: u32,
        pub ctiles: u32,
        /// Curvature magnitude (the ball has curvature -c).
        pub c: f32,
        /// `(1 - eps) / sqrt(c)`: the projection radius.
        pub max_norm: f32,
        pub momentum: f32,
        pub ct_points: u32,
    }
}

/// The shared ball algebra and `BallParams` of the hyperbolic kernels.
const POINCARE_COMMON: &str = wgnorm_core::shader_file!("poincare/common.wgsl");

/// The gyromidpoint's backward through its weighted mean, shared by the midpoint's and the batch
/// norm's backward kernels.
const MEAN_GRAD: &str = wgnorm_core::shader_file!("poincare/mean_grad.wgsl");

/// One invocation per point, coordinate or result, in stages: the benchmarks' baseline for the
/// gyromidpoint.
pub const NAIVE_MIDPOINT_KERNEL: wgnorm_core::shader::Kernel = wgnorm_core::shader::Kernel::new(
    "naive/poincare_midpoint",
    &[wgnorm_core::shader_file!("naive/poincare_midpoint.wgsl")],
    &[
        wgnorm_core::Slot::Uniform,
        wgnorm_core::Slot::Read,
        wgnorm_core::Slot::ReadWrite,
        wgnorm_core::Slot::ReadWrite,
        wgnorm_core::Slot::ReadWrite,
    ],
);

wgnorm_core::uniform_block! {
    /// `NaiveBallParams` (`naive/poincare_midpoint.wgsl`): the gyromidpoint's naive baseline.
    pub struct NaiveBallParams {
        pub d: u32,
        pub s: u32,
        pub p: u32,
        pub _pad: u32,
        pub c: f32,
        pub max_norm: f32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

/// Stage `stage` (0: per-point weights, 1: coordinate sums, 2: the result) of the naive
/// gyromidpoint.
pub fn naive_midpoint_spec(stage: u32) -> wgnorm_core::shader::Specialization {
    wgnorm_core::shader::Specialization::new(NAIVE_MIDPOINT_KERNEL, wgnorm_core::shader::Io::F32)
        .set("WG", 64)
        .set("STAGE", stage)
}

/// Projection margin of the f32 kernels: points are kept within `(1 - PROJ_EPS)/sqrt(c)`.
pub const PROJ_EPS: f32 = 4e-3;

/// The per-lane iteration limit of software Vulkan (lavapipe), see `rownorm::CPU_LOOP_BUDGET`.
const CPU_LOOP_BUDGET: u64 = wgnorm_core::rownorm::CPU_LOOP_BUDGET;

/// A tensor seen as points along a feature axis: `[n, d, s]`, point `i*s + j` at
/// `x[i*d*s + k*s + j]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PointView {
    pub n: usize,
    pub d: usize,
    pub s: usize,
}

impl PointView {
    pub fn new(shape: &[usize], axis: isize, what: &'static str) -> Result<PointView> {
        let rank = shape.len();
        let a = if axis < 0 { axis + rank as isize } else { axis };
        if rank == 0 || a < 0 || a >= rank as isize {
            return Err(Error::AxisOutOfRange { what, axis, rank });
        }
        let a = a as usize;
        Ok(PointView {
            n: shape[..a].iter().product(),
            d: shape[a],
            s: shape[a + 1..].iter().product(),
        })
    }

    pub fn points(&self) -> usize {
        self.n * self.s
    }

    /// The shape of one value per point: the tensor's shape without the feature axis.
    pub fn point_shape(shape: &[usize], axis: isize) -> Vec<usize> {
        let rank = shape.len() as isize;
        let a = if axis < 0 { axis + rank } else { axis } as usize;
        let mut out = shape.to_vec();
        out.remove(a);
        out
    }
}

pub(crate) fn check_curvature(c: f32) -> Result<()> {
    if !(c.is_finite() && c > 0.0) {
        return Err(Error::InvalidParameter {
            name: "c",
            value: c.to_string(),
            why: "the curvature is -c with c a finite positive number",
        });
    }
    Ok(())
}

pub(crate) fn check_u32(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InvalidParameter {
        name: what,
        value: v.to_string(),
        why: "exceeds 2^32 - 1",
    })
}

pub(crate) fn max_norm(c: f32) -> f32 {
    (1.0 - PROJ_EPS) / c.sqrt()
}
