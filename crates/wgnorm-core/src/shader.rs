//! WGSL sources and how kernels are composed from them.
//!
//! WGSL has no `#include`: a kernel module is the concatenation of an I/O snippet (storage type
//! and vector width), the shared snippets it needs and the kernel body, all embedded at compile
//! time. Everything else is specialised with `override` constants at pipeline creation.

use crate::DType;

macro_rules! shader_file {
    ($path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shaders/",
            $path
        ))
    };
}

const IO_F32_V1: &str = shader_file!("common/io_f32_v1.wgsl");
const IO_F32_V4: &str = shader_file!("common/io_f32_v4.wgsl");
const IO_F16_V1: &str = shader_file!("common/io_f16_v1.wgsl");
const IO_F16_V4: &str = shader_file!("common/io_f16_v4.wgsl");
/// The f16 <-> f32 conversions of the packed f16 I/O snippet (`half_to_f32`, `f32_to_half` on
/// `vec4<u32>` bit patterns), public so tests can check them exhaustively in a shader of their own.
pub const HALF_CONVERSIONS_WGSL: &str = shader_file!("common/half.wgsl");
const MOMENTS: &str = shader_file!("common/moments.wgsl");
const WG_SUM: &str = shader_file!("common/workgroup_sum.wgsl");
const CHUNK: &str = shader_file!("common/chunk.wgsl");
const ACTIVATION: &str = shader_file!("common/activation.wgsl");
const WG_MOMENTS: &str = shader_file!("common/workgroup_moments.wgsl");
const TEAM_SUM: &str = shader_file!("common/team.wgsl");
const ELEMENTWISE: &str = shader_file!("elementwise.wgsl");
const ALPHA_DROPOUT: &str = shader_file!("dropout.wgsl");
const BLEND: &str = shader_file!("blend.wgsl");
const ROW_NORM_COMMON: &str = shader_file!("row_norm/common.wgsl");
const ROW_NORM_TEAM: &str = shader_file!("row_norm/team.wgsl");
const ROW_NORM_TEAM_REGS: &str = shader_file!("row_norm/team_regs.wgsl");
const ROW_NORM_WORKGROUP: &str = shader_file!("row_norm/workgroup.wgsl");
const COPY: &str = shader_file!("copy.wgsl");
const CHANNEL_COMMON: &str = shader_file!("channel_norm/common.wgsl");
const CHANNEL_MOMENTS: &str = shader_file!("channel_norm/moments.wgsl");
const CHANNEL_FINALIZE: &str = shader_file!("channel_norm/finalize.wgsl");
const CHANNEL_APPLY: &str = shader_file!("channel_norm/apply.wgsl");
const CHANNEL_MERGE: &str = shader_file!("channel_norm/merge.wgsl");
const CHANNEL_INSTANCE_RUNNING: &str = shader_file!("channel_norm/instance_running.wgsl");
const CHANNEL_INSTANCE_MIX: &str = shader_file!("channel_norm/instance_mix.wgsl");
const CHANNEL_REGION: &str = shader_file!("channel_norm/region.wgsl");
const FOLD_BATCH_NORM: &str = shader_file!("channel_norm/fold.wgsl");
const NAIVE_ROW_NORM: &str = shader_file!("naive/row_norm.wgsl");
const NAIVE_CHANNEL_NORM: &str = shader_file!("naive/channel_norm.wgsl");
const NAIVE_POINCARE_MIDPOINT: &str = shader_file!("naive/poincare_midpoint.wgsl");
const POINCARE_COMMON: &str = shader_file!("poincare/common.wgsl");
const POINCARE_BALL: &str = shader_file!("poincare/ball.wgsl");
const POINCARE_MIDPOINT: &str = shader_file!("poincare/midpoint.wgsl");

/// Storage type and access width of a kernel's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Io {
    pub dtype: DType,
    /// Four consecutive elements per access (the reduced length must be a multiple of 4).
    pub vec4: bool,
}

impl Io {
    pub const ALL: [Io; 4] = [
        Io {
            dtype: DType::F32,
            vec4: false,
        },
        Io {
            dtype: DType::F32,
            vec4: true,
        },
        Io {
            dtype: DType::F16,
            vec4: false,
        },
        Io {
            dtype: DType::F16,
            vec4: true,
        },
    ];

    /// Elements per access.
    pub fn width(self) -> u32 {
        if self.vec4 {
            4
        } else {
            1
        }
    }

    fn snippet(self) -> &'static str {
        match (self.dtype, self.vec4) {
            (DType::F32, false) => IO_F32_V1,
            (DType::F32, true) => IO_F32_V4,
            (DType::F16, false) => IO_F16_V1,
            (DType::F16, true) => IO_F16_V4,
        }
    }

    /// Byte alignment every binding offset needs for this access type.
    pub fn alignment(self) -> u64 {
        self.dtype.size() * self.width() as u64
    }

    pub fn label(self) -> String {
        format!("{}x{}", self.dtype, self.width())
    }
}

/// A kernel body: one compute entry point `main`, specialised by `override` constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// LayerNorm/RMSNorm, a subgroup team per row (needs `Features::SUBGROUP`).
    RowNormTeam,
    /// LayerNorm/RMSNorm, a subgroup team per row, the row in registers (needs `SUBGROUP`).
    RowNormTeamRegs,
    /// LayerNorm/RMSNorm, a workgroup per row (no optional feature).
    RowNormWorkgroup,
    /// Channel statistics, phase 1: partial moments per (slot, tile).
    ChannelMoments,
    /// Channel statistics, phase 2: merge, running statistics, scale and shift.
    ChannelFinalize,
    /// Channel statistics, phase 3: y = act((x - mean) * scale + shift).
    ChannelApply,
    /// Channel statistics: partial moments merged into one (count, mean, M2) per slot.
    ChannelMerge,
    /// InstanceNorm running statistics: instance moments averaged over samples per channel.
    ChannelInstanceRunning,
    /// Statistics built from per-instance moments (IBN, EvoNorm-B0, UnMix-TNS): apply coefficients.
    ChannelInstanceMix,
    /// Region Normalization (RN-B): statistics inside and outside a mask, in stages.
    ChannelRegion,
    /// Folds an inference BatchNorm into the preceding layer's weight and bias.
    FoldBatchNorm,
    /// y = act(x): SELU and the other activations as standalone ops.
    Elementwise,
    /// AlphaDropout with a counter-based mask (seed, index).
    AlphaDropout,
    /// y = lambda a + (1 - lambda) b (progressive LN -> RepBN).
    Blend,
    /// Plain copy, the bandwidth roofline of the benchmarks.
    Copy,
    /// One invocation per row, three passes: the benchmarks' baseline for row norms.
    NaiveRowNorm,
    /// One invocation per plane, slot or element, in stages: the benchmarks' baseline for the
    /// batch-statistics family.
    NaiveChannelNorm,
    /// One invocation per point, coordinate or result, in stages: the benchmarks' baseline for
    /// the hyperbolic family (the gyromidpoint).
    NaivePoincareMidpoint,
    /// Poincaré ball operations, one invocation per point (`OP` selects which).
    PoincareBall,
    /// Gyromidpoint reduction and Poincaré midpoint batch norm, in stages (`STAGE`).
    PoincareMidpoint,
}

impl Kernel {
    pub const ALL: [Kernel; 20] = [
        Kernel::RowNormTeam,
        Kernel::RowNormTeamRegs,
        Kernel::RowNormWorkgroup,
        Kernel::ChannelMoments,
        Kernel::ChannelFinalize,
        Kernel::ChannelApply,
        Kernel::ChannelMerge,
        Kernel::ChannelInstanceRunning,
        Kernel::ChannelInstanceMix,
        Kernel::ChannelRegion,
        Kernel::FoldBatchNorm,
        Kernel::Elementwise,
        Kernel::AlphaDropout,
        Kernel::Blend,
        Kernel::Copy,
        Kernel::NaiveRowNorm,
        Kernel::NaiveChannelNorm,
        Kernel::NaivePoincareMidpoint,
        Kernel::PoincareBall,
        Kernel::PoincareMidpoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::RowNormTeam => "row_norm/team",
            Kernel::RowNormTeamRegs => "row_norm/team_regs",
            Kernel::RowNormWorkgroup => "row_norm/workgroup",
            Kernel::ChannelMoments => "channel_norm/moments",
            Kernel::ChannelFinalize => "channel_norm/finalize",
            Kernel::ChannelApply => "channel_norm/apply",
            Kernel::ChannelMerge => "channel_norm/merge",
            Kernel::ChannelInstanceRunning => "channel_norm/instance_running",
            Kernel::ChannelInstanceMix => "channel_norm/instance_mix",
            Kernel::ChannelRegion => "channel_norm/region",
            Kernel::FoldBatchNorm => "channel_norm/fold",
            Kernel::Elementwise => "elementwise",
            Kernel::AlphaDropout => "dropout",
            Kernel::Blend => "blend",
            Kernel::Copy => "copy",
            Kernel::NaiveRowNorm => "naive/row_norm",
            Kernel::NaiveChannelNorm => "naive/channel_norm",
            Kernel::NaivePoincareMidpoint => "naive/poincare_midpoint",
            Kernel::PoincareBall => "poincare/ball",
            Kernel::PoincareMidpoint => "poincare/midpoint",
        }
    }

    /// Device features the module needs besides those its `Io` needs.
    pub fn required_features(self) -> wgpu::Features {
        match self {
            Kernel::RowNormTeam | Kernel::RowNormTeamRegs => wgpu::Features::SUBGROUP,
            _ => wgpu::Features::empty(),
        }
    }

    fn parts(self) -> &'static [&'static str] {
        match self {
            Kernel::RowNormTeam => &[
                ACTIVATION,
                MOMENTS,
                ROW_NORM_COMMON,
                TEAM_SUM,
                ROW_NORM_TEAM,
            ],
            Kernel::RowNormTeamRegs => &[
                ACTIVATION,
                MOMENTS,
                ROW_NORM_COMMON,
                TEAM_SUM,
                ROW_NORM_TEAM_REGS,
            ],
            Kernel::RowNormWorkgroup => &[
                ACTIVATION,
                MOMENTS,
                WG_MOMENTS,
                ROW_NORM_COMMON,
                ROW_NORM_WORKGROUP,
            ],
            Kernel::ChannelMoments => {
                &[MOMENTS, WG_MOMENTS, CHANNEL_COMMON, CHANNEL_MOMENTS, CHUNK]
            }
            Kernel::ChannelFinalize => &[MOMENTS, CHANNEL_COMMON, CHANNEL_FINALIZE],
            Kernel::ChannelApply => &[ACTIVATION, CHANNEL_COMMON, CHANNEL_APPLY],
            Kernel::ChannelMerge => &[MOMENTS, CHANNEL_COMMON, CHANNEL_MERGE],
            Kernel::ChannelInstanceRunning => &[MOMENTS, CHANNEL_COMMON, CHANNEL_INSTANCE_RUNNING],
            Kernel::ChannelInstanceMix => &[MOMENTS, WG_SUM, CHANNEL_INSTANCE_MIX],
            Kernel::ChannelRegion => &[MOMENTS, CHANNEL_REGION],
            Kernel::FoldBatchNorm => &[FOLD_BATCH_NORM],
            Kernel::Copy => &[COPY],
            Kernel::NaiveRowNorm => &[ACTIVATION, ROW_NORM_COMMON, NAIVE_ROW_NORM],
            Kernel::NaiveChannelNorm => &[ACTIVATION, NAIVE_CHANNEL_NORM],
            Kernel::NaivePoincareMidpoint => &[NAIVE_POINCARE_MIDPOINT],
            Kernel::Elementwise => &[ACTIVATION, ELEMENTWISE],
            Kernel::AlphaDropout => &[ALPHA_DROPOUT],
            Kernel::Blend => &[BLEND],
            Kernel::PoincareBall => &[POINCARE_COMMON, POINCARE_BALL],
            Kernel::PoincareMidpoint => &[POINCARE_COMMON, WG_SUM, POINCARE_MIDPOINT],
        }
    }

    /// The complete WGSL module for this kernel with this I/O type.
    pub fn source(self, io: Io) -> String {
        let mut s = String::from(io.snippet());
        if io.dtype == DType::F16 && io.vec4 {
            s.push('\n');
            s.push_str(HALF_CONVERSIONS_WGSL);
        }
        for part in self.parts() {
            s.push('\n');
            s.push_str(part);
        }
        s
    }
}

/// Features a module needs: the kernel's own plus f16 element access (the vec4 f16 I/O packs
/// halves into u32 words and needs no feature).
pub fn required_features(kernel: Kernel, io: Io) -> wgpu::Features {
    let mut f = kernel.required_features();
    if io.dtype == DType::F16 && !io.vec4 {
        f |= wgpu::Features::SHADER_F16;
    }
    f
}

/// One pipeline the runtime can create: a kernel, its I/O type and its override constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Specialization {
    pub kernel: Kernel,
    pub io: Io,
    pub constants: Vec<(&'static str, f64)>,
}
