//! The Stable Diffusion XL VAE decoder's last normalization at its real size: `conv_norm_out`,
//! GroupNorm(32 groups, eps 1e-6) on `[1, 128, 1024, 1024]` followed by the SiLU of `conv_act`,
//! in f16, on a device created with WebGPU's default limits. The tensor is 256 MiB, twice the
//! 128 MiB storage-binding limit, so the single sample is bound in windows (see the README's
//! "Tensors larger than one binding"). Runs NCHW and channels-last (NHWC), the affine loaded by
//! its diffusers names (`decoder.conv_norm_out.weight` / `.bias`) from a safetensors file the
//! example writes first, and checks every group against the f64 reference; exits non-zero on a
//! mismatch.
//!
//! `cargo run --release --example sdxl_vae_norm_out`

use safetensors::tensor::TensorView;
use wgnorm::checkpoint::Checkpoint;
use wgnorm::prelude::*;
use wgnorm::{DeviceOptions, LimitsProfile};
use wgnorm_reference::chnorm::group_norm;

const C: usize = 128;
const H: usize = 1024;
const W: usize = 1024;
const GROUPS: usize = 32;
const EPS: f32 = 1e-6;
const PREFIX: &str = "decoder.conv_norm_out";

/// A cheap deterministic f16 activation for channel `ch` at pixel `k`: a per-channel offset and
/// scale, as conv outputs have, with variation inside each channel.
fn activation(ch: usize, k: usize) -> half::f16 {
    let h = (k as u64 ^ (ch as u64) << 40).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    let v = (h % 4001) as f32 / 2000.0 - 1.0;
    half::f16::from_f32(v * (0.5 + (ch % 5) as f32 * 0.3) + (ch % 9) as f32 * 0.25 - 1.0)
}

/// Writes gamma and beta (f16) by their diffusers names and returns the file's path.
fn write_checkpoint() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let bytes = |f: &dyn Fn(usize) -> f32| -> Vec<u8> {
        (0..C)
            .flat_map(|c| half::f16::from_f32(f(c)).to_le_bytes())
            .collect()
    };
    let gamma = bytes(&|c| 1.0 + ((c * 37) % 11) as f32 * 0.05);
    let beta = bytes(&|c| ((c * 17) % 13) as f32 * 0.02 - 0.1);
    let views = vec![
        (
            format!("{PREFIX}.weight"),
            TensorView::new(safetensors::Dtype::F16, vec![C], &gamma)?,
        ),
        (
            format!("{PREFIX}.bias"),
            TensorView::new(safetensors::Dtype::F16, vec![C], &beta)?,
        ),
    ];
    let path = std::env::temp_dir().join(format!("sdxl-vae-{}.safetensors", std::process::id()));
    safetensors::serialize_to_file(views, None, &path)?;
    Ok(path)
}

/// Max |y - reference| / max |reference| over every group: each group's four channels through
/// the f64 reference on their own (a group's statistics are its own).
fn check(got: &[f32], layout: Layout, gamma: &[f64], beta: &[f64]) -> f64 {
    let (hw, cg) = (H * W, C / GROUPS);
    let (mut err, mut scale) = (0.0f64, 1e-3f64);
    for g in 0..GROUPS {
        let chans = g * cg..(g + 1) * cg;
        let x: Vec<f64> = chans
            .clone()
            .flat_map(|ch| (0..hw).map(move |k| activation(ch, k).to_f64()))
            .collect();
        let (gg, bb) = (&gamma[chans.clone()], &beta[chans.clone()]);
        let want = group_norm(&x, 1, cg, hw, 1, Some(gg), Some(bb), EPS as f64, true);
        for (i, w) in want.iter().enumerate() {
            let (ch, k) = (g * cg + i / hw, i % hw);
            let at = match layout {
                Layout::Nchw => ch * hw + k,
                Layout::Nhwc => k * C + ch,
            };
            err = err.max((got[at] as f64 - w).abs());
            scale = scale.max(w.abs());
        }
    }
    err / scale
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new_with(DeviceOptions {
        limits: LimitsProfile::WebGpu,
        ..Default::default()
    })?;
    let path = write_checkpoint()?;
    let ck = Checkpoint::open(&path)?;
    let limit = ctx.limits().max_storage_buffer_binding_size;
    println!(
        "{}: binding limit {} MiB, x {} MiB",
        ctx.adapter_info().name,
        limit >> 20,
        (C * H * W * 2) >> 20
    );
    let mut worst = 0.0f64;
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let cfg = GroupNormConfig {
            eps: EPS,
            activation: Activation::Silu,
            layout,
            dtype: DType::F16,
            ..GroupNormConfig::new(GROUPS)
        };
        let (gn, p) = ck.group_norm(&ctx, PREFIX, cfg)?;
        let (gamma, beta) = (
            ctx.download(p.weight.as_ref().ok_or("no weight")?)?,
            ctx.download(p.bias.as_ref().ok_or("no bias")?)?,
        );
        let host: Vec<half::f16> = match layout {
            Layout::Nchw => (0..C * H * W)
                .map(|i| activation(i / (H * W), i % (H * W)))
                .collect(),
            Layout::Nhwc => (0..C * H * W).map(|i| activation(i % C, i / C)).collect(),
        };
        let shape = match layout {
            Layout::Nchw => [1, C, H, W],
            Layout::Nhwc => [1, H, W, C],
        };
        let x = ctx.upload_f16(&host, &shape)?;
        drop(host);
        let start = std::time::Instant::now();
        let y = gn.forward(&NormInputs {
            x: &x,
            weight: p.weight.as_ref(),
            bias: p.bias.as_ref(),
        })?;
        let got = ctx.download(&y)?;
        let secs = start.elapsed().as_secs_f64();
        let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
        let err = check(&got, layout, &f64s(&gamma), &f64s(&beta));
        println!(
            "GroupNorm(32) + SiLU {layout:?} f16 {shape:?}: {secs:.2} s with transfers, max |err| / max |y| = {err:.2e}"
        );
        worst = worst.max(if err.is_nan() { f64::INFINITY } else { err });
    }
    std::fs::remove_file(path)?;
    if worst > 2e-3 {
        return Err(format!("mismatch: {worst:.2e} exceeds 2e-3 (f16 output)").into());
    }
    println!("ok: both layouts match the f64 reference");
    Ok(())
}
