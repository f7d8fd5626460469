//! Host-side cost of recording ops on a warm (cached) path: `encode` per call, for the row norms
//! and BatchNorm, against a bare wgpu compute pass recorded by hand as the floor. Kernel speed
//! is `cargo xtask bench`'s business; `tests/alloc.rs` checks that a warm encode allocates no
//! more than the bare pass.

use criterion::{criterion_group, criterion_main, Criterion};
use wgnorm::prelude::*;
use wgnorm::Mode;

fn ctx() -> Context {
    Context::new().unwrap_or_else(|e| panic!("benchmarks need an adapter: {e}"))
}

fn encode_cost(c: &mut Criterion) {
    let ctx = ctx();
    let x = ctx.upload_f32(&vec![0.5; 64 * 1024], &[64, 1024]).unwrap();
    let w = ctx.upload_f32(&vec![1.0; 1024], &[1024]).unwrap();
    let y = ctx.empty(&[64, 1024], DType::F32).unwrap();
    let ln = LayerNorm::new(&ctx, LayerNormConfig::default()).unwrap();
    let rms = RmsNorm::new(&ctx, RmsNormConfig::default()).unwrap();
    let xb = ctx
        .upload_f32(&vec![0.5; 8 * 16 * 64], &[8, 16, 8, 8])
        .unwrap();
    let yb = ctx.empty(&[8, 16, 8, 8], DType::F32).unwrap();
    let rm = ctx.upload_f32(&[0.0; 16], &[16]).unwrap();
    let rv = ctx.upload_f32(&[1.0; 16], &[16]).unwrap();
    let bn = BatchNorm::new(&ctx, BatchNormConfig::default()).unwrap();
    let bn_in = BatchNormInputs {
        x: &xb,
        weight: None,
        bias: None,
        running_mean: Some(&rm),
        running_var: Some(&rv),
    };
    let bn_out = BatchNormOutputs {
        y: &yb,
        saved: None,
    };
    let ln_in = LayerNormInputs {
        x: &x,
        weight: Some(&w),
        bias: None,
    };
    let ln_out = LayerNormOutputs {
        y: &y,
        mean: None,
        rstd: None,
    };
    let rms_in = RmsNormInputs {
        x: &x,
        weight: Some(&w),
    };
    let rms_out = RmsNormOutputs { y: &y, rstd: None };

    // The floor: one pass, one pipeline, one bind group, one dispatch, recorded directly.
    let slots = &[
        wgnorm::engine::Slot::Uniform,
        wgnorm::engine::Slot::Read,
        wgnorm::engine::Slot::ReadWrite,
    ];
    let io = wgnorm::engine::shader::Io {
        dtype: DType::F32,
        vec4: true,
    };
    let pipeline = ctx
        .pipeline(&wgnorm::engine::core::baseline::copy_spec(io, 256, 1))
        .unwrap();
    let (bgl, _) = ctx.layout(slots).unwrap();
    let u = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    let bg = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &bgl,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: u.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: x.buffer().as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: y.buffer().as_entire_binding(),
            },
        ],
    });

    let mut group = c.benchmark_group("encode per call (warm)");
    // Recording into one encoder per batch of calls; the encoder is dropped unsubmitted.
    group.bench_function("bare wgpu pass", |b| {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        b.iter(|| {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(8, 1, 1);
        })
    });
    group.bench_function("layer_norm 64x1024", |b| {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        b.iter(|| ln.encode(&mut enc, &ln_in, &ln_out).unwrap())
    });
    group.bench_function("rms_norm 64x1024", |b| {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        b.iter(|| rms.encode(&mut enc, &rms_in, &rms_out).unwrap())
    });
    group.bench_function("batch_norm train 8x16x8x8 (3 dispatches)", |b| {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        b.iter(|| bn.encode(&mut enc, &bn_in, &bn_out, Mode::Train).unwrap())
    });
    group.finish();
}

criterion_group!(benches, encode_cost);
criterion_main!(benches);
