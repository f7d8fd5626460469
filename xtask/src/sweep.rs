//! The numeric half of `cargo xtask validate`: every op, on the current adapter, against the f64
//! reference over a sweep of shapes (edge shapes included), in f32 and f16, with each kernel
//! shape the adapter can run forced in turn as well as the per-adapter choice.

use anyhow::Result;
use wgnorm::engine::rownorm::{RowKernel, RowMode, RowNorm, RowNormArgs, RowNormConfig};
use wgnorm::Mode;
use wgnorm::{Context, DType};
use wgnorm_reference::rownorm as reference;

/// (rows, row length). 1x1, odd lengths, 4097, 65536+, many tiny rows.
const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (3, 5),
    (7, 7),
    (33, 64),
    (16, 256),
    (4, 768),
    (3, 1000),
    (8, 1024),
    (2, 4097),
    (4, 4096),
    (1, 65536),
    (1, 100_003),
    (4000, 3),
    (513, 8),
];

fn noise(seed: u64, len: usize, offset: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            offset + ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn rounded(dtype: DType, v: &[f32]) -> Vec<f32> {
    match dtype {
        DType::F32 => v.to_vec(),
        DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        DType::BF16 => v
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect(),
    }
}

fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-5, 1e-4),
        DType::F16 => (2e-3, 2e-3),
        // 8 significant bits: half an ulp is 2^-9 of the value.
        DType::BF16 => (1e-2, 1e-2),
    }
}

#[derive(Default)]
struct Row {
    cases: usize,
    failed: usize,
    max_abs: f64,
    max_rel: f64,
}

fn kernels(ctx: &Context) -> Vec<(String, Option<RowKernel>)> {
    let mut k = vec![
        ("auto".to_string(), None),
        ("workgroup64".into(), Some(RowKernel::Workgroup { wg: 64 })),
        // Chunks that divide no shape's length; more chunks than short rows have accesses.
        (
            "split64x7".into(),
            Some(RowKernel::Split { wg: 64, chunks: 7 }),
        ),
    ];
    if ctx.has_subgroups() {
        let team = ctx.adapter_info().subgroup_min_size.min(32);
        let rows = (ctx.adapter_info().subgroup_max_size / team).max(1);
        k.push((
            format!("team{team}"),
            Some(RowKernel::Team {
                team,
                rows_per_group: rows,
                cached: true,
            }),
        ));
        k.push((
            format!("team{team}-uncached"),
            Some(RowKernel::Team {
                team,
                rows_per_group: rows,
                cached: false,
            }),
        ));
        // Three rows per team: row counts that are not a multiple exercise the tail.
        let regs = RowKernel::TeamRegs {
            team,
            rows_per_group: rows,
            rows_per_team: 3,
        };
        k.push((format!("team{team}-regs"), Some(regs)));
    }
    k
}

/// Runs the sweep and prints the table. Returns success.
pub fn run() -> Result<bool> {
    let ctx = crate::context()?;
    let dtypes = [DType::F32, DType::F16, DType::BF16];
    if !ctx.features().contains(wgpu::Features::SHADER_F16) {
        println!(
            "f16: no SHADER_F16 on this adapter: only rows of a length divisible by 4 are checked"
        );
    }
    let mut table: Vec<(String, Row)> = Vec::new();
    let mut failures = Vec::new();
    for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
        for &dtype in &dtypes {
            for (kname, kernel) in kernels(&ctx) {
                let mut row = Row::default();
                for (si, &(rows, n)) in SHAPES.iter().enumerate() {
                    let cfg = RowNormConfig {
                        weight_offset: if mode == RowMode::RmsNorm { 0.5 } else { 0.0 },
                        ..RowNormConfig::last_axis(mode, dtype)
                    };
                    let mut op = RowNorm::new(&ctx, cfg)?;
                    if let Some(k) = kernel {
                        op = op.with_kernel(k);
                    }
                    let offset = if si % 3 == 1 { 100.0 } else { 0.0 };
                    let x = rounded(dtype, &noise(si as u64 + 1, rows * n, offset));
                    let w = rounded(dtype, &noise(si as u64 + 101, n, 1.0));
                    let b = rounded(dtype, &noise(si as u64 + 201, n, 0.0));
                    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                    let wd: Vec<f64> = w.iter().map(|&v| v as f64).collect();
                    let bd: Vec<f64> = b.iter().map(|&v| v as f64).collect();
                    let want = match mode {
                        RowMode::LayerNorm => {
                            reference::layer_norm(&xd, n, Some(&wd), Some(&bd), 1e-5)
                        }
                        RowMode::RmsNorm => reference::rms_norm(&xd, n, Some(&wd), 0.5, 1e-5),
                    };
                    let xt = ctx.upload(&x, &[rows, n], dtype)?;
                    let wt = ctx.upload(&w, &[n], dtype)?;
                    let bt = ctx.upload(&b, &[n], dtype)?;
                    let y = ctx.empty(&[rows, n], dtype)?;
                    let rstd = ctx.empty(&[rows], DType::F32)?;
                    let mean = ctx.empty(&[rows], DType::F32)?;
                    let mut enc = ctx.device().create_command_encoder(&Default::default());
                    let result = op.encode(
                        &mut enc,
                        &RowNormArgs {
                            x: &xt,
                            weight: Some(&wt),
                            bias: (mode == RowMode::LayerNorm).then_some(&bt),
                            y: &y,
                            mean: Some(&mean),
                            rstd: Some(&rstd),
                            residual: None,
                            sum: None,
                        },
                    );
                    row.cases += 1;
                    let label = format!("{mode:?} {dtype} {kname} {rows}x{n}");
                    if let Err(e) = result {
                        // A forced team kernel may legitimately not fit a long row, and element-wise
                        // f16 needs SHADER_F16.
                        let forced_misfit = kernel.is_some()
                            && matches!(e, wgnorm::Error::InvalidParameter { name: "kernel", .. });
                        let no_f16 = !ctx.features().contains(wgpu::Features::SHADER_F16)
                            && matches!(e, wgnorm::Error::UnsupportedDType { .. });
                        // bf16 has no element-wise access: rows not a multiple of 4 are refused.
                        let bf16_scalar = dtype == DType::BF16
                            && n % 4 != 0
                            && matches!(e, wgnorm::Error::UnsupportedDType { .. });
                        if forced_misfit || no_f16 || bf16_scalar {
                            row.cases -= 1;
                            continue;
                        }
                        row.failed += 1;
                        failures.push(format!("{label}: {e}"));
                        continue;
                    }
                    ctx.queue().submit([enc.finish()]);
                    let (atol, rtol) = tolerance(dtype);
                    // f32 forward-error bound of (x - mean) * rstd * w with a mean accurate to a few
                    // ulps: it grows with |x| / sigma, the row's condition. The one-pass
                    // E[x^2] - E[x]^2 formula misses it by orders of magnitude on offset rows.
                    let cond: Vec<f64> = (0..rows * n)
                        .map(|i| {
                            let r = i / n;
                            let wgt = if mode == RowMode::RmsNorm {
                                wd[i % n] + 0.5
                            } else {
                                wd[i % n]
                            };
                            8.0 * f32::EPSILON as f64
                                * (xd[i].abs() + want.mean[r].abs())
                                * want.rstd[r]
                                * wgt.abs()
                        })
                        .collect();
                    let zeros = vec![0.0; rows];
                    let checks = [
                        ("y", ctx.download(&y)?, want.y, atol, rtol, cond),
                        (
                            "mean",
                            ctx.download(&mean)?,
                            want.mean,
                            1e-5,
                            1e-5,
                            zeros.clone(),
                        ),
                        ("rstd", ctx.download(&rstd)?, want.rstd, 1e-5, 1e-4, zeros),
                    ];
                    for (name, got, want, atol, rtol, cond) in checks {
                        let mut bad = None;
                        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                            let err = (g as f64 - w).abs();
                            if name == "y" {
                                row.max_abs = row.max_abs.max(err);
                                row.max_rel = row.max_rel.max(err / w.abs().max(1e-3));
                            }
                            let within = err - cond[i] <= atol + rtol * w.abs();
                            if !within && bad.is_none() {
                                bad = Some(format!("{label}: {name}[{i}] = {g} expected {w}"));
                            }
                        }
                        if got.len() != want.len() {
                            bad = Some(format!(
                                "{label}: {name} has {} elements, expected {}",
                                got.len(),
                                want.len()
                            ));
                        }
                        if let Some(b) = bad {
                            row.failed += 1;
                            failures.push(b);
                        }
                    }
                }
                let op = mode.name();
                table.push((format!("{op} | {dtype} | {kname}"), row));
            }
        }
    }
    println!(
        "## Ops against the f64 reference ({} row shapes, {} channel shapes x 2 layouts each)\n",
        SHAPES.len(),
        CHANNEL_SHAPES.len()
    );
    println!("| op | dtype | kernel | shapes run | max abs err (y) | max rel err (y, vs max(|y|, 1e-3)) | failed |");
    println!("|---|---|---|---|---|---|---|");
    channel_ops(&ctx, &mut table, &mut failures)?;
    poincare_ops(&ctx, &mut table, &mut failures)?;
    for (k, r) in &table {
        println!(
            "| {k} | {} | {:.2e} | {:.2e} | {} |",
            r.cases, r.max_abs, r.max_rel, r.failed
        );
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    println!("\n{} failures", failures.len());
    Ok(failures.is_empty())
}

/// (n, c, spatial, groups): tiny, odd, channels-last-hostile and large reductions.
const CHANNEL_SHAPES: &[(usize, usize, &[usize], usize)] = &[
    (2, 3, &[4, 5], 3),
    (16, 32, &[], 8),
    (4, 8, &[10], 2),
    (8, 64, &[7, 7], 32),
    (1, 1, &[3], 1),
    (2, 3, &[300, 301], 1),
    (32, 16, &[14, 14], 4),
];

fn nhwc(x: &[f64], n: usize, c: usize, hw: usize) -> Vec<f64> {
    wgnorm_reference::chnorm::to_nhwc(x, n, c, hw)
}

/// BatchNorm (training and inference), GroupNorm (+SiLU) and InstanceNorm in both layouts.
fn channel_ops(
    ctx: &Context,
    table: &mut Vec<(String, Row)>,
    failures: &mut Vec<String>,
) -> Result<()> {
    use wgnorm::{
        Activation, BatchNorm, BatchNormConfig, BatchNormInputs, GroupNorm, GroupNormConfig,
        InstanceNorm, InstanceNormConfig, Layout, LpNorm, MeanVarianceNorm, NormInputs,
    };
    use wgnorm_reference::chnorm as r;
    let ops = [
        "batch_norm train",
        "batch_norm infer",
        "group_norm+silu",
        "instance_norm",
        "lp_norm p1",
        "lp_norm p2",
        "mean_variance_norm",
    ];
    for op in ops {
        for dtype in [DType::F32, DType::F16] {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                // LpNorm (axis 1) and MVN (axes [0, 2, 3]) take no layout: run them once.
                let layoutless = op.starts_with("lp_norm") || op.starts_with("mean_variance");
                if layoutless && layout == Layout::Nhwc {
                    continue;
                }
                let mut row = Row::default();
                for (si, &(n, c, sp, g)) in CHANNEL_SHAPES.iter().enumerate() {
                    let hw: usize = sp.iter().product();
                    let x = rounded(
                        dtype,
                        &noise(
                            si as u64 + 300,
                            n * c * hw,
                            if si % 2 == 1 { 10.0 } else { 0.0 },
                        ),
                    );
                    let w = noise(si as u64 + 400, c, 1.0);
                    let b = noise(si as u64 + 500, c, 0.0);
                    let rm0 = noise(si as u64 + 600, c, 0.0);
                    let rv0: Vec<f32> = noise(si as u64 + 700, c, 0.0)
                        .iter()
                        .map(|v| v.abs() + 0.5)
                        .collect();
                    let d = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<f64>>();
                    let (xd, wd, bd) = (d(&x), d(&w), d(&b));
                    let want = match op {
                        "batch_norm train" | "batch_norm infer" => {
                            r::batch_norm(
                                &xd,
                                n,
                                c,
                                hw,
                                Some(&wd),
                                Some(&bd),
                                &d(&rm0),
                                &d(&rv0),
                                op.ends_with("train"),
                                0.1,
                                true,
                                1e-5,
                            )
                            .y
                        }
                        "group_norm+silu" => {
                            r::group_norm(&xd, n, c, hw, g, Some(&wd), Some(&bd), 1e-5, true)
                        }
                        "lp_norm p1" => r::lp_norm(&xd, &[n, c, hw], 1, 1),
                        "lp_norm p2" => r::lp_norm(&xd, &[n, c, hw], 1, 2),
                        "mean_variance_norm" => {
                            r::mean_variance_norm(&xd, &[n, c, hw], &[0, 2], 1e-9)
                        }
                        _ => r::instance_norm(&xd, n, c, hw, Some(&wd), Some(&bd), 1e-5),
                    };
                    let (xin, want) = match layout {
                        Layout::Nchw => (x.clone(), want),
                        Layout::Nhwc => (
                            nhwc(&xd, n, c, hw).iter().map(|&v| v as f32).collect(),
                            nhwc(&want, n, c, hw),
                        ),
                    };
                    let shape: Vec<usize> = match layout {
                        Layout::Nchw => [&[n, c][..], sp].concat(),
                        Layout::Nhwc => [&[n][..], sp, &[c]].concat(),
                    };
                    let xt = ctx.upload(&xin, &shape, dtype)?;
                    let (wt, bt) = (ctx.upload_f32(&w, &[c])?, ctx.upload_f32(&b, &[c])?);
                    let (rm, rv) = (ctx.upload_f32(&rm0, &[c])?, ctx.upload_f32(&rv0, &[c])?);
                    let ni = NormInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: Some(&bt),
                    };
                    let result = match op {
                        "batch_norm train" | "batch_norm infer" => BatchNorm::new(
                            ctx,
                            BatchNormConfig {
                                layout,
                                dtype,
                                ..Default::default()
                            },
                        )?
                        .forward(
                            &BatchNormInputs {
                                x: &xt,
                                weight: Some(&wt),
                                bias: Some(&bt),
                                running_mean: Some(&rm),
                                running_var: Some(&rv),
                            },
                            Mode::training(op.ends_with("train")),
                        ),
                        "lp_norm p1" => LpNorm::new(
                            ctx,
                            wgnorm::LpNormConfig {
                                axis: 1,
                                p: 1,
                                dtype,
                            },
                        )?
                        .forward(&xt),
                        "lp_norm p2" => LpNorm::new(
                            ctx,
                            wgnorm::LpNormConfig {
                                axis: 1,
                                p: 2,
                                dtype,
                            },
                        )?
                        .forward(&xt),
                        "mean_variance_norm" => {
                            // Every axis but the channel (ONNX's default [0, 2, 3] for NCHW).
                            let axes: Vec<isize> =
                                (0..shape.len() as isize).filter(|&d| d != 1).collect();
                            MeanVarianceNorm::new(
                                ctx,
                                wgnorm::MeanVarianceNormConfig {
                                    axes: axes.to_vec(),
                                    eps: 1e-9,
                                    dtype,
                                },
                            )?
                            .forward(&xt)
                        }
                        "group_norm+silu" => GroupNorm::new(
                            ctx,
                            GroupNormConfig {
                                layout,
                                dtype,
                                activation: Activation::Silu,
                                ..GroupNormConfig::new(g)
                            },
                        )?
                        .forward(&ni),
                        _ => InstanceNorm::new(
                            ctx,
                            InstanceNormConfig {
                                layout,
                                dtype,
                                ..Default::default()
                            },
                        )?
                        .forward(&ni),
                    };
                    row.cases += 1;
                    let label = format!("{op} {dtype} {layout:?} {n}x{c}x{sp:?}");
                    let y = match result {
                        Ok(y) => y,
                        Err(e) => {
                            row.failed += 1;
                            failures.push(format!("{label}: {e}"));
                            continue;
                        }
                    };
                    let got = ctx.download(&y)?;
                    let (atol, rtol) = tolerance(dtype);
                    // Offset shapes: the f32 rounding of x (|x| ~ 10) bounds the attainable error.
                    let atol = if si % 2 == 1 { atol.max(1e-4) } else { atol };
                    let mut bad = None;
                    for (i, (&gv, &wv)) in got.iter().zip(&want).enumerate() {
                        let err = (gv as f64 - wv).abs();
                        row.max_abs = row.max_abs.max(err);
                        row.max_rel = row.max_rel.max(err / wv.abs().max(1e-3));
                        let within = err <= atol + rtol * wv.abs();
                        if !within && bad.is_none() {
                            bad = Some(format!("{label}: y[{i}] = {gv} expected {wv}"));
                        }
                    }
                    if got.len() != want.len() {
                        bad = Some(format!(
                            "{label}: {} elements, expected {}",
                            got.len(),
                            want.len()
                        ));
                    }
                    if let Some(b) = bad {
                        row.failed += 1;
                        failures.push(b);
                    }
                }
                table.push((format!("{op} | {dtype} | {layout:?}"), row));
            }
        }
    }
    Ok(())
}

/// The hyperbolic family: gyromidpoint and Poincaré batch norm (batch statistics) on [P, D] and
/// NCHW over curvatures 1e-3 .. 10. Errors relative to the largest |expected| (the outputs are
/// vectors: a small coordinate of a large vector carries the vector's absolute error).
fn poincare_ops(
    ctx: &Context,
    table: &mut Vec<(String, Row)>,
    failures: &mut Vec<String>,
) -> Result<()> {
    use wgnorm::{
        PoincareBatchNorm, PoincareBatchNormConfig, PoincareBatchNormInputs, PoincareMidpoint,
        PoincareStatistics,
    };
    use wgnorm_reference::poincare::{self as hyp, Ball, PROJ_EPS_F32};
    let shapes: &[(&[usize], f64)] = &[
        (&[64, 16], 0.1),
        (&[4, 8, 5, 5], 1.0),
        (&[1000, 1], 10.0),
        (&[16, 32, 6, 6], 1e-3),
        (&[3, 5, 33, 35], 0.5),
    ];
    let mut dtypes = vec![DType::F32];
    if ctx.features().contains(wgpu::Features::SHADER_F16) {
        dtypes.push(DType::F16);
    }
    for op in ["poincare_midpoint", "poincare_batch_norm"] {
        for &dtype in &dtypes {
            let mut row = Row::default();
            for (si, &(shape, c)) in shapes.iter().enumerate() {
                let numel: usize = shape.iter().product();
                let d = shape[1];
                // In 1-D points are parallel or anti-parallel: Möbius denominators near the
                // boundary cancel, an f32 condition number ~1e3.
                let tol = match (dtype, d) {
                    (DType::F16, _) => 2e-3,
                    (_, 1) => 1e-3,
                    _ => 1e-4,
                };
                let ball = Ball::new(c, PROJ_EPS_F32);
                // Tangent vectors of norm up to a few / sqrt(c): points spread over the ball.
                let v = rounded(dtype, &noise(si as u64 + 7, numel, 0.0));
                let v: Vec<f32> = v.iter().map(|x| x * (1.5 / c.sqrt()) as f32).collect();
                let v = rounded(dtype, &v);
                let vd: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                let xt = ctx.upload(&v, shape, dtype)?;
                let (got, want) = if op == "poincare_midpoint" {
                    // The inputs as points: exp0 of the tangent vectors, rounded to the dtype.
                    let (pts, _, s) = hyp::points_along(&vd, shape, 1);
                    let pts: Vec<Vec<f64>> = pts.iter().map(|p| ball.exp0(p)).collect();
                    let flat: Vec<f32> = hyp::scatter_points(&pts, d, s)
                        .iter()
                        .map(|&x| x as f32)
                        .collect();
                    let flat = rounded(dtype, &flat);
                    let fd: Vec<f64> = flat.iter().map(|&x| x as f64).collect();
                    let (pts, _, _) = hyp::points_along(&fd, shape, 1);
                    let pt = ctx.upload(&flat, shape, dtype)?;
                    let m = PoincareMidpoint::new(
                        ctx,
                        wgnorm::BallConfig {
                            c: c as f32,
                            feature_axis: 1,
                            dtype,
                        },
                    )?
                    .forward(&pt)?;
                    (ctx.download(&m)?, ball.midpoint(&pts))
                } else {
                    let b = noise(si as u64 + 9, d, 0.0);
                    let bd: Vec<f64> = b.iter().map(|&x| x as f64 * 0.5).collect();
                    let b: Vec<f32> = bd.iter().map(|&x| x as f32).collect();
                    let bt = ctx.upload_f32(&b, &[d])?;
                    let wt = ctx.upload_f32(&[0.8], &[1])?;
                    let cfg = PoincareBatchNormConfig {
                        c: c as f32,
                        dtype,
                        ..Default::default()
                    };
                    let inputs = PoincareBatchNormInputs {
                        x: &xt,
                        bias: &bt,
                        weight: &wt,
                        running_mean: None,
                        running_var: None,
                    };
                    let y = PoincareBatchNorm::new(ctx, cfg)?
                        .forward(&inputs, PoincareStatistics::Batch)?;
                    (
                        ctx.download(&y)?,
                        hyp::poincare_batch_norm(&ball, &vd, shape, 1, &bd, 0.8),
                    )
                };
                row.cases += 1;
                let scale = want.iter().fold(0.0f64, |a, w| a.max(w.abs())).max(1e-30);
                let mut bad = None;
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let err = (g as f64 - w).abs();
                    row.max_abs = row.max_abs.max(err);
                    row.max_rel = row.max_rel.max(err / scale);
                    // NaN fails too.
                    let within = err <= tol * (scale + w.abs());
                    if !within && bad.is_none() {
                        bad = Some(format!(
                            "{op} {dtype} {shape:?} c={c}: [{i}] = {g} expected {w}"
                        ));
                    }
                }
                if got.len() != want.len() {
                    bad = Some(format!(
                        "{op} {shape:?}: {} elements, expected {}",
                        got.len(),
                        want.len()
                    ));
                }
                if let Some(b) = bad {
                    row.failed += 1;
                    failures.push(b);
                }
            }
            table.push((format!("{op} | {dtype} | staged"), row));
        }
    }
    Ok(())
}
