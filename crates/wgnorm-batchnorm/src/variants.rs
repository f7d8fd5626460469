//! Methods that are BatchNorm with different statistics or an extra term, each its own type over
//! a [`BatchNorm`]: Ghost BN (per-chunk statistics), EstBN (variance centred on the old running
//! mean), source-free adaptation with a momentum schedule, test-time calibration, and RepBN
//! (`+ alpha * x`). The math and conventions are in `docs/methods.md` (A6, A9, A11, A13, A16).

use wgnorm_core::{Context, Mode, Result, Tensor};

use crate::{AdaptNormalize, BatchNorm, BatchNormConfig, BatchNormInputs, BatchNormOutputs};

/// Allocates `y` like `inputs.x`, records `f` and submits (does not wait).
fn forward_with(
    bn: &BatchNorm,
    inputs: &BatchNormInputs,
    f: impl FnOnce(&mut wgpu::CommandEncoder, &BatchNormOutputs) -> Result<()>,
) -> Result<Tensor> {
    let ctx = bn.engine().context();
    let y = ctx.empty(inputs.x.shape(), inputs.x.dtype())?;
    ctx.record_and_submit(|enc| f(enc, &BatchNormOutputs { y: &y, saved: None }))?;
    Ok(y)
}

/// What [`GhostBatchNorm::new`] takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GhostBatchNormConfig {
    /// The BatchNorm (eps, momentum, layout, dtype). The momentum must be numeric when running
    /// statistics are updated: they get one update per chunk.
    pub batch_norm: BatchNormConfig,
    /// Samples per chunk (32 is common); must divide N.
    pub ghost_size: usize,
}

impl Default for GhostBatchNormConfig {
    fn default() -> Self {
        GhostBatchNormConfig {
            batch_norm: BatchNormConfig::default(),
            ghost_size: 32,
        }
    }
}

/// Ghost Batch Normalization (Hoffer et al. 2017; docs/methods.md A9): in training, each chunk
/// of `ghost_size` consecutive samples is normalized with its own per-channel statistics and the
/// running statistics get one PyTorch update per chunk, in order; N % ghost_size != 0 is a typed
/// error. Inference is plain BatchNorm.
pub struct GhostBatchNorm {
    bn: BatchNorm,
    ghost_size: usize,
}

impl GhostBatchNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: GhostBatchNormConfig) -> Result<GhostBatchNorm> {
        Ok(GhostBatchNorm {
            bn: BatchNorm::new(ctx, cfg.batch_norm)?,
            ghost_size: cfg.ghost_size,
        })
    }

    /// Records one call (reduce per chunk, running updates in chunk order, apply).
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        mode: Mode,
    ) -> Result<()> {
        self.bn
            .encode_ghost(encoder, inputs, outputs, self.ghost_size, mode)
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &BatchNormInputs, mode: Mode) -> Result<Tensor> {
        forward_with(&self.bn, inputs, |enc, o| self.encode(enc, inputs, o, mode))
    }

    /// Records the backward of a `mode` call: training through each chunk's own statistics
    /// (`saved`, when given, holds `[N / ghost_size * C, 2]` pairs; recomputed otherwise),
    /// dweight and dbias summed over the chunks in order; inference is BatchNorm's.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &crate::BatchNormGradInputs,
        outputs: &crate::BatchNormGradOutputs,
        mode: Mode,
    ) -> Result<()> {
        if !mode.is_train() {
            return self.bn.encode_backward(encoder, inputs, outputs, mode);
        }
        let layout = self.bn.cfg.layout;
        let view =
            wgnorm_core::chnorm::ChannelView::per_chunk(inputs.x.shape(), layout, self.ghost_size)?;
        self.bn.encode_backward_in(encoder, inputs, outputs, view)
    }
}

/// What [`EstBn::new`] takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EstBnConfig {
    /// The BatchNorm (eps, layout, dtype; its momentum is not used).
    pub batch_norm: BatchNormConfig,
    /// The running statistics' moving speed (`estbn_moving_speed`; unpublished, 0.01 here).
    pub moving_speed: f32,
}

impl Default for EstBnConfig {
    fn default() -> Self {
        EstBnConfig {
            batch_norm: BatchNormConfig::default(),
            moving_speed: 0.01,
        }
    }
}

/// EstBN (Batch-Channel Normalization's estimated BN, docs/methods.md A6). Training: the
/// variance fed to the running one is `mean((x - rm_old)^2)`, centred on the **old** running
/// mean; both running statistics move by `moving_speed`; x is normalized with the **updated**
/// running statistics. Inference: the running statistics. Needs the running statistics.
pub struct EstBn {
    bn: BatchNorm,
    moving_speed: f32,
}

impl EstBn {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: EstBnConfig) -> Result<EstBn> {
        wgnorm_core::check_unit_interval("moving_speed", cfg.moving_speed)?;
        Ok(EstBn {
            bn: BatchNorm::new(ctx, cfg.batch_norm)?,
            moving_speed: cfg.moving_speed,
        })
    }

    /// Records one call.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        mode: Mode,
    ) -> Result<()> {
        self.bn
            .encode_estbn(encoder, inputs, outputs, self.moving_speed, mode)
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &BatchNormInputs, mode: Mode) -> Result<Tensor> {
        forward_with(&self.bn, inputs, |enc, o| self.encode(enc, inputs, o, mode))
    }
}

/// What [`AdaptiveBn::new`] takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveBnConfig {
    /// The BatchNorm (eps, `running_var_unbiased`, layout, dtype; its momentum is not used).
    pub batch_norm: BatchNormConfig,
    /// Whether a batch is normalized with the adapted (updated running) statistics or its own.
    pub normalize: AdaptNormalize,
}

impl Default for AdaptiveBnConfig {
    fn default() -> Self {
        AdaptiveBnConfig {
            batch_norm: BatchNormConfig::default(),
            normalize: AdaptNormalize::Adapted,
        }
    }
}

/// Source-free adaptation with a momentum schedule (docs/methods.md A13; no official code): the
/// running statistics start at the source ones and move as `r <- (1 - eta) r + eta s` with each
/// step's `eta` (e.g. [`crate::exponential_momentum_decay`], or any schedule of yours).
pub struct AdaptiveBn {
    bn: BatchNorm,
    normalize: AdaptNormalize,
}

impl AdaptiveBn {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: AdaptiveBnConfig) -> Result<AdaptiveBn> {
        Ok(AdaptiveBn {
            bn: BatchNorm::new(ctx, cfg.batch_norm)?,
            normalize: cfg.normalize,
        })
    }

    /// Records one adaptation step with this step's `eta` (in [0, 1]).
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        eta: f32,
    ) -> Result<()> {
        self.bn
            .encode_adaptive(encoder, inputs, outputs, eta, self.normalize)
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &BatchNormInputs, eta: f32) -> Result<Tensor> {
        forward_with(&self.bn, inputs, |enc, o| self.encode(enc, inputs, o, eta))
    }
}

/// What [`TestTimeBn::new`] takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestTimeBnConfig {
    /// The BatchNorm (eps, layout, dtype).
    pub batch_norm: BatchNormConfig,
    /// Weight of the source (running) statistics; TBN is 0. Codebases call it alpha with either
    /// meaning.
    pub w_src: f32,
}

impl Default for TestTimeBnConfig {
    fn default() -> Self {
        TestTimeBnConfig {
            batch_norm: BatchNormConfig::default(),
            w_src: 0.0,
        }
    }
}

/// Test-time BN calibration (alpha-BN / TBN, docs/methods.md A11): normalizes with
/// `mu = w_src * running_mean + (1 - w_src) * mu_batch` and the same mix of the running and the
/// unbiased batch variance; the running (source) statistics are read, not updated.
pub struct TestTimeBn {
    bn: BatchNorm,
    w_src: f32,
}

impl TestTimeBn {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: TestTimeBnConfig) -> Result<TestTimeBn> {
        wgnorm_core::check_unit_interval("w_src", cfg.w_src)?;
        Ok(TestTimeBn {
            bn: BatchNorm::new(ctx, cfg.batch_norm)?,
            w_src: cfg.w_src,
        })
    }

    /// Records one call.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
    ) -> Result<()> {
        self.bn
            .encode_test_time(encoder, inputs, outputs, self.w_src)
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &BatchNormInputs) -> Result<Tensor> {
        forward_with(&self.bn, inputs, |enc, o| self.encode(enc, inputs, o))
    }
}

/// SLAB's RepBN (docs/methods.md A16): `y = BN(x) + alpha * x` with `alpha` a learnable f32 `[1]`
/// scalar on the GPU. Token tensors `[B, T, C]` use `Layout::Nhwc` (BN over B and T per
/// channel); training updates the running statistics as BatchNorm does. Inference folds into a
/// per-channel affine ([`crate::fold_rep_batch_norm`]).
pub struct RepBatchNorm {
    bn: BatchNorm,
}

impl RepBatchNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: BatchNormConfig) -> Result<RepBatchNorm> {
        Ok(RepBatchNorm {
            bn: BatchNorm::new(ctx, cfg)?,
        })
    }

    /// Records one call.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        alpha: &Tensor,
        outputs: &BatchNormOutputs,
        mode: Mode,
    ) -> Result<()> {
        self.bn.encode_rep(encoder, inputs, alpha, outputs, mode)
    }

    /// Every check of [`RepBatchNorm::encode`], recording nothing (for ops that record several
    /// passes and must fail before the first).
    pub fn check(
        &self,
        inputs: &BatchNormInputs,
        alpha: &Tensor,
        outputs: &BatchNormOutputs,
        mode: Mode,
    ) -> Result<()> {
        self.bn.check_forward(inputs, Some(alpha), outputs, mode)
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &BatchNormInputs, alpha: &Tensor, mode: Mode) -> Result<Tensor> {
        forward_with(&self.bn, inputs, |enc, o| {
            self.encode(enc, inputs, alpha, o, mode)
        })
    }

    /// Records RepBN's backward: BatchNorm's (training through the batch statistics, inference
    /// with the running ones) plus `alpha * dy` in dx, and `dalpha = sum(dy * x)` (f32 `[1]`)
    /// when given. `alpha` is the forward's (f32 `[1]`).
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &crate::BatchNormGradInputs,
        alpha: &Tensor,
        outputs: &crate::BatchNormGradOutputs,
        dalpha: Option<&Tensor>,
        mode: Mode,
    ) -> Result<()> {
        self.bn.encode_backward_with(
            encoder,
            inputs,
            outputs,
            mode,
            Some(rep_term(alpha, dalpha)),
        )
    }

    /// Allocates dx, dweight, dbias and dalpha, encodes the backward and submits (does not wait).
    pub fn backward(
        &self,
        inputs: &crate::BatchNormGradInputs,
        alpha: &Tensor,
        mode: Mode,
    ) -> Result<(crate::BatchNormGrads, Tensor)> {
        let ctx = self.bn.engine().context();
        let dalpha = ctx.empty(&[1], wgnorm_core::DType::F32)?;
        let grads = self
            .bn
            .backward_with(inputs, mode, Some(rep_term(alpha, Some(&dalpha))))?;
        Ok((grads, dalpha))
    }
}

/// RepBN's gradient term of a call: the forward's alpha in, dalpha out when wanted.
pub(crate) fn rep_term<'a>(
    alpha: &'a Tensor,
    dalpha: Option<&'a Tensor>,
) -> wgnorm_core::chgrad::TermArgs<'a> {
    wgnorm_core::chgrad::TermArgs {
        term: crate::SCALED_RESIDUAL_GRAD,
        input: Some(alpha),
        grad: dalpha,
        params: [0, 0],
    }
}
