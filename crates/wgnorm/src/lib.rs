//! wgnorm: normalization layers as WGSL compute kernels on wgpu.
//!
//! This facade re-exports the runtime ([`Context`], [`Tensor`], [`DType`], [`Error`]) and every
//! layer family, and holds the op registry that the conformance runner, the tests and the xtask
//! share ([`conformance`]).
//!
//! ```no_run
//! use wgnorm::prelude::*;
//!
//! # fn main() -> wgnorm::Result<()> {
//! let ctx = Context::new()?; // or Context::from_device(device, queue) in an app
//! let x = ctx.upload_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
//! let ln = LayerNorm::new(&ctx, LayerNormConfig::default())?;
//! let out = ln.forward(&LayerNormInputs { x: &x, weight: None, bias: None })?;
//! let y = ctx.download(&out.y)?;
//! # Ok(()) }
//! ```

pub mod conformance;

pub use wgnorm_batchnorm::{
    self as batchnorm, BatchNorm, BatchNormConfig, BatchNormInputs, BatchNormOutputs, EvoNormB0,
    EvoNormB0Inputs, EvoRunningVar, IbnInputs, IbnNorm, RegionNormB, RegionNormInputs, RegionNormL,
    RegionNormLInputs, UnmixTns, UnmixTnsInputs,
};
pub use wgnorm_core::chnorm::{self, Layout};
pub use wgnorm_core::elementwise::{self, AlphaDropout, Elementwise};
pub use wgnorm_core::Activation;
pub use wgnorm_core::{
    self as core, binding, rownorm, shader, uniform, wgpu, Context, DType, Error, Result,
    ShaderChecks, Slot, Tensor,
};
pub use wgnorm_groupnorm::{
    self as groupnorm, EvoNormS0, GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig,
    LpNorm, MeanVarianceNorm, NormInputs, NormOutputs, WeightStandardization, WsVariant,
};
pub use wgnorm_layernorm::{
    self as layernorm, AddLayerNormInputs, AddLayerNormOutputs, LayerNorm, LayerNormConfig,
    LayerNormInputs, LayerNormOutputs,
};
pub use wgnorm_poincare::{
    self as poincare, BallOps, PoincareBatchNorm, PoincareBatchNormConfig, PoincareBatchNormInputs,
    PoincareMidpoint, PoincareStatistics,
};
pub use wgnorm_powernorm::{
    self as powernorm, PowerNorm, PowerNormConfig, PowerNormInputs, SinkhornNormalize, UnifiedNorm,
};
pub use wgnorm_rmsnorm::{
    self as rmsnorm, AddRmsNormInputs, AddRmsNormOutputs, RmsNorm, RmsNormConfig, RmsNormInputs,
    RmsNormOutputs,
};

/// Everything an app needs to run a layer.
pub mod prelude {
    pub use crate::{
        Activation, BatchNorm, BatchNormConfig, BatchNormInputs, BatchNormOutputs, Context, DType,
        GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig, LayerNorm, LayerNormConfig,
        LayerNormInputs, LayerNormOutputs, Layout, LpNorm, MeanVarianceNorm, NormInputs,
        NormOutputs, RmsNorm, RmsNormConfig, RmsNormInputs, RmsNormOutputs, ShaderChecks, Tensor,
    };
}

/// Every pipeline specialisation the runtime can create, for `cargo xtask validate`: the kernel
/// choice replayed for typical adapter classes over row lengths that reach every branch, plus the
/// copy kernels of the benchmarks.
pub fn specializations() -> Vec<shader::Specialization> {
    use shader::{Io, Kernel, Specialization};
    let lengths = [
        1,
        4,
        7,
        64,
        256,
        768,
        1000,
        1024,
        4096,
        4097,
        8192,
        65536,
        1 << 20,
    ];
    let mut out = rownorm::specializations(&lengths, &rownorm::AdapterClass::TYPICAL);
    for io in Io::ALL {
        for block in [1.0, 256.0] {
            out.push(Specialization {
                kernel: Kernel::Copy,
                io,
                constants: vec![
                    ("WG", if block == 1.0 { 256.0 } else { 8.0 }),
                    ("BLOCK", block),
                ],
            });
        }
    }
    for io in [
        Io {
            dtype: DType::F32,
            vec4: false,
        },
        Io {
            dtype: DType::F16,
            vec4: false,
        },
    ] {
        for mode in [0.0, 1.0] {
            out.push(Specialization {
                kernel: Kernel::NaiveRowNorm,
                io,
                constants: vec![
                    ("WG", 64.0),
                    ("MODE", mode),
                    ("HAS_WEIGHT", 1.0),
                    ("HAS_BIAS", mode),
                ],
            });
        }
    }
    // The batch-statistics baseline of the benchmarks: three stages, with and without SiLU.
    for stage in [0.0, 1.0, 2.0] {
        for act in [wgnorm_core::Activation::None, wgnorm_core::Activation::Silu] {
            let mut constants = vec![("WG", 64.0), ("STAGE", stage)];
            constants.extend(act.constants());
            out.push(Specialization {
                kernel: Kernel::NaiveChannelNorm,
                io: Io {
                    dtype: DType::F32,
                    vec4: false,
                },
                constants,
            });
        }
    }
    for stage in [0.0, 1.0, 2.0] {
        out.push(Specialization {
            kernel: Kernel::NaivePoincareMidpoint,
            io: Io {
                dtype: DType::F32,
                vec4: false,
            },
            constants: vec![("WG", 64.0), ("STAGE", stage)],
        });
    }
    out.extend(chnorm::specializations());
    out.extend(wgnorm_batchnorm::region_specializations());
    out.extend(wgnorm_poincare::ball_specializations());
    out.extend(wgnorm_poincare::norm_specializations());
    for io in Io::ALL {
        for act in wgnorm_core::Activation::ALL {
            let mut constants = vec![("WG", 256.0), ("BLOCK", 16.0)];
            constants.extend(act.constants());
            out.push(Specialization {
                kernel: Kernel::Elementwise,
                io,
                constants,
            });
        }
        for block in [1.0, 16.0] {
            out.push(Specialization {
                kernel: Kernel::Blend,
                io,
                constants: vec![("WG", 256.0), ("BLOCK", block)],
            });
        }
        if !io.vec4 {
            out.push(Specialization {
                kernel: Kernel::AlphaDropout,
                io,
                constants: vec![("WG", 256.0)],
            });
        }
    }
    out
}
