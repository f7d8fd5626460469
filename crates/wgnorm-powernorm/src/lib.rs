//! PowerNorm (Shen et al. 2020; docs/methods.md B2, official fairseq `mask_powernorm.py`) on token
//! tensors `x[T, B, C]` with an optional padding mask `[B, T]` (f32, 1 = padding).
//!
//! 1. GroupScaling1D: per token and group of `C / group_num` channels,
//!    `x <- x / sqrt(mean_group(x^2) + 1e-5)` (training and inference).
//! 2. The batch quadratic mean `psi2[c]` of the scaled x over the non-padded tokens (no centring;
//!    padded tokens are still normalized). A batch of padding only gives `psi2 = 0`.
//! 3. Training step t (the counter after this step's increment): t <= warmup normalizes with
//!    `sqrt(psi2 + eps)`, later steps with `sqrt(phi + eps)`, phi the running value **before** this
//!    step's update. Then phi (init 1) is updated on the GPU: for t < warmup first
//!    `phi <- phi (t-1)/t + psi2 / t`, then always `phi <- alpha_fwd phi + (1 - alpha_fwd) psi2`.
//! 4. `y = weight * z + bias`. Inference normalizes with phi.
//!
//! The approximate backward pass of the paper is [`PowerNorm::encode_backward`] (module `grad`).

#![deny(missing_docs)]

mod grad;
mod sinkhorn;
mod unified_grad;
pub use grad::{
    grad_specializations, PowerGradParams, PowerNormGradInputs, PowerNormGradOutputs,
    GRAD_DX_KERNEL, GRAD_FINALIZE_KERNEL, GRAD_PARTIALS_KERNEL,
};
pub use sinkhorn::{SinkhornConfig, SinkhornNormalize};
pub use unified_grad::{
    UnifiedGradParams, UnifiedNormGradInputs, UnifiedNormGradOutputs, UNIFIED_GRAD_FINALIZE_KERNEL,
};

use wgnorm_core::chnorm::{
    ChannelNorm, ChannelNormArgs, ChannelView, Epilogue, QmUpdate, Reduction, Statistics,
};
use wgnorm_core::instmix::{
    expect_f32, InstanceMix, MixDispatch, MixTensors, Mixer, MIX_COMMON, MIX_SLOTS, MIX_WG,
};
use wgnorm_core::rownorm::{RowMode, RowNorm, RowNormArgs, RowNormConfig};
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Error, Result, Tensor};

/// What is fixed when a PowerNorm is created.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerNormConfig {
    /// Added to psi2 / phi inside the square root. Default 1e-5.
    pub eps: f32,
    /// Weight of the old running value, default 0.9 (the paper's alpha_fwd).
    pub alpha_fwd: f32,
    /// Steps that normalize with the batch statistic and average phi cumulatively. Default 10000.
    pub warmup_iters: u64,
    /// GroupScaling groups (fairseq passes the head count). Must divide C. Default 1.
    pub group_num: usize,
    /// Storage type of x and y (arithmetic is f32).
    pub dtype: DType,
}

impl Default for PowerNormConfig {
    fn default() -> Self {
        PowerNormConfig {
            eps: 1e-5,
            alpha_fwd: 0.9,
            warmup_iters: 10_000,
            group_num: 1,
            dtype: DType::F32,
        }
    }
}

/// Inputs: `x[T, B, C]`, optional `pad_mask[B, T]` (f32, 1 = padding), f32 `weight`/`bias` `[C]`,
/// and the running value `running_phi` (f32 `[C]`, updated in place in training).
#[derive(Clone, Copy, Debug)]
pub struct PowerNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Token padding mask (f32, 1 = padding): padded tokens are left out of the statistics.
    pub pad_mask: Option<&'a Tensor>,
    /// Scale (gamma) applied after normalizing; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Shift (beta) added after the scale; `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// The running quadratic mean φ (f32 `[C]`): read after warm-up, updated in training.
    pub running_phi: &'a Tensor,
}

/// A PowerNorm bound to a device.
pub struct PowerNorm {
    cfg: PowerNormConfig,
    scaling: RowNorm,
    engine: ChannelNorm,
    /// Group-scaled x, one tensor per input shape.
    scaled: ScratchCache,
    /// The backward through the GroupScaling (an RMSNorm per token group).
    scaling_grad: wgnorm_core::rowgrad::RowGrad,
    grad: grad::GradState,
}

impl PowerNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: PowerNormConfig) -> Result<PowerNorm> {
        wgnorm_core::check_unit_interval("alpha_fwd", cfg.alpha_fwd)?;
        if cfg.group_num == 0 {
            return Err(Error::InvalidParameter {
                name: "group_num",
                value: "0".into(),
                why: "must be >= 1",
            });
        }
        let scaling = RowNorm::new(ctx, RowNormConfig::last_axis(RowMode::RmsNorm, cfg.dtype))?;
        let engine = ChannelNorm::new(ctx, cfg.eps, cfg.dtype, Default::default())?
            .with_reduction(Reduction::QuadraticMean);
        let scaling_grad = wgnorm_core::rowgrad::RowGrad::new(
            ctx,
            wgnorm_core::rowgrad::RowGradConfig {
                mode: RowMode::RmsNorm,
                axis: -1,
                eps: 1e-5,
                weight_offset: 0.0,
                dtype: cfg.dtype,
                unbiased: false,
                eps_outside: false,
            },
        )?;
        Ok(PowerNorm {
            cfg,
            scaling,
            engine,
            scaled: ScratchCache::default(),
            scaling_grad,
            grad: Default::default(),
        })
    }

    /// Records a training step; `step` is the iteration counter after this step's increment.
    pub fn encode_train(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &PowerNormInputs,
        y: &Tensor,
        step: u64,
    ) -> Result<()> {
        self.encode_train_with(encoder, inputs, y, step, None)
    }

    /// [`PowerNorm::encode_train`] that also writes, per channel, the pair `(0, 1 / sqrt(v +
    /// eps))` of the statistic `v` this step normalized with (f32 `[C, 2]`): what
    /// [`PowerNorm::encode_backward`] needs.
    pub fn encode_train_saving(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &PowerNormInputs,
        y: &Tensor,
        step: u64,
        saved: &Tensor,
    ) -> Result<()> {
        self.encode_train_with(encoder, inputs, y, step, Some(saved))
    }

    fn encode_train_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &PowerNormInputs,
        y: &Tensor,
        step: u64,
        saved: Option<&Tensor>,
    ) -> Result<()> {
        if step == 0 {
            return Err(Error::InvalidParameter {
                name: "step",
                value: "0".into(),
                why: "the step counter starts at 1",
            });
        }
        let warmup = self.cfg.warmup_iters;
        let statistics = Statistics::QuadraticMean {
            use_running: step > warmup,
            update: Some(QmUpdate {
                momentum: 1.0 - self.cfg.alpha_fwd,
                warm: if step < warmup {
                    1.0 / step as f32
                } else {
                    0.0
                },
            }),
        };
        self.encode_with(encoder, inputs, y, statistics, saved)
    }

    /// Records inference: GroupScaling, then `weight * x / sqrt(phi + eps) + bias`.
    pub fn encode_infer(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &PowerNormInputs,
        y: &Tensor,
    ) -> Result<()> {
        self.encode_with(encoder, inputs, y, Statistics::Running, None)
    }

    fn encode_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &PowerNormInputs,
        y: &Tensor,
        statistics: Statistics,
        saved: Option<&Tensor>,
    ) -> Result<()> {
        let shape = inputs.x.shape();
        if shape.len() != 3 {
            return Err(Error::ShapeMismatch {
                what: "power_norm x [T, B, C]".into(),
                expected: vec![0, 0, 0],
                got: shape.to_vec(),
            });
        }
        let mut inputs_named = vec![("x", inputs.x), ("running_phi", inputs.running_phi)];
        inputs_named.extend(inputs.pad_mask.map(|m| ("pad_mask", m)));
        wgnorm_core::binding::check_output_distinct(("y", y), &inputs_named)?;
        let (t, b, c) = (shape[0], shape[1], shape[2]);
        let g = self.cfg.group_num;
        if c % g != 0 {
            return Err(Error::InvalidParameter {
                name: "group_num",
                value: g.to_string(),
                why: "must divide the channel count",
            });
        }
        if let Some(m) = inputs.pad_mask {
            if m.shape() != [b, t] {
                return Err(Error::ShapeMismatch {
                    what: "pad_mask [B, T]".into(),
                    expected: vec![b, t],
                    got: m.shape().to_vec(),
                });
            }
        }
        let scaled = self
            .scaled
            .get(self.engine.context(), shape, shape, self.cfg.dtype)?;
        let view = ChannelView {
            p: 1,
            q: t * b,
            r: c,
            s: 1,
            cg: 1,
            sdiv: 1,
        };
        let args = ChannelNormArgs {
            weight: inputs.weight,
            bias: inputs.bias,
            running_var: Some(inputs.running_phi),
            statistics,
            mask: inputs.pad_mask,
            stats: saved,
            ..ChannelNormArgs::new(&scaled, y, view)
        };
        // The second pass is checked before the first is recorded.
        self.engine.check_args(&args)?;
        let rows = [t * b * g, c / g];
        self.scaling.encode(
            encoder,
            &RowNormArgs {
                x: &inputs.x.reshape(&rows)?,
                weight: None,
                bias: None,
                y: &scaled.reshape(&rows)?,
                mean: None,
                rstd: None,
                residual: None,
                sum: None,
            },
        )?;
        self.engine.encode(encoder, &args)
    }
}

/// What [`UnifiedNorm::new`] takes; `Default` gives the usual defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnifiedNormConfig {
    /// Added to the variance inside the square root.
    pub eps: f32,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for UnifiedNormConfig {
    fn default() -> Self {
        UnifiedNormConfig {
            eps: 1e-5,
            dtype: DType::F32,
        }
    }
}

/// Unified Normalization (Yang et al. 2022; docs/methods.md B3, official `unified_normalization.py`)
/// on `x[B, N, C]`.
///
/// Inference: `y = weight * x / sqrt(running_var + eps) + bias` (the folded per-channel scale).
///
/// Training step t (the counter after this step's increment, from 1), all on the GPU:
/// 1. `q[c]` = mean of x^2 over the unpadded tokens (0 for a batch of padding only);
/// 2. `r` = unbiased variance of `sqrt(window)` over all `M x C` entries, before this step;
/// 3. `window[t mod M] = q`;
/// 4. with filtration, once `t >= warmup` and the window is full (`t >= M`: the log of its
///    initial zeros is -inf, a convention of ours where the paper is silent): per channel the
///    window's arithmetic mean `am` and geometric mean `gm`; if any channel has
///    `am - gm > r * M`, `window[t mod M]` is overwritten by `running_var` and the step is an
///    outlier;
/// 5. `sigma^2 = q` when `t <= M`, `t < warmup` or an outlier, else `gm`;
/// 6. `y = weight * x / sqrt(sigma^2 + eps) + bias`;
/// 7. `running_var = (1 - momentum) running_var + momentum sigma^2` (decay 0.9).
///
/// The window (f32 `[M, C]`, zeros at the start) and `running_var` (f32 `[C]`, ones) are yours
/// to keep between steps; both update in place.
pub struct UnifiedNorm {
    eps: f32,
    engine: ChannelNorm,
    mix: InstanceMix,
    train: UnifiedTraining,
    /// The backward's caches (`unified_grad.rs`).
    grad: unified_grad::GradCaches,
}

/// Unified Normalization's training kernel (one workgroup: window, filtration, coefficients).
pub const UNIFIED_KERNEL: Kernel = Kernel::new(
    "power_norm/unified",
    &[
        MIX_COMMON[0],
        MIX_COMMON[1],
        MIX_COMMON[2],
        wgnorm_core::shader_file!("power_norm/unified.wgsl"),
    ],
    MIX_SLOTS,
);

wgnorm_core::uniform_block! {
    /// `UnifiedParams` (`power_norm/unified.wgsl`).
    pub struct UnifiedParams {
        pub n: u32,
        pub c: u32,
        /// The step t (>= 1).
        pub step: u32,
        /// The window M.
        pub window: u32,
        pub eps: f32,
        pub momentum: f32,
        /// Warm-up steps.
        pub warmup: u32,
        pub _pad0: u32,
    }
}

fn unified_spec(filter: bool, save: bool) -> Specialization {
    Specialization::new(UNIFIED_KERNEL, Io::F32)
        .set("WG", MIX_WG)
        .flag("FILTER", filter)
        .flag("SAVE", save)
}

/// Unified Normalization's training pipelines (and its backward's), for `cargo xtask validate`.
pub fn unified_specializations() -> Vec<Specialization> {
    let mut out: Vec<Specialization> = [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .map(|(f, s)| unified_spec(f, s))
        .collect();
    out.extend(unified_grad::grad_specializations());
    out
}

/// Tensors of a [`UnifiedNorm`] call.
#[derive(Clone, Copy, Debug)]
pub struct UnifiedNormInputs<'a> {
    /// Input `x[B, N, C]` (tokens), row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// Token padding mask (f32 `[B, N]`, 1 = padding): padded tokens are left out of the
    /// statistics (training).
    pub pad_mask: Option<&'a Tensor>,
    /// Scale (f32 `[C]`); required in training, `None` in inference: 1.
    pub weight: Option<&'a Tensor>,
    /// Shift (f32 `[C]`); required in training, `None` in inference: 0.
    pub bias: Option<&'a Tensor>,
    /// The running variance (f32 `[C]`, ones at the start): read in inference, updated in
    /// training.
    pub running_var: &'a Tensor,
    /// The window of quadratic means (f32 `[M, C]`, zeros at the start); required in training,
    /// where it is updated.
    pub window: Option<&'a Tensor>,
}

/// Training settings of [`UnifiedNorm`] (the official defaults: window 4, warm-up 4000,
/// filtration off for NLP and on for CV, decay 0.9).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnifiedTraining {
    /// Steps M of quadratic means the window keeps.
    pub window: usize,
    /// Steps before the window's geometric mean (and filtration) is used.
    pub warmup: u64,
    /// Outlier filtration on.
    pub filter: bool,
    /// Running-statistics momentum, PyTorch convention (weight of the new value).
    pub momentum: f32,
}

impl Default for UnifiedTraining {
    fn default() -> Self {
        UnifiedTraining {
            window: 4,
            warmup: 4000,
            filter: false,
            momentum: 0.1,
        }
    }
}

impl UnifiedNorm {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: UnifiedNormConfig) -> Result<UnifiedNorm> {
        let UnifiedNormConfig { eps, dtype } = cfg;
        Ok(UnifiedNorm {
            eps,
            engine: ChannelNorm::new(ctx, eps, dtype, Default::default())?
                .with_reduction(Reduction::QuadraticMean),
            mix: InstanceMix::new(ctx, wgnorm_core::chnorm::Layout::Nchw, dtype)?,
            train: UnifiedTraining::default(),
            grad: Default::default(),
        })
    }

    /// Training settings (defaults: [`UnifiedTraining::default`]).
    pub fn with_training(mut self, train: UnifiedTraining) -> UnifiedNorm {
        self.train = train;
        self
    }

    /// Records training step `step` (>= 1): `weight`, `bias` and `window` are required, and
    /// `window` and `running_var` are updated on the GPU.
    pub fn encode_train(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &UnifiedNormInputs,
        y: &Tensor,
        step: u64,
    ) -> Result<()> {
        self.encode_train_with(encoder, inputs, y, step, None)
    }

    /// [`UnifiedNorm::encode_train`], also saving what the backward needs into `saved`.
    fn encode_train_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &UnifiedNormInputs,
        y: &Tensor,
        step: u64,
        saved: Option<&Tensor>,
    ) -> Result<()> {
        let UnifiedNormInputs {
            x,
            pad_mask,
            running_var,
            ..
        } = *inputs;
        let (Some(weight), Some(bias), Some(window)) = (inputs.weight, inputs.bias, inputs.window)
        else {
            return Err(Error::InvalidParameter {
                name: "weight / bias / window",
                value: "None".into(),
                why: "training needs all three: pass them",
            });
        };
        let view = token_view(x)?;
        if let Some(m) = pad_mask {
            if m.numel() != view.q || m.shape().len() != 2 || m.shape()[0] != x.shape()[0] {
                return Err(Error::ShapeMismatch {
                    what: "pad_mask [B, N] (f32, 1 = padding)".into(),
                    expected: x.shape()[..2].to_vec(),
                    got: m.shape().to_vec(),
                });
            }
        }
        let t = self.train;
        let c = view.r;
        if t.window == 0 || step == 0 {
            return Err(Error::InvalidParameter {
                name: "window / step",
                value: format!("{} / {step}", t.window),
                why: "the window holds at least one step and steps count from 1",
            });
        }
        wgnorm_core::check_unit_interval("momentum", t.momentum)?;
        expect_f32("window", Some(window), t.window * c)?;
        expect_f32("running_var", Some(running_var), c)?;
        if let Some(saved) = saved {
            saved.expect_dtype("saved", DType::F32)?;
            saved.expect_shape("saved", &[c, 2])?;
        }
        let u = |name, v: u64| {
            u32::try_from(v).map_err(|_| Error::InvalidParameter {
                name,
                value: v.to_string(),
                why: "exceeds 2^32 - 1",
            })
        };
        let wg = MIX_WG as usize;
        let mixer = Mixer {
            spec: unified_spec(t.filter, saved.is_some()),
            params: UnifiedParams {
                n: 1,
                c: c as u32,
                step: u("step", step)?,
                window: t.window as u32,
                eps: self.eps,
                momentum: t.momentum,
                warmup: u("warmup", t.warmup)?,
                _pad0: 0,
            },
            epilogue: Epilogue::AFFINE,
            per_sample: 1,
            dispatch: MixDispatch::OneWorkgroup,
            lane_iterations: (2 * (t.window * c).div_ceil(wg) + 3 * c.div_ceil(wg) * t.window)
                as u64,
        };
        let tensors = MixTensors {
            x,
            y,
            weight,
            bias,
            aux: None,
            state_a: Some(window),
            state_b: Some(running_var),
            per_sample_input: saved,
        };
        let engine = &self.engine;
        self.mix
            .encode_view(encoder, &tensors, &mixer, view, |enc, moments| {
                engine.encode_reduce_masked(enc, x, view, pad_mask, moments)
            })
    }

    /// Records inference: the running variance normalizes, `weight`/`bias` are optional,
    /// `pad_mask` and `window` are not read.
    pub fn encode_infer(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &UnifiedNormInputs,
        y: &Tensor,
    ) -> Result<()> {
        let UnifiedNormInputs {
            x,
            weight,
            bias,
            running_var,
            ..
        } = *inputs;
        let view = token_view(x)?;
        self.engine.encode(
            encoder,
            &ChannelNormArgs {
                weight,
                bias,
                running_var: Some(running_var),
                statistics: Statistics::Running,
                ..ChannelNormArgs::new(x, y, view)
            },
        )
    }
}

/// `x[B, N, C]` as tokens: `[1, B*N, C, 1]`.
fn token_view(x: &Tensor) -> Result<ChannelView> {
    let shape = x.shape();
    if shape.len() != 3 {
        return Err(Error::ShapeMismatch {
            what: "unified_norm x [B, N, C]".into(),
            expected: vec![0, 0, 0],
            got: shape.to_vec(),
        });
    }
    Ok(ChannelView {
        p: 1,
        q: shape[0] * shape[1],
        r: shape[2],
        s: 1,
        cg: 1,
        sdiv: 1,
    })
}
