//! Compiled pipelines kept across runs: an app that persists [`Context::pipeline_cache_data`]
//! and hands it back to [`Context::load_pipeline_cache`] at its next start-up skips the driver's
//! shader compilation for every pipeline the cache holds. Vulkan only (wgpu's
//! `Features::PIPELINE_CACHE`); elsewhere these calls report that no cache is in use, and the
//! drivers keep their own caches.

use super::Context;
use crate::Result;

impl Context {
    /// Starts caching the pipelines this context creates from now on, empty: `Ok(false)` when
    /// the device lacks `PIPELINE_CACHE` (not Vulkan, or not requested by an app-owned device).
    pub fn enable_pipeline_cache(&self) -> Result<bool> {
        // SAFETY: no data is given, so nothing unverified reaches the driver.
        unsafe { self.install_pipeline_cache(None) }
    }

    /// Starts caching pipelines from `data`, a previous run's [`Context::pipeline_cache_data`];
    /// data wgpu does not recognise (another adapter, driver or wgpu version) falls back to an
    /// empty cache. `Ok(false)` when the device cannot cache pipelines.
    ///
    /// # Safety
    ///
    /// `data` must be bytes [`Context::pipeline_cache_data`] returned on this machine (wgpu's
    /// `Device::create_pipeline_cache` contract: arbitrary bytes may reach the driver); key the
    /// file by [`Context::pipeline_cache_key`].
    pub unsafe fn load_pipeline_cache(&self, data: &[u8]) -> Result<bool> {
        unsafe { self.install_pipeline_cache(Some(data)) }
    }

    /// The cache's contents to persist (write them atomically: a temporary file, then a rename),
    /// or `None` without a cache.
    pub fn pipeline_cache_data(&self) -> Option<Vec<u8>> {
        crate::locked(&self.inner.pipeline_cache)
            .as_ref()
            .and_then(|c| c.get_data())
    }

    /// A file name for this adapter's cache (wgpu's `util::pipeline_cache_key`), `None` where
    /// the backend has no pipeline cache.
    pub fn pipeline_cache_key(&self) -> Option<String> {
        wgpu::util::pipeline_cache_key(&self.inner.info)
    }

    /// # Safety
    ///
    /// As [`Context::load_pipeline_cache`] when `data` is given.
    unsafe fn install_pipeline_cache(&self, data: Option<&[u8]>) -> Result<bool> {
        if !self.inner.features.contains(wgpu::Features::PIPELINE_CACHE) {
            return Ok(false);
        }
        let device = &self.inner.device;
        let cache = self.capture("pipeline cache", 0, || unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("wgnorm pipeline cache"),
                data,
                fallback: true,
            })
        })?;
        *crate::locked(&self.inner.pipeline_cache) = Some(cache);
        Ok(true)
    }
}
