//! Conformance cases (`shared/conformance/FORMAT.md`): one `.safetensors` file per case holding
//! inputs, `expected.<output>` tensors (f32) and metadata (`op`, `attrs` JSON, `atol`, `rtol`).
//!
//! The op registry here is the one place the case format is implemented: the xtask runner and the
//! integration tests both call [`run_file`].

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::{Context, DType, Tensor};

/// A tensor read from a case file, widened to f32.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    /// Storage type in the file: `F32`, `F16` (the I/O dtype to run with) or `U8` (masks).
    pub dtype: String,
    pub data: Vec<f32>,
}

/// A parsed case.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub op: String,
    pub attrs: serde_json::Map<String, Value>,
    pub atol: f64,
    pub rtol: f64,
    pub inputs: BTreeMap<String, HostTensor>,
    pub expected: BTreeMap<String, HostTensor>,
}

/// How a case ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Passed,
    /// The op ran and an output was wrong, or the case was malformed: says which and where.
    Failed(String),
    /// The op is not implemented yet.
    Skipped,
}

/// Reads a case file. Errors are strings naming the file and what is wrong.
pub fn load(path: &Path) -> Result<Case, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("{name}: not a safetensors file: {e}"))?;
    let md = meta
        .metadata()
        .clone()
        .ok_or(format!("{name}: no __metadata__"))?;
    let get = |k: &str| {
        md.get(k)
            .cloned()
            .ok_or(format!("{name}: metadata lacks {k:?}"))
    };
    let op = get("op")?;
    let attrs = match md.get("attrs") {
        Some(a) => match serde_json::from_str(a) {
            Ok(Value::Object(m)) => m,
            _ => return Err(format!("{name}: attrs is not a JSON object")),
        },
        None => Default::default(),
    };
    let num = |k: &str| -> Result<f64, String> {
        get(k)?
            .trim()
            .parse()
            .map_err(|_| format!("{name}: {k} is not a number"))
    };
    let (atol, rtol) = (num("atol")?, num("rtol")?);
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{name}: not a safetensors file: {e}"))?;
    let mut inputs = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for (tname, view) in st.tensors() {
        let raw = view.data();
        let (dtype, data): (&str, Vec<f32>) = match view.dtype() {
            safetensors::Dtype::F32 => ("F32", bytemuck_f32(raw)),
            safetensors::Dtype::F16 => (
                "F16",
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            safetensors::Dtype::U8 => ("U8", raw.iter().map(|&b| b as f32).collect()),
            other => {
                return Err(format!(
                    "{name}: tensor {tname} has unsupported dtype {other:?}"
                ))
            }
        };
        let t = HostTensor {
            shape: view.shape().to_vec(),
            dtype: dtype.into(),
            data,
        };
        match tname.strip_prefix("expected.") {
            Some(out) => {
                expected.insert(out.to_string(), t);
            }
            None => {
                inputs.insert(tname, t);
            }
        }
    }
    if expected.is_empty() {
        return Err(format!("{name}: no expected.* tensor"));
    }
    Ok(Case {
        name,
        op,
        attrs,
        atol,
        rtol,
        inputs,
        expected,
    })
}

fn bytemuck_f32(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Named outputs an op produced, as f32.
pub type Outputs = BTreeMap<String, Vec<f32>>;

type RunFn = fn(&Context, &Case) -> Result<Outputs, String>;

/// The op registry: case op name → runner. Ops not listed are reported as skipped.
pub const OPS: &[(&str, RunFn)] = &[
    ("layer_norm", run_layer_norm),
    ("rms_norm", run_rms_norm),
    ("batch_norm", run_batch_norm),
    ("group_norm", run_group_norm),
    ("instance_norm", run_instance_norm),
    ("lp_norm", run_lp_norm),
    ("add_layer_norm", run_add_layer_norm),
    ("selu", run_selu),
    ("test_time_bn", run_test_time_bn),
    ("adab2n", run_adab2n),
    ("ghost_batch_norm", run_ghost_batch_norm),
    ("weight_standardization", run_weight_standardization),
    ("evonorm_s0", run_evonorm_s0),
    ("batch_channel_norm", run_batch_channel_norm),
    ("power_norm", run_power_norm),
    ("sinkhorn_normalize", run_sinkhorn_normalize),
    ("unified_norm", run_unified_norm),
    ("rep_batch_norm", run_rep_batch_norm),
    ("add_rms_norm", run_add_rms_norm),
    ("mean_variance_norm", run_mean_variance_norm),
    ("poincare_midpoint", run_poincare_midpoint),
    ("poincare_batch_norm", run_poincare_batch_norm),
    ("ibn_norm", run_ibn_norm),
    ("evonorm_b0", run_evonorm_b0),
    ("unmix_tns", run_unmix_tns),
    ("region_norm_b", run_region_norm_b),
    ("estbn", run_estbn),
    ("adaptive_bn", run_adaptive_bn),
    ("region_norm_l", run_region_norm_l),
];

/// Whether the runtime implements `op`.
pub fn implemented(op: &str) -> bool {
    OPS.iter().any(|(n, _)| *n == op)
}

/// Loads and runs one case file. `Err` means the file could not be read at all.
pub fn run_file(ctx: &Context, path: &Path) -> Result<(Case, Outcome), String> {
    let case = load(path)?;
    let outcome = run(ctx, &case);
    Ok((case, outcome))
}

/// Runs a parsed case and compares every expected output.
pub fn run(ctx: &Context, case: &Case) -> Outcome {
    let Some((_, f)) = OPS.iter().find(|(n, _)| *n == case.op) else {
        return Outcome::Skipped;
    };
    let got = match f(ctx, case) {
        Ok(g) => g,
        Err(e) => return Outcome::Failed(e),
    };
    for (name, want) in &case.expected {
        let Some(g) = got.get(name) else {
            return Outcome::Failed(format!("op produced no output {name:?}"));
        };
        if let Err(e) = compare(name, g, &want.data, case.atol, case.rtol) {
            return Outcome::Failed(e);
        }
    }
    Outcome::Passed
}

/// `|got - want| <= atol + rtol * |want|` element-wise; NaN must match NaN and an infinity the
/// same infinity. The error names the worst element.
pub fn compare(name: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{name}: {} elements, expected {}",
            got.len(),
            want.len()
        ));
    }
    let mut worst: Option<(usize, f64)> = None;
    let mut bad = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        };
        if !ok {
            bad += 1;
            let err = if g.is_finite() {
                (g - w).abs()
            } else {
                f64::INFINITY
            };
            if worst.is_none_or(|(_, e)| err > e) {
                worst = Some((i, err));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, err)) => Err(format!(
            "{name}[{i}] = {} expected {} (|error| {err:.3e}, atol {atol}, rtol {rtol}; {bad} of {} elements out)",
            got[i],
            want[i],
            got.len()
        )),
    }
}

// ---- attribute and input helpers ----

struct Attrs<'a> {
    case: &'a Case,
}

impl<'a> Attrs<'a> {
    /// Fails on any attribute the op does not know: silently ignoring one could hide a semantic.
    fn new(case: &'a Case, known: &[&str]) -> Result<Attrs<'a>, String> {
        if let Some(k) = case.attrs.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown attribute {k:?} for op {}", case.op));
        }
        Ok(Attrs { case })
    }

    fn f64(&self, k: &str, default: f64) -> Result<f64, String> {
        match self.case.attrs.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or(format!("attribute {k} is not a number: {v}")),
        }
    }

    fn bool(&self, k: &str, default: bool) -> Result<bool, String> {
        match self.case.attrs.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or(format!("attribute {k} is not a boolean: {v}")),
        }
    }

    /// A number, or JSON null for "none" (e.g. PyTorch's momentum=None); absent gives `default`.
    fn opt_f64(&self, k: &str, default: Option<f64>) -> Result<Option<f64>, String> {
        match self.case.attrs.get(k) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or(format!("attribute {k} is not a number: {v}")),
        }
    }

    fn str(&self, k: &str, default: &str) -> Result<String, String> {
        match self.case.attrs.get(k) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or(format!("attribute {k} is not a string: {v}")),
        }
    }

    fn int(&self, k: &str, default: i64) -> Result<i64, String> {
        match self.case.attrs.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or(format!("attribute {k} is not an integer: {v}")),
        }
    }
}

fn io_dtype(t: &HostTensor) -> Result<DType, String> {
    match t.dtype.as_str() {
        "F32" => Ok(DType::F32),
        "F16" => Ok(DType::F16),
        d => Err(format!("float input has dtype {d}")),
    }
}

fn input<'a>(case: &'a Case, name: &str) -> Result<&'a HostTensor, String> {
    case.inputs
        .get(name)
        .ok_or(format!("case lacks input {name:?}"))
}

fn upload(ctx: &Context, t: &HostTensor, dtype: DType) -> Result<Tensor, String> {
    ctx.upload(&t.data, &t.shape, dtype)
        .map_err(|e| e.to_string())
}

fn upload_opt(
    ctx: &Context,
    case: &Case,
    name: &str,
    dtype: DType,
) -> Result<Option<Tensor>, String> {
    case.inputs
        .get(name)
        .map(|t| upload(ctx, t, dtype))
        .transpose()
}

fn download(ctx: &Context, t: &Tensor) -> Result<Vec<f32>, String> {
    ctx.download(t).map_err(|e| e.to_string())
}

fn run_layer_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
        ("y".to_string(), download(ctx, &out.y)?),
        ("mean".to_string(), download(ctx, &out.mean)?),
        ("rstd".to_string(), download(ctx, &out.rstd)?),
    ]))
}

fn run_rms_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
        ("y".to_string(), download(ctx, &out.y)?),
        ("rstd".to_string(), download(ctx, &out.rstd)?),
    ]))
}

/// Per-channel parameters and state are f32 in wgnorm whatever the file's float dtype.
fn upload_param(ctx: &Context, case: &Case, name: &str) -> Result<Option<Tensor>, String> {
    upload_opt(ctx, case, name, DType::F32)
}

fn err(e: crate::Error) -> String {
    e.to_string()
}

fn run_group_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_instance_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_lp_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["axis", "p"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let p = a.int("p", 2)?;
    let op = crate::LpNorm::new(
        ctx,
        a.int("axis", -1)? as isize,
        u32::try_from(p).unwrap_or(0),
        dtype,
    )
    .map_err(err)?;
    let y = op.forward(&upload(ctx, x, dtype)?).map_err(err)?;
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_mean_variance_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["axes"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
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
    let _ = a;
    let op = crate::MeanVarianceNorm::new(ctx, &axes, 1e-9, dtype).map_err(err)?;
    let y = op.forward(&upload(ctx, x, dtype)?).map_err(err)?;
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_add_layer_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
        ("y".to_string(), download(ctx, &y)?),
        ("sum".to_string(), download(ctx, &sum)?),
    ]))
}

fn run_add_rms_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
        ("y".to_string(), download(ctx, &y)?),
        ("sum".to_string(), download(ctx, &sum)?),
    ]))
}

fn run_selu(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["alpha", "gamma"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let act = crate::Activation::Selu {
        alpha: a.f64("alpha", 1.6732632423543772)? as f32,
        lambda: a.f64("gamma", 1.0507009873554805)? as f32,
    };
    let op = crate::Elementwise::new(ctx, act, dtype).map_err(err)?;
    let y = op.forward(&upload(ctx, x, dtype)?).map_err(err)?;
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_weight_standardization(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["unbiased", "eps_inside_sqrt", "eps"])?;
    let w = input(case, "weight")?;
    let dtype = io_dtype(w)?;
    let variant =
        crate::WsVariant::from_flags(a.bool("unbiased", true)?, a.bool("eps_inside_sqrt", false)?);
    let op = crate::WeightStandardization::new(ctx, variant, a.f64("eps", 1e-5)? as f32, dtype)
        .map_err(err)?;
    let y = op.forward(&upload(ctx, w, dtype)?).map_err(err)?;
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_evonorm_s0(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["groups", "eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let groups = usize::try_from(a.int("groups", 32)?).map_err(|_| "groups < 0".to_string())?;
    let op = crate::EvoNormS0::new(
        ctx,
        groups,
        a.f64("eps", 1e-5)? as f32,
        crate::Layout::Nchw,
        dtype,
    )
    .map_err(err)?;
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
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_batch_channel_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        momentum: a.opt_f64("momentum", Some(0.1))?.map(|m| m as f32),
        dtype,
        ..Default::default()
    };
    let groups =
        usize::try_from(a.int("num_groups", 32)?).map_err(|_| "num_groups < 0".to_string())?;
    let mut op = crate::batchnorm::BatchChannelNorm::new(ctx, cfg, groups).map_err(err)?;
    if let Some(ms) = a.opt_f64("estbn_moving_speed", None)? {
        op = op.with_estbn(ms as f32);
    }
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
    ctx.record_and_submit(|enc| op.encode(enc, &inputs, &y, training))
        .map_err(err)?;
    let mut out = BTreeMap::from([("y".to_string(), download(ctx, &y)?)]);
    if let (Some(rm), Some(rv)) = (&rm, &rv) {
        out.insert("running_mean".into(), download(ctx, rm)?);
        out.insert("running_var".into(), download(ctx, rv)?);
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
    ) -> Result<Outputs, String> {
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
        let mut out = BTreeMap::from([("y".to_string(), download(ctx, &self.y)?)]);
        if let (Some(rm), Some(rv)) = (&self.rm, &self.rv) {
            out.insert("running_mean".into(), download(ctx, rm)?);
            out.insert("running_var".into(), download(ctx, rv)?);
        }
        Ok(out)
    }
}

/// A required attribute (no default in FORMAT.md).
fn required<'a>(case: &'a Case, k: &str) -> Result<&'a Value, String> {
    case.attrs
        .get(k)
        .ok_or(format!("{} needs the {k} attribute", case.op))
}

fn run_batch_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
    BnTensors::load(ctx, case, dtype)?.run(ctx, |enc, i, o| bn.encode(enc, i, o, training))
}

fn run_test_time_bn(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["w_src", "eps"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    required(case, "w_src")?;
    let w_src = a.f64("w_src", 0.0)? as f32;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
        ..Default::default()
    };
    let bn = crate::BatchNorm::new(ctx, cfg).map_err(err)?;
    BnTensors::load(ctx, case, dtype)?.run(ctx, |enc, i, o| bn.encode_test_time(enc, i, o, w_src))
}

fn run_rep_batch_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
    let bn = crate::BatchNorm::new(ctx, cfg).map_err(err)?;
    let alpha = upload(ctx, input(case, "alpha")?, DType::F32)?;
    BnTensors::load(ctx, case, dtype)?
        .run(ctx, |enc, i, o| bn.encode_rep(enc, i, &alpha, o, training))
}

fn run_adab2n(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
            bn.encode(enc, i, o, false)
        }
    })
}

fn run_ghost_batch_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
    let bn = crate::BatchNorm::new(ctx, cfg).map_err(err)?;
    BnTensors::load(ctx, case, dtype)?
        .run(ctx, |enc, i, o| bn.encode_ghost(enc, i, o, ghost, training))
}

fn run_power_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
    let mut out = BTreeMap::from([("y".to_string(), download(ctx, &y)?)]);
    if training {
        out.insert("running_phi".into(), download(ctx, &phi)?);
    }
    Ok(out)
}

fn run_sinkhorn_normalize(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["iterations", "eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let iterations =
        usize::try_from(a.int("iterations", 5)?).map_err(|_| "iterations < 0".to_string())?;
    let op = crate::SinkhornNormalize::new(ctx, iterations, a.f64("eps", 1e-8)? as f32, dtype)
        .map_err(err)?;
    let y = op.forward(&upload(ctx, x, dtype)?).map_err(err)?;
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_unified_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["eps", "training"])?;
    if a.bool("training", false)? {
        return Err(
            "unified_norm: the case format defines only the inference form (a training step needs the window state it does not carry)"
                .into(),
        );
    }
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let op = crate::UnifiedNorm::new(ctx, a.f64("eps", 1e-5)? as f32, dtype).map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let (w, b) = (
        upload_param(ctx, case, "weight")?,
        upload_param(ctx, case, "bias")?,
    );
    let rv = upload_param(ctx, case, "running_var")?.ok_or("case lacks input \"running_var\"")?;
    let y = ctx.empty(xt.shape(), dtype).map_err(err)?;
    ctx.record_and_submit(|enc| op.encode_infer(enc, &xt, w.as_ref(), b.as_ref(), &rv, &y))
        .map_err(err)?;
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_poincare_midpoint(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["c"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let op = crate::PoincareMidpoint::new(ctx, a.f64("c", 0.1)? as f32, -1, dtype).map_err(err)?;
    let m = op.forward(&upload(ctx, x, dtype)?).map_err(err)?;
    Ok(BTreeMap::from([("m".to_string(), download(ctx, &m)?)]))
}

fn run_poincare_batch_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_ibn_norm(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["ratio", "eps", "momentum", "training"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let op = crate::IbnNorm::new(
        ctx,
        a.f64("ratio", 0.5)? as f32,
        a.f64("eps", 1e-5)? as f32,
        a.f64("momentum", 0.1)? as f32,
        crate::Layout::Nchw,
        dtype,
    )
    .map_err(err)?;
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
    let y = op.forward(&inputs, training).map_err(err)?;
    let mut out = BTreeMap::from([("y".to_string(), download(ctx, &y)?)]);
    if training {
        out.insert("running_mean".into(), download(ctx, &rm)?);
        out.insert("running_var".into(), download(ctx, &rv)?);
    }
    Ok(out)
}

fn run_evonorm_b0(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
        a.f64("eps", 1e-5)? as f32,
        a.f64("momentum", 0.1)? as f32,
        running,
        crate::Layout::Nchw,
        dtype,
    )
    .map_err(err)?;
    let xt = upload(ctx, x, dtype)?;
    let p = |n: &str| upload(ctx, input(case, n)?, DType::F32);
    let (w, b, v, rv) = (p("weight")?, p("bias")?, p("v")?, p("running_var")?);
    let training = a.bool("training", false)?;
    let inputs = crate::EvoNormB0Inputs {
        x: &xt,
        weight: &w,
        bias: &b,
        v: &v,
        running_var: &rv,
    };
    let y = op.forward(&inputs, training).map_err(err)?;
    let mut out = BTreeMap::from([("y".to_string(), download(ctx, &y)?)]);
    if training {
        out.insert("running_var".into(), download(ctx, &rv)?);
    }
    Ok(out)
}

fn run_unmix_tns(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["momentum_bn", "temperature", "eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let cm = input(case, "component_mean")?;
    let k = *cm.shape.first().ok_or("component_mean has no shape")?;
    let op = crate::UnmixTns::new(
        ctx,
        k,
        a.f64("momentum_bn", 0.1)? as f32,
        a.f64("temperature", 0.07)? as f32,
        a.f64("eps", 1e-5)? as f32,
        crate::Layout::Nchw,
        dtype,
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
        ("y".to_string(), download(ctx, &y)?),
        ("component_mean".to_string(), download(ctx, &m)?),
        ("component_var".to_string(), download(ctx, &v)?),
    ]))
}

fn run_region_norm_b(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["eps"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let op = crate::RegionNormB::new(ctx, a.f64("eps", 1e-5)? as f32, crate::Layout::Nchw, dtype)
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
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}

fn run_estbn(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["eps", "moving_speed", "training"])?;
    let dtype = io_dtype(input(case, "x")?)?;
    let cfg = crate::BatchNormConfig {
        eps: a.f64("eps", 1e-5)? as f32,
        dtype,
        ..Default::default()
    };
    let bn = crate::BatchNorm::new(ctx, cfg).map_err(err)?;
    let t = BnTensors::load(ctx, case, dtype)?;
    let (ms, training) = (
        a.f64("moving_speed", 0.01)? as f32,
        a.bool("training", false)?,
    );
    t.run(ctx, |enc, i, o| bn.encode_estbn(enc, i, o, ms, training))
}

fn run_adaptive_bn(ctx: &Context, case: &Case) -> Result<Outputs, String> {
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
    let bn = crate::BatchNorm::new(ctx, cfg).map_err(err)?;
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
    t.run(ctx, |enc, i, o| {
        bn.encode_adaptive(enc, i, o, eta, normalize)
    })
}

fn run_region_norm_l(ctx: &Context, case: &Case) -> Result<Outputs, String> {
    let a = Attrs::new(case, &["eps", "threshold"])?;
    let x = input(case, "x")?;
    let dtype = io_dtype(x)?;
    let op = crate::RegionNormL::new(
        ctx,
        a.f64("eps", 1e-5)? as f32,
        a.f64("threshold", 0.8)? as f32,
        crate::Layout::Nchw,
        dtype,
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
    Ok(BTreeMap::from([("y".to_string(), download(ctx, &y)?)]))
}
