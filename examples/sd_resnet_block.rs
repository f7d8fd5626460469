//! The normalization of a Stable-Diffusion-style ResNet block: GroupNorm(32) with SiLU fused,
//! channels-last (NHWC) in f16, as diffusion runtimes run it, with its affine parameters loaded
//! by their diffusers names (`down_blocks.1.resnets.0.norm1.weight` / `.bias`) from a safetensors
//! file the example writes first. The output is checked against the f64 reference; the example
//! exits non-zero on a mismatch.
//!
//! `cargo run --release --example sd_resnet_block`

use safetensors::tensor::TensorView;
use wgnorm::checkpoint::Checkpoint;
use wgnorm::prelude::*;
use wgnorm_reference::chnorm::{group_norm, to_nhwc};

/// The test suite's xorshift values in [-1, 1), scaled.
fn noise(seed: u64, len: usize, scale: f32, offset: f32) -> Vec<f32> {
    wgnorm_tests::noise(seed, len)
        .into_iter()
        .map(|v| offset + v * scale)
        .collect()
}

fn f16_exact(v: Vec<f32>) -> Vec<f32> {
    v.into_iter()
        .map(|x| half::f16::from_f32(x).to_f32())
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Batch 2, 320 channels, a 24x24 latent (SD's first down block runs 320 channels).
    let (n, c, h, w, groups) = (2usize, 320usize, 24usize, 24usize, 32usize);
    let hw = h * w;
    let prefix = "down_blocks.1.resnets.0.norm1";

    // The checkpoint: gamma and beta in f16.
    let gamma = f16_exact(noise(3, c, 0.5, 1.0));
    let beta = f16_exact(noise(4, c, 0.2, 0.0));
    let raw = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect()
    };
    let (gb, bb) = (raw(&gamma), raw(&beta));
    let views = vec![
        (
            format!("{prefix}.weight"),
            TensorView::new(safetensors::Dtype::F16, vec![c], &gb)?,
        ),
        (
            format!("{prefix}.bias"),
            TensorView::new(safetensors::Dtype::F16, vec![c], &bb)?,
        ),
    ];
    let path = std::env::temp_dir().join(format!("sd-block-{}.safetensors", std::process::id()));
    safetensors::serialize_to_file(views, None, &path)?;

    let ctx = Context::new()?;
    let cfg = GroupNormConfig {
        eps: 1e-5,
        activation: Activation::Silu,
        layout: Layout::Nhwc,
        dtype: DType::F16,
        ..GroupNormConfig::new(groups)
    };
    let (gn, p) = Checkpoint::open(&path)?.group_norm(&ctx, prefix, cfg)?;

    // Activations NCHW on the host (the reference's layout), uploaded channels-last. An offset
    // per channel, as conv outputs have, makes the centring matter.
    let x_nchw: Vec<f32> = f16_exact(
        (0..n * c * hw)
            .map(|i| {
                let ch = (i / hw) % c;
                noise(i as u64, 1, 1.5, 0.0)[0] + (ch % 7) as f32 - 3.0
            })
            .collect(),
    );
    let xd: Vec<f64> = x_nchw.iter().map(|&v| v as f64).collect();
    let x_nhwc: Vec<f32> = to_nhwc(&xd, n, c, hw).iter().map(|&v| v as f32).collect();
    let x = ctx.upload(&x_nhwc, &[n, h, w, c], DType::F16)?;
    let y = gn.forward(&NormInputs {
        x: &x,
        weight: p.weight.as_ref(),
        bias: p.bias.as_ref(),
    })?;
    let got = ctx.download(&y)?;

    let gd: Vec<f64> = gamma.iter().map(|&v| v as f64).collect();
    let bd: Vec<f64> = beta.iter().map(|&v| v as f64).collect();
    let want = to_nhwc(
        &group_norm(&xd, n, c, hw, groups, Some(&gd), Some(&bd), 1e-5, true),
        n,
        c,
        hw,
    );
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (g as f64 - w).abs() / scale)
        .fold(0.0, f64::max);
    std::fs::remove_file(path)?;
    println!("GroupNorm({groups}) + SiLU, NHWC f16 [{n}, {h}, {w}, {c}]: max |err| / max |y| = {err:.2e}");
    if err.is_nan() || err > 2e-3 {
        return Err(format!("mismatch: {err:.2e} exceeds 2e-3 (f16 output)").into());
    }
    println!("ok: matches the f64 reference");
    Ok(())
}
