//! wgnorm-core: the host runtime shared by every wgnorm layer family.
//!
//! - [`Context`]: a device and queue (yours, or a headless default) plus wgnorm's caches.
//! - [`Tensor`]: a byte range of a `wgpu::Buffer` seen as a row-major tensor of a [`DType`].
//! - [`shader`]: WGSL sources, kernel composition and the list of specialisations.
//! - [`binding`]: checks that keep wgpu validation errors from reaching you, and bind-group caching.
//! - [`rownorm`]: the row-normalization engine behind LayerNorm and RMSNorm.
//! - [`chnorm`]: the channel-statistics engine behind BatchNorm, GroupNorm and InstanceNorm.
//! - [`Error`]: one typed error for everything.

#![deny(missing_docs)]

pub mod activation;
pub mod baseline;
pub mod binding;
pub mod chgrad;
pub mod chnorm;
pub mod context;
mod dtype;
pub mod elementwise;
mod error;
pub mod instmix;
pub mod rowgrad;
pub mod rownorm;
pub mod scratch;
pub mod shader;
mod tensor;
mod transfer;
pub mod tuning;
pub mod uniform;

/// Whether a layer trains (batch statistics, state updated) or infers (running statistics or
/// none, state read only). Every op with both behaviours takes one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Training: batch statistics; running statistics and other state are updated.
    Train,
    /// Inference: running statistics where the op has them; nothing is updated.
    #[default]
    Infer,
}

impl Mode {
    /// `Mode::Train` for `true`.
    pub fn training(train: bool) -> Mode {
        if train {
            Mode::Train
        } else {
            Mode::Infer
        }
    }

    /// Whether this is `Mode::Train`.
    pub fn is_train(self) -> bool {
        self == Mode::Train
    }
}

pub use activation::Activation;
pub use context::{Context, DeviceOptions, LimitsProfile, ShaderChecks, Slot};
pub use dtype::DType;
pub use error::{check_eps, check_unit_interval, Error, Result};
pub use tensor::{checked_bytes, checked_numel, Tensor};

/// Locks `m`, recovering the data if a thread panicked while holding it: wgnorm's caches hold
/// no invariant a panic could break (no GPU call is made under a lock), so a poisoned lock must
/// not turn every later call into a panic.
pub fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
#[doc(hidden)]
pub use wgnorm_shaders as __shaders;
pub use wgpu;
