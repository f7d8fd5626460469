//! Training through the norms of a tiny attention-input block: `h = SiLU(RMSNorm(x) * w1)`
//! over the hidden size, then QK-norm + RoPE over `h` seen as `[tokens, heads, head_dim]` (Qwen3 /
//! OLMo 2 style: per-head RMSNorm with a shared weight `w2`, NeoX rotation from positions). Both
//! weights are fitted by gradient descent to a target block's output, forward and backward on
//! the GPU (`RmsNorm::backward` through the fused SiLU, `QkNormRope::backward` through the
//! rotation), and the loss must fall by 100x, or the example exits with an error.
//!
//! `cargo run --release --example train_qk_block`

use wgnorm::prelude::*;
use wgnorm::rmsnorm::RopeAngles;
use wgnorm::rmsnorm::{QkNormRope, QkNormRopeConfig, QkNormRopeGradInputs, QkNormRopeInputs};
use wgnorm::RmsNormGradInputs;

const TOKENS: usize = 16;
const HEADS: usize = 4;
const HEAD_DIM: usize = 32;
const HIDDEN: usize = HEADS * HEAD_DIM;

/// The block's two layers and their fixed inputs.
struct Block {
    rms: RmsNorm,
    qk: QkNormRope,
    x: Tensor,
    positions: Tensor,
}

impl Block {
    /// y for weights `w1` `[HIDDEN]` and `w2` `[HEAD_DIM]`, and the hidden state h.
    fn forward(&self, w1: &Tensor, w2: &Tensor) -> wgnorm::Result<(Tensor, Tensor)> {
        let h = self.rms.forward(&RmsNormInputs {
            x: &self.x,
            weight: Some(w1),
        })?;
        let h = h.y.reshape(&[TOKENS, HEADS, HEAD_DIM])?;
        let y = self.qk.forward(&QkNormRopeInputs {
            x: &h,
            weight: Some(w2),
            angles: RopeAngles::Positions(&self.positions),
        })?;
        Ok((y, h))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 20001) as f32 / 10000.0 - 1.0
    };
    let x: Vec<f32> = (0..TOKENS * HIDDEN).map(|_| 1.5 * rand() + 0.2).collect();
    let positions: Vec<f32> = (0..TOKENS).map(|t| t as f32).collect();
    let block = Block {
        rms: RmsNorm::new(&ctx, RmsNormConfig::default())?.with_activation(Activation::Silu),
        qk: QkNormRope::new(&ctx, QkNormRopeConfig::default())?,
        x: ctx.upload_f32(&x, &[TOKENS, HIDDEN])?,
        positions: ctx.upload_f32(&positions, &[TOKENS])?,
    };
    let w1_target: Vec<f32> = (0..HIDDEN)
        .map(|i| 1.0 + 0.4 * (i as f32 * 0.7).sin())
        .collect();
    let w2_target: Vec<f32> = (0..HEAD_DIM)
        .map(|i| 1.0 + 0.5 * (i as f32 * 0.3).cos())
        .collect();
    let (target, _) = block.forward(
        &ctx.upload_f32(&w1_target, &[HIDDEN])?,
        &ctx.upload_f32(&w2_target, &[HEAD_DIM])?,
    )?;
    let target = ctx.download(&target)?;

    let (mut w1, mut w2) = (vec![1.0f32; HIDDEN], vec![1.0f32; HEAD_DIM]);
    let numel = (TOKENS * HIDDEN) as f32;
    let lr = 20.0;
    let (mut first, mut loss) = (None, 0.0);
    for step in 0..=200 {
        let (w1t, w2t) = (
            ctx.upload_f32(&w1, &[HIDDEN])?,
            ctx.upload_f32(&w2, &[HEAD_DIM])?,
        );
        let (y, h) = block.forward(&w1t, &w2t)?;
        // loss = mean((y - target)^2) / 2.
        let diff: Vec<f32> = ctx
            .download(&y)?
            .iter()
            .zip(&target)
            .map(|(a, b)| a - b)
            .collect();
        loss = diff.iter().map(|d| d * d).sum::<f32>() / (2.0 * numel);
        first.get_or_insert(loss);
        if step % 40 == 0 {
            println!("step {step:3}: loss {loss:.3e}");
        }
        let grad: Vec<f32> = diff.iter().map(|d| d / numel).collect();
        let dy = ctx.upload_f32(&grad, &[TOKENS, HEADS, HEAD_DIM])?;
        let (dh, dw2) = block.qk.backward(&QkNormRopeGradInputs {
            x: &h,
            weight: Some(&w2t),
            angles: RopeAngles::Positions(&block.positions),
            dy: &dy,
        })?;
        let (_, dw1) = block.rms.backward(&RmsNormGradInputs {
            x: &block.x,
            residual: None,
            weight: Some(&w1t),
            dy: &dh.reshape(&[TOKENS, HIDDEN])?,
            dsum: None,
            rstd: None,
        })?;
        for (w, g) in w1.iter_mut().zip(ctx.download(&dw1)?) {
            *w -= lr * g;
        }
        for (w, g) in w2.iter_mut().zip(ctx.download(&dw2)?) {
            *w -= lr * g;
        }
    }
    let first = first.unwrap_or(0.0);
    println!("loss {first:.3e} -> {loss:.3e}");
    if loss.is_nan() || loss >= first / 100.0 {
        return Err(format!("the loss did not fall 100x: {first} -> {loss}").into());
    }
    Ok(())
}
