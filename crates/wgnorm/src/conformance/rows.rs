//! Runners of the row-norm ops (LayerNorm, RMSNorm, their fused residual forms) and SELU.

use std::collections::BTreeMap;

use super::attrs::*;
use super::{Case, DeviceOutputs};
use crate::Context;

pub(crate) fn run_layer_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["axis", "eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::LayerNormConfig {
        axis: a.int("axis", -1)? as isize,
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
    };
    let ln = crate::LayerNorm::new(ctx, cfg).map_err(|e| e.to_string())?;
    let xt = upload(ctx, x, dtype)?;
    let w = upload_opt(ctx, case, "weight", dtype)?;
    let b = upload_opt(ctx, case, "bias", dtype)?;
    let out = ln
        .forward(&crate::LayerNormInputs {
            x: &xt,
            weight: w.as_ref(),
            bias: b.as_ref(),
        })
        .map_err(|e| e.to_string())?;
    Ok(BTreeMap::from([
        ("y".to_string(), output(&out.y)),
        ("mean".to_string(), output(&out.mean)),
        ("rstd".to_string(), output(&out.rstd)),
    ]))
}

pub(crate) fn run_rms_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["axis", "eps", "weight_offset"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::RmsNormConfig {
        axis: a.int("axis", -1)? as isize,
        eps: a.f64("eps", 1e-5)? as f32,
        weight_offset: a.f64("weight_offset", 0.0)? as f32,
        dtype,
    };
    let rn = crate::RmsNorm::new(ctx, cfg).map_err(|e| e.to_string())?;
    let xt = upload(ctx, x, dtype)?;
    let w = upload_opt(ctx, case, "weight", dtype)?;
    let out = rn
        .forward(&crate::RmsNormInputs {
            x: &xt,
            weight: w.as_ref(),
        })
        .map_err(|e| e.to_string())?;
    Ok(BTreeMap::from([
        ("y".to_string(), output(&out.y)),
        ("rstd".to_string(), output(&out.rstd)),
    ]))
}

pub(crate) fn run_add_layer_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["axis", "eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::LayerNormConfig {
        axis: a.int("axis", -1)? as isize,
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
    };
    let ln = crate::LayerNorm::new(ctx, cfg).map_err(err)?;
    let (xt, rt) = (
        upload(ctx, x, dtype)?,
        upload(ctx, input(case, "residual")?, dtype)?,
    );
    let w = upload_opt(ctx, case, "weight", dtype)?;
    let b = upload_opt(ctx, case, "bias", dtype)?;
    let inputs = crate::AddLayerNormInputs {
        x: &xt,
        residual: &rt,
        weight: w.as_ref(),
        bias: b.as_ref(),
    };
    let (y, sum) = ln.forward_add(&inputs).map_err(err)?;
    Ok(BTreeMap::from([
        ("y".to_string(), output(&y)),
        ("sum".to_string(), output(&sum)),
    ]))
}

pub(crate) fn run_add_rms_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
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
    let (xt, rt) = (
        upload(ctx, x, dtype)?,
        upload(ctx, input(case, "residual")?, dtype)?,
    );
    let w = upload_opt(ctx, case, "weight", dtype)?;
    let (y, sum) = rn
        .forward_add(&crate::AddRmsNormInputs {
            x: &xt,
            residual: &rt,
            weight: w.as_ref(),
        })
        .map_err(err)?;
    Ok(BTreeMap::from([
        ("y".to_string(), output(&y)),
        ("sum".to_string(), output(&sum)),
    ]))
}

/// The SELU op of a `selu` / `selu_grad` case (its `alpha` and `gamma`) and its I/O dtype.
fn selu_op(ctx: &Context, case: &Case) -> Result<(crate::Elementwise, crate::DType), String> {
    let a = Attrs::new(case, &["alpha", "gamma"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let act = crate::Activation::Selu {
        alpha: a.f64("alpha", 1.6732632423543772)? as f32,
        lambda: a.f64("gamma", 1.0507009873554805)? as f32,
    };
    let cfg = crate::ElementwiseConfig {
        activation: act,
        dtype,
    };
    Ok((crate::Elementwise::new(ctx, cfg).map_err(err)?, dtype))
}

pub(crate) fn run_selu(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, dtype) = selu_op(ctx, case)?;
    let y = op
        .forward(&upload(ctx, input(case, "x")?, dtype)?)
        .map_err(err)?;
    only_y(&y)
}

/// `selu_grad`: `dx = dy * selu'(x)`.
pub(crate) fn run_selu_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, dtype) = selu_op(ctx, case)?;
    let x = upload(ctx, input(case, "x")?, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    let dx = op.backward(&x, &dy).map_err(err)?;
    Ok(BTreeMap::from([("dx".to_string(), output(&dx))]))
}

/// The op and uploaded tensors of a `qk_norm_rope` / `qk_norm_rope_grad` case.
struct QkCase {
    op: crate::rmsnorm::QkNormRope,
    dtype: crate::DType,
    x: crate::Tensor,
    weight: Option<crate::Tensor>,
    /// positions, cos, sin (f32), as given.
    angles: [Option<crate::Tensor>; 3],
}

impl QkCase {
    fn new(ctx: &Context, case: &Case) -> Result<QkCase, String> {
        use crate::rmsnorm::{QkNormRope, QkNormRopeConfig, RopeLayout};
        let a = Attrs::new(
            case,
            &["eps", "weight_offset", "layout", "rotary_dim", "base"],
        )?;
        let x = input(case, "x")?;
        let dtype = io_dtype(x)?;
        let layout = match a.str("layout", "neox")?.as_str() {
            "neox" => RopeLayout::NeoX,
            "gptj" => RopeLayout::GptJ,
            o => return Err(format!("layout must be \"neox\" or \"gptj\", got {o:?}")),
        };
        let rotary_dim = match case.attrs.get("rotary_dim") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or(format!("rotary_dim {v} is not a non-negative integer"))?
                    as usize,
            ),
        };
        let cfg = QkNormRopeConfig {
            eps: a.f64("eps", 1e-6)? as f32,
            weight_offset: a.f64("weight_offset", 0.0)? as f32,
            layout,
            rotary_dim,
            base: a.f64("base", 10_000.0)? as f32,
            dtype,
        };
        let f32_in = |name: &str| {
            case.inputs
                .get(name)
                .map(|t| upload(ctx, t, crate::DType::F32))
                .transpose()
        };
        Ok(QkCase {
            op: QkNormRope::new(ctx, cfg).map_err(err)?,
            dtype,
            x: upload(ctx, x, dtype)?,
            weight: upload_opt(ctx, case, "weight", dtype)?,
            angles: [f32_in("positions")?, f32_in("cos")?, f32_in("sin")?],
        })
    }

    fn angles(&self) -> Result<crate::rmsnorm::RopeAngles<'_>, String> {
        use crate::rmsnorm::RopeAngles;
        Ok(match &self.angles {
            [Some(p), None, None] => RopeAngles::Positions(p),
            [None, Some(c), Some(s)] => RopeAngles::Table { cos: c, sin: s },
            [None, None, None] => RopeAngles::None,
            _ => return Err("give positions, or cos and sin, or none of them".into()),
        })
    }
}

/// `qk_norm_rope` (the project's own signature, FORMAT.md).
pub(crate) fn run_qk_norm_rope(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let q = QkCase::new(ctx, case)?;
    let inputs = crate::rmsnorm::QkNormRopeInputs {
        x: &q.x,
        weight: q.weight.as_ref(),
        angles: q.angles()?,
    };
    only_y(&q.op.forward(&inputs).map_err(err)?)
}

/// `qk_norm_rope_grad`: dx and, with a weight, dweight.
pub(crate) fn run_qk_norm_rope_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let q = QkCase::new(ctx, case)?;
    let dy = upload(ctx, input(case, "dy")?, q.dtype)?;
    let inputs = crate::rmsnorm::QkNormRopeGradInputs {
        x: &q.x,
        weight: q.weight.as_ref(),
        angles: q.angles()?,
        dy: &dy,
    };
    let (dx, dw) = q.op.backward(&inputs).map_err(err)?;
    let mut out = BTreeMap::from([("dx".to_string(), output(&dx))]);
    if q.weight.is_some() {
        out.insert("dweight".into(), output(&dw));
    }
    Ok(out)
}
