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

pub use wgnorm_core::chnorm::Layout;
use wgnorm_core::chnorm::{ChannelNorm, ChannelNormArgs, ChannelView, RunningUpdate, Statistics};
use wgnorm_core::{Context, DType, Result, Tensor};

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
    pub layout: Layout,
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
    pub x: &'a Tensor,
    pub weight: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    pub running_mean: Option<&'a Tensor>,
    pub running_var: Option<&'a Tensor>,
}

/// Outputs: `y` like x; optional `saved` f32 `[C, 2]` of (batch mean, invstd) per channel, as a
/// backward pass needs them (the running statistics in inference).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormOutputs<'a> {
    pub y: &'a Tensor,
    pub saved: Option<&'a Tensor>,
}

/// A BatchNorm bound to a device.
pub struct BatchNorm {
    engine: ChannelNorm,
    cfg: BatchNormConfig,
}

impl BatchNorm {
    pub fn new(ctx: &Context, cfg: BatchNormConfig) -> Result<BatchNorm> {
        let engine = ChannelNorm::new(ctx, cfg.eps, cfg.dtype, Default::default())?;
        Ok(BatchNorm { engine, cfg })
    }

    pub fn engine(&self) -> &ChannelNorm {
        &self.engine
    }

    /// Records the op. `training` picks batch statistics (and the running update) or running
    /// statistics. No submit, no readback; typed errors before anything is recorded.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &BatchNormInputs,
        outputs: &BatchNormOutputs,
        training: bool,
    ) -> Result<()> {
        let view = ChannelView::batch_norm(inputs.x.shape(), self.cfg.layout)?;
        let tracks = inputs.running_mean.is_some() || inputs.running_var.is_some();
        let statistics = if training {
            Statistics::Batch(tracks.then_some(RunningUpdate {
                momentum: self.cfg.momentum,
                unbiased: self.cfg.running_var_unbiased,
            }))
        } else {
            Statistics::Running
        };
        self.engine.encode(
            encoder,
            &ChannelNormArgs {
                x: inputs.x,
                y: outputs.y,
                view,
                weight: inputs.weight,
                bias: inputs.bias,
                running_mean: inputs.running_mean,
                running_var: inputs.running_var,
                stats: outputs.saved,
                statistics,
            },
        )
    }

    /// Allocates `y`, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &BatchNormInputs, training: bool) -> Result<Tensor> {
        let ctx = self.engine.context();
        let y = ctx.empty(inputs.x.shape(), self.cfg.dtype)?;
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        self.encode(
            &mut enc,
            inputs,
            &BatchNormOutputs { y: &y, saved: None },
            training,
        )?;
        ctx.queue().submit([enc.finish()]);
        Ok(y)
    }
}
