//! The embedding path: an app that owns its device, queue, buffers and encoder.

use wgnorm::prelude::*;
use wgnorm_reference::rownorm as reference;
use wgnorm_tests::{assert_close, noise, round_to};

/// A device created the way an app would, with the features it chooses (none here).
fn app_device(features: wgpu::Features) -> (wgpu::Device, wgpu::Queue) {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .unwrap_or_else(|e| panic!("GPU tests need an adapter ({e}); on Linux without a GPU: apt-get install -y mesa-vulkan-drivers"));
    let features = features & adapter.features();
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: features,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap()
}

#[test]
fn app_owned_device_buffers_and_encoder() {
    let (device, queue) = app_device(wgpu::Features::empty());
    let ctx = Context::from_device(device.clone(), queue.clone());
    // Without SUBGROUP and SHADER_F16 the workgroup kernel serves every row, and f16 of any
    // length runs as packed u32 words (one-element accesses store their half atomically).
    assert!(!ctx.has_subgroups());
    let ln16 = LayerNorm::new(
        &ctx,
        LayerNormConfig {
            dtype: DType::F16,
            ..Default::default()
        },
    )
    .unwrap();
    for (n, seed) in [(64, 5), (7, 6)] {
        let x16 = noise(seed, 3 * n);
        let t16 = ctx.upload(&x16, &[3, n], DType::F16).unwrap();
        let out = ln16
            .forward(&LayerNormInputs {
                x: &t16,
                weight: None,
                bias: None,
            })
            .unwrap();
        let want = reference::layer_norm(&round_to(DType::F16, &x16), n, None, None, 1e-5);
        assert_close(
            &format!("f16 packed y, rows of {n}"),
            &ctx.download(&out.y).unwrap(),
            &want.y,
            2e-3,
            2e-3,
        );
    }
    // Region Norm reads f16 element by element: made without SHADER_F16 too.
    let rn = wgnorm::RegionNormB::new(
        &ctx,
        wgnorm::RegionNormBConfig {
            dtype: DType::F16,
            ..Default::default()
        },
    );
    assert!(rn.is_ok(), "{:?}", rn.err());

    // The app's own buffer holds x at a (device-aligned) offset, y in another of its buffers.
    let (rows, n) = (5, 300);
    let x = noise(77, rows * n);
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let offset = align * 2;
    let bytes = (rows * n * 4) as u64;
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let xbuf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app x"),
        size: offset + bytes,
        usage,
        mapped_at_creation: false,
    });
    queue.write_buffer(&xbuf, offset, bytemuck::cast_slice(&x));
    let ybuf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app y"),
        size: bytes,
        usage,
        mapped_at_creation: false,
    });
    let xt = Tensor::from_buffer(xbuf, offset, &[rows, n], DType::F32).unwrap();
    let yt = Tensor::from_buffer(ybuf, 0, &[rows, n], DType::F32).unwrap();

    let rms = RmsNorm::new(&ctx, RmsNormConfig::default()).unwrap();
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("app frame"),
    });
    rms.encode(
        &mut encoder,
        &RmsNormInputs {
            x: &xt,
            weight: None,
        },
        &RmsNormOutputs { y: &yt, rstd: None },
    )
    .unwrap();
    queue.submit([encoder.finish()]);

    let want = reference::rms_norm(&round_to(DType::F32, &x), n, None, 0.0, 1e-5);
    assert_close("rms y", &ctx.download(&yt).unwrap(), &want.y, 1e-5, 1e-4);
}

/// The same ops, compiled with every runtime check wgpu offers and with wgnorm's default (the
/// checks its kernels do not need dropped): both must match the reference, row for row. A
/// kernel that relied on a clamp it had dropped would differ here.
#[test]
fn shader_check_levels_agree_with_reference() {
    let (rows, n) = (37, 1024);
    let x = noise(91, rows * n);
    let w = noise(92, n);
    let b = noise(93, n);
    let want = reference::layer_norm(
        &round_to(DType::F32, &x),
        n,
        Some(&round_to(DType::F32, &w)),
        Some(&round_to(DType::F32, &b)),
        1e-5,
    );
    for checks in [ShaderChecks::Full, ShaderChecks::Auto] {
        let (device, queue) = app_device(wgpu::Features::SUBGROUP);
        let ctx = Context::from_device_with_checks(device, queue, checks);
        let ln = LayerNorm::new(&ctx, LayerNormConfig::default()).unwrap();
        let xt = ctx.upload_f32(&x, &[rows, n]).unwrap();
        let wt = ctx.upload_f32(&w, &[n]).unwrap();
        let bt = ctx.upload_f32(&b, &[n]).unwrap();
        let out = ln
            .forward(&LayerNormInputs {
                x: &xt,
                weight: Some(&wt),
                bias: Some(&bt),
            })
            .unwrap();
        assert_close(
            &format!("{checks:?} layer_norm y"),
            &ctx.download(&out.y).unwrap(),
            &want.y,
            1e-5,
            1e-4,
        );
    }
}
