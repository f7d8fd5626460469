//! The norm path of a LLaMA-style decoder in f16: per layer, RMSNorm before attention, then the
//! residual add fused with the RMSNorm before the MLP, then the add fused with the next layer's
//! input norm, and the final `model.norm`. The weights are loaded by their Hugging Face names from
//! a safetensors file (bf16, as such checkpoints ship) that the example writes first.
//!
//! Attention and the MLP are not norms: fixed tensors stand in for their outputs, so the
//! residual stream and every norm are exactly what a real decoder step computes. Every output is
//! checked against the f64 reference (with the same f16 rounding of the stored stream); the
//! example exits non-zero on a mismatch.
//!
//! `cargo run --release --example llama_norms`

use safetensors::tensor::TensorView;
use wgnorm::checkpoint::Checkpoint;
use wgnorm::prelude::*;
use wgnorm::AddRmsNormInputs;
use wgnorm_reference::rownorm::rms_norm;

const LAYERS: usize = 4;
const TOKENS: usize = 7;
const HIDDEN: usize = 512;
const EPS: f32 = 1e-6;

/// The test suite's xorshift values in [-1, 1), scaled.
fn noise(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    wgnorm_tests::noise(seed, len)
        .into_iter()
        .map(|v| v * scale)
        .collect()
}

fn f16r(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f64()).collect()
}

fn bf16(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect()
}

/// Writes the checkpoint with HF names; returns its path and the weights (bf16-exact values).
type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn write_checkpoint() -> Res<(std::path::PathBuf, Vec<Vec<f32>>)> {
    let mut names = Vec::new();
    for l in 0..LAYERS {
        names.push(format!("model.layers.{l}.input_layernorm.weight"));
        names.push(format!("model.layers.{l}.post_attention_layernorm.weight"));
    }
    names.push("model.norm.weight".into());
    let weights: Vec<Vec<f32>> = (0..names.len())
        .map(|i| {
            noise(i as u64 + 7, HIDDEN, 0.5)
                .iter()
                .map(|v| half::bf16::from_f32(1.0 + v).to_f32())
                .collect()
        })
        .collect();
    let bytes: Vec<Vec<u8>> = weights.iter().map(|w| bf16(w)).collect();
    let views = names
        .iter()
        .zip(&bytes)
        .map(|(n, b)| {
            Ok((
                n.clone(),
                TensorView::new(safetensors::Dtype::BF16, vec![HIDDEN], b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let path = std::env::temp_dir().join(format!("llama-norms-{}.safetensors", std::process::id()));
    safetensors::serialize_to_file(views, None, &path)?;
    Ok((path, weights))
}

/// Compares a GPU output (f16) with the f64 reference: relative to the largest |want|.
fn check(what: &str, got: &[f32], want: &[f64]) -> Result<(), String> {
    let scale = want.iter().fold(1e-3f64, |m, w| m.max(w.abs()));
    let err = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / scale)
        .fold(0.0, f64::max);
    println!("{what:<52} max |err| / max |want| = {err:.2e}");
    // f16 storage: half an ulp of the output is 2^-11 ~ 4.9e-4 relative.
    if err.is_nan() || err > 2e-3 {
        return Err(format!("{what}: error {err:.2e} exceeds 2e-3"));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (path, weights) = write_checkpoint()?;
    let ctx = Context::new()?;
    let ckpt = Checkpoint::open(&path)?;
    let cfg = RmsNormConfig {
        eps: EPS,
        dtype: DType::F16,
        ..Default::default()
    };
    let load = |name: &str| ckpt.rms_norm(&ctx, name, cfg);
    let (rms, _) = load("model.norm")?; // one op serves every layer: weights are inputs

    let shape = [TOKENS, HIDDEN];
    let h0 = noise(1, TOKENS * HIDDEN, 4.0);
    let mut h = ctx.upload(&h0, &shape, DType::F16)?;
    let mut h_ref = f16r(&h0);
    let stand_in = |seed: u64| noise(seed, TOKENS * HIDDEN, 2.0);
    let reference = |x: &[f64], w: &[f32]| {
        let w: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        rms_norm(x, HIDDEN, Some(&w), 0.0, EPS as f64).y
    };
    let add_ref = |h: &[f64], out: &[f32]| -> Vec<f64> {
        h.iter().zip(f16r(out)).map(|(a, b)| a + b).collect()
    };
    // The kernel normalizes the f32 sum and stores the stream in f16.
    let stored =
        |v: &[f64]| -> Vec<f64> { v.iter().map(|&a| half::f16::from_f64(a).to_f64()).collect() };

    // Layer 0's input norm has no residual add before it.
    let (_, p) = load("model.layers.0.input_layernorm")?;
    let out = rms.forward(&RmsNormInputs {
        x: &h,
        weight: p.weight.as_ref(),
    })?;
    check(
        "layer 0 input_layernorm",
        &ctx.download(&out.y)?,
        &reference(&h_ref, &weights[0]),
    )?;
    for l in 0..LAYERS {
        // h += attention(x); x = post_attention_layernorm(h), in one pass.
        // Then h += mlp(x); x = next input_layernorm(h) (or model.norm after the last layer).
        let next = if l + 1 < LAYERS {
            format!("model.layers.{}.input_layernorm", l + 1)
        } else {
            "model.norm".to_string()
        };
        let steps = [
            (
                format!("model.layers.{l}.post_attention_layernorm"),
                2 * l + 1,
            ),
            (next, 2 * l + 2),
        ];
        for (k, (name, wi)) in steps.iter().enumerate() {
            let block_out = stand_in((l * 2 + k) as u64 + 100);
            let out_t = ctx.upload(&block_out, &shape, DType::F16)?;
            let (_, p) = load(name)?;
            let (y, h_next) = rms.forward_add(&AddRmsNormInputs {
                x: &out_t,
                residual: &h,
                weight: p.weight.as_ref(),
            })?;
            let sum = add_ref(&h_ref, &block_out);
            check(name, &ctx.download(&y)?, &reference(&sum, &weights[*wi]))?;
            h_ref = stored(&sum);
            check(
                &format!("{name} (residual)"),
                &ctx.download(&h_next)?,
                &h_ref,
            )?;
            h = h_next;
        }
    }
    std::fs::remove_file(path)?;
    println!("ok: {LAYERS} decoder layers' norm path matches the f64 reference");
    Ok(())
}
