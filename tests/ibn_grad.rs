//! IBN's backward on the GPU against `wgnorm_reference::grad::ibn_grad` (checked against finite
//! differences there): training and inference, both layouts, eps-sized variances at an offset,
//! f16, bitwise reproducibility, an empty batch and bad input.

use wgnorm::prelude::*;
use wgnorm::{IbnConfig, IbnGradInputs, IbnGradOutputs, IbnNorm, Mode};
use wgnorm_reference::chnorm::to_nhwc;
use wgnorm_reference::grad::ibn_grad;
use wgnorm_tests::{assert_close, ctx, noise, round_to};

const EPS: f32 = 1e-3;

fn in_layout(v: &[f32], (n, c, hw): (usize, usize, usize), layout: Layout) -> Vec<f32> {
    match layout {
        Layout::Nchw => v.to_vec(),
        Layout::Nhwc => {
            let d: Vec<f64> = v.iter().map(|&e| e as f64).collect();
            to_nhwc(&d, n, c, hw).iter().map(|&e| e as f32).collect()
        }
    }
}

fn to_nchw(v: &[f32], (n, c, hw): (usize, usize, usize), layout: Layout) -> Vec<f32> {
    match layout {
        Layout::Nchw => v.to_vec(),
        Layout::Nhwc => {
            let mut out = vec![0.0; v.len()];
            for i in 0..n {
                for k in 0..hw {
                    for ch in 0..c {
                        out[(i * c + ch) * hw + k] = v[(i * hw + k) * c + ch];
                    }
                }
            }
            out
        }
    }
}

/// (x, dy, weight, running mean, running var) of NCHW `dims` with `half` IN channels.
struct Data {
    x: Vec<f32>,
    dy: Vec<f32>,
    w: Vec<f32>,
    rm: Vec<f32>,
    rv: Vec<f32>,
}

fn data((n, c, hw): (usize, usize, usize), half: usize) -> Data {
    Data {
        x: noise(171, n * c * hw)
            .iter()
            .map(|e| 0.05 * e + 1.5)
            .collect(),
        dy: noise(172, n * c * hw),
        w: noise(173, c),
        rm: noise(174, c - half)
            .iter()
            .map(|e| 1.5 + 0.02 * e)
            .collect(),
        rv: noise(175, c - half)
            .iter()
            .map(|e| 1e-3 + 5e-4 * e.abs())
            .collect(),
    }
}

/// Downloaded [dx (NCHW order), dweight, dbias].
fn run(
    dims: (usize, usize, usize),
    layout: Layout,
    dtype: DType,
    d: &Data,
    mode: Mode,
) -> [Vec<f32>; 3] {
    let c_ = ctx();
    let op = IbnNorm::new(
        c_,
        IbnConfig {
            eps: EPS,
            layout,
            dtype,
            ..Default::default()
        },
    )
    .unwrap();
    let shape = match layout {
        Layout::Nchw => vec![dims.0, dims.1, dims.2],
        Layout::Nhwc => vec![dims.0, dims.2, dims.1],
    };
    let up = |v: &[f32]| {
        c_.upload(&in_layout(v, dims, layout), &shape, dtype)
            .unwrap()
    };
    let f = |v: &[f32]| c_.upload_f32(v, &[v.len()]).unwrap();
    let (x, dy, w, rm, rv) = (up(&d.x), up(&d.dy), f(&d.w), f(&d.rm), f(&d.rv));
    let g = op
        .backward(
            &IbnGradInputs {
                x: &x,
                weight: &w,
                running_mean: &rm,
                running_var: &rv,
                dy: &dy,
            },
            mode,
        )
        .unwrap();
    let dl = |t: &Tensor| c_.download(t).unwrap();
    [
        to_nchw(&dl(&g.dx), dims, layout),
        dl(&g.dweight),
        dl(&g.dbias),
    ]
}

fn check(dims: (usize, usize, usize), layout: Layout, dtype: DType, mode: Mode, tol: f64) {
    let half = dims.1 / 2;
    let d = data(dims, half);
    let got = run(dims, layout, dtype, &d, mode);
    let f = |v: &[f32]| round_to(DType::F32, v);
    let (rm, rv) = (f(&d.rm), f(&d.rv));
    let running = (!mode.is_train()).then_some((rm.as_slice(), rv.as_slice()));
    let want = ibn_grad(
        &round_to(dtype, &d.x),
        (dims.0, dims.1, dims.2, half),
        &f(&d.w),
        &round_to(dtype, &d.dy),
        running,
        EPS as f64,
    );
    let what = format!("ibn backward {dims:?} {layout:?} {dtype:?} {mode:?}");
    for (name, g, w) in [
        ("dx", &got[0], &want.dx),
        ("dweight", &got[1], &want.dweight),
        ("dbias", &got[2], &want.dbias),
    ] {
        assert_close(&format!("{what} {name}"), g, w, tol, tol);
    }
}

#[test]
fn ibn_backward_matches_reference_both_layouts_and_modes() {
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for mode in [Mode::Train, Mode::Infer] {
            check((3, 9, 10), layout, DType::F32, mode, 2e-4);
        }
    }
}

#[test]
fn ibn_backward_f16() {
    check((4, 8, 16), Layout::Nchw, DType::F16, Mode::Train, 3e-2);
}

#[test]
fn ibn_backward_is_bitwise_reproducible() {
    let d = data((3, 9, 10), 4);
    let a = run((3, 9, 10), Layout::Nchw, DType::F32, &d, Mode::Train);
    let b = run((3, 9, 10), Layout::Nchw, DType::F32, &d, Mode::Train);
    let bits = |e: &[f32]| e.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(bits(p), bits(q));
    }
}

/// Running statistics of the wrong length and a one-value BatchNorm part in training are
/// refused; an empty batch zeroes the parameter gradients.
#[test]
fn ibn_backward_refuses_bad_input_and_handles_empty() {
    let c_ = ctx();
    let op = IbnNorm::new(c_, IbnConfig::default()).unwrap();
    let x = c_.upload_f32(&noise(1, 24), &[2, 4, 3]).unwrap();
    let w = c_.upload_f32(&[1.0; 4], &[4]).unwrap();
    let (r2, r3) = (
        c_.upload_f32(&[1.0; 2], &[2]).unwrap(),
        c_.upload_f32(&[1.0; 3], &[3]).unwrap(),
    );
    let dx = c_.empty(&[2, 4, 3], DType::F32).unwrap();
    let outputs = IbnGradOutputs {
        dx: &dx,
        dweight: None,
        dbias: None,
    };
    let inputs = |x, running| IbnGradInputs {
        x,
        weight: &w,
        running_mean: running,
        running_var: running,
        dy: x,
    };
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let r = op.encode_backward(&mut enc, &inputs(&x, &r3), &outputs, Mode::Train);
    assert!(
        matches!(r, Err(wgnorm::Error::ShapeMismatch { .. })),
        "{r:?}"
    );
    let one = c_.upload_f32(&[1.0; 4], &[1, 4, 1]).unwrap();
    let dx1 = c_.empty(&[1, 4, 1], DType::F32).unwrap();
    let r = op.encode_backward(
        &mut enc,
        &inputs(&one, &r2),
        &IbnGradOutputs {
            dx: &dx1,
            ..outputs
        },
        Mode::Train,
    );
    assert!(
        matches!(r, Err(wgnorm::Error::InvalidParameter { .. })),
        "{r:?}"
    );
    let e = c_.empty(&[0, 4, 3], DType::F32).unwrap();
    let g = op.backward(&inputs(&e, &r2), Mode::Train).unwrap();
    assert_eq!(c_.download(&g.dweight).unwrap(), vec![0.0; 4]);
    assert_eq!(c_.download(&g.dbias).unwrap(), vec![0.0; 4]);
}
