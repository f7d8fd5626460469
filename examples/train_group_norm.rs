//! Training with the backward ops: fits the affine parameters of a GroupNorm + SiLU layer to a
//! target layer's output by gradient descent, forward and backward on the GPU, and prints the
//! loss falling. Exits with an error if it does not fall by 100x.
//!
//! `cargo run --release --example train_group_norm`

use wgnorm::prelude::*;
use wgnorm::{NormGradInputs, NormGradOutputs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    let (n, c, h, w, groups) = (4usize, 32usize, 8usize, 8usize, 8usize);
    let numel = n * c * h * w;
    let gn = GroupNorm::new(
        &ctx,
        GroupNormConfig {
            activation: Activation::Silu,
            ..GroupNormConfig::new(groups)
        },
    )?;

    // Data and the target layer's parameters.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 20001) as f32 / 10000.0 - 1.0
    };
    let x_host: Vec<f32> = (0..numel).map(|_| 2.0 * rand() + 0.5).collect();
    let w_target: Vec<f32> = (0..c).map(|i| 1.5 + 0.5 * (i as f32).sin()).collect();
    let b_target: Vec<f32> = (0..c).map(|i| 0.3 * (i as f32).cos()).collect();
    let x = ctx.upload_f32(&x_host, &[n, c, h, w])?;
    let target = gn.forward(&NormInputs {
        x: &x,
        weight: Some(&ctx.upload_f32(&w_target, &[c])?),
        bias: Some(&ctx.upload_f32(&b_target, &[c])?),
    })?;
    let target = ctx.download(&target)?;

    // The layer being trained starts at the identity affine.
    let (mut wv, mut bv) = (vec![1.0f32; c], vec![0.0f32; c]);
    let weight = ctx.upload_f32(&wv, &[c])?;
    let bias = ctx.upload_f32(&bv, &[c])?;
    let y = ctx.empty(&[n, c, h, w], DType::F32)?;
    let dy = ctx.empty(&[n, c, h, w], DType::F32)?;
    let dx = ctx.empty(&[n, c, h, w], DType::F32)?;
    let (dweight, dbias) = (ctx.empty(&[c], DType::F32)?, ctx.empty(&[c], DType::F32)?);
    // loss = sum((y - target)^2) / (2 N H W): per channel, the mean squared error over its values.
    let per_channel = (n * h * w) as f32;
    let lr = 0.5;
    let mut first = None;
    let mut loss = 0.0;
    for step in 0..=60 {
        ctx.record_and_submit(|enc| {
            gn.encode(
                enc,
                &NormInputs {
                    x: &x,
                    weight: Some(&weight),
                    bias: Some(&bias),
                },
                &NormOutputs { y: &y, saved: None },
            )
        })?;
        let yv = ctx.download(&y)?;
        let diff: Vec<f32> = yv.iter().zip(&target).map(|(a, b)| a - b).collect();
        loss = diff.iter().map(|d| d * d).sum::<f32>() / (2.0 * per_channel);
        first.get_or_insert(loss);
        if step % 10 == 0 {
            println!("step {step:2}: loss {loss:.6}");
        }
        let grad: Vec<f32> = diff.iter().map(|d| d / per_channel).collect();
        ctx.queue()
            .write_buffer(dy.buffer(), dy.offset(), bytemuck::cast_slice(&grad));
        ctx.record_and_submit(|enc| {
            gn.encode_backward(
                enc,
                &NormGradInputs {
                    x: &x,
                    weight: Some(&weight),
                    bias: Some(&bias),
                    dy: &dy,
                    saved: None,
                },
                &NormGradOutputs {
                    dx: &dx,
                    dweight: Some(&dweight),
                    dbias: Some(&dbias),
                },
            )
        })?;
        let (gw, gb) = (ctx.download(&dweight)?, ctx.download(&dbias)?);
        for i in 0..c {
            wv[i] -= lr * gw[i];
            bv[i] -= lr * gb[i];
        }
        ctx.queue()
            .write_buffer(weight.buffer(), weight.offset(), bytemuck::cast_slice(&wv));
        ctx.queue()
            .write_buffer(bias.buffer(), bias.offset(), bytemuck::cast_slice(&bv));
    }
    let first = first.unwrap_or(0.0);
    println!("loss {first:.6} -> {loss:.6}");
    if loss.is_nan() || loss >= first / 100.0 {
        return Err(format!("the loss did not fall 100x: {first} -> {loss}").into());
    }
    Ok(())
}
