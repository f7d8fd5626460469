//! The backward ops in `cargo xtask fuzz`: dx of LayerNorm, RMSNorm, BatchNorm (train/infer) and
//! GroupNorm for random shapes, axes, layouts and parameters, with a fixed upstream gradient,
//! against the f64 reference gradients (themselves checked by finite differences).

use wgnorm::prelude::*;
use wgnorm::Mode;
use wgnorm_reference::grad as rg;

use crate::fuzz::{nc_hw, random_eps, relayout, x_values, Rng};

/// A backward op with the parameters the reference needs (named for its forward op).
#[derive(Clone, Copy, Debug)]
#[allow(clippy::enum_variant_names)] // the ops' own names
pub enum GradOp {
    LayerNorm {
        axis: isize,
        eps: f32,
    },
    RmsNorm {
        axis: isize,
        eps: f32,
    },
    BatchNorm {
        layout: Layout,
        eps: f32,
        train: bool,
    },
    GroupNorm {
        layout: Layout,
        groups: usize,
        eps: f32,
    },
}

/// The upstream gradient of a call: deterministic values in [-1, 1).
fn dy_values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0)
        .collect()
}

fn eps_ok(eps: f32) -> bool {
    eps.is_finite() && eps >= 0.0
}

impl GradOp {
    pub fn random(rng: &mut Rng, rank: usize) -> GradOp {
        let axis = rng.below(rank as u64 + 3) as isize - rank as isize - 1;
        let layout = rng.pick(&[Layout::Nchw, Layout::Nhwc]);
        let eps = random_eps(rng);
        match rng.below(4) {
            0 => GradOp::LayerNorm { axis, eps },
            1 => GradOp::RmsNorm { axis, eps },
            2 => GradOp::BatchNorm {
                layout,
                eps,
                train: rng.chance(2),
            },
            _ => GradOp::GroupNorm {
                layout,
                groups: rng.below(5) as usize,
                eps,
            },
        }
    }

    /// The f64 dx for `x` (in the tensor's order), or `None` for a call the reference does not
    /// define.
    pub fn reference(self, x: &[f64], shape: &[usize], dtype: DType) -> Option<Vec<f64>> {
        let rank = shape.len() as isize;
        let dy = x_values(&dy_values(x.len()), dtype);
        match self {
            GradOp::LayerNorm { axis, eps } | GradOp::RmsNorm { axis, eps } => {
                let a = if axis < 0 { axis + rank } else { axis };
                if !((0..rank).contains(&a) && eps_ok(eps)) {
                    return None;
                }
                let n: usize = shape[a as usize..].iter().product();
                if n == 0 || x.is_empty() {
                    return Some(vec![]);
                }
                Some(match self {
                    GradOp::LayerNorm { .. } => rg::layer_norm_grad(x, n, None, &dy, eps as f64).dx,
                    _ => rg::rms_norm_grad(x, n, None, 0.0, &dy, eps as f64).dx,
                })
            }
            GradOp::BatchNorm { layout, eps, train } => {
                if shape.len() < 2 || !eps_ok(eps) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, layout);
                if x.is_empty() {
                    return Some(vec![]);
                }
                let xd = relayout(x, n, c, hw, layout, true);
                let dyd = relayout(&dy, n, c, hw, layout, true);
                let (rm, rv) = (vec![0.1; c], vec![0.9; c]);
                let running = (!train).then_some((rm.as_slice(), rv.as_slice()));
                let g = rg::batch_norm_grad(&xd, n, c, hw, None, &dyd, running, eps as f64);
                Some(relayout(&g.dx, n, c, hw, layout, false))
            }
            GradOp::GroupNorm {
                layout,
                groups,
                eps,
            } => {
                if shape.len() < 2 || !eps_ok(eps) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, layout);
                if groups == 0 || c % groups != 0 {
                    return None;
                }
                if x.is_empty() {
                    return Some(vec![]);
                }
                let xd = relayout(x, n, c, hw, layout, true);
                let dyd = relayout(&dy, n, c, hw, layout, true);
                let (w, b) = (vec![1.0; c], vec![0.0; c]);
                let g = rg::group_norm_grad(&xd, n, c, hw, groups, &w, &b, &dyd, eps as f64, false);
                Some(relayout(&g.dx, n, c, hw, layout, false))
            }
        }
    }

    /// Records the backward of `x` into `dx` (the upstream gradient uploaded here).
    pub fn encode(
        self,
        ctx: &Context,
        dtype: DType,
        x: &Tensor,
        dx: &Tensor,
        enc: &mut wgpu::CommandEncoder,
    ) -> wgnorm::Result<()> {
        let dy = ctx.upload(&dy_values(x.numel()), x.shape(), dtype)?;
        match self {
            GradOp::LayerNorm { axis, eps } => {
                let ln = LayerNorm::new(ctx, LayerNormConfig { axis, eps, dtype })?;
                ln.encode_backward(
                    enc,
                    &wgnorm::LayerNormGradInputs {
                        x,
                        weight: None,
                        dy: &dy,
                        mean: None,
                        rstd: None,
                    },
                    &wgnorm::LayerNormGradOutputs {
                        dx,
                        dweight: None,
                        dbias: None,
                    },
                )
            }
            GradOp::RmsNorm { axis, eps } => {
                let rms = RmsNorm::new(
                    ctx,
                    RmsNormConfig {
                        axis,
                        eps,
                        dtype,
                        ..Default::default()
                    },
                )?;
                rms.encode_backward(
                    enc,
                    &wgnorm::RmsNormGradInputs {
                        x,
                        residual: None,
                        weight: None,
                        dy: &dy,
                        dsum: None,
                        rstd: None,
                    },
                    &wgnorm::RmsNormGradOutputs { dx, dweight: None },
                )
            }
            GradOp::BatchNorm { layout, eps, train } => {
                let bn = BatchNorm::new(
                    ctx,
                    BatchNormConfig {
                        eps,
                        layout,
                        dtype,
                        ..Default::default()
                    },
                )?;
                let c = match layout {
                    Layout::Nchw => x.shape().get(1),
                    Layout::Nhwc => x.shape().last(),
                }
                .copied()
                .unwrap_or(0);
                let rm = ctx.upload_f32(&vec![0.1; c], &[c])?;
                let rv = ctx.upload_f32(&vec![0.9; c], &[c])?;
                bn.encode_backward(
                    enc,
                    &wgnorm::BatchNormGradInputs {
                        x,
                        weight: None,
                        dy: &dy,
                        saved: None,
                        running_mean: Some(&rm),
                        running_var: Some(&rv),
                    },
                    &wgnorm::BatchNormGradOutputs {
                        dx,
                        dweight: None,
                        dbias: None,
                    },
                    Mode::training(train),
                )
            }
            GradOp::GroupNorm {
                layout,
                groups,
                eps,
            } => {
                let gn = GroupNorm::new(
                    ctx,
                    GroupNormConfig {
                        eps,
                        layout,
                        dtype,
                        ..GroupNormConfig::new(groups)
                    },
                )?;
                gn.encode_backward(
                    enc,
                    &wgnorm::NormGradInputs {
                        x,
                        weight: None,
                        bias: None,
                        dy: &dy,
                        saved: None,
                    },
                    &wgnorm::NormGradOutputs {
                        dx,
                        dweight: None,
                        dbias: None,
                    },
                )
            }
        }
    }
}
