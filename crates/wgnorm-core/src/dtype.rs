//! Element types of tensors in GPU memory.

use std::fmt;

/// Storage type of a tensor. Arithmetic in every kernel is f32 whatever the storage type, with one
/// rounding to the storage type on store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// IEEE binary16, at any length on any device: without `wgpu::Features::SHADER_F16` kernels
    /// move it as packed u32 words (the same bits).
    F16,
    /// bfloat16 (the upper half of an f32: f32's range, 8 bits of precision), stored as packed
    /// words: LayerNorm, RMSNorm and their fused adds only, on rows whose length is a multiple of
    /// 4 (other ops and rows are refused with `UnsupportedDType`). No device feature needed.
    BF16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The name used in messages and case files (`f32`, `f16`, `bf16`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
