//! EvoNorm-B0 (Liu et al. 2020; docs/methods.md A14): the forward on the instance-statistics
//! engine (its mixing kernel `batch_norm/evonorm_b0.wgsl` and the max-denominator epilogue) and
//! its backward (`batch_norm/evonorm_b0_grad.wgsl`, see `evonorm_b0_grad.rs`).

use wgnorm_core::binding::BindCache;
use wgnorm_core::chnorm::{Epilogue, EpilogueInput, Layout};
use wgnorm_core::instmix::{
    expect_f32, InstanceMix, MixDispatch, MixTensors, Mixer, MIX_COMMON, MIX_WG,
};
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Mode, Result, Tensor};

use crate::instance::{check_batch_spread, check_momentum, mix_kernel, per_channel_iterations};

/// EvoNorm-B0's mixing kernel.
pub const EVONORM_B0_KERNEL: Kernel = mix_kernel(
    "batch_norm/evonorm_b0",
    &[
        MIX_COMMON[0],
        MIX_COMMON[1],
        MIX_COMMON[2],
        wgnorm_core::shader_file!("batch_norm/evonorm_b0.wgsl"),
    ],
);
/// EvoNorm-B0's apply epilogue: `y = x / max(a, v x + b) * weight + bias` from five coefficient
/// arrays per sample written by its mixing kernel.
pub const MAX_DENOMINATOR: Epilogue = Epilogue::new(
    "channel_norm/apply+max_denominator",
    &[
        wgnorm_core::shader::snippet::ACTIVATION,
        wgnorm_core::shader::snippet::CHANNEL_COMMON,
        wgnorm_core::shader_file!("batch_norm/epilogue_max_denominator.wgsl"),
        wgnorm_core::chnorm::plan::APPLY_BODY,
    ],
    5,
    EpilogueInput::None,
);

wgnorm_core::uniform_block! {
    /// `EvoB0Params` (`batch_norm/evonorm_b0.wgsl`).
    pub struct EvoB0Params {
        pub n: u32,
        pub c: u32,
        pub eps: f32,
        pub momentum: f32,
    }
}

pub(crate) fn mix_spec(training: bool, unbiased: bool) -> Specialization {
    Specialization::new(EVONORM_B0_KERNEL, Io::F32)
        .set("WG", MIX_WG)
        .flag("TRAINING", training)
        .flag("UNBIASED_RUNNING", unbiased)
}

/// Running-variance convention of EvoNorm-B0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EvoRunningVar {
    /// timm: momentum update with the unbiased batch variance (the default here).
    #[default]
    TimmUnbiased,
    /// TensorFlow (tpu `resnet_model.py`): decay 0.9 (momentum 0.1) with the biased variance.
    TfBiased,
}

/// EvoNorm-B0 (Liu et al. 2020; docs/methods.md A14):
/// `y = x / max(sqrt(var_B + eps), v * x + sqrt(var_I + eps)) * weight + bias`, var_B per channel
/// over (N, spatial) (batch in training, `running_var` in inference), var_I per (sample, channel),
/// both biased; `v`, `weight`, `bias`, `running_var` f32 `[C]`. eps 1e-5 (TF) or 1e-3 (timm).
pub struct EvoNormB0 {
    pub(crate) eps: f32,
    momentum: f32,
    running: EvoRunningVar,
    pub(crate) layout: Layout,
    pub(crate) engine: InstanceMix,
    /// The backward's bind groups, scratch and parameter-gradient sink.
    pub(crate) grad_binds: BindCache,
    pub(crate) grad_scratch: ScratchCache,
}

/// Tensors of an EvoNorm-B0 call.
#[derive(Clone, Copy, Debug)]
pub struct EvoNormB0Inputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Scale (gamma) applied after normalizing.
    pub weight: &'a Tensor,
    /// Shift (beta) added after the scale.
    pub bias: &'a Tensor,
    /// The per-channel `v` of the denominator's `v x` term, f32 `[C]`.
    pub v: &'a Tensor,
    /// Running variance (f32, one per channel): read at inference, updated in training.
    pub running_var: &'a Tensor,
}

/// What [`EvoNormB0::new`] takes; `Default` gives the paper's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvoNormB0Config {
    /// Added inside both square roots: 1e-5 (TF) or 1e-3 (timm).
    pub eps: f32,
    /// Running-variance momentum (PyTorch convention; TF decay 0.9 is 0.1).
    pub momentum: f32,
    /// Which variance feeds the running one.
    pub running: EvoRunningVar,
    /// Layout of x and y.
    pub layout: Layout,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for EvoNormB0Config {
    fn default() -> Self {
        EvoNormB0Config {
            eps: 1e-5,
            momentum: 0.1,
            running: EvoRunningVar::TimmUnbiased,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

impl EvoNormB0 {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: EvoNormB0Config) -> Result<EvoNormB0> {
        let EvoNormB0Config {
            eps,
            momentum,
            running,
            layout,
            dtype,
        } = cfg;
        wgnorm_core::check_eps(eps)?;
        check_momentum(momentum)?;
        Ok(EvoNormB0 {
            eps,
            momentum,
            running,
            layout,
            engine: InstanceMix::new(ctx, layout, dtype)?,
            grad_binds: BindCache::default(),
            grad_scratch: ScratchCache::default(),
        })
    }

    /// Records reduce, mix and apply; training also updates `running_var`.
    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        inputs: &EvoNormB0Inputs,
        y: &Tensor,
        mode: Mode,
    ) -> Result<()> {
        let training = mode.is_train();
        let view = self.engine.view(inputs.x)?;
        let (n, c) = (view.p, view.r);
        check_batch_spread(
            &view,
            training && self.running == EvoRunningVar::TimmUnbiased,
        )?;
        expect_f32("v", Some(inputs.v), c)?;
        expect_f32("running_var", Some(inputs.running_var), c)?;
        let mixer = Mixer {
            spec: mix_spec(training, self.running == EvoRunningVar::TimmUnbiased),
            params: EvoB0Params {
                n: n as u32,
                c: c as u32,
                eps: self.eps,
                momentum: self.momentum,
            },
            epilogue: MAX_DENOMINATOR,
            per_sample: 1,
            dispatch: MixDispatch::PerChannel,
            lane_iterations: per_channel_iterations(n),
        };
        let tensors = MixTensors {
            x: inputs.x,
            y,
            weight: inputs.weight,
            bias: inputs.bias,
            aux: Some(inputs.v),
            state_a: Some(inputs.running_var),
            state_b: None,
            per_sample_input: None,
        };
        self.engine.encode(enc, &tensors, &mixer)
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, inputs: &EvoNormB0Inputs, mode: Mode) -> Result<Tensor> {
        let ctx = self.engine.context();
        let y = ctx.empty(inputs.x.shape(), self.engine.dtype())?;
        ctx.record_and_submit(|enc| self.encode(enc, inputs, &y, mode))?;
        Ok(y)
    }
}
