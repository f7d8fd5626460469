//! Real-model rows of `cargo xtask bench` (full runs only): shapes that production models run
//! at their real size, where the quick rows' small shapes would hide binding windows and cache
//! effects.
//!
//! - `vae_group_norm_silu`: the Stable Diffusion XL VAE decoder's last normalization
//!   (`conv_norm_out`, GroupNorm(32, eps 1e-6) + SiLU) on `[1, 128, 1024, 1024]` f16, NCHW and
//!   NHWC: 256 MiB, bound in windows inside its single sample wherever the device's binding
//!   limit is WebGPU's 128 MiB (software Vulkan's too).

use anyhow::Result;
use wgnorm::{
    Activation, Context, DType, GroupNorm, GroupNormConfig, Layout, NormInputs, NormOutputs,
};
use wgnorm_reference::chnorm::group_norm;

use crate::bench::{Case, Check, Record};

/// A deterministic activation of channel `ch` at pixel `k`, rounded to f16: a per-channel
/// offset and scale with variation inside the channel, as conv outputs have.
fn activation(ch: usize, k: usize) -> f32 {
    let h = ((k as u64) ^ ((ch as u64) << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    let v = (h % 4001) as f32 / 2000.0 - 1.0;
    let x = v * (0.5 + (ch % 5) as f32 * 0.3) + (ch % 9) as f32 * 0.25 - 1.0;
    half::f16::from_f32(x).to_f32()
}

/// The VAE row in `layout`, checked against the f64 reference group by group.
pub fn vae_case(ctx: &Context, layout: Layout) -> Result<Case> {
    let (c, h, w, groups, eps) = (128usize, 1024usize, 1024usize, 32usize, 1e-6f32);
    let hw = h * w;
    let nchw = layout == Layout::Nchw;
    let shape = if nchw {
        vec![1, c, h, w]
    } else {
        vec![1, h, w, c]
    };
    // Where channel `ch`, pixel `k` lives in the layout.
    let at = move |ch: usize, k: usize| if nchw { ch * hw + k } else { k * c + ch };
    let mut host = vec![half::f16::ZERO; c * hw];
    for ch in 0..c {
        for k in 0..hw {
            host[at(ch, k)] = half::f16::from_f32(activation(ch, k));
        }
    }
    let xt = ctx.upload_f16(&host, &shape)?;
    drop(host);
    let gamma: Vec<f32> = (0..c)
        .map(|i| 1.0 + ((i * 37) % 11) as f32 * 0.05)
        .collect();
    let beta: Vec<f32> = (0..c)
        .map(|i| ((i * 17) % 13) as f32 * 0.02 - 0.1)
        .collect();
    let (wt, bt) = (ctx.upload_f32(&gamma, &[c])?, ctx.upload_f32(&beta, &[c])?);
    let y = ctx.empty(&shape, DType::F16)?;
    let gn = GroupNorm::new(
        ctx,
        GroupNormConfig {
            eps,
            activation: Activation::Silu,
            layout,
            dtype: DType::F16,
            ..GroupNormConfig::new(groups)
        },
    )?;
    let run: Record = {
        let (xt, wt, bt, y) = (xt.clone(), wt.clone(), bt.clone(), y.clone());
        let rec = move |enc: &mut wgpu::CommandEncoder| {
            gn.encode(
                enc,
                &NormInputs {
                    x: &xt,
                    weight: Some(&wt),
                    bias: Some(&bt),
                },
                &NormOutputs { y: &y, saved: None },
            )
        };
        ctx.record_and_submit(&rec)?;
        Box::new(move |enc| rec(enc).expect("validated above"))
    };
    // The reference per group (a group's statistics are its own), placed in the layout.
    let cg = c / groups;
    let mut want = vec![0.0f64; c * hw];
    for g in 0..groups {
        let chans = g * cg..(g + 1) * cg;
        let x: Vec<f64> = chans
            .clone()
            .flat_map(|ch| (0..hw).map(move |k| activation(ch, k) as f64))
            .collect();
        let f = |v: &[f32]| {
            v[chans.clone()]
                .iter()
                .map(|&a| a as f64)
                .collect::<Vec<_>>()
        };
        let y = group_norm(
            &x,
            1,
            cg,
            hw,
            1,
            Some(&f(&gamma)),
            Some(&f(&beta)),
            eps as f64,
            true,
        );
        for (i, v) in y.into_iter().enumerate() {
            want[at(g * cg + i / hw, i % hw)] = v;
        }
    }
    Ok(Case {
        op: "vae_group_norm_silu",
        shape: vec![1, c, h, w],
        dtype: DType::F16,
        layout: match layout {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        },
        bytes: (2 * c * hw * 2 + 2 * c * 4) as u64,
        kernel: "moments+finalize+apply".into(),
        run,
        naive: None,
        check: Some(Check::Reference(y, want)),
    })
}
