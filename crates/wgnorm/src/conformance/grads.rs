//! Runners of the backward ops (FORMAT.md "Backward ops"): the gradients of `sum(y * dy)`.

use std::collections::BTreeMap;

use super::attrs::*;
use super::{Case, Outputs};
use crate::{Context, Tensor};

/// dx, and dweight / dbias when the case has weight / bias.
fn grads_out(
    ctx: &Context,
    case: &Case,
    dx: &Tensor,
    dweight: Option<&Tensor>,
    dbias: Option<&Tensor>,
) -> Result<Outputs, String> {
    let mut out = BTreeMap::from([("dx".to_string(), download(ctx, dx)?)]);
    if let (true, Some(t)) = (case.inputs.contains_key("weight"), dweight) {
        out.insert("dweight".into(), download(ctx, t)?);
    }
    if let (true, Some(t)) = (case.inputs.contains_key("bias"), dbias) {
        out.insert("dbias".into(), download(ctx, t)?);
    }
    Ok(out)
}

/// `layer_norm_grad` and `add_layer_norm_grad` (with `residual` and an optional `dsum`).
fn layer_norm_grad(ctx: &Context, case: &Case, add: bool) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["axis", "eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::LayerNormConfig {
        axis: a.int("axis", -1)? as isize,
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
    };
    let ln = crate::LayerNorm::new(ctx, cfg).map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let w = upload_opt(ctx, case, "weight", dtype)?;
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
            dy: &dy,
            mean: None,
            rstd: None,
        };
        ctx.record_and_submit(|enc| ln.encode_backward(enc, &inputs, &outputs))
    }
    .map_err(err)?;
    grads_out(ctx, case, &dx, Some(&dw), Some(&db))
}

/// `rms_norm_grad` and `add_rms_norm_grad`.
fn rms_norm_grad(ctx: &Context, case: &Case, add: bool) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["axis", "eps", "weight_offset"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::RmsNormConfig {
        axis: a.int("axis", -1)? as isize,
        eps: a.f64("eps", 1e-5)? as f32,
        weight_offset: a.f64("weight_offset", 0.0)? as f32,
        dtype,
    };
    let rn = crate::RmsNorm::new(ctx, cfg).map_err(err)?;
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
    grads_out(ctx, case, &dx, Some(&dw), None)
}

pub(super) fn run_layer_norm_grad(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    layer_norm_grad(ctx, case, false)
}

pub(super) fn run_add_layer_norm_grad(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    layer_norm_grad(ctx, case, true)
}

pub(super) fn run_rms_norm_grad(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    rms_norm_grad(ctx, case, false)
}

pub(super) fn run_add_rms_norm_grad(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    rms_norm_grad(ctx, case, true)
}
