//! `wgnorm bench`: a few common norms timed against a copy shader moving the same bytes on this
//! adapter (the repository's `cargo xtask bench` is the full one: every op, checks, plots).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use wgnorm::engine::baseline::copy_spec;
use wgnorm::engine::binding::{self, BindCache};
use wgnorm::engine::shader::Io;
use wgnorm::engine::uniform::CopyParams;
use wgnorm::engine::Slot;
use wgnorm::prelude::*;
use wgnorm::{wgpu, BatchNormInputs, BatchNormOutputs, Mode};

/// `wgnorm bench` options.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// 1M elements per tensor instead of 4M.
    #[arg(long)]
    quick: bool,
    /// Repetitions per op (the median is reported).
    #[arg(long, default_value_t = 7)]
    reps: usize,
}

type Rec = Box<dyn Fn(&mut wgpu::CommandEncoder) -> wgnorm::Result<()>>;

struct Case {
    label: String,
    bytes: u64,
    run: Rec,
}

fn e(err: wgnorm::Error) -> String {
    err.to_string()
}

fn row_case(ctx: &Context, rms: bool, rows: usize, n: usize, dtype: DType) -> Result<Case, String> {
    let x = ctx
        .upload(&vec![0.5; rows * n], &[rows, n], dtype)
        .map_err(e)?;
    let w = ctx.upload(&vec![1.0; n], &[n], dtype).map_err(e)?;
    let y = ctx.empty(&[rows, n], dtype).map_err(e)?;
    let name = if rms { "rms_norm" } else { "layer_norm" };
    let run: Rec = if rms {
        let op = RmsNorm::new(
            ctx,
            RmsNormConfig {
                dtype,
                ..Default::default()
            },
        )
        .map_err(e)?;
        Box::new(move |enc| {
            op.encode(
                enc,
                &RmsNormInputs {
                    x: &x,
                    weight: Some(&w),
                },
                &RmsNormOutputs { y: &y, rstd: None },
            )
        })
    } else {
        let op = LayerNorm::new(
            ctx,
            LayerNormConfig {
                dtype,
                ..Default::default()
            },
        )
        .map_err(e)?;
        Box::new(move |enc| {
            let inputs = LayerNormInputs {
                x: &x,
                weight: Some(&w),
                bias: None,
            };
            op.encode(
                enc,
                &inputs,
                &LayerNormOutputs {
                    y: &y,
                    mean: None,
                    rstd: None,
                },
            )
        })
    };
    Ok(Case {
        label: format!("{name} {rows}x{n} {dtype}"),
        bytes: (2 * rows * n + n) as u64 * dtype.size(),
        run,
    })
}

fn channel_case(
    ctx: &Context,
    group: bool,
    shape: [usize; 4],
    layout: Layout,
) -> Result<Case, String> {
    let numel: usize = shape.iter().product();
    let dims = match layout {
        Layout::Nchw => shape.to_vec(),
        Layout::Nhwc => vec![shape[0], shape[2], shape[3], shape[1]],
    };
    let x = ctx
        .upload(&vec![0.5; numel], &dims, DType::F32)
        .map_err(e)?;
    let y = ctx.empty(&dims, DType::F32).map_err(e)?;
    let label = format!(
        "{} {:?} {layout:?}",
        if group {
            "group_norm_silu"
        } else {
            "batch_norm_train"
        },
        shape
    );
    let run: Rec = if group {
        let cfg = GroupNormConfig {
            activation: Activation::Silu,
            layout,
            ..GroupNormConfig::new(32)
        };
        let op = GroupNorm::new(ctx, cfg).map_err(e)?;
        Box::new(move |enc| {
            let inputs = NormInputs {
                x: &x,
                weight: None,
                bias: None,
            };
            op.encode(enc, &inputs, &NormOutputs { y: &y, saved: None })
        })
    } else {
        let op = BatchNorm::new(
            ctx,
            BatchNormConfig {
                layout,
                ..Default::default()
            },
        )
        .map_err(e)?;
        Box::new(move |enc| {
            let inputs = BatchNormInputs {
                x: &x,
                weight: None,
                bias: None,
                running_mean: None,
                running_var: None,
            };
            op.encode(
                enc,
                &inputs,
                &BatchNormOutputs { y: &y, saved: None },
                Mode::Train,
            )
        })
    };
    Ok(Case {
        label,
        bytes: 2 * numel as u64 * 4,
        run,
    })
}

/// A copy shader moving `bytes` (read once, written once): the roofline.
fn copy_case(ctx: &Context, bytes: u64) -> Result<Rec, String> {
    const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
    let n_vec = (bytes / 2).div_ceil(16) as usize;
    let (src, dst) = (
        ctx.empty(&[n_vec * 4], DType::F32).map_err(e)?,
        ctx.empty(&[n_vec * 4], DType::F32).map_err(e)?,
    );
    let pipeline = ctx
        .pipeline(&copy_spec(
            Io {
                dtype: DType::F32,
                vec4: true,
            },
            256,
            1,
        ))
        .map_err(e)?;
    let params = CopyParams {
        n_vec: n_vec as u32,
        ..Default::default()
    };
    let (s, d) = (
        binding::storage_range(ctx, "src", &src).map_err(e)?,
        binding::storage_range(ctx, "dst", &dst).map_err(e)?,
    );
    let bg = BindCache::default()
        .get(ctx, SLOTS, &params, &[&s, &d])
        .map_err(e)?;
    let (gx, gy) = binding::grid(ctx, (n_vec as u64).div_ceil(256));
    Ok(Box::new(move |enc| {
        let _keep = (&src, &dst);
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }))
}

/// Median milliseconds per run of `r` (4 runs per submit, wall clock around submit + wait).
fn time(ctx: &Context, r: &Rec, reps: usize) -> Result<f64, String> {
    let mut samples = Vec::new();
    for rep in 0..=reps {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        for _ in 0..4 {
            r(&mut enc).map_err(e)?;
        }
        let t = Instant::now();
        let idx = ctx.queue().submit([enc.finish()]);
        ctx.wait(Some(idx)).map_err(e)?;
        if rep > 0 {
            samples.push(t.elapsed().as_secs_f64() * 1e3 / 4.0); // rep 0 warms up
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(samples[samples.len() / 2])
}

pub fn run(ctx: &Context, o: &Options) -> Result<(), String> {
    let elems = if o.quick { 1usize << 20 } else { 4 << 20 };
    let mut cases = Vec::new();
    for rms in [false, true] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for n in [1024usize, 4096] {
                cases.push(row_case(ctx, rms, elems / n, n, dtype)?);
            }
        }
    }
    let (n, hw) = if o.quick { (4, 16) } else { (8, 32) };
    for layout in [Layout::Nchw, Layout::Nhwc] {
        cases.push(channel_case(ctx, false, [n, 64, hw, hw], layout)?);
        cases.push(channel_case(ctx, true, [1, 320, hw, hw], layout)?);
    }
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").map_err(|x| x.to_string())?,
    );
    let mut rows = Vec::new();
    for c in &cases {
        bar.set_message(c.label.clone());
        let op_ms = time(ctx, &c.run, o.reps)?;
        let copy_ms = time(ctx, &copy_case(ctx, c.bytes)?, o.reps)?;
        rows.push((
            c.label.clone(),
            op_ms,
            c.bytes as f64 / op_ms / 1e6,
            copy_ms / op_ms,
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let i = ctx.adapter_info();
    println!(
        "wgnorm bench on {} ({:?}); medians of {} submits of 4 runs, wall clock\n",
        i.name, i.backend, o.reps
    );
    println!("| op | median ms | GB/s | copy ratio |\n|---|---|---|---|");
    for (label, ms, gbps, ratio) in rows {
        println!("| {label} | {ms:.3} | {gbps:.2} | {ratio:.2} |");
    }
    println!("\ncopy ratio: the op's time for its bytes against a copy shader moving the same bytes (1.0 = copy speed).");
    Ok(())
}
