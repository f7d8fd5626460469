//! `wgnorm run OP --input in.safetensors [--attrs JSON] --output out.safetensors`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use wgnorm::conformance::{self, HostTensor};
use wgnorm::Context;

/// `wgnorm run` options.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// The op (`layer_norm`, `rms_norm`, `batch_norm`, `group_norm`, ...; `wgnorm run --list`
    /// prints them all).
    #[arg(required_unless_present = "list_ops")]
    op: Option<String>,
    /// The inputs, named as the op's conformance signature says (`x`, `weight`, `bias`,
    /// `running_mean`, ...), f32, f16 or bf16 (the dtype of `x` is the dtype the op runs in).
    #[arg(long, required_unless_present = "list_ops")]
    input: Option<PathBuf>,
    /// The op's attributes as a JSON object (e.g. '{"eps": 1e-6, "axis": -1}'); by default the
    /// input file's `attrs` metadata (as conformance case files carry), else none.
    #[arg(long)]
    attrs: Option<String>,
    /// Where the outputs go (f32; an output with as many values as `x` takes `x`'s shape).
    #[arg(long, required_unless_present = "list_ops")]
    output: Option<PathBuf>,
    /// Print the ops `run` knows and exit.
    #[arg(long = "list")]
    list_ops: bool,
}

type Inputs = (BTreeMap<String, HostTensor>, Option<String>);

/// The tensors of `path` and its `attrs` metadata, if any.
fn read_inputs(path: &PathBuf) -> Result<Inputs, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a safetensors file: {e}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| e.to_string())?;
    let attrs = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("attrs").cloned());
    let out = conformance::host_tensors(&st)?;
    Ok((out, attrs))
}

pub fn run(ctx: &Context, o: &Options) -> Result<(), String> {
    if o.list_ops {
        for (name, _) in wgnorm::registry::signatures() {
            println!("{name}");
        }
        return Ok(());
    }
    let op = o.op.as_deref().unwrap_or_default();
    if !conformance::implemented(op) {
        return Err(format!(
            "unknown op {op:?} (`wgnorm run --list` lists them)"
        ));
    }
    let (input, output) = (o.input.as_ref().unwrap(), o.output.as_ref().unwrap());
    let (inputs, file_attrs) = read_inputs(input)?;
    let text = o
        .attrs
        .clone()
        .or(file_attrs)
        .unwrap_or_else(|| "{}".into());
    let attrs = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(format!("attrs must be a JSON object, got {text}")),
    };
    let x_shape = inputs.get("x").map(|t| t.shape.clone());
    let outputs = conformance::execute(ctx, op, attrs, inputs)?;
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = outputs
        .iter()
        .map(|(name, v)| {
            let shape = match &x_shape {
                Some(s) if s.iter().product::<usize>() == v.len() => s.clone(),
                _ => vec![v.len()],
            };
            (
                name.clone(),
                shape,
                v.iter().flat_map(|f| f.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = data
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| e.to_string())?;
    safetensors::serialize_to_file(views, None, output).map_err(|e| e.to_string())?;
    for (n, s, _) in &data {
        println!("{n}: {s:?}");
    }
    println!("wrote {}", output.display());
    Ok(())
}
