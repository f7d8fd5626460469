//! Runners of the research methods: PowerNorm, Unified Norm, Sinkhorn, the hyperbolic ops,
//! IBN, EvoNorm-B0, UnMix-TNS and Region Norm.

use crate::Mode;
use std::collections::BTreeMap;

use super::attrs::*;
use super::{Case, DeviceOutputs};
use crate::{Context, DType, Tensor};

pub(crate) fn run_power_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(
        case,
        &[
            "eps",
            "alpha_fwd",
            "warmup_iters",
            "step",
            "training",
            "group_num",
        ],
    )?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::PowerNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        alpha_fwd: a.f64("alpha_fwd", 0.9)? as f32,
        warmup_iters: u64::try_from(a.int("warmup_iters", 10_000)?)
            .map_err(|_| "warmup_iters < 0".to_string())?,
        group_num: usize::try_from(a.int("group_num", 1)?)
            .map_err(|_| "group_num < 0".to_string())?,
        dtype,
    };
    let op = crate::PowerNorm::new(ctx, cfg).map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    // U8 masks arrive as 0.0/1.0 values; the kernel reads f32.
    let mask = case
        .inputs
        .get("pad_mask")
        .map(|m| upload(ctx, m, DType::F32))
        .transpose()?;
    let (w, b) = (
        upload_param(ctx, case, "weight")?,
        upload_param(ctx, case, "bias")?,
    );
    let phi = upload_param(ctx, case, "running_phi")?.ok_or("case lacks input \"running_phi\"")?;
    let y = ctx.empty(xt.shape(), dtype).map_err(err)?;
    let inputs = crate::PowerNormInputs {
        x: &xt,
        pad_mask: mask.as_ref(),
        weight: w.as_ref(),
        bias: b.as_ref(),
        running_phi: &phi,
    };
    let training = a.bool("training", false)?;
    if training {
        required(case, "step")?;
        let step = u64::try_from(a.int("step", 0)?).map_err(|_| "step < 0".to_string())?;
        ctx.record_and_submit(|enc| op.encode_train(enc, &inputs, &y, step))
    } else {
        ctx.record_and_submit(|enc| op.encode_infer(enc, &inputs, &y))
    }
    .map_err(err)?;
    let mut out = BTreeMap::from([("y".to_string(), output(&y))]);
    if training {
        out.insert("running_phi".into(), output(&phi));
    }
    Ok(out)
}

/// A `sinkhorn_normalize` case's op and x's dtype.
pub(super) fn sinkhorn_op(
    ctx: &Context,
    case: &Case,
) -> Result<(crate::SinkhornNormalize, DType), String> {
    let a = Attrs::new(case, &["iterations", "eps"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let iterations =
        usize::try_from(a.int("iterations", 5)?).map_err(|_| "iterations < 0".to_string())?;
    let op = crate::SinkhornNormalize::new(
        ctx,
        crate::SinkhornConfig {
            iterations,
            eps: a.f64("eps", 1e-8)? as f32,
            dtype,
        },
    )
    .map_err(err)?;
    Ok((op, dtype))
}

pub(crate) fn run_sinkhorn_normalize(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, dtype) = sinkhorn_op(ctx, case)?;
    let x = input(case, "x")?;
    let y = op.forward(&upload(ctx, x, dtype)?).map_err(err)?;
    only_y(&y)
}

pub(crate) fn run_unified_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["eps", "training"])?;
    if a.bool("training", false)? {
        return Err(
            "unified_norm: the case format defines only the inference form (a training step needs the window state it does not carry)"
                .into(),
        );
    }
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let op = crate::UnifiedNorm::new(
        ctx,
        crate::UnifiedNormConfig {
            eps: a.f64("eps", 1e-5)? as f32,
            dtype,
        },
    )
    .map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let (w, b) = (
        upload_param(ctx, case, "weight")?,
        upload_param(ctx, case, "bias")?,
    );
    let rv = upload_param(ctx, case, "running_var")?.ok_or("case lacks input \"running_var\"")?;
    let y = ctx.empty(xt.shape(), dtype).map_err(err)?;
    let inputs = crate::UnifiedNormInputs {
        x: &xt,
        pad_mask: None,
        weight: w.as_ref(),
        bias: b.as_ref(),
        running_var: &rv,
        window: None,
    };
    ctx.record_and_submit(|enc| op.encode_infer(enc, &inputs, &y))
        .map_err(err)?;
    only_y(&y)
}

/// The midpoint op of a case (`c`, points on the last axis) and its I/O dtype.
pub(super) fn poincare_midpoint_op(
    ctx: &Context,
    case: &Case,
) -> Result<(crate::PoincareMidpoint, DType), String> {
    let a = Attrs::new(case, &["c"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let op = crate::PoincareMidpoint::new(
        ctx,
        crate::BallConfig {
            c: a.f64("c", 0.1)? as f32,
            feature_axis: -1,
            dtype,
        },
    )
    .map_err(err)?;
    Ok((op, dtype))
}

pub(crate) fn run_poincare_midpoint(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, dtype) = poincare_midpoint_op(ctx, case)?;
    let m = op
        .forward(&upload(ctx, input(case, "x")?, dtype)?)
        .map_err(err)?;
    Ok(BTreeMap::from([("m".to_string(), output(&m))]))
}

/// A `poincare_batch_norm` case's op and its uploaded x, bias and weight.
pub(super) fn poincare_bn_op(
    ctx: &Context,
    case: &Case,
) -> Result<(crate::PoincareBatchNorm, [Tensor; 3]), String> {
    let a = Attrs::new(case, &["c"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::PoincareBatchNormConfig {
        c: a.f64("c", 0.1)? as f32,
        feature_axis: 1,
        dtype,
        ..Default::default()
    };
    let op = crate::PoincareBatchNorm::new(ctx, cfg).map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let bias = upload(ctx, input(case, "bias")?, DType::F32)?;
    let weight = upload(ctx, input(case, "weight")?, DType::F32)?;
    Ok((op, [xt, bias, weight]))
}

pub(crate) fn run_poincare_batch_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, [xt, bias, weight]) = poincare_bn_op(ctx, case)?;
    let inputs = crate::PoincareBatchNormInputs {
        x: &xt,
        bias: &bias,
        weight: &weight,
        running_mean: None,
        running_var: None,
    };
    let y = op
        .forward(&inputs, crate::PoincareStatistics::Batch)
        .map_err(err)?;
    only_y(&y)
}

/// An `ibn_norm` case's op and its attributes.
pub(super) fn ibn_op<'a>(
    ctx: &Context,
    case: &'a Case,
) -> Result<(crate::IbnNorm, Attrs<'a>, DType), String> {
    let a = Attrs::new(case, &["ratio", "eps", "momentum", "training"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let op = crate::IbnNorm::new(
        ctx,
        crate::IbnConfig {
            ratio: a.f64("ratio", 0.5)? as f32,
            eps: a.f64("eps", 1e-5)? as f32,
            momentum: a.f64("momentum", 0.1)? as f32,
            layout: crate::Layout::Nchw,
            dtype,
        },
    )
    .map_err(err)?;
    Ok((op, a, dtype))
}

pub(crate) fn run_ibn_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, a, dtype) = ibn_op(ctx, case)?;
    let x = input(case, "x")?;
    let xt = upload(ctx, x, dtype)?;
    let p = |n: &str| upload(ctx, input(case, n)?, DType::F32);
    let (w, b, rm, rv) = (
        p("weight")?,
        p("bias")?,
        p("running_mean")?,
        p("running_var")?,
    );
    let training = a.bool("training", false)?;
    let inputs = crate::IbnInputs {
        x: &xt,
        weight: &w,
        bias: &b,
        running_mean: &rm,
        running_var: &rv,
    };
    let y = op.forward(&inputs, Mode::training(training)).map_err(err)?;
    let mut out = BTreeMap::from([("y".to_string(), output(&y))]);
    if training {
        out.insert("running_mean".into(), output(&rm));
        out.insert("running_var".into(), output(&rv));
    }
    Ok(out)
}

/// EvoNorm-B0 from a case's attributes (`training` defaults to `training_default`: the
/// forward's false, the backward's true) and its parameters uploaded.
pub(super) fn evonorm_b0_op(
    ctx: &Context,
    case: &Case,
    training_default: bool,
) -> Result<(crate::EvoNormB0, [Tensor; 5], Mode), String> {
    let a = Attrs::new(
        case,
        &["eps", "momentum", "training", "running_var_unbiased"],
    )?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let running = if a.bool("running_var_unbiased", true)? {
        crate::EvoRunningVar::TimmUnbiased
    } else {
        crate::EvoRunningVar::TfBiased
    };
    let op = crate::EvoNormB0::new(
        ctx,
        crate::EvoNormB0Config {
            eps: a.f64("eps", 1e-5)? as f32,
            momentum: a.f64("momentum", 0.1)? as f32,
            running,
            layout: crate::Layout::Nchw,
            dtype,
        },
    )
    .map_err(err)?;
    let p = |n: &str| upload(ctx, input(case, n)?, DType::F32);
    let tensors = [
        upload(ctx, x, dtype)?,
        p("weight")?,
        p("bias")?,
        p("v")?,
        p("running_var")?,
    ];
    let mode = Mode::training(a.bool("training", training_default)?);
    Ok((op, tensors, mode))
}

pub(crate) fn run_evonorm_b0(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, [xt, w, b, v, rv], mode) = evonorm_b0_op(ctx, case, false)?;
    let inputs = crate::EvoNormB0Inputs {
        x: &xt,
        weight: &w,
        bias: &b,
        v: &v,
        running_var: &rv,
    };
    let y = op.forward(&inputs, mode).map_err(err)?;
    let mut out = BTreeMap::from([("y".to_string(), output(&y))]);
    if mode.is_train() {
        out.insert("running_var".into(), output(&rv));
    }
    Ok(out)
}

pub(crate) fn run_unmix_tns(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["momentum_bn", "temperature", "eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cm = input(case, "component_mean")?;
    let k = *cm.shape.first().ok_or("component_mean has no shape")?;
    let op = crate::UnmixTns::new(
        ctx,
        crate::UnmixTnsConfig {
            k,
            momentum_bn: a.f64("momentum_bn", 0.1)? as f32,
            temperature: a.f64("temperature", 0.07)? as f32,
            eps: a.f64("eps", 1e-5)? as f32,
            layout: crate::Layout::Nchw,
            dtype,
        },
    )
    .map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let p = |n: &str| upload(ctx, input(case, n)?, DType::F32);
    let (w, b, m, v) = (
        p("weight")?,
        p("bias")?,
        p("component_mean")?,
        p("component_var")?,
    );
    let inputs = crate::UnmixTnsInputs {
        x: &xt,
        weight: &w,
        bias: &b,
        component_mean: &m,
        component_var: &v,
    };
    let y = op.forward(&inputs).map_err(err)?;
    Ok(BTreeMap::from([
        ("y".to_string(), output(&y)),
        ("component_mean".to_string(), output(&m)),
        ("component_var".to_string(), output(&v)),
    ]))
}

pub(crate) fn run_region_norm_b(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let op = crate::RegionNormB::new(
        ctx,
        crate::RegionNormBConfig {
            eps: a.f64("eps", 1e-5)? as f32,
            layout: crate::Layout::Nchw,
            dtype,
        },
    )
    .map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    // U8 mask (0/1) as f32.
    let mask = upload(ctx, input(case, "mask")?, DType::F32)?;
    let p = |n: &str| upload(ctx, input(case, n)?, DType::F32);
    let (gf, gb, bf, bb) = (p("gamma_f")?, p("gamma_b")?, p("beta_f")?, p("beta_b")?);
    let y = op
        .forward(&crate::RegionNormInputs {
            x: &xt,
            mask: &mask,
            gamma_f: &gf,
            gamma_b: &gb,
            beta_f: &bf,
            beta_b: &bb,
        })
        .map_err(err)?;
    only_y(&y)
}

pub(crate) fn run_region_norm_l(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["eps", "threshold"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let op = crate::RegionNormL::new(
        ctx,
        crate::RegionNormLConfig {
            eps: a.f64("eps", 1e-5)? as f32,
            threshold: a.f64("threshold", 0.8)? as f32,
            layout: crate::Layout::Nchw,
            dtype,
        },
    )
    .map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let p = |n: &str| upload(ctx, input(case, n)?, DType::F32);
    let (mc, gc, gb, bc, bb) = (
        p("mask_conv")?,
        p("gamma_conv")?,
        p("gamma_conv_bias")?,
        p("beta_conv")?,
        p("beta_conv_bias")?,
    );
    let y = op
        .forward(&crate::RegionNormLInputs {
            x: &xt,
            mask_conv: &mc,
            gamma_conv: &gc,
            gamma_conv_bias: &gb,
            beta_conv: &bc,
            beta_conv_bias: &bb,
        })
        .map_err(err)?;
    only_y(&y)
}
