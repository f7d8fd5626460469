//! Methods whose statistics are built from per-instance moments (the instance-statistics engine
//! of wgnorm-core): IBN-Net, UnMix-TNS and task-weighted AdaB²N. Each has its own
//! mixing kernel (`shaders/batch_norm/*.wgsl`) and uniform block; each reads x twice (reduce,
//! apply) and keeps its state on the GPU. Parameters and state are f32; x and y f32 or f16,
//! NCHW or NHWC.

use wgnorm_core::chnorm::{ChannelView, Epilogue, Layout};
use wgnorm_core::instmix::{
    expect_f32, InstanceMix, MixDispatch, MixTensors, Mixer, MIX_COMMON, MIX_SLOTS, MIX_WG,
};
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Error, Mode, Result, Tensor};

pub(crate) const fn mix_kernel(name: &'static str, parts: &'static [&'static str]) -> Kernel {
    Kernel::new(name, parts, MIX_SLOTS)
}

/// IBN-Net's mixing kernel.
pub const IBN_KERNEL: Kernel = mix_kernel(
    "batch_norm/ibn",
    &[
        MIX_COMMON[0],
        MIX_COMMON[1],
        MIX_COMMON[2],
        wgnorm_core::shader_file!("batch_norm/ibn.wgsl"),
    ],
);
/// UnMix-TNS's mixing kernel.
pub const UNMIX_TNS_KERNEL: Kernel = mix_kernel(
    "batch_norm/unmix_tns",
    &[
        MIX_COMMON[0],
        MIX_COMMON[1],
        MIX_COMMON[2],
        wgnorm_core::shader_file!("batch_norm/unmix_tns.wgsl"),
    ],
);
/// Task-weighted AdaB²N's mixing kernel.
pub const ADAB2N_KERNEL: Kernel = mix_kernel(
    "batch_norm/adab2n",
    &[
        MIX_COMMON[0],
        MIX_COMMON[1],
        MIX_COMMON[2],
        wgnorm_core::shader_file!("batch_norm/adab2n.wgsl"),
    ],
);

wgnorm_core::uniform_block! {
    /// `IbnParams` (`batch_norm/ibn.wgsl`).
    pub struct IbnParams {
        pub n: u32,
        pub c: u32,
        /// Channels of the InstanceNorm part.
        pub half: u32,
        pub _pad0: u32,
        pub eps: f32,
        pub momentum: f32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

wgnorm_core::uniform_block! {
    /// `UnmixParams` (`batch_norm/unmix_tns.wgsl`).
    pub struct UnmixParams {
        pub n: u32,
        pub c: u32,
        /// Components K.
        pub k: u32,
        pub _pad0: u32,
        pub eps: f32,
        /// The update rate M.
        pub momentum: f32,
        pub temperature: f32,
        pub _pad1: u32,
    }
}

wgnorm_core::uniform_block! {
    /// `AdaB2nParams` (`batch_norm/adab2n.wgsl`).
    pub struct AdaB2nParams {
        pub n: u32,
        pub c: u32,
        pub tasks: u32,
        pub _pad0: u32,
        pub eps: f32,
        pub momentum: f32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

fn ibn_spec(training: bool) -> Specialization {
    Specialization::new(IBN_KERNEL, Io::F32)
        .set("WG", MIX_WG)
        .flag("TRAINING", training)
}

fn unmix_spec() -> Specialization {
    Specialization::new(UNMIX_TNS_KERNEL, Io::F32).set("WG", MIX_WG)
}

fn adab2n_spec() -> Specialization {
    Specialization::new(ADAB2N_KERNEL, Io::F32).set("WG", MIX_WG)
}

/// The mixing pipelines of this module, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = vec![unmix_spec(), adab2n_spec()];
    for training in [false, true] {
        out.push(ibn_spec(training));
        for unbiased in [false, true] {
            out.push(crate::evonorm_b0::mix_spec(training, unbiased));
        }
    }
    out
}

/// A training step that feeds an unbiased batch variance to running statistics needs more than
/// one value per channel over (N, spatial), as PyTorch's BatchNorm (`unbiased`: whether the
/// call does).
pub(crate) fn check_batch_spread(view: &ChannelView, unbiased: bool) -> Result<()> {
    if unbiased && view.numel() > 0 && view.p * view.count() < 2 {
        return Err(Error::InvalidParameter {
            name: "batch",
            value: "1 value per channel".into(),
            why: "training needs more than one value per channel to estimate the unbiased variance (as in PyTorch)",
        });
    }
    Ok(())
}

/// Lanes' loop iterations of a per-channel mixing kernel that merges over the batch.
pub(crate) fn per_channel_iterations(n: usize) -> u64 {
    2 * n as u64
}

pub(crate) fn check_momentum(m: f32) -> Result<()> {
    wgnorm_core::check_unit_interval("momentum", m)
}

/// IBN-Net's IBN-a block (Pan et al. 2018; docs/methods.md A8, official `IBN` module): channels
/// `[0, half)` through InstanceNorm (affine), `[half, C)` through BatchNorm (PyTorch semantics,
/// unbiased running variance), concatenated in that order, in one call; `half = floor(C * ratio)`
/// (an odd C gives the BatchNorm part the extra channel). IBN-b is an InstanceNorm placement.
pub struct IbnNorm {
    ratio: f32,
    eps: f32,
    momentum: f32,
    engine: InstanceMix,
    /// The backward (`crate::ibn_grad`).
    pub(crate) grad: crate::ibn_grad::IbnGrad,
}

/// Tensors of an IBN call: `weight`/`bias` `[C]` (the first `half` for the IN part),
/// `running_mean`/`running_var` `[C - half]` (the BN part, updated in training).
#[derive(Clone, Copy, Debug)]
pub struct IbnInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Scale (gamma) applied after normalizing.
    pub weight: &'a Tensor,
    /// Shift (beta) added after the scale.
    pub bias: &'a Tensor,
    /// Running mean (f32, one per channel): read at inference, updated in training.
    pub running_mean: &'a Tensor,
    /// Running variance (f32, one per channel): read at inference, updated in training.
    pub running_var: &'a Tensor,
}

/// What [`IbnNorm::new`] takes; `Default` gives the paper's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IbnConfig {
    /// Share of the channels normalized per instance (`half = floor(C * ratio)`); 0.5 in the paper.
    pub ratio: f32,
    /// Added to the variances inside the square root.
    pub eps: f32,
    /// Running-statistics momentum of the BatchNorm part (PyTorch convention).
    pub momentum: f32,
    /// Layout of x and y.
    pub layout: Layout,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for IbnConfig {
    fn default() -> Self {
        IbnConfig {
            ratio: 0.5,
            eps: 1e-5,
            momentum: 0.1,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

impl IbnNorm {
    /// `ratio` 0.5 in the paper; `momentum` of the BN part (PyTorch convention, 0.1).
    pub fn new(ctx: &Context, cfg: IbnConfig) -> Result<IbnNorm> {
        let IbnConfig {
            ratio,
            eps,
            momentum,
            layout,
            dtype,
        } = cfg;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(Error::InvalidParameter {
                name: "ratio",
                value: ratio.to_string(),
                why: "the InstanceNorm share of the channels must be in [0, 1]",
            });
        }
        wgnorm_core::check_eps(eps)?;
        check_momentum(momentum)?;
        Ok(IbnNorm {
            ratio,
            eps,
            momentum,
            engine: InstanceMix::new(ctx, layout, dtype)?,
            grad: crate::ibn_grad::IbnGrad::new(ctx, eps, layout, dtype)?,
        })
    }

    /// Channels of the InstanceNorm part for C channels.
    pub fn half(&self, c: usize) -> usize {
        (c as f64 * self.ratio as f64).floor() as usize
    }

    /// Records reduce, mix and apply: IN on the first `half` channels, BN (batch statistics
    /// and a running update in training, running statistics at inference) on the rest.
    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        inputs: &IbnInputs,
        y: &Tensor,
        mode: Mode,
    ) -> Result<()> {
        let training = mode.is_train();
        let view = self.engine.view(inputs.x)?;
        let (n, c) = (view.p, view.r);
        let half = self.half(c);
        check_batch_spread(&view, training && half < c)?;
        expect_f32("running_mean", Some(inputs.running_mean), c - half)?;
        expect_f32("running_var", Some(inputs.running_var), c - half)?;
        let mixer = Mixer {
            spec: ibn_spec(training),
            params: IbnParams {
                n: n as u32,
                c: c as u32,
                half: half as u32,
                eps: self.eps,
                momentum: self.momentum,
                ..Default::default()
            },
            epilogue: Epilogue::AFFINE,
            per_sample: 1,
            dispatch: MixDispatch::PerChannel,
            lane_iterations: per_channel_iterations(n),
        };
        let tensors = MixTensors {
            x: inputs.x,
            y,
            weight: inputs.weight,
            bias: inputs.bias,
            aux: None,
            state_a: Some(inputs.running_mean),
            state_b: Some(inputs.running_var),
            per_sample_input: None,
        };
        self.engine.encode(enc, &tensors, &mixer)
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &IbnInputs, mode: Mode) -> Result<Tensor> {
        let ctx = self.engine.context();
        let y = ctx.empty(inputs.x.shape(), self.engine.dtype())?;
        ctx.record_and_submit(|enc| self.encode(enc, inputs, &y, mode))?;
        Ok(y)
    }
}

/// UnMix-TNS (Tomar et al. 2024; docs/methods.md A12, official `unmixtns.py`): test-time normalization
/// with K statistics components `[K, C]` kept on the GPU. Per sample, the instance means pick
/// components by `p_k = softmax_k(cos(mu_n, mu_k) / temperature)`; the sample is normalized with
/// the mixture of `((1 - p) mu_k + p mu_n, (1 - p) var_k + p var_n)` (instance statistics biased;
/// the mixture's variance `mean_k(var) + mean_k(mean^2) - mean^2`, computed as a sum of squares of
/// deviations); then `mu_k += M mean_n(p_nk (mu_n - mu_k))` and the same for the variances, with
/// `M = 1 - (1 - momentum_bn)^(N / 64)`.
pub struct UnmixTns {
    k: usize,
    eps: f32,
    momentum_bn: f32,
    temperature: f32,
    engine: InstanceMix,
}

/// Tensors of an UnMix-TNS call: `weight`/`bias` `[C]` (the source BN's affine),
/// `component_mean`/`component_var` `[K, C]`, updated in place.
#[derive(Clone, Copy, Debug)]
pub struct UnmixTnsInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Scale (gamma) applied after normalizing.
    pub weight: &'a Tensor,
    /// Shift (beta) added after the scale.
    pub bias: &'a Tensor,
    /// Component means `[K, C]`, updated in place.
    pub component_mean: &'a Tensor,
    /// Component variances `[K, C]`, updated in place.
    pub component_var: &'a Tensor,
}

/// What [`UnmixTns::new`] takes; `Default` gives the paper's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnmixTnsConfig {
    /// Statistics components K.
    pub k: usize,
    /// The source BatchNorm momentum the update rate is derived from.
    pub momentum_bn: f32,
    /// Softmax temperature of the component assignment.
    pub temperature: f32,
    /// Added to the variance inside the square root.
    pub eps: f32,
    /// Layout of x and y.
    pub layout: Layout,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for UnmixTnsConfig {
    fn default() -> Self {
        UnmixTnsConfig {
            k: 16,
            momentum_bn: 0.1,
            temperature: 0.07,
            eps: 1e-5,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

impl UnmixTns {
    /// `k` components (16 in the paper), `momentum_bn` 0.1, `temperature` 0.07, eps 1e-5.
    pub fn new(ctx: &Context, cfg: UnmixTnsConfig) -> Result<UnmixTns> {
        let UnmixTnsConfig {
            k,
            momentum_bn,
            temperature,
            eps,
            layout,
            dtype,
        } = cfg;
        if k == 0 || !(0.0..=1.0).contains(&momentum_bn) {
            return Err(Error::InvalidParameter {
                name: "k / momentum_bn",
                value: format!("{k} / {momentum_bn}"),
                why: "need k >= 1 and momentum_bn in [0, 1]",
            });
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::InvalidParameter {
                name: "temperature",
                value: temperature.to_string(),
                why: "the softmax temperature must be positive and finite",
            });
        }
        wgnorm_core::check_eps(eps)?;
        Ok(UnmixTns {
            k,
            eps,
            momentum_bn,
            temperature,
            engine: InstanceMix::new(ctx, layout, dtype)?,
        })
    }

    /// The update rate M for a test batch of `n` samples.
    pub fn momentum(&self, n: usize) -> f32 {
        (1.0 - (1.0 - self.momentum_bn as f64).powf(n as f64 / 64.0)) as f32
    }

    /// The seeded initial components from the source statistics `[C]` (docs/methods.md A12):
    /// `mu_k = mu_s + sqrt(alpha K / (K - 1)) sigma_s eps_k`, `var_k = (1 - alpha) var_s`, eps ~
    /// N(0, 1) from `seed` (Box-Muller over a xorshift stream: reproducible, not PyTorch's
    /// generator); K = 1 uses the source statistics (alpha = 0). Host-side, done once: upload
    /// the result as the state.
    pub fn init_components(
        source_mean: &[f32],
        source_var: &[f32],
        k: usize,
        alpha: f32,
        seed: u64,
    ) -> (Vec<f32>, Vec<f32>) {
        let c = source_mean.len();
        let alpha = if k == 1 { 0.0 } else { alpha as f64 };
        let spread = if k > 1 {
            (alpha * k as f64 / (k as f64 - 1.0)).sqrt()
        } else {
            0.0
        };
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut uniform = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut mean = Vec::with_capacity(k * c);
        let mut var = Vec::with_capacity(k * c);
        for _ in 0..k {
            for ch in 0..c {
                let (u1, u2) = (uniform(), uniform());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let sd = (source_var[ch] as f64).max(0.0).sqrt();
                mean.push((source_mean[ch] as f64 + spread * sd * z) as f32);
                var.push(((1.0 - alpha) * source_var[ch] as f64) as f32);
            }
        }
        (mean, var)
    }

    /// Records one test-time step: reduce, mix (assignment, mixed statistics, component update)
    /// and apply.
    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        inputs: &UnmixTnsInputs,
        y: &Tensor,
    ) -> Result<()> {
        let view = self.engine.view(inputs.x)?;
        let (n, c, k) = (view.p, view.r, self.k);
        expect_f32("component_mean", Some(inputs.component_mean), k * c)?;
        expect_f32("component_var", Some(inputs.component_var), k * c)?;
        let wg = MIX_WG as usize;
        let lane_iterations = (n * k).div_ceil(wg) * c
            + n * k
            + (n * c).div_ceil(wg) * 2 * k
            + (k * c).div_ceil(wg) * n;
        let mixer = Mixer {
            spec: unmix_spec(),
            params: UnmixParams {
                n: n as u32,
                c: c as u32,
                k: k as u32,
                eps: self.eps,
                momentum: self.momentum(n),
                temperature: self.temperature,
                ..Default::default()
            },
            epilogue: Epilogue::AFFINE,
            per_sample: k,
            dispatch: MixDispatch::OneWorkgroup,
            lane_iterations: lane_iterations as u64,
        };
        let tensors = MixTensors {
            x: inputs.x,
            y,
            weight: inputs.weight,
            bias: inputs.bias,
            aux: None,
            state_a: Some(inputs.component_mean),
            state_b: Some(inputs.component_var),
            per_sample_input: None,
        };
        self.engine.encode(enc, &tensors, &mixer)
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &UnmixTnsInputs) -> Result<Tensor> {
        let ctx = self.engine.context();
        let y = ctx.empty(inputs.x.shape(), self.engine.dtype())?;
        ctx.record_and_submit(|enc| self.encode(enc, inputs, &y))?;
        Ok(y)
    }
}

/// What [`AdaB2nTaskWeighted::new`] takes; `Default` gives the usual defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaB2nConfig {
    /// Added to the weighted variance inside the square root.
    pub eps: f32,
    /// Layout of x and y.
    pub layout: Layout,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for AdaB2nConfig {
    fn default() -> Self {
        AdaB2nConfig {
            eps: 1e-5,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

/// AdaB²N training with task-weighted batch statistics (Lyu et al.; docs/methods.md A10, official
/// `adab2n.py`, the `cur_task > 0` branch). Each sample n of task t weighs
/// `w_n = p_t / count_t`, `p_t = (exp(theta_t) + count_t) / sum_t'(exp(theta_t') + count_t')`
/// over the T tasks of `theta` (a learnable f32 `[T]` on the GPU); `mean = sum_n w_n mean_hw(x_n)`,
/// `var = sum_n w_n mean_hw((x_n - mean)^2)`; `y = weight (x - mean)/sqrt(var + eps) + bias`;
/// `rm += eta (mean - rm)`, `rv = (1 - eta) rv + eta var` (biased), eta from
/// [`crate::adab2n_momentum`]. Without task weights (first task) and at inference AdaB²N is
/// [`crate::BatchNorm`] with `encode_train_with` / `encode`.
pub struct AdaB2nTaskWeighted {
    eps: f32,
    engine: InstanceMix,
}

/// Tensors of a task-weighted AdaB²N step. `task_ids`: f32 `[N]` with integers in `[0, T)`
/// (values outside are clamped into it on the GPU: the host cannot check GPU data without a
/// readback); it must be a buffer of its own, as it is bound where UnMix-TNS writes.
#[derive(Clone, Copy, Debug)]
pub struct AdaB2nInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Scale (gamma) applied after normalizing.
    pub weight: &'a Tensor,
    /// Shift (beta) added after the scale.
    pub bias: &'a Tensor,
    /// Running mean (f32, one per channel): read at inference, updated in training.
    pub running_mean: &'a Tensor,
    /// Running variance (f32, one per channel): read at inference, updated in training.
    pub running_var: &'a Tensor,
    /// The learnable task logits theta, f32 `[T]`.
    pub theta: &'a Tensor,
    /// The task of each sample, f32 `[N]` holding integers in `[0, T)`.
    pub task_ids: &'a Tensor,
}

impl AdaB2nTaskWeighted {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: AdaB2nConfig) -> Result<Self> {
        let AdaB2nConfig { eps, layout, dtype } = cfg;
        wgnorm_core::check_eps(eps)?;
        Ok(AdaB2nTaskWeighted {
            eps,
            engine: InstanceMix::new(ctx, layout, dtype)?,
        })
    }

    /// Records one training step with this step's `eta`.
    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        inputs: &AdaB2nInputs,
        y: &Tensor,
        eta: f32,
    ) -> Result<()> {
        let view = self.engine.view(inputs.x)?;
        let (n, c) = (view.p, view.r);
        let tasks = inputs.theta.numel();
        if tasks == 0 {
            return Err(Error::InvalidParameter {
                name: "theta",
                value: "0 tasks".into(),
                why: "need at least one task",
            });
        }
        check_momentum(eta)?;
        expect_f32("theta", Some(inputs.theta), tasks)?;
        expect_f32("task_ids", Some(inputs.task_ids), n)?;
        expect_f32("running_mean", Some(inputs.running_mean), c)?;
        expect_f32("running_var", Some(inputs.running_var), c)?;
        let mixer = Mixer {
            spec: adab2n_spec(),
            params: AdaB2nParams {
                n: n as u32,
                c: c as u32,
                tasks: tasks as u32,
                eps: self.eps,
                momentum: eta,
                ..Default::default()
            },
            epilogue: Epilogue::AFFINE,
            per_sample: 1,
            dispatch: MixDispatch::PerChannel,
            lane_iterations: (3 * n * (n + 1) + tasks * (n + 1)) as u64,
        };
        let tensors = MixTensors {
            x: inputs.x,
            y,
            weight: inputs.weight,
            bias: inputs.bias,
            aux: Some(inputs.theta),
            state_a: Some(inputs.running_mean),
            state_b: Some(inputs.running_var),
            per_sample_input: Some(inputs.task_ids),
        };
        self.engine.encode(enc, &tensors, &mixer)
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &AdaB2nInputs, eta: f32) -> Result<Tensor> {
        let ctx = self.engine.context();
        let y = ctx.empty(inputs.x.shape(), self.engine.dtype())?;
        ctx.record_and_submit(|enc| self.encode(enc, inputs, &y, eta))?;
        Ok(y)
    }
}
