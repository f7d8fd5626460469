//! `cargo xtask bench --first-call`: what an app pays at start-up per op. For each op, on a fresh
//! context: the first call (creating the op, compiling its pipelines, recording, running, waiting)
//! and a second call (everything cached); then on another fresh context that loads the first's
//! pipeline cache (Vulkan's `PIPELINE_CACHE`), the first call again. Wall-clock milliseconds:
//! compile time is host time, which GPU timestamps do not see. A driver's own shader cache
//! (Mesa keeps one in memory and on disk) may serve repeated compiles: "fresh context" is cold
//! for wgnorm, not necessarily for the driver.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use wgnorm::prelude::*;
use wgnorm::rmsnorm::{QkNormRope, QkNormRopeConfig, QkNormRopeGradInputs, RopeAngles};
use wgnorm::{NormGradInputs, RmsNormGradInputs};

/// One op's first call: build it on `ctx` and run it once (the result discarded).
type FirstCall = fn(&Context) -> wgnorm::Result<()>;

fn layer_norm(ctx: &Context) -> wgnorm::Result<()> {
    let x = ctx.upload_f32(&vec![0.5; 256 * 1024], &[256, 1024])?;
    let ln = LayerNorm::new(ctx, LayerNormConfig::default())?;
    ln.forward(&LayerNormInputs {
        x: &x,
        weight: None,
        bias: None,
    })?;
    Ok(())
}

fn rms_norm_backward(ctx: &Context) -> wgnorm::Result<()> {
    let x = ctx.upload_f32(&vec![0.5; 256 * 1024], &[256, 1024])?;
    let rms = RmsNorm::new(ctx, RmsNormConfig::default())?;
    rms.backward(&RmsNormGradInputs {
        x: &x,
        residual: None,
        weight: None,
        dy: &x,
        dsum: None,
        rstd: None,
    })?;
    Ok(())
}

fn batch_norm_train(ctx: &Context) -> wgnorm::Result<()> {
    let x = ctx.upload_f32(&vec![0.5; 8 * 64 * 28 * 28], &[8, 64, 28, 28])?;
    let bn = BatchNorm::new(ctx, BatchNormConfig::default())?;
    let y = ctx.empty(x.shape(), DType::F32)?;
    ctx.record_and_submit(|enc| {
        bn.encode(
            enc,
            &BatchNormInputs {
                x: &x,
                weight: None,
                bias: None,
                running_mean: None,
                running_var: None,
            },
            &BatchNormOutputs { y: &y, saved: None },
            wgnorm::Mode::Train,
        )
    })?;
    Ok(())
}

fn group_norm_silu(ctx: &Context, backward: bool) -> wgnorm::Result<()> {
    let x = ctx.upload_f32(&vec![0.5; 320 * 32 * 32], &[1, 320, 32, 32])?;
    let cfg = GroupNormConfig {
        activation: Activation::Silu,
        ..GroupNormConfig::new(32)
    };
    let gn = GroupNorm::new(ctx, cfg)?;
    if backward {
        gn.backward(&NormGradInputs {
            x: &x,
            weight: None,
            bias: None,
            dy: &x,
            saved: None,
        })?;
    } else {
        gn.forward(&NormInputs {
            x: &x,
            weight: None,
            bias: None,
        })?;
    }
    Ok(())
}

fn qk_norm_rope_backward(ctx: &Context) -> wgnorm::Result<()> {
    let x = ctx.upload_f32(&vec![0.5; 64 * 8 * 128], &[64, 8, 128])?;
    let pos = ctx.upload_f32(&(0..64).map(|t| t as f32).collect::<Vec<_>>(), &[64])?;
    let qk = QkNormRope::new(ctx, QkNormRopeConfig::default())?;
    qk.backward(&QkNormRopeGradInputs {
        x: &x,
        weight: None,
        angles: RopeAngles::Positions(&pos),
        dy: &x,
    })?;
    Ok(())
}

fn qk_norm_rope(ctx: &Context) -> wgnorm::Result<()> {
    let x = ctx.upload_f32(&vec![0.5; 64 * 8 * 128], &[64, 8, 128])?;
    let pos = ctx.upload_f32(&(0..64).map(|t| t as f32).collect::<Vec<_>>(), &[64])?;
    let qk = QkNormRope::new(ctx, QkNormRopeConfig::default())?;
    qk.forward(&wgnorm::rmsnorm::QkNormRopeInputs {
        x: &x,
        weight: None,
        angles: RopeAngles::Positions(&pos),
    })?;
    Ok(())
}

fn poincare_batch_norm_backward(ctx: &Context) -> wgnorm::Result<()> {
    let shape = [4, 16, 8, 8];
    let x = ctx.upload_f32(&vec![0.1; 4 * 16 * 64], &shape)?;
    let bias = ctx.upload_f32(&[0.0; 16], &[16])?;
    let weight = ctx.upload_f32(&[1.0], &[1])?;
    let op = wgnorm::PoincareBatchNorm::new(ctx, Default::default())?;
    let inputs = wgnorm::PoincareBatchNormInputs {
        x: &x,
        bias: &bias,
        weight: &weight,
        running_mean: None,
        running_var: None,
    };
    op.backward(&inputs, &x, wgnorm::PoincareStatistics::Batch)?;
    Ok(())
}

/// The ops measured: a forward and a backward of each engine.
fn ops() -> Vec<(&'static str, FirstCall)> {
    vec![
        ("layer_norm 256x1024", layer_norm),
        ("rms_norm_backward 256x1024", rms_norm_backward),
        ("batch_norm_train 8x64x28x28", batch_norm_train),
        ("group_norm_silu 1x320x32x32", |c| group_norm_silu(c, false)),
        ("group_norm_silu_backward 1x320x32x32", |c| {
            group_norm_silu(c, true)
        }),
        ("qk_norm_rope 64x8x128", qk_norm_rope),
        ("qk_norm_rope_backward 64x8x128", qk_norm_rope_backward),
        (
            "poincare_batch_norm_backward 4x16x8x8",
            poincare_batch_norm_backward,
        ),
    ]
}

/// Milliseconds of one call on `ctx`, until the device is idle.
fn timed(ctx: &Context, f: FirstCall) -> Result<f64> {
    let t = Instant::now();
    f(ctx)?;
    ctx.wait(None)?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Prints the table; returns the JSON rows.
pub fn run() -> Result<serde_json::Value> {
    println!("## First call per op (wall ms: fresh context, then warm, then a fresh context loading the pipeline cache)\n");
    println!(
        "| op | pipelines | first call | second call | first call, cache loaded | cache bytes |"
    );
    println!("|---|---|---|---|---|---|");
    // Process-wide start-up (the driver's and the compiler's own) on an op not measured, so the
    // first row does not carry it.
    timed(&crate::context()?, |c| {
        let x = c.upload_f32(&[1.0; 4], &[4])?;
        wgnorm::Elementwise::new(c, Default::default())?.forward(&x)?;
        Ok(())
    })?;
    let mut rows = Vec::new();
    for (name, f) in ops() {
        let cold = crate::context()?;
        let cached = cold.enable_pipeline_cache()?;
        let first = timed(&cold, f)?;
        let second = timed(&cold, f)?;
        let pipelines = cold.pipeline_count();
        let data = cold.pipeline_cache_data();
        let loaded = match (&data, cached) {
            (Some(d), true) => {
                let ctx = crate::context()?;
                // SAFETY: bytes from pipeline_cache_data on this machine, this run.
                unsafe { ctx.load_pipeline_cache(d)? };
                Some(timed(&ctx, f)?)
            }
            _ => None,
        };
        let bytes = data.as_ref().map_or(0, Vec::len);
        let loaded_s = loaded.map_or("no cache (backend)".into(), |v| format!("{v:.1}"));
        println!("| {name} | {pipelines} | {first:.1} | {second:.1} | {loaded_s} | {bytes} |");
        rows.push(json!({
            "op": name,
            "pipelines": pipelines,
            "first_ms": first,
            "second_ms": second,
            "first_with_cache_ms": loaded,
            "cache_bytes": bytes,
        }));
    }
    println!();
    Ok(serde_json::Value::Array(rows))
}
