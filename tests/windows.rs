//! Tensors larger than one storage binding: the row norms bind them in windows of rows, the
//! elementwise ops in windows of elements. A device created with a 1 MiB binding limit runs
//! multi-MiB tensors against the f64 reference; a single row past the limit is still refused,
//! typed.

use wgnorm::engine::rownorm::{RowKernel, RowMode, RowNorm, RowNormConfig};
use wgnorm::prelude::*;
use wgnorm::Mode;
use wgnorm_reference::rownorm as reference;
use wgnorm_tests::{assert_close, noise, round_to};

/// A context on a device whose storage bindings are limited to `limit` bytes.
fn limited_context(limit: u32) -> Context {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .unwrap_or_else(|e| {
                panic!("GPU tests need an adapter ({e}); apt-get install -y mesa-vulkan-drivers")
            });
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: limit as u64,
        ..adapter.limits()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: adapter.features() & wgnorm::OPTIONAL_FEATURES,
        required_limits: limits,
        ..Default::default()
    }))
    .unwrap();
    Context::from_device(device, queue)
}

/// One row norm at 1 MiB bindings against the reference (`kernel`: forced, or the default).
fn check_windowed(
    c: &Context,
    mode: RowMode,
    dtype: DType,
    rows: usize,
    n: usize,
    kernel: Option<RowKernel>,
) {
    let x = noise(n as u64 + rows as u64, rows * n);
    let w: Vec<f32> = noise(3, n).iter().map(|v| v + 1.0).collect();
    let mut op = RowNorm::new(c, RowNormConfig::last_axis(mode, dtype)).unwrap();
    if let Some(k) = kernel {
        op = op.with_kernel(k);
    }
    let xt = c.upload(&x, &[rows, n], dtype).unwrap();
    let wt = c.upload(&w, &[n], dtype).unwrap();
    let (y, mean, rstd) = op.forward(&xt, Some(&wt), None, true).unwrap();
    let (xd, wd) = (round_to(dtype, &x), round_to(dtype, &w));
    let want = match mode {
        RowMode::LayerNorm => reference::layer_norm(&xd, n, Some(&wd), None, 1e-5),
        RowMode::RmsNorm => reference::rms_norm(&xd, n, Some(&wd), 0.0, 1e-5),
    };
    let what = format!("{mode:?} {dtype} {rows}x{n} {kernel:?} (1 MiB bindings)");
    let (at, rt) = if dtype == DType::F16 {
        (2e-3, 2e-3)
    } else {
        (2e-5, 1e-4)
    };
    assert_close(
        &format!("{what} y"),
        &c.download(&y).unwrap(),
        &want.y,
        at,
        rt,
    );
    assert_close(
        &format!("{what} rstd"),
        &c.download(&rstd.unwrap()).unwrap(),
        &want.rstd,
        1e-6,
        1e-4,
    );
    if mode == RowMode::LayerNorm {
        assert_close(
            &format!("{what} mean"),
            &c.download(&mean.unwrap()).unwrap(),
            &want.mean,
            1e-5,
            1e-5,
        );
    }
}

/// The split kernel's two passes in every window, its chunk moments reused by each.
#[test]
fn split_row_norms_bind_large_tensors_in_windows() {
    let c = limited_context(1 << 20);
    let split = RowKernel::Split { wg: 64, chunks: 5 };
    check_windowed(&c, RowMode::LayerNorm, DType::F32, 10, 65536, Some(split));
    check_windowed(&c, RowMode::RmsNorm, DType::F16, 1200, 777, Some(split));
}

#[test]
fn row_norms_bind_large_tensors_in_windows() {
    let c = limited_context(1 << 20);
    assert_eq!(c.limits().max_storage_buffer_binding_size, 1 << 20);
    for (mode, dtype, rows, n) in [
        (RowMode::LayerNorm, DType::F32, 700, 1000), // 2.8 MB: 3 windows
        (RowMode::RmsNorm, DType::F32, 3000, 256),   // windows of 1024 rows
        (RowMode::LayerNorm, DType::F16, 1200, 777), // odd rows, f16, element-wise
        (RowMode::RmsNorm, DType::F16, 64, 16384),   // 32 KiB rows
        // 256 KiB rows: windows of 4 rows, so the saved statistics start at rows 4 and 8,
        // which no window of a 4-byte-per-row tensor aligned to 32..256 bytes could bind.
        (RowMode::LayerNorm, DType::F32, 10, 65536),
    ] {
        check_windowed(&c, mode, dtype, rows, n, None);
    }
    // One row past the limit cannot be windowed.
    let n = (1 << 20) / 4 + 64;
    let x = c.empty(&[2, n], DType::F32).unwrap();
    let ln = LayerNorm::new(&c, LayerNormConfig::default()).unwrap();
    let r = ln.forward(&LayerNormInputs {
        x: &x,
        weight: None,
        bias: None,
    });
    assert!(
        matches!(r, Err(wgnorm::Error::TooLargeForBinding { .. })),
        "{:?}",
        r.err()
    );
}

/// A real tensor larger than the default binding limit (128 MiB on software Vulkan and in
/// WebGPU): an 8k-token prefill's worth of rows.
#[test]
fn a_tensor_past_the_default_binding_limit() {
    let c = wgnorm_tests::ctx();
    let limit = c.limits().max_storage_buffer_binding_size;
    let n = 4096usize;
    let rows = (limit as usize / (n * 4)) + 9; // just past one binding
    eprintln!(
        "binding limit {limit} bytes: {rows} rows of {n} f32 ({} bytes)",
        rows * n * 4
    );
    if (rows * n * 4) as u64 > c.limits().max_buffer_size {
        panic!(
            "the device cannot allocate a tensor past its binding limit: {:?}",
            c.limits()
        );
    }
    let x: Vec<f32> = (0..rows * n)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let xt = c.upload_f32(&x, &[rows, n]).unwrap();
    let rms = RmsNorm::new(c, RmsNormConfig::default()).unwrap();
    let out = rms
        .forward(&RmsNormInputs {
            x: &xt,
            weight: None,
        })
        .unwrap();
    let y = c.download(&out.y).unwrap();
    // Spot-check rows on both sides of the first window boundary and the last row.
    for r in [0, rows / 2, rows - 10, rows - 9, rows - 1] {
        let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
        let want = reference::rms_norm(&row, n, None, 0.0, 1e-5).y;
        assert_close(
            &format!("row {r} of {rows}"),
            &y[r * n..(r + 1) * n],
            &want,
            2e-5,
            1e-4,
        );
    }
}

/// Elementwise ops bind windows of elements: every element of a 2.5 MiB tensor (f32 and f16,
/// vec4 and scalar access) matches the f64 activation / blend.
#[test]
fn elementwise_ops_bind_large_tensors_in_windows() {
    use wgnorm::engine::elementwise::Blend;
    use wgnorm::{Elementwise, ElementwiseConfig};
    use wgnorm_reference::activation as act;
    let c = limited_context(1 << 20);
    for (dtype, n) in [
        (DType::F32, 655_360),   // vec4: 3 windows
        (DType::F32, 655_363),   // scalar: odd length
        (DType::F16, 1_310_721), // f16 scalar: odd length, windows of 2-byte accesses
    ] {
        let x = noise(n as u64, n);
        let b = noise(n as u64 + 1, n);
        let xt = c.upload(&x, &[n], dtype).unwrap();
        let bt = c.upload(&b, &[n], dtype).unwrap();
        let (xd, bd) = (round_to(dtype, &x), round_to(dtype, &b));
        let (at, rt) = if dtype == DType::F16 {
            (2e-3, 2e-3)
        } else {
            (1e-6, 1e-5)
        };
        let silu = Elementwise::new(
            &c,
            ElementwiseConfig {
                activation: Activation::Silu,
                dtype,
            },
        )
        .unwrap();
        let y = c.download(&silu.forward(&xt).unwrap()).unwrap();
        let want: Vec<f64> = xd.iter().map(|&v| act::silu(v)).collect();
        assert_close(
            &format!("silu {dtype} n={n} (1 MiB bindings)"),
            &y,
            &want,
            at,
            rt,
        );

        let blend = Blend::new(&c, dtype).unwrap();
        let yt = c.empty(&[n], dtype).unwrap();
        c.record_and_submit(|enc| blend.encode(enc, &xt, &bt, 0.25, &yt))
            .unwrap();
        let y = c.download(&yt).unwrap();
        let want: Vec<f64> = (0..n).map(|i| 0.25 * xd[i] + 0.75 * bd[i]).collect();
        assert_close(
            &format!("blend {dtype} n={n} (1 MiB bindings)"),
            &y,
            &want,
            at,
            rt,
        );
    }
}

/// GroupNorm and InstanceNorm (one sample's statistics each) bind windows of samples: a
/// 20-sample batch of 128 KiB samples on 1 MiB bindings runs in windows of 8, 8 and 4 samples,
/// both layouts and dtypes, against the f64 reference.
#[test]
fn group_and_instance_norm_bind_large_tensors_in_windows_of_samples() {
    use wgnorm_reference::chnorm as cref;
    let c = limited_context(1 << 20);
    let (n, ch, hw, g) = (20usize, 32usize, 1024usize, 8usize);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for dtype in [DType::F32, DType::F16] {
            let x: Vec<f32> = noise(hw as u64, n * ch * hw)
                .iter()
                .map(|v| v * 2.0 + 3.0)
                .collect();
            let (w, b) = (noise(11, ch), noise(12, ch));
            let xd = round_to(dtype, &x);
            let in_layout = |v: &[f64]| match layout {
                Layout::Nchw => v.to_vec(),
                Layout::Nhwc => cref::to_nhwc(v, n, ch, hw),
            };
            let shape = match layout {
                Layout::Nchw => [n, ch, 32, 32],
                Layout::Nhwc => [n, 32, 32, ch],
            };
            let xl: Vec<f32> = in_layout(&xd).iter().map(|&v| v as f32).collect();
            let xt = c.upload(&xl, &shape, dtype).unwrap();
            let (wt, bt) = (
                c.upload_f32(&w, &[ch]).unwrap(),
                c.upload_f32(&b, &[ch]).unwrap(),
            );
            let inputs = NormInputs {
                x: &xt,
                weight: Some(&wt),
                bias: Some(&bt),
            };
            let (wd, bd) = (round_to(DType::F32, &w), round_to(DType::F32, &b));
            let (at, rt) = if dtype == DType::F16 {
                (2e-3, 2e-3)
            } else {
                (2e-5, 1e-4)
            };
            let what = format!("{layout:?} {dtype} {n}x{ch}x32x32 (1 MiB bindings)");
            let gn_cfg = GroupNormConfig {
                layout,
                dtype,
                ..GroupNormConfig::new(g)
            };
            let gn = GroupNorm::new(&c, gn_cfg).unwrap();
            let want = cref::group_norm(&xd, n, ch, hw, g, Some(&wd), Some(&bd), 1e-5, false);
            let y = c.download(&gn.forward(&inputs).unwrap()).unwrap();
            assert_close(&format!("gn {what}"), &y, &in_layout(&want), at, rt);
            let in_cfg = InstanceNormConfig {
                layout,
                dtype,
                ..Default::default()
            };
            let inorm = InstanceNorm::new(&c, in_cfg).unwrap();
            let want = cref::instance_norm(&xd, n, ch, hw, Some(&wd), Some(&bd), 1e-5);
            let y = c.download(&inorm.forward(&inputs).unwrap()).unwrap();
            assert_close(&format!("in {what}"), &y, &in_layout(&want), at, rt);
        }
    }
}

/// BatchNorm (statistics across the batch) binds windows of q (samples for NCHW, tokens for
/// NHWC): each window reduces its share of every channel's tiles and one finalize merges them. A 2.5 MiB
/// batch on 1 MiB bindings with a common offset of 1e3 (every window must centre on the first
/// window's shift), training (running statistics, saved statistics) and inference, both
/// layouts and dtypes, against the f64 reference.
#[test]
fn batch_norm_binds_large_tensors_in_windows_of_the_batch() {
    use wgnorm_reference::chnorm as cref;
    let c = limited_context(1 << 20);
    let (n, ch, hw) = (5usize, 32usize, 4096usize);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for dtype in [DType::F32, DType::F16] {
            let offset = if dtype == DType::F16 { 1e2 } else { 1e3 };
            let x: Vec<f32> = noise(7, n * ch * hw)
                .iter()
                .enumerate()
                .map(|(i, v)| v * (1.0 + ((i / hw) % ch) as f32 * 0.1) + offset)
                .collect();
            let (w, b) = (noise(11, ch), noise(12, ch));
            let rm0: Vec<f32> = noise(13, ch).iter().map(|v| v + offset).collect();
            let rv0: Vec<f32> = noise(14, ch).iter().map(|v| v.abs() + 0.5).collect();
            let xd = round_to(dtype, &x);
            let in_layout = |v: &[f64]| match layout {
                Layout::Nchw => v.to_vec(),
                Layout::Nhwc => cref::to_nhwc(v, n, ch, hw),
            };
            let shape = match layout {
                Layout::Nchw => [n, ch, 64, 64],
                Layout::Nhwc => [n, 64, 64, ch],
            };
            let xl: Vec<f32> = in_layout(&xd).iter().map(|&v| v as f32).collect();
            let xt = c.upload(&xl, &shape, dtype).unwrap();
            let up = |v: &[f32]| c.upload_f32(v, &[ch]).unwrap();
            let (wt, bt, rm, rv) = (up(&w), up(&b), up(&rm0), up(&rv0));
            let f64s = |v: &[f32]| round_to(DType::F32, v);
            let (at, rt) = if dtype == DType::F16 {
                (4e-3, 4e-3)
            } else {
                (2e-5, 1e-4)
            };
            let bn = BatchNorm::new(
                &c,
                BatchNormConfig {
                    layout,
                    dtype,
                    ..Default::default()
                },
            )
            .unwrap();
            for training in [true, false] {
                let want = cref::batch_norm(
                    &xd,
                    n,
                    ch,
                    hw,
                    Some(&f64s(&w)),
                    Some(&f64s(&b)),
                    &f64s(&c.download(&rm).unwrap()),
                    &f64s(&c.download(&rv).unwrap()),
                    training,
                    0.1,
                    true,
                    1e-5,
                );
                let y = c.empty(xt.shape(), dtype).unwrap();
                let saved = c.empty(&[ch, 2], DType::F32).unwrap();
                let mut enc = c.device().create_command_encoder(&Default::default());
                bn.encode(
                    &mut enc,
                    &BatchNormInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: Some(&bt),
                        running_mean: Some(&rm),
                        running_var: Some(&rv),
                    },
                    &BatchNormOutputs {
                        y: &y,
                        saved: Some(&saved),
                    },
                    Mode::training(training),
                )
                .unwrap();
                c.queue().submit([enc.finish()]);
                let what = format!("bn {layout:?} {dtype} {n}x{ch}x64x64 training={training}");
                let y = c.download(&y).unwrap();
                assert_close(&format!("{what} y"), &y, &in_layout(&want.y), at, rt);
                let rmv = c.download(&rm).unwrap();
                let rvv = c.download(&rv).unwrap();
                assert_close(
                    &format!("{what} running_mean"),
                    &rmv,
                    &want.running_mean,
                    1e-5,
                    1e-6,
                );
                assert_close(
                    &format!("{what} running_var"),
                    &rvv,
                    &want.running_var,
                    1e-5,
                    1e-5,
                );
                let saved = c.download(&saved).unwrap();
                let mean: Vec<f32> = saved.iter().step_by(2).copied().collect();
                assert_close(&format!("{what} saved mean"), &mean, &want.mean, 1e-5, 1e-6);
            }
        }
    }
}

/// InstanceNorm with `track_running_stats` binds windows of samples in training (the reduce
/// pass and the normalize pass each window x) and in inference; BatchNorm's synchronised reduce
/// binds windows of the batch axis.
/// 2.5 MiB on 1 MiB bindings, against the f64 reference.
#[test]
fn tracked_instance_norm_and_synced_batch_norm_bind_windows() {
    use wgnorm_reference::chnorm as cref;
    let c = limited_context(1 << 20);
    let (n, ch, hw) = (20usize, 32usize, 1024usize);
    let x: Vec<f32> = noise(21, n * ch * hw)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + (i / hw % ch) as f32 * 0.05) + 50.0)
        .collect();
    let xd = round_to(DType::F32, &x);
    let xt = c.upload_f32(&x, &[n, ch, 32, 32]).unwrap();
    let w = noise(22, ch);
    let wd = round_to(DType::F32, &w);
    let wt = c.upload_f32(&w, &[ch]).unwrap();
    let inorm = InstanceNorm::new(
        &c,
        InstanceNormConfig {
            momentum: 0.2,
            ..Default::default()
        },
    )
    .unwrap();
    let rm = c.upload_f32(&vec![0.0; ch], &[ch]).unwrap();
    let rv = c.upload_f32(&vec![1.0; ch], &[ch]).unwrap();
    let inputs = NormInputs {
        x: &xt,
        weight: Some(&wt),
        bias: None,
    };
    let run = |mode: Mode| {
        let y = c.empty(xt.shape(), DType::F32).unwrap();
        let mut enc = c.device().create_command_encoder(&Default::default());
        inorm
            .encode_tracked(
                &mut enc,
                &inputs,
                &rm,
                &rv,
                &NormOutputs { y: &y, saved: None },
                mode,
            )
            .unwrap();
        c.queue().submit([enc.finish()]);
        c.download(&y).unwrap()
    };
    let y = run(Mode::Train);
    let want = cref::instance_norm(&xd, n, ch, hw, Some(&wd), None, 1e-5);
    assert_close("tracked IN train y", &y, &want, 2e-5, 1e-4);
    let (mut want_rm, mut want_rv) = (vec![0.0f64; ch], vec![1.0f64; ch]);
    for k in 0..ch {
        let (mut m_sum, mut v_sum) = (0.0, 0.0);
        for i in 0..n {
            let vals = &xd[(i * ch + k) * hw..(i * ch + k + 1) * hw];
            let m = vals.iter().sum::<f64>() / hw as f64;
            m_sum += m;
            v_sum += vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (hw - 1) as f64;
        }
        want_rm[k] = 0.8 * want_rm[k] + 0.2 * m_sum / n as f64;
        want_rv[k] = 0.8 * want_rv[k] + 0.2 * v_sum / n as f64;
    }
    let (rmv, rvv) = (c.download(&rm).unwrap(), c.download(&rv).unwrap());
    assert_close("tracked IN running_mean", &rmv, &want_rm, 1e-5, 1e-5);
    assert_close("tracked IN running_var", &rvv, &want_rv, 1e-5, 1e-5);
    let y = run(Mode::Infer);
    let (rmd, rvd) = (round_to(DType::F32, &rmv), round_to(DType::F32, &rvv));
    let want = cref::batch_norm(
        &xd,
        n,
        ch,
        hw,
        Some(&wd),
        None,
        &rmd,
        &rvd,
        false,
        0.1,
        true,
        1e-5,
    );
    assert_close("tracked IN infer y", &y, &want.y, 2e-5, 1e-4);

    // Synchronised BatchNorm on one device: reduce (windows of the batch axis), then normalize
    // with the merged moments.
    let bn = BatchNorm::new(&c, BatchNormConfig::default()).unwrap();
    let moments = c.empty(&[ch, 3], DType::F32).unwrap();
    let y = c.empty(xt.shape(), DType::F32).unwrap();
    let mut enc = c.device().create_command_encoder(&Default::default());
    bn.encode_reduce(&mut enc, &xt, &moments).unwrap();
    let bn_inputs = BatchNormInputs {
        x: &xt,
        weight: Some(&wt),
        bias: None,
        running_mean: None,
        running_var: None,
    };
    let outputs = BatchNormOutputs { y: &y, saved: None };
    bn.encode_synced(&mut enc, &bn_inputs, &outputs, &moments)
        .unwrap();
    c.queue().submit([enc.finish()]);
    let zeros = vec![0.0; ch];
    let want = cref::batch_norm(
        &xd,
        n,
        ch,
        hw,
        Some(&wd),
        None,
        &zeros,
        &zeros,
        true,
        0.1,
        true,
        1e-5,
    );
    assert_close("synced BN y", &c.download(&y).unwrap(), &want.y, 2e-5, 1e-4);
    let m = c.download(&moments).unwrap();
    for k in 0..ch {
        assert_eq!(m[3 * k], (n * hw) as f32, "channel {k} count");
        let mean = m[3 * k + 1] as f64;
        assert!(
            (mean - want.mean[k]).abs() < 1e-5 * 50.0,
            "channel {k} mean {mean}"
        );
    }
}

/// One sample larger than a binding (the SDXL VAE decoder's shape, scaled to 1 MiB bindings):
/// GroupNorm(+SiLU) and InstanceNorm on N = 1 and N = 2 bind windows inside each sample: slot
/// runs for NCHW (Q = 1), steps of the spatial axis for NHWC. Each matches the f64 reference
/// and gives the same bits as the unwindowed call on a device with the default binding limit,
/// both layouts and dtypes, with a common offset (every window shares its slot's shift).
#[test]
fn group_and_instance_norm_bind_windows_inside_one_sample() {
    use wgnorm_reference::chnorm as cref;
    let c = limited_context(1 << 20);
    let whole = wgnorm_tests::ctx();
    let (ch, hw, g) = (32usize, 128 * 128usize, 8usize);
    for n in [1usize, 2] {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for dtype in [DType::F32, DType::F16] {
                let x: Vec<f32> = noise(31, n * ch * hw)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * (1.0 + (i / hw % ch) as f32 * 0.05) + 20.0)
                    .collect();
                let (w, b) = (noise(32, ch), noise(33, ch));
                let xd = round_to(dtype, &x);
                let in_layout = |v: &[f64]| match layout {
                    Layout::Nchw => v.to_vec(),
                    Layout::Nhwc => cref::to_nhwc(v, n, ch, hw),
                };
                let shape = match layout {
                    Layout::Nchw => [n, ch, 128, 128],
                    Layout::Nhwc => [n, 128, 128, ch],
                };
                let xl: Vec<f32> = in_layout(&xd).iter().map(|&v| v as f32).collect();
                let (wd, bd) = (round_to(DType::F32, &w), round_to(DType::F32, &b));
                let (at, rt) = if dtype == DType::F16 {
                    (4e-3, 4e-3)
                } else {
                    (2e-5, 1e-4)
                };
                let what = format!("{layout:?} {dtype} {n}x{ch}x128x128 (1 MiB bindings)");
                let run = |ctx: &Context, instance: bool| {
                    let xt = ctx.upload(&xl, &shape, dtype).unwrap();
                    let wt = ctx.upload_f32(&w, &[ch]).unwrap();
                    let bt = ctx.upload_f32(&b, &[ch]).unwrap();
                    let inputs = NormInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: Some(&bt),
                    };
                    let y = if instance {
                        let cfg = InstanceNormConfig {
                            layout,
                            dtype,
                            ..Default::default()
                        };
                        InstanceNorm::new(ctx, cfg).unwrap().forward(&inputs)
                    } else {
                        let cfg = GroupNormConfig {
                            layout,
                            dtype,
                            activation: Activation::Silu,
                            ..GroupNormConfig::new(g)
                        };
                        GroupNorm::new(ctx, cfg).unwrap().forward(&inputs)
                    };
                    ctx.download(&y.unwrap()).unwrap()
                };
                for instance in [false, true] {
                    let name = if instance { "in" } else { "gn+silu" };
                    let y = run(&c, instance);
                    let want = if instance {
                        cref::instance_norm(&xd, n, ch, hw, Some(&wd), Some(&bd), 1e-5)
                    } else {
                        cref::group_norm(&xd, n, ch, hw, g, Some(&wd), Some(&bd), 1e-5, true)
                    };
                    assert_close(&format!("{name} {what}"), &y, &in_layout(&want), at, rt);
                    let y_whole = run(whole, instance);
                    let same = y
                        .iter()
                        .zip(&y_whole)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{name} {what}: windows changed bits");
                }
            }
        }
    }
}

/// The batch-statistics backward binds x, dy and dx in windows like the forward: GroupNorm+SiLU
/// on one 2 MiB sample (NCHW: windows inside a channel's run; NHWC: steps of the spatial axis)
/// and BatchNorm training across a 2 MiB batch, on 1 MiB bindings, both layouts, against the
/// f64 reference gradients and bit for bit the same as on the default binding limit.
#[test]
fn channel_backward_binds_large_tensors_in_windows() {
    use wgnorm::{BatchNormGradInputs, NormGradInputs};
    use wgnorm_reference::{chnorm as cref, grad};
    let c = limited_context(1 << 20);
    let whole = wgnorm_tests::ctx();
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for (n, ch, side, batch) in [(1usize, 8usize, 256usize, false), (16, 8, 64, true)] {
            let hw = side * side;
            let x: Vec<f32> = noise(41, n * ch * hw)
                .iter()
                .enumerate()
                .map(|(i, v)| v * (1.0 + (i / hw % ch) as f32 * 0.05) + 3.0)
                .collect();
            let (w, b, dy) = (noise(42, ch), noise(43, ch), noise(44, n * ch * hw));
            let (xd, dyd) = (round_to(DType::F32, &x), round_to(DType::F32, &dy));
            let (wd, bd) = (round_to(DType::F32, &w), round_to(DType::F32, &b));
            let to = |v: &[f64]| match layout {
                Layout::Nchw => v.to_vec(),
                Layout::Nhwc => cref::to_nhwc(v, n, ch, hw),
            };
            let shape = match layout {
                Layout::Nchw => [n, ch, side, side],
                Layout::Nhwc => [n, side, side, ch],
            };
            let host = |v: &[f64]| to(v).iter().map(|&a| a as f32).collect::<Vec<_>>();
            let (xl, dyl) = (host(&xd), host(&dyd));
            let run = |ctx: &Context| {
                let xt = ctx.upload_f32(&xl, &shape).unwrap();
                let dyt = ctx.upload_f32(&dyl, &shape).unwrap();
                let wt = ctx.upload_f32(&w, &[ch]).unwrap();
                let bt = ctx.upload_f32(&b, &[ch]).unwrap();
                let (dx, dw) = if batch {
                    let cfg = BatchNormConfig {
                        layout,
                        ..Default::default()
                    };
                    let inputs = BatchNormGradInputs {
                        x: &xt,
                        weight: Some(&wt),
                        dy: &dyt,
                        saved: None,
                        running_mean: None,
                        running_var: None,
                    };
                    let g = BatchNorm::new(ctx, cfg).unwrap();
                    let g = g.backward(&inputs, Mode::Train).unwrap();
                    (g.dx, g.dweight)
                } else {
                    let cfg = GroupNormConfig {
                        layout,
                        activation: Activation::Silu,
                        ..GroupNormConfig::new(2)
                    };
                    let inputs = NormGradInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: Some(&bt),
                        dy: &dyt,
                        saved: None,
                    };
                    let g = GroupNorm::new(ctx, cfg).unwrap().backward(&inputs).unwrap();
                    (g.dx, g.dweight)
                };
                (ctx.download(&dx).unwrap(), ctx.download(&dw).unwrap())
            };
            let want = if batch {
                grad::batch_norm_grad(&xd, n, ch, hw, Some(&wd), &dyd, None, 1e-5)
            } else {
                grad::group_norm_grad(&xd, n, ch, hw, 2, &wd, &bd, &dyd, 1e-5, true)
            };
            let what = format!(
                "{} backward {layout:?} {n}x{ch}x{side}x{side} (1 MiB bindings)",
                if batch { "bn" } else { "gn+silu" }
            );
            let (dx, dw) = run(&c);
            let s = |v: &[f64]| v.iter().fold(1.0f64, |m, a| m.max(a.abs()));
            let want_dx = to(&want.dx);
            assert_close(
                &format!("{what} dx"),
                &dx,
                &want_dx,
                3e-5 * s(&want_dx),
                3e-4,
            );
            let wdw = &want.dweight;
            assert_close(&format!("{what} dweight"), &dw, wdw, 3e-5 * s(wdw), 3e-4);
            let (dx_whole, dw_whole) = run(whole);
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same(&dx, &dx_whole) && same(&dw, &dw_whole),
                "{what}: windows changed bits"
            );
        }
    }
}

/// The row-norm backward binds x, dy and dx in windows of whole blocks of rows: LayerNorm and
/// RMSNorm (f32, f16) over 2-4 MiB on 1 MiB bindings, against the f64 reference gradients and
/// bit for bit the same as on the default binding limit (the parameter sums' blocks do not
/// move with the windows).
#[test]
fn row_backward_binds_large_tensors_in_windows() {
    use wgnorm::LayerNormGradInputs;
    use wgnorm::RmsNormGradInputs;
    use wgnorm_reference::grad;
    let c = limited_context(1 << 20);
    let whole = wgnorm_tests::ctx();
    for (dtype, rows, n) in [(DType::F32, 700usize, 1024usize), (DType::F16, 1000, 1040)] {
        let x: Vec<f32> = noise(51, rows * n).iter().map(|v| v * 2.0 + 5.0).collect();
        let (w, dy) = (noise(52, n), noise(53, rows * n));
        let (xd, wd, dyd) = (
            round_to(dtype, &x),
            round_to(dtype, &w),
            round_to(dtype, &dy),
        );
        let (res, dsum) = (noise(54, rows * n), noise(55, rows * n));
        let (resd, dsumd) = (round_to(dtype, &res), round_to(dtype, &dsum));
        for rms in [false, true] {
            let run = |ctx: &Context| {
                let xt = ctx.upload(&x, &[rows, n], dtype).unwrap();
                let wt = ctx.upload(&w, &[n], dtype).unwrap();
                let dyt = ctx.upload(&dy, &[rows, n], dtype).unwrap();
                let (dx, dw) = if rms {
                    let cfg = RmsNormConfig {
                        dtype,
                        ..Default::default()
                    };
                    // The fused add's backward: residual and dsum windowed with x.
                    let rt = ctx.upload(&res, &[rows, n], dtype).unwrap();
                    let dst = ctx.upload(&dsum, &[rows, n], dtype).unwrap();
                    let inputs = RmsNormGradInputs {
                        x: &xt,
                        residual: Some(&rt),
                        weight: Some(&wt),
                        dy: &dyt,
                        dsum: Some(&dst),
                        rstd: None,
                    };
                    RmsNorm::new(ctx, cfg).unwrap().backward(&inputs).unwrap()
                } else {
                    let cfg = LayerNormConfig {
                        dtype,
                        ..Default::default()
                    };
                    let inputs = LayerNormGradInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: None,
                        dy: &dyt,
                        mean: None,
                        rstd: None,
                    };
                    let g = LayerNorm::new(ctx, cfg).unwrap().backward(&inputs).unwrap();
                    (g.dx, g.dweight)
                };
                (ctx.download(&dx).unwrap(), ctx.download(&dw).unwrap())
            };
            let want = if rms {
                let sum: Vec<f64> = xd.iter().zip(&resd).map(|(a, b)| a + b).collect();
                let mut g = grad::rms_norm_grad(&sum, n, Some(&wd), 0.0, &dyd, 1e-5);
                g.dx.iter_mut().zip(&dsumd).for_each(|(d, s)| *d += s);
                g
            } else {
                grad::layer_norm_grad(&xd, n, Some(&wd), &dyd, 1e-5)
            };
            let what = format!(
                "{} backward {dtype} {rows}x{n} (1 MiB bindings)",
                if rms { "rms" } else { "ln" }
            );
            let (dx, dw) = run(&c);
            let s = |v: &[f64]| v.iter().fold(1.0f64, |m, a| m.max(a.abs()));
            let (at, rt) = if dtype == DType::F16 {
                (4e-3, 1e-2)
            } else {
                (3e-5, 3e-4)
            };
            assert_close(&format!("{what} dx"), &dx, &want.dx, at * s(&want.dx), rt);
            let wdw = &want.dweight;
            assert_close(&format!("{what} dweight"), &dw, wdw, at * s(wdw), rt);
            let (dx_whole, dw_whole) = run(whole);
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same(&dx, &dx_whole) && same(&dw, &dw_whole),
                "{what}: windows changed bits"
            );
        }
    }
}

/// PowerNorm's training step and its approximate backward past the binding limit: the
/// GroupScaling (row norm and its backward), the masked quadratic mean (the channel engine
/// with a token mask) and the backward's token-tile partials and dxs all bind windows. A
/// `[1024, 4, 96]` batch (1.5 MiB) with padding on 1 MiB bindings, two steps, against the f64
/// reference and bit for bit the same as on the default binding limit.
#[test]
fn power_norm_forward_and_backward_bind_windows() {
    use wgnorm::powernorm::{PowerNorm, PowerNormConfig, PowerNormInputs};
    use wgnorm::powernorm::{PowerNormGradInputs, PowerNormGradOutputs};
    use wgnorm_reference::powernorm::{power_norm_grad, PowerNormRef};
    let (t, b, c, groups) = (1024usize, 4usize, 96usize, 4usize);
    let mut mask = vec![0.0f32; b * t];
    for (bi, keep) in [(0usize, t), (1, t - 37), (2, 5), (3, t - 1)] {
        mask[bi * t + keep..(bi + 1) * t].fill(1.0);
    }
    let (w, bias) = (noise(61, c), noise(62, c));
    let f = |v: &[f32]| round_to(DType::F32, v);
    let run = |ctx: &Context| {
        let op = PowerNorm::new(
            ctx,
            PowerNormConfig {
                warmup_iters: 1,
                group_num: groups,
                ..Default::default()
            },
        )
        .unwrap();
        let up = |v: &[f32], shape: &[usize]| ctx.upload_f32(v, shape).unwrap();
        let (wt, bt, mask_t) = (up(&w, &[c]), up(&bias, &[c]), up(&mask, &[b, t]));
        let (phi_t, ema_t) = (up(&vec![1.0; c], &[c]), up(&vec![0.0; c], &[c]));
        let saved = ctx.empty(&[c, 2], DType::F32).unwrap();
        let mut out = Vec::new();
        for step in 1..=2u64 {
            let x: Vec<f32> = noise(70 + step, t * b * c)
                .iter()
                .map(|v| v * 1.5 + 0.2)
                .collect();
            let dy = noise(80 + step, t * b * c);
            let (xt, dyt) = (up(&x, &[t, b, c]), up(&dy, &[t, b, c]));
            let phi_old = f(&ctx.download(&phi_t).unwrap());
            let y = ctx.empty(&[t, b, c], DType::F32).unwrap();
            let dx = ctx.empty(&[t, b, c], DType::F32).unwrap();
            let (dw, db) = (
                ctx.empty(&[c], DType::F32).unwrap(),
                ctx.empty(&[c], DType::F32).unwrap(),
            );
            ctx.record_and_submit(|enc| {
                let inputs = PowerNormInputs {
                    x: &xt,
                    pad_mask: Some(&mask_t),
                    weight: Some(&wt),
                    bias: Some(&bt),
                    running_phi: &phi_t,
                };
                op.encode_train_saving(enc, &inputs, &y, step, &saved)?;
                let grad = PowerNormGradInputs {
                    x: &xt,
                    pad_mask: Some(&mask_t),
                    weight: Some(&wt),
                    dy: &dyt,
                    saved: &saved,
                    ema_gz: &ema_t,
                };
                let outs = PowerNormGradOutputs {
                    dx: &dx,
                    dweight: Some(&dw),
                    dbias: Some(&db),
                };
                op.encode_backward(enc, &grad, &outs)
            })
            .unwrap();
            let got = [&y, &dx, &dw, &ema_t].map(|t| ctx.download(t).unwrap());
            out.push((x, dy, phi_old, got));
        }
        out
    };
    let windowed = run(&limited_context(1 << 20));
    let whole = run(wgnorm_tests::ctx());
    let mask_d = f(&mask);
    let mut nu = vec![0.0f64; c];
    for (step, ((x, dy, phi_old, got), (_, _, _, got_whole))) in
        windowed.iter().zip(&whole).enumerate()
    {
        let s = PowerNormRef {
            eps: 1e-5,
            alpha_fwd: 0.9,
            warmup: 1,
            group_num: groups,
            step: Some(step as u64 + 1),
        };
        let want = power_norm_grad(
            &f(x),
            t,
            b,
            c,
            Some(&mask_d),
            &f(&w),
            &f(dy),
            phi_old,
            s,
            0.9,
            &mut nu,
        );
        let what = format!("power_norm step {} (1 MiB bindings)", step + 1);
        assert_close(&format!("{what} dx"), &got[1], &want.dx, 5e-5, 5e-4);
        assert_close(
            &format!("{what} dweight"),
            &got[2],
            &want.dweight,
            5e-5,
            5e-4,
        );
        assert_close(&format!("{what} ema_gz"), &got[3], &nu, 5e-5, 5e-4);
        for (k, name) in ["y", "dx", "dweight", "ema_gz"].iter().enumerate() {
            let same = got[k]
                .iter()
                .zip(&got_whole[k])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{what}: windows changed the bits of {name}");
        }
    }
}
