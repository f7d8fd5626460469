//! The fuzzer's hyperbolic backward arms: the Poincaré midpoint's (points along the last axis,
//! dm `[D]`) and Poincaré batch norm's (NCHW, batch statistics), each a device call and its f64
//! reference.

use wgnorm::prelude::*;
use wgnorm_reference::grad as rg;
use wgnorm_reference::poincare::{points_along, scatter_points, Ball, PROJ_EPS_F32};

use crate::fuzz::x_values;
use crate::fuzz_grad::dy_values;

/// Poincaré batch norm's bias (`[D]`) and weight in the fuzzer.
fn bn_bias(d: usize) -> Vec<f32> {
    (0..d).map(|k| 0.1 * (k % 3) as f32 - 0.1).collect()
}
const BN_WEIGHT: f32 = 0.8;

fn curvature_ok(c: f32) -> bool {
    c.is_finite() && c > 0.0
}

/// The midpoint's reference dx, or `None` where the op refuses the call.
pub fn midpoint_reference(c: f32, x: &[f64], shape: &[usize], dtype: DType) -> Option<Vec<f64>> {
    let rank = shape.len();
    if rank < 1 || !curvature_ok(c) {
        return None;
    }
    let d = shape[rank - 1];
    if d == 0 {
        return Some(vec![]);
    }
    if x.is_empty() {
        return None; // no points: no midpoint
    }
    let dm = x_values(&dy_values(d), dtype);
    let ball = Ball::new(c as f64, PROJ_EPS_F32);
    let (pts, _, _) = points_along(x, shape, rank - 1);
    Some(rg::poincare_midpoint_grad(&ball, &pts, &dm).concat())
}

/// The midpoint's backward on the device.
pub fn midpoint_encode(
    ctx: &Context,
    c: f32,
    dtype: DType,
    (x, dx): (&Tensor, &Tensor),
    enc: &mut wgpu::CommandEncoder,
) -> wgnorm::Result<()> {
    let d = x.shape().last().copied().unwrap_or(0);
    let dm = ctx.upload(&dy_values(d), &[d], dtype)?;
    let cfg = wgnorm::BallConfig {
        c,
        feature_axis: -1,
        dtype,
    };
    wgnorm::PoincareMidpoint::new(ctx, cfg)?.encode_backward(enc, x, &dm, dx)
}

/// Poincaré batch norm's reference dx (points along axis 1), or `None` where the op refuses the
/// call: rank below 2, a bad curvature, one point (no batch variance).
pub fn batch_norm_reference(c: f32, x: &[f64], shape: &[usize], dtype: DType) -> Option<Vec<f64>> {
    if shape.len() < 2 || !curvature_ok(c) {
        return None;
    }
    if x.is_empty() {
        return Some(vec![]);
    }
    let (d, s) = (shape[1], shape[2..].iter().product::<usize>());
    if x.len() / d < 2 {
        return None;
    }
    let dy = x_values(&dy_values(x.len()), dtype);
    let ball = Ball::new(c as f64, PROJ_EPS_F32);
    let (pts, _, _) = points_along(x, shape, 1);
    let (dyp, _, _) = points_along(&dy, shape, 1);
    let bias: Vec<f64> = bn_bias(d).iter().map(|&v| v as f64).collect();
    let g = rg::poincare_batch_norm_grad(&ball, &pts, (&bias, BN_WEIGHT as f64), &dyp);
    Some(scatter_points(&g.dx, d, s))
}

/// Poincaré batch norm's backward on the device (dx only).
pub fn batch_norm_encode(
    ctx: &Context,
    c: f32,
    dtype: DType,
    (x, dx): (&Tensor, &Tensor),
    enc: &mut wgpu::CommandEncoder,
) -> wgnorm::Result<()> {
    let d = x.shape().get(1).copied().unwrap_or(0);
    let dy = ctx.upload(&dy_values(x.numel()), x.shape(), dtype)?;
    let bias = ctx.upload_f32(&bn_bias(d), &[d])?;
    let weight = ctx.upload_f32(&[BN_WEIGHT], &[1])?;
    let cfg = wgnorm::PoincareBatchNormConfig {
        c,
        dtype,
        ..Default::default()
    };
    let inputs = wgnorm::PoincareBatchNormInputs {
        x,
        bias: &bias,
        weight: &weight,
        running_mean: None,
        running_var: None,
    };
    let outputs = wgnorm::PoincareBatchNormGradOutputs {
        dx,
        dbias: None,
        dweight: None,
    };
    wgnorm::PoincareBatchNorm::new(ctx, cfg)?.encode_backward(
        enc,
        &inputs,
        &dy,
        &outputs,
        wgnorm::PoincareStatistics::Batch,
    )
}
