//! Conformance cases (`tests/conformance/FORMAT.md`): one `.safetensors` file per case holding
//! inputs, `expected.<output>` tensors (f32) and metadata (`op`, `attrs` JSON, `atol`, `rtol`).
//!
//! The op registry here is the one place the case format is implemented: the xtask runner and the
//! integration tests both call [`run_file`].

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

mod attrs;
pub(crate) mod batch;
pub(crate) mod grads;
pub(crate) mod research;
pub(crate) mod rows;

use crate::{Context, Tensor};

/// A tensor read from a case file, widened to f32.
#[derive(Clone, Debug)]
pub struct HostTensor {
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Storage type in the file: `F32`, `F16`, `BF16` (the I/O dtype to run with) or `U8` (masks).
    pub dtype: String,
    /// The values, row-major, widened to f32.
    pub data: Vec<f32>,
}

/// A parsed case.
#[derive(Clone, Debug)]
pub struct Case {
    /// The case's name (its file stem).
    pub name: String,
    /// The op it runs (`layer_norm`, `batch_norm`, ...: tests/conformance/FORMAT.md).
    pub op: String,
    /// The op's attributes (JSON).
    pub attrs: serde_json::Map<String, Value>,
    /// Absolute tolerance of the comparison.
    pub atol: f64,
    /// Relative tolerance of the comparison.
    pub rtol: f64,
    /// Input tensors by name.
    pub inputs: BTreeMap<String, HostTensor>,
    /// Expected outputs by name (`expected.<name>` in the file).
    pub expected: BTreeMap<String, HostTensor>,
}

/// How a case ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Every expected output matched.
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
    parse(&name, &bytes)
}

/// Parses the bytes of a case file named `name` (file name, for messages and the case name).
pub fn parse(name: &str, bytes: &[u8]) -> Result<Case, String> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
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
    if !(atol.is_finite() && atol >= 0.0 && rtol.is_finite() && rtol >= 0.0) {
        return Err(format!(
            "{name}: atol {atol} and rtol {rtol} must be finite and >= 0"
        ));
    }
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("{name}: not a safetensors file: {e}"))?;
    let mut inputs = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for (tname, t) in host_tensors(&st).map_err(|e| format!("{name}: {e}"))? {
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
        name: name.to_string(),
        op,
        attrs,
        atol,
        rtol,
        inputs,
        expected,
    })
}

/// A safetensors tensor's values widened to f32 (exactly), with its dtype's name: `F32`, `F16`,
/// `BF16` or `U8` (masks); `None` for any other dtype.
pub fn widen(view: &safetensors::tensor::TensorView<'_>) -> Option<(&'static str, Vec<f32>)> {
    let raw = view.data();
    let halves = |f: fn([u8; 2]) -> f32| raw.chunks_exact(2).map(|c| f([c[0], c[1]])).collect();
    Some(match view.dtype() {
        safetensors::Dtype::F32 => (
            "F32",
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        safetensors::Dtype::F16 => ("F16", halves(|b| half::f16::from_le_bytes(b).to_f32())),
        safetensors::Dtype::BF16 => ("BF16", halves(|b| half::bf16::from_le_bytes(b).to_f32())),
        safetensors::Dtype::U8 => ("U8", raw.iter().map(|&b| b as f32).collect()),
        _ => return None,
    })
}

/// Every tensor of a safetensors file, widened ([`widen`]); a tensor of another dtype is an
/// error naming it.
pub fn host_tensors(
    st: &safetensors::SafeTensors<'_>,
) -> Result<BTreeMap<String, HostTensor>, String> {
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let (dtype, data) = widen(&view)
            .ok_or_else(|| format!("tensor {name} has unsupported dtype {:?}", view.dtype()))?;
        let t = HostTensor {
            shape: view.shape().to_vec(),
            dtype: dtype.into(),
            data,
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// Named outputs an op produced, as f32.
pub type Outputs = BTreeMap<String, Vec<f32>>;

/// Named outputs an op produced, still on the device: runners record and submit, and the caller
/// downloads (blocking natively, awaiting in a browser).
pub type DeviceOutputs = BTreeMap<String, Tensor>;

/// A conformance runner: one case in, the device outputs by name.
pub type RunFn = fn(&Context, &Case) -> Result<DeviceOutputs, String>;

/// Whether the runtime implements `op`.
pub fn implemented(op: &str) -> bool {
    crate::registry::runner(op).is_some()
}

/// Loads and runs one case file. `Err` means the file could not be read at all.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_file(ctx: &Context, path: &Path) -> Result<(Case, Outcome), String> {
    let case = load(path)?;
    let outcome = run(ctx, &case);
    Ok((case, outcome))
}

/// Runs a parsed case and compares every expected output. A runner that panics on a case it
/// should have refused is reported as a failed case (naming the panic), never unwound into the
/// caller: case files are user data.
#[cfg(not(target_arch = "wasm32"))]
pub fn run(ctx: &Context, case: &Case) -> Outcome {
    pollster::block_on(run_async(ctx, case))
}

/// [`run`] without blocking: the path of the browser harness (any target).
pub async fn run_async(ctx: &Context, case: &Case) -> Outcome {
    let Some(f) = crate::registry::runner(&case.op) else {
        return Outcome::Skipped;
    };
    let got = match record(&f, ctx, case) {
        Ok(g) => g,
        Err(e) => return Outcome::Failed(e),
    };
    let got = match fetch(ctx, got).await {
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

/// Runs a runner, turning a panic into an error that names it.
fn record(f: &RunFn, ctx: &Context, case: &Case) -> Result<DeviceOutputs, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ctx, case))) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(format!(
                "the {} runner panicked on this case: {msg} (a wgnorm bug: it should be a typed error)",
                case.op
            ))
        }
    }
}

/// Downloads every output.
async fn fetch(ctx: &Context, outputs: DeviceOutputs) -> Result<Outputs, String> {
    let mut out = Outputs::new();
    for (name, t) in outputs {
        let v = ctx.download_async(&t).await.map_err(|e| e.to_string())?;
        out.insert(name, v);
    }
    Ok(out)
}

/// Runs `op` on `inputs` (named as in `tests/conformance/FORMAT.md`) with `attrs`, returning
/// every output by name: the path of the `wgnorm run` command. A runner panic is an error
/// naming it, as in [`run`].
#[cfg(not(target_arch = "wasm32"))]
pub fn execute(
    ctx: &Context,
    op: &str,
    attrs: serde_json::Map<String, Value>,
    inputs: BTreeMap<String, HostTensor>,
) -> Result<Outputs, String> {
    let Some(f) = crate::registry::runner(op) else {
        let known: Vec<&str> = crate::registry::signatures().map(|(n, _)| n).collect();
        return Err(format!("unknown op {op:?}; known: {}", known.join(", ")));
    };
    let case = Case {
        name: op.to_string(),
        op: op.to_string(),
        attrs,
        atol: 0.0,
        rtol: 0.0,
        inputs,
        expected: BTreeMap::new(),
    };
    let outputs = record(&f, ctx, &case)?;
    pollster::block_on(fetch(ctx, outputs))
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
