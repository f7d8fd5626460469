//! Folding an inference BatchNorm into the layer before it: on the GPU
//! ([`BatchNorm::encode_fold`]) or on the host ([`fold_batch_norm`], and RepBN's affine map
//! [`fold_rep_batch_norm`]).

use wgnorm_core::binding;
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Error, Result, Slot, Tensor};

use crate::BatchNorm;

wgnorm_core::uniform_block! {
    /// `FoldParams` (`batch_norm/fold.wgsl`): folding an inference BatchNorm into the `[o, k]`
    /// weight (and `[o]` bias) of the layer before it.
    pub struct FoldParams {
        pub o: u32,
        pub k: u32,
        pub eps: f32,
        pub _pad: u32,
    }
}

const FOLD_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // weight
    Slot::Read,      // bias
    Slot::Read,      // gamma
    Slot::Read,      // beta
    Slot::Read,      // running_mean
    Slot::Read,      // running_var
    Slot::ReadWrite, // weight_out
    Slot::ReadWrite, // bias_out
];

/// Folds an inference BatchNorm into the preceding layer's weight and bias.
pub const FOLD_KERNEL: Kernel = Kernel::new(
    "batch_norm/fold",
    &[wgnorm_core::shader_file!("batch_norm/fold.wgsl")],
    FOLD_SLOTS,
);

fn fold_spec(has_bias: bool, has_gamma: bool, has_beta: bool) -> Specialization {
    Specialization::new(FOLD_KERNEL, Io::F32)
        .set("WG", 256)
        .flag("HAS_BIAS", has_bias)
        .flag("HAS_GAMMA", has_gamma)
        .flag("HAS_BETA", has_beta)
}

/// The fold pipelines, for `cargo xtask validate`.
pub fn fold_specializations() -> Vec<Specialization> {
    (0..8u32)
        .map(|b| fold_spec(b & 1 != 0, b & 2 != 0, b & 4 != 0))
        .collect()
}

/// Tensors of [`BatchNorm::encode_fold`]: the layer's `weight` `[O, ..]` and optional `bias`,
/// the BatchNorm's optional `gamma`/`beta` and its running statistics; outputs `weight_out`
/// (shape of `weight`) and `bias_out` `[O]`. All f32.
#[derive(Clone, Copy, Debug)]
pub struct FoldArgs<'a> {
    /// The preceding layer's weight `[O, ..]`.
    pub weight: &'a Tensor,
    /// The preceding layer's bias `[O]`; `None`: 0.
    pub bias: Option<&'a Tensor>,
    /// The BatchNorm's scale `[O]`; `None`: 1.
    pub gamma: Option<&'a Tensor>,
    /// The BatchNorm's shift `[O]`; `None`: 0.
    pub beta: Option<&'a Tensor>,
    /// The BatchNorm's running mean `[O]` (read).
    pub running_mean: &'a Tensor,
    /// The BatchNorm's running variance `[O]` (read).
    pub running_var: &'a Tensor,
    /// Receives the folded weight (the shape of `weight`).
    pub weight_out: &'a Tensor,
    /// Receives the folded bias `[O]`.
    pub bias_out: &'a Tensor,
}

/// Inference RepBN (docs/methods.md A16) as a per-channel affine map, computed in f64:
/// `BN(x) + alpha x = x * scale + shift` with `scale = gamma / sqrt(rv + eps) + alpha`,
/// `shift = beta - gamma * rm / sqrt(rv + eps)` — what SLAB folds into the next linear layer.
/// Returns `(scale, shift)`, one value per channel.
pub fn fold_rep_batch_norm(
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    running_mean: &[f32],
    running_var: &[f32],
    alpha: f32,
    eps: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = running_mean.len();
    let lens = [
        gamma.map(|g| g.len()),
        beta.map(|b| b.len()),
        Some(running_var.len()),
    ];
    if lens.iter().flatten().any(|&l| l != c) {
        return Err(Error::ShapeMismatch {
            what: "fold_rep_batch_norm: gamma, beta, running_var like running_mean".into(),
            expected: vec![c],
            got: lens.iter().flatten().copied().collect(),
        });
    }
    let mut scale = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for i in 0..c {
        let g = gamma.map_or(1.0, |g| g[i] as f64);
        let inv = 1.0 / (running_var[i] as f64 + eps as f64).sqrt();
        scale.push((g * inv + alpha as f64) as f32);
        shift.push((beta.map_or(0.0, |b| b[i] as f64) - g * running_mean[i] as f64 * inv) as f32);
    }
    Ok((scale, shift))
}

/// Host-side folding of an inference BatchNorm into the preceding linear or convolution layer
/// (row-major `weight` `[O, K]`, K = the product of its other dims): returns `(W', b')` with
/// `W'[o, k] = W[o, k] * s[o]`, `b'[o] = (b[o] - running_mean[o]) * s[o] + beta[o]`,
/// `s = gamma / sqrt(running_var + eps)`, computed in f64. Then `linear(x; W', b')` equals
/// `BN(linear(x; W, b))` in inference.
#[allow(clippy::too_many_arguments)]
pub fn fold_batch_norm(
    weight: &[f32],
    bias: Option<&[f32]>,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let o = running_mean.len();
    let lens = [
        bias.map(|b| b.len()),
        gamma.map(|g| g.len()),
        beta.map(|b| b.len()),
        Some(running_var.len()),
    ];
    if o == 0 || !weight.len().is_multiple_of(o) || lens.iter().flatten().any(|&l| l != o) {
        return Err(Error::ShapeMismatch {
            what: "fold_batch_norm: weight [O, K] and vectors [O]".into(),
            expected: vec![o],
            got: vec![weight.len()],
        });
    }
    let k = weight.len() / o;
    let s: Vec<f64> = (0..o)
        .map(|i| gamma.map_or(1.0, |g| g[i] as f64) / (running_var[i] as f64 + eps as f64).sqrt())
        .collect();
    let w = weight
        .iter()
        .enumerate()
        .map(|(e, &v)| (v as f64 * s[e / k]) as f32)
        .collect();
    let b = (0..o)
        .map(|i| {
            ((bias.map_or(0.0, |b| b[i] as f64) - running_mean[i] as f64) * s[i]
                + beta.map_or(0.0, |b| b[i] as f64)) as f32
        })
        .collect();
    Ok((w, b))
}

/// The shapes and dtypes of a fold: `(O, K)` of the `[O, K]` weight.
fn check_fold(f: &FoldArgs) -> Result<(usize, usize)> {
    let o = f.running_mean.numel();
    let k = f.weight.numel().checked_div(o).unwrap_or(0);
    if f.weight.shape().first() != Some(&o) || f.weight.numel() != o * k {
        return Err(Error::ShapeMismatch {
            what: "fold weight [O, ..]".into(),
            expected: vec![o],
            got: f.weight.shape().to_vec(),
        });
    }
    let vecs = [
        ("bias", f.bias),
        ("gamma", f.gamma),
        ("beta", f.beta),
        ("running_mean", Some(f.running_mean)),
        ("running_var", Some(f.running_var)),
        ("bias_out", Some(f.bias_out)),
    ];
    for (what, t) in vecs.iter().filter_map(|(w, t)| t.map(|t| (w, t))) {
        if t.numel() != o || t.dtype() != DType::F32 {
            return Err(Error::ShapeMismatch {
                what: format!("fold {what} (f32, one per output channel)"),
                expected: vec![o],
                got: t.shape().to_vec(),
            });
        }
    }
    for (what, t) in [("weight", f.weight), ("weight_out", f.weight_out)] {
        if t.dtype() != DType::F32 {
            return Err(Error::DTypeMismatch {
                what: format!("fold {what}"),
                expected: DType::F32,
                got: t.dtype(),
            });
        }
    }
    if f.weight_out.shape() != f.weight.shape() {
        return Err(Error::ShapeMismatch {
            what: "fold weight_out".into(),
            expected: f.weight.shape().to_vec(),
            got: f.weight_out.shape().to_vec(),
        });
    }
    Ok((o, k))
}

impl BatchNorm {
    /// Folds this BatchNorm (inference form, `eps` from the config) into the preceding linear or
    /// convolution layer on the GPU: `W'[o, ..] = W[o, ..] * s[o]`,
    /// `b'[o] = (b[o] - running_mean[o]) * s[o] + beta[o]`, `s = gamma / sqrt(running_var + eps)`.
    /// `W` is f32 `[O, ..]` with O = C of this BatchNorm; all vectors f32 `[O]`.
    pub fn encode_fold(&self, encoder: &mut wgpu::CommandEncoder, f: &FoldArgs) -> Result<()> {
        let (o, k) = check_fold(f)?;
        if o * k == 0 {
            return Ok(());
        }
        let ctx = self.engine.context();
        self.record_fold(encoder, ctx, f, o, k)
    }

    fn record_fold(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        ctx: &Context,
        f: &FoldArgs,
        o: usize,
        k: usize,
    ) -> Result<()> {
        let r = |what: &str, t: &Tensor| binding::storage_range(ctx, what, t);
        let opt = |what: &str, t: Option<&Tensor>| t.map(|t| r(what, t)).transpose();
        let (w, wo, bo) = (
            r("weight", f.weight)?,
            r("weight_out", f.weight_out)?,
            r("bias_out", f.bias_out)?,
        );
        let (b, g, be) = (
            opt("bias", f.bias)?,
            opt("gamma", f.gamma)?,
            opt("beta", f.beta)?,
        );
        let (rm, rv) = (
            r("running_mean", f.running_mean)?,
            r("running_var", f.running_var)?,
        );
        binding::check_no_alias(&[
            ("weight", Some(&w), false),
            ("bias", b.as_ref(), false),
            ("gamma", g.as_ref(), false),
            ("beta", be.as_ref(), false),
            ("running_mean", Some(&rm), false),
            ("running_var", Some(&rv), false),
            ("weight_out", Some(&wo), true),
            ("bias_out", Some(&bo), true),
        ])?;
        let pipeline = ctx.pipeline(&fold_spec(b.is_some(), g.is_some(), be.is_some()))?;
        let params = FoldParams {
            o: o as u32,
            k: k as u32,
            eps: self.cfg.eps,
            _pad: 0,
        };
        let dummy = binding::dummy_range(ctx.dummy_read());
        let bind = self.fold_binds.get(
            ctx,
            FOLD_SLOTS,
            &params,
            &[
                &w,
                b.as_ref().unwrap_or(&dummy),
                g.as_ref().unwrap_or(&dummy),
                be.as_ref().unwrap_or(&dummy),
                &rm,
                &rv,
                &wo,
                &bo,
            ],
        )?;
        let (gx, gy) = binding::grid(ctx, ((o * k) as u64).div_ceil(256));
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm fold_batch_norm"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }
}
