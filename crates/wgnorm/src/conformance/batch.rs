//! Runners of the batch-statistics family.

use crate::Mode;
use std::collections::BTreeMap;

use serde_json::Value;

use super::attrs::*;
use super::{Case, DeviceOutputs};
use crate::{Context, DType, Tensor};

pub(crate) fn run_group_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["num_groups", "eps", "activation"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    required(case, "num_groups")?;
    let groups = a.int("num_groups", 0)?;
    let name = a.str("activation", "none")?;
    let activation =
        crate::Activation::from_name(&name).ok_or(format!("unknown activation {name:?}"))?;
    let cfg = crate::GroupNormConfig {
        num_groups: usize::try_from(groups).map_err(|_| format!("num_groups {groups} < 0"))?,
        eps: a.f64("eps", 1e-5)? as f32,
        activation,
        layout: crate::Layout::Nchw,
        dtype,
    };
    let gn = crate::GroupNorm::new(ctx, cfg).map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let w = upload_param(ctx, case, "weight")?;
    let b = upload_param(ctx, case, "bias")?;
    let y = gn
        .forward(&crate::NormInputs {
            x: &xt,
            weight: w.as_ref(),
            bias: b.as_ref(),
        })
        .map_err(err)?;
    only_y(&y)
}

pub(crate) fn run_instance_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::InstanceNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
        ..Default::default()
    };
    let inorm = crate::InstanceNorm::new(ctx, cfg).map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let w = upload_param(ctx, case, "weight")?;
    let b = upload_param(ctx, case, "bias")?;
    let y = inorm
        .forward(&crate::NormInputs {
            x: &xt,
            weight: w.as_ref(),
            bias: b.as_ref(),
        })
        .map_err(err)?;
    only_y(&y)
}

/// The op and I/O dtype of an `lp_norm` / `lp_norm_grad` case.
fn lp_op(ctx: &Context, case: &Case) -> Result<(crate::LpNorm, crate::DType), String> {
    let a = Attrs::new(case, &["axis", "p"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let p = a.int("p", 2)?;
    let cfg = crate::LpNormConfig {
        axis: a.int("axis", -1)? as isize,
        p: u32::try_from(p).unwrap_or(0),
        dtype,
    };
    Ok((crate::LpNorm::new(ctx, cfg).map_err(err)?, dtype))
}

pub(crate) fn run_lp_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, dtype) = lp_op(ctx, case)?;
    only_y(
        &op.forward(&upload(ctx, input(case, "x")?, dtype)?)
            .map_err(err)?,
    )
}

/// `lp_norm_grad`: dx.
pub(crate) fn run_lp_norm_grad(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, dtype) = lp_op(ctx, case)?;
    let x = upload(ctx, input(case, "x")?, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    only_dx(&op.backward(&x, &dy).map_err(err)?)
}

/// The op and I/O dtype of a `mean_variance_norm` / `mean_variance_norm_grad` case.
fn mvn_op(ctx: &Context, case: &Case) -> Result<(crate::MeanVarianceNorm, crate::DType), String> {
    Attrs::new(case, &["axes"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let axes: Vec<isize> = match case.attrs.get("axes") {
        None | Some(Value::Null) => vec![0, 2, 3],
        Some(Value::Array(v)) => v
            .iter()
            .map(|e| {
                e.as_i64()
                    .map(|i| i as isize)
                    .ok_or(format!("axes entry {e} is not an integer"))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(format!("attribute axes is not a list: {v}")),
    };
    let cfg = crate::MeanVarianceNormConfig {
        axes,
        eps: 1e-9,
        dtype,
    };
    Ok((crate::MeanVarianceNorm::new(ctx, cfg).map_err(err)?, dtype))
}

pub(crate) fn run_mean_variance_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, dtype) = mvn_op(ctx, case)?;
    only_y(
        &op.forward(&upload(ctx, input(case, "x")?, dtype)?)
            .map_err(err)?,
    )
}

/// `mean_variance_norm_grad`: dx.
pub(crate) fn run_mean_variance_norm_grad(
    ctx: &Context,
    case: &Case,
) -> Result<DeviceOutputs, String> {
    let (op, dtype) = mvn_op(ctx, case)?;
    let x = upload(ctx, input(case, "x")?, dtype)?;
    let dy = upload(ctx, input(case, "dy")?, dtype)?;
    only_dx(&op.backward(&x, &dy).map_err(err)?)
}

/// A backward case's one output, dx.
fn only_dx(dx: &crate::Tensor) -> Result<DeviceOutputs, String> {
    Ok(std::collections::BTreeMap::from([(
        "dx".to_string(),
        output(dx),
    )]))
}

pub(crate) fn run_weight_standardization(
    ctx: &Context,
    case: &Case,
) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["unbiased", "eps_inside_sqrt", "eps"])?;
    let w = input(case, "weight")?;
    let dtype = io_dtype(w)?;
    let variant =
        crate::WsVariant::from_flags(a.bool("unbiased", true)?, a.bool("eps_inside_sqrt", false)?);
    let op = crate::WeightStandardization::new(
        ctx,
        crate::WeightStandardizationConfig {
            variant,
            eps: a.f64("eps", 1e-5)? as f32,
            dtype,
        },
    )
    .map_err(err)?;
    let y = op.forward(&upload(ctx, w, dtype)?).map_err(err)?;
    only_y(&y)
}

/// An `evonorm_s0` case's op and x's dtype.
pub(super) fn evonorm_s0_op(
    ctx: &Context,
    case: &Case,
) -> Result<(crate::EvoNormS0, DType), String> {
    let a = Attrs::new(case, &["groups", "eps"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let groups = usize::try_from(a.int("groups", 32)?).map_err(|_| "groups < 0".to_string())?;
    let op = crate::EvoNormS0::new(
        ctx,
        crate::EvoNormS0Config {
            groups,
            eps: a.f64("eps", 1e-5)? as f32,
            layout: crate::Layout::Nchw,
            dtype,
        },
    )
    .map_err(err)?;
    Ok((op, dtype))
}

pub(crate) fn run_evonorm_s0(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, dtype) = evonorm_s0_op(ctx, case)?;
    let x = input(case, "x")?;
    let xt = upload(ctx, x, dtype)?;
    let (w, b) = (
        upload_param(ctx, case, "weight")?,
        upload_param(ctx, case, "bias")?,
    );
    let v = upload(ctx, input(case, "v")?, DType::F32)?;
    let y = op
        .forward(
            &crate::NormInputs {
                x: &xt,
                weight: w.as_ref(),
                bias: b.as_ref(),
            },
            &v,
        )
        .map_err(err)?;
    only_y(&y)
}

/// A `batch_channel_norm` case's op (EstBN when it names a moving speed) and its attributes.
pub(super) fn batch_channel_op<'a>(
    ctx: &Context,
    case: &'a Case,
) -> Result<(crate::batchnorm::BatchChannelNorm, Attrs<'a>, crate::DType), String> {
    let a = Attrs::new(
        case,
        &[
            "num_groups",
            "eps",
            "momentum",
            "training",
            "estbn_moving_speed",
        ],
    )?;
    let dtype = io_dtype(input(case, "x")?)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        momentum: a.opt_f64("momentum", Some(0.1))?.map(|m| m as f32),
        dtype,
        ..Default::default()
    };
    let groups =
        usize::try_from(a.int("num_groups", 32)?).map_err(|_| "num_groups < 0".to_string())?;
    let mut op = crate::batchnorm::BatchChannelNorm::new(
        ctx,
        crate::batchnorm::BatchChannelNormConfig {
            batch_norm: cfg,
            groups,
        },
    )
    .map_err(err)?;
    if let Some(ms) = a.opt_f64("estbn_moving_speed", None)? {
        op = op.with_estbn(ms as f32);
    }
    Ok((op, a, dtype))
}

pub(crate) fn run_batch_channel_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let (op, a, dtype) = batch_channel_op(ctx, case)?;
    let x = input(case, "x")?;
    let xt = upload(ctx, x, dtype)?;
    let p = |name| upload_param(ctx, case, name);
    let (bw, bb, rm, rv, w, b) = (
        p("bn_weight")?,
        p("bn_bias")?,
        p("running_mean")?,
        p("running_var")?,
        p("weight")?,
        p("bias")?,
    );
    let y = ctx.empty(xt.shape(), dtype).map_err(err)?;
    let inputs = crate::batchnorm::BatchChannelNormInputs {
        x: &xt,
        bn_weight: bw.as_ref(),
        bn_bias: bb.as_ref(),
        running_mean: rm.as_ref(),
        running_var: rv.as_ref(),
        weight: w.as_ref(),
        bias: b.as_ref(),
    };
    let training = a.bool("training", false)?;
    ctx.record_and_submit(|enc| op.encode(enc, &inputs, &y, Mode::training(training)))
        .map_err(err)?;
    let mut out = BTreeMap::from([("y".to_string(), output(&y))]);
    if let (Some(rm), Some(rv)) = (&rm, &rv) {
        out.insert("running_mean".into(), output(rm));
        out.insert("running_var".into(), output(rv));
    }
    Ok(out)
}

/// The tensors every BatchNorm-style case shares: x, the per-channel parameters and running
/// statistics (f32, when the case has them) and y.
struct BnTensors {
    x: Tensor,
    w: Option<Tensor>,
    b: Option<Tensor>,
    rm: Option<Tensor>,
    rv: Option<Tensor>,
    y: Tensor,
}

impl BnTensors {
    fn load(ctx: &Context, case: &Case, dtype: DType) -> Result<BnTensors, String> {
        let x = upload(ctx, input(case, "x")?, dtype)?;
        let y = ctx.empty(x.shape(), dtype).map_err(err)?;
        Ok(BnTensors {
            w: upload_param(ctx, case, "weight")?,
            b: upload_param(ctx, case, "bias")?,
            rm: upload_param(ctx, case, "running_mean")?,
            rv: upload_param(ctx, case, "running_var")?,
            x,
            y,
        })
    }

    /// Records with `f`, submits, and returns `y` plus the running statistics the case has.
    fn run(
        &self,
        ctx: &Context,
        f: impl FnOnce(
            &mut wgpu::CommandEncoder,
            &crate::BatchNormInputs,
            &crate::BatchNormOutputs,
        ) -> crate::Result<()>,
    ) -> Result<DeviceOutputs, String> {
        let inputs = crate::BatchNormInputs {
            x: &self.x,
            weight: self.w.as_ref(),
            bias: self.b.as_ref(),
            running_mean: self.rm.as_ref(),
            running_var: self.rv.as_ref(),
        };
        let outputs = crate::BatchNormOutputs {
            y: &self.y,
            saved: None,
        };
        ctx.record_and_submit(|enc| f(enc, &inputs, &outputs))
            .map_err(err)?;
        let mut out = BTreeMap::from([("y".to_string(), output(&self.y))]);
        if let (Some(rm), Some(rv)) = (&self.rm, &self.rv) {
            out.insert("running_mean".into(), output(rm));
            out.insert("running_var".into(), output(rv));
        }
        Ok(out)
    }
}

pub(crate) fn run_batch_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(
        case,
        &["eps", "momentum", "training", "running_var_unbiased"],
    )?;
    let dtype = io_dtype(input(case, "x")?)?;
    let training = a.bool("training", false)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        momentum: a.opt_f64("momentum", Some(0.1))?.map(|m| m as f32),
        running_var_unbiased: a.bool("running_var_unbiased", true)?,
        layout: crate::Layout::Nchw,
        dtype,
    };
    let bn = crate::BatchNorm::new(ctx, cfg).map_err(err)?;
    BnTensors::load(ctx, case, dtype)?.run(ctx, |enc, i, o| {
        bn.encode(enc, i, o, Mode::training(training))
    })
}

pub(crate) fn run_test_time_bn(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["w_src", "eps"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    required(case, "w_src")?;
    let w_src = a.f64("w_src", 0.0)? as f32;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
        ..Default::default()
    };
    let bn = crate::batchnorm::TestTimeBn::new(
        ctx,
        crate::batchnorm::TestTimeBnConfig {
            batch_norm: cfg,
            w_src,
        },
    )
    .map_err(err)?;
    BnTensors::load(ctx, case, dtype)?.run(ctx, |enc, i, o| bn.encode(enc, i, o))
}

pub(crate) fn run_rep_batch_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["eps", "momentum", "training"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let training = a.bool("training", false)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        momentum: a.opt_f64("momentum", Some(0.1))?.map(|m| m as f32),
        layout: crate::Layout::Nhwc,
        dtype,
        ..Default::default()
    };
    let bn = crate::batchnorm::RepBatchNorm::new(ctx, cfg).map_err(err)?;
    let alpha = upload(ctx, input(case, "alpha")?, DType::F32)?;
    BnTensors::load(ctx, case, dtype)?.run(ctx, |enc, i, o| {
        bn.encode(enc, i, &alpha, o, Mode::training(training))
    })
}

pub(crate) fn run_adab2n(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["kappa", "momentum", "step", "eps", "training"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let training = a.bool("training", false)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
        ..Default::default()
    };
    let bn = crate::BatchNorm::new(ctx, cfg).map_err(err)?;
    let step = u64::try_from(a.int("step", 1)?).unwrap_or(0);
    let eta =
        crate::batchnorm::adab2n_momentum(a.f64("kappa", 1.0)?, a.f64("momentum", 0.1)?, step)
            .map_err(err)?;
    let update = crate::batchnorm::RunningUpdate {
        momentum: Some(eta),
        unbiased: false,
    };
    BnTensors::load(ctx, case, dtype)?.run(ctx, |enc, i, o| {
        if training {
            bn.encode_train_with(enc, i, o, update)
        } else {
            bn.encode(enc, i, o, Mode::Infer)
        }
    })
}

pub(crate) fn run_ghost_batch_norm(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["ghost_size", "eps", "momentum", "training"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    required(case, "ghost_size")?;
    let ghost =
        usize::try_from(a.int("ghost_size", 0)?).map_err(|_| "ghost_size < 0".to_string())?;
    let training = a.bool("training", false)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        momentum: a.opt_f64("momentum", Some(0.1))?.map(|m| m as f32),
        dtype,
        ..Default::default()
    };
    let bn = crate::batchnorm::GhostBatchNorm::new(
        ctx,
        crate::batchnorm::GhostBatchNormConfig {
            batch_norm: cfg,
            ghost_size: ghost,
        },
    )
    .map_err(err)?;
    BnTensors::load(ctx, case, dtype)?.run(ctx, |enc, i, o| {
        bn.encode(enc, i, o, Mode::training(training))
    })
}

pub(crate) fn run_estbn(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(case, &["eps", "moving_speed", "training"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
        ..Default::default()
    };
    let (ms, training) = (
        a.f64("moving_speed", 0.01)? as f32,
        a.bool("training", false)?,
    );
    let bn = crate::batchnorm::EstBn::new(
        ctx,
        crate::batchnorm::EstBnConfig {
            batch_norm: cfg,
            moving_speed: ms,
        },
    )
    .map_err(err)?;
    let t = BnTensors::load(ctx, case, dtype)?;
    t.run(ctx, |enc, i, o| {
        bn.encode(enc, i, o, Mode::training(training))
    })
}

pub(crate) fn run_adaptive_bn(ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    let a = Attrs::new(
        case,
        &[
            "eps",
            "eta0",
            "decay",
            "step",
            "normalize",
            "running_var_unbiased",
        ],
    )?;
    let dtype = io_dtype(input(case, "x")?)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        running_var_unbiased: a.bool("running_var_unbiased", true)?,
        dtype,
        ..Default::default()
    };
    let t = BnTensors::load(ctx, case, dtype)?;
    let step = u64::try_from(a.int("step", 0)?).map_err(|_| "step < 0".to_string())?;
    let eta = crate::batchnorm::exponential_momentum_decay(
        a.f64("eta0", 0.1)? as f32,
        a.f64("decay", 0.9)? as f32,
        step,
    );
    let normalize = match a.str("normalize", "adapted")?.as_str() {
        "adapted" => crate::batchnorm::AdaptNormalize::Adapted,
        "batch" => crate::batchnorm::AdaptNormalize::Batch,
        o => {
            return Err(format!(
                "normalize must be \"adapted\" or \"batch\", got {o:?}"
            ))
        }
    };
    let bn = crate::batchnorm::AdaptiveBn::new(
        ctx,
        crate::batchnorm::AdaptiveBnConfig {
            batch_norm: cfg,
            normalize,
        },
    )
    .map_err(err)?;
    t.run(ctx, |enc, i, o| bn.encode(enc, i, o, eta))
}
