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
        let mut map = self.map.lock().unwrap();
        if let Some(t) = map.get(key) {
            return Ok(t.clone());
        }
        let t = ctx.empty(shape, dtype)?;
        map.insert(key.to_vec(), t.clone());
        Ok(t)
    }
}
