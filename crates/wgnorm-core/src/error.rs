//! The one error type of wgnorm. Variants are named for what the caller did; messages say what
//! was expected and what to do about it.

use crate::DType;

/// Everything that can go wrong in wgnorm, checked before anything is recorded into an encoder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter could be had (the backends and what was found are in the message).
    #[error("no GPU adapter found ({0}); install a Vulkan driver (on Debian/Ubuntu without a GPU: `apt-get install -y mesa-vulkan-drivers`) or set WGPU_BACKEND")]
    NoAdapter(String),

    /// `WGNORM_ADAPTER` (or `WGPU_ADAPTER_NAME`) matched no adapter.
    #[error("no adapter matches WGNORM_ADAPTER={filter:?}; available: {available}")]
    AdapterFilter {
        /// The filter that was set.
        filter: String,
        /// The adapters there are.
        available: String,
    },

    /// The adapter refused the device request.
    #[error("requesting the device failed: {0}")]
    RequestDevice(String),

    /// An axis outside `-rank..rank`.
    #[error(
        "{what}: axis {axis} is out of range for a tensor of rank {rank} (use -{rank}..{rank})"
    )]
    AxisOutOfRange {
        /// The op or argument.
        what: &'static str,
        /// The axis given (negative counts from the end).
        axis: isize,
        /// The tensor's rank.
        rank: usize,
    },

    /// A tensor of the wrong shape or element count.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The argument.
        what: String,
        /// The shape (or element count) it needs.
        expected: Vec<usize>,
        /// The shape it has.
        got: Vec<usize>,
    },

    /// A tensor of the wrong dtype.
    #[error("{what}: expected dtype {expected}, got {got}")]
    DTypeMismatch {
        /// The argument.
        what: String,
        /// The dtype it needs.
        expected: DType,
        /// The dtype it has.
        got: DType,
    },

    /// A dtype an op or access width cannot run (bf16 outside the row norms, or one element at a
    /// time).
    #[error("dtype {dtype} is not supported on this device: {why}")]
    UnsupportedDType {
        /// The dtype.
        dtype: DType,
        /// What the device lacks.
        why: &'static str,
    },

    /// A tensor that runs past the end of its buffer.
    #[error("{what}: buffer is too small: the tensor needs bytes {offset}..{end} but the buffer has {size}")]
    BufferTooSmall {
        /// The argument.
        what: String,
        /// First byte of the tensor in its buffer.
        offset: u64,
        /// One past its last byte (bindings round up to 4 bytes).
        end: u64,
        /// The buffer's size in bytes.
        size: u64,
    },

    /// A buffer created without a usage wgnorm needs (`STORAGE`, `COPY_SRC` to download).
    #[error("{what}: buffer lacks usage {missing:?} (create it with BufferUsages::{missing:?})")]
    MissingUsage {
        /// The argument.
        what: String,
        /// The usages its buffer needs and lacks.
        missing: wgpu::BufferUsages,
    },

    /// A tensor offset the device cannot bind.
    #[error("{what}: byte offset {offset} is not a multiple of {alignment} (the device's min_storage_buffer_offset_alignment)")]
    MisalignedOffset {
        /// The argument.
        what: String,
        /// Its byte offset.
        offset: u64,
        /// The device's `min_storage_buffer_offset_alignment`.
        alignment: u64,
    },

    /// A tensor larger than one storage binding may be.
    #[error("{what}: {bytes} bytes exceed the device's max_storage_buffer_binding_size of {limit} bytes, and the op cannot bind it in windows (row norms window whole rows, the batch-statistics family whole samples or steps of the batch axis): split the call along rows or samples, or request a higher limit when creating the device")]
    TooLargeForBinding {
        /// The argument.
        what: String,
        /// Its size in bytes.
        bytes: u64,
        /// The device's `max_storage_buffer_binding_size`.
        limit: u64,
    },

    /// An output sharing a buffer with another binding of the call.
    #[error("{what} and {other} share one buffer; wgnorm does not run in place: give the output its own buffer")]
    AliasedBuffers {
        /// One argument.
        what: String,
        /// The argument it shares a buffer with.
        other: String,
    },

    /// A parameter out of its range, or a combination the op does not support.
    #[error("invalid parameter {name} = {value}: {why}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        why: &'static str,
    },

    /// Host data whose length does not match the shape it is uploaded as.
    #[error("{what}: {n} elements do not fit the data length {len}")]
    DataLength {
        /// The argument.
        what: String,
        /// Elements of the shape.
        n: usize,
        /// Elements of the data.
        len: usize,
    },

    /// A size or count beyond what a buffer, binding or 32-bit kernel index can hold.
    #[error(
        "{what}: {value} exceeds {limit}; split the tensor or use a device with higher limits"
    )]
    TooLarge {
        /// The argument or quantity.
        what: String,
        /// Its value.
        value: u64,
        /// The most it can be.
        limit: u64,
    },

    /// A kernel needs more of a device limit than the device was created with (an app's
    /// device made with lower limits than wgnorm's kernels need on it).
    #[error("{what} needs {needed} of the device limit {limit}, which is {available} on this device: create the device with at least `wgpu::Limits::default()` (WebGPU's defaults: every wgnorm kernel fits them), or with the adapter's limits")]
    DeviceLimit {
        /// The kernel or op.
        what: String,
        /// The `wgpu::Limits` field.
        limit: &'static str,
        /// What the kernel needs.
        needed: u64,
        /// What the device has.
        available: u64,
    },

    /// The device could not allocate memory for an object wgnorm creates.
    #[error("{what}: out of device memory allocating {bytes} bytes")]
    OutOfMemory {
        /// What was being created.
        what: String,
        /// Bytes requested (0 when not a buffer).
        bytes: u64,
    },

    /// The device was lost (driver reset, GPU removed); make a new context.
    #[error("the device was lost ({0}); create a new Context")]
    DeviceLost(String),

    /// A wgpu validation or internal error, captured instead of panicking.
    #[error("the device reported an error: {0}")]
    Device(String),

    /// A checkpoint tensor that is missing, of the wrong shape or dtype, or a file that is not
    /// a safetensors checkpoint (`name` is then the file).
    #[error("checkpoint tensor {name}: {why}")]
    Checkpoint {
        /// The tensor (or file).
        name: String,
        /// What is wrong.
        why: String,
    },

    /// A tuning table that cannot be read or belongs to another adapter.
    #[error("tuning table: {0}")]
    Tuning(String),

    /// Polling the device (downloads, `Context::wait`) failed.
    #[error("waiting for the GPU failed: {0}")]
    Poll(String),
}

/// wgnorm's result type.
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
