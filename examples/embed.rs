//! An application that owns its wgpu device records wgnorm ops into its own encoder.
//!
//! `cargo run --example embed`

use wgnorm::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The app's own device, created as most apps create theirs: WebGPU's default limits (8
    // storage buffers per stage, 16 KiB of workgroup memory, 128 MiB bindings), which every
    // wgnorm kernel fits, and the optional features wgnorm can use when the adapter has them.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: adapter.features() & wgnorm::OPTIONAL_FEATURES,
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    }))?;

    // Once, at start-up: wrap the device and create the layers.
    let ctx = Context::from_device(device.clone(), queue.clone());
    let rms = RmsNorm::new(
        &ctx,
        RmsNormConfig {
            eps: 1e-6,
            ..Default::default()
        },
    )?;

    // The app's buffers: activations [tokens, hidden] and the weight.
    let (tokens, hidden) = (4, 8);
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    let make = |label, len: usize| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (len * 4) as u64,
            usage,
            mapped_at_creation: false,
        })
    };
    let (xb, wb, yb) = (
        make("x", tokens * hidden),
        make("w", hidden),
        make("y", tokens * hidden),
    );
    let x_host: Vec<f32> = (0..tokens * hidden)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    queue.write_buffer(&xb, 0, bytemuck::cast_slice(&x_host));
    queue.write_buffer(&wb, 0, bytemuck::cast_slice(&vec![1.0f32; hidden]));
    let x = Tensor::from_buffer(xb, 0, &[tokens, hidden], DType::F32)?;
    let w = Tensor::from_buffer(wb, 0, &[hidden], DType::F32)?;
    let y = Tensor::from_buffer(yb, 0, &[tokens, hidden], DType::F32)?;

    // Every frame: record into the app's encoder among its own passes, submit once.
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("frame"),
    });
    rms.encode(
        &mut encoder,
        &RmsNormInputs {
            x: &x,
            weight: Some(&w),
        },
        &RmsNormOutputs { y: &y, rstd: None },
    )?;
    queue.submit([encoder.finish()]);

    // Check: with unit weights every row of y has mean square 1 (up to eps = 1e-6), and keeps
    // the direction of its row of x.
    let out = ctx.download(&y)?;
    for (row, xr) in out.chunks(hidden).zip(x_host.chunks(hidden)) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / hidden as f32;
        println!("{row:.3?}  mean square {ms:.4}");
        let aligned = row.iter().zip(xr).all(|(a, b)| a * b >= 0.0);
        if (ms - 1.0).abs() > 1e-3 || !aligned {
            return Err(format!("row {row:?} is not x / rms(x)").into());
        }
    }
    println!("ok");
    Ok(())
}
