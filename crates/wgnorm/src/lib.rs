//! wgnorm: normalization layers as WGSL compute kernels on wgpu — one code path on Vulkan,
//! Metal and DX12, and headless on software Vulkan.
//!
//! ```
//! use wgnorm::prelude::*;
//!
//! let ctx = Context::new()?; // or Context::from_device(device, queue) in an app
//! let x = ctx.upload_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
//! let ln = LayerNorm::new(&ctx, LayerNormConfig::default())?;
//! let out = ln.forward(&LayerNormInputs { x: &x, weight: None, bias: None })?;
//! let y = ctx.download(&out.y)?; // waits for the GPU
//! assert!((y[0] + 1.2247).abs() < 1e-3 && y[1].abs() < 1e-6);
//! # Ok::<(), wgnorm::Error>(())
//! ```
//!
//! # Which op for which model
//!
//! | model | op |
//! |---|---|
//! | BERT, GPT-2, ViT (post/pre-norm transformers) | [`LayerNorm`], fused residual add: [`LayerNorm::forward_add`] |
//! | LLaMA, Mistral, Qwen, Gemma decoders | [`RmsNorm`] (Gemma: `weight_offset = 1`), fused add: [`RmsNorm::forward_add`] |
//! | QK-norm (Qwen3, Gemma 3, OLMo 2) + rotary embedding | [`rmsnorm::QkNormRope`] |
//! | ResNet, ConvNets, training or inference | [`BatchNorm`] (inference can also fold into the conv: [`batchnorm`]) |
//! | Stable Diffusion / VAE ResNet blocks | [`GroupNorm`] with [`Activation::Silu`] fused, channels-last |
//! | style transfer, per-sample statistics | [`InstanceNorm`] |
//! | weight-standardized convs (BiT, NFNets) | [`WeightStandardization`] |
//! | ONNX graphs | [`MeanVarianceNorm`], [`LpNorm`] |
//! | research methods (PowerNorm, Poincare BN, EvoNorm, Region Norm, Ghost/test-time BN, ...) | the family crates re-exported here |
//!
//! # Layouts and dtypes
//!
//! Tensors are dense and row-major. Row norms normalize the last axis (or a chosen axis and every
//! axis after it) of `[rows, n]`. The batch-statistics family takes `(N, C, *)` as
//! [`Layout::Nchw`] (channels first) or [`Layout::Nhwc`] (channels last, no transpose pass).
//! Storage is f32 or f16 ([`DType`]); arithmetic and statistics are f32, saved statistics
//! (`mean`, `rstd`) are f32. f16 uses packed loads on any device and element-wise f16 where the
//! device has `SHADER_F16`.
//!
//! # What is promised
//!
//! - Bad input (shapes, dtypes, aliasing, short or misaligned buffers, missing usages) is a
//!   typed [`Error`] and nothing is recorded; wgpu validation errors, out-of-memory and a lost
//!   device become errors too, never panics.
//! - Empty tensors are a no-op; a NaN or infinity stays within its own row, group or channel.
//! - Statistics never use `E[x^2] - E[x]^2`: means are shifted and merged with Chan's formula, so
//!   large offsets keep their precision. Reductions use no atomics: results are bitwise
//!   reproducible run to run on one device.
//! - Tensors larger than one storage binding are bound in windows where the op supports it,
//!   otherwise refused with [`Error::TooLargeForBinding`].
//!
//! # Embedding
//!
//! An app that owns a `wgpu::Device` wraps it once ([`Context::from_device`]), wraps its buffers
//! ([`Tensor::from_buffer`]) and calls each op's `encode*` method with its own command encoder:
//! nothing blocks, and after the first call of a shape nothing is allocated (pipelines and bind
//! groups are cached). The `forward`/`backward` methods are conveniences that allocate outputs
//! and submit. Measured kernel choices for an adapter load with [`Context::set_tuning`]
//! (see [`Tuning`]).
//!
//! This facade re-exports the runtime ([`Context`], [`Tensor`], [`DType`], [`Error`]) and every
//! layer family, and holds the op registry that the conformance runner, the tests and the xtask
//! share ([`conformance`]).

#![deny(missing_docs)]

pub mod checkpoint;
pub mod conformance;
pub mod registry;

pub use wgnorm_batchnorm::{
    self as batchnorm, AdaB2nConfig, AdaB2nInputs, AdaB2nTaskWeighted, AdaptiveBn,
    AdaptiveBnConfig, BatchChannelGrads, BatchChannelNorm, BatchChannelNormConfig,
    BatchChannelNormGradInputs, BatchChannelNormGradOutputs, BatchChannelNormInputs, BatchNorm,
    BatchNormConfig, BatchNormGradInputs, BatchNormGradOutputs, BatchNormGrads, BatchNormInputs,
    BatchNormOutputs, EstBn, EstBnConfig, EvoNormB0, EvoNormB0Config, EvoNormB0GradOutputs,
    EvoNormB0Grads, EvoNormB0Inputs, EvoRunningVar, GhostBatchNorm, GhostBatchNormConfig,
    IbnConfig, IbnGradInputs, IbnGradOutputs, IbnGrads, IbnInputs, IbnNorm, ProgressiveRepNorm,
    ProgressiveRepNormConfig, ProgressiveRepNormGradOutputs, ProgressiveRepNormInputs, RegionNormB,
    RegionNormBConfig, RegionNormGradOutputs, RegionNormInputs, RegionNormL, RegionNormLConfig,
    RegionNormLInputs, RepBatchNorm, TestTimeBn, TestTimeBnConfig, UnmixTns, UnmixTnsConfig,
    UnmixTnsInputs,
};
pub use wgnorm_core::chnorm::Layout;
pub use wgnorm_core::context::OPTIONAL_FEATURES;
pub use wgnorm_core::elementwise::{Elementwise, ElementwiseConfig};
pub use wgnorm_core::tuning::{LaneEntry, RowEntry, Tuning};
pub use wgnorm_core::Activation;
pub use wgnorm_core::{
    wgpu, Context, DType, DeviceOptions, Error, LimitsProfile, Mode, Result, ShaderChecks, Tensor,
};

/// The engines and plumbing under the ops, for tools and for apps that build their own kernels
/// on wgnorm's: kernels and their specialisations (`shader`), typed uniform blocks (`uniform`),
/// bind-group caching and binding checks (`binding`), the row-statistics (`rownorm`),
/// channel-statistics (`chnorm`) and instance-statistics (`instmix`) engines, the benchmarks'
/// reference kernels (`baseline`). Not needed to run the ops.
pub mod engine {
    pub use wgnorm_core as core;
    pub use wgnorm_core::{
        baseline, binding, chgrad, chnorm, elementwise, instmix, rowgrad, rownorm, scratch, shader,
        uniform, Slot,
    };
}
pub use wgnorm_groupnorm::{
    self as groupnorm, EvoNormS0, EvoNormS0Config, EvoNormS0GradOutputs, EvoNormS0Grads, GroupNorm,
    GroupNormConfig, InstanceNorm, InstanceNormConfig, LpNorm, LpNormConfig, MeanVarianceNorm,
    MeanVarianceNormConfig, NormGradInputs, NormGradOutputs, NormGrads, NormInputs, NormOutputs,
    WeightStandardization, WeightStandardizationConfig, WsVariant,
};
pub use wgnorm_layernorm::{
    self as layernorm, AddLayerNormGradInputs, AddLayerNormInputs, AddLayerNormOutputs, LayerNorm,
    LayerNormConfig, LayerNormGradInputs, LayerNormGradOutputs, LayerNormGrads, LayerNormInputs,
    LayerNormOutputs,
};
pub use wgnorm_poincare::{
    self as poincare, BallConfig, BallOps, PoincareBatchNorm, PoincareBatchNormConfig,
    PoincareBatchNormGradOutputs, PoincareBatchNormGrads, PoincareBatchNormInputs,
    PoincareMidpoint, PoincareStatistics,
};
pub use wgnorm_powernorm::{
    self as powernorm, PowerNorm, PowerNormConfig, PowerNormGradInputs, PowerNormGradOutputs,
    PowerNormInputs, SinkhornConfig, SinkhornNormalize, UnifiedNorm, UnifiedNormConfig,
    UnifiedNormGradInputs, UnifiedNormGradOutputs, UnifiedNormInputs,
};
pub use wgnorm_rmsnorm::{
    self as rmsnorm, AddRmsNormInputs, AddRmsNormOutputs, QkNormRope, QkNormRopeConfig,
    QkNormRopeGradInputs, QkNormRopeGradOutputs, QkNormRopeInputs, RmsNorm, RmsNormConfig,
    RmsNormGradInputs, RmsNormGradOutputs, RmsNormInputs, RmsNormOutputs, RopeAngles, RopeLayout,
};
pub use wgnorm_selfnorm::{self as selfnorm, AlphaDropout, AlphaDropoutConfig};

/// Everything an app needs to run a layer.
pub mod prelude {
    pub use crate::{
        Activation, BatchNorm, BatchNormConfig, BatchNormInputs, BatchNormOutputs, Context, DType,
        GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig, LayerNorm, LayerNormConfig,
        LayerNormInputs, LayerNormOutputs, Layout, LpNorm, MeanVarianceNorm, NormInputs,
        NormOutputs, RmsNorm, RmsNormConfig, RmsNormInputs, RmsNormOutputs, ShaderChecks, Tensor,
    };
}

/// Every pipeline specialisation the runtime can create, for `cargo xtask validate`: each
/// engine's and family's own enumeration of its planning code (the row-norm kernel choice
/// replayed for typical adapter classes over every row length that changes it), plus the
/// benchmarks' copy kernels and naive baselines. Deduplicated by
/// [`engine::shader::Specialization::key`].
pub fn specializations() -> Vec<engine::shader::Specialization> {
    let all = [
        engine::rownorm::specializations(&engine::rownorm::AdapterClass::TYPICAL),
        wgnorm_core::baseline::specializations(),
        engine::chnorm::specializations_with(&[
            engine::chnorm::Epilogue::AFFINE,
            wgnorm_batchnorm::SCALED_RESIDUAL,
            wgnorm_batchnorm::MAX_DENOMINATOR,
            wgnorm_groupnorm::SIGMOID_GATE,
        ]),
        wgnorm_batchnorm::mixing_specializations(),
        wgnorm_powernorm::unified_specializations(),
        engine::elementwise::specializations(),
        engine::rowgrad::specializations(),
        engine::chgrad::specializations_with(&[
            engine::chgrad::GradTerm::NONE,
            wgnorm_batchnorm::SCALED_RESIDUAL_GRAD,
            wgnorm_groupnorm::SIGMOID_GATE_GRAD,
            wgnorm_batchnorm::IBN_GRAD,
        ]),
        vec![wgnorm_batchnorm::ibn_grad_stats_spec()],
        wgnorm_powernorm::grad_specializations(),
        wgnorm_rmsnorm::qk_rope::qk_rope_specializations(),
        wgnorm_selfnorm::specializations(),
        wgnorm_batchnorm::region_specializations(),
        wgnorm_batchnorm::region_grad_specializations(),
        wgnorm_batchnorm::evonorm_b0_grad_specializations(),
        wgnorm_batchnorm::fold_specializations(),
        wgnorm_poincare::ball_specializations(),
        wgnorm_poincare::norm_specializations(),
        wgnorm_poincare::midpoint_grad_specializations(),
        wgnorm_poincare::batch_norm_grad_specializations(),
        (0..3).map(wgnorm_poincare::naive_midpoint_spec).collect(),
    ];
    let mut seen = std::collections::HashSet::new();
    all.into_iter()
        .flatten()
        .filter(|s| seen.insert(s.key()))
        .collect()
}
