//! Sharing: `Context` and every op are `Send + Sync` (checked at compile time); recording the
//! same ops from 8 threads at once gives bitwise the single-thread results; and a row's output
//! does not depend on how many other rows are in the call (batch invariance, what reproducible
//! LLM decoding needs).

use wgnorm::batchnorm::{
    AdaptiveBn, BatchChannelNorm, EstBn, GhostBatchNorm, IbnNorm, ProgressiveRepNorm, RegionNormB,
    RegionNormL, RepBatchNorm, TestTimeBn, UnmixTns,
};
use wgnorm::prelude::*;
use wgnorm::{
    AlphaDropout, BallOps, Elementwise, EvoNormB0, EvoNormS0, PoincareBatchNorm, PoincareMidpoint,
    PowerNorm, SinkhornNormalize, UnifiedNorm, WeightStandardization,
};
use wgnorm_tests::{ctx, noise};

const fn send_sync<T: Send + Sync>() {}

// Compile-time: a type losing Send or Sync fails the build of this test.
const _: () = {
    send_sync::<Context>();
    send_sync::<Tensor>();
    send_sync::<LayerNorm>();
    send_sync::<RmsNorm>();
    send_sync::<BatchNorm>();
    send_sync::<GroupNorm>();
    send_sync::<InstanceNorm>();
    send_sync::<LpNorm>();
    send_sync::<MeanVarianceNorm>();
    send_sync::<WeightStandardization>();
    send_sync::<EvoNormS0>();
    send_sync::<EvoNormB0>();
    send_sync::<IbnNorm>();
    send_sync::<UnmixTns>();
    send_sync::<RegionNormB>();
    send_sync::<RegionNormL>();
    send_sync::<GhostBatchNorm>();
    send_sync::<EstBn>();
    send_sync::<AdaptiveBn>();
    send_sync::<TestTimeBn>();
    send_sync::<RepBatchNorm>();
    send_sync::<ProgressiveRepNorm>();
    send_sync::<BatchChannelNorm>();
    send_sync::<PowerNorm>();
    send_sync::<UnifiedNorm>();
    send_sync::<SinkhornNormalize>();
    send_sync::<PoincareMidpoint>();
    send_sync::<PoincareBatchNorm>();
    send_sync::<BallOps>();
    send_sync::<Elementwise>();
    send_sync::<AlphaDropout>();
};

/// LayerNorm and GroupNorm+SiLU outputs of one thread's recording, as bits.
fn record_once(ln: &LayerNorm, gn: &GroupNorm, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let c = ctx();
    let x = c.upload_f32(&noise(seed, 8 * 256), &[8, 256]).unwrap();
    let y = c.empty(&[8, 256], DType::F32).unwrap();
    let xg = c
        .upload_f32(&noise(seed + 1, 2 * 32 * 36), &[2, 32, 6, 6])
        .unwrap();
    let yg = c.empty(&[2, 32, 6, 6], DType::F32).unwrap();
    let mut enc = c.device().create_command_encoder(&Default::default());
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
    gn.encode(
        &mut enc,
        &NormInputs {
            x: &xg,
            weight: None,
            bias: None,
        },
        &NormOutputs {
            y: &yg,
            saved: None,
        },
    )
    .unwrap();
    c.queue().submit([enc.finish()]);
    let bits = |t: &Tensor| c.download(t).unwrap().iter().map(|v| v.to_bits()).collect();
    (bits(&y), bits(&yg))
}

#[test]
fn eight_threads_record_on_one_context_and_get_the_single_thread_bits() {
    let c = ctx();
    let ln = LayerNorm::new(c, LayerNormConfig::default()).unwrap();
    let gn = GroupNorm::new(
        c,
        GroupNormConfig {
            activation: Activation::Silu,
            ..GroupNormConfig::new(8)
        },
    )
    .unwrap();
    let want: Vec<_> = (0..8).map(|t| record_once(&ln, &gn, t)).collect();
    let got: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let (ln, gn) = (&ln, &gn);
                s.spawn(move || {
                    // Each thread records several times, so calls interleave across threads.
                    let mut last = record_once(ln, gn, t);
                    for _ in 0..3 {
                        last = record_once(ln, gn, t);
                    }
                    last
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "thread {t}: results differ from the single-thread run"
        );
    }
}

/// Row i of a call with one row equals row i of a call with 64 rows, bit for bit, for the row
/// norms in f32 and f16 over short rows (register kernel) and long rows (uncached team).
#[test]
fn a_row_does_not_depend_on_the_other_rows_in_the_call() {
    let c = ctx();
    for dtype in [DType::F32, DType::F16] {
        for n in [64usize, 4096] {
            let rows = 64;
            let x = noise(n as u64, rows * n);
            let run_ln = |xs: &[f32], r: usize| {
                let ln = LayerNorm::new(
                    c,
                    LayerNormConfig {
                        dtype,
                        ..Default::default()
                    },
                )
                .unwrap();
                let t = c.upload(xs, &[r, n], dtype).unwrap();
                let out = ln
                    .forward(&LayerNormInputs {
                        x: &t,
                        weight: None,
                        bias: None,
                    })
                    .unwrap();
                c.download(&out.y).unwrap()
            };
            let run_rms = |xs: &[f32], r: usize| {
                let rms = RmsNorm::new(
                    c,
                    RmsNormConfig {
                        dtype,
                        ..Default::default()
                    },
                )
                .unwrap();
                let t = c.upload(xs, &[r, n], dtype).unwrap();
                let out = rms
                    .forward(&RmsNormInputs {
                        x: &t,
                        weight: None,
                    })
                    .unwrap();
                c.download(&out.y).unwrap()
            };
            for (name, run) in [
                ("layer_norm", &run_ln as &dyn Fn(&[f32], usize) -> Vec<f32>),
                ("rms_norm", &run_rms),
            ] {
                let batch = run(&x, rows);
                for i in [0usize, 17, 63] {
                    let one = run(&x[i * n..(i + 1) * n], 1);
                    let same = one
                        .iter()
                        .zip(&batch[i * n..(i + 1) * n])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{name} {dtype} n={n}: row {i} alone differs from row {i} of {rows}"
                    );
                }
            }
        }
    }
}
