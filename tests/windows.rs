//! Tensors larger than one storage binding: the row norms bind them in windows of rows, the
//! elementwise ops in windows of elements. A device created with a 1 MiB binding limit runs
//! multi-MiB tensors against the f64 reference; a single row past the limit is still refused,
//! typed.

use wgnorm::engine::rownorm::{RowMode, RowNorm, RowNormConfig};
use wgnorm::prelude::*;
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
        let x = noise(n as u64 + rows as u64, rows * n);
        let w: Vec<f32> = noise(3, n).iter().map(|v| v + 1.0).collect();
        let op = RowNorm::new(
            &c,
            RowNormConfig {
                mode,
                axis: -1,
                eps: 1e-5,
                weight_offset: 0.0,
                dtype,
            },
        )
        .unwrap();
        let xt = c.upload(&x, &[rows, n], dtype).unwrap();
        let wt = c.upload(&w, &[n], dtype).unwrap();
        let (y, mean, rstd) = op.forward(&xt, Some(&wt), None, true).unwrap();
        let (xd, wd) = (round_to(dtype, &x), round_to(dtype, &w));
        let want = match mode {
            RowMode::LayerNorm => reference::layer_norm(&xd, n, Some(&wd), None, 1e-5),
            RowMode::RmsNorm => reference::rms_norm(&xd, n, Some(&wd), 0.0, 1e-5),
        };
        let what = format!("{mode:?} {dtype} {rows}x{n} (1 MiB bindings)");
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
