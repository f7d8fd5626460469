//! Batch-Channel Norm's backward on the GPU against the f64 chain rule of
//! `wgnorm_reference::grad::BatchChannel` (checked against finite differences there): training
//! through the batch statistics, inference and EstBN training, both layouts, f16, eps-sized BN
//! variances at an offset, bitwise reproducibility, an empty batch and bad input.

use wgnorm::batchnorm::{
    BatchChannelNorm, BatchChannelNormConfig, BatchChannelNormGradInputs,
    BatchChannelNormGradOutputs, BatchChannelNormInputs,
};
use wgnorm::prelude::*;
use wgnorm::{BatchNormConfig, Error, Mode};
use wgnorm_reference::chnorm::to_nhwc;
use wgnorm_reference::grad::BatchChannel;
use wgnorm_tests::{assert_close, ctx, noise, round_to};

const EPS: f32 = 1e-3;

/// Running mean and variance, read back.
type Running = (Vec<f32>, Vec<f32>);

/// One problem: NCHW data (f32), its shape, and the op's parameters.
struct Problem {
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
    x: Vec<f32>,
    dy: Vec<f32>,
    bn_weight: Vec<f32>,
    bn_bias: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
}

impl Problem {
    /// BN variances about eps (values 0.05 apart around 3) next to eps = 1e-3.
    fn new(n: usize, c: usize, hw: usize, groups: usize) -> Problem {
        let shift = |v: Vec<f32>, s: f32, o: f32| v.iter().map(|x| x * s + o).collect::<Vec<_>>();
        Problem {
            n,
            c,
            hw,
            groups,
            x: shift(noise(81, n * c * hw), 0.05, 3.0),
            dy: noise(82, n * c * hw),
            bn_weight: shift(noise(83, c), 0.5, 1.0),
            bn_bias: noise(84, c),
            weight: shift(noise(85, groups), 0.5, 1.0),
            bias: noise(86, groups),
            running_mean: shift(noise(87, c), 0.02, 3.0),
            running_var: shift(noise(88, c), 5e-4, 1e-3),
        }
    }

    fn shape(&self, layout: Layout) -> Vec<usize> {
        match layout {
            Layout::Nchw => vec![self.n, self.c, self.hw],
            Layout::Nhwc => vec![self.n, self.hw, self.c],
        }
    }

    fn in_layout(&self, v: &[f32], layout: Layout) -> Vec<f32> {
        match layout {
            Layout::Nchw => v.to_vec(),
            Layout::Nhwc => {
                let d: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                to_nhwc(&d, self.n, self.c, self.hw)
                    .iter()
                    .map(|&x| x as f32)
                    .collect()
            }
        }
    }
}

fn op(p: &Problem, layout: Layout, dtype: DType, estbn: Option<f32>) -> BatchChannelNorm {
    let op = BatchChannelNorm::new(
        ctx(),
        BatchChannelNormConfig {
            batch_norm: BatchNormConfig {
                eps: EPS,
                layout,
                dtype,
                ..Default::default()
            },
            groups: p.groups,
        },
    )
    .unwrap();
    match estbn {
        Some(ms) => op.with_estbn(ms),
        None => op,
    }
}

/// The backward's gradients (downloaded) for `mode`; EstBN training runs its forward first so
/// the running statistics are the updated ones, and returns them.
fn run(
    p: &Problem,
    layout: Layout,
    dtype: DType,
    estbn: Option<f32>,
    mode: Mode,
) -> (Vec<Vec<f32>>, Running) {
    let c_ = ctx();
    let bcn = op(p, layout, dtype, estbn);
    let shape = p.shape(layout);
    let x = c_
        .upload(&p.in_layout(&p.x, layout), &shape, dtype)
        .unwrap();
    let dy = c_
        .upload(&p.in_layout(&p.dy, layout), &shape, dtype)
        .unwrap();
    let up = |v: &[f32]| c_.upload_f32(v, &[v.len()]).unwrap();
    let (bw, bb, w, b) = (up(&p.bn_weight), up(&p.bn_bias), up(&p.weight), up(&p.bias));
    let (rm, rv) = (up(&p.running_mean), up(&p.running_var));
    if estbn.is_some() && mode.is_train() {
        let inputs = BatchChannelNormInputs {
            x: &x,
            bn_weight: Some(&bw),
            bn_bias: Some(&bb),
            running_mean: Some(&rm),
            running_var: Some(&rv),
            weight: Some(&w),
            bias: Some(&b),
        };
        let y = c_.empty(&shape, dtype).unwrap();
        c_.record_and_submit(|enc| bcn.encode(enc, &inputs, &y, mode))
            .unwrap();
    }
    let g = bcn
        .backward(
            &BatchChannelNormGradInputs {
                x: &x,
                bn_weight: Some(&bw),
                bn_bias: Some(&bb),
                running_mean: Some(&rm),
                running_var: Some(&rv),
                weight: Some(&w),
                bias: Some(&b),
                dy: &dy,
            },
            mode,
        )
        .unwrap();
    let dx = c_.download(&g.dx).unwrap();
    let dx = match layout {
        Layout::Nchw => dx,
        // Back to NCHW: element (i, k, ch) of NHWC is (i, ch, k).
        Layout::Nhwc => {
            let mut out = vec![0.0; dx.len()];
            for i in 0..p.n {
                for k in 0..p.hw {
                    for ch in 0..p.c {
                        out[(i * p.c + ch) * p.hw + k] = dx[(i * p.hw + k) * p.c + ch];
                    }
                }
            }
            out
        }
    };
    let d = |t: &Tensor| c_.download(t).unwrap();
    (
        vec![
            dx,
            d(&g.dbn_weight),
            d(&g.dbn_bias),
            d(&g.dweight),
            d(&g.dbias),
        ],
        (d(&rm), d(&rv)),
    )
}

/// Checks every gradient of one configuration against the reference.
fn check(p: &Problem, layout: Layout, dtype: DType, estbn: Option<f32>, mode: Mode, tol: f64) {
    let (got, (rm, rv)) = run(p, layout, dtype, estbn, mode);
    let f = |v: &[f32]| round_to(DType::F32, v);
    let fd = |v: &[f32]| round_to(dtype, v);
    let (bw, bb, w, b) = (f(&p.bn_weight), f(&p.bn_bias), f(&p.weight), f(&p.bias));
    let r = BatchChannel {
        n: p.n,
        c: p.c,
        hw: p.hw,
        groups: p.groups,
        bn_weight: Some(&bw),
        bn_bias: Some(&bb),
        weight: &w,
        bias: &b,
        eps: EPS as f64,
    };
    // The statistics the backward took as constants: the (updated) running ones, read back.
    let running = (f(&rm), f(&rv));
    let through_batch = mode.is_train() && estbn.is_none();
    let want = r.grad(
        &fd(&p.x),
        &fd(&p.dy),
        (!through_batch).then_some((running.0.as_slice(), running.1.as_slice())),
    );
    let what = format!("{layout:?} {dtype:?} estbn {estbn:?} {mode:?}");
    let names = ["dx", "dbn_weight", "dbn_bias", "dweight", "dbias"];
    let wants = [
        &want.dx,
        &want.dbn_weight,
        &want.dbn_bias,
        &want.dweight,
        &want.dbias,
    ];
    for ((name, g), w) in names.iter().zip(&got).zip(wants) {
        assert_close(&format!("{what} {name}"), g, w, tol, tol);
    }
}

#[test]
fn batch_channel_backward_training_matches_reference_both_layouts() {
    let p = Problem::new(4, 8, 9, 4);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        check(&p, layout, DType::F32, None, Mode::Train, 2e-4);
    }
}

#[test]
fn batch_channel_backward_inference_and_estbn_take_statistics_as_constants() {
    let p = Problem::new(3, 6, 10, 3);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        check(&p, layout, DType::F32, None, Mode::Infer, 2e-4);
        check(&p, layout, DType::F32, Some(0.25), Mode::Train, 2e-4);
    }
}

#[test]
fn batch_channel_backward_f16() {
    // f16 inputs and intermediates (as the forward's): a tolerance of f16's rounding.
    let p = Problem::new(2, 8, 16, 2);
    check(&p, Layout::Nchw, DType::F16, None, Mode::Train, 3e-2);
}

#[test]
fn batch_channel_backward_is_bitwise_reproducible() {
    let p = Problem::new(4, 8, 9, 4);
    let a = run(&p, Layout::Nchw, DType::F32, None, Mode::Train).0;
    let b = run(&p, Layout::Nchw, DType::F32, None, Mode::Train).0;
    for (x, y) in a.iter().zip(&b) {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(x), bits(y));
    }
}

/// A wrong dy shape, a per-channel weight where a per-group one belongs, and an output aliasing
/// an input are refused with their typed errors; an empty batch zeroes the parameter gradients.
#[test]
fn batch_channel_backward_refuses_bad_input_and_handles_empty() {
    let c_ = ctx();
    let p = Problem::new(2, 4, 3, 2);
    let bcn = op(&p, Layout::Nchw, DType::F32, None);
    let x = c_.upload_f32(&p.x, &[2, 4, 3]).unwrap();
    let dy_bad = c_.upload_f32(&p.dy[..12], &[2, 2, 3]).unwrap();
    let dy = c_.upload_f32(&p.dy, &[2, 4, 3]).unwrap();
    let w_per_channel = c_.upload_f32(&[1.0; 4], &[4]).unwrap();
    let dx = c_.empty(&[2, 4, 3], DType::F32).unwrap();
    let inputs = |dy, w| BatchChannelNormGradInputs {
        x: &x,
        bn_weight: None,
        bn_bias: None,
        running_mean: None,
        running_var: None,
        weight: w,
        bias: None,
        dy,
    };
    let outputs = |dx| BatchChannelNormGradOutputs {
        dx,
        dbn_weight: None,
        dbn_bias: None,
        dweight: None,
        dbias: None,
    };
    let shape_err = |r: &Result<(), Error>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let alias_err = |r: &Result<(), Error>| matches!(r, Err(Error::AliasedBuffers { .. }));
    type Want = fn(&Result<(), Error>) -> bool;
    let cases: [(&str, _, _, Want); 3] = [
        ("dy shape", inputs(&dy_bad, None), outputs(&dx), shape_err),
        (
            "per-channel weight",
            inputs(&dy, Some(&w_per_channel)),
            outputs(&dx),
            shape_err,
        ),
        ("dx aliasing dy", inputs(&dy, None), outputs(&dy), alias_err),
    ];
    for (what, i, o, want) in cases {
        let mut enc = c_.device().create_command_encoder(&Default::default());
        let r = bcn.encode_backward(&mut enc, &i, &o, Mode::Train);
        assert!(want(&r), "{what}: {:?}", r.err());
    }
    let e = c_.empty(&[0, 4, 3], DType::F32).unwrap();
    let g = bcn
        .backward(
            &BatchChannelNormGradInputs {
                x: &e,
                dy: &e,
                ..inputs(&dy, None)
            },
            Mode::Train,
        )
        .unwrap();
    assert_eq!(c_.download(&g.dweight).unwrap(), vec![0.0; 2]);
    assert_eq!(c_.download(&g.dbn_bias).unwrap(), vec![0.0; 4]);
}
