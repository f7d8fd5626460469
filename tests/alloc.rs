//! A warm `encode` allocates nothing beyond what wgpu itself allocates to record one compute
//! pass: counted with a global allocator, against a bare pass (same pipeline kind, bind group and
//! dispatch) recorded directly with wgpu.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use wgnorm::prelude::*;
use wgnorm_tests::{ctx, noise};

struct Counting;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn count<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = COUNT.with(|c| c.get());
    let v = f();
    (v, COUNT.with(|c| c.get()) - before)
}

#[test]
fn warm_encode_adds_no_allocation_over_a_bare_pass() {
    let ln = LayerNorm::new(ctx(), LayerNormConfig::default()).unwrap();
    warm_encode_allocates_as_bare_passes(&ln, 1);
}

/// The split kernel records two passes (chunk moments, output) and owns its chunk-moment scratch:
/// warm, it allocates no more than two bare passes.
#[test]
fn warm_split_encode_adds_no_allocation_over_two_bare_passes() {
    let split = wgnorm::engine::rownorm::RowKernel::Split { wg: 64, chunks: 4 };
    let ln = LayerNorm::new(ctx(), LayerNormConfig::default())
        .unwrap()
        .with_kernel(split);
    warm_encode_allocates_as_bare_passes(&ln, 2);
}

/// Warm calls of `ln` on a 16 x 256 input allocate no more than `passes` compute passes recorded
/// directly with wgpu.
fn warm_encode_allocates_as_bare_passes(ln: &LayerNorm, passes: u64) {
    let c = ctx();
    let x = c.upload_f32(&noise(1, 16 * 256), &[16, 256]).unwrap();
    let w = c.upload_f32(&noise(2, 256), &[256]).unwrap();
    let y = c.empty(&[16, 256], DType::F32).unwrap();
    let inputs = LayerNormInputs {
        x: &x,
        weight: Some(&w),
        bias: None,
    };
    let outputs = LayerNormOutputs {
        y: &y,
        mean: None,
        rstd: None,
    };

    // A bare pass with a pipeline and bind group of the same shape, built by hand.
    let pipeline = c
        .pipeline(&wgnorm::engine::core::baseline::copy_spec(
            wgnorm::engine::shader::Io {
                dtype: DType::F32,
                vec4: false,
            },
            256,
            1,
        ))
        .unwrap();
    let (bgl, _) = c
        .layout(&[
            wgnorm::engine::Slot::Uniform,
            wgnorm::engine::Slot::Read,
            wgnorm::engine::Slot::ReadWrite,
        ])
        .unwrap();
    let u = c.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    let bg = c.device().create_bind_group(&wgpu::BindGroupDescriptor {
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

    let mut enc = c.device().create_command_encoder(&Default::default());
    ln.encode(&mut enc, &inputs, &outputs).unwrap(); // cold: compiles and caches
    let mut wgnorm_allocs = Vec::new();
    let mut bare_allocs = Vec::new();
    for _ in 0..5 {
        let (r, n) = count(|| ln.encode(&mut enc, &inputs, &outputs));
        r.unwrap();
        wgnorm_allocs.push(n);
        let ((), n) = count(|| {
            for _ in 0..passes {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("wgnorm layer_norm"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(2, 1, 1);
            }
        });
        bare_allocs.push(n);
    }
    let done = c.queue().submit([enc.finish()]);
    // Wait for the work: lavapipe compiles a shader variant on its queue thread at the first
    // dispatch, and a process that exits meanwhile (this binary's tests are short) tears LLVM
    // down under that thread (a SIGSEGV after "test result: ok", seen in CI).
    c.wait(Some(done)).unwrap();
    // Minimums: the encoder's own buffers grow now and then, in either kind of call.
    let (wmin, bmin) = (
        wgnorm_allocs.iter().min().unwrap(),
        bare_allocs.iter().min().unwrap(),
    );
    assert!(
        wmin <= bmin,
        "warm encode allocated {wgnorm_allocs:?} times, {passes} bare wgpu pass(es) {bare_allocs:?}: wgnorm adds allocations on the hot path"
    );
}
