//! The research methods with specialised inputs or outputs in `cargo xtask fuzz`: UnMix-TNS
//! (mixture components), Region Norm-B (a region mask), Poincaré midpoint (one point out of
//! many), AdaB2N (a training step with its closed-form momentum) and the progressive LN→RepBN
//! schedule's LayerNorm phase. Extra inputs are made here with fixed, channel-varying values.

use wgnorm::prelude::*;
use wgnorm_reference::{chnorm as rc, poincare as rpo, research as rr};

use crate::fuzz::{nc_hw, Rng};
use crate::fuzz_research::{f64s, per_channel};

/// An op with specialised inputs, with the parameters the reference needs.
#[derive(Clone, Copy, Debug)]
pub enum InputsOp {
    UnmixTns {
        k: usize,
        temperature: f32,
    },
    /// RN-B on NCHW with a mask at x's own spatial size.
    RegionNormB {
        eps: f32,
    },
    /// The Poincaré midpoint of the points along the last axis: y is `[D]`.
    PoincareMidpoint {
        c: f32,
    },
    /// AdaB²N's training step: BatchNorm with the momentum of step `step` (kappa, m = 0.1).
    Adab2n {
        kappa: f64,
        step: u64,
    },
}

/// The region mask: pixel j of sample i is foreground when `(i + j) % 3 == 0`.
pub(crate) fn region_mask(n: usize, hw: usize) -> Vec<f32> {
    (0..n * hw)
        .map(|e| (e / hw + e % hw).is_multiple_of(3) as u8 as f32)
        .collect()
}

impl InputsOp {
    pub fn random(rng: &mut Rng) -> InputsOp {
        match rng.below(4) {
            0 => InputsOp::UnmixTns {
                k: rng.below(4) as usize,
                temperature: rng.pick(&[0.07, 1.0, 0.0, -1.0, f32::NAN]),
            },
            1 => InputsOp::RegionNormB {
                eps: rng.pick(&[1e-5, 1e-3, 0.0, -1.0, f32::NAN]),
            },
            2 => InputsOp::PoincareMidpoint {
                c: rng.pick(&[0.1, 0.5, 1.0, 0.0, -1.0, f32::NAN]),
            },
            _ => InputsOp::Adab2n {
                kappa: rng.pick(&[1.0, 0.5, 0.0, -1.0]),
                step: rng.pick(&[0, 1, 2, 50, 3000]),
            },
        }
    }

    /// y's shape for an x of `shape`.
    pub fn out_shape(self, shape: &[usize]) -> Vec<usize> {
        match self {
            InputsOp::PoincareMidpoint { .. } => shape.last().map(|&d| vec![d]).unwrap_or_default(),
            _ => shape.to_vec(),
        }
    }

    /// The f64 result, or `None` for a call the reference does not define.
    pub fn reference(self, x: &[f64], shape: &[usize]) -> Option<Vec<f64>> {
        let rank = shape.len();
        match self {
            InputsOp::UnmixTns { k, temperature } => {
                if rank < 2 || k == 0 || !(temperature.is_finite() && temperature > 0.0) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if x.is_empty() {
                    return Some(vec![]);
                }
                let (w, b) = (f64s(&per_channel(c, 1.0)), f64s(&per_channel(c, 0.1)));
                let cm: Vec<f64> = (0..k * c).map(|i| 0.05 * (i % 11) as f64).collect();
                let cv: Vec<f64> = (0..k * c).map(|i| 0.8 + 0.1 * (i % 5) as f64).collect();
                let m = rr::unmix_momentum(0.1, n);
                let t = temperature as f64;
                Some(rr::unmix_tns(x, n, c, hw, &w, &b, &cm, &cv, k, m, t, 1e-5).y)
            }
            InputsOp::RegionNormB { eps } => {
                if rank != 4 || !(eps.is_finite() && eps >= 0.0) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if x.is_empty() {
                    return Some(vec![]);
                }
                let mask = f64s(&region_mask(n, hw));
                let (gf, gb) = (f64s(&per_channel(c, 0.2)), f64s(&per_channel(c, -0.1)));
                let (bf, bb) = (f64s(&per_channel(c, 0.05)), f64s(&per_channel(c, -0.3)));
                let e = eps as f64;
                Some(rr::region_norm_b(x, n, c, hw, &mask, &gf, &gb, &bf, &bb, e))
            }
            InputsOp::PoincareMidpoint { c } => {
                if rank < 1 || !(c.is_finite() && c > 0.0) {
                    return None;
                }
                let d = shape[rank - 1];
                if d == 0 {
                    return Some(vec![]);
                }
                if x.is_empty() {
                    return None; // no points: no midpoint
                }
                let ball = rpo::Ball::new(c as f64, rpo::PROJ_EPS_F32);
                let (pts, _, _) = rpo::points_along(x, shape, rank - 1);
                Some(ball.midpoint(&pts))
            }
            InputsOp::Adab2n { kappa, step } => {
                if rank < 2 || step == 0 || !(0.0..).contains(&kappa) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if x.is_empty() {
                    return Some(vec![]);
                }
                let (rm, rv) = (f64s(&per_channel(c, 0.1)), f64s(&per_channel(c, 0.9)));
                // The paper's recurrence, step by step (wgnorm uses its closed form):
                // eta_1 = m^kappa, eta_t = eta_{t-1} / (eta_{t-1} + (1 - m)^kappa).
                let (m, mut eta) = (0.1f64, 0.1f64.powf(kappa));
                for _ in 1..step {
                    eta = eta / (eta + (1.0 - m).powf(kappa));
                }
                let out = rc::batch_norm(x, n, c, hw, None, None, &rm, &rv, true, eta, false, 1e-5);
                Some(out.y)
            }
        }
    }

    /// Records the op from `x` into `y` (of [`InputsOp::out_shape`]).
    pub fn encode(
        self,
        ctx: &Context,
        dtype: DType,
        x: &Tensor,
        y: &Tensor,
        enc: &mut wgpu::CommandEncoder,
    ) -> wgnorm::Result<()> {
        let c = if x.shape().len() >= 2 {
            nc_hw(x.shape(), Layout::Nchw).1
        } else {
            0
        };
        let vector = |len: usize, base: f32| ctx.upload_f32(&per_channel(len, base), &[len]);
        match self {
            InputsOp::UnmixTns { k, temperature } => {
                let op = wgnorm::UnmixTns::new(
                    ctx,
                    wgnorm::UnmixTnsConfig {
                        k,
                        temperature,
                        dtype,
                        ..Default::default()
                    },
                )?;
                let cm: Vec<f32> = (0..k * c).map(|i| 0.05 * (i % 11) as f32).collect();
                let cv: Vec<f32> = (0..k * c).map(|i| 0.8 + 0.1 * (i % 5) as f32).collect();
                let (cm, cv) = (ctx.upload_f32(&cm, &[k, c])?, ctx.upload_f32(&cv, &[k, c])?);
                let (w, b) = (vector(c, 1.0)?, vector(c, 0.1)?);
                let inputs = wgnorm::UnmixTnsInputs {
                    x,
                    weight: &w,
                    bias: &b,
                    component_mean: &cm,
                    component_var: &cv,
                };
                op.encode(enc, &inputs, y)
            }
            InputsOp::RegionNormB { eps } => {
                let op = wgnorm::RegionNormB::new(
                    ctx,
                    wgnorm::RegionNormBConfig {
                        eps,
                        layout: Layout::Nchw,
                        dtype,
                    },
                )?;
                let s = x.shape();
                let mask_shape = [s.first().copied().unwrap_or(0), 1, 0, 0];
                let mask_shape = if s.len() == 4 {
                    [s[0], 1, s[2], s[3]]
                } else {
                    mask_shape
                };
                let mask = if s.len() == 4 {
                    // Sized from the shape: with C = 0, nc_hw's spatial size is 0.
                    ctx.upload_f32(&region_mask(s[0], s[2] * s[3]), &mask_shape)?
                } else {
                    ctx.upload_f32(&[1.0], &[1, 1, 1, 1])?
                };
                let (gf, gb) = (vector(c, 0.2)?, vector(c, -0.1)?);
                let (bf, bb) = (vector(c, 0.05)?, vector(c, -0.3)?);
                let inputs = wgnorm::RegionNormInputs {
                    x,
                    mask: &mask,
                    gamma_f: &gf,
                    gamma_b: &gb,
                    beta_f: &bf,
                    beta_b: &bb,
                };
                op.encode(enc, &inputs, y)
            }
            InputsOp::PoincareMidpoint { c } => {
                let op = wgnorm::PoincareMidpoint::new(
                    ctx,
                    wgnorm::BallConfig {
                        c,
                        feature_axis: -1,
                        dtype,
                    },
                )?;
                op.encode(enc, x, y)
            }
            InputsOp::Adab2n { kappa, step } => {
                let eta = wgnorm::batchnorm::adab2n_momentum(kappa, 0.1, step)?;
                let (rm, rv) = (vector(c, 0.1)?, vector(c, 0.9)?);
                let bn = BatchNorm::new(
                    ctx,
                    BatchNormConfig {
                        dtype,
                        ..Default::default()
                    },
                )?;
                let update = wgnorm::batchnorm::RunningUpdate {
                    momentum: Some(eta),
                    unbiased: false,
                };
                let inputs = BatchNormInputs {
                    x,
                    weight: None,
                    bias: None,
                    running_mean: Some(&rm),
                    running_var: Some(&rv),
                };
                let outputs = BatchNormOutputs { y, saved: None };
                bn.encode_train_with(enc, &inputs, &outputs, update)
            }
        }
    }
}
