//! LayerNorm / RMSNorm on the GPU against the f64 reference, kernel paths, limits, caches and
//! bad input.

use wgnorm::engine::rownorm::{RowKernel, RowMode, RowNorm, RowNormArgs, RowNormConfig};
use wgnorm::prelude::*;
use wgnorm::Error;
use wgnorm_reference::rownorm as reference;
use wgnorm_tests::{assert_close, ctx, noise, round_to};

fn cfg(mode: RowMode, dtype: DType) -> RowNormConfig {
    RowNormConfig::last_axis(mode, dtype)
}

fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (2e-5, 1e-4),
        DType::F16 => (2e-3, 2e-3),
        DType::BF16 => (1e-2, 1e-2),
    }
}

/// Runs one row norm with weight (and bias for LayerNorm) and checks y, mean and rstd.
fn check(
    mode: RowMode,
    dtype: DType,
    rows: usize,
    n: usize,
    kernel: Option<RowKernel>,
    offset: f32,
) {
    check_with(mode, dtype, rows, n, kernel, offset, 1.0, 1e-5);
}

/// [`check`] with x scaled by `scale` (its variance is about `scale^2 / 3`) and this `eps`.
#[allow(clippy::too_many_arguments)]
fn check_with(
    mode: RowMode,
    dtype: DType,
    rows: usize,
    n: usize,
    kernel: Option<RowKernel>,
    offset: f32,
    scale: f32,
    eps: f32,
) {
    check_op(
        mode,
        dtype,
        rows,
        n,
        |op| match kernel {
            Some(k) => op.with_kernel(k),
            None => op,
        },
        (offset, scale, eps),
    );
}

/// [`check_with`] on the op `setup` makes of the default one.
fn check_op(
    mode: RowMode,
    dtype: DType,
    rows: usize,
    n: usize,
    setup: impl FnOnce(RowNorm) -> RowNorm,
    (offset, scale, eps): (f32, f32, f32),
) {
    let c = ctx();
    let op = setup(
        RowNorm::new(
            c,
            RowNormConfig {
                eps,
                ..cfg(mode, dtype)
            },
        )
        .unwrap(),
    );
    let x: Vec<f32> = noise(rows as u64 * 31 + n as u64, rows * n)
        .iter()
        .map(|v| v * scale + offset)
        .collect();
    let w: Vec<f32> = noise(7, n).iter().map(|v| v + 1.0).collect();
    let b = noise(9, n);
    let (xd, wd, bd) = (
        round_to(dtype, &x),
        round_to(dtype, &w),
        round_to(dtype, &b),
    );
    let eps64 = eps as f64;
    let want = match mode {
        RowMode::LayerNorm => reference::layer_norm(&xd, n, Some(&wd), Some(&bd), eps64),
        RowMode::RmsNorm => reference::rms_norm(&xd, n, Some(&wd), 0.0, eps64),
    };
    let xt = c.upload(&x, &[rows, n], dtype).unwrap();
    let wt = c.upload(&w, &[n], dtype).unwrap();
    let bt = c.upload(&b, &[n], dtype).unwrap();
    let has_bias = mode == RowMode::LayerNorm;
    let (y, mean, rstd) = op
        .forward(&xt, Some(&wt), has_bias.then_some(&bt), true)
        .unwrap();
    let kernel = op.kernel_for_shape(&[rows, n], true).map(|(k, _)| k);
    let what = format!("{mode:?} {dtype} {rows}x{n} {kernel:?} eps {eps} scale {scale}");
    let (atol, rtol) = tol(dtype);
    assert_close(
        &format!("{what} y"),
        &c.download(&y).unwrap(),
        &want.y,
        atol,
        rtol,
    );
    assert_close(
        &format!("{what} rstd"),
        &c.download(&rstd.unwrap()).unwrap(),
        &want.rstd,
        1e-6,
        1e-4,
    );
    assert_close(
        &format!("{what} mean"),
        &c.download(&mean.unwrap()).unwrap(),
        &want.mean,
        1e-5,
        1e-6,
    );
}

/// The split kernel with chunks that divide no test length, and with more chunks than most test
/// rows have accesses (empty chunks), then the subgroup team kernels this adapter can run
/// (workgroup-memory cache, then registers).
fn forced_kernels() -> Vec<RowKernel> {
    let c = ctx();
    let split = [
        RowKernel::Split { wg: 32, chunks: 3 },
        RowKernel::Split {
            wg: 64,
            chunks: 256,
        },
    ];
    if !c.has_subgroups() {
        return split.to_vec();
    }
    let team = c.adapter_info().subgroup_min_size.min(32);
    let rows_per_group = (c.adapter_info().subgroup_max_size / team).max(1);
    vec![
        split[0],
        split[1],
        RowKernel::Team {
            team,
            rows_per_group,
            cached: true,
        },
        RowKernel::Team {
            team,
            rows_per_group,
            cached: false,
        },
        RowKernel::TeamRegs {
            team,
            rows_per_group,
            rows_per_team: 1,
        },
        // Several rows per team, with row counts that leave a partial last team.
        RowKernel::TeamRegs {
            team,
            rows_per_group,
            rows_per_team: 3,
        },
    ]
}

/// Whether a forced kernel can serve rows of `n` elements (the team kernels have size limits).
fn serves(k: RowKernel, n: usize) -> bool {
    match k {
        RowKernel::Team { cached: true, .. } => n <= 4096,
        RowKernel::Team { cached: false, .. } => true,
        RowKernel::TeamRegs { team, .. } => {
            n <= (team * wgnorm::engine::rownorm::TEAM_REGS) as usize
        }
        RowKernel::Workgroup { .. } | RowKernel::Split { .. } => true,
    }
}

/// One mode, dtype and shape through the default kernel, the workgroup kernel, the split kernel
/// and every team kernel that serves the row length.
fn every_kernel_path(mode: RowMode, dtype: DType, rows: usize, n: usize) {
    let wg = if mode == RowMode::LayerNorm { 32 } else { 64 };
    check(mode, dtype, rows, n, None, 0.0);
    check(mode, dtype, rows, n, Some(RowKernel::Workgroup { wg }), 0.0);
    for k in forced_kernels().into_iter().filter(|&k| serves(k, n)) {
        check(mode, dtype, rows, n, Some(k), 0.0);
    }
}

/// One test per (mode, dtype, shape), so a failure names its case and the others still run.
macro_rules! kernel_path_tests {
    ($($name:ident: $mode:ident, $dtype:ident, $rows:expr, $n:expr;)*) => {
        $(
            #[test]
            fn $name() {
                every_kernel_path(RowMode::$mode, DType::$dtype, $rows, $n);
            }
        )*
    };
}

kernel_path_tests! {
    layer_norm_f32_1x1: LayerNorm, F32, 1, 1;
    layer_norm_f32_2x3: LayerNorm, F32, 2, 3;
    layer_norm_f32_3x5: LayerNorm, F32, 3, 5;
    layer_norm_f32_5x7: LayerNorm, F32, 5, 7;
    layer_norm_f32_9x64: LayerNorm, F32, 9, 64;
    layer_norm_f32_4x768: LayerNorm, F32, 4, 768;
    layer_norm_f32_3x1000: LayerNorm, F32, 3, 1000;
    layer_norm_f32_2x1024: LayerNorm, F32, 2, 1024;
    layer_norm_f32_2x4097: LayerNorm, F32, 2, 4097;
    layer_norm_f32_1x8192: LayerNorm, F32, 1, 8192;
    layer_norm_f16_1x1: LayerNorm, F16, 1, 1;
    layer_norm_f16_2x3: LayerNorm, F16, 2, 3;
    layer_norm_f16_3x5: LayerNorm, F16, 3, 5;
    layer_norm_f16_5x7: LayerNorm, F16, 5, 7;
    layer_norm_f16_9x64: LayerNorm, F16, 9, 64;
    layer_norm_f16_4x768: LayerNorm, F16, 4, 768;
    layer_norm_f16_3x1000: LayerNorm, F16, 3, 1000;
    layer_norm_f16_2x1024: LayerNorm, F16, 2, 1024;
    layer_norm_f16_2x4097: LayerNorm, F16, 2, 4097;
    layer_norm_f16_1x8192: LayerNorm, F16, 1, 8192;
    rms_norm_f32_1x1: RmsNorm, F32, 1, 1;
    rms_norm_f32_2x3: RmsNorm, F32, 2, 3;
    rms_norm_f32_3x5: RmsNorm, F32, 3, 5;
    rms_norm_f32_5x7: RmsNorm, F32, 5, 7;
    rms_norm_f32_9x64: RmsNorm, F32, 9, 64;
    rms_norm_f32_4x768: RmsNorm, F32, 4, 768;
    rms_norm_f32_3x1000: RmsNorm, F32, 3, 1000;
    rms_norm_f32_2x1024: RmsNorm, F32, 2, 1024;
    rms_norm_f32_2x4097: RmsNorm, F32, 2, 4097;
    rms_norm_f32_1x8192: RmsNorm, F32, 1, 8192;
    rms_norm_f16_1x1: RmsNorm, F16, 1, 1;
    rms_norm_f16_2x3: RmsNorm, F16, 2, 3;
    rms_norm_f16_3x5: RmsNorm, F16, 3, 5;
    rms_norm_f16_5x7: RmsNorm, F16, 5, 7;
    rms_norm_f16_9x64: RmsNorm, F16, 9, 64;
    rms_norm_f16_4x768: RmsNorm, F16, 4, 768;
    rms_norm_f16_3x1000: RmsNorm, F16, 3, 1000;
    rms_norm_f16_2x1024: RmsNorm, F16, 2, 1024;
    rms_norm_f16_2x4097: RmsNorm, F16, 2, 4097;
    rms_norm_f16_1x8192: RmsNorm, F16, 1, 8192;
}

#[test]
fn layer_norm_survives_a_large_common_offset() {
    // E[x^2] - E[x]^2 loses every digit of the variance here; the reference (two-pass f64) does
    // not. The tolerance leaves room for f32 rounding of x itself (|x| ~ 1e4, spread ~1).
    let mut kernels = vec![None, Some(RowKernel::Workgroup { wg: 64 })];
    kernels.extend(
        forced_kernels()
            .into_iter()
            .filter(|&k| serves(k, 1024))
            .map(Some),
    );
    for kernel in kernels {
        let c = ctx();
        let (rows, n) = (4, 1024);
        let x: Vec<f32> = noise(3, rows * n).iter().map(|v| v + 1e4).collect();
        let mut op = RowNorm::new(c, cfg(RowMode::LayerNorm, DType::F32)).unwrap();
        if let Some(k) = kernel {
            op = op.with_kernel(k);
        }
        let (y, _, rstd) = op
            .forward(&c.upload_f32(&x, &[rows, n]).unwrap(), None, None, true)
            .unwrap();
        let want = reference::layer_norm(&round_to(DType::F32, &x), n, None, None, 1e-5);
        assert_close("offset y", &c.download(&y).unwrap(), &want.y, 4e-3, 1e-3);
        assert_close(
            "offset rstd",
            &c.download(&rstd.unwrap()).unwrap(),
            &want.rstd,
            0.0,
            1e-3,
        );
    }
}

#[test]
fn very_long_rows_stay_inside_the_software_loop_budget() {
    // lavapipe stops an invocation's loops after 65535 iterations in total. A 4.2M-element odd
    // (scalar) row needs > 65535 iterations per lane at 128 lanes: the per-adapter choice must
    // widen the workgroup, and a forced narrow kernel must be refused, never run short.
    let n = 128 * 32_800 + 1;
    check(RowMode::LayerNorm, DType::F32, 1, n, None, 0.5);
    check(RowMode::RmsNorm, DType::F32, 1, n, None, 0.0);
    if ctx().is_cpu() {
        let c = ctx();
        let x = c.empty(&[1, n], DType::F32).unwrap();
        let op = RowNorm::new(c, cfg(RowMode::LayerNorm, DType::F32))
            .unwrap()
            .with_kernel(RowKernel::Workgroup { wg: 32 });
        assert!(matches!(
            op.forward(&x, None, None, false),
            Err(Error::InvalidParameter { name: "kernel", .. })
        ));
    }
}

#[test]
fn more_rows_than_one_dispatch_dimension() {
    // One workgroup per row: 70001 rows need a 2D grid (65535 groups per dimension).
    check(
        RowMode::LayerNorm,
        DType::F32,
        70_001,
        3,
        Some(RowKernel::Workgroup { wg: 32 }),
        0.0,
    );
    check(RowMode::RmsNorm, DType::F32, 70_001, 2, None, 0.0);
}

#[test]
fn axis_reduces_every_trailing_dim() {
    let c = ctx();
    let shape = [2, 3, 4, 5];
    let x = noise(11, 120);
    let w = noise(12, 60);
    let ln = LayerNorm::new(
        c,
        LayerNormConfig {
            axis: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let xt = c.upload_f32(&x, &shape).unwrap();
    let wt = c.upload_f32(&w, &[3, 4, 5]).unwrap();
    let out = ln
        .forward(&LayerNormInputs {
            x: &xt,
            weight: Some(&wt),
            bias: None,
        })
        .unwrap();
    let want = reference::layer_norm(
        &round_to(DType::F32, &x),
        60,
        Some(&round_to(DType::F32, &w)),
        None,
        1e-5,
    );
    assert_close(
        "axis=1 y",
        &c.download(&out.y).unwrap(),
        &want.y,
        1e-5,
        1e-4,
    );
    assert_eq!(out.mean.shape(), &[2]);

    let rn = RmsNorm::new(
        c,
        RmsNormConfig {
            axis: -2,
            weight_offset: 1.0,
            ..Default::default()
        },
    )
    .unwrap();
    let w2 = noise(13, 20);
    let wt2 = c.upload_f32(&w2, &[4, 5]).unwrap();
    let out = rn
        .forward(&RmsNormInputs {
            x: &xt,
            weight: Some(&wt2),
        })
        .unwrap();
    let want = reference::rms_norm(
        &round_to(DType::F32, &x),
        20,
        Some(&round_to(DType::F32, &w2)),
        1.0,
        1e-5,
    );
    assert_close(
        "rms axis=-2 gemma y",
        &c.download(&out.y).unwrap(),
        &want.y,
        1e-5,
        1e-4,
    );
}

#[test]
fn nan_and_inf_stay_in_their_row() {
    let c = ctx();
    let n = 16;
    let mut x = noise(5, 3 * n);
    x[n + 3] = f32::NAN;
    x[2 * n + 1] = f32::INFINITY;
    let ln = LayerNorm::new(c, LayerNormConfig::default()).unwrap();
    let xt = c.upload_f32(&x, &[3, n]).unwrap();
    let y = c
        .download(
            &ln.forward(&LayerNormInputs {
                x: &xt,
                weight: None,
                bias: None,
            })
            .unwrap()
            .y,
        )
        .unwrap();
    let want = reference::layer_norm(&round_to(DType::F32, &x[..n]), n, None, None, 1e-5);
    assert_close("row 0 untouched", &y[..n], &want.y, 1e-5, 1e-4);
    assert!(
        y[n..2 * n].iter().all(|v| v.is_nan()),
        "NaN row: {:?}",
        &y[n..2 * n]
    );
    assert!(
        y[2 * n..].iter().all(|v| !v.is_finite()),
        "inf row: {:?}",
        &y[2 * n..]
    );
}

#[test]
fn empty_tensors_are_a_no_op() {
    let c = ctx();
    let ln = LayerNorm::new(c, LayerNormConfig::default()).unwrap();
    let x = c.empty(&[0, 8], DType::F32).unwrap();
    let out = ln
        .forward(&LayerNormInputs {
            x: &x,
            weight: None,
            bias: None,
        })
        .unwrap();
    assert_eq!(out.y.shape(), &[0, 8]);
    assert!(c.download(&out.y).unwrap().is_empty());
    let mut enc = c.device().create_command_encoder(&Default::default());
    let y = c.empty(&[0, 8], DType::F32).unwrap();
    ln.encode(
        &mut enc,
        &LayerNormInputs {
            x: &x,
            weight: None,
            bias: None,
        },
        &LayerNormOutputs {
            y: &y,
            mean: None,
            rstd: None,
        },
    )
    .unwrap();
    c.queue().submit([enc.finish()]);
}

fn encode_ln(ln: &LayerNorm, x: &Tensor, w: Option<&Tensor>, y: &Tensor) -> wgnorm::Result<()> {
    let mut enc = ctx().device().create_command_encoder(&Default::default());
    ln.encode(
        &mut enc,
        &LayerNormInputs {
            x,
            weight: w,
            bias: None,
        },
        &LayerNormOutputs {
            y,
            mean: None,
            rstd: None,
        },
    )
}

#[test]
fn bad_input_gets_typed_errors_before_anything_is_recorded() {
    let c = ctx();
    let ln = LayerNorm::new(c, LayerNormConfig::default()).unwrap();
    let x = c.upload_f32(&noise(1, 32), &[4, 8]).unwrap();
    let y = c.empty(&[4, 8], DType::F32).unwrap();

    let bad_eps = [-1.0, f32::NAN, f32::INFINITY];
    for eps in bad_eps {
        let e = LayerNorm::new(
            c,
            LayerNormConfig {
                eps,
                ..Default::default()
            },
        )
        .err()
        .unwrap();
        assert!(
            matches!(e, Error::InvalidParameter { name: "eps", .. }),
            "{e}"
        );
    }
    let ln3 = LayerNorm::new(
        c,
        LayerNormConfig {
            axis: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        encode_ln(&ln3, &x, None, &y),
        Err(Error::AxisOutOfRange {
            axis: 2,
            rank: 2,
            ..
        })
    ));
    let ln_neg = LayerNorm::new(
        c,
        LayerNormConfig {
            axis: -3,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        encode_ln(&ln_neg, &x, None, &y),
        Err(Error::AxisOutOfRange { .. })
    ));

    let w_bad = c.upload_f32(&noise(2, 4), &[4]).unwrap();
    assert!(matches!(
        encode_ln(&ln, &x, Some(&w_bad), &y),
        Err(Error::ShapeMismatch { .. })
    ));
    let w_f16 = c.upload(&noise(2, 8), &[8], DType::F16).unwrap();
    assert!(matches!(
        encode_ln(&ln, &x, Some(&w_f16), &y),
        Err(Error::DTypeMismatch { .. })
    ));
    let y_small = c.empty(&[4, 7], DType::F32).unwrap();
    assert!(matches!(
        encode_ln(&ln, &x, None, &y_small),
        Err(Error::ShapeMismatch { .. })
    ));

    // An output buffer without STORAGE usage.
    let plain = c.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 128,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let y_plain = Tensor::from_buffer(plain, 0, &[4, 8], DType::F32).unwrap();
    assert!(matches!(
        encode_ln(&ln, &x, None, &y_plain),
        Err(Error::MissingUsage { .. })
    ));

    // A view past the end of its buffer, and an offset the device cannot bind.
    let buf = c.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 1024,
        usage: wgnorm::Context::TENSOR_USAGE,
        mapped_at_creation: false,
    });
    assert!(matches!(
        Tensor::from_buffer(buf.clone(), 1000, &[4, 8], DType::F32),
        Err(Error::BufferTooSmall { .. })
    ));
    let y_mis = Tensor::from_buffer(buf.clone(), 4, &[4, 8], DType::F32).unwrap();
    assert!(matches!(
        encode_ln(&ln, &x, None, &y_mis),
        Err(Error::MisalignedOffset { .. })
    ));

    // In place: the same buffer read and written.
    assert!(matches!(
        encode_ln(&ln, &x, None, &x),
        Err(Error::AliasedBuffers { .. })
    ));

    // Statistics outputs of the wrong size or dtype.
    let mean_bad = c.empty(&[3], DType::F32).unwrap();
    let mut enc = c.device().create_command_encoder(&Default::default());
    let r = ln.encode(
        &mut enc,
        &LayerNormInputs {
            x: &x,
            weight: None,
            bias: None,
        },
        &LayerNormOutputs {
            y: &y,
            mean: Some(&mean_bad),
            rstd: None,
        },
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })));

    // Forcing a kernel that cannot serve the call is an error, not a wrong result.
    if c.has_subgroups() {
        let big = c.empty(&[1, 1 << 20], DType::F32).unwrap();
        let big_y = c.empty(&[1, 1 << 20], DType::F32).unwrap();
        let forced = LayerNorm::new(c, LayerNormConfig::default())
            .unwrap()
            .with_kernel(RowKernel::Team {
                team: c.adapter_info().subgroup_min_size,
                rows_per_group: 1,
                cached: true,
            });
        assert!(matches!(
            encode_ln(&forced, &big, None, &big_y),
            Err(Error::InvalidParameter { name: "kernel", .. })
        ));
    }
}

#[test]
fn tensors_beyond_the_binding_limit_are_rejected() {
    let c = ctx();
    let limit = c.limits().max_storage_buffer_binding_size;
    let max_buffer = c.limits().max_buffer_size;
    if limit + 64 > max_buffer {
        // The device can bind any buffer it can allocate: nothing to reject.
        return;
    }
    let n = (limit / 4 + 16) as usize;
    let x = c.empty(&[1, n], DType::F32).unwrap();
    let y = c.empty(&[1, n], DType::F32).unwrap();
    let ln = LayerNorm::new(c, LayerNormConfig::default()).unwrap();
    assert!(matches!(
        encode_ln(&ln, &x, None, &y),
        Err(Error::TooLargeForBinding { .. })
    ));
}

#[test]
fn warm_calls_create_no_gpu_objects() {
    let c = ctx();
    let ln = LayerNorm::new(c, LayerNormConfig::default()).unwrap();
    let x = c.upload_f32(&noise(4, 64 * 32), &[64, 32]).unwrap();
    let y = c.empty(&[64, 32], DType::F32).unwrap();
    encode_ln(&ln, &x, None, &y).unwrap();
    let (pipelines, binds) = (c.pipeline_count(), ln.engine().cached_bind_groups());
    for _ in 0..5 {
        encode_ln(&ln, &x, None, &y).unwrap();
    }
    assert_eq!(c.pipeline_count(), pipelines);
    assert_eq!(ln.engine().cached_bind_groups(), binds);
    // A second op of the same kind shares the compiled pipeline.
    let ln2 = LayerNorm::new(c, LayerNormConfig::default()).unwrap();
    encode_ln(&ln2, &x, None, &y).unwrap();
    assert_eq!(c.pipeline_count(), pipelines);
}

#[test]
fn two_calls_recorded_in_one_encoder_keep_their_own_parameters() {
    // Parameters live in per-shape uniform buffers that are never rewritten, so recording two
    // shapes before one submit cannot make the first dispatch see the second's parameters.
    let c = ctx();
    let ln = LayerNorm::new(c, LayerNormConfig::default()).unwrap();
    let xa = noise(21, 6 * 10);
    let xb = noise(22, 5 * 12);
    let (ta, tb) = (
        c.upload_f32(&xa, &[6, 10]).unwrap(),
        c.upload_f32(&xb, &[5, 12]).unwrap(),
    );
    let (ya, yb) = (
        c.empty(&[6, 10], DType::F32).unwrap(),
        c.empty(&[5, 12], DType::F32).unwrap(),
    );
    let mut enc = c.device().create_command_encoder(&Default::default());
    let none = LayerNormInputs {
        x: &ta,
        weight: None,
        bias: None,
    };
    ln.encode(
        &mut enc,
        &none,
        &LayerNormOutputs {
            y: &ya,
            mean: None,
            rstd: None,
        },
    )
    .unwrap();
    ln.encode(
        &mut enc,
        &LayerNormInputs { x: &tb, ..none },
        &LayerNormOutputs {
            y: &yb,
            mean: None,
            rstd: None,
        },
    )
    .unwrap();
    c.queue().submit([enc.finish()]);
    let wa = reference::layer_norm(&round_to(DType::F32, &xa), 10, None, None, 1e-5);
    let wb = reference::layer_norm(&round_to(DType::F32, &xb), 12, None, None, 1e-5);
    assert_close("first", &c.download(&ya).unwrap(), &wa.y, 1e-5, 1e-4);
    assert_close("second", &c.download(&yb).unwrap(), &wb.y, 1e-5, 1e-4);
}

#[test]
fn fused_residual_add_on_every_kernel_path() {
    // y = norm(x + residual) and sum = x + residual, one kernel; row counts that leave partial
    // teams check that rows past the end never write the sum.
    let c = ctx();
    let mut kernels = vec![None, Some(RowKernel::Workgroup { wg: 32 })];
    kernels.extend(forced_kernels().into_iter().map(Some));
    for dtype in [DType::F32, DType::F16] {
        for &(rows, n) in &[(5usize, 64usize), (7, 12), (3, 1000), (2, 4097)] {
            for &kernel in &kernels {
                if kernel.is_some_and(|k| !serves(k, n)) {
                    continue;
                }
                for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
                    let mut op = RowNorm::new(c, cfg(mode, dtype)).unwrap();
                    if let Some(k) = kernel {
                        op = op.with_kernel(k);
                    }
                    let x = noise(rows as u64 + 900, rows * n);
                    let r = noise(n as u64 + 901, rows * n);
                    let w: Vec<f32> = noise(902, n).iter().map(|v| v + 1.0).collect();
                    let (xt, rt, wt) = (
                        c.upload(&x, &[rows, n], dtype).unwrap(),
                        c.upload(&r, &[rows, n], dtype).unwrap(),
                        c.upload(&w, &[n], dtype).unwrap(),
                    );
                    // One extra row of sentinel after y and sum: nothing may write there.
                    let y_buf = c
                        .upload(&vec![7.0; (rows + 1) * n], &[rows + 1, n], dtype)
                        .unwrap();
                    let s_buf = c
                        .upload(&vec![7.0; (rows + 1) * n], &[rows + 1, n], dtype)
                        .unwrap();
                    let y =
                        Tensor::from_buffer(y_buf.buffer().clone(), 0, &[rows, n], dtype).unwrap();
                    let s =
                        Tensor::from_buffer(s_buf.buffer().clone(), 0, &[rows, n], dtype).unwrap();
                    let mut enc = c.device().create_command_encoder(&Default::default());
                    op.encode(
                        &mut enc,
                        &RowNormArgs {
                            x: &xt,
                            weight: Some(&wt),
                            bias: None,
                            y: &y,
                            mean: None,
                            rstd: None,
                            residual: Some(&rt),
                            sum: Some(&s),
                        },
                    )
                    .unwrap();
                    c.queue().submit([enc.finish()]);
                    let sum_exact: Vec<f64> = round_to(dtype, &x)
                        .iter()
                        .zip(round_to(dtype, &r))
                        .map(|(a, b)| a + b)
                        .collect();
                    let wd = round_to(dtype, &w);
                    let want = match mode {
                        RowMode::LayerNorm => {
                            reference::layer_norm(&sum_exact, n, Some(&wd), None, 1e-5)
                        }
                        RowMode::RmsNorm => {
                            reference::rms_norm(&sum_exact, n, Some(&wd), 0.0, 1e-5)
                        }
                    };
                    let what = format!("add {mode:?} {dtype} {rows}x{n} {kernel:?}");
                    let (atol, rtol) = tol(dtype);
                    let yv = c.download(&y_buf).unwrap();
                    let sv = c.download(&s_buf).unwrap();
                    assert_close(&format!("{what} y"), &yv[..rows * n], &want.y, atol, rtol);
                    assert_close(
                        &format!("{what} sum"),
                        &sv[..rows * n],
                        &sum_exact,
                        atol,
                        rtol,
                    );
                    assert!(
                        yv[rows * n..]
                            .iter()
                            .chain(&sv[rows * n..])
                            .all(|&v| v == 7.0),
                        "{what}: wrote past the end"
                    );
                }
            }
        }
    }
    // A sum without a residual is a typed error.
    let op = RowNorm::new(c, cfg(RowMode::LayerNorm, DType::F32)).unwrap();
    let x = c.upload_f32(&noise(1, 8), &[2, 4]).unwrap();
    let (y, s) = (
        c.empty(&[2, 4], DType::F32).unwrap(),
        c.empty(&[2, 4], DType::F32).unwrap(),
    );
    let mut enc = c.device().create_command_encoder(&Default::default());
    let r = op.encode(
        &mut enc,
        &RowNormArgs {
            x: &x,
            weight: None,
            bias: None,
            y: &y,
            mean: None,
            rstd: None,
            residual: None,
            sum: Some(&s),
        },
    );
    assert!(
        matches!(r, Err(Error::InvalidParameter { name: "sum", .. })),
        "{r:?}"
    );
}

#[test]
fn layer_norm_scaling_folds_into_the_gain() {
    use wgnorm::layernorm::placement::{fold_output_scale, layer_norm_scaling};
    let c_ = ctx();
    let (rows, n) = (7, 96);
    let x = noise(90, rows * n);
    let (w, b) = (noise(91, n), noise(92, n));
    let s = layer_norm_scaling(5);
    let (ws, bs) = fold_output_scale(&w, Some(&b), s);
    let op = LayerNorm::new(c_, LayerNormConfig::default()).unwrap();
    let (xt, wt, bt) = (
        c_.upload_f32(&x, &[rows, n]).unwrap(),
        c_.upload_f32(&ws, &[n]).unwrap(),
        c_.upload_f32(&bs.unwrap(), &[n]).unwrap(),
    );
    let out = op
        .forward(&LayerNormInputs {
            x: &xt,
            weight: Some(&wt),
            bias: Some(&bt),
        })
        .unwrap();
    let r = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<_>>();
    let want: Vec<f64> =
        wgnorm_reference::rownorm::layer_norm(&r(&x), n, Some(&r(&w)), Some(&r(&b)), 1e-5)
            .y
            .iter()
            .map(|v| v * s as f64)
            .collect();
    assert_close(
        "layer norm scaling",
        &c_.download(&out.y).unwrap(),
        &want,
        1e-5,
        1e-5,
    );
}

/// Runs `x` `[4, n]` through one kernel path with eps `eps`, returning y, mean and rstd.
fn run_rows(
    mode: RowMode,
    kernel: Option<RowKernel>,
    x: &[f32],
    n: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = ctx();
    let mut op = RowNorm::new(
        c,
        RowNormConfig {
            eps,
            ..cfg(mode, DType::F32)
        },
    )
    .unwrap();
    if let Some(k) = kernel {
        op = op.with_kernel(k);
    }
    let rows = x.len() / n;
    let xt = c.upload_f32(x, &[rows, n]).unwrap();
    let (y, mean, rstd) = op.forward(&xt, None, None, true).unwrap();
    let d = |t: &Tensor| c.download(t).unwrap();
    (d(&y), d(&mean.unwrap()), d(&rstd.unwrap()))
}

/// NaN and Inf stay in their row and make it NaN (y and the saved statistics) on every kernel
/// path; eps = 0 on a constant row gives rstd = inf and y = NaN on every path (PyTorch's
/// 0 * inf), never whatever inverseSqrt(0) happens to be. The other rows match the reference.
#[test]
fn nan_inf_and_eps_zero_on_every_kernel_path() {
    for n in [16usize, 96, 1000] {
        for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
            let mut kernels = vec![None, Some(RowKernel::Workgroup { wg: 32 })];
            kernels.extend(
                forced_kernels()
                    .into_iter()
                    .filter(|&k| serves(k, n))
                    .map(Some),
            );
            for kernel in kernels {
                let what = format!("{mode:?} n={n} {kernel:?}");
                // Rows: ordinary, a NaN, an Inf, ordinary.
                let mut x = noise(n as u64, 4 * n);
                x[n + n / 2] = f32::NAN;
                x[2 * n + 1] = f32::INFINITY;
                let (y, mean, rstd) = run_rows(mode, kernel, &x, n, 1e-5);
                for r in [0, 3] {
                    let xr = round_to(DType::F32, &x[r * n..(r + 1) * n]);
                    let want = match mode {
                        RowMode::LayerNorm => reference::layer_norm(&xr, n, None, None, 1e-5),
                        RowMode::RmsNorm => reference::rms_norm(&xr, n, None, 0.0, 1e-5),
                    };
                    assert_close(
                        &format!("{what} row {r}"),
                        &y[r * n..(r + 1) * n],
                        &want.y,
                        1e-5,
                        1e-4,
                    );
                }
                let nan_row = &y[n..2 * n];
                assert!(
                    nan_row.iter().all(|v| v.is_nan()),
                    "{what}: NaN row y {nan_row:?}"
                );
                assert!(rstd[1].is_nan(), "{what}: NaN row rstd {}", rstd[1]);
                if mode == RowMode::LayerNorm {
                    assert!(mean[1].is_nan(), "{what}: NaN row mean {}", mean[1]);
                    let inf_row = &y[2 * n..3 * n];
                    assert!(
                        inf_row.iter().all(|v| v.is_nan()),
                        "{what}: Inf row y {inf_row:?}"
                    );
                    assert!(rstd[2].is_nan(), "{what}: Inf row rstd {}", rstd[2]);
                } else {
                    // mean(x^2) = inf: rstd = 0, so y = 0 where x is finite and NaN at the inf.
                    assert_eq!(rstd[2], 0.0, "{what}: Inf row rstd");
                    assert!(y[2 * n + 1].is_nan(), "{what}: Inf element");
                    assert!(y[2 * n..3 * n]
                        .iter()
                        .enumerate()
                        .all(|(i, v)| i == 1 || *v == 0.0));
                }

                // eps = 0: a constant row (zero variance; zero mean square for RMSNorm).
                let mut z = noise(n as u64 + 1, 4 * n);
                let constant = if mode == RowMode::LayerNorm { 3.5 } else { 0.0 };
                z[n..2 * n].fill(constant);
                let (y, _, rstd) = run_rows(mode, kernel, &z, n, 0.0);
                assert_eq!(rstd[1], f32::INFINITY, "{what}: eps 0 constant row rstd");
                assert!(
                    y[n..2 * n].iter().all(|v| v.is_nan()),
                    "{what}: eps 0 constant row y {:?}",
                    &y[n..2 * n]
                );
                assert!(
                    y[..n].iter().all(|v| v.is_finite()),
                    "{what}: eps 0 ordinary row"
                );
            }
        }
    }
}

/// eps that matters: the variance (or mean square) at or below eps, eps from 1e-5 to 1e-2, on
/// every kernel path. Dropping eps, or adding it outside the square root, changes y by a factor
/// of ~2 here: no kernel that mishandles it passes.
#[test]
fn eps_at_and_above_the_variance_on_every_kernel_path() {
    for eps in [1e-5f32, 1e-3, 1e-2] {
        let scale = eps.sqrt();
        for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
            for n in [64usize, 768, 4097] {
                let wg = if mode == RowMode::LayerNorm { 32 } else { 64 };
                let mut kernels = vec![None, Some(RowKernel::Workgroup { wg })];
                kernels.extend(
                    forced_kernels()
                        .into_iter()
                        .filter(|&k| serves(k, n))
                        .map(Some),
                );
                for kernel in kernels {
                    check_with(mode, DType::F32, 3, n, kernel, 0.0, scale, eps);
                }
            }
        }
    }
}

/// The split rule on the typical adapter classes, worked by hand from its targets (GPUs: ~256
/// workgroups of 64 lanes, at least 2 accesses per lane; CPU adapters: 8 workgroups, at least
/// 256 accesses per lane; never with 64 rows or more).
#[test]
fn split_rule_on_typical_adapters() {
    use wgnorm::engine::rownorm::{split_for, AdapterClass};
    let [cpu, nvidia, ..] = AdapterClass::TYPICAL;
    let wg256 = RowKernel::Workgroup { wg: 256 };
    let split = |chunks| Some(RowKernel::Split { wg: 64, chunks });
    // GPU, one row of 4096 f32 (1024 vec4 accesses): 1024 / (64 * 2) = 8 chunks.
    assert_eq!(split_for(&nvidia, 1, 1024, wg256), split(8));
    // GPU, 4 rows of 16384 f32: 4096 / 128 = 32 chunks per row (256 / 4 = 64 would be allowed).
    assert_eq!(split_for(&nvidia, 4, 4096, wg256), split(32));
    // GPU, 8 rows of 16384 f16 as scalars: 256 / 8 = 32 chunks, the length allows 128.
    assert_eq!(split_for(&nvidia, 8, 16384, wg256), split(32));
    // Rows too short to give each of 64 lanes 2 accesses in two chunks.
    assert_eq!(split_for(&nvidia, 1, 255, wg256), None);
    // Enough rows to occupy the device, or past the row limit.
    assert_eq!(split_for(&nvidia, 200, 4096, wg256), None);
    assert_eq!(split_for(&nvidia, 64, 1 << 20, wg256), None);
    // A team kernel of 8 rows per workgroup: 40 rows are 5 workgroups, still few.
    let team = RowKernel::Team {
        team: 32,
        rows_per_group: 8,
        cached: false,
    };
    assert_eq!(split_for(&nvidia, 40, 4096, team), split(7));
    // CPU: chunks of at least 64 * 256 accesses; one row of 2^16 accesses makes 4, one of 2^18
    // is capped at 8 workgroups; one of 16384 f32 (4096 accesses) stays whole, as do 8 rows.
    let cpu_team = RowKernel::Team {
        team: 8,
        rows_per_group: 8,
        cached: false,
    };
    assert_eq!(split_for(&cpu, 1, 1 << 16, cpu_team), split(4));
    assert_eq!(split_for(&cpu, 1, 1 << 18, cpu_team), split(8));
    assert_eq!(split_for(&cpu, 1, 4096, cpu_team), None);
    assert_eq!(
        split_for(&cpu, 8, 1 << 18, RowKernel::Workgroup { wg: 128 }),
        None
    );
    // The chunk count is capped where the output pass's merge of the chunks would dominate.
    assert_eq!(split_for(&nvidia, 1, 1 << 24, wg256), split(256));
}

/// With few-row kernels on, one long row takes the split kernel on any adapter (a GPU splits
/// decode steps of 4096 already; a CPU adapter rows of 2^16 accesses), a prefill's 64 rows do
/// not; by default (batch-invariant) neither does.
#[test]
fn few_long_rows_take_the_split_kernel_only_when_allowed() {
    let c = ctx();
    let op = RowNorm::new(c, cfg(RowMode::RmsNorm, DType::F32)).unwrap();
    let few = RowNorm::new(c, cfg(RowMode::RmsNorm, DType::F32))
        .unwrap()
        .with_few_row_kernels(true);
    let one = c.empty(&[1, 1 << 20], DType::F32).unwrap();
    let many = c.empty(&[64, 4096], DType::F32).unwrap();
    let (k, _) = few.kernel_for(&one).unwrap();
    assert!(matches!(k, RowKernel::Split { .. }), "1 x 2^20: {k}");
    let (k, _) = few.kernel_for(&many).unwrap();
    assert!(!matches!(k, RowKernel::Split { .. }), "64 x 4096: {k}");
    let (k, _) = op.kernel_for(&one).unwrap();
    assert!(
        !matches!(k, RowKernel::Split { .. }),
        "default, 1 x 2^20: {k}"
    );
}

/// Calls of few rows with few-row kernels on (the split kernel where the rule takes it: decode
/// steps on a GPU, the longest rows here too): vector and scalar rows, every dtype, with eps at
/// the variance so a wrong merge of the chunks' moments shows.
#[test]
fn few_row_calls_match_the_reference() {
    for (mode, dtype, rows, n) in [
        (RowMode::LayerNorm, DType::F32, 1, 1 << 18),
        (RowMode::RmsNorm, DType::F32, 2, 1 << 18),
        (RowMode::LayerNorm, DType::F16, 3, 3 * 65536 + 1),
        (RowMode::LayerNorm, DType::F32, 1, 16384),
        (RowMode::RmsNorm, DType::F32, 1, 16384),
        (RowMode::LayerNorm, DType::F32, 3, 12289),
        (RowMode::RmsNorm, DType::F16, 2, 8192),
        (RowMode::LayerNorm, DType::F16, 5, 4100),
        (RowMode::LayerNorm, DType::BF16, 2, 8192),
        (RowMode::RmsNorm, DType::BF16, 1, 4096),
    ] {
        let (scale, eps) = if dtype == DType::F32 {
            (1e-2, 1e-4)
        } else {
            (1.0, 1e-5)
        };
        let few = |op: RowNorm| op.with_few_row_kernels(true);
        check_op(mode, dtype, rows, n, few, (0.5, scale, eps));
    }
}
