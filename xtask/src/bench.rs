//! `cargo xtask bench`: kernel throughput as a ratio to the copy roofline of the same adapter.
//!
//! Each repetition records, in one command buffer, `ITERS` runs of the op, of each copy shader
//! (moving the op's byte count) and of the naive baseline, each bracketed by GPU timestamps
//! (wall clock around submit + wait when the adapter has no timestamps inside encoders). Load
//! from other processes therefore hits the op and its roofline alike; the ratio is the headline,
//! absolute times on shared machines are noise.

use std::io::{IsTerminal, Write};
use std::time::Instant;
use wgnorm::{Activation, Mode};

use anyhow::{bail, Result};
use serde_json::json;
use wgnorm::engine::binding::{self, BindCache};
use wgnorm::engine::rownorm::{self, RowMode, RowNorm, RowNormArgs, RowNormConfig};
use wgnorm::engine::shader::{Io, Specialization};
use wgnorm::engine::uniform::{CopyParams, NaiveParams, RowParams};
use wgnorm::engine::Slot;
use wgnorm::poincare::NaiveBallParams;
use wgnorm::{Context, DType, Tensor};

/// Records one run of a kernel into an encoder.
pub(crate) type Record = Box<dyn Fn(&mut wgpu::CommandEncoder)>;

const COPY_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];

/// `cargo xtask bench` options.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct Options {
    /// Small shapes, seconds on software Vulkan.
    #[arg(long)]
    quick: bool,
    /// Instead of the bench rows: time every row kernel that serves each bench shape (and every
    /// BatchNorm lane plan) and print the fastest beside the runtime's choice (--ops narrows
    /// it); with --json, the table an app loads with wgnorm::Tuning::from_json (or
    /// WGNORM_TUNING=FILE).
    #[arg(long)]
    autotune: bool,
    /// Instead of the bench rows: what each op's first call costs (pipeline compilation
    /// included) on a fresh context, its second call, and its first call on a context that
    /// loaded the first one's pipeline cache (wall ms; with --json, the rows).
    #[arg(long)]
    first_call: bool,
    /// Write every figure plus adapter info to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Draw the copy ratio per family (one panel each) against the size that matters, as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<String>,
    /// Only these ops (layer_norm, rms_norm, batch_norm_train, ...; a prefix selects a family).
    #[arg(long, value_delimiter = ',')]
    ops: Option<Vec<String>>,
    /// Only shapes whose label (e.g. 1024x4096) contains SUBSTR.
    #[arg(long, value_name = "SUBSTR")]
    shapes: Option<String>,
}

/// One timed configuration.
pub(crate) struct Case {
    pub op: &'static str,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub layout: &'static str,
    /// Bytes of every input read once plus every output written once.
    pub bytes: u64,
    pub kernel: String,
    pub run: Record,
    pub naive: Option<Record>,
    /// How the op's output is checked after the timed runs (a failed check fails the command).
    pub check: Option<Check>,
}

/// A bench row's correctness check.
pub(crate) enum Check {
    /// The op's output against the naive baseline's.
    Naive(Tensor, Tensor),
    /// The op's output against an f64 reference computed on the host.
    Reference(Tensor, Vec<f64>),
}

impl Check {
    /// The largest `|got - want|` relative to the largest `|want|` (so small outputs such as a
    /// midpoint near 0.01 are held to the same relative standard); NaN or an infinity anywhere is
    /// infinite.
    fn max_diff(&self, ctx: &Context) -> Result<f64> {
        let (got, want): (Vec<f32>, Vec<f64>) = match self {
            Check::Naive(a, b) => (
                ctx.download(a)?,
                ctx.download(b)?.iter().map(|&v| v as f64).collect(),
            ),
            Check::Reference(a, want) => (ctx.download(a)?, want.clone()),
        };
        if got.len() != want.len() {
            return Ok(f64::INFINITY);
        }
        let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-30);
        Ok(got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| {
                let d = (g as f64 - w).abs() / scale;
                if d.is_finite() {
                    d
                } else {
                    f64::INFINITY
                }
            })
            .fold(0.0, f64::max))
    }
}

/// Deterministic values in `[center - spread / 2, center + spread / 2)` for `seed` (per-channel
/// parameters that differ from channel to channel, so indexing bugs show).
pub(crate) fn pattern(seed: usize, len: usize, center: f32, spread: f32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let v = ((i + seed * 13) * 7919 + seed * 104_729) % 1000;
            v as f32 * 1e-3 * spread + center - spread / 2.0
        })
        .collect()
}

pub(crate) fn f64s(v: &[f32], dtype: DType) -> Vec<f64> {
    v.iter()
        .map(|&x| match dtype {
            DType::F32 => x as f64,
            DType::F16 => half::f16::from_f32(x).to_f64(),
            DType::BF16 => half::bf16::from_f32(x).to_f64(),
        })
        .collect()
}

struct Copy {
    name: &'static str,
    run: Record,
}

/// The copy shaders for `bytes` bytes moved (half read, half written).
fn copies(ctx: &Context, bytes: u64) -> Result<Vec<Copy>> {
    let n_vec = (bytes / 2 / 16).max(1) as u32;
    let src = ctx.empty(&[n_vec as usize * 4], DType::F32)?;
    let dst = ctx.empty(&[n_vec as usize * 4], DType::F32)?;
    let io = Io {
        dtype: DType::F32,
        vec4: true,
    };
    let mut out = Vec::new();
    for (name, wg, block) in [
        ("copy vec4/lane", 256u32, 1u32),
        ("copy 256 vec4/lane", 8, 256),
        ("copy 64 vec4/lane", 64, 64),
    ] {
        let pipeline = ctx.pipeline(&wgnorm::engine::core::baseline::copy_spec(io, wg, block))?;
        // Tensors past the binding limit (the real-model rows) copy in binding windows, as
        // the ops do.
        let per_window = binding::window_accesses(ctx, "src", n_vec as u64, 16)?;
        let cache = BindCache::default();
        let s = binding::storage_range_unbounded(ctx, "src", &src)?;
        let d = binding::storage_range_unbounded(ctx, "dst", &dst)?;
        let mut dispatches = Vec::new();
        for first in (0..n_vec as u64).step_by(per_window as usize) {
            let len = per_window.min(n_vec as u64 - first);
            let params = CopyParams {
                n_vec: len as u32,
                ..Default::default()
            };
            let (sw, dw) = (
                s.window(first * 16, len * 16),
                d.window(first * 16, len * 16),
            );
            let bg = cache.get(ctx, COPY_SLOTS, &params, &[&sw, &dw])?;
            dispatches.push((bg, binding::grid(ctx, len.div_ceil((wg * block) as u64))));
        }
        out.push(Copy {
            name,
            run: Box::new(move |enc: &mut wgpu::CommandEncoder| {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                for (bg, (gx, gy)) in &dispatches {
                    pass.set_bind_group(0, bg, &[]);
                    pass.dispatch_workgroups(*gx, *gy, 1);
                }
            }),
        });
    }
    let (a, b) = (src.buffer().clone(), dst.buffer().clone());
    let len = n_vec as u64 * 16;
    out.push(Copy {
        name: "copy_buffer_to_buffer",
        run: Box::new(move |enc: &mut wgpu::CommandEncoder| {
            enc.copy_buffer_to_buffer(&a, 0, &b, 0, len)
        }),
    });
    Ok(out)
}

/// One row-norm case; `few` lets a call of few rows take its row-count kernel (the split
/// kernel: not batch-invariant, so opt-in).
fn row_case(
    ctx: &Context,
    mode: RowMode,
    (rows, n, dtype): (usize, usize, DType),
    few: bool,
) -> Result<Case> {
    let cfg = RowNormConfig::last_axis(mode, dtype);
    let op = RowNorm::new(ctx, cfg)?.with_few_row_kernels(few);
    let x: Vec<f32> = (0..rows * n)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let xt = ctx.upload(&x, &[rows, n], dtype)?;
    let (wv, bv) = (pattern(1, n, 1.0, 1.0), pattern(2, n, 0.0, 0.5));
    let w = ctx.upload(&wv, &[n], dtype)?;
    let b = ctx.upload(&bv, &[n], dtype)?;
    let y = ctx.empty(&[rows, n], dtype)?;
    let y_naive = ctx.empty(&[rows, n], dtype)?;
    let has_bias = mode == RowMode::LayerNorm;
    let (kernel, io) = op.kernel_for(&xt)?;
    // Validate once up front so the timed closure cannot fail.
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let args = |y| RowNormArgs {
        x: &xt,
        weight: Some(&w),
        bias: has_bias.then_some(&b),
        y,
        mean: None,
        rstd: None,
        residual: None,
        sum: None,
    };
    op.encode(&mut enc, &args(&y))?;
    ctx.queue().submit([enc.finish()]);
    let es = dtype.size();
    let bytes = (2 * rows * n + n * (1 + has_bias as usize)) as u64 * es;

    // Naive baseline: lavapipe's loop budget caps a single invocation's passes over a row.
    // bf16 has no element-wise access, which the naive kernel uses: the f64 reference checks it.
    let naive_ok =
        dtype != DType::BF16 && (!ctx.is_cpu() || 3 * n as u64 + 8 <= rownorm::CPU_LOOP_BUDGET);
    let naive = if naive_ok {
        let params = RowParams {
            rows: rows as u32,
            n_vec: n as u32,
            n: n as u32,
            eps: 1e-5,
            ..Default::default()
        };
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let (xr, wr, br, yr) = (r(&xt, "x")?, r(&w, "w")?, r(&b, "b")?, r(&y_naive, "y")?);
        // Statistics, residual and sum are off: the context's dummies stand in, as in RowNorm.
        let dr = binding::dummy_range(ctx.dummy_read());
        let (dw0, dw1, dw2) = (
            binding::dummy_range(ctx.dummy_write(0)),
            binding::dummy_range(ctx.dummy_write(1)),
            binding::dummy_range(ctx.dummy_write(2)),
        );
        let bg = BindCache::default().get(
            ctx,
            rownorm::SLOTS,
            &params,
            &[&xr, &wr, &br, &yr, &dw0, &dw1, &dr, &dw2],
        )?;
        let nio = Io { dtype, vec4: false };
        Some(staged_baseline(
            ctx,
            bg,
            vec![(rownorm::naive_spec(mode, has_bias, nio), rows)],
            Vec::new(),
        )?)
    } else {
        None
    };
    let check = if naive.is_some() {
        Check::Naive(y.clone(), y_naive.clone())
    } else {
        // No naive baseline (rows past the software loop budget): the f64 reference.
        let (xd, wd, bd) = (f64s(&x, dtype), f64s(&wv, dtype), f64s(&bv, dtype));
        let want = match mode {
            RowMode::LayerNorm => wgnorm_reference::rownorm::layer_norm(
                &xd,
                n,
                Some(&wd),
                has_bias.then_some(&bd[..]),
                1e-5,
            ),
            RowMode::RmsNorm => wgnorm_reference::rownorm::rms_norm(&xd, n, Some(&wd), 0.0, 1e-5),
        };
        Check::Reference(y.clone(), want.y)
    };
    let check = Some(check);
    let yc = y.clone();
    Ok(Case {
        op: mode.name(),
        shape: vec![rows, n],
        dtype,
        layout: "row-major",
        bytes,
        kernel: match few {
            true => format!("{kernel} {} (few-row kernels on)", io.label()),
            false => format!("{kernel} {}", io.label()),
        },
        run: Box::new(move |enc| {
            op.encode(
                enc,
                &RowNormArgs {
                    x: &xt,
                    weight: Some(&w),
                    bias: has_bias.then_some(&b),
                    y: &yc,
                    mean: None,
                    rstd: None,
                    residual: None,
                    sum: None,
                },
            )
            .expect("validated above");
        }),
        naive,
        check,
    })
}

/// Fused residual add + LayerNorm writing the sum (pre-LN), against the unfused sequence as its
/// baseline: an elementwise pass reading x and the residual and writing the sum (the blend
/// kernel at lambda = 0.5: the same traffic and one multiply-add per element, like an add),
/// then LayerNorm of the sum. The fused kernel moves 2 reads + 2 writes of the tensor; the
/// unfused sequence 3 reads + 2 writes.
fn add_norm_case(ctx: &Context, rows: usize, n: usize) -> Result<Case> {
    use wgnorm::engine::elementwise::Blend;
    let dtype = DType::F32;
    let op = RowNorm::new(ctx, RowNormConfig::last_axis(RowMode::LayerNorm, dtype))?;
    let x: Vec<f32> = (0..rows * n)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let res = pattern(3, rows * n, 0.0, 1.0);
    let xt = ctx.upload(&x, &[rows, n], dtype)?;
    let rt = ctx.upload(&res, &[rows, n], dtype)?;
    let (wv, bv) = (pattern(1, n, 1.0, 1.0), pattern(2, n, 0.0, 0.5));
    let w = ctx.upload(&wv, &[n], dtype)?;
    let b = ctx.upload(&bv, &[n], dtype)?;
    let sum_d: Vec<f64> = x
        .iter()
        .zip(&res)
        .map(|(&a, &r)| a as f64 + r as f64)
        .collect();
    let want = wgnorm_reference::rownorm::layer_norm(
        &sum_d,
        n,
        Some(&f64s(&wv, dtype)),
        Some(&f64s(&bv, dtype)),
        1e-5,
    )
    .y;
    let y = ctx.empty(&[rows, n], dtype)?;
    let y_out = y.clone();
    let sum = ctx.empty(&[rows, n], dtype)?;
    let (y2, sum2) = (ctx.empty(&[rows, n], dtype)?, ctx.empty(&[rows, n], dtype)?);
    let (kernel, io) = op.kernel_for(&xt)?;
    let fused = {
        let (xt, rt, w, b, y, sum) = (
            xt.clone(),
            rt.clone(),
            w.clone(),
            b.clone(),
            y.clone(),
            sum.clone(),
        );
        let op = RowNorm::new(ctx, *op.config())?;
        let record = move |enc: &mut wgpu::CommandEncoder| {
            op.encode(
                enc,
                &RowNormArgs {
                    x: &xt,
                    weight: Some(&w),
                    bias: Some(&b),
                    y: &y,
                    mean: None,
                    rstd: None,
                    residual: Some(&rt),
                    sum: Some(&sum),
                },
            )
        };
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        record(&mut enc)?;
        ctx.queue().submit([enc.finish()]);
        Box::new(move |enc: &mut wgpu::CommandEncoder| record(enc).expect("validated above"))
            as Record
    };
    let blend = Blend::new(ctx, dtype)?;
    let unfused = move |enc: &mut wgpu::CommandEncoder| -> wgnorm::Result<()> {
        blend.encode(enc, &xt, &rt, 0.5, &sum2)?;
        op.encode(
            enc,
            &RowNormArgs {
                x: &sum2,
                weight: Some(&w),
                bias: Some(&b),
                y: &y2,
                mean: None,
                rstd: None,
                residual: None,
                sum: None,
            },
        )
    };
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    unfused(&mut enc)?;
    ctx.queue().submit([enc.finish()]);
    Ok(Case {
        op: "add_layer_norm",
        shape: vec![rows, n],
        dtype,
        layout: "row-major",
        bytes: (4 * rows * n + 2 * n) as u64 * 4,
        kernel: format!("{kernel} {} (baseline: unfused add + LN)", io.label()),
        run: fused,
        naive: Some(Box::new(move |enc| unfused(enc).expect("validated above"))),
        check: Some(Check::Reference(y_out, want)),
    })
}

/// A naive baseline recorded as one compute pass: one dispatch per stage
/// `(pipeline, invocations)`, 64 invocations per workgroup, every stage with `bind`. `keep` holds
/// the scratch tensors the stages hand results through.
fn staged_baseline(
    ctx: &Context,
    bind: wgpu::BindGroup,
    stages: Vec<(Specialization, usize)>,
    keep: Vec<Tensor>,
) -> Result<Record> {
    let mut passes = Vec::new();
    for (spec, invocations) in stages {
        let pipeline = ctx.pipeline(&spec)?;
        passes.push((
            pipeline,
            binding::grid(ctx, (invocations as u64).div_ceil(64)),
        ));
    }
    Ok(Box::new(move |enc: &mut wgpu::CommandEncoder| {
        let _keep = &keep;
        let mut pass = enc.begin_compute_pass(&Default::default());
        for (pipeline, (gx, gy)) in &passes {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(*gx, *gy, 1);
        }
    }))
}

/// The naive baseline of a batch-statistics op (`naive/channel_norm.wgsl`): one invocation per
/// (sample, channel) plane for its moments (two passes), one per statistic slot to merge them,
/// one per element to normalize. `op` picks the slots (BatchNorm: channels; GroupNorm: 32
/// groups per sample; InstanceNorm: planes); inference BatchNorm runs only the last stage, on
/// `running` (per channel: mean and 1/sqrt(var + eps), the op's running statistics).
fn naive_channel(
    ctx: &Context,
    op: &str,
    nchw: [usize; 4],
    layout: wgnorm::Layout,
    [x, weight, bias, y]: [&Tensor; 4],
    running: &[f32],
) -> Result<Record> {
    let [n, c, h, w] = nchw;
    let hw = h * w;
    let planes = n * c;
    let (slots, per_slot, slot_div, cpg, kstride, slot_n) = match op {
        "batch_norm_train" | "batch_norm_infer" => (c, n, c, 1, c, 0),
        "group_norm_silu" => (n * 32, c / 32, 32, c / 32, 1, 32),
        _ => (planes, 1, c, 1, 1, c),
    };
    let (stride_s, stride_c) = match layout {
        wgnorm::Layout::Nchw => (1, hw),
        wgnorm::Layout::Nhwc => (c, 1),
    };
    let eps = 1e-5f32;
    let act = if op == "group_norm_silu" {
        wgnorm::Activation::Silu
    } else {
        wgnorm::Activation::None
    };
    let params = NaiveParams {
        planes: planes as u32,
        hw: hw as u32,
        c: c as u32,
        stride_s: stride_s as u32,
        stride_c: stride_c as u32,
        slots: slots as u32,
        per_slot: per_slot as u32,
        slot_div: slot_div as u32,
        cpg: cpg as u32,
        kstride: kstride as u32,
        slot_n: slot_n as u32,
        eps,
        selu_alpha: act.selu_params().0,
        selu_lambda: act.selu_params().1,
        _pad0: 0,
        _pad1: 0,
    };
    let plane_stats = ctx.empty(&[planes, 2], DType::F32)?;
    let slot_stats = if op == "batch_norm_infer" {
        ctx.upload_f32(running, &[c, 2])?
    } else {
        ctx.empty(&[slots, 2], DType::F32)?
    };
    let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
    let ranges = [
        r(x, "x")?,
        r(weight, "weight")?,
        r(bias, "bias")?,
        r(y, "y")?,
        r(&plane_stats, "plane stats")?,
        r(&slot_stats, "slot stats")?,
    ];
    let bind = BindCache::default().get(
        ctx,
        wgnorm::engine::core::baseline::NAIVE_CHANNEL_SLOTS,
        &params,
        &ranges.iter().collect::<Vec<_>>(),
    )?;
    let first_stage = if op == "batch_norm_infer" { 2 } else { 0 };
    let stages = [(0, planes), (1, slots), (2, planes * hw)]
        .into_iter()
        .skip(first_stage)
        .map(|(stage, items)| {
            (
                wgnorm::engine::core::baseline::naive_channel_spec(stage, act),
                items,
            )
        })
        .collect();
    staged_baseline(ctx, bind, stages, vec![plane_stats, slot_stats])
}

/// A batch-statistics op on an `(N, C, H, W)` activation in `layout`, with its naive baseline.
fn channel_case(
    ctx: &Context,
    op: &'static str,
    nchw: [usize; 4],
    layout: wgnorm::Layout,
) -> Result<Case> {
    use wgnorm::{
        Activation, BatchNorm, BatchNormConfig, BatchNormInputs, BatchNormOutputs, GroupNorm,
        GroupNormConfig, NormInputs, NormOutputs,
    };
    let [n, c, h, w] = nchw;
    let shape = match layout {
        wgnorm::Layout::Nchw => vec![n, c, h, w],
        wgnorm::Layout::Nhwc => vec![n, h, w, c],
    };
    let numel = n * c * h * w;
    let x: Vec<f32> = (0..numel)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let dtype = DType::F32;
    let xt = ctx.upload(&x, &shape, dtype)?;
    let y = ctx.empty(&shape, dtype)?;
    let (rm_v, rv_v) = (pattern(5, c, 0.0, 0.2), pattern(6, c, 1.0, 1.0));
    let wt = ctx.upload_f32(&pattern(1, c, 1.0, 1.0), &[c])?;
    let bt = ctx.upload_f32(&pattern(2, c, 0.0, 0.5), &[c])?;
    let rm = ctx.upload_f32(&rm_v, &[c])?;
    let rv = ctx.upload_f32(&rv_v, &[c])?;
    let run: Record = match op {
        "batch_norm_train" | "batch_norm_infer" => {
            let training = op.ends_with("train");
            let bn = BatchNorm::new(
                ctx,
                BatchNormConfig {
                    layout,
                    ..Default::default()
                },
            )?;
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            let inputs = BatchNormInputs {
                x: &xt,
                weight: Some(&wt),
                bias: Some(&bt),
                running_mean: Some(&rm),
                running_var: Some(&rv),
            };
            bn.encode(
                &mut enc,
                &inputs,
                &BatchNormOutputs { y: &y, saved: None },
                Mode::training(training),
            )?;
            ctx.queue().submit([enc.finish()]);
            let (xt, y, wt, bt, rm, rv) = (
                xt.clone(),
                y.clone(),
                wt.clone(),
                bt.clone(),
                rm.clone(),
                rv.clone(),
            );
            Box::new(move |enc| {
                let inputs = BatchNormInputs {
                    x: &xt,
                    weight: Some(&wt),
                    bias: Some(&bt),
                    running_mean: Some(&rm),
                    running_var: Some(&rv),
                };
                bn.encode(
                    enc,
                    &inputs,
                    &BatchNormOutputs { y: &y, saved: None },
                    Mode::training(training),
                )
                .expect("validated above");
            })
        }
        _ => {
            // InstanceNorm is GroupNorm with one channel per group: the same view and kernels.
            let gn = match op {
                "group_norm_silu" => GroupNorm::new(
                    ctx,
                    GroupNormConfig {
                        layout,
                        activation: Activation::Silu,
                        ..GroupNormConfig::new(32)
                    },
                )?,
                _ => GroupNorm::new(
                    ctx,
                    GroupNormConfig {
                        layout,
                        ..GroupNormConfig::new(c)
                    },
                )?,
            };
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            gn.encode(
                &mut enc,
                &NormInputs {
                    x: &xt,
                    weight: Some(&wt),
                    bias: Some(&bt),
                },
                &NormOutputs { y: &y, saved: None },
            )?;
            ctx.queue().submit([enc.finish()]);
            let (xt, y, wt, bt) = (xt.clone(), y.clone(), wt.clone(), bt.clone());
            Box::new(move |enc| {
                gn.encode(
                    enc,
                    &NormInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: Some(&bt),
                    },
                    &NormOutputs { y: &y, saved: None },
                )
                .expect("validated above");
            })
        }
    };
    let y_naive = ctx.empty(&shape, dtype)?;
    let running: Vec<f32> = rm_v
        .iter()
        .zip(&rv_v)
        .flat_map(|(&m, &v)| [m, 1.0 / (v + 1e-5).sqrt()])
        .collect();
    let naive = naive_channel(ctx, op, nchw, layout, [&xt, &wt, &bt, &y_naive], &running)?;
    let params = if op.starts_with("batch_norm") {
        4 * c
    } else {
        2 * c
    };
    Ok(Case {
        op,
        shape: nchw.to_vec(),
        dtype,
        layout: if layout == wgnorm::Layout::Nchw {
            "NCHW"
        } else {
            "NHWC"
        },
        bytes: (2 * numel + params) as u64 * 4,
        kernel: if op == "batch_norm_infer" {
            "apply".into()
        } else {
            "moments+finalize+apply".into()
        },
        run,
        naive: Some(naive),
        check: Some(Check::Naive(y, y_naive)),
    })
}

/// The naive gyromidpoint (`naive/poincare_midpoint.wgsl`) of the points of NCHW `x`
/// (points = pixels, dim = C) into `m` (shape `[C]`): one invocation per point for its weight, one per
/// coordinate for the weighted sums over every point, one for the result.
fn naive_midpoint(
    ctx: &Context,
    nchw: [usize; 4],
    c: f32,
    x: &Tensor,
    m: &Tensor,
) -> Result<Record> {
    const SLOTS: &[Slot] = &[
        Slot::Uniform,
        Slot::Read,
        Slot::ReadWrite,
        Slot::ReadWrite,
        Slot::ReadWrite,
    ];
    let [n, d, h, w] = nchw;
    let (s, p) = (h * w, n * h * w);
    let params = NaiveBallParams {
        d: d as u32,
        s: s as u32,
        p: p as u32,
        c,
        max_norm: (1.0 - wgnorm::poincare::PROJ_EPS) / c.sqrt(),
        ..Default::default()
    };
    let weights = ctx.empty(&[p, 2], DType::F32)?;
    let sums = ctx.empty(&[d + 1], DType::F32)?;
    let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
    let ranges = [
        r(x, "x")?,
        r(&weights, "weights")?,
        r(&sums, "sums")?,
        r(m, "m")?,
    ];
    let bind = BindCache::default().get(ctx, SLOTS, &params, &ranges.iter().collect::<Vec<_>>())?;
    let stages = [(0, p), (1, d + 1), (2, 1)]
        .into_iter()
        .map(|(stage, items)| (wgnorm::poincare::naive_midpoint_spec(stage), items))
        .collect();
    staged_baseline(ctx, bind, stages, vec![weights, sums])
}

/// The hyperbolic family on an NCHW activation (points = pixels, dim = C): the gyromidpoint
/// alone, and the full Poincaré batch norm with batch statistics.
fn poincare_case(ctx: &Context, op: &'static str, nchw: [usize; 4]) -> Result<Case> {
    use wgnorm::{
        PoincareBatchNorm, PoincareBatchNormInputs, PoincareMidpoint, PoincareStatistics,
    };
    let [n, c, h, w] = nchw;
    let numel = n * c * h * w;
    let x: Vec<f32> = (0..numel)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let xt = ctx.upload_f32(&x, &nchw)?;
    let bt = ctx.upload_f32(&vec![0.1; c], &[c])?;
    let wt = ctx.upload_f32(&[1.0], &[1])?;
    let mut naive = None;
    let check;
    let (run, out_elems, kernel): (Record, usize, &str) = if op == "poincare_midpoint" {
        let mid = PoincareMidpoint::new(
            ctx,
            wgnorm::BallConfig {
                c: 0.1,
                feature_axis: 1,
                dtype: DType::F32,
            },
        )?;
        let m = ctx.empty(&[c], DType::F32)?;
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        mid.encode(&mut enc, &xt, &m)?;
        ctx.queue().submit([enc.finish()]);
        let m_naive = ctx.empty(&[c], DType::F32)?;
        naive = Some(naive_midpoint(ctx, nchw, 0.1, &xt, &m_naive)?);
        check = Some(Check::Naive(m.clone(), m_naive));
        let xt = xt.clone();
        (
            Box::new(move |enc| mid.encode(enc, &xt, &m).expect("validated above")),
            c,
            "weights+tile sums+mean",
        )
    } else {
        let bn = PoincareBatchNorm::new(ctx, Default::default())?;
        let y = ctx.empty(&nchw, DType::F32)?;
        // The f64 reference (the official code's batch statistics), bias 0.1, weight 1.
        let ball = wgnorm_reference::poincare::Ball::new(0.1, wgnorm::poincare::PROJ_EPS as f64);
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let want = wgnorm_reference::poincare::poincare_batch_norm(
            &ball,
            &xd,
            &nchw,
            1,
            &vec![0.1; c],
            1.0,
        );
        check = Some(Check::Reference(y.clone(), want));
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let inputs = PoincareBatchNormInputs {
            x: &xt,
            bias: &bt,
            weight: &wt,
            running_mean: None,
            running_var: None,
        };
        bn.encode(&mut enc, &inputs, &y, PoincareStatistics::Batch)?;
        ctx.queue().submit([enc.finish()]);
        let (xt, bt, wt) = (xt.clone(), bt.clone(), wt.clone());
        (
            Box::new(move |enc| {
                let inputs = PoincareBatchNormInputs {
                    x: &xt,
                    bias: &bt,
                    weight: &wt,
                    running_mean: None,
                    running_var: None,
                };
                bn.encode(enc, &inputs, &y, PoincareStatistics::Batch)
                    .expect("validated above");
            }),
            numel,
            "6 stages",
        )
    };
    Ok(Case {
        op,
        shape: nchw.to_vec(),
        dtype: DType::F32,
        layout: "NCHW",
        bytes: (numel + out_elems + c + 1) as u64 * 4,
        kernel: kernel.into(),
        run,
        naive,
        check,
    })
}

fn cases(ctx: &Context, o: &Options) -> Result<Vec<Case>> {
    let elems: usize = if o.quick { 1 << 20 } else { 4 << 20 }; // 4 MiB / 16 MiB of f32
    let lengths: &[usize] = if o.quick {
        &[64, 1024, 4096]
    } else {
        &[64, 256, 1024, 4096, 16384, 65536]
    };
    // Every bench row length is a multiple of 4: f16 runs packed, on any device.
    let dtypes = [DType::F32, DType::F16, DType::BF16];
    let mut specs: Vec<(RowMode, usize, usize, DType, bool)> = Vec::new();
    for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
        for &dtype in &dtypes {
            for &n in lengths {
                specs.push((mode, elems / n, n, dtype, false));
            }
        }
        // Decode steps: a few rows, with the batch-invariant default (the row length's kernel)
        // and with few-row kernels on (the split kernel spreads a row over the device; on a CPU
        // adapter only the very long row is split): the price of batch invariance.
        for (rows, n) in [(1, 4096), (8, 4096), (1, 16384), (8, 16384), (1, 1 << 20)] {
            for few in [false, true] {
                specs.push((mode, rows, n, DType::F32, few));
            }
        }
    }
    let mut out = Vec::new();
    for (mode, rows, n, dtype, few) in specs {
        let name = mode.name();
        if o.ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|x| x == name))
        {
            continue;
        }
        if o.shapes
            .as_ref()
            .is_some_and(|s| !format!("{rows}x{n}").contains(s.as_str()))
        {
            continue;
        }
        out.push(row_case(ctx, mode, (rows, n, dtype), few)?);
    }
    // Batch-statistics family: (op, NCHW shape).
    let channel: &[(&'static str, [usize; 4])] = if o.quick {
        &[
            ("batch_norm_train", [8, 64, 28, 28]),
            ("batch_norm_infer", [8, 64, 28, 28]),
            ("group_norm_silu", [1, 320, 32, 32]),
        ]
    } else {
        &[
            ("batch_norm_train", [32, 64, 56, 56]),
            ("batch_norm_train", [8, 256, 28, 28]),
            ("batch_norm_train", [256, 512, 7, 7]),
            ("batch_norm_infer", [32, 64, 56, 56]),
            ("batch_norm_infer", [8, 256, 28, 28]),
            ("batch_norm_infer", [256, 512, 7, 7]),
            ("group_norm_silu", [2, 320, 64, 64]),
            ("instance_norm", [8, 64, 56, 56]),
        ]
    };
    for &(op, shape) in channel {
        for layout in [wgnorm::Layout::Nchw, wgnorm::Layout::Nhwc] {
            if o.ops
                .as_ref()
                .is_some_and(|ops| !ops.iter().any(|x| op.starts_with(x.as_str())))
            {
                continue;
            }
            let label = shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            if o.shapes
                .as_ref()
                .is_some_and(|s| !label.contains(s.as_str()))
            {
                continue;
            }
            out.push(channel_case(ctx, op, shape, layout)?);
        }
    }
    // Fused residual add + LayerNorm against the unfused sequence.
    let add_shapes: &[(usize, usize)] = if o.quick {
        &[(4096, 256)]
    } else {
        &[(16384, 256), (1024, 4096)]
    };
    for &(rows, n) in add_shapes {
        if o.ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|x| x == "add_layer_norm"))
        {
            continue;
        }
        if o.shapes
            .as_ref()
            .is_some_and(|s| !format!("{rows}x{n}").contains(s.as_str()))
        {
            continue;
        }
        out.push(add_norm_case(ctx, rows, n)?);
    }
    // Backward passes.
    let grad_rows: &[(usize, usize)] = if o.quick {
        &[(1024, 1024), (256, 4096)]
    } else {
        &[(4096, 1024), (1024, 4096), (64, 65536)]
    };
    for (mode, name) in [
        (RowMode::LayerNorm, "layer_norm_backward"),
        (RowMode::RmsNorm, "rms_norm_backward"),
    ] {
        for &(rows, n) in grad_rows {
            if wanted(o, name, &format!("{rows}x{n}")) {
                out.push(crate::bench_grad::row_grad_case(ctx, mode, rows, n)?);
            }
        }
    }
    // Through a fused activation (a pass more over the row), and an LLM training step's rows
    // in f16 (full runs).
    let (act_rows, act_n) = if o.quick { (256, 4096) } else { (1024, 4096) };
    let mut act_cases = vec![
        (
            RowMode::LayerNorm,
            "layer_norm_act_backward",
            act_rows,
            act_n,
            DType::F32,
            Activation::GeluTanh,
        ),
        (
            RowMode::RmsNorm,
            "rms_norm_act_backward",
            act_rows,
            act_n,
            DType::F32,
            Activation::Silu,
        ),
    ];
    if !o.quick {
        for (mode, name) in [
            (RowMode::LayerNorm, "layer_norm_backward"),
            (RowMode::RmsNorm, "rms_norm_backward"),
        ] {
            act_cases.push((mode, name, 4096, 4096, DType::F16, Activation::None));
        }
    }
    for (mode, name, rows, n, dtype, act) in act_cases {
        if wanted(o, name, &format!("{rows}x{n}")) {
            let case = crate::bench_grad::row_grad_case_with(ctx, mode, (rows, n, dtype), act)?;
            out.push(case);
        }
    }
    let grad_channel: &[(&'static str, [usize; 4])] = if o.quick {
        &[
            ("batch_norm_backward", [8, 64, 28, 28]),
            ("group_norm_silu_backward", [1, 320, 32, 32]),
        ]
    } else {
        &[
            ("batch_norm_backward", [32, 64, 56, 56]),
            ("batch_norm_backward", [256, 512, 7, 7]),
            ("group_norm_silu_backward", [2, 320, 64, 64]),
        ]
    };
    for &(op, shape) in grad_channel {
        if wanted(o, op, &shape.map(|d| d.to_string()).join("x")) {
            out.push(crate::bench_grad::channel_grad_case(ctx, op, shape)?);
        }
    }
    // The research methods' backward passes.
    let (method_shape, sinkhorn_m) = if o.quick {
        ([4, 64, 14, 14], 256)
    } else {
        ([16, 64, 28, 28], 1024)
    };
    let label = method_shape.map(|d| d.to_string()).join("x");
    out.extend(crate::bench_methods_grad::method_grad_cases(
        ctx,
        method_shape,
        sinkhorn_m,
        |op| {
            wanted(
                o,
                op,
                if op.starts_with("sinkhorn") {
                    ""
                } else {
                    &label
                },
            )
        },
    )?);
    // Real-model rows at their real size (full runs only).
    if !o.quick {
        for layout in [wgnorm::Layout::Nchw, wgnorm::Layout::Nhwc] {
            if wanted(o, "vae_group_norm_silu", "1x128x1024x1024") {
                out.push(crate::bench_models::vae_case(ctx, layout)?);
            }
        }
    }
    // QK-norm + RoPE fused, against norm then rope.
    // A prefill's queries and a decode step's (Qwen3-8B-like: 32 heads of 128) in full runs.
    let qk_shapes: &[[usize; 3]] = if o.quick {
        &[[512, 16, 128]]
    } else {
        &[[2048, 32, 128], [4096, 32, 128], [1, 32, 128]]
    };
    for &qk in qk_shapes {
        let label = qk.map(|d| d.to_string()).join("x");
        if wanted(o, "qk_norm_rope", &label) {
            out.push(crate::bench_fused::qk_rope_case(ctx, qk)?);
        }
        // RMSNorm on rows of the head dim in the same run: the ratio QK-norm + RoPE is held to.
        let [tokens, heads, d] = qk;
        let rows_label = format!("{}x{d}", tokens * heads);
        if tokens > 1 && wanted(o, "rms_norm", &rows_label) {
            let shape = (tokens * heads, d, DType::F32);
            out.push(row_case(ctx, RowMode::RmsNorm, shape, false)?);
        }
        if wanted(o, "qk_norm_rope_backward", &label) {
            out.push(crate::bench_fused::qk_rope_grad_case(ctx, qk)?);
        }
    }
    // Hyperbolic family.
    let hyper: [usize; 4] = if o.quick {
        [8, 64, 28, 28]
    } else {
        [32, 64, 28, 28]
    };
    for op in ["poincare_midpoint", "poincare_batch_norm"] {
        if o.ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|x| op.starts_with(x.as_str())))
        {
            continue;
        }
        let label = hyper.map(|d| d.to_string()).join("x");
        if o.shapes
            .as_ref()
            .is_some_and(|s| !label.contains(s.as_str()))
        {
            continue;
        }
        out.push(poincare_case(ctx, op, hyper)?);
    }
    Ok(out)
}

/// Whether `--ops` / `--shapes` select the row `op` of shape `label`.
fn wanted(o: &Options, op: &str, label: &str) -> bool {
    let op_ok = o
        .ops
        .as_ref()
        .is_none_or(|ops| ops.iter().any(|x| op.starts_with(x.as_str())));
    let shape_ok = o.shapes.as_ref().is_none_or(|s| label.contains(s.as_str()));
    op_ok && shape_ok
}

/// Times `runs` (each `iters` times in a row) within one command buffer per repetition; returns
/// per-run milliseconds for each repetition.
pub(crate) struct Timer {
    ctx: Context,
    gpu: bool,
    set: Option<wgpu::QuerySet>,
    resolve: Option<wgpu::Buffer>,
    read: Option<wgpu::Buffer>,
    slots: u32,
}

impl Timer {
    pub(crate) fn new(ctx: &Context, slots: u32) -> Timer {
        let gpu = ctx.features().contains(
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
        );
        let (set, resolve, read) = if gpu {
            let d = ctx.device();
            let size = slots as u64 * 8;
            (
                Some(d.create_query_set(&wgpu::QuerySetDescriptor {
                    label: None,
                    ty: wgpu::QueryType::Timestamp,
                    count: slots,
                })),
                Some(d.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })),
                Some(d.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })),
            )
        } else {
            (None, None, None)
        };
        Timer {
            ctx: ctx.clone(),
            gpu,
            set,
            resolve,
            read,
            slots,
        }
    }

    pub(crate) fn time(
        &self,
        runs: &[&dyn Fn(&mut wgpu::CommandEncoder)],
        iters: u32,
    ) -> Result<Vec<f64>> {
        let ctx = &self.ctx;
        if !self.gpu {
            let mut out = Vec::new();
            for r in runs {
                let mut enc = ctx.device().create_command_encoder(&Default::default());
                for _ in 0..iters {
                    r(&mut enc);
                }
                let t = Instant::now();
                let idx = ctx.queue().submit([enc.finish()]);
                ctx.wait(Some(idx))?;
                out.push(t.elapsed().as_secs_f64() * 1e3 / iters as f64);
            }
            return Ok(out);
        }
        let set = self.set.as_ref().unwrap();
        assert!((runs.len() as u32) < self.slots);
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        enc.write_timestamp(set, 0);
        for (i, r) in runs.iter().enumerate() {
            for _ in 0..iters {
                r(&mut enc);
            }
            enc.write_timestamp(set, i as u32 + 1);
        }
        let n = runs.len() as u32 + 1;
        let (resolve, read) = (self.resolve.as_ref().unwrap(), self.read.as_ref().unwrap());
        enc.resolve_query_set(set, 0..n, resolve, 0);
        enc.copy_buffer_to_buffer(resolve, 0, read, 0, n as u64 * 8);
        let idx = ctx.queue().submit([enc.finish()]);
        let slice = read.slice(..n as u64 * 8);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        ctx.wait(Some(idx))?;
        let ticks: Vec<u64> = slice
            .get_mapped_range()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        read.unmap();
        let period = ctx.queue().get_timestamp_period() as f64;
        Ok(ticks
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]) as f64 * period / 1e6 / iters as f64)
            .collect())
    }
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Result1 {
    case_idx: usize,
    median_ms: f64,
    min_ms: f64,
    copy_ms: f64,
    copy_name: &'static str,
    b2b_ms: f64,
    naive_ms: Option<f64>,
    naive_diff: Option<f64>,
}

pub fn run(o: &Options) -> Result<bool> {
    if o.first_call {
        let rows = crate::bench_startup::run()?;
        if let Some(path) = &o.json {
            std::fs::write(
                path,
                serde_json::to_string_pretty(&json!({ "first_call": rows }))?,
            )?;
        }
        return Ok(true);
    }
    let ctx = crate::context()?;
    if o.autotune {
        let wants = |op: &str| {
            o.ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|x| op.starts_with(x.as_str())))
        };
        return crate::autotune::run(&ctx, o.quick, o.json.as_deref(), &wants);
    }
    let cases = cases(&ctx, o)?;
    if cases.is_empty() {
        bail!("no benchmark matches the filters");
    }
    let (reps, iters) = if o.quick { (5, 2) } else { (9, 4) };
    let timer = Timer::new(&ctx, 16);
    let method = if timer.gpu {
        "GPU timestamps"
    } else {
        "wall clock around submit + wait (no TIMESTAMP_QUERY_INSIDE_ENCODERS)"
    };
    let progress = std::io::stderr().is_terminal();
    let mut results = Vec::new();
    for (ci, c) in cases.iter().enumerate() {
        if progress {
            eprint!(
                "\r[{}/{}] {} {:?} {}        ",
                ci + 1,
                cases.len(),
                c.op,
                c.shape,
                c.dtype
            );
            let _ = std::io::stderr().flush();
        }
        let copies = copies(&ctx, c.bytes)?;
        let mut runs: Vec<&dyn Fn(&mut wgpu::CommandEncoder)> = vec![&*c.run];
        for cp in &copies {
            runs.push(&*cp.run);
        }
        if let Some(nv) = &c.naive {
            runs.push(&**nv);
        }
        timer.time(&runs, 1)?; // warm-up: pipelines, caches, first-touch of memory
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
        for _ in 0..reps {
            for (s, t) in samples.iter_mut().zip(timer.time(&runs, iters)?) {
                s.push(t);
            }
        }
        let op_min = samples[0].iter().cloned().fold(f64::INFINITY, f64::min);
        let med: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
        let shader_copies = copies.len() - 1;
        let (best, copy_ms) = (1..=shader_copies)
            .map(|i| (i, med[i]))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        let naive_diff = c.check.as_ref().map(|k| k.max_diff(&ctx)).transpose()?;
        results.push(Result1 {
            case_idx: ci,
            median_ms: med[0],
            min_ms: op_min,
            copy_ms,
            copy_name: copies[best - 1].name,
            b2b_ms: med[shader_copies + 1],
            naive_ms: c.naive.as_ref().map(|_| med[shader_copies + 2]),
            naive_diff,
        });
    }
    if progress {
        eprintln!();
    }
    let info = ctx.adapter_info();
    println!("## wgnorm bench on {} ({:?}, {:?}); timing: {method}; {reps} repetitions x {iters} runs, medians; f16 access {:?}\n", info.name, info.backend, info.device_type, ctx.f16_access());
    println!("| op | shape | dtype | layout | kernel | median ms | min ms | GB/s | copy GB/s | copy ratio | best copy | b2b GB/s | baseline speedup |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json_results = Vec::new();
    let gbps = |bytes: u64, ms: f64| bytes as f64 / ms / 1e6;
    let mut ok = true;
    for r in &results {
        let c = &cases[r.case_idx];
        let shape = c
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let g = gbps(c.bytes, r.median_ms);
        let cg = gbps(c.bytes, r.copy_ms);
        let speedup = r.naive_ms.map(|n| n / r.median_ms);
        if let Some(d) = r.naive_diff {
            let tol = if c.dtype == DType::F32 { 1e-4 } else { 1e-2 };
            let agree = d <= tol;
            if !agree {
                ok = false;
                println!(
                    "FAIL the kernel disagrees with its check (naive baseline or f64 reference) on {} {shape}: max |diff| / max |want| = {d}",
                    c.op
                );
            }
        }
        println!(
            "| {} | {shape} | {} | {} | {} | {:.3} | {:.3} | {:.2} | {:.2} | **{:.2}** | {} | {:.2} | {} |",
            c.op, c.dtype, c.layout, c.kernel, r.median_ms, r.min_ms, g, cg, g / cg, r.copy_name,
            gbps(c.bytes, r.b2b_ms),
            speedup.map(|s| format!("{s:.1}x")).unwrap_or("n/a".into())
        );
        json_results.push(json!({
            "op": c.op, "shape": c.shape, "dtype": c.dtype.name(), "layout": c.layout,
            "kernel": c.kernel, "bytes": c.bytes,
            "median_ms": r.median_ms, "min_ms": r.min_ms, "gbps": g,
            "copy_gbps": cg, "copy_ratio": g / cg, "copy_kernel": r.copy_name,
            "copy_buffer_to_buffer_gbps": gbps(c.bytes, r.b2b_ms),
            "baseline_speedup": speedup,
        }));
    }
    let copy_best = results
        .iter()
        .map(|r| gbps(cases[r.case_idx].bytes, r.copy_ms))
        .fold(0.0, f64::max);
    println!("\ncopy ratio = op GB/s / best copy-shader GB/s for the same bytes, timed alternately in the same command buffers. copy_buffer_to_buffer (b2b) is shown, not used: on software Vulkan it is a host memcpy.");
    if let Some(path) = &o.json {
        let doc = json!({
            "adapter": {"name": info.name, "backend": format!("{:?}", info.backend), "device_type": format!("{:?}", info.device_type), "driver": info.driver, "driver_info": info.driver_info, "f16_access": format!("{:?}", ctx.f16_access())},
            "timing": method, "repetitions": reps, "iterations": iters,
            "copy_gbps": copy_best,
            "results": json_results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("wrote {path}");
    }
    if let Some(path) = &o.plot {
        let points: Vec<crate::bench_plot::Point> = results
            .iter()
            .map(|r| {
                let c = &cases[r.case_idx];
                crate::bench_plot::Point {
                    op: c.op,
                    shape: c.shape.clone(),
                    dtype: c.dtype.name(),
                    layout: c.layout,
                    ratio: r.copy_ms / r.median_ms,
                }
            })
            .collect();
        std::fs::write(path, crate::bench_plot::svg(&points)?)?;
        eprintln!("wrote {path}");
    }
    Ok(ok)
}
