//! Op-owned scratch tensors: created on the first call with an input shape, reused after, so a
//! warm call allocates nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Context, DType, Result, Tensor};

/// Scratch tensors keyed by the input shape they serve; one input shape may need several (an op
/// that views the same x two ways, e.g. InstanceNorm's instance and running-statistics
/// backward), told apart by their own shape and dtype.
#[derive(Default)]
pub struct ScratchCache {
    map: Mutex<HashMap<Vec<usize>, Vec<Tensor>>>,
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
        let fits = |t: &&Tensor| t.shape() == shape && t.dtype() == dtype;
        if let Some(t) = crate::locked(&self.map)
            .get(key)
            .and_then(|v| v.iter().find(fits))
        {
            return Ok(f(t));
        }
        // Allocated outside the lock (a device error must not poison it); a racing thread's
        // tensor, if it got there first, is the one kept.
        let t = ctx.empty(shape, dtype)?;
        let mut map = crate::locked(&self.map);
        let entry = map.entry(key.to_vec()).or_default();
        if let Some(i) = entry.iter().position(|t| fits(&t)) {
            return Ok(f(&entry[i]));
        }
        entry.push(t);
        Ok(f(entry.last().expect("just pushed")))
    }
}
