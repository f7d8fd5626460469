//! EvoNorm-S0's and EvoNorm-B0's backward on the GPU against `wgnorm_reference::grad`'s
//! `evonorm_s0_grad` and `evonorm_b0_grad` (checked against finite differences there): both
//! layouts, an offset with eps-sized variances, f16, bitwise reproducibility, an empty batch and
//! bad input; for B0 also training and inference, the tie rule of the max and a NaN slab.

use wgnorm::prelude::*;
use wgnorm::{
    EvoNormB0, EvoNormB0Config, EvoNormB0GradOutputs, EvoNormB0Inputs, EvoNormS0, EvoNormS0Config,
    EvoNormS0GradOutputs, Mode, NormGradInputs,
};
use wgnorm_reference::chnorm::to_nhwc;
use wgnorm_reference::grad::{evonorm_b0_grad, evonorm_s0_grad, EvoB0Variance};
use wgnorm_tests::{assert_close, ctx, noise, round_to};

/// `v` NCHW `(n, c, hw)` in `layout`'s order.
fn in_layout(v: &[f32], (n, c, hw): (usize, usize, usize), layout: Layout) -> Vec<f32> {
    match layout {
        Layout::Nchw => v.to_vec(),
        Layout::Nhwc => {
            let d: Vec<f64> = v.iter().map(|&e| e as f64).collect();
            to_nhwc(&d, n, c, hw).iter().map(|&e| e as f32).collect()
        }
    }
}

fn shape((n, c, hw): (usize, usize, usize), layout: Layout) -> Vec<usize> {
    match layout {
        Layout::Nchw => vec![n, c, hw],
        Layout::Nhwc => vec![n, hw, c],
    }
}

/// Downloaded (dx in NCHW order, dv, dweight, dbias).
fn run(
    dims: (usize, usize, usize),
    groups: usize,
    layout: Layout,
    dtype: DType,
    data: [&[f32]; 4],
) -> [Vec<f32>; 4] {
    let c_ = ctx();
    let [x, dy, v, w] = data;
    let op = EvoNormS0::new(
        c_,
        EvoNormS0Config {
            groups,
            eps: 1e-3,
            layout,
            dtype,
        },
    )
    .unwrap();
    let sh = shape(dims, layout);
    let xt = c_.upload(&in_layout(x, dims, layout), &sh, dtype).unwrap();
    let dyt = c_.upload(&in_layout(dy, dims, layout), &sh, dtype).unwrap();
    let (vt, wt) = (
        c_.upload_f32(v, &[v.len()]).unwrap(),
        c_.upload_f32(w, &[w.len()]).unwrap(),
    );
    let g = op
        .backward(
            &NormGradInputs {
                x: &xt,
                weight: Some(&wt),
                bias: None,
                dy: &dyt,
                saved: None,
            },
            &vt,
        )
        .unwrap();
    let d = |t: &Tensor| c_.download(t).unwrap();
    [
        to_nchw(&d(&g.dx), dims, layout),
        d(&g.dv),
        d(&g.dweight),
        d(&g.dbias),
    ]
}

/// `v` in `layout`'s order back to NCHW.
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

fn check(dims: (usize, usize, usize), groups: usize, layout: Layout, dtype: DType, tol: f64) {
    let (n, c, hw) = dims;
    // Group variances about eps (values 0.05 apart) at an offset of 2.
    let x: Vec<f32> = noise(141, n * c * hw)
        .iter()
        .map(|e| 0.05 * e + 2.0)
        .collect();
    let dy = noise(142, x.len());
    let (v, w) = (noise(143, c), noise(144, c));
    let got = run(dims, groups, layout, dtype, [&x, &dy, &v, &w]);
    let f = |e: &[f32]| round_to(DType::F32, e);
    let want = evonorm_s0_grad(
        &round_to(dtype, &x),
        (n, c, hw, groups),
        (&f(&v), &f(&w)),
        &round_to(dtype, &dy),
        1e-3,
    );
    let what = format!("evonorm_s0 backward {dims:?} g{groups} {layout:?} {dtype:?}");
    for (name, g, w) in [
        ("dx", &got[0], &want.dx),
        ("dv", &got[1], &want.dv),
        ("dweight", &got[2], &want.dweight),
        ("dbias", &got[3], &want.dbias),
    ] {
        assert_close(&format!("{what} {name}"), g, w, tol, tol);
    }
}

#[test]
fn evonorm_s0_backward_matches_reference_both_layouts() {
    for layout in [Layout::Nchw, Layout::Nhwc] {
        check((3, 8, 10), 4, layout, DType::F32, 2e-4);
        check((2, 6, 7), 1, layout, DType::F32, 2e-4);
    }
}

#[test]
fn evonorm_s0_backward_f16() {
    check((2, 8, 16), 2, Layout::Nchw, DType::F16, 3e-2);
}

#[test]
fn evonorm_s0_backward_is_bitwise_reproducible() {
    let (x, dy, v, w) = (noise(1, 240), noise(2, 240), noise(3, 8), noise(4, 8));
    let a = run((3, 8, 10), 4, Layout::Nchw, DType::F32, [&x, &dy, &v, &w]);
    let b = run((3, 8, 10), 4, Layout::Nchw, DType::F32, [&x, &dy, &v, &w]);
    let bits = |e: &[f32]| e.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(bits(p), bits(q));
    }
}

/// Saved statistics and a v of the wrong length are refused; an empty batch zeroes the
/// parameter gradients.
#[test]
fn evonorm_s0_backward_refuses_bad_input_and_handles_empty() {
    let c_ = ctx();
    let op = EvoNormS0::new(
        c_,
        EvoNormS0Config {
            groups: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let x = c_.upload_f32(&noise(5, 24), &[2, 4, 3]).unwrap();
    let saved = c_.upload_f32(&[0.0; 8], &[4, 2]).unwrap();
    let (v, v_bad) = (
        c_.upload_f32(&[0.5; 4], &[4]).unwrap(),
        c_.upload_f32(&[0.5; 3], &[3]).unwrap(),
    );
    let dx = c_.empty(&[2, 4, 3], DType::F32).unwrap();
    let inputs = |saved| NormGradInputs {
        x: &x,
        weight: None,
        bias: None,
        dy: &x,
        saved,
    };
    let outputs = EvoNormS0GradOutputs {
        dx: &dx,
        dv: None,
        dweight: None,
        dbias: None,
    };
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let r = op.encode_backward(&mut enc, &inputs(Some(&saved)), &v, &outputs);
    assert!(
        matches!(r, Err(wgnorm::Error::InvalidParameter { .. })),
        "{r:?}"
    );
    let r = op.encode_backward(&mut enc, &inputs(None), &v_bad, &outputs);
    assert!(
        matches!(r, Err(wgnorm::Error::ShapeMismatch { .. })),
        "{r:?}"
    );
    let e = c_.empty(&[0, 4, 3], DType::F32).unwrap();
    let g = op
        .backward(
            &NormGradInputs {
                x: &e,
                dy: &e,
                ..inputs(None)
            },
            &v,
        )
        .unwrap();
    assert_eq!(c_.download(&g.dv).unwrap(), vec![0.0; 4]);
    assert_eq!(c_.download(&g.dbias).unwrap(), vec![0.0; 4]);
}

/// EvoNorm-B0's inputs: x, dy, v, weight, running_var (NCHW order).
type B0Data<'a> = [&'a [f32]; 5];

/// Downloaded (dx in NCHW order, dweight, dbias, dv) of EvoNorm-B0 (eps 1e-3).
fn run_b0(
    dims: (usize, usize, usize),
    (layout, dtype, mode): (Layout, DType, Mode),
    data: B0Data,
) -> [Vec<f32>; 4] {
    let c_ = ctx();
    let [x, dy, v, w, rv] = data;
    let op = EvoNormB0::new(
        c_,
        EvoNormB0Config {
            eps: 1e-3,
            layout,
            dtype,
            ..Default::default()
        },
    )
    .unwrap();
    let sh = shape(dims, layout);
    let up = |e: &[f32]| c_.upload(&in_layout(e, dims, layout), &sh, dtype).unwrap();
    let p = |e: &[f32]| c_.upload_f32(e, &[e.len()]).unwrap();
    let (xt, dyt, vt, wt, rvt) = (up(x), up(dy), p(v), p(w), p(rv));
    let bias = p(&vec![0.5; v.len()]);
    let inputs = EvoNormB0Inputs {
        x: &xt,
        weight: &wt,
        bias: &bias,
        v: &vt,
        running_var: &rvt,
    };
    let g = op.backward(&inputs, &dyt, mode).unwrap();
    let d = |t: &Tensor| c_.download(t).unwrap();
    assert_eq!(d(&rvt), rv, "the backward does not write running_var");
    let dx = to_nchw(&d(&g.dx), dims, layout);
    [dx, d(&g.dweight), d(&g.dbias), d(&g.dv)]
}

/// x 0.05 apart about 0.3 (variances about eps), v of both signs (both branches of the max).
fn b0_data(dims: (usize, usize, usize)) -> [Vec<f32>; 5] {
    let (n, c, hw) = dims;
    let x: Vec<f32> = noise(151, n * c * hw)
        .iter()
        .map(|e| 0.05 * e + 0.3)
        .collect();
    let v = noise(153, c).iter().map(|e| 0.2 * e).collect();
    let rv = noise(155, c).iter().map(|e| 0.002 * (e + 1.5)).collect();
    [x, noise(152, n * c * hw), v, noise(154, c), rv]
}

fn check_b0(dims: (usize, usize, usize), how: (Layout, DType, Mode), data: B0Data, tol: f64) {
    let (n, c, hw) = dims;
    let got = run_b0(dims, how, data);
    let [x, dy, v, w, rv] = data;
    let f = |e: &[f32]| round_to(DType::F32, e);
    let rv = f(rv);
    let var_b = match how.2 {
        Mode::Train => EvoB0Variance::Batch,
        Mode::Infer => EvoB0Variance::Running(&rv),
    };
    let want = evonorm_b0_grad(
        &round_to(how.1, x),
        (n, c, hw),
        (&f(v), &f(w)),
        var_b,
        &round_to(how.1, dy),
        1e-3,
    );
    let what = format!("evonorm_b0 backward {dims:?} {how:?}");
    for (name, g, w) in [
        ("dx", &got[0], &want.dx),
        ("dweight", &got[1], &want.dweight),
        ("dbias", &got[2], &want.dbias),
        ("dv", &got[3], &want.dv),
    ] {
        assert_close(&format!("{what} {name}"), g, w, tol, tol);
    }
}

#[test]
fn evonorm_b0_backward_matches_reference_both_layouts_and_modes() {
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for mode in [Mode::Train, Mode::Infer] {
            for dims in [(3, 6, 10), (2, 5, 300)] {
                let d = b0_data(dims);
                let data = [&d[0][..], &d[1], &d[2], &d[3], &d[4]];
                check_b0(dims, (layout, DType::F32, mode), data, 5e-4);
            }
        }
    }
}

#[test]
fn evonorm_b0_backward_f16() {
    let dims = (2, 8, 16);
    let d = b0_data(dims);
    let data = [&d[0][..], &d[1], &d[2], &d[3], &d[4]];
    check_b0(dims, (Layout::Nchw, DType::F16, Mode::Train), data, 3e-2);
}

/// One sample in training with v = 0: the batch and the instance denominators are the same
/// number, an exact tie at every element; each branch takes half of the gradient (dv is half
/// the instance branch's), as PyTorch's and JAX's `maximum`.
#[test]
fn evonorm_b0_backward_splits_ties_evenly() {
    let dims = (1, 4, 12);
    let d = b0_data(dims);
    let v = [0.0f32; 4];
    let data = [&d[0][..], &d[1], &v, &d[3], &d[4]];
    check_b0(dims, (Layout::Nchw, DType::F32, Mode::Train), data, 5e-4);
    let dv = run_b0(dims, (Layout::Nchw, DType::F32, Mode::Train), data)[3].clone();
    assert!(dv.iter().all(|e| *e != 0.0), "dv at a tie: {dv:?}");
}

#[test]
fn evonorm_b0_backward_is_bitwise_reproducible() {
    let dims = (3, 6, 10);
    let d = b0_data(dims);
    let data = [&d[0][..], &d[1], &d[2], &d[3], &d[4]];
    let how = (Layout::Nhwc, DType::F32, Mode::Train);
    let (a, b) = (run_b0(dims, how, data), run_b0(dims, how, data));
    let bits = |e: &[f32]| e.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(bits(p), bits(q));
    }
}

/// Inference: a NaN in one (sample, channel) makes that slab's dx and its channel's parameter
/// gradients NaN, nothing else.
#[test]
fn evonorm_b0_backward_keeps_nan_in_its_slab() {
    let (n, c, hw) = (2, 3, 8);
    let mut d = b0_data((n, c, hw));
    d[0][(c + 1) * hw + 3] = f32::NAN; // sample 1, channel 1
    let data = [&d[0][..], &d[1], &d[2], &d[3], &d[4]];
    let got = run_b0((n, c, hw), (Layout::Nchw, DType::F32, Mode::Infer), data);
    for (i, e) in got[0].iter().enumerate() {
        let slab = i / hw;
        assert_eq!(e.is_nan(), slab == c + 1, "dx[{i}] = {e}");
    }
    for (name, g) in [("dweight", &got[1]), ("dv", &got[3])] {
        let nan: Vec<bool> = g.iter().map(|e| e.is_nan()).collect();
        assert_eq!(nan, [false, true, false], "{name}: {g:?}");
    }
}

/// A v of the wrong length, dx aliasing x and a half-precision parameter are refused before
/// anything is recorded; an empty batch zeroes the parameters' gradients.
#[test]
fn evonorm_b0_backward_refuses_bad_input_and_handles_empty() {
    let c_ = ctx();
    let op = EvoNormB0::new(c_, EvoNormB0Config::default()).unwrap();
    let x = c_.upload_f32(&noise(5, 24), &[2, 4, 3]).unwrap();
    let p = |len: usize| c_.upload_f32(&vec![0.5; len], &[len]).unwrap();
    let (w, b, v, v_bad, rv) = (p(4), p(4), p(4), p(3), p(4));
    let w16 = c_.upload(&[0.5; 4], &[4], DType::F16).unwrap();
    let dx = c_.empty(&[2, 4, 3], DType::F32).unwrap();
    let inputs = |x, w, v| EvoNormB0Inputs {
        x,
        weight: w,
        bias: &b,
        v,
        running_var: &rv,
    };
    let outputs = |dx| EvoNormB0GradOutputs {
        dx,
        dweight: None,
        dbias: None,
        dv: None,
    };
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let train = Mode::Train;
    let r = op.encode_backward(&mut enc, &inputs(&x, &w, &v_bad), &x, &outputs(&dx), train);
    assert!(
        matches!(r, Err(wgnorm::Error::ShapeMismatch { .. })),
        "{r:?}"
    );
    let r = op.encode_backward(&mut enc, &inputs(&x, &w16, &v), &x, &outputs(&dx), train);
    assert!(
        matches!(r, Err(wgnorm::Error::DTypeMismatch { .. })),
        "{r:?}"
    );
    let r = op.encode_backward(&mut enc, &inputs(&x, &w, &v), &x, &outputs(&x), train);
    assert!(r.is_err(), "dx aliasing x: {r:?}");
    let e = c_.empty(&[0, 4, 3], DType::F32).unwrap();
    let g = op.backward(&inputs(&e, &w, &v), &e, train).unwrap();
    for t in [&g.dweight, &g.dbias, &g.dv] {
        assert_eq!(c_.download(t).unwrap(), vec![0.0; 4]);
    }
}
