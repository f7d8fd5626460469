//! EvoNorm-S0's backward on the GPU against `wgnorm_reference::grad::evonorm_s0_grad` (checked
//! against finite differences there): both layouts, an offset with eps-sized group variances,
//! f16, bitwise reproducibility, an empty batch and bad input.

use wgnorm::prelude::*;
use wgnorm::{EvoNormS0, EvoNormS0Config, EvoNormS0GradOutputs, NormGradInputs};
use wgnorm_reference::chnorm::to_nhwc;
use wgnorm_reference::grad::evonorm_s0_grad;
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
    let dx = d(&g.dx);
    let (n, c, hw) = dims;
    let dx = match layout {
        Layout::Nchw => dx,
        Layout::Nhwc => {
            let mut out = vec![0.0; dx.len()];
            for i in 0..n {
                for k in 0..hw {
                    for ch in 0..c {
                        out[(i * c + ch) * hw + k] = dx[(i * hw + k) * c + ch];
                    }
                }
            }
            out
        }
    };
    [dx, d(&g.dv), d(&g.dweight), d(&g.dbias)]
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
