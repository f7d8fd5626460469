//! Op-owned scratch tensors: created on the first call with an input shape, reused after, so a
//! warm call allocates nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Context, DType, Result, Tensor};

/// Scratch tensors keyed by the input shape they serve.
#[derive(Default)]
pub struct ScratchCache {
    map: Mutex<HashMap<Vec<usize>, Tensor>>,
}

impl ScratchCache {
    /// The scratch tensor of `shape` and `dtype` for inputs of shape `key`.
    pub fn get(
        &self,
        ctx: &Context,
        key: &[usize],
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        self.with(ctx, key, shape, dtype, Tensor::clone)
    }

    /// `f` of the scratch tensor for inputs of shape `key` (created on the first call), without
    /// cloning it: a warm call allocates nothing (a `Tensor` clone copies its shape).
    pub fn with<R>(
        &self,
        ctx: &Context,
        key: &[usize],
        shape: &[usize],
        dtype: DType,
        f: impl FnOnce(&Tensor) -> R,
    ) -> Result<R> {
        if let Some(t) = crate::locked(&self.map).get(key) {
            return Ok(f(t));
        }
        // Allocated outside the lock (a device error must not poison it); a racing thread's
        // tensor, if it got there first, is the one kept.
        let t = ctx.empty(shape, dtype)?;
        Ok(f(crate::locked(&self.map).entry(key.to_vec()).or_insert(t)))
    }
}
