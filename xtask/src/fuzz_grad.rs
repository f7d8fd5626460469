//! The backward ops in `cargo xtask fuzz`: dx of LayerNorm, RMSNorm, BatchNorm (train/infer),
//! GroupNorm, the activations, AlphaDropout, LpNorm, Batch-Channel Norm, RepBN, Sinkhorn
//! normalization, EvoNorm-S0 and -B0, IBN, Region Norm-B, the Poincaré midpoint and Unified Norm's
//! training step for random shapes, axes, layouts, parameters and fused activations, with a fixed
//! upstream gradient, against the f64 reference gradients (themselves checked by finite
//! differences).

use wgnorm::prelude::*;
use wgnorm::Mode;
use wgnorm_reference::activation::Act;
use wgnorm_reference::grad as rg;

use crate::fuzz::{nc_hw, random_eps, relayout, x_values, Rng};
use crate::fuzz_inputs::region_mask;

/// A backward op with the parameters the reference needs (named for its forward op).
#[derive(Clone, Copy, Debug)]
#[allow(clippy::enum_variant_names)] // the ops' own names
pub enum GradOp {
    LayerNorm {
        axis: isize,
        eps: f32,
        act: Activation,
    },
    RmsNorm {
        axis: isize,
        eps: f32,
        act: Activation,
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
        act: Activation,
    },
    /// A standalone activation's backward, `dx = dy * act'(x)`.
    Activation { act: Activation },
    /// AlphaDropout's backward in training with x as the upstream gradient (the mask is the
    /// seed's, so dy is its only input).
    AlphaDropout { rate: f32, seed: u64 },
    /// LpNorm's backward (p drawn from 0..4: only 1 and 2 are valid).
    LpNorm { axis: isize, p: u32 },
    /// Batch-Channel Norm's backward (plain BN part), no affine, training or inference.
    BatchChannel {
        layout: Layout,
        groups: usize,
        eps: f32,
        train: bool,
    },
    /// RepBN's backward (`alpha` = 0.35), training or inference.
    RepBatchNorm {
        layout: Layout,
        eps: f32,
        train: bool,
    },
    /// Sinkhorn normalization's backward (x must be `[m, n]`; iterations drawn from 0..4).
    Sinkhorn { iterations: usize, eps: f32 },
    /// Region Norm-B's backward (NCHW, the inputs fuzzer's mask, gammas 0.2 / -0.1).
    RegionNormB { eps: f32 },
    /// IBN's backward (ratio 0.5, weight 1), training or inference.
    Ibn {
        layout: Layout,
        eps: f32,
        train: bool,
    },
    /// EvoNorm-S0's backward (v = 0.7, no weight).
    EvoNormS0 {
        layout: Layout,
        groups: usize,
        eps: f32,
    },
    /// EvoNorm-B0's backward (v = 0.7, weight 1), training or inference.
    EvoNormB0 {
        layout: Layout,
        eps: f32,
        train: bool,
    },
    /// The Poincaré midpoint's backward, points along the last axis (dy `[D]`).
    PoincareMidpoint { c: f32 },
    /// Poincaré batch norm's backward, points along axis 1, batch statistics.
    PoincareBatchNorm { c: f32 },
    /// Unified Norm's training backward (x `[B, N, C]`, weight 1, window 2 of ones — a window of
    /// zeros has a geometric mean of 0 —, warm-up 0, zero gradient state) at `step`, after the
    /// forward of that step that saves its statistics.
    Unified { step: u64, eps: f32 },
}

/// Unified Norm's momentum in the fuzzer (its forward's running variance and ema_gz).
const UNIFIED_MOMENTUM: f32 = 0.3;

/// EvoNorm-S0's gate parameter and EvoNorm-B0's v in the fuzzer.
const EVO_V: f32 = 0.7;

/// A channel-family call as the f64 references see it: `(n, c, hw)` and x, dy in NCHW order.
struct NchwCall {
    dims: (usize, usize, usize),
    layout: Layout,
    x: Vec<f64>,
    dy: Vec<f64>,
}

impl NchwCall {
    /// The call, or what the reference says without one: `Err(None)` where it is undefined
    /// (rank < 2, a bad eps, `groups` not dividing C), `Err(Some([]))` for an empty x.
    fn of(
        (x, dy): (&[f64], &[f64]),
        shape: &[usize],
        layout: Layout,
        eps: f32,
        groups: Option<usize>,
    ) -> Result<NchwCall, Option<Vec<f64>>> {
        if shape.len() < 2 || !eps_ok(eps) {
            return Err(None);
        }
        let (n, c, hw) = nc_hw(shape, layout);
        if groups.is_some_and(|g| g == 0 || c % g != 0) {
            return Err(None);
        }
        if x.is_empty() {
            return Err(Some(vec![]));
        }
        Ok(NchwCall {
            dims: (n, c, hw),
            layout,
            x: relayout(x, n, c, hw, layout, true),
            dy: relayout(dy, n, c, hw, layout, true),
        })
    }

    /// A gradient in NCHW order back in the call's layout.
    fn back(&self, v: &[f64]) -> Vec<f64> {
        let (n, c, hw) = self.dims;
        relayout(v, n, c, hw, self.layout, false)
    }
}

/// RepBN's alpha in the fuzzer.
const REP_ALPHA: f32 = 0.35;
/// The running statistics of the fuzzer's inference backward calls.
const RUNNING: (f64, f64) = (0.1, 0.9);

/// The f64 reference's activation of a fused one.
pub(crate) fn act_ref(a: Activation) -> Act {
    match a {
        Activation::None => Act::None,
        Activation::Silu => Act::Silu,
        Activation::GeluTanh => Act::GeluTanh,
        Activation::GeluErf => Act::GeluErf,
        Activation::Relu => Act::Relu,
        Activation::Selu { alpha, lambda } => Act::Selu {
            alpha: alpha as f64,
            lambda: lambda as f64,
        },
    }
}

/// The upstream gradient of a call: deterministic values in [-1, 1).
pub(crate) fn dy_values(len: usize) -> Vec<f32> {
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
        let act = rng.pick(&Activation::ALL);
        match rng.below(17) {
            16 => GradOp::PoincareBatchNorm {
                c: rng.pick(&[0.1, 1.0, 0.0, f32::NAN]),
            },
            15 => GradOp::Unified {
                step: rng.pick(&[1, 2, 3, 0]),
                eps,
            },
            14 => GradOp::PoincareMidpoint {
                c: rng.pick(&[0.1, 0.5, 1.0, 0.0, -1.0, f32::NAN]),
            },
            13 => GradOp::EvoNormB0 {
                layout,
                eps,
                train: rng.chance(2),
            },
            12 => GradOp::RegionNormB {
                eps: rng.pick(&[1e-5, 1e-3, -1.0, f32::NAN]),
            },
            11 => GradOp::Ibn {
                layout,
                eps,
                train: rng.chance(2),
            },
            10 => GradOp::EvoNormS0 {
                layout,
                groups: rng.below(5) as usize,
                eps,
            },
            9 => GradOp::Sinkhorn {
                iterations: rng.below(4) as usize,
                eps: rng.pick(&[1e-8, 1e-8, 0.5, 0.0, f32::NAN]),
            },
            8 => GradOp::RepBatchNorm {
                layout,
                eps,
                train: rng.chance(2),
            },
            7 => GradOp::BatchChannel {
                layout,
                groups: rng.below(5) as usize,
                eps,
                train: rng.chance(2),
            },
            6 => GradOp::LpNorm {
                axis,
                p: rng.below(4) as u32,
            },
            5 => GradOp::AlphaDropout {
                rate: rng.pick(&[0.0, 0.1, 0.5, 0.9, 1.0, -0.1]),
                seed: rng.below(1 << 40),
            },
            4 => GradOp::Activation { act },
            0 => GradOp::LayerNorm { axis, eps, act },
            1 => GradOp::RmsNorm { axis, eps, act },
            2 => GradOp::BatchNorm {
                layout,
                eps,
                train: rng.chance(2),
            },
            _ => GradOp::GroupNorm {
                layout,
                groups: rng.below(5) as usize,
                eps,
                act,
            },
        }
    }

    /// The f64 dx for `x` (in the tensor's order), or `None` for a call the reference does not
    /// define.
    pub fn reference(self, x: &[f64], shape: &[usize], dtype: DType) -> Option<Vec<f64>> {
        let rank = shape.len() as isize;
        let dy = x_values(&dy_values(x.len()), dtype);
        match self {
            GradOp::LayerNorm { axis, eps, act } | GradOp::RmsNorm { axis, eps, act } => {
                let a = if axis < 0 { axis + rank } else { axis };
                if !((0..rank).contains(&a) && eps_ok(eps)) {
                    return None;
                }
                let n: usize = shape[a as usize..].iter().product();
                if n == 0 || x.is_empty() {
                    return Some(vec![]);
                }
                let (eps, act) = (eps as f64, act_ref(act));
                Some(match self {
                    GradOp::LayerNorm { .. } => {
                        rg::layer_norm_act_grad(x, n, (None, None), &dy, eps, act).dx
                    }
                    _ => rg::rms_norm_act_grad(x, n, (None, 0.0), &dy, eps, act).dx,
                })
            }
            GradOp::Activation { act } => {
                let r = act_ref(act);
                Some(x.iter().zip(&dy).map(|(&v, &d)| d * r.grad(v)).collect())
            }
            GradOp::LpNorm { axis, p } => {
                let a = if axis < 0 { axis + rank } else { axis };
                if !(0..rank).contains(&a) || !(1..=2).contains(&p) {
                    return None;
                }
                Some(rg::lp_norm_grad(x, shape, axis, p, &dy))
            }
            GradOp::AlphaDropout { rate, seed } => (0.0..1.0)
                .contains(&rate)
                .then(|| wgnorm_reference::activation::alpha_dropout_grad(x, rate as f64, seed)),
            GradOp::BatchNorm { layout, eps, train } => {
                let call = match NchwCall::of((x, &dy), shape, layout, eps, None) {
                    Ok(call) => call,
                    Err(r) => return r,
                };
                let (n, c, hw) = call.dims;
                let (rm, rv) = (vec![0.1; c], vec![0.9; c]);
                let running = (!train).then_some((rm.as_slice(), rv.as_slice()));
                let g = rg::batch_norm_grad(&call.x, n, c, hw, None, &call.dy, running, eps as f64);
                Some(call.back(&g.dx))
            }
            GradOp::BatchChannel { .. }
            | GradOp::RepBatchNorm { .. }
            | GradOp::Sinkhorn { .. }
            | GradOp::EvoNormS0 { .. }
            | GradOp::EvoNormB0 { .. }
            | GradOp::Ibn { .. }
            | GradOp::RegionNormB { .. } => self.method_reference(x, shape, &dy),
            GradOp::Unified { step, eps } => {
                if shape.len() != 3 || step == 0 || !eps_ok(eps) {
                    return None;
                }
                let c = shape[2];
                let tokens = shape[0] * shape[1];
                let mut st = wgnorm_reference::powernorm::UnifiedState {
                    window: vec![1.0; 2 * c],
                    running_var: vec![1.0; c],
                };
                let (w, b) = (vec![1.0; c], vec![0.0; c]);
                let (e, m) = (eps as f64, UNIFIED_MOMENTUM as f64);
                let (_, saved) = wgnorm_reference::powernorm::unified_norm_train(
                    x, tokens, c, None, &w, &b, &mut st, step, 2, 0, false, m, e,
                );
                let mut gs = wgnorm_reference::powernorm::UnifiedGradState {
                    ema_gz: vec![0.0; c],
                    buffer_gz: vec![0.0; 2 * c],
                };
                let g = wgnorm_reference::powernorm::unified_norm_grad(
                    x,
                    c,
                    &w,
                    &dy,
                    &saved,
                    &mut gs,
                    (step, 2, 0),
                    m,
                );
                Some(g.dx)
            }
            GradOp::PoincareMidpoint { c } => {
                crate::fuzz_poincare::midpoint_reference(c, x, shape, dtype)
            }
            GradOp::PoincareBatchNorm { c } => {
                crate::fuzz_poincare::batch_norm_reference(c, x, shape, dtype)
            }
            GradOp::GroupNorm {
                layout,
                groups,
                eps,
                act,
            } => {
                let call = match NchwCall::of((x, &dy), shape, layout, eps, Some(groups)) {
                    Ok(call) => call,
                    Err(r) => return r,
                };
                let (n, c, hw) = call.dims;
                let (w, b) = (vec![1.0; c], vec![0.0; c]);
                let dims = (n, c, hw, groups);
                let (eps, act) = (eps as f64, act_ref(act));
                let g = rg::group_norm_act_grad(&call.x, dims, &w, &b, &call.dy, eps, act);
                Some(call.back(&g.dx))
            }
        }
    }

    /// The reference dx of the research methods' backward ops.
    fn method_reference(self, x: &[f64], shape: &[usize], dy: &[f64]) -> Option<Vec<f64>> {
        match self {
            GradOp::Sinkhorn { iterations, eps } => {
                let valid = shape.len() == 2 && iterations >= 1 && eps.is_finite() && eps > 0.0;
                valid
                    .then(|| rg::sinkhorn_grad(x, (shape[0], shape[1]), iterations, eps as f64, dy))
            }
            GradOp::BatchChannel {
                layout,
                groups,
                eps,
                train,
            } => {
                let call = match NchwCall::of((x, dy), shape, layout, eps, Some(groups)) {
                    Ok(call) => call,
                    Err(r) => return r,
                };
                let (n, c, hw) = call.dims;
                let (w, b) = (vec![1.0; groups], vec![0.0; groups]);
                let op = rg::BatchChannel {
                    n,
                    c,
                    hw,
                    groups,
                    bn_weight: None,
                    bn_bias: None,
                    weight: &w,
                    bias: &b,
                    eps: eps as f64,
                };
                let (rm, rv) = (vec![RUNNING.0; c], vec![RUNNING.1; c]);
                let running = (!train).then_some((rm.as_slice(), rv.as_slice()));
                Some(call.back(&op.grad(&call.x, &call.dy, running).dx))
            }
            GradOp::RepBatchNorm { layout, eps, train } => {
                let call = match NchwCall::of((x, dy), shape, layout, eps, None) {
                    Ok(call) => call,
                    Err(r) => return r,
                };
                let (n, c, hw) = call.dims;
                let (rm, rv) = (vec![RUNNING.0; c], vec![RUNNING.1; c]);
                let running = (!train).then_some((rm.as_slice(), rv.as_slice()));
                let (alpha, eps) = (REP_ALPHA as f64, eps as f64);
                let (xd, dyd) = (&call.x, &call.dy);
                let g = rg::rep_batch_norm_grad(xd, n, c, hw, None, alpha, dyd, running, eps).0;
                Some(call.back(&g.dx))
            }
            GradOp::EvoNormS0 {
                layout,
                groups,
                eps,
            } => {
                let call = match NchwCall::of((x, dy), shape, layout, eps, Some(groups)) {
                    Ok(call) => call,
                    Err(r) => return r,
                };
                let (n, c, hw) = call.dims;
                let (v, w) = (vec![EVO_V as f64; c], vec![1.0; c]);
                let dims = (n, c, hw, groups);
                let g = rg::evonorm_s0_grad(&call.x, dims, (&v, &w), &call.dy, eps as f64);
                Some(call.back(&g.dx))
            }
            GradOp::EvoNormB0 { layout, eps, train } => {
                let call = match NchwCall::of((x, dy), shape, layout, eps, None) {
                    Ok(call) => call,
                    Err(r) => return r,
                };
                let c = call.dims.1;
                let (v, w, rv) = (vec![EVO_V as f64; c], vec![1.0; c], vec![RUNNING.1; c]);
                let var_b = match train {
                    true => rg::EvoB0Variance::Batch,
                    false => rg::EvoB0Variance::Running(&rv),
                };
                let g =
                    rg::evonorm_b0_grad(&call.x, call.dims, (&v, &w), var_b, &call.dy, eps as f64);
                Some(call.back(&g.dx))
            }
            GradOp::Ibn { layout, eps, train } => {
                let call = match NchwCall::of((x, dy), shape, layout, eps, None) {
                    Ok(call) => call,
                    Err(r) => return r,
                };
                let (n, c, hw) = call.dims;
                let half = c / 2;
                if train && half < c && n * hw < 2 {
                    return None;
                }
                let w = vec![1.0; c];
                let (rm, rv) = (vec![RUNNING.0; c - half], vec![RUNNING.1; c - half]);
                let running = (!train).then_some((rm.as_slice(), rv.as_slice()));
                let dims = (n, c, hw, half);
                let g = rg::ibn_grad(&call.x, dims, &w, &call.dy, running, eps as f64);
                Some(call.back(&g.dx))
            }
            GradOp::RegionNormB { eps } => {
                if shape.len() != 4 || !eps_ok(eps) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if x.is_empty() {
                    return Some(vec![]);
                }
                let mask: Vec<f64> = region_mask(n, hw).iter().map(|&m| m as f64).collect();
                let (gf, gb) = (vec![0.2; c], vec![-0.1; c]);
                let g = rg::region_norm_b_grad(x, (n, c, hw), &mask, (&gf, &gb), dy, eps as f64);
                Some(g.dx)
            }
            _ => None,
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
            GradOp::LayerNorm { axis, eps, act } => {
                let ln =
                    LayerNorm::new(ctx, LayerNormConfig { axis, eps, dtype })?.with_activation(act);
                ln.encode_backward(
                    enc,
                    &wgnorm::LayerNormGradInputs {
                        x,
                        weight: None,
                        bias: None,
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
            GradOp::RmsNorm { axis, eps, act } => {
                let rms = RmsNorm::new(
                    ctx,
                    RmsNormConfig {
                        axis,
                        eps,
                        dtype,
                        ..Default::default()
                    },
                )?
                .with_activation(act);
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
            GradOp::LpNorm { axis, p } => {
                let lp = LpNorm::new(ctx, wgnorm::LpNormConfig { axis, p, dtype })?;
                lp.encode_backward(enc, x, &dy, dx)
            }
            GradOp::AlphaDropout { rate, seed } => {
                let cfg = wgnorm::AlphaDropoutConfig { rate, dtype };
                let op = wgnorm::selfnorm::AlphaDropout::new(ctx, cfg)?;
                op.encode_backward(enc, x, dx, seed, Mode::Train)
            }
            GradOp::Activation { act } => {
                let cfg = wgnorm::ElementwiseConfig {
                    activation: act,
                    dtype,
                };
                wgnorm::Elementwise::new(ctx, cfg)?.encode_backward(enc, x, &dy, dx)
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
            GradOp::BatchChannel { .. }
            | GradOp::RepBatchNorm { .. }
            | GradOp::Sinkhorn { .. }
            | GradOp::EvoNormS0 { .. }
            | GradOp::EvoNormB0 { .. }
            | GradOp::Ibn { .. }
            | GradOp::RegionNormB { .. } => self.encode_method(ctx, dtype, (x, &dy, dx), enc),
            GradOp::Unified { step, eps } => {
                self.encode_unified(ctx, dtype, (x, &dy, dx), enc, step, eps)
            }
            GradOp::PoincareMidpoint { c } => {
                crate::fuzz_poincare::midpoint_encode(ctx, c, dtype, (x, dx), enc)
            }
            GradOp::PoincareBatchNorm { c } => {
                crate::fuzz_poincare::batch_norm_encode(ctx, c, dtype, (x, dx), enc)
            }
            GradOp::GroupNorm {
                layout,
                groups,
                eps,
                act,
            } => {
                let gn = GroupNorm::new(
                    ctx,
                    GroupNormConfig {
                        eps,
                        layout,
                        dtype,
                        activation: act,
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

    /// Records Unified Norm's forward of `step` (saving) and its backward, on a fresh state.
    fn encode_unified(
        self,
        ctx: &Context,
        dtype: DType,
        (x, dy, dx): (&Tensor, &Tensor, &Tensor),
        enc: &mut wgpu::CommandEncoder,
        step: u64,
        eps: f32,
    ) -> wgnorm::Result<()> {
        let train = wgnorm::powernorm::UnifiedTraining {
            window: 2,
            warmup: 0,
            filter: false,
            momentum: UNIFIED_MOMENTUM,
        };
        let cfg = wgnorm::UnifiedNormConfig { eps, dtype };
        let op = wgnorm::UnifiedNorm::new(ctx, cfg)?.with_training(train);
        let c = x.shape().last().copied().unwrap_or(0);
        let p = |v: f32, n: usize| ctx.upload_f32(&vec![v; n], &[n]);
        let (w, b, rv, window) = (p(1.0, c)?, p(0.0, c)?, p(1.0, c)?, p(1.0, 2 * c)?);
        let (ema, buf) = (p(0.0, c)?, p(0.0, 2 * c)?);
        let window = window.reshape(&[2, c])?;
        let buf = buf.reshape(&[2, c])?;
        let saved = ctx.empty(&[c, 2], DType::F32)?;
        let y = ctx.empty(x.shape(), dtype)?;
        let inputs = wgnorm::UnifiedNormInputs {
            x,
            pad_mask: None,
            weight: Some(&w),
            bias: Some(&b),
            running_var: &rv,
            window: Some(&window),
        };
        op.encode_train_saving(enc, &inputs, &y, step, &saved)?;
        let inputs = wgnorm::UnifiedNormGradInputs {
            x,
            weight: &w,
            dy,
            saved: &saved,
            ema_gz: &ema,
            buffer_gz: &buf,
        };
        let outputs = wgnorm::UnifiedNormGradOutputs {
            dx,
            dweight: None,
            dbias: None,
        };
        op.encode_backward(enc, &inputs, &outputs, step)
    }

    /// Records a research method's backward: `(x, dy, dx)`.
    fn encode_method(
        self,
        ctx: &Context,
        dtype: DType,
        (x, dy, dx): (&Tensor, &Tensor, &Tensor),
        enc: &mut wgpu::CommandEncoder,
    ) -> wgnorm::Result<()> {
        let channels = |layout: Layout| {
            match layout {
                Layout::Nchw => x.shape().get(1),
                Layout::Nhwc => x.shape().last(),
            }
            .copied()
            .unwrap_or(0)
        };
        let running = |c: usize| -> wgnorm::Result<(Tensor, Tensor)> {
            Ok((
                ctx.upload_f32(&vec![RUNNING.0 as f32; c], &[c])?,
                ctx.upload_f32(&vec![RUNNING.1 as f32; c], &[c])?,
            ))
        };
        match self {
            GradOp::Sinkhorn { iterations, eps } => {
                let cfg = wgnorm::SinkhornConfig {
                    iterations,
                    eps,
                    dtype,
                };
                wgnorm::SinkhornNormalize::new(ctx, cfg)?.encode_backward(enc, x, dy, dx)
            }
            GradOp::BatchChannel {
                layout,
                groups,
                eps,
                train,
            } => {
                let batch_norm = BatchNormConfig {
                    eps,
                    layout,
                    dtype,
                    ..Default::default()
                };
                let cfg = wgnorm::batchnorm::BatchChannelNormConfig { batch_norm, groups };
                let op = wgnorm::batchnorm::BatchChannelNorm::new(ctx, cfg)?;
                let (rm, rv) = running(channels(layout))?;
                let inputs = wgnorm::batchnorm::BatchChannelNormGradInputs {
                    x,
                    bn_weight: None,
                    bn_bias: None,
                    running_mean: Some(&rm),
                    running_var: Some(&rv),
                    weight: None,
                    bias: None,
                    dy,
                };
                let outputs = wgnorm::batchnorm::BatchChannelNormGradOutputs {
                    dx,
                    dbn_weight: None,
                    dbn_bias: None,
                    dweight: None,
                    dbias: None,
                };
                op.encode_backward(enc, &inputs, &outputs, Mode::training(train))
            }
            GradOp::RepBatchNorm { layout, eps, train } => {
                let cfg = BatchNormConfig {
                    eps,
                    layout,
                    dtype,
                    ..Default::default()
                };
                let op = wgnorm::batchnorm::RepBatchNorm::new(ctx, cfg)?;
                let (rm, rv) = running(channels(layout))?;
                let alpha = ctx.upload_f32(&[REP_ALPHA], &[1])?;
                let inputs = wgnorm::BatchNormGradInputs {
                    x,
                    weight: None,
                    dy,
                    saved: None,
                    running_mean: Some(&rm),
                    running_var: Some(&rv),
                };
                let outputs = wgnorm::BatchNormGradOutputs {
                    dx,
                    dweight: None,
                    dbias: None,
                };
                op.encode_backward(enc, &inputs, &alpha, &outputs, None, Mode::training(train))
            }
            GradOp::EvoNormS0 {
                layout,
                groups,
                eps,
            } => {
                let cfg = wgnorm::EvoNormS0Config {
                    groups,
                    eps,
                    layout,
                    dtype,
                };
                let op = wgnorm::EvoNormS0::new(ctx, cfg)?;
                let c = channels(layout);
                let v = ctx.upload_f32(&vec![EVO_V; c], &[c])?;
                let inputs = wgnorm::NormGradInputs {
                    x,
                    weight: None,
                    bias: None,
                    dy,
                    saved: None,
                };
                let outputs = wgnorm::EvoNormS0GradOutputs {
                    dx,
                    dv: None,
                    dweight: None,
                    dbias: None,
                };
                op.encode_backward(enc, &inputs, &v, &outputs)
            }
            GradOp::EvoNormB0 { layout, eps, train } => {
                let cfg = wgnorm::EvoNormB0Config {
                    eps,
                    layout,
                    dtype,
                    ..Default::default()
                };
                let op = wgnorm::EvoNormB0::new(ctx, cfg)?;
                let c = channels(layout);
                let p = |v: f64| ctx.upload_f32(&vec![v as f32; c], &[c]);
                let (v, w, b, rv) = (p(EVO_V as f64)?, p(1.0)?, p(0.0)?, p(RUNNING.1)?);
                let inputs = wgnorm::EvoNormB0Inputs {
                    x,
                    weight: &w,
                    bias: &b,
                    v: &v,
                    running_var: &rv,
                };
                let outputs = wgnorm::EvoNormB0GradOutputs {
                    dx,
                    dweight: None,
                    dbias: None,
                    dv: None,
                };
                op.encode_backward(enc, &inputs, dy, &outputs, Mode::training(train))
            }
            GradOp::Ibn { layout, eps, train } => {
                let cfg = wgnorm::IbnConfig {
                    eps,
                    layout,
                    dtype,
                    ..Default::default()
                };
                let op = wgnorm::IbnNorm::new(ctx, cfg)?;
                let c = channels(layout);
                let half = op.half(c);
                let w = ctx.upload_f32(&vec![1.0; c], &[c])?;
                let rm = ctx.upload_f32(&vec![RUNNING.0 as f32; c - half], &[c - half])?;
                let rv = ctx.upload_f32(&vec![RUNNING.1 as f32; c - half], &[c - half])?;
                let inputs = wgnorm::IbnGradInputs {
                    x,
                    weight: &w,
                    running_mean: &rm,
                    running_var: &rv,
                    dy,
                };
                let outputs = wgnorm::IbnGradOutputs {
                    dx,
                    dweight: None,
                    dbias: None,
                };
                op.encode_backward(enc, &inputs, &outputs, Mode::training(train))
            }
            GradOp::RegionNormB { eps } => {
                let cfg = wgnorm::RegionNormBConfig {
                    eps,
                    layout: Layout::Nchw,
                    dtype,
                };
                let op = wgnorm::RegionNormB::new(ctx, cfg)?;
                let s = x.shape();
                let (n, hw) = match s {
                    [n, _, h, w] => (*n, h * w),
                    _ => (s.first().copied().unwrap_or(0), 0),
                };
                let mask_shape = match s {
                    [n, _, h, w] => vec![*n, 1, *h, *w],
                    _ => vec![n, 1, 0, 0],
                };
                let mask = ctx.upload_f32(&region_mask(n, hw), &mask_shape)?;
                let c = channels(Layout::Nchw);
                let vec = |v: f32| ctx.upload_f32(&vec![v; c], &[c]);
                let (gf, gb, beta) = (vec(0.2)?, vec(-0.1)?, vec(0.05)?);
                let inputs = wgnorm::RegionNormInputs {
                    x,
                    mask: &mask,
                    gamma_f: &gf,
                    gamma_b: &gb,
                    beta_f: &beta,
                    beta_b: &beta,
                };
                let outputs = wgnorm::RegionNormGradOutputs {
                    dx,
                    dgamma_f: None,
                    dgamma_b: None,
                    dbeta_f: None,
                    dbeta_b: None,
                };
                op.encode_backward(enc, &inputs, dy, &outputs)
            }
            _ => unreachable!("encode_method is called for the research methods only"),
        }
    }
}
