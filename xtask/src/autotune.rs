//! `cargo xtask bench --autotune`: times every row kernel that can serve each bench shape on
//! the current adapter, alongside the runtime's own choice, and reports the fastest.
//!
//! The JSON it writes (`adapter` + `autotune`) is what `wgnorm::Tuning::from_json` reads, so
//! an app can ship it for this adapter (`Context::set_tuning`, or `WGNORM_TUNING=FILE`).

use std::io::IsTerminal;

use anyhow::{bail, Result};
use serde_json::json;
use wgnorm::engine::rownorm::{
    RowKernel, RowMode, RowNorm, RowNormArgs, RowNormConfig, SPLIT_MAX_CHUNKS,
};
use wgnorm::{Context, DType, Tensor};

use crate::bench::{median, pattern, Timer};

/// One tuned shape.
struct Tuned {
    op: &'static str,
    shape: [usize; 2],
    dtype: DType,
    best: RowKernel,
    best_ms: f64,
    default: RowKernel,
    default_ms: f64,
}

/// Powers of two from `lo` to `hi` inclusive.
fn pow2(lo: u32, hi: u32) -> impl Iterator<Item = u32> {
    (0..32)
        .map(|b| 1u32 << b)
        .filter(move |&v| v >= lo && v <= hi)
}

/// Every kernel shape worth timing on `ctx` (the engine refuses the ones a row cannot use).
/// `quick`: one workgroup size per team shape.
fn candidates(ctx: &Context, quick: bool) -> Vec<RowKernel> {
    let info = ctx.adapter_info();
    let max_inv = ctx.limits().max_compute_invocations_per_workgroup;
    let mut out = Vec::new();
    let lanes: &[u32] = if quick { &[64] } else { &[64, 256] };
    if ctx.has_subgroups() && info.subgroup_min_size.is_power_of_two() {
        let (sg_min, sg_max) = (
            info.subgroup_min_size.min(32),
            info.subgroup_max_size.max(1),
        );
        for team in pow2((sg_min / 8).max(1), sg_min) {
            let step = (sg_max / team).max(1);
            let mut rows_seen = Vec::new();
            for &l in lanes {
                let rows = (l / team).max(step).div_ceil(step) * step;
                if rows * team > max_inv || rows_seen.contains(&rows) {
                    continue;
                }
                rows_seen.push(rows);
                for cached in [true, false] {
                    out.push(RowKernel::Team {
                        team,
                        rows_per_group: rows,
                        cached,
                    });
                }
                let per_team: &[u32] = if quick { &[8] } else { &[1, 4, 8] };
                for &rows_per_team in per_team {
                    out.push(RowKernel::TeamRegs {
                        team,
                        rows_per_group: rows,
                        rows_per_team,
                    });
                }
            }
        }
    }
    let wgs: Vec<u32> = pow2(32, max_inv.min(1024)).collect();
    out.extend(wgs.into_iter().map(|wg| RowKernel::Workgroup { wg }));
    out
}

/// The split kernel's candidates for calls of few rows: chunk counts from 2 to the most the
/// engine takes, at 64 and 256 lanes (`quick`: 64 lanes, up to 32 chunks).
fn split_candidates(ctx: &Context, quick: bool) -> Vec<RowKernel> {
    let max_inv = ctx.limits().max_compute_invocations_per_workgroup;
    let (wgs, most): (&[u32], u32) = if quick {
        (&[64], 32)
    } else {
        (&[64, 256], SPLIT_MAX_CHUNKS)
    };
    let mut out = Vec::new();
    for &wg in wgs.iter().filter(|&&wg| wg <= max_inv) {
        out.extend(pow2(2, most).map(|chunks| RowKernel::Split { wg, chunks }));
    }
    out
}

/// Decode-step shapes (few rows, where the split kernel competes with the one-pass kernels);
/// tuning tables key them by their row count too.
fn decode_shapes(quick: bool) -> Vec<(usize, usize)> {
    if quick {
        vec![(1, 4096), (8, 16384)]
    } else {
        vec![(1, 4096), (8, 4096), (1, 16384), (8, 16384)]
    }
}

/// The bench's row shapes: (rows, n) with `elems` elements each.
fn shapes(quick: bool) -> Vec<(usize, usize)> {
    let elems: usize = if quick { 1 << 20 } else { 4 << 20 };
    let lengths: &[usize] = if quick {
        &[64, 1024, 4096]
    } else {
        &[64, 256, 1024, 4096, 16384, 65536]
    };
    lengths.iter().map(|&n| (elems / n, n)).collect()
}

struct Buffers {
    x: Tensor,
    w: Tensor,
    b: Tensor,
}

fn encode(op: &RowNorm, t: &Buffers, y: &Tensor, enc: &mut wgpu::CommandEncoder) -> Result<()> {
    let has_bias = op.config().mode == RowMode::LayerNorm;
    op.encode(
        enc,
        &RowNormArgs {
            x: &t.x,
            weight: Some(&t.w),
            bias: has_bias.then_some(&t.b),
            y,
            mean: None,
            rstd: None,
            residual: None,
            sum: None,
        },
    )?;
    Ok(())
}

/// Times the runtime's choice and every candidate that serves `(rows, n)`.
fn tune_shape(
    ctx: &Context,
    timer: &Timer,
    (mode, dtype, rows, n): (RowMode, DType, usize, usize),
    kernels: &[RowKernel],
    reps: usize,
) -> Result<Tuned> {
    let cfg = RowNormConfig::last_axis(mode, dtype);
    let t = Buffers {
        x: ctx.upload(&pattern(3, rows * n, 0.0, 2.0), &[rows, n], dtype)?,
        w: ctx.upload(&pattern(1, n, 1.0, 1.0), &[n], dtype)?,
        b: ctx.upload(&pattern(2, n, 0.0, 0.5), &[n], dtype)?,
    };
    let default_op = RowNorm::new(ctx, cfg)?;
    let default = default_op.kernel_for(&t.x)?.0;
    let mut ops = vec![(default, default_op, ctx.empty(&[rows, n], dtype)?)];
    for &k in kernels {
        let op = RowNorm::new(ctx, cfg)?.with_kernel(k);
        let y = ctx.empty(&[rows, n], dtype)?;
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        // A kernel the row cannot use is refused here, before anything is timed.
        if k != default && encode(&op, &t, &y, &mut enc).is_ok() {
            ctx.queue().submit([enc.finish()]);
            ops.push((k, op, y));
        }
    }
    let t = &t;
    let runs: Vec<_> = ops
        .iter()
        .map(|(_, op, y)| {
            move |enc: &mut wgpu::CommandEncoder| encode(op, t, y, enc).expect("checked above")
        })
        .collect();
    let (med, best) = time_rotated(timer, &runs, reps)?;
    // The fastest kernel must compute what the runtime's choice computes.
    let (got, want) = (ctx.download(&ops[best].2)?, ctx.download(&ops[0].2)?);
    let tol = if dtype == DType::F16 { 4e-3 } else { 1e-4 };
    if let Some(i) = (0..got.len()).find(|&i| (got[i] - want[i]).abs() > tol) {
        bail!(
            "{} {rows}x{n} {dtype}: {} gives {} where {} gives {} at {i}",
            mode.name(),
            ops[best].0,
            got[i],
            default,
            want[i]
        );
    }
    Ok(Tuned {
        op: mode.name(),
        shape: [rows, n],
        dtype,
        best: ops[best].0,
        best_ms: med[best],
        default,
        default_ms: med[0],
    })
}

/// Median milliseconds of each of `runs` over `reps` repetitions after a warm-up (pipelines and
/// first touch), and the index of the fastest. Each repetition starts the command buffer with
/// another candidate: the first one timed in a buffer pays for waking the device (llvmpipe: its
/// thread pool), which would always penalise the same candidate.
pub(crate) fn time_rotated<F: Fn(&mut wgpu::CommandEncoder)>(
    timer: &Timer,
    runs: &[F],
    reps: usize,
) -> Result<(Vec<f64>, usize)> {
    let refs: Vec<&dyn Fn(&mut wgpu::CommandEncoder)> = runs
        .iter()
        .map(|r| r as &dyn Fn(&mut wgpu::CommandEncoder))
        .collect();
    timer.time(&refs, 1)?;
    let mut samples = vec![Vec::new(); refs.len()];
    for rep in 0..reps {
        let order: Vec<usize> = (0..refs.len()).map(|i| (i + rep) % refs.len()).collect();
        let rotated: Vec<_> = order.iter().map(|&i| refs[i]).collect();
        for (&i, ms) in order.iter().zip(timer.time(&rotated, 2)?) {
            samples[i].push(ms);
        }
    }
    let med: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let best = (0..med.len())
        .min_by(|&a, &b| med[a].total_cmp(&med[b]))
        .expect("at least one candidate");
    Ok((med, best))
}

/// Runs the sweep, prints the table, writes the JSON when asked. Returns success.
/// `wants(op)`: whether `--ops` selects the op.
pub(crate) fn run(
    ctx: &Context,
    quick: bool,
    json_path: Option<&str>,
    wants: &dyn Fn(&str) -> bool,
) -> Result<bool> {
    let kernels = candidates(ctx, quick);
    let mut few_kernels = kernels.clone();
    few_kernels.extend(split_candidates(ctx, quick));
    let timer = Timer::new(ctx, few_kernels.len() as u32 + 4);
    let reps = if quick { 5 } else { 9 };
    let mut tuned = Vec::new();
    let modes: Vec<RowMode> = [RowMode::LayerNorm, RowMode::RmsNorm]
        .into_iter()
        .filter(|m| wants(m.name()))
        .collect();
    let all_shapes: Vec<((usize, usize), &[RowKernel])> = shapes(quick)
        .into_iter()
        .map(|s| (s, &kernels[..]))
        .chain(
            decode_shapes(quick)
                .into_iter()
                .map(|s| (s, &few_kernels[..])),
        )
        .collect();
    let total = all_shapes.len() * 2 * modes.len();
    let progress = std::io::stderr().is_terminal();
    for &mode in &modes {
        for dtype in [DType::F32, DType::F16] {
            for &((rows, n), candidates) in &all_shapes {
                if progress {
                    let name = mode.name();
                    eprint!(
                        "\rautotune [{}/{total}] {name} {rows}x{n} {dtype}    ",
                        tuned.len() + 1
                    );
                }
                tuned.push(tune_shape(
                    ctx,
                    &timer,
                    (mode, dtype, rows, n),
                    candidates,
                    reps,
                )?);
            }
        }
    }
    let batch = crate::autotune_batch::sweep(ctx, quick, reps, progress, wants)?;
    if progress {
        eprintln!();
    }
    let info = ctx.adapter_info();
    println!(
        "## wgnorm autotune on {} ({:?}); {} candidate kernels, medians of {reps}\n",
        info.name,
        info.backend,
        few_kernels.len()
    );
    if !tuned.is_empty() {
        println!("| op | shape | dtype | best | best ms | default | default ms | default / best |");
        println!("|---|---|---|---|---|---|---|---|");
        let mut within = 0;
        for t in &tuned {
            let r = t.default_ms / t.best_ms;
            within += (r <= 1.10) as usize;
            println!(
                "| {} | {}x{} | {} | {} | {:.3} | {} | {:.3} | {r:.2} |",
                t.op, t.shape[0], t.shape[1], t.dtype, t.best, t.best_ms, t.default, t.default_ms
            );
        }
        println!(
            "\nruntime default within 10% of the best: {within}/{} shapes",
            tuned.len()
        );
    }
    if !batch.is_empty() {
        crate::autotune_batch::print(&batch);
    }
    if let Some(path) = json_path {
        let mut entries: Vec<_> = tuned
            .iter()
            .map(|t| {
                json!({
                    "op": t.op, "shape": t.shape, "dtype": t.dtype.name(), "layout": "row-major",
                    "best": t.best.to_string(), "best_ms": t.best_ms,
                    "default": t.default.to_string(), "default_ms": t.default_ms,
                })
            })
            .collect();
        entries.extend(batch.iter().map(crate::autotune_batch::Tuned::to_json));
        let doc = json!({
            "adapter": {"name": info.name, "backend": format!("{:?}", info.backend),
                        "device_type": format!("{:?}", info.device_type),
                        "driver": info.driver, "driver_info": info.driver_info},
            "candidates": few_kernels.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "autotune": entries,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("wrote {path} (load it with wgnorm::Tuning::from_json / WGNORM_TUNING)");
    }
    Ok(true)
}
