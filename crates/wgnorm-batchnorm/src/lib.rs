//! BatchNorm (Ioffe & Szegedy 2015) with PyTorch semantics, NCHW or channels-last.
//!
//! Training normalizes with the batch mean and biased variance per channel (over N and the
//! spatial dims) and, when running statistics are given, updates them in place on the GPU:
//! `r = (1 - m) r + m s`, the unbiased variance into `running_var` unless
//! `running_var_unbiased = false`, and a cumulative average when `momentum` is `None`
//! (PyTorch's `momentum=None`, counted by a num_batches_tracked kept on the GPU). Inference
//! normalizes with the running statistics: a per-channel scale and shift computed once per call
//! (C values), then one multiply-add per element.
//!
//! Layouts: `Layout::Nchw` `(N, C, *)` or `Layout::Nhwc` `(N, *, C)`; x and y in f32 or f16.
//! Parameters and state (`weight`, `bias`, `running_mean`, `running_var`, the saved statistics)
//! are f32 with one value per channel, as PyTorch keeps BatchNorm buffers under autocast.

#![deny(missing_docs)]

use wgnorm_core::binding::BindCache;
use wgnorm_core::chnorm::{
    ChannelNorm, ChannelNormArgs, ChannelView, Epilogue, EpilogueInput, Statistics,
};
pub use wgnorm_core::chnorm::{Layout, Moments, RunningUpdate};

mod bcn;
mod evonorm_b0;
mod evonorm_b0_grad;
mod fold;
mod grad;
mod ibn_grad;
mod instance;
mod progressive;
mod progressive_grad;
mod region;
mod region_grad;
mod variants;
pub use bcn::{
    BatchChannelGrads, BatchChannelNorm, BatchChannelNormConfig, BatchChannelNormGradInputs,
    BatchChannelNormGradOutputs, BatchChannelNormInputs,
};
pub use evonorm_b0::{
    EvoB0Params, EvoNormB0, EvoNormB0Config, EvoNormB0Inputs, EvoRunningVar, EVONORM_B0_KERNEL,
    MAX_DENOMINATOR,
};
pub use evonorm_b0_grad::{
    grad_specializations as evonorm_b0_grad_specializations, EvoB0GradParams, EvoNormB0GradOutputs,
    EvoNormB0Grads, EVONORM_B0_GRAD_KERNEL,
};
pub use fold::{
    fold_batch_norm, fold_rep_batch_norm, fold_specializations, FoldArgs, FoldParams, FOLD_KERNEL,
};
pub use grad::{BatchNormGradInputs, BatchNormGradOutputs, BatchNormGrads};
pub use ibn_grad::{
    ibn_grad_stats_spec, IbnGradInputs, IbnGradOutputs, IbnGrads, IBN_GRAD, IBN_GRAD_STATS_KERNEL,
};
pub use instance::{
    specializations as mixing_specializations, AdaB2nConfig, AdaB2nInputs, AdaB2nParams,
    AdaB2nTaskWeighted, IbnConfig, IbnInputs, IbnNorm, IbnParams, UnmixParams, UnmixTns,
    UnmixTnsConfig, UnmixTnsInputs, ADAB2N_KERNEL, IBN_KERNEL, UNMIX_TNS_KERNEL,
};
pub use progressive::{ProgressiveRepNorm, ProgressiveRepNormConfig, ProgressiveRepNormInputs};
pub use progressive_grad::ProgressiveRepNormGradOutputs;
pub use region::{
    specializations as region_specializations, RegionNormB, RegionNormBConfig, RegionNormInputs,
    RegionNormL, RegionNormLConfig, RegionNormLInputs, RegionParams, REGION_KERNEL,
};
pub use region_grad::{
    grad_specializations as region_grad_specializations, RegionNormGradOutputs, REGION_GRAD_KERNEL,
};
pub use variants::{
    AdaptiveBn, AdaptiveBnConfig, EstBn, EstBnConfig, GhostBatchNorm, GhostBatchNormConfig,
    RepBatchNorm, TestTimeBn, TestTimeBnConfig,
};
use wgnorm_core::chgrad::{self, GradTerm};
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::{Context, DType, Error, Mode, Result, Tensor};

/// RepBN's apply epilogue: `y = BN(x) + alpha * x` with a scalar `alpha` on the GPU.
pub const SCALED_RESIDUAL: Epilogue = Epilogue::new(
    "channel_norm/apply+scaled_residual",
    &[
        wgnorm_core::shader::snippet::ACTIVATION,
        wgnorm_core::shader::snippet::CHANNEL_COMMON,
        wgnorm_core::shader_file!("batch_norm/epilogue_scaled_residual.wgsl"),
        wgnorm_core::chnorm::plan::APPLY_BODY,
    ],
    3,
    EpilogueInput::Scalar,
);

/// RepBN's gradient term, the backward of [`SCALED_RESIDUAL`]: `alpha * dy` added to dx and
/// `dalpha = sum(dy * x)` (f32 `[1]`) from the engine's per-channel sums. Its finalize snippet
/// reads one statistics slot per channel and dz = dy: BatchNorm's view without an activation,
/// the only view it is recorded on.
pub const SCALED_RESIDUAL_GRAD: GradTerm = GradTerm::new(
    (
        "channel_grad/dx+scaled_residual",
        &[
            chgrad::DX_HEAD[0],
            chgrad::DX_HEAD[1],
            wgnorm_core::shader_file!("batch_norm/grad_scaled_residual_dx.wgsl"),
            chgrad::DX_BODY,
        ],
    ),
    (
        "channel_grad/finalize+scaled_residual",
        &[
            chgrad::FINALIZE_HEAD[0],
            chgrad::FINALIZE_HEAD[1],
            chgrad::FINALIZE_HEAD[2],
            wgnorm_core::shader_file!("batch_norm/grad_scaled_residual_finalize.wgsl"),
            chgrad::FINALIZE_BODY,
        ],
    ),
    (chgrad::TermLen::Scalar, chgrad::TermLen::Scalar),
);

/// What is fixed when the layer is created.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Default 1e-5.
    pub eps: f32,
    /// PyTorch convention (weight of the new value), default `Some(0.1)`; `None`: cumulative.
    /// ONNX's momentum is the weight of the old value: pass `1 - m`.
    pub momentum: Option<f32>,
    /// Feed the unbiased batch variance to `running_var` (PyTorch). Default true.
    pub running_var_unbiased: bool,
    /// Layout of x and y: NCHW or channels-last.
    pub layout: Layout,
    /// Storage type of x and y (arithmetic is f32).
    pub dtype: DType,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig {
            eps: 1e-5,
            momentum: Some(0.1),
            running_var_unbiased: true,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

/// Inputs. `weight`/`bias`: f32 `[C]`. `running_mean`/`running_var`: f32 `[C]`, read at
/// inference and updated in place in training (omit both in training to skip the update, as
/// PyTorch's `track_running_stats=False`).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Shift (beta) added after the scale; `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// Running mean (f32, one per channel): read at inference, updated in training.
    pub running_mean: Option<&'a Tensor>,
    /// Running variance (f32, one per channel): read at inference, updated in training.
    pub running_var: Option<&'a Tensor>,
}

/// Outputs: `y` like x; optional `saved` f32 `[C, 2]` of (batch mean, invstd) per channel, as a
/// backward pass needs them (the running statistics in inference).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormOutputs<'a> {
    /// Output: the shape and dtype of `x`.
    pub y: &'a Tensor,
    /// Receives the per-slot `(mean, rstd)` pairs (f32) when given.
    pub saved: Option<&'a Tensor>,
}

/// A BatchNorm bound to a device.
pub struct BatchNorm {
    engine: ChannelNorm,
    cfg: BatchNormConfig,
    fold_binds: BindCache,
    /// Per-(chunk, channel) moments of Ghost BN training, one tensor per input shape.
    ghost_moments: ScratchCache,
    grad: wgnorm_core::chgrad::ChannelGrad,
}

impl BatchNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: BatchNormConfig) -> Result<BatchNorm> {
        let engine = ChannelNorm::new(ctx, cfg.eps, cfg.dtype, Default::default())?;
        let grad =
            wgnorm_core::chgrad::ChannelGrad::new(ctx, cfg.eps, cfg.dtype, Default::default())?;
        Ok(BatchNorm {
            engine,
            cfg,
            fold_binds: BindCache::default(),
            ghost_moments: Default::default(),
            grad,
        })
    }

    /// The channel engine under this op (for tools that inspect it).
    pub fn engine(&self) -> &ChannelNorm {
        &self.engine
    }

    /// Forces the forward passes' lane mapping (`cargo xtask bench --autotune` sweeps it; the
    /// defaults follow the adapter). Results agree across plans up to rounding.
    pub fn with_lane_plan(mut self, plan: wgnorm_core::chnorm::LanePlan) -> BatchNorm {
        self.engine = self.engine.with_lane_plan(plan);
        self
    }

    /// Records the op. `training` picks batch statistics (and the running update) or running
    /// statistics. No submit, no readback; typed errors before anything is recorded.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        mode: Mode,
    ) -> Result<()> {
        let training = mode.is_train();
        self.encode_with(
            encoder,
            inputs,
            outputs,
            self.statistics(inputs, training),
            None,
            None,
        )
    }

    fn statistics(&self, inputs: &BatchNormInputs, training: bool) -> Statistics {
        let tracks = inputs.running_mean.is_some() || inputs.running_var.is_some();
        if training {
            Statistics::Batch(tracks.then_some(RunningUpdate {
                momentum: self.cfg.momentum,
                unbiased: self.cfg.running_var_unbiased,
            }))
        } else {
            Statistics::Running
        }
    }

    /// The engine call of a BatchNorm-style call, and the view it needs.
    fn args<'a>(
        &self,
        inputs: &BatchNormInputs<'a>,
        outputs: &BatchNormOutputs<'a>,
        statistics: Statistics,
        alpha: Option<&'a Tensor>,
        moments: Option<&'a Tensor>,
    ) -> Result<ChannelNormArgs<'a>> {
        let view = ChannelView::batch_norm(inputs.x.shape(), self.cfg.layout)?;
        Ok(ChannelNormArgs {
            weight: inputs.weight,
            bias: inputs.bias,
            running_mean: inputs.running_mean,
            running_var: inputs.running_var,
            stats: outputs.saved,
            statistics,
            moments,
            epilogue: if alpha.is_some() {
                SCALED_RESIDUAL
            } else {
                Epilogue::AFFINE
            },
            aux: alpha,
            ..ChannelNormArgs::new(inputs.x, outputs.y, view)
        })
    }

    fn encode_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        statistics: Statistics,
        alpha: Option<&Tensor>,
        moments: Option<&Tensor>,
    ) -> Result<()> {
        let args = self.args(inputs, outputs, statistics, alpha, moments)?;
        self.engine.encode(encoder, &args)
    }

    /// Every check of `BatchNorm::encode` (`alpha`: `None`) or `encode_rep`, recording nothing
    /// (for ops that record several passes and must fail before the first).
    pub(crate) fn check_forward(
        &self,
        inputs: &BatchNormInputs,
        alpha: Option<&Tensor>,
        outputs: &BatchNormOutputs,
        mode: Mode,
    ) -> Result<()> {
        let statistics = self.statistics(inputs, mode.is_train());
        let args = self.args(inputs, outputs, statistics, alpha, None)?;
        self.engine.check_args(&args)
    }

    /// Training step with an explicit running-statistics momentum and variance convention for
    /// this call (schedules such as AdaB²N's or exponential momentum decay, docs/methods.md A10/A13).
    pub fn encode_train_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        update: RunningUpdate,
    ) -> Result<()> {
        self.encode_with(
            encoder,
            inputs,
            outputs,
            Statistics::Batch(Some(update)),
            None,
            None,
        )
    }

    /// EstBN (Batch-Channel Normalization's estimated BN, docs/methods.md A6). Training: the
    /// variance fed to the running one is `var_est = mean((x - rm_old)^2)`, centred on the
    /// **old** running mean; `rm <- (1 - ms) rm + ms mean_b`, `rv <- (1 - ms) rv + ms var_est`;
    /// then x is normalized with the **updated** running statistics (and the affine). Inference:
    /// the running statistics. `moving_speed` (ms, the training script's `estbn_moving_speed`;
    /// its value is not published, a port uses 0.01). Needs the running statistics.
    pub(crate) fn encode_estbn(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        moving_speed: f32,
        mode: Mode,
    ) -> Result<()> {
        let training = mode.is_train();
        require_running(inputs)?;
        let statistics = if training {
            Statistics::UpdatedRunning {
                momentum: moving_speed,
                unbiased: false,
                estimated: true,
            }
        } else {
            Statistics::Running
        };
        self.encode_with(encoder, inputs, outputs, statistics, None, None)
    }

    /// Source-free adaptation step with a momentum schedule (docs/methods.md A13; no official code):
    /// the running statistics start at the source ones and move as
    /// `r <- (1 - eta) r + eta s` with this step's `eta` (e.g. [`exponential_momentum_decay`]:
    /// `eta_k = eta0 * delta^k`, or any schedule of yours); `normalize` says whether this
    /// batch is normalized with its own statistics or with the adapted (updated running) ones.
    /// The variance fed is unbiased unless `BatchNormConfig::running_var_unbiased` is false.
    pub(crate) fn encode_adaptive(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        eta: f32,
        normalize: AdaptNormalize,
    ) -> Result<()> {
        require_running(inputs)?;
        let unbiased = self.cfg.running_var_unbiased;
        let statistics = match normalize {
            AdaptNormalize::Adapted => Statistics::UpdatedRunning {
                momentum: eta,
                unbiased,
                estimated: false,
            },
            AdaptNormalize::Batch => Statistics::Batch(Some(RunningUpdate {
                momentum: Some(eta),
                unbiased,
            })),
        };
        self.encode_with(encoder, inputs, outputs, statistics, None, None)
    }

    /// Ghost Batch Normalization (Hoffer et al. 2017; docs/methods.md A9): in training, each chunk of
    /// `ghost_size` consecutive samples is normalized with its own per-channel statistics, and
    /// the running statistics get one PyTorch update per chunk, in chunk order (the common
    /// implementations' convention; the paper's Algorithm 1 may weight chunks differently).
    /// `ghost_size` must divide N: a smaller last chunk is rejected with a typed error rather than
    /// given statistics of a different sample size. Inference is plain BatchNorm.
    pub(crate) fn encode_ghost(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        ghost_size: usize,
        mode: Mode,
    ) -> Result<()> {
        let training = mode.is_train();
        let n = inputs.x.shape().first().copied().unwrap_or(0);
        if ghost_size == 0 || n % ghost_size != 0 {
            return Err(Error::InvalidParameter {
                name: "ghost_size",
                value: format!("{ghost_size} for a batch of {n}"),
                why: "must be >= 1 and divide the batch (a smaller last chunk is not supported: pad or drop it)",
            });
        }
        let view = ChannelView::per_chunk(inputs.x.shape(), self.cfg.layout, ghost_size)?;
        if !training {
            return self.encode(encoder, inputs, outputs, Mode::Infer);
        }
        let running = match (inputs.running_mean, inputs.running_var) {
            (Some(m), Some(v)) => Some((m, v)),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidParameter {
                    name: "running statistics",
                    value: "only one given".into(),
                    why: "pass both running_mean and running_var, or neither",
                })
            }
        };
        let momentum = match self.cfg.momentum {
            Some(m) => m,
            None if running.is_none() => 0.0,
            None => {
                return Err(Error::InvalidParameter {
                    name: "momentum",
                    value: "None".into(),
                    why: "Ghost BN updates the running statistics once per chunk: give a numeric momentum",
                })
            }
        };
        let ctx = self.engine.context();
        let moments =
            self.ghost_moments
                .get(ctx, inputs.x.shape(), &[view.slots(), 3], DType::F32)?;
        let args = ChannelNormArgs {
            weight: inputs.weight,
            bias: inputs.bias,
            stats: outputs.saved,
            moments: Some(&moments),
            ..ChannelNormArgs::new(inputs.x, outputs.y, view)
        };
        // Every pass is checked before the first is recorded.
        self.engine.check_args(&args)?;
        if let Some((rm, rv)) = running {
            self.engine
                .check_running_from_moments(view, &moments, rm, rv, momentum)?;
        }
        self.engine
            .encode_reduce(encoder, inputs.x, view, &moments)?;
        if let Some((rm, rv)) = running {
            self.engine
                .encode_running_from_moments(encoder, view, &moments, rm, rv, momentum, true)?;
        }
        self.engine.encode(encoder, &args)
    }

    /// Test-time BN calibration (alpha-BN; TBN is `w_src = 0`, docs/methods.md A11): normalizes with
    /// `mu = w_src * running_mean + (1 - w_src) * mu_batch` and
    /// `var = w_src * running_var + (1 - w_src) * var_batch_unbiased`; the running (source)
    /// statistics are read, not updated. `w_src` is the weight on the source statistics (codebases
    /// call it alpha with either meaning).
    pub(crate) fn encode_test_time(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        w_src: f32,
    ) -> Result<()> {
        self.encode_with(
            encoder,
            inputs,
            outputs,
            Statistics::Mixed { w_src },
            None,
            None,
        )
    }

    /// SLAB's RepBN (docs/methods.md A16): `y = BN(x) + alpha * x` with `alpha` a learnable f32 `[1]`
    /// scalar on the GPU. Token tensors `[B, T, C]` use `Layout::Nhwc` (BN over B and T per
    /// channel); training updates the running statistics as [`BatchNorm::encode`] does.
    pub(crate) fn encode_rep(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        alpha: &Tensor,
        outputs: &BatchNormOutputs,
        mode: Mode,
    ) -> Result<()> {
        let training = mode.is_train();
        let statistics = self.statistics(inputs, training);
        self.encode_with(encoder, inputs, outputs, statistics, Some(alpha), None)
    }

    /// Synchronised BatchNorm, step 1: records this device's per-channel moments of `x` into
    /// `moments` (f32 `[C, 3]`: count, mean, M2). Download them (or hand the buffer to your
    /// all-reduce), merge across devices with `Moments::merge` (Chan's formula; a plain sum of
    /// counts with a count-weighted mean does not merge M2 correctly), upload the merged moments
    /// to every device and call [`BatchNorm::encode_synced`]. wgnorm ships no transport: NCCL,
    /// MPI or a parameter server plug in between the two calls.
    pub fn encode_reduce(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        moments: &Tensor,
    ) -> Result<()> {
        let view = ChannelView::batch_norm(x.shape(), self.cfg.layout)?;
        self.engine.encode_reduce(encoder, x, view, moments)
    }

    /// Synchronised BatchNorm, step 2: training-mode normalization of this device's `x` with the
    /// merged moments of the whole (distributed) batch; the running statistics, when given, are
    /// updated from the merged moments, so every device keeps identical running statistics.
    pub fn encode_synced(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        merged: &Tensor,
    ) -> Result<()> {
        let statistics = self.statistics(inputs, true);
        self.encode_with(encoder, inputs, outputs, statistics, None, Some(merged))
    }

    /// Allocates `y`, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_batchnorm::{BatchNorm, BatchNormConfig, BatchNormInputs};
    /// use wgnorm_core::{Context, Mode};
    ///
    /// // x: NCHW [2, 2, 1, 2]; channel 0 holds 1, 3, 5, 7 and channel 1 holds 10 everywhere.
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[1.0, 3.0, 10.0, 10.0, 5.0, 7.0, 10.0, 10.0], &[2, 2, 1, 2])?;
    /// let rm = ctx.upload_f32(&[0.0, 0.0], &[2])?;
    /// let rv = ctx.upload_f32(&[1.0, 1.0], &[2])?;
    /// let bn = BatchNorm::new(&ctx, BatchNormConfig { eps: 0.0, ..Default::default() })?;
    /// let inputs = BatchNormInputs {
    ///     x: &x,
    ///     weight: None,
    ///     bias: None,
    ///     running_mean: Some(&rm),
    ///     running_var: Some(&rv),
    /// };
    /// // Training: the batch's statistics, and the running ones move by momentum 0.1.
    /// let y = ctx.download(&bn.forward(&inputs, Mode::Train)?)?;
    /// let s = 5.0f32.sqrt(); // channel 0: mean 4, biased variance 5
    /// assert!((y[0] + 3.0 / s).abs() < 1e-6 && (y[4] - 1.0 / s).abs() < 1e-6);
    /// let rm_now = ctx.download(&rm)?;
    /// assert!((rm_now[0] - 0.4).abs() < 1e-6 && (rm_now[1] - 1.0).abs() < 1e-6);
    /// // Inference: the running statistics.
    /// let y = ctx.download(&bn.forward(&inputs, Mode::Infer)?)?;
    /// assert!(y.iter().all(|v| v.is_finite()));
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, inputs: &BatchNormInputs, mode: Mode) -> Result<Tensor> {
        let ctx = self.engine.context();
        let y = ctx.empty(inputs.x.shape(), self.cfg.dtype)?;
        ctx.record_and_submit(|enc| {
            self.encode(enc, inputs, &BatchNormOutputs { y: &y, saved: None }, mode)
        })?;
        Ok(y)
    }
}

/// AdaB²N's running-statistics momentum at training step `t` (t >= 1, after this step's
/// increment), docs/methods.md A10 (official code): `eta_1 = m^kappa`,
/// `eta_t = eta_{t-1} / (eta_{t-1} + (1 - m)^kappa)`. kappa = 1 gives the constant m, kappa = 0
/// the cumulative average 1/t. Use it with [`BatchNorm::encode_train_with`] and
/// `unbiased: false` (AdaB²N keeps the biased variance).
///
/// Closed form, O(1) in `t`: with `a = m^kappa` and `d = (1 - m)^kappa`, `u_t = 1/eta_t`
/// satisfies `u_t = 1 + d u_{t-1}`, so `u_t = (1 - d^(t-1)) / (1 - d) + d^(t-1) / a`
/// (`(t - 1) + 1/a` when `d = 1`), evaluated with `expm1` so that `d` near 1 keeps its digits.
pub fn adab2n_momentum(kappa: f64, momentum: f64, t: u64) -> Result<f32> {
    if !(0.0..=1.0).contains(&kappa) || !(0.0..=1.0).contains(&momentum) || t == 0 {
        return Err(Error::InvalidParameter {
            name: "adab2n",
            value: format!("kappa {kappa}, momentum {momentum}, step {t}"),
            why: "kappa and momentum must be in [0, 1] and the step >= 1",
        });
    }
    let a = momentum.powf(kappa);
    if a == 0.0 {
        // eta_1 = 0 and every later step stays 0.
        return Ok(0.0);
    }
    // ln d = kappa ln(1 - m); the steps after the first are t - 1.
    let ln_d = kappa * (-momentum).ln_1p();
    let steps = (t - 1) as f64;
    let u = if ln_d == 0.0 {
        steps + 1.0 / a
    } else if ln_d == f64::NEG_INFINITY {
        // m = 1 (d = 0): u_t = 1 for t >= 2.
        if t == 1 {
            1.0 / a
        } else {
            1.0
        }
    } else {
        let geometric = (ln_d * steps).exp_m1() / ln_d.exp_m1();
        geometric + (ln_d * steps).exp() / a
    };
    Ok((1.0 / u) as f32)
}

#[cfg(test)]
mod tests {
    use super::adab2n_momentum;

    #[test]
    fn adab2n_schedule_limits_and_recursion() {
        for t in 1..6 {
            assert!((adab2n_momentum(1.0, 0.1, t).unwrap() - 0.1).abs() < 1e-7);
            assert!((adab2n_momentum(0.0, 0.1, t).unwrap() as f64 - 1.0 / t as f64).abs() < 1e-7);
        }
        // kappa = 0.5, m = 0.1: eta1 = sqrt(0.1), eta2 = eta1 / (eta1 + sqrt(0.9)).
        let e1 = 0.1f64.sqrt();
        let e2 = e1 / (e1 + 0.9f64.sqrt());
        assert!((adab2n_momentum(0.5, 0.1, 2).unwrap() as f64 - e2).abs() < 1e-7);
        assert!(adab2n_momentum(0.5, 0.1, 0).is_err());
        assert!(adab2n_momentum(1.5, 0.1, 1).is_err());
    }

    /// The closed form against the official recursion, step by step.
    #[test]
    fn adab2n_closed_form_matches_the_recursion() {
        for &(kappa, m) in &[
            (0.5, 0.1),
            (0.25, 0.3),
            (0.9, 0.01),
            (0.1, 0.9),
            (0.5, 1.0),
            (0.7, 1e-6),
        ] {
            let (a, d) = (f64::powf(m, kappa), f64::powf(1.0 - m, kappa));
            let mut eta = a;
            for t in 1..=500u64 {
                if t > 1 {
                    eta /= eta + d;
                }
                let got = adab2n_momentum(kappa, m, t).unwrap() as f64;
                assert!(
                    (got - eta).abs() <= 1e-6 * eta.max(1e-30),
                    "kappa {kappa} m {m} step {t}: {got} vs {eta}"
                );
            }
        }
    }

    /// A huge step returns at once (the recursion looped t times) and stays in [0, 1].
    #[test]
    fn adab2n_huge_step_is_constant_time() {
        let eta = adab2n_momentum(0.5, 0.1, u64::MAX).unwrap();
        assert!(eta.is_finite() && (0.0..=1.0).contains(&eta), "{eta}");
        assert_eq!(
            adab2n_momentum(0.0, 0.1, u64::MAX).unwrap(),
            1.0 / u64::MAX as f32
        );
    }
}

/// Which statistics normalize an adaptation step ([`crate::AdaptiveBn`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdaptNormalize {
    /// The running statistics after this step's update (the default: what "adapted statistics"
    /// means; docs/methods.md A13 marks it unverified).
    #[default]
    Adapted,
    /// This batch's own statistics (biased variance), as BatchNorm training does.
    Batch,
}

/// `eta_k = eta0 * delta^k`, the exponential momentum decay of docs/methods.md A13 (k from 0).
pub fn exponential_momentum_decay(eta0: f32, delta: f32, k: u64) -> f32 {
    (eta0 as f64 * (delta as f64).powf(k as f64)) as f32
}

fn require_running(inputs: &BatchNormInputs) -> Result<()> {
    if inputs.running_mean.is_none() || inputs.running_var.is_none() {
        return Err(Error::InvalidParameter {
            name: "running statistics",
            value: "None".into(),
            why: "this method normalizes with the running statistics: pass running_mean and running_var",
        });
    }
    Ok(())
}
