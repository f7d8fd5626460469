//! Device errors become typed errors, never panics: sizes beyond the device's limits, wgpu
//! validation errors inside wgnorm's object creation, overflowing shapes, a lost device, and a
//! poisoned cache lock.

use wgnorm::prelude::*;
use wgnorm::Error;
use wgnorm_tests::ctx;

#[test]
fn a_tensor_beyond_max_buffer_size_is_too_large() {
    let c = ctx();
    let limit = c.limits().max_buffer_size;
    let elems = (limit / 4 + 1) as usize;
    match c.empty(&[elems], DType::F32) {
        Err(Error::TooLarge {
            value, limit: l, ..
        }) => {
            assert!(value > l && l == limit, "{value} vs {l}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn overflowing_shapes_are_too_large_not_a_wrap() {
    let c = ctx();
    for shape in [
        &[usize::MAX, 2][..],
        &[1 << 40, 1 << 40],
        &[usize::MAX / 2, 3],
    ] {
        assert!(
            matches!(c.empty(shape, DType::F32), Err(Error::TooLarge { .. })),
            "empty {shape:?}"
        );
        let buf = c.empty(&[4], DType::F32).unwrap();
        assert!(
            matches!(
                Tensor::from_buffer(buf.buffer().clone(), 0, shape, DType::F16),
                Err(Error::TooLarge { .. })
            ),
            "from_buffer {shape:?}"
        );
        assert!(matches!(buf.reshape(shape), Err(Error::TooLarge { .. })));
    }
}

#[test]
fn a_wgpu_validation_error_inside_creation_is_typed() {
    let c = ctx();
    // A mapped-at-creation buffer must have a size that is a multiple of 4: wgpu reports a
    // validation error, which would panic through the uncaptured-error handler.
    let r = c.create_buffer("odd mapped buffer", 3, wgpu::BufferUsages::UNIFORM, true);
    assert!(
        matches!(r, Err(Error::Device(ref m)) if m.contains("odd mapped buffer")),
        "{r:?}"
    );
    // The context still works afterwards.
    let t = c.upload_f32(&[1.0, 2.0], &[2]).unwrap();
    assert_eq!(c.download(&t).unwrap(), vec![1.0, 2.0]);
}

#[test]
fn a_lost_device_makes_later_calls_device_lost() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    // A context of its own: the shared one must outlive this test.
    let c = Context::new().expect("GPU tests need an adapter (mesa-vulkan-drivers)");
    let ln = LayerNorm::new(&c, LayerNormConfig::default()).unwrap();
    c.device().destroy();
    let _ = c.wait(None);
    assert!(
        matches!(c.empty(&[4], DType::F32), Err(Error::DeviceLost(_))),
        "empty after loss"
    );
    let x = c.upload_f32(&[1.0; 8], &[2, 4]);
    assert!(matches!(x, Err(Error::DeviceLost(_))), "upload after loss");
    // An op made before the loss refuses too (its first pipeline is created now).
    assert!(c.check_alive().is_err());
    drop(ln);
}

#[test]
fn a_poisoned_lock_is_recovered() {
    let m = std::sync::Arc::new(std::sync::Mutex::new(5));
    let m2 = m.clone();
    let _ = std::thread::spawn(move || {
        let _g = m2.lock().unwrap();
        panic!("poison the lock");
    })
    .join();
    assert!(m.is_poisoned());
    assert_eq!(*wgnorm::engine::core::locked(&m), 5);
}

/// A device with lower limits than a kernel needs refuses it as `Error::DeviceLimit` naming the
/// limit, before anything is created or recorded: the downlevel profile's 4 storage buffers
/// against a LayerNorm with weight, bias and saved statistics (a kernel binding 8), and WebGPU's
/// 256 invocations against a 512-wide workgroup.
#[test]
fn a_kernel_past_the_devices_limits_is_a_device_limit_error() {
    use wgnorm::engine::baseline::copy_spec;
    use wgnorm::engine::shader::Io;
    use wgnorm::{DeviceOptions, LimitsProfile};
    let make = |limits| {
        wgnorm_tests::context(Some(DeviceOptions {
            limits,
            ..Default::default()
        }))
    };
    let low = make(LimitsProfile::Downlevel);
    assert_eq!(low.limits().max_storage_buffers_per_shader_stage, 4);
    let ln = LayerNorm::new(&low, LayerNormConfig::default()).unwrap();
    let x = low.upload_f32(&[1.0, 2.0, 3.0, 5.0], &[1, 4]).unwrap();
    let w = low.upload_f32(&[1.0; 4], &[4]).unwrap();
    let r = ln.forward(&LayerNormInputs {
        x: &x,
        weight: Some(&w),
        bias: Some(&w),
    });
    match r {
        Err(Error::DeviceLimit {
            limit,
            needed,
            available,
            ..
        }) => {
            assert_eq!(limit, "max_storage_buffers_per_shader_stage");
            assert!(needed > 4 && available == 4, "{needed} {available}");
        }
        other => panic!("expected DeviceLimit, got {other:?}"),
    }
    let webgpu = make(LimitsProfile::WebGpu);
    match webgpu.pipeline(&copy_spec(Io::F32, 512, 1)) {
        Err(e @ Error::DeviceLimit { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("max_compute_invocations_per_workgroup") && msg.contains("512"),
                "{msg}"
            );
        }
        other => panic!("expected DeviceLimit, got {other:?}"),
    }
    assert!(webgpu.pipeline(&copy_spec(Io::F32, 256, 1)).is_ok());
}
