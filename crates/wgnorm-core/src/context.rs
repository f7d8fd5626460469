//! The device context: a `wgpu::Device` + `wgpu::Queue` (the app's own, or a headless one), the
//! features wgnorm may use on it, and the caches of shader modules, layouts and pipelines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::shader::{self, F16Access, Io, Kernel, Specialization};
use crate::{DType, Error, Result};

mod pipeline_cache;

/// Optional features wgnorm uses when the adapter has them; every kernel has a path without
/// them (f16 storage too: packed words without `SHADER_F16`).
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::PIPELINE_CACHE)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

/// Which limits a headless context requests from its adapter: what an app's device would have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LimitsProfile {
    /// The adapter's own limits (the most wgnorm can use there).
    #[default]
    Adapter,
    /// `wgpu::Limits::default()`, WebGPU's defaults (8 storage buffers per stage, 16 KiB of
    /// workgroup memory, 256 invocations, 128 MiB bindings): what most apps and every browser
    /// device without raised limits have. Every wgnorm kernel fits them.
    WebGpu,
    /// `wgpu::Limits::downlevel_defaults()` (4 storage buffers per stage: GLES-class devices).
    /// Kernels that bind more are refused with [`Error::DeviceLimit`].
    Downlevel,
}

impl LimitsProfile {
    /// The limits to request from an adapter with `adapter` limits (never above them).
    pub fn limits(self, adapter: &wgpu::Limits) -> wgpu::Limits {
        match self {
            LimitsProfile::Adapter => adapter.clone(),
            LimitsProfile::WebGpu => wgpu::Limits::default().or_worse_values_from(adapter),
            LimitsProfile::Downlevel => {
                wgpu::Limits::downlevel_defaults().or_worse_values_from(adapter)
            }
        }
    }
}

impl std::str::FromStr for LimitsProfile {
    type Err = Error;
    fn from_str(s: &str) -> Result<LimitsProfile> {
        match s.to_ascii_lowercase().as_str() {
            "adapter" => Ok(LimitsProfile::Adapter),
            "webgpu" => Ok(LimitsProfile::WebGpu),
            "downlevel" => Ok(LimitsProfile::Downlevel),
            _ => Err(Error::InvalidParameter {
                name: "limits",
                value: s.into(),
                why: "must be adapter, webgpu or downlevel",
            }),
        }
    }
}

/// How a headless context creates its device: the limits profile, an optional cap on storage
/// bindings, and the optional features it may request. `Default`: the adapter's limits and
/// every feature in [`OPTIONAL_FEATURES`] the adapter has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceOptions {
    /// The limits requested.
    pub limits: LimitsProfile,
    /// A lower `max_storage_buffer_binding_size` in bytes (exercises windowed bindings).
    pub max_storage_buffer_binding_size: Option<u64>,
    /// The optional features requested where the adapter has them: remove `SHADER_F16` to run as
    /// a device without it (WebGPU without `shader-f16`, many mobile GPUs).
    pub features: wgpu::Features,
    /// How f16 storage is accessed: `None` lets the device decide ([`F16Access::for_device`]);
    /// [`F16Access::Vector`] needs `SHADER_F16`. Both give the same bits.
    pub f16_access: Option<F16Access>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            limits: LimitsProfile::Adapter,
            max_storage_buffer_binding_size: None,
            features: OPTIONAL_FEATURES,
            f16_access: None,
        }
    }
}

impl DeviceOptions {
    /// The defaults, changed by `WGNORM_LIMITS=adapter|webgpu|downlevel` and
    /// `WGNORM_WITHOUT_F16=1` (no `SHADER_F16`): so a whole test suite or tool run can take an
    /// app's device profile without code changes.
    pub fn from_env() -> Result<DeviceOptions> {
        let mut o = DeviceOptions::default();
        if let Ok(v) = std::env::var("WGNORM_LIMITS") {
            if !v.is_empty() {
                o.limits = v.parse()?;
            }
        }
        if std::env::var("WGNORM_WITHOUT_F16").is_ok_and(|v| !v.is_empty() && v != "0") {
            o.features.remove(wgpu::Features::SHADER_F16);
        }
        Ok(o)
    }
}

/// Which of wgpu's runtime safety instrumentation wgnorm's own shaders are compiled with.
///
/// wgpu instruments every shader it is given as if it were untrusted: a counter in every loop
/// (so an infinite loop cannot become undefined behaviour), a clamp on every array index, guards
/// on every integer division. On software rasterisers that instrumentation is most of the cost
/// of a memory-bound kernel (llvmpipe, LayerNorm at row length 1024: 0.35 of copy instrumented,
/// 0.55 without), and wgnorm's kernels do not need it: every loop is bounded by a uniform, every
/// private and workgroup array index is within bounds by a host-checked invariant (register and
/// cache sizes are validated before a pipeline is chosen), and no kernel reads past the end of
/// a binding on purpose. Integer-division guards stay: they cost nothing measurable, and a zero
/// divisor is undefined behaviour in SPIR-V.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShaderChecks {
    /// Everything wgpu injects. For debugging a suspected out-of-bounds access in wgnorm.
    Full,
    /// The default. Loop counters are dropped everywhere; array index clamps are dropped where
    /// the backend bounds buffer accesses itself (Vulkan's robust buffer
    /// access, which wgpu enables; DX12's bounded buffer views) and kept elsewhere (Metal, GL),
    /// so a wgnorm bug can never read outside a binding.
    #[default]
    Auto,
}

impl ShaderChecks {
    /// `WGNORM_SHADER_CHECKS=full` selects [`ShaderChecks::Full`]; anything else, or unset,
    /// [`ShaderChecks::Auto`].
    pub fn from_env() -> ShaderChecks {
        match std::env::var("WGNORM_SHADER_CHECKS") {
            Ok(v) if v.eq_ignore_ascii_case("full") => ShaderChecks::Full,
            _ => ShaderChecks::Auto,
        }
    }

    /// The wgpu runtime checks these settings mean on `backend`.
    pub fn runtime_checks(self, backend: wgpu::Backend) -> wgpu::ShaderRuntimeChecks {
        match self {
            ShaderChecks::Full => wgpu::ShaderRuntimeChecks::checked(),
            ShaderChecks::Auto => wgpu::ShaderRuntimeChecks {
                bounds_checks: !matches!(backend, wgpu::Backend::Vulkan | wgpu::Backend::Dx12),
                force_loop_bounding: false,
                ..wgpu::ShaderRuntimeChecks::checked()
            },
        }
    }
}

/// What a bind-group slot holds. Every wgnorm layout is a list of these in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The uniform parameter block.
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
    /// A binding number the module declares (a shared snippet's binding) that this kernel's
    /// entry point never uses: no layout entry, nothing bound. Keeps kernels that share a
    /// snippet's binding numbers within the storage-buffer limit.
    Unused,
}

impl Slot {
    /// Storage buffers in a layout (what `max_storage_buffers_per_shader_stage` limits).
    pub fn storage_count(slots: &[Slot]) -> usize {
        slots
            .iter()
            .filter(|s| matches!(s, Slot::Read | Slot::ReadWrite))
            .count()
    }
}

// An app shares one context (and the ops made from it) between threads: that is a promise, not
// an accident of the fields, so losing it fails the build here. (In a browser wgpu's objects are
// JS handles bound to one thread, and so is everything holding them.)
#[cfg(not(target_arch = "wasm32"))]
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Context>();
    send_sync::<crate::Tensor>();
};

/// Handle to a device and wgnorm's per-device caches. Cheap to clone; share one per device
/// (`Send + Sync`: ops made from it can record from several threads at once).
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    features: wgpu::Features,
    limits: wgpu::Limits,
    checks: ShaderChecks,
    /// How four-element f16 accesses read and write halves on this device.
    f16_access: F16Access,
    modules: Mutex<HashMap<(Kernel, Io), wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<&'static [Slot], (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    /// Where created pipelines are cached for reuse across runs (Vulkan; see `pipeline_cache`).
    pipeline_cache: Mutex<Option<wgpu::PipelineCache>>,
    /// `WGNORM_LOG_PIPELINES`: the file every created pipeline's key is appended to.
    pipeline_log: Option<std::path::PathBuf>,
    /// Set by the device-lost callback of devices wgnorm created: why the device was lost.
    lost: Arc<Mutex<Option<String>>>,
    /// Bound in place of absent optional inputs / outputs (read, and distinct writes so absent
    /// outputs never alias).
    dummy_read: wgpu::Buffer,
    dummy_write: [wgpu::Buffer; 3],
    /// Measured kernel choices for this adapter ([`Context::set_tuning`]).
    tuning: std::sync::RwLock<Option<Arc<crate::tuning::Tuning>>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    kernel: Kernel,
    io: Io,
    constants: Vec<(&'static str, u64)>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .field("features", &self.inner.features)
            .field("shader_checks", &self.inner.checks)
            .field("f16_access", &self.inner.f16_access)
            .finish()
    }
}

impl Context {
    /// A headless context on the default adapter.
    ///
    /// `WGPU_BACKEND` (e.g. `vulkan`) limits the backends searched; `WGNORM_ADAPTER` (or
    /// `WGPU_ADAPTER_NAME`) keeps only adapters whose name contains it, case-insensitively.
    /// Otherwise a discrete GPU is preferred, then integrated, virtual, and CPU adapters.
    /// Every optional feature wgnorm can use is requested, with the adapter's best limits, unless
    /// the environment says otherwise ([`DeviceOptions::from_env`]).
    /// `WGNORM_SHADER_CHECKS=full` compiles the shaders with all of wgpu's checks (see
    /// [`ShaderChecks`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Context> {
        pollster::block_on(Self::new_async())
    }

    /// [`Context::new`] without blocking.
    pub async fn new_async() -> Result<Context> {
        Self::new_async_with(DeviceOptions::from_env()?).await
    }

    /// A headless context whose device is created as `options` say (a profile of limits, no
    /// `SHADER_F16`, ...): to run as an app's device would.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_with(options: DeviceOptions) -> Result<Context> {
        pollster::block_on(Self::new_async_with(options))
    }

    /// [`Context::new_with`] without blocking.
    pub async fn new_async_with(options: DeviceOptions) -> Result<Context> {
        Self::create(options, |_| {}).await
    }

    /// [`Context::new`] with the device's limits adjusted from the adapter's by `adjust` (lower
    /// ones to test what an app's device would have: `max_storage_buffer_binding_size` of 1 MiB
    /// exercises windowed bindings, say). wgnorm honours the limits of the device, not the
    /// adapter's.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_with_limits(adjust: impl FnOnce(&mut wgpu::Limits)) -> Result<Context> {
        pollster::block_on(Self::new_async_with_limits(adjust))
    }

    /// [`Context::new_with_limits`] without blocking.
    pub async fn new_async_with_limits(adjust: impl FnOnce(&mut wgpu::Limits)) -> Result<Context> {
        Self::create(DeviceOptions::default(), adjust).await
    }

    async fn create(
        options: DeviceOptions,
        adjust: impl FnOnce(&mut wgpu::Limits),
    ) -> Result<Context> {
        let adapter = pick_adapter().await?;
        let features = adapter.features() & OPTIONAL_FEATURES & options.features;
        let mut limits = options.limits.limits(&adapter.limits());
        if let Some(b) = options.max_storage_buffer_binding_size {
            limits.max_storage_buffer_binding_size = b.min(limits.max_storage_buffer_binding_size);
        }
        adjust(&mut limits);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgnorm"),
                required_features: features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let access = match options.f16_access {
            Some(F16Access::Vector) if !device.features().contains(wgpu::Features::SHADER_F16) => {
                return Err(Error::InvalidParameter {
                    name: "f16_access",
                    value: "Vector".into(),
                    why: "the vector f16 access needs SHADER_F16, which this device lacks",
                })
            }
            Some(a) => a,
            None => F16Access::for_device(device.features(), device.adapter_info().device_type),
        };
        let ctx = Self::from_parts(device, queue, ShaderChecks::from_env(), access);
        if let Some(path) = std::env::var_os("WGNORM_TUNING").filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::Tuning(format!("WGNORM_TUNING={}: {e}", path.to_string_lossy()))
            })?;
            ctx.set_tuning(crate::tuning::Tuning::from_json(&text)?)?;
        }
        // wgnorm owns this device, so it may take its (single) device-lost callback; an app's
        // device keeps the app's own.
        let lost = ctx.inner.lost.clone();
        ctx.inner
            .device
            .set_device_lost_callback(move |reason, message| {
                *crate::locked(&lost) = Some(format!("{reason:?}: {message}"));
            });
        Ok(ctx)
    }

    /// Wraps a device and queue the application already owns. wgnorm uses whatever optional
    /// features and limits the device was created with (see [`OPTIONAL_FEATURES`]); kernels fall
    /// back where a feature is missing.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Context {
        Self::from_device_with_checks(device, queue, ShaderChecks::default())
    }

    /// [`Context::from_device`] with a choice of the runtime checks compiled into wgnorm's
    /// shaders.
    pub fn from_device_with_checks(
        device: wgpu::Device,
        queue: wgpu::Queue,
        checks: ShaderChecks,
    ) -> Context {
        let access = F16Access::for_device(device.features(), device.adapter_info().device_type);
        Self::from_parts(device, queue, checks, access)
    }

    fn from_parts(
        device: wgpu::Device,
        queue: wgpu::Queue,
        checks: ShaderChecks,
        f16_access: F16Access,
    ) -> Context {
        let info = device.adapter_info();
        let features = device.features();
        let limits = device.limits();
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let dummy = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: storage,
                mapped_at_creation: false,
            })
        };
        let dummy_read = dummy("wgnorm dummy read");
        let dummy_write = [
            dummy("wgnorm dummy write 0"),
            dummy("wgnorm dummy write 1"),
            dummy("wgnorm dummy write 2"),
        ];
        Context {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                features,
                limits,
                checks,
                f16_access,
                modules: Mutex::default(),
                layouts: Mutex::default(),
                pipelines: Mutex::default(),
                pipeline_cache: Mutex::default(),
                pipeline_log: std::env::var_os("WGNORM_LOG_PIPELINES").map(Into::into),
                lost: Arc::default(),
                dummy_read,
                dummy_write,
                tuning: Default::default(),
            }),
        }
    }

    /// How four-element f16 accesses read and write halves here (see [`F16Access`]).
    pub fn f16_access(&self) -> F16Access {
        self.inner.f16_access
    }

    /// Makes `tuning` (measured by `cargo xtask bench --autotune` on this adapter) the kernel
    /// choice wherever it has an entry that can serve the call; the built-in choice elsewhere.
    /// Ops pick their kernels when a shape is first seen, so set it before the first calls.
    /// A table measured on another adapter (by name) is refused.
    pub fn set_tuning(&self, tuning: crate::tuning::Tuning) -> Result<()> {
        if tuning.adapter() != self.inner.info.name {
            return Err(Error::Tuning(format!(
                "measured on adapter {:?}, this context's is {:?}: run `cargo xtask bench --autotune` on this adapter",
                tuning.adapter(),
                self.inner.info.name
            )));
        }
        *self.inner.tuning.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(tuning));
        Ok(())
    }

    /// The tuning table in use, if any.
    pub fn tuning(&self) -> Option<Arc<crate::tuning::Tuning>> {
        self.inner
            .tuning
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    /// The adapter's description.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    /// The features wgnorm may use on this device.
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }
    /// The device's limits (wgnorm honours them, not the adapter's).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    /// Whether the device has subgroup operations.
    pub fn has_subgroups(&self) -> bool {
        self.inner.features.contains(wgpu::Features::SUBGROUP)
    }
    /// Whether the adapter runs shaders on the CPU (lavapipe, WARP, SwiftShader).
    pub fn is_cpu(&self) -> bool {
        self.inner.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Checks that a kernel can access tensors as `io` on this device. f32 and f16 run at
    /// either width on every device (f16 as packed u32 words without `SHADER_F16`); bf16 only
    /// four elements at a time.
    pub fn check_io(&self, io: shader::Io) -> Result<()> {
        if io.dtype == DType::BF16 && !io.vec4 {
            return Err(Error::UnsupportedDType {
                dtype: io.dtype,
                why: "bf16 tensors are read four elements at a time: the normalized length must be a multiple of 4 and offsets 8-byte aligned (or use f16 / f32)",
            });
        }
        Ok(())
    }

    /// A 16-byte storage buffer bound in place of an absent optional input (never written).
    pub fn dummy_read(&self) -> &wgpu::Buffer {
        &self.inner.dummy_read
    }
    /// Three distinct 16-byte storage buffers (`i` = 0..3) bound in place of absent outputs.
    pub fn dummy_write(&self, i: usize) -> &wgpu::Buffer {
        &self.inner.dummy_write[i]
    }

    /// The bind-group layout and pipeline layout for a slot list, created once per device.
    pub fn layout(
        &self,
        slots: &'static [Slot],
    ) -> Result<(wgpu::BindGroupLayout, wgpu::PipelineLayout)> {
        if let Some(l) = crate::locked(&self.inner.layouts).get(slots) {
            return Ok(l.clone());
        }
        self.check_storage_buffers(slots, || "a kernel layout".into())?;
        let entries: Vec<_> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let ty = match s {
                    Slot::Uniform => wgpu::BufferBindingType::Uniform,
                    Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    Slot::Unused => return None,
                };
                Some(wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
            })
            .collect();
        let device = &self.inner.device;
        // Created outside the lock: a device error here must not poison the cache.
        let pair = self.capture("bind group layout", 0, || {
            let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("wgnorm"),
                entries: &entries,
            });
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("wgnorm"),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
            (bgl, pl)
        })?;
        Ok(crate::locked(&self.inner.layouts)
            .entry(slots)
            .or_insert(pair)
            .clone())
    }

    /// `Err(DeviceLost)` once the device is gone.
    pub fn check_alive(&self) -> Result<()> {
        match crate::locked(&self.inner.lost).as_ref() {
            Some(why) => Err(Error::DeviceLost(why.clone())),
            None => Ok(()),
        }
    }

    /// Runs `f` (wgpu calls creating `what`) inside out-of-memory, validation and internal error
    /// scopes: their errors come back typed ([`Error::OutOfMemory`], [`Error::Device`]) instead of
    /// reaching wgpu's uncaptured-error handler, which panics. `bytes` is the size requested,
    /// for the message.
    ///
    /// In a browser (wasm32) this thread cannot wait for the scopes' promises: `f` runs without
    /// them, and a device error reaches wgpu's uncaptured-error handler instead (wgnorm's own
    /// checks still refuse bad calls before anything is created or recorded).
    pub fn capture<T>(&self, what: &str, bytes: u64, f: impl FnOnce() -> T) -> Result<T> {
        self.check_alive()?;
        #[cfg(target_arch = "wasm32")]
        {
            let _ = (what, bytes);
            Ok(f())
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.capture_blocking(what, bytes, f)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn capture_blocking<T>(&self, what: &str, bytes: u64, f: impl FnOnce() -> T) -> Result<T> {
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let value = f();
        let errors = [
            pollster::block_on(internal.pop()),
            pollster::block_on(validation.pop()),
            pollster::block_on(oom.pop()),
        ];
        self.check_alive()?;
        match errors.into_iter().flatten().next() {
            None => Ok(value),
            Some(wgpu::Error::OutOfMemory { .. }) => Err(Error::OutOfMemory {
                what: what.into(),
                bytes,
            }),
            Some(e) => Err(Error::Device(format!("{what}: {e}"))),
        }
    }

    /// A buffer of `size` bytes for `what`: refused as [`Error::TooLarge`] beyond the device's
    /// `max_buffer_size`, created inside error scopes.
    pub fn create_buffer(
        &self,
        what: &str,
        size: u64,
        usage: wgpu::BufferUsages,
        mapped_at_creation: bool,
    ) -> Result<wgpu::Buffer> {
        let limit = self.inner.limits.max_buffer_size;
        if size > limit {
            return Err(Error::TooLarge {
                what: format!("{what} (bytes)"),
                value: size,
                limit,
            });
        }
        self.capture(what, size, || {
            self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(what),
                size,
                usage,
                mapped_at_creation,
            })
        })
    }

    /// The compute pipeline for a kernel specialisation, compiled on first use and cached.
    /// Shader validation errors come back as [`Error::Device`], never as a panic. With
    /// `WGNORM_LOG_PIPELINES=FILE` set when the context was made, each pipeline created appends
    /// its [`Specialization::key`] to FILE (the format of `cargo xtask validate --list`).
    pub fn pipeline(&self, spec: &Specialization) -> Result<wgpu::ComputePipeline> {
        let (kernel, io) = (spec.kernel, spec.io);
        let key = PipelineKey {
            kernel,
            io,
            constants: spec
                .constants
                .iter()
                .map(|&(k, v)| (k, v.to_bits()))
                .collect(),
        };
        if let Some(p) = crate::locked(&self.inner.pipelines).get(&key) {
            return Ok(p.clone());
        }
        self.check_io(io)?;
        if io.dtype == DType::BF16 && !kernel.supports_bf16() {
            return Err(Error::UnsupportedDType {
                dtype: io.dtype,
                why: "bf16 storage is implemented for LayerNorm, RMSNorm and their fused adds; convert to f16 or f32 for this op",
            });
        }
        let missing =
            shader::required_features(kernel, io, self.inner.f16_access) - self.inner.features;
        if !missing.is_empty() {
            return Err(Error::Device(format!(
                "kernel {} ({}) needs device features {missing:?}",
                kernel.name(),
                io.label()
            )));
        }
        self.check_limits(spec)?;
        let device = &self.inner.device;
        let module = self.module(kernel, io)?;
        let (_, layout) = self.layout(kernel.slots())?;
        let cache = crate::locked(&self.inner.pipeline_cache).clone();
        let pipeline = self.capture(kernel.name(), 0, || {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name()),
                layout: Some(&layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &spec.constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: cache.as_ref(),
            })
        })?;
        self.log_pipeline(spec)?;
        crate::locked(&self.inner.pipelines).insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// What a specialisation needs of the device's limits that the host can tell: its storage
    /// buffers, and its workgroup size (every kernel's `@workgroup_size(WG)`), so a device with
    /// lower limits than a kernel needs gets [`Error::DeviceLimit`] naming the limit instead of
    /// a validation error. (Workgroup memory is sized by the plans from the device's limits.)
    fn check_limits(&self, spec: &Specialization) -> Result<()> {
        let l = &self.inner.limits;
        let what = || format!("kernel {}", spec.kernel.name());
        self.check_storage_buffers(spec.kernel.slots(), what)?;
        let wg = spec
            .constants
            .iter()
            .find(|(k, _)| *k == "WG")
            .map_or(0, |&(_, v)| v as u64);
        for (limit, available) in [
            (
                "max_compute_invocations_per_workgroup",
                l.max_compute_invocations_per_workgroup,
            ),
            (
                "max_compute_workgroup_size_x",
                l.max_compute_workgroup_size_x,
            ),
        ] {
            if wg > available as u64 {
                return Err(Error::DeviceLimit {
                    what: what(),
                    limit,
                    needed: wg,
                    available: available as u64,
                });
            }
        }
        Ok(())
    }

    /// [`Error::DeviceLimit`] when `slots` bind more storage buffers than the device allows;
    /// `what` names the kernel or layout.
    fn check_storage_buffers(&self, slots: &[Slot], what: impl FnOnce() -> String) -> Result<()> {
        let needed = Slot::storage_count(slots) as u64;
        let available = self.inner.limits.max_storage_buffers_per_shader_stage as u64;
        if needed > available {
            return Err(Error::DeviceLimit {
                what: what(),
                limit: "max_storage_buffers_per_shader_stage",
                needed,
                available,
            });
        }
        Ok(())
    }

    /// The shader module of a kernel and I/O type, compiled once per context.
    fn module(&self, kernel: Kernel, io: Io) -> Result<wgpu::ShaderModule> {
        let device = &self.inner.device;
        if let Some(m) = crate::locked(&self.inner.modules).get(&(kernel, io)) {
            return Ok(m.clone());
        }
        let target = shader::Target::for_backend(self.inner.info.backend);
        let source = kernel.source_for(io, self.inner.f16_access, target);
        let checks = self.inner.checks.runtime_checks(self.inner.info.backend);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name()),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        // SAFETY: wgnorm's kernels keep the invariants `checks` drops (see `ShaderChecks`):
        // bounded loops, in-bounds indices.
        let m = self.capture(kernel.name(), 0, || unsafe {
            device.create_shader_module_trusted(desc, checks)
        })?;
        crate::locked(&self.inner.modules).insert((kernel, io), m.clone());
        Ok(m)
    }

    fn log_pipeline(&self, spec: &Specialization) -> Result<()> {
        use std::io::Write;
        let Some(path) = &self.inner.pipeline_log else {
            return Ok(());
        };
        let line = format!("{}\n", spec.key());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| Error::Device(format!("WGNORM_LOG_PIPELINES={}: {e}", path.display())))
    }

    /// Number of pipelines compiled so far (for tests of the caches).
    pub fn pipeline_count(&self) -> usize {
        self.inner
            .pipelines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The adapter of a headless context (see [`Context::new`]): the most capable one on the
/// backends `WGPU_BACKEND` allows, or the one `WGNORM_ADAPTER` names.
#[cfg(not(target_arch = "wasm32"))]
async fn pick_adapter() -> Result<wgpu::Adapter> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let adapters = instance.enumerate_adapters(backends).await;
    if adapters.is_empty() {
        return Err(Error::NoAdapter(format!(
            "no adapter on backends {backends:?}"
        )));
    }
    let filter = std::env::var("WGNORM_ADAPTER")
        .or_else(|_| std::env::var("WGPU_ADAPTER_NAME"))
        .ok()
        .filter(|s| !s.is_empty());
    let available = || {
        adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rank = |t: wgpu::DeviceType| match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let chosen = adapters
        .iter()
        .filter(|a| match &filter {
            Some(f) => a.get_info().name.to_lowercase().contains(&f.to_lowercase()),
            None => true,
        })
        .min_by_key(|a| rank(a.get_info().device_type));
    let adapter = match (chosen, &filter) {
        (Some(a), _) => a.clone(),
        (None, Some(f)) => {
            return Err(Error::AdapterFilter {
                filter: f.clone(),
                available: available(),
            })
        }
        (None, None) => unreachable!("adapters is not empty"),
    };
    Ok(adapter)
}

/// In a browser: the page's WebGPU adapter (WebGPU enumerates none), high performance preferred.
#[cfg(target_arch = "wasm32")]
async fn pick_adapter() -> Result<wgpu::Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::NoAdapter(format!("the page's WebGPU gave no adapter: {e}")))
}

#[cfg(test)]
mod tests {
    use super::ShaderChecks;

    #[test]
    fn auto_keeps_index_clamps_only_where_the_backend_has_no_bounds_of_its_own() {
        for backend in [wgpu::Backend::Vulkan, wgpu::Backend::Dx12] {
            let c = ShaderChecks::Auto.runtime_checks(backend);
            assert!(!c.bounds_checks && !c.force_loop_bounding, "{backend:?}");
            assert!(c.int_div_checks, "{backend:?}");
        }
        for backend in [wgpu::Backend::Metal, wgpu::Backend::Gl] {
            let c = ShaderChecks::Auto.runtime_checks(backend);
            assert!(c.bounds_checks && !c.force_loop_bounding, "{backend:?}");
        }
        let full = ShaderChecks::Full.runtime_checks(wgpu::Backend::Vulkan);
        assert!(full.bounds_checks && full.force_loop_bounding && full.int_div_checks);
    }
}
