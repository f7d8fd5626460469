//! Runners of the backward ops (FORMAT.md "Backward ops"): the gradients of `sum(y * dy)`.

use std::collections::BTreeMap;

use super::attrs::*;
use super::{Case, DeviceOutputs};
use crate::{Context, Tensor};

/// dx, and dweight / dbias when the case has weight / bias.
fn grads_out(
    case: &Case,
    dx: &Tensor,
    dweight: Option<&Tensor>,
    dbias: Option<&Tensor>,
) -> Result<DeviceOutputs, String> {
    let mut out = BTreeMap::from([("dx".to_string(), output(dx))]);
    if let (true, Some(t)) = (case.inputs.contains_key("weight"), dweight) {
        out.insert("dweight".into(), output(t));
    }
    if let (true, Some(t)) = (case.inputs.contains_key("bias"), dbias) {
        out.insert("dbias".into(), output(t));
    }
    Ok(out)
}

/// The fused activation a case names (`activation`, default `"none"`).
fn activation(a: &Attrs) -> Result<crate::Activation, String> {
    let name = a.str("activation", "none")?;
    crate::Activation::from_name(&name).ok_or(format!("unknown activation {name:?}"))
}

/// `layer_norm_grad` and `add_layer_norm_grad` (with `residual` and an optional `dsum`), through
/// the case's fused activation (whose argument takes the `bias`).
fn layer_norm_grad(ctx: &Context, case: &Case, add: bool) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["axis", "eps", "activation"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::LayerNormConfig {
        axis: a.int("axis", -1)? as isize,
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
    };
    let ln = crate::LayerNorm::new(ctx, cfg)
        .map_err(err)?
        .with_activation(activation(&a)?);
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let w = upload_opt(ctx, case, "weight", dtype)?;
    let b = upload_opt(ctx, case, "bias", dtype)?;
    let reduced = ln.engine().reduced_shape(xt.shape()).map_err(err)?;
    let dx = ctx.empty(xt.shape(), dtype).map_err(err)?;
    let dw = ctx.empty(&reduced, dtype).map_err(err)?;
    let db = ctx.empty(&reduced, dtype).map_err(err)?;
    let outputs = crate::LayerNormGradOutputs {
        dx: &dx,
        dweight: Some(&dw),
        dbias: Some(&db),
    };
    if add {
        let rt = upload(ctx, input(case, "residual")?, dtype)?;
        let dsum = upload_opt(ctx, case, "dsum", dtype)?;
        let inputs = crate::AddLayerNormGradInputs {
            x: &xt,
            residual: &rt,
            weight: w.as_ref(),
            bias: b.as_ref(),
            dy: &dy,
            dsum: dsum.as_ref(),
            mean: None,
            rstd: None,
        };
        ctx.record_and_submit(|enc| ln.encode_add_backward(enc, &inputs, &outputs))
    } else {
        let inputs = crate::LayerNormGradInputs {
            x: &xt,
            weight: w.as_ref(),
            bias: b.as_ref(),
            dy: &dy,
            mean: None,
            rstd: None,
        };
        ctx.record_and_submit(|enc| ln.encode_backward(enc, &inputs, &outputs))
    }
    .map_err(err)?;
    grads_out(case, &dx, Some(&dw), Some(&db))
}

/// `rms_norm_grad` and `add_rms_norm_grad`, through the case's fused activation.
fn rms_norm_grad(ctx: &Context, case: &Case, add: bool) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["axis", "eps", "weight_offset", "activation"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::RmsNormConfig {
        axis: a.int("axis", -1)? as isize,
        eps: a.f64("eps", 1e-5)? as f32,
        weight_offset: a.f64("weight_offset", 0.0)? as f32,
        dtype,
    };
    let rn = crate::RmsNorm::new(ctx, cfg)
        .map_err(err)?
        .with_activation(activation(&a)?);
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let w = upload_opt(ctx, case, "weight", dtype)?;
    let (rt, dsum) = if add {
        (
            Some(upload(ctx, input(case, "residual")?, dtype)?),
            upload_opt(ctx, case, "dsum", dtype)?,
        )
    } else {
        (None, None)
    };
    let (dx, dw) = rn
        .backward(&crate::RmsNormGradInputs {
            x: &xt,
            residual: rt.as_ref(),
            weight: w.as_ref(),
            dy: &dy,
            dsum: dsum.as_ref(),
            rstd: None,
        })
        .map_err(err)?;
    grads_out(case, &dx, Some(&dw), None)
}

pub(crate) fn run_layer_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    layer_norm_grad(ctx, case, false)
}

pub(crate) fn run_add_layer_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    layer_norm_grad(ctx, case, true)
}

pub(crate) fn run_rms_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    rms_norm_grad(ctx, case, false)
}

pub(crate) fn run_add_rms_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    rms_norm_grad(ctx, case, true)
}

/// `batch_norm_grad`: training through the batch statistics, inference with the running ones.
pub(crate) fn run_batch_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(
        case,
        &["eps", "training", "momentum", "running_var_unbiased"],
    )?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
        ..Default::default()
    };
    let bn = crate::BatchNorm::new(ctx, cfg).map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let w = upload_param(ctx, case, "weight")?;
    let rm = upload_param(ctx, case, "running_mean")?;
    let rv = upload_param(ctx, case, "running_var")?;
    let training = a.bool("training", true)?;
    let g = bn
        .backward(
            &crate::BatchNormGradInputs {
                x: &xt,
                weight: w.as_ref(),
                dy: &dy,
                saved: None,
                running_mean: rm.as_ref(),
                running_var: rv.as_ref(),
            },
            crate::Mode::training(training),
        )
        .map_err(err)?;
    grads_out(case, &g.dx, Some(&g.dweight), Some(&g.dbias))
}

/// `ghost_batch_norm_grad`: training through each chunk's statistics (inference is
/// `batch_norm_grad`'s).
pub(crate) fn run_ghost_batch_norm_grad(
    ctx: &Context,
    case: &Case,
) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["ghost_size", "eps", "momentum", "training"])?;
    required(case, "ghost_size")?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let ghost =
        usize::try_from(a.int("ghost_size", 0)?).map_err(|_| "ghost_size < 0".to_string())?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
        ..Default::default()
    };
    let bn = crate::GhostBatchNorm::new(
        ctx,
        crate::GhostBatchNormConfig {
            batch_norm: cfg,
            ghost_size: ghost,
        },
    )
    .map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let w = upload_param(ctx, case, "weight")?;
    let (rm, rv) = (
        upload_param(ctx, case, "running_mean")?,
        upload_param(ctx, case, "running_var")?,
    );
    let c = w.as_ref().map_or(1, |w| w.numel());
    let dx = ctx.empty(xt.shape(), dtype).map_err(err)?;
    let dw = ctx.empty(&[c], crate::DType::F32).map_err(err)?;
    let db = ctx.empty(&[c], crate::DType::F32).map_err(err)?;
    let inputs = crate::BatchNormGradInputs {
        x: &xt,
        weight: w.as_ref(),
        dy: &dy,
        saved: None,
        running_mean: rm.as_ref(),
        running_var: rv.as_ref(),
    };
    let outputs = crate::BatchNormGradOutputs {
        dx: &dx,
        dweight: w.as_ref().map(|_| &dw),
        dbias: case.inputs.contains_key("bias").then_some(&db),
    };
    let mode = crate::Mode::training(a.bool("training", true)?);
    ctx.record_and_submit(|enc| bn.encode_backward(enc, &inputs, &outputs, mode))
        .map_err(err)?;
    grads_out(case, &dx, Some(&dw), Some(&db))
}

/// `group_norm_grad` (with its activation) and `instance_norm_grad`.
fn channel_norm_grad(ctx: &Context, case: &Case, group: bool) -> Result<DeviceOutputs, String> {
    let names: &[&str] = if group {
        &["num_groups", "eps", "activation"]
    } else {
        &["eps"]
    };
    let a = Attrs::new(case, names)?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let eps = a.f64("eps", 1e-5)? as f32;
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let w = upload_param(ctx, case, "weight")?;
    let b = upload_param(ctx, case, "bias")?;
    let inputs = crate::NormGradInputs {
        x: &xt,
        weight: w.as_ref(),
        bias: b.as_ref(),
        dy: &dy,
        saved: None,
    };
    let g = if group {
        required(case, "num_groups")?;
        let groups = a.int("num_groups", 0)?;
        let name = a.str("activation", "none")?;
        let activation =
            crate::Activation::from_name(&name).ok_or(format!("unknown activation {name:?}"))?;
        let cfg = crate::GroupNormConfig {
            num_groups: usize::try_from(groups).map_err(|_| format!("num_groups {groups} < 0"))?,
            eps,
            activation,
            layout: crate::Layout::Nchw,
            dtype,
        };
        let gn = crate::GroupNorm::new(ctx, cfg).map_err(err)?;
        gn.backward(&inputs)
    } else {
        let cfg = crate::InstanceNormConfig {
            eps,
            dtype,
            ..Default::default()
        };
        crate::InstanceNorm::new(ctx, cfg).and_then(|op| op.backward(&inputs))
    }
    .map_err(err)?;
    grads_out(case, &g.dx, Some(&g.dweight), Some(&g.dbias))
}

pub(crate) fn run_group_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    channel_norm_grad(ctx, case, true)
}

pub(crate) fn run_instance_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    channel_norm_grad(ctx, case, false)
}

/// `batch_channel_norm_grad`: the chain BN (or EstBN) → per-(sample, group) normalization →
/// per-group affine. EstBN training normalizes with the statistics its forward updates, so the
/// forward runs first (on the case's running statistics) and the backward reads the updated
/// ones, as constants.
pub(crate) fn run_batch_channel_norm_grad(
    ctx: &Context,
    case: &Case,
) -> Result<DeviceOutputs, String> {
    let (op, a, dtype) = super::batch::batch_channel_op(ctx, case)?;
    let estbn = a.opt_f64("estbn_moving_speed", None)?;
    let x = input(case, "x")?;
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let p = |name| upload_param(ctx, case, name);
    let (bw, bb, rm, rv, w, b) = (
        p("bn_weight")?,
        p("bn_bias")?,
        p("running_mean")?,
        p("running_var")?,
        p("weight")?,
        p("bias")?,
    );
    let mode = crate::Mode::training(a.bool("training", true)?);
    let forward = crate::batchnorm::BatchChannelNormInputs {
        x: &xt,
        bn_weight: bw.as_ref(),
        bn_bias: bb.as_ref(),
        running_mean: rm.as_ref(),
        running_var: rv.as_ref(),
        weight: w.as_ref(),
        bias: b.as_ref(),
    };
    if estbn.is_some() && mode.is_train() {
        let y = ctx.empty(xt.shape(), dtype).map_err(err)?;
        ctx.record_and_submit(|enc| op.encode(enc, &forward, &y, mode))
            .map_err(err)?;
    }
    let g = op
        .backward(
            &crate::batchnorm::BatchChannelNormGradInputs {
                x: &xt,
                bn_weight: bw.as_ref(),
                bn_bias: bb.as_ref(),
                running_mean: rm.as_ref(),
                running_var: rv.as_ref(),
                weight: w.as_ref(),
                bias: b.as_ref(),
                dy: &dy,
            },
            mode,
        )
        .map_err(err)?;
    let mut out = grads_out(case, &g.dx, Some(&g.dweight), Some(&g.dbias))?;
    for (name, t) in [("bn_weight", &g.dbn_weight), ("bn_bias", &g.dbn_bias)] {
        if case.inputs.contains_key(name) {
            out.insert(format!("d{name}"), output(t));
        }
    }
    Ok(out)
}

/// `rep_batch_norm_grad`: BatchNorm's backward over `[B, T, C]` tokens (channels last) plus
/// `alpha * dy` in dx and `dalpha = sum(dy * x)`.
pub(crate) fn run_rep_batch_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["eps", "momentum", "training"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        layout: crate::Layout::Nhwc,
        dtype,
        ..Default::default()
    };
    let bn = crate::batchnorm::RepBatchNorm::new(ctx, cfg).map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let alpha = upload(ctx, input(case, "alpha")?, crate::DType::F32)?;
    let w = upload_param(ctx, case, "weight")?;
    let rm = upload_param(ctx, case, "running_mean")?;
    let rv = upload_param(ctx, case, "running_var")?;
    let (g, dalpha) = bn
        .backward(
            &crate::BatchNormGradInputs {
                x: &xt,
                weight: w.as_ref(),
                dy: &dy,
                saved: None,
                running_mean: rm.as_ref(),
                running_var: rv.as_ref(),
            },
            &alpha,
            crate::Mode::training(a.bool("training", true)?),
        )
        .map_err(err)?;
    let mut out = grads_out(case, &g.dx, Some(&g.dweight), Some(&g.dbias))?;
    out.insert("dalpha".into(), output(&dalpha));
    Ok(out)
}

/// `sinkhorn_normalize_grad`: dx through the `2L` alternating row and column L2
/// normalizations.
pub(crate) fn run_sinkhorn_normalize_grad(
    ctx: &Context,
    case: &Case,
) -> Result<DeviceOutputs, String> {
    let (op, dtype) = super::research::sinkhorn_op(ctx, case)?;
    let x = input(case, "x")?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let dx = op.backward(&upload(ctx, x, dtype)?, &dy).map_err(err)?;
    Ok(BTreeMap::from([("dx".to_string(), output(&dx))]))
}

/// `evonorm_s0_grad`: dx, dv, dweight and dbias through the group statistics and the gate.
pub(crate) fn run_evonorm_s0_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, dtype) = super::batch::evonorm_s0_op(ctx, case)?;
    let x = input(case, "x")?;
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let w = upload_param(ctx, case, "weight")?;
    let v = upload(ctx, input(case, "v")?, crate::DType::F32)?;
    let g = op
        .backward(
            &crate::NormGradInputs {
                x: &xt,
                weight: w.as_ref(),
                bias: None,
                dy: &dy,
                saved: None,
            },
            &v,
        )
        .map_err(err)?;
    let mut out = grads_out(case, &g.dx, Some(&g.dweight), Some(&g.dbias))?;
    out.insert("dv".into(), output(&g.dv));
    Ok(out)
}

/// `evonorm_b0_grad`: dx, dweight, dbias and dv through the max of the batch and instance
/// denominators (training: both variances; inference: the running one a constant).
pub(crate) fn run_evonorm_b0_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, [xt, w, b, v, rv], mode) = super::research::evonorm_b0_op(ctx, case, true)?;
    let dy = upload(ctx, input(case, "dy")?, xt.dtype())?;
    let inputs = crate::EvoNormB0Inputs {
        x: &xt,
        weight: &w,
        bias: &b,
        v: &v,
        running_var: &rv,
    };
    let g = op.backward(&inputs, &dy, mode).map_err(err)?;
    let mut out = grads_out(case, &g.dx, Some(&g.dweight), Some(&g.dbias))?;
    out.insert("dv".into(), output(&g.dv));
    Ok(out)
}

/// `poincare_midpoint_grad`: dx, the Euclidean gradient of `sum(m * dy)` for each point.
pub(crate) fn run_poincare_midpoint_grad(
    ctx: &Context,
    case: &Case,
) -> Result<DeviceOutputs, String> {
    let (op, dtype) = super::research::poincare_midpoint_op(ctx, case)?;
    let x = upload(ctx, input(case, "x")?, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let dx = op.backward(&x, &dy).map_err(err)?;
    Ok(BTreeMap::from([("dx".to_string(), output(&dx))]))
}

/// `poincare_batch_norm_grad`: dx, dbias, dweight of `sum(y * dy)` with batch statistics.
pub(crate) fn run_poincare_batch_norm_grad(
    ctx: &Context,
    case: &Case,
) -> Result<DeviceOutputs, String> {
    let (op, [xt, bias, weight]) = super::research::poincare_bn_op(ctx, case)?;
    let dy = upload(ctx, input(case, "dy")?, xt.dtype())?;
    let inputs = crate::PoincareBatchNormInputs {
        x: &xt,
        bias: &bias,
        weight: &weight,
        running_mean: None,
        running_var: None,
    };
    let g = op
        .backward(&inputs, &dy, crate::PoincareStatistics::Batch)
        .map_err(err)?;
    grads_out(case, &g.dx, Some(&g.dweight), Some(&g.dbias))
}

/// `ibn_norm_grad`: the InstanceNorm channels through their own statistics, the BatchNorm
/// channels through the batch's (training) or with the running ones as constants.
pub(crate) fn run_ibn_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, a, dtype) = super::research::ibn_op(ctx, case)?;
    let x = input(case, "x")?;
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let p = |n: &str| upload(ctx, input(case, n)?, crate::DType::F32);
    let (w, rm, rv) = (p("weight")?, p("running_mean")?, p("running_var")?);
    let g = op
        .backward(
            &crate::IbnGradInputs {
                x: &xt,
                weight: &w,
                running_mean: &rm,
                running_var: &rv,
                dy: &dy,
            },
            crate::Mode::training(a.bool("training", true)?),
        )
        .map_err(err)?;
    grads_out(case, &g.dx, Some(&g.dweight), Some(&g.dbias))
}

/// `region_norm_b_grad`: dx through each region's statistics, the affine's gradients.
pub(crate) fn run_region_norm_b_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
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
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    // U8 mask (0/1) as f32.
    let mask = upload(ctx, input(case, "mask")?, crate::DType::F32)?;
    let p = |n: &str| upload(ctx, input(case, n)?, crate::DType::F32);
    let (gf, gb, bf, bb) = (p("gamma_f")?, p("gamma_b")?, p("beta_f")?, p("beta_b")?);
    let inputs = crate::RegionNormInputs {
        x: &xt,
        mask: &mask,
        gamma_f: &gf,
        gamma_b: &gb,
        beta_f: &bf,
        beta_b: &bb,
    };
    let [dx, dgf, dgb, dbf, dbb] = op.backward(&inputs, &dy).map_err(err)?;
    Ok(BTreeMap::from([
        ("dx".to_string(), output(&dx)),
        ("dgamma_f".to_string(), output(&dgf)),
        ("dgamma_b".to_string(), output(&dgb)),
        ("dbeta_f".to_string(), output(&dbf)),
        ("dbeta_b".to_string(), output(&dbb)),
    ]))
}
