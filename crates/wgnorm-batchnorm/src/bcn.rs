//! Batch-Channel Normalization (docs/methods.md A6): its forward on the BatchNorm and channel
//! engines, and its backward as the chain of their backward passes.

use wgnorm_core::chgrad::{ChannelGrad, ChannelGradArgs, GradStats};
use wgnorm_core::chnorm::{ChannelNorm, ChannelNormArgs, ChannelView};
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::{Context, DType, Mode, Result, Tensor};

use crate::{BatchNorm, BatchNormConfig, BatchNormInputs, BatchNormOutputs};

/// Batch-Channel Normalization (Qiao et al.; docs/methods.md A6, official `layers.py`, plain-BN variant):
/// `BCN(x) = GroupAffine(ChannelNorm(BN(x)))` — BatchNorm with its per-channel affine (training:
/// batch statistics and the running update; inference: running statistics), then per
/// (sample, group) normalization over the group's channels and the spatial dims (GroupNorm
/// without affine, same `eps`), then an affine with one weight and bias **per group** (`[G]`).
/// The BN output is kept in an op-owned scratch tensor of the I/O dtype.
/// [`BatchChannelNorm::with_estbn`] makes the BN part EstBN ([`crate::EstBn`]).
pub struct BatchChannelNorm {
    bn: BatchNorm,
    channel: ChannelNorm,
    groups: usize,
    scratch: ScratchCache,
    /// The backward's channel part: per-group weights as the engine's per-channel ones.
    group_grad: ChannelGrad,
    /// The backward's `du` and the BN part's saved statistics.
    grad_scratch: ScratchCache,
    estbn: Option<f32>,
}

/// Inputs of [`BatchChannelNorm`]: the BN part's per-channel `bn_weight`/`bn_bias` and running
/// statistics, and the per-group `weight`/`bias` (f32 `[G]`).
#[derive(Clone, Copy, Debug)]
pub struct BatchChannelNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// The BatchNorm part's per-channel scale `[C]`; `None`: 1.
    pub bn_weight: Option<&'a Tensor>,
    /// The BatchNorm part's per-channel shift `[C]`; `None`: 0.
    pub bn_bias: Option<&'a Tensor>,
    /// Running mean (f32, one per channel): read at inference, updated in training.
    pub running_mean: Option<&'a Tensor>,
    /// Running variance (f32, one per channel): read at inference, updated in training.
    pub running_var: Option<&'a Tensor>,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Shift (beta) added after the scale; `None`: 0.
    pub bias: Option<&'a Tensor>,
}

/// What [`BatchChannelNorm::new`] takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchChannelNormConfig {
    /// The BatchNorm part (its eps is also the channel part's).
    pub batch_norm: BatchNormConfig,
    /// Channel groups of the channel part and of the per-group affine; must divide C. 32 in
    /// the paper.
    pub groups: usize,
}

impl Default for BatchChannelNormConfig {
    fn default() -> Self {
        BatchChannelNormConfig {
            batch_norm: BatchNormConfig::default(),
            groups: 32,
        }
    }
}

impl BatchChannelNorm {
    /// A Batch-Channel Norm bound to `ctx`.
    pub fn new(ctx: &Context, config: BatchChannelNormConfig) -> Result<BatchChannelNorm> {
        let BatchChannelNormConfig {
            batch_norm: cfg,
            groups,
        } = config;
        let channel = ChannelNorm::new(ctx, cfg.eps, cfg.dtype, Default::default())?
            .with_affine_per_slot(true);
        Ok(BatchChannelNorm {
            bn: BatchNorm::new(ctx, cfg)?,
            channel,
            groups,
            scratch: Default::default(),
            group_grad: ChannelGrad::new(ctx, cfg.eps, cfg.dtype, Default::default())?,
            grad_scratch: Default::default(),
            estbn: None,
        })
    }

    /// The BN part becomes EstBN with this moving speed (`estbn_moving_speed`).
    pub fn with_estbn(mut self, moving_speed: f32) -> BatchChannelNorm {
        self.estbn = Some(moving_speed);
        self
    }

    /// Records the BatchNorm part (or EstBN), the per-group normalization and the per-group
    /// affine; training updates the running statistics.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchChannelNormInputs,
        y: &Tensor,
        mode: Mode,
    ) -> Result<()> {
        let shape = inputs.x.shape();
        let view = ChannelView::group_norm(shape, self.bn.cfg.layout, self.groups)?;
        // The BatchNorm pass reads x and the group pass writes y: check their overlap here.
        let mut named = vec![("x", inputs.x)];
        for (what, t) in [
            ("bn_weight", inputs.bn_weight),
            ("bn_bias", inputs.bn_bias),
            ("running_mean", inputs.running_mean),
            ("running_var", inputs.running_var),
        ] {
            named.extend(t.map(|t| (what, t)));
        }
        wgnorm_core::binding::check_output_distinct(("y", y), &named)?;
        let tmp = self
            .scratch
            .get(self.bn.engine.context(), shape, shape, self.bn.cfg.dtype)?;
        let bn_inputs = BatchNormInputs {
            x: inputs.x,
            weight: inputs.bn_weight,
            bias: inputs.bn_bias,
            running_mean: inputs.running_mean,
            running_var: inputs.running_var,
        };
        let channel_args = ChannelNormArgs {
            weight: inputs.weight,
            bias: inputs.bias,
            ..ChannelNormArgs::new(&tmp, y, view)
        };
        // Check the second pass before recording the first.
        self.channel.check_args(&channel_args)?;
        let bn_out = BatchNormOutputs {
            y: &tmp,
            saved: None,
        };
        match self.estbn {
            Some(ms) => self
                .bn
                .encode_estbn(encoder, &bn_inputs, &bn_out, ms, mode)?,
            None => self.bn.encode(encoder, &bn_inputs, &bn_out, mode)?,
        }
        self.channel.encode(encoder, &channel_args)
    }
}

/// Inputs of [`BatchChannelNorm::encode_backward`]: the forward's inputs, with the running
/// statistics the forward normalized with (inference, and EstBN training: after its update),
/// and the upstream gradient `dy` (x's shape and dtype).
#[derive(Clone, Copy, Debug)]
pub struct BatchChannelNormGradInputs<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// The BatchNorm part's per-channel scale `[C]`; `None`: 1.
    pub bn_weight: Option<&'a Tensor>,
    /// The BatchNorm part's per-channel shift `[C]`; `None`: 0.
    pub bn_bias: Option<&'a Tensor>,
    /// Running mean (f32 `[C]`) the forward normalized with; unused by plain-BN training.
    pub running_mean: Option<&'a Tensor>,
    /// Running variance (f32 `[C]`) the forward normalized with; unused by plain-BN training.
    pub running_var: Option<&'a Tensor>,
    /// The per-group scale (f32 `[G]`); `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// The per-group shift (f32 `[G]`); `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
}

/// Outputs of [`BatchChannelNorm::encode_backward`]: `dx` like x; the BN part's gradients
/// (f32 `[C]`) and the per-group affine's (f32 `[G]`) when given.
#[derive(Clone, Copy, Debug)]
pub struct BatchChannelNormGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of `bn_weight`.
    pub dbn_weight: Option<&'a Tensor>,
    /// Gradient of `bn_bias`.
    pub dbn_bias: Option<&'a Tensor>,
    /// Gradient of the per-group weight.
    pub dweight: Option<&'a Tensor>,
    /// Gradient of the per-group bias.
    pub dbias: Option<&'a Tensor>,
}

/// Tensors allocated by [`BatchChannelNorm::backward`].
#[derive(Clone, Debug)]
pub struct BatchChannelGrads {
    /// Gradient of x.
    pub dx: Tensor,
    /// Gradient of `bn_weight` (f32 `[C]`).
    pub dbn_weight: Tensor,
    /// Gradient of `bn_bias` (f32 `[C]`).
    pub dbn_bias: Tensor,
    /// Gradient of the per-group weight (f32 `[G]`).
    pub dweight: Tensor,
    /// Gradient of the per-group bias (f32 `[G]`).
    pub dbias: Tensor,
}

impl BatchChannelNorm {
    /// The channel part's view with one "channel" per group, so the per-group affine is the
    /// backward engine's per-channel one: `(n, g)` slots of `cg * hw` values in either layout.
    fn group_view(&self, shape: &[usize]) -> Result<ChannelView> {
        let v = ChannelView::group_norm(shape, self.bn.cfg.layout, self.groups)?;
        Ok(ChannelView {
            cg: 1,
            sdiv: v.s.max(1),
            ..v
        })
    }

    /// Whether the BN part's backward goes through the batch statistics: plain-BN training.
    /// EstBN estimates its statistics without gradient (as the paper's code does), so its
    /// training backward, like inference, takes them as constants.
    fn through_batch(&self, mode: Mode) -> bool {
        mode.is_train() && self.estbn.is_none()
    }

    /// Records the backward into the caller's encoder as the chain of the forward: the BN part
    /// again (into a scratch `u`; plain-BN training keeps its statistics, the running ones are
    /// not updated), the channel part's backward (through each (sample, group)'s statistics,
    /// into a scratch `du`, with the per-group affine's gradients), then BatchNorm's backward
    /// of `du`. The intermediates are op-owned scratch of the I/O dtype (as the forward's).
    /// Every pass is checked before the first is recorded; deterministic (fixed-order sums).
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchChannelNormGradInputs,
        outputs: &BatchChannelNormGradOutputs,
        mode: Mode,
    ) -> Result<()> {
        let shape = inputs.x.shape();
        let ctx = self.bn.engine.context();
        let dtype = self.bn.cfg.dtype;
        let view = self.group_view(shape)?;
        let (u, du) = (
            self.scratch.get(ctx, shape, shape, dtype)?,
            self.grad_scratch.get(ctx, shape, shape, dtype)?,
        );
        let batch = self.through_batch(mode);
        let c = ChannelView::batch_norm(shape, self.bn.cfg.layout)?.channels();
        // (No channels: nothing to save.)
        let saved = match batch && c > 0 {
            true => Some(self.grad_scratch.get(ctx, shape, &[c, 2], DType::F32)?),
            false => None,
        };
        let bn_mode = Mode::training(batch);
        let bn_inputs = BatchNormInputs {
            x: inputs.x,
            weight: inputs.bn_weight,
            bias: inputs.bn_bias,
            running_mean: inputs.running_mean.filter(|_| !batch),
            running_var: inputs.running_var.filter(|_| !batch),
        };
        let bn_out = BatchNormOutputs {
            y: &u,
            saved: saved.as_ref(),
        };
        let group = ChannelGradArgs {
            x: &u,
            dy: inputs.dy,
            view,
            stats: GradStats::Batch,
            weight: inputs.weight,
            bias: None,
            saved: None,
            running_mean: None,
            running_var: None,
            dx: &du,
            dweight: outputs.dweight,
            dbias: outputs.dbias,
            term: None,
        };
        let bn_grad_in = crate::BatchNormGradInputs {
            x: inputs.x,
            weight: inputs.bn_weight,
            dy: &du,
            saved: saved.as_ref(),
            running_mean: bn_inputs.running_mean,
            running_var: bn_inputs.running_var,
        };
        let bn_grad_out = crate::BatchNormGradOutputs {
            dx: outputs.dx,
            dweight: outputs.dbn_weight,
            dbias: outputs.dbn_bias,
        };
        self.check_backward(inputs, outputs)?;
        self.bn.check_forward(&bn_inputs, None, &bn_out, bn_mode)?;
        self.group_grad.check_args(&group)?;
        self.bn.check_backward(&bn_grad_in, &bn_grad_out, bn_mode)?;
        self.bn.encode(encoder, &bn_inputs, &bn_out, bn_mode)?;
        self.group_grad.encode(encoder, &group)?;
        self.bn
            .encode_backward(encoder, &bn_grad_in, &bn_grad_out, bn_mode)
    }

    /// What the engines' checks do not see: dy and dx against x (the engines see dy against
    /// the scratch `u`), running statistics where they are constants, and no output aliasing
    /// an input.
    fn check_backward(
        &self,
        inputs: &BatchChannelNormGradInputs,
        outputs: &BatchChannelNormGradOutputs,
    ) -> Result<()> {
        for (what, t) in [("dy", inputs.dy), ("dx", outputs.dx)] {
            if t.shape() != inputs.x.shape() || t.dtype() != inputs.x.dtype() {
                return Err(wgnorm_core::Error::ShapeMismatch {
                    what: what.into(),
                    expected: inputs.x.shape().to_vec(),
                    got: t.shape().to_vec(),
                });
            }
        }
        let mut named = vec![("x", inputs.x), ("dy", inputs.dy)];
        for (what, t) in [
            ("bn_weight", inputs.bn_weight),
            ("bn_bias", inputs.bn_bias),
            ("running_mean", inputs.running_mean),
            ("running_var", inputs.running_var),
            ("weight", inputs.weight),
            ("bias", inputs.bias),
        ] {
            named.extend(t.map(|t| (what, t)));
        }
        for (what, t) in [
            ("dx", Some(outputs.dx)),
            ("dbn_weight", outputs.dbn_weight),
            ("dbn_bias", outputs.dbn_bias),
            ("dweight", outputs.dweight),
            ("dbias", outputs.dbias),
        ] {
            if let Some(t) = t {
                wgnorm_core::binding::check_output_distinct((what, t), &named)?;
            }
        }
        Ok(())
    }

    /// Allocates the gradients, encodes the backward and submits (does not wait).
    pub fn backward(
        &self,
        inputs: &BatchChannelNormGradInputs,
        mode: Mode,
    ) -> Result<BatchChannelGrads> {
        let ctx = self.bn.engine.context();
        let c = ChannelView::batch_norm(inputs.x.shape(), self.bn.cfg.layout)?.channels();
        let f32s = |n: usize| ctx.empty(&[n], DType::F32);
        let g = BatchChannelGrads {
            dx: ctx.empty(inputs.x.shape(), self.bn.cfg.dtype)?,
            dbn_weight: f32s(c)?,
            dbn_bias: f32s(c)?,
            dweight: f32s(self.groups)?,
            dbias: f32s(self.groups)?,
        };
        let outputs = BatchChannelNormGradOutputs {
            dx: &g.dx,
            dbn_weight: Some(&g.dbn_weight),
            dbn_bias: Some(&g.dbn_bias),
            dweight: Some(&g.dweight),
            dbias: Some(&g.dbias),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, inputs, &outputs, mode))?;
        Ok(g)
    }
}
