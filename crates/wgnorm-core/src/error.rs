//! The one error type of wgnorm. Variants are named for what the caller did; messages say what
//! was expected and what to do about it.

use crate::DType;

/// Everything that can go wrong in wgnorm, checked before anything is recorded into an encoder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GPU adapter found ({0}); install a Vulkan driver (on Debian/Ubuntu without a GPU: `apt-get install -y mesa-vulkan-drivers`) or set WGPU_BACKEND")]
    NoAdapter(String),

    #[error("no adapter matches WGNORM_ADAPTER={filter:?}; available: {available}")]
    AdapterFilter { filter: String, available: String },

    #[error("requesting the device failed: {0}")]
    RequestDevice(String),

    #[error(
        "{what}: axis {axis} is out of range for a tensor of rank {rank} (use -{rank}..{rank})"
    )]
    AxisOutOfRange {
        what: &'static str,
        axis: isize,
        rank: usize,
    },

    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        what: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    #[error("{what}: expected dtype {expected}, got {got}")]
    DTypeMismatch {
        what: String,
        expected: DType,
        got: DType,
    },

    #[error("dtype {dtype} is not supported on this device: {why}")]
    UnsupportedDType { dtype: DType, why: &'static str },

    #[error("{what}: buffer is too small: the tensor needs bytes {offset}..{end} but the buffer has {size}")]
    BufferTooSmall {
        what: String,
        offset: u64,
        end: u64,
        size: u64,
    },

    #[error("{what}: buffer lacks usage {missing:?} (create it with BufferUsages::{missing:?})")]
    MissingUsage {
        what: String,
        missing: wgpu::BufferUsages,
    },

    #[error("{what}: byte offset {offset} is not a multiple of {alignment} (the device's min_storage_buffer_offset_alignment)")]
    MisalignedOffset {
        what: String,
        offset: u64,
        alignment: u64,
    },

    #[error("{what}: {bytes} bytes exceed the device's max_storage_buffer_binding_size of {limit} bytes; split the tensor along its rows")]
    TooLargeForBinding {
        what: String,
        bytes: u64,
        limit: u64,
    },

    #[error("{what} and {other} share one buffer; wgnorm does not run in place: give the output its own buffer")]
    AliasedBuffers { what: String, other: String },

    #[error("invalid parameter {name} = {value}: {why}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        why: &'static str,
    },

    #[error("{what}: {n} elements do not fit the data length {len}")]
    DataLength { what: String, n: usize, len: usize },

    #[error("the device reported an error: {0}")]
    Device(String),

    #[error("waiting for the GPU failed: {0}")]
    Poll(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `eps`, added to a variance before its square root: finite and >= 0.
pub fn check_eps(eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        return Ok(());
    }
    Err(Error::InvalidParameter {
        name: "eps",
        value: eps.to_string(),
        why: "must be finite and >= 0",
    })
}

/// A momentum or mixing weight named `name`: in [0, 1] (NaN is not).
pub fn check_unit_interval(name: &'static str, value: f32) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        return Ok(());
    }
    Err(Error::InvalidParameter {
        name,
        value: value.to_string(),
        why: "must be in [0, 1]",
    })
}
