//! Attribute parsing and tensor helpers shared by the op runners.

use serde_json::Value;

use super::{Case, HostTensor};
use crate::{Context, DType, Tensor};

pub(super) struct Attrs<'a> {
    case: &'a Case,
}

impl<'a> Attrs<'a> {
    /// Fails on any attribute the op does not know: silently ignoring one could hide a semantic.
    pub(super) fn new(case: &'a Case, known: &[&str]) -> Result<Attrs<'a>, String> {
        if let Some(k) = case.attrs.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown attribute {k:?} for op {}", case.op));
        }
        Ok(Attrs { case })
    }

    pub(super) fn f64(&self, k: &str, default: f64) -> Result<f64, String> {
        match self.case.attrs.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or(format!("attribute {k} is not a number: {v}")),
        }
    }

    pub(super) fn bool(&self, k: &str, default: bool) -> Result<bool, String> {
        match self.case.attrs.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or(format!("attribute {k} is not a boolean: {v}")),
        }
    }

    /// A number, or JSON null for "none" (e.g. PyTorch's momentum=None); absent gives `default`.
    pub(super) fn opt_f64(&self, k: &str, default: Option<f64>) -> Result<Option<f64>, String> {
        match self.case.attrs.get(k) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or(format!("attribute {k} is not a number: {v}")),
        }
    }

    pub(super) fn str(&self, k: &str, default: &str) -> Result<String, String> {
        match self.case.attrs.get(k) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or(format!("attribute {k} is not a string: {v}")),
        }
    }

    pub(super) fn int(&self, k: &str, default: i64) -> Result<i64, String> {
        match self.case.attrs.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or(format!("attribute {k} is not an integer: {v}")),
        }
    }
}

pub(super) fn io_dtype(t: &HostTensor) -> Result<DType, String> {
    match t.dtype.as_str() {
        "F32" => Ok(DType::F32),
        "F16" => Ok(DType::F16),
        "BF16" => Ok(DType::BF16),
        d => Err(format!("float input has dtype {d}")),
    }
}

pub(super) fn input<'a>(case: &'a Case, name: &str) -> Result<&'a HostTensor, String> {
    case.inputs
        .get(name)
        .ok_or(format!("case lacks input {name:?}"))
}

pub(super) fn upload(ctx: &Context, t: &HostTensor, dtype: DType) -> Result<Tensor, String> {
    ctx.upload(&t.data, &t.shape, dtype)
        .map_err(|e| e.to_string())
}

pub(super) fn upload_opt(
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

/// An output tensor of a runner (downloaded after the runner returns, so the same runner serves
/// the blocking native path and the browser's async one).
pub(super) fn output(t: &Tensor) -> Tensor {
    t.clone()
}

/// The outputs of an op whose only output is `y`.
pub(super) fn only_y(y: &Tensor) -> Result<super::DeviceOutputs, String> {
    Ok(std::collections::BTreeMap::from([(
        "y".to_string(),
        output(y),
    )]))
}

/// Per-channel parameters and state are f32 in wgnorm whatever the file's float dtype.
pub(super) fn upload_param(
    ctx: &Context,
    case: &Case,
    name: &str,
) -> Result<Option<Tensor>, String> {
    upload_opt(ctx, case, name, DType::F32)
}

pub(super) fn err(e: crate::Error) -> String {
    e.to_string()
}

/// A required attribute (no default in FORMAT.md).
pub(super) fn required<'a>(case: &'a Case, k: &str) -> Result<&'a Value, String> {
    case.attrs
        .get(k)
        .ok_or(format!("{} needs the {k} attribute", case.op))
}
