//! Inference of a ResNet-style conv + BatchNorm without a BatchNorm pass: the BatchNorm's
//! statistics and affine (loaded by their PyTorch names `bn1.weight`, `bn1.bias`,
//! `bn1.running_mean`, `bn1.running_var`, `bn1.num_batches_tracked` from a safetensors file the
//! example writes) are folded on the GPU into the conv's weight and bias (`conv1.weight`). The
//! conv with the folded parameters is checked against conv followed by the f64 reference
//! BatchNorm; the example exits non-zero on a mismatch.
//!
//! `cargo run --release --example resnet_bn_fold`

use safetensors::tensor::TensorView;
use wgnorm::batchnorm::FoldArgs;
use wgnorm::checkpoint::Checkpoint;
use wgnorm::prelude::*;
use wgnorm_reference::chnorm::batch_norm;

const N: usize = 2;
const CI: usize = 8;
const CO: usize = 16;
const H: usize = 10;
const W: usize = 10;
const EPS: f32 = 1e-5;

/// The test suite's xorshift values in [-1, 1), scaled.
fn noise(seed: u64, len: usize, scale: f32, offset: f32) -> Vec<f32> {
    wgnorm_tests::noise(seed, len)
        .into_iter()
        .map(|v| offset + v * scale)
        .collect()
}

/// 3x3 convolution, padding 1, stride 1, in f64: x [N, CI, H, W], weight [CO, CI, 3, 3].
fn conv3x3(x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
    let mut y = vec![0.0f64; N * CO * H * W];
    for n in 0..N {
        for o in 0..CO {
            for i in 0..H {
                for j in 0..W {
                    let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                    for ci in 0..CI {
                        for (di, dj) in (0..9).map(|k| (k / 3, k % 3)) {
                            let (si, sj) = (i + di, j + dj);
                            if si < 1 || sj < 1 || si > H || sj > W {
                                continue;
                            }
                            let xv = x[((n * CI + ci) * H + si - 1) * W + sj - 1] as f64;
                            acc += xv * weight[((o * CI + ci) * 3 + di) * 3 + dj] as f64;
                        }
                    }
                    y[((n * CO + o) * H + i) * W + j] = acc;
                }
            }
        }
    }
    y
}

fn write_checkpoint(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let f32s = |v: Vec<f32>| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let tensors = [
        (
            "conv1.weight",
            vec![CO, CI, 3, 3],
            f32s(noise(1, CO * CI * 9, 0.3, 0.0)),
        ),
        ("bn1.weight", vec![CO], f32s(noise(2, CO, 0.4, 1.0))),
        ("bn1.bias", vec![CO], f32s(noise(3, CO, 0.2, 0.0))),
        ("bn1.running_mean", vec![CO], f32s(noise(4, CO, 1.0, 0.5))),
        ("bn1.running_var", vec![CO], f32s(noise(5, CO, 0.5, 1.0))),
        (
            "bn1.num_batches_tracked",
            vec![],
            3000i64.to_le_bytes().to_vec(),
        ),
    ];
    let views = tensors
        .iter()
        .map(|(name, shape, b)| {
            let dtype = if shape.is_empty() {
                safetensors::Dtype::I64
            } else {
                safetensors::Dtype::F32
            };
            Ok((name.to_string(), TensorView::new(dtype, shape.clone(), b)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, path)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("resnet-fold-{}.safetensors", std::process::id()));
    write_checkpoint(&path)?;
    let ctx = Context::new()?;
    let ckpt = Checkpoint::open(&path)?;
    let cfg = BatchNormConfig {
        eps: EPS,
        ..Default::default()
    };
    let (bn, p) = ckpt.batch_norm(&ctx, "bn1", cfg)?;
    let (conv_w, conv_shape) = ckpt.values("conv1.weight")?.ok_or("no conv1.weight")?;
    println!(
        "bn1: {} channels, trained for {} batches",
        p.channels,
        p.num_batches_tracked.unwrap_or(0)
    );

    // Fold once, at load time, on the GPU.
    let w = ctx.upload_f32(&conv_w, &conv_shape)?;
    let (w_out, b_out) = (
        ctx.empty(&conv_shape, DType::F32)?,
        ctx.empty(&[CO], DType::F32)?,
    );
    let (rm, rv) = (
        p.running_mean.as_ref().unwrap(),
        p.running_var.as_ref().unwrap(),
    );
    ctx.record_and_submit(|enc| {
        bn.encode_fold(
            enc,
            &FoldArgs {
                weight: &w,
                bias: None,
                gamma: p.weight.as_ref(),
                beta: p.bias.as_ref(),
                running_mean: rm,
                running_var: rv,
                weight_out: &w_out,
                bias_out: &b_out,
            },
        )
    })?;
    let (w_folded, b_folded) = (ctx.download(&w_out)?, ctx.download(&b_out)?);

    // Inference: conv with the folded parameters, no BatchNorm ...
    let x = noise(9, N * CI * H * W, 1.0, 0.2);
    let y_folded = conv3x3(&x, &w_folded, Some(&b_folded));
    // ... against conv, then the f64 reference BatchNorm in inference mode.
    let f64s = |t: &Tensor| -> Result<Vec<f64>, wgnorm::Error> {
        Ok(ctx.download(t)?.iter().map(|&v| v as f64).collect())
    };
    let (g, b) = (
        f64s(p.weight.as_ref().unwrap())?,
        f64s(p.bias.as_ref().unwrap())?,
    );
    let want = batch_norm(
        &conv3x3(&x, &conv_w, None),
        N,
        CO,
        H * W,
        Some(&g),
        Some(&b),
        &f64s(rm)?,
        &f64s(rv)?,
        false,
        0.1,
        true,
        EPS as f64,
    )
    .y;
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    let err = y_folded
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f64::max);
    std::fs::remove_file(path)?;
    println!("conv(x; folded W, b) vs BN(conv(x; W)): max |err| / max |y| = {err:.2e}");
    // The folded parameters are f32: a few ulps of f32 after 72-term sums.
    if err.is_nan() || err > 1e-5 {
        return Err(format!("mismatch: {err:.2e} exceeds 1e-5").into());
    }
    println!("ok: the BatchNorm is folded into the conv");
    Ok(())
}
