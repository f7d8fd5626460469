//! Row normalization, the engine behind LayerNorm and RMSNorm (and, later, their fused variants):
//! every row of a row-major `[rows, n]` view is normalized on its own.
//!
//! Kernel choice is data: [`RowKernel`] names a kernel shape and its tuning, [`choose`] maps
//! (adapter, row length, I/O) to one, and [`specializations`] lists every pipeline the choice can
//! produce so `cargo xtask validate` checks exactly what runs.

//!
//! Modules: `choose` (kernel choice per adapter and row length), [`plan`] (kernels, typed
//! constants, the validation enumeration), `record` (checks and recording of a call).

mod choose;
pub mod plan;
mod record;

pub use choose::{
    choose, loop_iterations, split_chunk_len, split_for, split_wg, AdapterClass, RowKernel,
    CPU_LOOP_BUDGET, SPLIT_MAX_CHUNKS, SPLIT_MAX_ROWS, SPLIT_WG, TEAM_REGS,
};
pub use plan::{
    naive_spec, specializations, RowConstants, RowFlags, NAIVE_KERNEL, SLOTS, SPLIT_APPLY_KERNEL,
    SPLIT_APPLY_SLOTS, SPLIT_PARTIALS_KERNEL, SPLIT_PARTIALS_SLOTS, SPLIT_STATS_KERNEL,
    SPLIT_STATS_SLOTS, TEAM_KERNEL, TEAM_REGS_KERNEL, WORKGROUP_KERNEL,
};

use crate::binding::BindCache;
use crate::shader::Io;
use crate::{Context, DType, Error, Result, Tensor};

/// Centred (LayerNorm) or quadratic-mean (RMSNorm) statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowMode {
    /// `y = (x - mean) / sqrt(var_biased + eps) * w + b`.
    LayerNorm,
    /// `y = x / sqrt(mean(x^2) + eps) * (w + weight_offset)`.
    RmsNorm,
}

impl RowMode {
    /// The op's name in benches, tuning tables and conformance cases: `layer_norm`, `rms_norm`.
    pub fn name(self) -> &'static str {
        match self {
            RowMode::LayerNorm => "layer_norm",
            RowMode::RmsNorm => "rms_norm",
        }
    }

    /// The shaders' `MODE` override constant (row norms and their backward): 0 LayerNorm,
    /// 1 RMSNorm.
    pub fn code(self) -> u32 {
        match self {
            RowMode::LayerNorm => 0,
            RowMode::RmsNorm => 1,
        }
    }

    /// The mode named `name` (see [`RowMode::name`]).
    pub fn from_name(name: &str) -> Option<RowMode> {
        [RowMode::LayerNorm, RowMode::RmsNorm]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// Configuration fixed when a row-norm op is created (everything but the data).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowNormConfig {
    /// LayerNorm or RMSNorm statistics.
    pub mode: RowMode,
    /// First reduced dim; negative counts from the end. Every dim from `axis` on is reduced.
    pub axis: isize,
    /// Added to the variance (or mean square) inside the square root. Finite, >= 0.
    pub eps: f32,
    /// Added to the weight before it multiplies (RMSNorm: 1.0 for Gemma's `1 + w`). Finite.
    pub weight_offset: f32,
    /// Storage type of x, y, weight and bias. Statistics are always f32.
    pub dtype: DType,
}

impl RowNormConfig {
    /// Statistics over the last dim, eps 1e-5 (PyTorch's default), no weight offset: the
    /// configuration of the benches, tools and most tests (change fields with struct update).
    pub fn last_axis(mode: RowMode, dtype: DType) -> RowNormConfig {
        RowNormConfig {
            mode,
            axis: -1,
            eps: 1e-5,
            weight_offset: 0.0,
            dtype,
        }
    }
}

/// Tensors of one row-norm call. `x` and `y` have the same shape; `weight`/`bias` have the
/// reduced shape `x.shape[axis..]`; `mean`/`rstd` are f32 with one element per row.
#[derive(Clone, Copy, Debug)]
pub struct RowNormArgs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Shift (beta) added after the scale; `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// Output: the shape and dtype of `x`.
    pub y: &'a Tensor,
    /// Saved statistics: the mean of each normalized row or slot (f32), written when given.
    pub mean: Option<&'a Tensor>,
    /// Saved statistics: `1/sqrt(var + eps)` of each normalized row or slot (f32), written when given.
    pub rstd: Option<&'a Tensor>,
    /// Fused residual add: normalize `x + residual` (same shape and dtype as x).
    pub residual: Option<&'a Tensor>,
    /// With `residual`: also store `x + residual` here (same shape and dtype as x).
    pub sum: Option<&'a Tensor>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    n: u64,
    io: Io,
    flags: RowFlags,
    /// The call's row count when it may take the split kernel (fewer than
    /// [`SPLIT_MAX_ROWS`] rows, one binding window), else 0.
    few_rows: u64,
}

#[derive(Clone)]
struct Plan {
    kernel: RowKernel,
    pipeline: wgpu::ComputePipeline,
    /// The split kernel's first pass (chunk moments).
    partials: Option<wgpu::ComputePipeline>,
    /// The split kernel's statistics pass (when the call keeps mean or rstd).
    stats: Option<wgpu::ComputePipeline>,
}

/// A row-norm op bound to a device: validates calls, picks and caches pipelines and bind groups,
/// and records one dispatch per call.
pub struct RowNorm {
    ctx: Context,
    cfg: RowNormConfig,
    activation: crate::Activation,
    forced: Option<RowKernel>,
    /// Calls of few rows may take the split kernel or a row-count tuning entry
    /// ([`RowNorm::with_few_row_kernels`]); off, a row's bits never depend on the call's rows.
    few_row_kernels: bool,
    /// Plan as for this adapter class instead of the context's ([`RowNorm::with_adapter_class`]).
    class: Option<AdapterClass>,
    plans: std::sync::Mutex<std::collections::HashMap<PlanKey, Plan>>,
    binds: BindCache,
    scratch: crate::scratch::ScratchCache,
}

impl RowNorm {
    /// Checks the configuration (eps finite and >= 0, weight_offset finite, dtype usable on the
    /// device). Pipelines are compiled on the first call of each row length.
    pub fn new(ctx: &Context, cfg: RowNormConfig) -> Result<RowNorm> {
        crate::check_eps(cfg.eps)?;
        if !cfg.weight_offset.is_finite() {
            return Err(Error::InvalidParameter {
                name: "weight_offset",
                value: cfg.weight_offset.to_string(),
                why: "must be finite",
            });
        }
        Ok(RowNorm {
            ctx: ctx.clone(),
            cfg,
            activation: crate::Activation::None,
            forced: None,
            few_row_kernels: false,
            class: None,
            plans: Default::default(),
            binds: BindCache::default(),
            scratch: Default::default(),
        })
    }

    /// Uses `kernel` for every row length instead of the per-adapter choice (tests, benchmarks,
    /// autotuning). A call it cannot serve fails with [`Error::InvalidParameter`].
    pub fn with_kernel(mut self, kernel: RowKernel) -> RowNorm {
        self.forced = Some(kernel);
        self.plans.get_mut().unwrap().clear();
        self
    }

    /// Lets calls of few rows (decode steps) take a kernel chosen for their row count: the split
    /// kernel, which spreads one long row over the whole device, or a tuning-table entry measured
    /// on that many rows. Faster decode steps on GPUs, but a row's bits then depend on how many
    /// rows its call had (the split kernel sums in another order): a token decoded alone and the
    /// same token in a prefill may differ in the last bits. Off by default: every call of a row
    /// length takes the same kernel, so results are bitwise batch-invariant.
    pub fn with_few_row_kernels(mut self, on: bool) -> RowNorm {
        self.few_row_kernels = on;
        self.plans.get_mut().unwrap().clear();
        self
    }

    /// Chooses kernels as for an adapter of `class` instead of this context's (tests of the
    /// choice rules on another class of device; the kernels chosen must still run here: a
    /// class without subgroups runs anywhere).
    pub fn with_adapter_class(mut self, class: AdapterClass) -> RowNorm {
        self.class = Some(class);
        self.plans.get_mut().unwrap().clear();
        self
    }

    /// The adapter class kernels are chosen for.
    pub(super) fn class(&self) -> AdapterClass {
        self.class.unwrap_or_else(|| AdapterClass::of(&self.ctx))
    }

    /// Whether calls of few rows may take a kernel chosen for their row count.
    pub fn few_row_kernels(&self) -> bool {
        self.few_row_kernels
    }

    /// Applies `activation` after the affine, in the same kernel (LayerNorm + GELU, ...).
    pub fn with_activation(mut self, activation: crate::Activation) -> RowNorm {
        self.activation = activation;
        self.plans.get_mut().unwrap().clear();
        self
    }

    /// The configuration.
    pub fn config(&self) -> &RowNormConfig {
        &self.cfg
    }

    /// The context the op records for.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Splits `shape` at the configured axis into (rows, row length).
    pub fn split(&self, shape: &[usize]) -> Result<(usize, usize)> {
        let rank = shape.len();
        let axis = self.cfg.axis;
        let a = if axis < 0 { axis + rank as isize } else { axis };
        if rank == 0 || a < 0 || a >= rank as isize {
            return Err(Error::AxisOutOfRange {
                what: "row norm",
                axis,
                rank,
            });
        }
        let a = a as usize;
        Ok((shape[..a].iter().product(), shape[a..].iter().product()))
    }

    /// The reduced dims of `shape` (the weight's shape): `shape[axis..]`.
    pub fn reduced_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        self.split(shape)?;
        let a = self.cfg.axis;
        let a = if a < 0 { a + shape.len() as isize } else { a } as usize;
        Ok(shape[a..].to_vec())
    }

    /// The activation applied after the affine.
    pub fn activation(&self) -> crate::Activation {
        self.activation
    }

    /// The kernel a call on `x` would run (after validation), for reports.
    pub fn kernel_for(&self, x: &Tensor) -> Result<(RowKernel, Io)> {
        self.kernel_for_shape(x.shape(), x.offset().is_multiple_of(16))
    }

    /// The kernel a call on an x of `shape` would run (`aligned`: x starts at a 16-byte
    /// multiple), without a tensor (with [`RowNorm::with_few_row_kernels`], the row count decides
    /// the split kernel for few rows).
    pub fn kernel_for_shape(&self, shape: &[usize], aligned: bool) -> Result<(RowKernel, Io)> {
        let (rows, n) = self.split(shape)?;
        let io = Io {
            dtype: self.cfg.dtype,
            vec4: n % 4 == 0 && aligned,
        };
        let class = self.class();
        let base = self.select(&class, n as u64, io);
        let few = self.few_row_kernels && (rows as u64) < SPLIT_MAX_ROWS;
        let split = few.then(|| self.few_rows_choice(&class, rows as u64, n as u64, io, base));
        Ok((split.flatten().unwrap_or(base), io))
    }

    /// Convenience path: allocates `y` (and f32 `mean`/`rstd`, one per row, when `stats`), encodes
    /// and submits.
    /// Returns without waiting for the GPU.
    pub fn forward(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        stats: bool,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let (rows, _) = self.split(x.shape())?;
        let y = self.ctx.empty(x.shape(), self.cfg.dtype)?;
        let (mean, rstd) = if stats {
            (
                Some(self.ctx.empty(&[rows], DType::F32)?),
                Some(self.ctx.empty(&[rows], DType::F32)?),
            )
        } else {
            (None, None)
        };
        self.ctx.record_and_submit(|enc| {
            self.encode(
                enc,
                &RowNormArgs {
                    x,
                    weight,
                    bias,
                    y: &y,
                    mean: mean.as_ref(),
                    rstd: rstd.as_ref(),
                    residual: None,
                    sum: None,
                },
            )
        })?;
        Ok((y, mean, rstd))
    }

    /// Bind groups cached so far (tests of the no-allocation path).
    pub fn cached_bind_groups(&self) -> usize {
        self.binds.len()
    }
}
