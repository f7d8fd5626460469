//! QK-norm + RoPE in `cargo xtask fuzz`: the forward (y) and the backward (dx, with the fixed
//! upstream gradient of the backward ops) of `x[tokens, heads, head_dim]`, with random eps,
//! weight offset, pair layout, rotary dims (odd and too large ones included) and angles (none or
//! positions), against the f64 reference.

use wgnorm::prelude::*;
use wgnorm::{QkNormRope, QkNormRopeConfig, RopeAngles, RopeLayout};
use wgnorm_reference::grad as rg;
use wgnorm_reference::rownorm::{self as rr, RopeRef};

use crate::fuzz::{x_values, Rng};
use crate::fuzz_grad::dy_values;

/// One QK-norm + RoPE call.
#[derive(Clone, Copy, Debug)]
pub struct QkOp {
    eps: f32,
    weight_offset: f32,
    neox: bool,
    rotary_dim: Option<usize>,
    /// Angles from positions (`pos = 1.5 t`, base 10000), or no rotation.
    positions: bool,
    /// The backward (dx) instead of the forward.
    backward: bool,
}

const BASE: f32 = 10_000.0;

fn positions(tokens: usize) -> Vec<f32> {
    (0..tokens).map(|t| 1.5 * t as f32).collect()
}

impl QkOp {
    /// Whether this is the backward.
    pub fn backward(self) -> bool {
        self.backward
    }

    pub fn random(rng: &mut Rng) -> QkOp {
        QkOp {
            eps: rng.pick(&[1e-6, 1e-6, 1e-5, 0.0, -1e-6, f32::NAN]),
            weight_offset: rng.pick(&[0.0, 0.0, 1.0, f32::INFINITY]),
            neox: rng.chance(2),
            rotary_dim: rng.pick(&[None, None, Some(0), Some(2), Some(4), Some(3), Some(64)]),
            positions: !rng.chance(4),
            backward: rng.chance(2),
        }
    }

    /// The f64 y (forward) or dx (backward), or `None` for a call the op must refuse.
    pub fn reference(self, x: &[f64], shape: &[usize], dtype: DType) -> Option<Vec<f64>> {
        let config_ok = self.eps.is_finite()
            && self.eps >= 0.0
            && self.weight_offset.is_finite()
            && self.rotary_dim.is_none_or(|r| r % 2 == 0);
        if !config_ok || shape.len() != 3 {
            return None;
        }
        let (tokens, heads, d) = (shape[0], shape[1], shape[2]);
        let rot = self.rotary_dim.unwrap_or(d);
        if d > 512 || rot > d || (rot % 2 == 1 && self.positions) {
            return None;
        }
        if x.is_empty() {
            return Some(vec![]);
        }
        let pos: Vec<f64> = positions(tokens).iter().map(|&p| p as f64).collect();
        let angles = match self.positions {
            true => RopeRef::Positions {
                pos: &pos,
                base: BASE as f64,
            },
            false => RopeRef::None,
        };
        let (eps, offset) = (self.eps as f64, self.weight_offset as f64);
        Some(match self.backward {
            false => rr::qk_norm_rope(x, heads, d, None, offset, eps, rot, self.neox, angles),
            true => {
                let dy = x_values(&dy_values(x.len()), dtype);
                let rope = (rot, self.neox, angles);
                rg::qk_norm_rope_grad(x, (heads, d), (None, offset), eps, rope, &dy).dx
            }
        })
    }

    /// Records the call with y (or dx) as the output.
    pub fn encode(
        self,
        ctx: &Context,
        dtype: DType,
        x: &Tensor,
        y: &Tensor,
        enc: &mut wgpu::CommandEncoder,
    ) -> wgnorm::Result<()> {
        let op = QkNormRope::new(
            ctx,
            QkNormRopeConfig {
                eps: self.eps,
                weight_offset: self.weight_offset,
                layout: if self.neox {
                    RopeLayout::NeoX
                } else {
                    RopeLayout::GptJ
                },
                rotary_dim: self.rotary_dim,
                base: BASE,
                dtype,
            },
        )?;
        let tokens = x.shape().first().copied().unwrap_or(0);
        let pos = ctx.upload_f32(&positions(tokens), &[tokens])?;
        let angles = match self.positions {
            true => RopeAngles::Positions(&pos),
            false => RopeAngles::None,
        };
        if !self.backward {
            let inputs = wgnorm::QkNormRopeInputs {
                x,
                weight: None,
                angles,
            };
            return op.encode(enc, &inputs, y);
        }
        let dy = ctx.upload(&dy_values(x.numel()), x.shape(), dtype)?;
        let inputs = wgnorm::QkNormRopeGradInputs {
            x,
            weight: None,
            angles,
            dy: &dy,
        };
        let outputs = wgnorm::QkNormRopeGradOutputs {
            dx: y,
            dweight: None,
        };
        op.encode_backward(enc, &inputs, &outputs)
    }
}
