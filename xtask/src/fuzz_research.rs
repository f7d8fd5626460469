//! The research methods in `cargo xtask fuzz`: calls from x to a y of x's shape, with the f64
//! reference of `wgnorm-reference` deciding what is valid and what the result must be. Extra
//! inputs (running statistics, per-channel parameters) are made here with fixed, channel-varying
//! values so per-channel indexing is checked too.

use wgnorm::prelude::*;
use wgnorm::Mode;
use wgnorm_reference::{chnorm as rc, powernorm as rp, research as rr};

use crate::fuzz::{nc_hw, random_eps, relayout, Rng};

/// A research op with the parameters the reference needs.
#[derive(Clone, Copy, Debug)]
pub enum ResearchOp {
    /// MVN over one axis or two (possibly repeated or out of range).
    MeanVarianceNorm {
        axes: (isize, Option<isize>),
        eps: f32,
    },
    WeightStandardization {
        unbiased: bool,
        inside: bool,
        eps: f32,
    },
    TestTimeBn {
        w_src: f32,
        eps: f32,
    },
    GhostBatchNorm {
        ghost: usize,
        train: bool,
        eps: f32,
    },
    /// RepBN (channels-last): BatchNorm plus `alpha * x`.
    RepBatchNorm {
        train: bool,
        alpha: f32,
    },
    EvoNormS0 {
        groups: usize,
        eps: f32,
    },
    /// PowerNorm on `x[T, B, C]`: inference with the running φ, or a training step.
    PowerNorm {
        group_num: usize,
        step: Option<u64>,
        eps: f32,
    },
    Sinkhorn {
        iterations: usize,
        eps: f32,
    },
    /// IBN-a: InstanceNorm on the first `floor(C * ratio)` channels, BatchNorm on the rest.
    IbnNorm {
        ratio: f32,
        train: bool,
        eps: f32,
    },
    EvoNormB0 {
        train: bool,
        eps: f32,
    },
    /// EstBN (training: running update, then normalize with the updated statistics).
    EstBn {
        moving_speed: f32,
        train: bool,
        eps: f32,
    },
    /// Unified Normalization's inference form on `[.., C]`.
    UnifiedNorm {
        eps: f32,
    },
    /// Adaptive BN (exponential momentum decay at `step`), normalizing with the adapted
    /// statistics or the batch's.
    AdaptiveBn {
        step: u64,
        adapted: bool,
    },
    /// Poincaré midpoint BatchNorm over the features of axis 1, batch statistics.
    PoincareBatchNorm {
        c: f32,
    },
    /// AlphaDropout in training (counter-based mask from the seed) or inference (identity).
    AlphaDropout {
        rate: f32,
        seed: u64,
        train: bool,
    },
    /// Batch-Channel Norm: BatchNorm, then GroupNorm of its output.
    BatchChannelNorm {
        groups: usize,
        train: bool,
        eps: f32,
    },
}

/// Per-channel values that differ between channels: `base + 0.1 * (i % 7)`.
pub fn per_channel(c: usize, base: f32) -> Vec<f32> {
    (0..c).map(|i| base + 0.1 * (i % 7) as f32).collect()
}

/// f32 values as f64 (exact).
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn eps_ok(eps: f32) -> bool {
    eps.is_finite() && eps >= 0.0
}

impl ResearchOp {
    /// A random research op for a tensor of `rank` dims.
    pub fn random(rng: &mut Rng, rank: usize) -> ResearchOp {
        let axis = |rng: &mut Rng| rng.below(rank as u64 + 3) as isize - rank as isize - 1;
        let eps = random_eps(rng);
        // PowerNorm wants x[T, B, C] and Sinkhorn x[m, n]: favour them at those ranks.
        let pick = match rank {
            3 if rng.chance(3) => rng.pick(&[6, 11]),
            2 if rng.chance(4) => 7,
            _ => rng.below(16),
        };
        match pick {
            0 => ResearchOp::MeanVarianceNorm {
                axes: (axis(rng), rng.chance(2).then(|| axis(rng))),
                eps,
            },
            1 => ResearchOp::WeightStandardization {
                unbiased: rng.chance(2),
                inside: rng.chance(2),
                eps,
            },
            2 => ResearchOp::TestTimeBn {
                w_src: rng.pick(&[0.0, 0.3, 1.0, -0.5, 1.5, f32::NAN]),
                eps,
            },
            3 => ResearchOp::GhostBatchNorm {
                ghost: rng.below(5) as usize,
                train: rng.chance(2),
                eps,
            },
            4 => ResearchOp::RepBatchNorm {
                train: rng.chance(2),
                alpha: rng.pick(&[0.0, 0.5, -1.0]),
            },
            5 => ResearchOp::EvoNormS0 {
                groups: rng.below(5) as usize,
                eps,
            },
            6 => ResearchOp::PowerNorm {
                group_num: rng.below(4) as usize,
                step: rng.pick(&[None, Some(0), Some(1), Some(5)]),
                eps,
            },
            7 => ResearchOp::Sinkhorn {
                iterations: rng.below(4) as usize,
                eps: rng.pick(&[1e-8, 1e-3, 0.0, -1.0, f32::NAN]),
            },
            8 => ResearchOp::IbnNorm {
                ratio: rng.pick(&[0.5, 0.25, 0.0, 1.0, -0.5, 2.0, f32::NAN]),
                train: rng.chance(2),
                eps,
            },
            9 => ResearchOp::EvoNormB0 {
                train: rng.chance(2),
                eps,
            },
            10 => ResearchOp::EstBn {
                moving_speed: rng.pick(&[0.01, 0.5, 1.0, -0.1, 2.0, f32::NAN]),
                train: rng.chance(2),
                eps,
            },
            11 => ResearchOp::UnifiedNorm { eps },
            12 => ResearchOp::AdaptiveBn {
                step: rng.below(4),
                adapted: rng.chance(2),
            },
            13 => ResearchOp::PoincareBatchNorm {
                c: rng.pick(&[0.1, 0.5, 1.0, 0.0, -1.0, f32::NAN]),
            },
            15 => ResearchOp::BatchChannelNorm {
                groups: rng.below(5) as usize,
                train: rng.chance(2),
                eps,
            },
            _ => ResearchOp::AlphaDropout {
                rate: rng.pick(&[0.0, 0.1, 0.5, 0.9, 1.0, -0.1, f32::NAN]),
                seed: rng.next(),
                train: rng.chance(2),
            },
        }
    }

    /// The f64 result on `x` (in the tensor's order), or `None` for a call the reference does
    /// not define (then `Ok` from wgnorm is a failure).
    pub fn reference(self, x: &[f64], shape: &[usize]) -> Option<Vec<f64>> {
        match self {
            ResearchOp::MeanVarianceNorm { .. }
            | ResearchOp::WeightStandardization { .. }
            | ResearchOp::EvoNormS0 { .. }
            | ResearchOp::UnifiedNorm { .. } => self.reference_rows(x, shape),
            ResearchOp::TestTimeBn { .. }
            | ResearchOp::GhostBatchNorm { .. }
            | ResearchOp::RepBatchNorm { .. }
            | ResearchOp::EstBn { .. } => self.reference_batch(x, shape),
            ResearchOp::IbnNorm { .. }
            | ResearchOp::EvoNormB0 { .. }
            | ResearchOp::PowerNorm { .. }
            | ResearchOp::Sinkhorn { .. } => self.reference_mixed(x, shape),
            ResearchOp::AdaptiveBn { .. }
            | ResearchOp::PoincareBatchNorm { .. }
            | ResearchOp::BatchChannelNorm { .. }
            | ResearchOp::AlphaDropout { .. } => self.reference_other(x, shape),
        }
    }

    /// [`ResearchOp::reference`] of the per-sample and per-row methods.
    fn reference_rows(self, x: &[f64], shape: &[usize]) -> Option<Vec<f64>> {
        let rank = shape.len();
        match self {
            ResearchOp::MeanVarianceNorm { axes, eps } => {
                let norm = |a: isize| if a < 0 { a + rank as isize } else { a };
                let mut list = vec![norm(axes.0)];
                list.extend(axes.1.map(norm));
                let in_range = list.iter().all(|a| (0..rank as isize).contains(a));
                let distinct = list.len() == 1 || list[0] != list[1];
                if !(in_range && distinct && eps_ok(eps)) {
                    return None;
                }
                // Documented limit: the reduced dims (size-1 dims joining their neighbour) form
                // at most [kept][reduced][kept][reduced] runs.
                let mut runs: Vec<bool> = Vec::new();
                for (d, &size) in shape.iter().enumerate() {
                    let red = list.contains(&(d as isize));
                    let red = if size == 1 && d > 0 {
                        *runs.last().unwrap()
                    } else {
                        red
                    };
                    if runs.last() != Some(&red) {
                        runs.push(red);
                    }
                }
                if runs.len() + usize::from(runs.first() == Some(&true)) > 4 {
                    return None;
                }
                Some(rc::mean_variance_norm(x, shape, &list, eps as f64))
            }
            ResearchOp::WeightStandardization {
                unbiased,
                inside,
                eps,
            } => {
                if rank < 1 || !eps_ok(eps) {
                    return None;
                }
                let o = shape[0];
                if x.is_empty() {
                    return Some(vec![]);
                }
                // One value per output channel has no spread: refused (biased too).
                if x.len() / o < 2 {
                    return None;
                }
                Some(rc::weight_standardization(
                    x, o, unbiased, inside, eps as f64,
                ))
            }
            ResearchOp::EvoNormS0 { groups, eps } => {
                if rank < 2 || !eps_ok(eps) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if groups == 0 || c % groups != 0 {
                    return None;
                }
                if x.is_empty() {
                    return Some(vec![]);
                }
                let (v, w, b) = (
                    f64s(&per_channel(c, 0.5)),
                    f64s(&per_channel(c, 1.0)),
                    f64s(&per_channel(c, -0.2)),
                );
                Some(rc::evonorm_s0(x, n, c, hw, groups, &v, &w, &b, eps as f64))
            }
            ResearchOp::UnifiedNorm { eps } => {
                if rank != 3 || !eps_ok(eps) {
                    return None;
                }
                let c = shape[rank - 1];
                if x.is_empty() {
                    return Some(vec![]);
                }
                let (w, b, rv) = (
                    f64s(&per_channel(c, 1.0)),
                    f64s(&per_channel(c, 0.1)),
                    f64s(&per_channel(c, 0.9)),
                );
                Some(rp::unified_norm_infer(x, c, &w, &b, &rv, eps as f64))
            }
            _ => unreachable!("dispatched by reference"),
        }
    }

    /// [`ResearchOp::reference`] of the BatchNorm variants.
    fn reference_batch(self, x: &[f64], shape: &[usize]) -> Option<Vec<f64>> {
        let rank = shape.len();
        match self {
            ResearchOp::TestTimeBn { w_src, eps } => {
                if rank < 2 || !eps_ok(eps) || !(0.0..=1.0).contains(&w_src) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if x.is_empty() {
                    return Some(vec![]);
                }
                if n * hw < 2 {
                    return None;
                }
                let (rm, rv) = (f64s(&per_channel(c, 0.1)), f64s(&per_channel(c, 0.9)));
                let y =
                    rc::test_time_bn(x, n, c, hw, None, None, &rm, &rv, w_src as f64, eps as f64);
                Some(y)
            }
            ResearchOp::GhostBatchNorm { ghost, train, eps } => {
                if rank < 2 || !eps_ok(eps) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                // The chunking is part of the op: a ghost size that does not divide the batch
                // is refused in inference too.
                if ghost == 0 || n % ghost != 0 {
                    return None;
                }
                if x.is_empty() {
                    return Some(vec![]);
                }
                let (rm, rv) = (f64s(&per_channel(c, 0.1)), f64s(&per_channel(c, 0.9)));
                if !train {
                    return Some(
                        rc::batch_norm(
                            x, n, c, hw, None, None, &rm, &rv, false, 0.1, true, eps as f64,
                        )
                        .y,
                    );
                }
                if ghost * hw < 2 {
                    return None;
                }
                let chunk = ghost * c * hw;
                let mut y = Vec::with_capacity(x.len());
                for xs in x.chunks(chunk) {
                    let out = rc::batch_norm(
                        xs, ghost, c, hw, None, None, &rm, &rv, true, 0.1, true, eps as f64,
                    );
                    y.extend(out.y);
                }
                Some(y)
            }
            ResearchOp::RepBatchNorm { train, alpha } => {
                if rank < 2 {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nhwc);
                if x.is_empty() {
                    return Some(vec![]);
                }
                if train && n * hw < 2 {
                    return None;
                }
                let (rm, rv) = (f64s(&per_channel(c, 0.1)), f64s(&per_channel(c, 0.9)));
                let xd = relayout(x, n, c, hw, Layout::Nhwc, true);
                let bn =
                    rc::batch_norm(&xd, n, c, hw, None, None, &rm, &rv, train, 0.1, true, 1e-5).y;
                let bn = relayout(&bn, n, c, hw, Layout::Nhwc, false);
                Some(
                    bn.iter()
                        .zip(x)
                        .map(|(b, v)| b + alpha as f64 * v)
                        .collect(),
                )
            }
            ResearchOp::EstBn {
                moving_speed,
                train,
                eps,
            } => {
                if rank < 2 || !eps_ok(eps) || !(0.0..=1.0).contains(&moving_speed) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if x.is_empty() {
                    return Some(vec![]);
                }
                let (rm, rv) = (f64s(&per_channel(c, 0.1)), f64s(&per_channel(c, 0.9)));
                let ones = vec![1.0; c];
                let zeros = vec![0.0; c];
                if !train {
                    return Some(
                        rc::batch_norm(
                            x, n, c, hw, None, None, &rm, &rv, false, 0.1, true, eps as f64,
                        )
                        .y,
                    );
                }
                let ms = moving_speed as f64;
                let out = rr::bn_updated_running(
                    x, n, c, hw, &ones, &zeros, &rm, &rv, ms, true, false, eps as f64,
                );
                Some(out.y)
            }
            _ => unreachable!("dispatched by reference"),
        }
    }

    /// [`ResearchOp::reference`] of the instance-mixing and token methods.
    fn reference_mixed(self, x: &[f64], shape: &[usize]) -> Option<Vec<f64>> {
        let rank = shape.len();
        match self {
            ResearchOp::IbnNorm { ratio, train, eps } => {
                if rank < 2 || !eps_ok(eps) || !(0.0..=1.0).contains(&ratio) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                let half = (c as f32 * ratio).floor() as usize;
                if x.is_empty() {
                    return Some(vec![]);
                }
                // Instance statistics need a spread per instance only through eps; the batch
                // part's unbiased running variance needs two values per channel.
                if train && half < c && n * hw < 2 {
                    return None;
                }
                let (w, b) = (f64s(&per_channel(c, 1.0)), f64s(&per_channel(c, 0.1)));
                let (rm, rv) = (
                    f64s(&per_channel(c - half, 0.1)),
                    f64s(&per_channel(c - half, 0.9)),
                );
                let out = rr::ibn_norm(x, n, c, hw, half, &w, &b, &rm, &rv, train, 0.1, eps as f64);
                Some(out.y)
            }
            ResearchOp::EvoNormB0 { train, eps } => {
                if rank < 2 || !eps_ok(eps) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if x.is_empty() {
                    return Some(vec![]);
                }
                if train && n * hw < 2 {
                    return None;
                }
                let (w, b, v) = (
                    f64s(&per_channel(c, 1.0)),
                    f64s(&per_channel(c, 0.1)),
                    f64s(&per_channel(c, 0.5)),
                );
                let rv = f64s(&per_channel(c, 0.9));
                let out =
                    rr::evonorm_b0(x, n, c, hw, &w, &b, &v, &rv, train, 0.1, true, eps as f64);
                Some(out.y)
            }
            ResearchOp::PowerNorm {
                group_num,
                step,
                eps,
            } => {
                if rank != 3 || !eps_ok(eps) || step == Some(0) {
                    return None;
                }
                let (t, b, c) = (shape[0], shape[1], shape[2]);
                if group_num == 0 || c % group_num != 0 {
                    return None;
                }
                if x.is_empty() {
                    return Some(vec![]);
                }
                let (w, bias) = (f64s(&per_channel(c, 1.0)), f64s(&per_channel(c, 0.1)));
                let mut phi = f64s(&per_channel(c, 0.8));
                let s = rp::PowerNormRef {
                    eps: eps as f64,
                    alpha_fwd: 0.9,
                    warmup: 3,
                    group_num,
                    step,
                };
                Some(rp::power_norm(x, t, b, c, None, &w, &bias, &mut phi, s))
            }
            ResearchOp::Sinkhorn { iterations, eps } => {
                if rank != 2 || !eps_ok(eps) || eps == 0.0 || iterations == 0 {
                    return None;
                }
                if x.is_empty() {
                    return Some(vec![]);
                }
                Some(rp::sinkhorn(x, shape[0], shape[1], iterations, eps as f64))
            }
            _ => unreachable!("dispatched by reference"),
        }
    }

    /// [`ResearchOp::reference`] of adaptive BN, Poincaré BN and AlphaDropout.
    fn reference_other(self, x: &[f64], shape: &[usize]) -> Option<Vec<f64>> {
        let rank = shape.len();
        match self {
            ResearchOp::AdaptiveBn { step, adapted } => {
                if rank < 2 {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if x.is_empty() {
                    return Some(vec![]);
                }
                if n * hw < 2 {
                    return None;
                }
                let (rm, rv) = (f64s(&per_channel(c, 0.1)), f64s(&per_channel(c, 0.9)));
                let eta = wgnorm::batchnorm::exponential_momentum_decay(0.1, 0.9, step) as f64;
                if !adapted {
                    let bn =
                        rc::batch_norm(x, n, c, hw, None, None, &rm, &rv, true, eta, true, 1e-5);
                    return Some(bn.y);
                }
                let (ones, zeros) = (vec![1.0; c], vec![0.0; c]);
                let out = rr::bn_updated_running(
                    x, n, c, hw, &ones, &zeros, &rm, &rv, eta, false, true, 1e-5,
                );
                Some(out.y)
            }
            ResearchOp::PoincareBatchNorm { c } => {
                if rank < 2 || !(c.is_finite() && c > 0.0) {
                    return None;
                }
                if x.is_empty() {
                    return Some(vec![]);
                }
                let d = shape[1];
                let ball = wgnorm_reference::poincare::Ball::new(
                    c as f64,
                    wgnorm_reference::poincare::PROJ_EPS_F32,
                );
                let bias = f64s(&per_channel(d, -0.3));
                // Points are the feature vectors along axis 1: their count is the rest; one
                // point has no spread and is refused.
                if x.len() / d < 2 {
                    return None;
                }
                Some(wgnorm_reference::poincare::poincare_batch_norm(
                    &ball, x, shape, 1, &bias, 0.9,
                ))
            }
            ResearchOp::AlphaDropout { rate, seed, train } => {
                if !(0.0..1.0).contains(&rate) {
                    return None;
                }
                if !train {
                    return Some(x.to_vec());
                }
                Some(wgnorm_reference::activation::alpha_dropout(x, rate as f64, seed).0)
            }
            ResearchOp::BatchChannelNorm { groups, train, eps } => {
                if rank < 2 || !eps_ok(eps) {
                    return None;
                }
                let (n, c, hw) = nc_hw(shape, Layout::Nchw);
                if groups == 0 || c % groups != 0 {
                    return None;
                }
                if x.is_empty() {
                    return Some(vec![]);
                }
                if train && n * hw < 2 {
                    return None;
                }
                let (rm, rv) = (f64s(&per_channel(c, 0.1)), f64s(&per_channel(c, 0.9)));
                let e = eps as f64;
                let bn = rc::batch_norm(x, n, c, hw, None, None, &rm, &rv, train, 0.1, true, e);
                Some(rc::group_norm(
                    &bn.y, n, c, hw, groups, None, None, e, false,
                ))
            }
            _ => unreachable!("dispatched by reference"),
        }
    }

    /// Whether the call's result is rounding noise in any implementation, so nothing can be
    /// compared: Batch-Channel Norm with eps = 0 in training where a (sample, group) of the
    /// BatchNorm stage's outputs has no variance in exact arithmetic (two values per channel
    /// normalize to exactly +-1; a group of equal signs is then 0 / 0 before rounding, and the
    /// float64 reference's and the kernel's results are each their own rounding errors scaled
    /// by 1 / sqrt(1e-30)).
    pub fn ill_conditioned(self, x: &[f64], shape: &[usize]) -> bool {
        let ResearchOp::BatchChannelNorm { groups, train, eps } = self else {
            return false;
        };
        if !(train && eps == 0.0) || x.is_empty() || shape.len() < 2 {
            return false;
        }
        let (n, c, hw) = nc_hw(shape, Layout::Nchw);
        if groups == 0 || c % groups != 0 || n * hw < 2 {
            return false;
        }
        let (rm, rv) = (vec![0.1; c], vec![0.9; c]);
        let y = rc::batch_norm(x, n, c, hw, None, None, &rm, &rv, true, 0.1, true, 0.0).y;
        y.chunks(c / groups * hw).any(|g| {
            let m = g.iter().sum::<f64>() / g.len() as f64;
            g.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (g.len() as f64) < 1e-12
        })
    }

    /// Records the op from `x` into `y`.
    pub fn encode(
        self,
        ctx: &Context,
        dtype: DType,
        x: &Tensor,
        y: &Tensor,
        enc: &mut wgpu::CommandEncoder,
    ) -> wgnorm::Result<()> {
        match self {
            ResearchOp::MeanVarianceNorm { .. }
            | ResearchOp::WeightStandardization { .. }
            | ResearchOp::EvoNormS0 { .. }
            | ResearchOp::UnifiedNorm { .. } => self.encode_rows(ctx, dtype, x, y, enc),
            ResearchOp::TestTimeBn { .. }
            | ResearchOp::GhostBatchNorm { .. }
            | ResearchOp::RepBatchNorm { .. }
            | ResearchOp::EstBn { .. } => self.encode_batch(ctx, dtype, x, y, enc),
            ResearchOp::IbnNorm { .. }
            | ResearchOp::EvoNormB0 { .. }
            | ResearchOp::PowerNorm { .. }
            | ResearchOp::Sinkhorn { .. } => self.encode_mixed(ctx, dtype, x, y, enc),
            ResearchOp::AdaptiveBn { .. }
            | ResearchOp::PoincareBatchNorm { .. }
            | ResearchOp::BatchChannelNorm { .. }
            | ResearchOp::AlphaDropout { .. } => self.encode_other(ctx, dtype, x, y, enc),
        }
    }

    /// [`ResearchOp::encode`] of the per-sample and per-row methods.
    fn encode_rows(
        self,
        ctx: &Context,
        dtype: DType,
        x: &Tensor,
        y: &Tensor,
        enc: &mut wgpu::CommandEncoder,
    ) -> wgnorm::Result<()> {
        match self {
            ResearchOp::MeanVarianceNorm { axes, eps } => {
                let mut list = vec![axes.0];
                list.extend(axes.1);
                let op = wgnorm::MeanVarianceNorm::new(
                    ctx,
                    wgnorm::MeanVarianceNormConfig {
                        axes: list,
                        eps,
                        dtype,
                    },
                )?;
                op.encode(enc, x, y)
            }
            ResearchOp::WeightStandardization {
                unbiased,
                inside,
                eps,
            } => {
                let op = wgnorm::WeightStandardization::new(
                    ctx,
                    wgnorm::WeightStandardizationConfig {
                        variant: wgnorm::WsVariant::from_flags(unbiased, inside),
                        eps,
                        dtype,
                    },
                )?;
                op.encode(enc, x, y)
            }
            ResearchOp::EvoNormS0 { groups, eps } => {
                let c = channels(x, Layout::Nchw);
                let (v, w, b) = (
                    vector(ctx, c, 0.5)?,
                    vector(ctx, c, 1.0)?,
                    vector(ctx, c, -0.2)?,
                );
                let op = wgnorm::EvoNormS0::new(
                    ctx,
                    wgnorm::EvoNormS0Config {
                        groups,
                        eps,
                        layout: Layout::Nchw,
                        dtype,
                    },
                )?;
                let inputs = NormInputs {
                    x,
                    weight: Some(&w),
                    bias: Some(&b),
                };
                op.encode(enc, &inputs, &v, &NormOutputs { y, saved: None })
            }
            ResearchOp::UnifiedNorm { eps } => {
                let c = x.shape().last().copied().unwrap_or(0);
                let (w, b, rv) = (
                    vector(ctx, c, 1.0)?,
                    vector(ctx, c, 0.1)?,
                    vector(ctx, c, 0.9)?,
                );
                let op = wgnorm::UnifiedNorm::new(ctx, wgnorm::UnifiedNormConfig { eps, dtype })?;
                let inputs = wgnorm::UnifiedNormInputs {
                    x,
                    pad_mask: None,
                    weight: Some(&w),
                    bias: Some(&b),
                    running_var: &rv,
                    window: None,
                };
                op.encode_infer(enc, &inputs, y)
            }
            _ => unreachable!("dispatched by encode"),
        }
    }

    /// [`ResearchOp::encode`] of the BatchNorm variants.
    fn encode_batch(
        self,
        ctx: &Context,
        dtype: DType,
        x: &Tensor,
        y: &Tensor,
        enc: &mut wgpu::CommandEncoder,
    ) -> wgnorm::Result<()> {
        match self {
            ResearchOp::TestTimeBn { w_src, eps } => {
                let c = channels(x, Layout::Nchw);
                let (rm, rv) = (vector(ctx, c, 0.1)?, vector(ctx, c, 0.9)?);
                let op = wgnorm::batchnorm::TestTimeBn::new(
                    ctx,
                    wgnorm::batchnorm::TestTimeBnConfig {
                        batch_norm: bn_cfg(eps, Layout::Nchw, dtype),
                        w_src,
                    },
                )?;
                let inputs = bn_inputs(x, Some(&rm), Some(&rv));
                op.encode(enc, &inputs, &BatchNormOutputs { y, saved: None })
            }
            ResearchOp::GhostBatchNorm { ghost, train, eps } => {
                let c = channels(x, Layout::Nchw);
                let (rm, rv) = (vector(ctx, c, 0.1)?, vector(ctx, c, 0.9)?);
                let op = wgnorm::batchnorm::GhostBatchNorm::new(
                    ctx,
                    wgnorm::batchnorm::GhostBatchNormConfig {
                        batch_norm: bn_cfg(eps, Layout::Nchw, dtype),
                        ghost_size: ghost,
                    },
                )?;
                let inputs = bn_inputs(x, Some(&rm), Some(&rv));
                let outputs = BatchNormOutputs { y, saved: None };
                op.encode(enc, &inputs, &outputs, Mode::training(train))
            }
            ResearchOp::RepBatchNorm { train, alpha } => {
                let c = channels(x, Layout::Nhwc);
                let (rm, rv) = (vector(ctx, c, 0.1)?, vector(ctx, c, 0.9)?);
                let alpha = ctx.upload_f32(&[alpha], &[1])?;
                let op =
                    wgnorm::batchnorm::RepBatchNorm::new(ctx, bn_cfg(1e-5, Layout::Nhwc, dtype))?;
                let inputs = bn_inputs(x, Some(&rm), Some(&rv));
                let outputs = BatchNormOutputs { y, saved: None };
                op.encode(enc, &inputs, &alpha, &outputs, Mode::training(train))
            }
            ResearchOp::EstBn {
                moving_speed,
                train,
                eps,
            } => {
                let c = channels(x, Layout::Nchw);
                let (rm, rv) = (vector(ctx, c, 0.1)?, vector(ctx, c, 0.9)?);
                let op = wgnorm::batchnorm::EstBn::new(
                    ctx,
                    wgnorm::batchnorm::EstBnConfig {
                        batch_norm: bn_cfg(eps, Layout::Nchw, dtype),
                        moving_speed,
                    },
                )?;
                let inputs = bn_inputs(x, Some(&rm), Some(&rv));
                let outputs = BatchNormOutputs { y, saved: None };
                op.encode(enc, &inputs, &outputs, Mode::training(train))
            }
            _ => unreachable!("dispatched by encode"),
        }
    }

    /// [`ResearchOp::encode`] of the instance-mixing and token methods.
    fn encode_mixed(
        self,
        ctx: &Context,
        dtype: DType,
        x: &Tensor,
        y: &Tensor,
        enc: &mut wgpu::CommandEncoder,
    ) -> wgnorm::Result<()> {
        match self {
            ResearchOp::IbnNorm { ratio, train, eps } => {
                let c = channels(x, Layout::Nchw);
                let half = if (0.0..=1.0).contains(&ratio) {
                    (c as f32 * ratio).floor() as usize
                } else {
                    0
                };
                let (w, b) = (vector(ctx, c, 1.0)?, vector(ctx, c, 0.1)?);
                let (rm, rv) = (vector(ctx, c - half, 0.1)?, vector(ctx, c - half, 0.9)?);
                let op = wgnorm::IbnNorm::new(
                    ctx,
                    wgnorm::IbnConfig {
                        ratio,
                        eps,
                        momentum: 0.1,
                        layout: Layout::Nchw,
                        dtype,
                    },
                )?;
                let inputs = wgnorm::IbnInputs {
                    x,
                    weight: &w,
                    bias: &b,
                    running_mean: &rm,
                    running_var: &rv,
                };
                op.encode(enc, &inputs, y, Mode::training(train))
            }
            ResearchOp::EvoNormB0 { train, eps } => {
                let c = channels(x, Layout::Nchw);
                let (w, b, v, rv) = (
                    vector(ctx, c, 1.0)?,
                    vector(ctx, c, 0.1)?,
                    vector(ctx, c, 0.5)?,
                    vector(ctx, c, 0.9)?,
                );
                let op = wgnorm::EvoNormB0::new(
                    ctx,
                    wgnorm::EvoNormB0Config {
                        eps,
                        momentum: 0.1,
                        running: wgnorm::EvoRunningVar::TimmUnbiased,
                        layout: Layout::Nchw,
                        dtype,
                    },
                )?;
                let inputs = wgnorm::EvoNormB0Inputs {
                    x,
                    weight: &w,
                    bias: &b,
                    v: &v,
                    running_var: &rv,
                };
                op.encode(enc, &inputs, y, Mode::training(train))
            }
            ResearchOp::PowerNorm {
                group_num,
                step,
                eps,
            } => {
                let c = x.shape().last().copied().unwrap_or(0);
                let (w, b, phi) = (
                    vector(ctx, c, 1.0)?,
                    vector(ctx, c, 0.1)?,
                    vector(ctx, c, 0.8)?,
                );
                let op = wgnorm::PowerNorm::new(
                    ctx,
                    wgnorm::PowerNormConfig {
                        eps,
                        alpha_fwd: 0.9,
                        warmup_iters: 3,
                        group_num,
                        dtype,
                    },
                )?;
                let inputs = wgnorm::PowerNormInputs {
                    x,
                    pad_mask: None,
                    weight: Some(&w),
                    bias: Some(&b),
                    running_phi: &phi,
                };
                match step {
                    Some(t) => op.encode_train(enc, &inputs, y, t),
                    None => op.encode_infer(enc, &inputs, y),
                }
            }
            ResearchOp::Sinkhorn { iterations, eps } => {
                let op = wgnorm::SinkhornNormalize::new(
                    ctx,
                    wgnorm::SinkhornConfig {
                        iterations,
                        eps,
                        dtype,
                    },
                )?;
                op.encode(enc, x, y)
            }
            _ => unreachable!("dispatched by encode"),
        }
    }

    /// [`ResearchOp::encode`] of adaptive BN, Poincaré BN and AlphaDropout.
    fn encode_other(
        self,
        ctx: &Context,
        dtype: DType,
        x: &Tensor,
        y: &Tensor,
        enc: &mut wgpu::CommandEncoder,
    ) -> wgnorm::Result<()> {
        match self {
            ResearchOp::AdaptiveBn { step, adapted } => {
                let c = channels(x, Layout::Nchw);
                let (rm, rv) = (vector(ctx, c, 0.1)?, vector(ctx, c, 0.9)?);
                let normalize = if adapted {
                    wgnorm::batchnorm::AdaptNormalize::Adapted
                } else {
                    wgnorm::batchnorm::AdaptNormalize::Batch
                };
                let op = wgnorm::batchnorm::AdaptiveBn::new(
                    ctx,
                    wgnorm::batchnorm::AdaptiveBnConfig {
                        batch_norm: bn_cfg(1e-5, Layout::Nchw, dtype),
                        normalize,
                    },
                )?;
                let eta = wgnorm::batchnorm::exponential_momentum_decay(0.1, 0.9, step);
                let inputs = bn_inputs(x, Some(&rm), Some(&rv));
                op.encode(enc, &inputs, &BatchNormOutputs { y, saved: None }, eta)
            }
            ResearchOp::PoincareBatchNorm { c } => {
                let d = x.shape().get(1).copied().unwrap_or(0);
                let bias = vector(ctx, d, -0.3)?;
                let weight = ctx.upload_f32(&[0.9], &[1])?;
                let op = wgnorm::PoincareBatchNorm::new(
                    ctx,
                    wgnorm::PoincareBatchNormConfig {
                        c,
                        feature_axis: 1,
                        dtype,
                        ..Default::default()
                    },
                )?;
                let inputs = wgnorm::PoincareBatchNormInputs {
                    x,
                    bias: &bias,
                    weight: &weight,
                    running_mean: None,
                    running_var: None,
                };
                op.encode(enc, &inputs, y, wgnorm::PoincareStatistics::Batch)
            }
            ResearchOp::AlphaDropout { rate, seed, train } => {
                let op =
                    wgnorm::AlphaDropout::new(ctx, wgnorm::AlphaDropoutConfig { rate, dtype })?;
                op.encode(enc, x, y, seed, Mode::training(train))
            }
            ResearchOp::BatchChannelNorm { groups, train, eps } => {
                let c = channels(x, Layout::Nchw);
                let (rm, rv) = (vector(ctx, c, 0.1)?, vector(ctx, c, 0.9)?);
                let op = wgnorm::batchnorm::BatchChannelNorm::new(
                    ctx,
                    wgnorm::batchnorm::BatchChannelNormConfig {
                        batch_norm: bn_cfg(eps, Layout::Nchw, dtype),
                        groups,
                    },
                )?;
                let inputs = wgnorm::batchnorm::BatchChannelNormInputs {
                    x,
                    bn_weight: None,
                    bn_bias: None,
                    running_mean: Some(&rm),
                    running_var: Some(&rv),
                    weight: None,
                    bias: None,
                };
                op.encode(enc, &inputs, y, Mode::training(train))
            }
            _ => unreachable!("dispatched by encode"),
        }
    }
}

/// Channels of an NCHW or channels-last tensor (0 for rank < 2).
fn channels(x: &Tensor, layout: Layout) -> usize {
    match layout {
        Layout::Nchw => x.shape().get(1),
        Layout::Nhwc => x.shape().last(),
    }
    .copied()
    .unwrap_or(0)
}

/// A per-channel f32 vector on the device ([`per_channel`]).
fn vector(ctx: &Context, c: usize, base: f32) -> wgnorm::Result<Tensor> {
    ctx.upload_f32(&per_channel(c, base), &[c])
}

fn bn_cfg(eps: f32, layout: Layout, dtype: DType) -> BatchNormConfig {
    BatchNormConfig {
        eps,
        layout,
        dtype,
        ..Default::default()
    }
}

fn bn_inputs<'a>(
    x: &'a Tensor,
    rm: Option<&'a Tensor>,
    rv: Option<&'a Tensor>,
) -> BatchNormInputs<'a> {
    BatchNormInputs {
        x,
        weight: None,
        bias: None,
        running_mean: rm,
        running_var: rv,
    }
}
