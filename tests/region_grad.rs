//! Region Norm-B's backward on the GPU against `wgnorm_reference::grad::region_norm_b_grad`
//! (checked against finite differences there): masks at the feature size and resized, both
//! layouts, eps-sized region variances, f16, bitwise reproducibility, an empty region, an empty
//! batch and bad input.

use wgnorm::prelude::*;
use wgnorm::{RegionNormB, RegionNormBConfig, RegionNormGradOutputs, RegionNormInputs};
use wgnorm_reference::chnorm::to_nhwc;
use wgnorm_reference::grad::region_norm_b_grad;
use wgnorm_reference::research::nearest_resize;
use wgnorm_tests::{assert_close, ctx, noise, round_to};

const EPS: f32 = 1e-3;

/// One problem: NCHW `(n, c, h, w)` data and a mask of `hm x wm` per sample.
struct Problem {
    dims: (usize, usize, usize, usize),
    mask_hw: (usize, usize),
    x: Vec<f32>,
    dy: Vec<f32>,
    mask: Vec<f32>,
    params: [Vec<f32>; 4],
}

fn problem(dims: (usize, usize, usize, usize), mask_hw: (usize, usize), kind: u32) -> Problem {
    let (n, c, h, w) = dims;
    let (hm, wm) = mask_hw;
    let mask = (0..n * hm * wm)
        .map(|p| match kind {
            0 => ((p / wm + p % wm) % 3 == 0) as u8 as f32,
            // Everything outside: the inside region is empty.
            _ => 0.0,
        })
        .collect();
    Problem {
        dims,
        mask_hw,
        x: noise(201, n * c * h * w)
            .iter()
            .map(|e| 0.05 * e + 1.0)
            .collect(),
        dy: noise(202, n * c * h * w),
        mask,
        params: [noise(203, c), noise(204, c), noise(205, c), noise(206, c)],
    }
}

fn layout_data(p: &Problem, v: &[f32], layout: Layout) -> Vec<f32> {
    let (n, c, h, w) = p.dims;
    match layout {
        Layout::Nchw => v.to_vec(),
        Layout::Nhwc => {
            let d: Vec<f64> = v.iter().map(|&e| e as f64).collect();
            to_nhwc(&d, n, c, h * w).iter().map(|&e| e as f32).collect()
        }
    }
}

/// Downloaded [dx (NCHW order), dgamma_f, dgamma_b, dbeta_f, dbeta_b].
fn run(p: &Problem, layout: Layout, dtype: DType) -> Vec<Vec<f32>> {
    let c_ = ctx();
    let (n, c, h, w) = p.dims;
    let (hm, wm) = p.mask_hw;
    let op = RegionNormB::new(
        c_,
        RegionNormBConfig {
            eps: EPS,
            layout,
            dtype,
        },
    )
    .unwrap();
    let (xs, ms) = match layout {
        Layout::Nchw => (vec![n, c, h, w], vec![n, 1, hm, wm]),
        Layout::Nhwc => (vec![n, h, w, c], vec![n, hm, wm, 1]),
    };
    let x = c_
        .upload(&layout_data(p, &p.x, layout), &xs, dtype)
        .unwrap();
    let dy = c_
        .upload(&layout_data(p, &p.dy, layout), &xs, dtype)
        .unwrap();
    let mask = c_.upload_f32(&p.mask, &ms).unwrap();
    let f = |v: &[f32]| c_.upload_f32(v, &[c]).unwrap();
    let [gf, gb, bf, bb] = [
        f(&p.params[0]),
        f(&p.params[1]),
        f(&p.params[2]),
        f(&p.params[3]),
    ];
    let inputs = RegionNormInputs {
        x: &x,
        mask: &mask,
        gamma_f: &gf,
        gamma_b: &gb,
        beta_f: &bf,
        beta_b: &bb,
    };
    let g = op.backward(&inputs, &dy).unwrap();
    let mut out: Vec<Vec<f32>> = g.iter().map(|t| c_.download(t).unwrap()).collect();
    if layout == Layout::Nhwc {
        let hw = h * w;
        let dx = out[0].clone();
        for i in 0..n {
            for k in 0..hw {
                for ch in 0..c {
                    out[0][(i * c + ch) * hw + k] = dx[(i * hw + k) * c + ch];
                }
            }
        }
    }
    out
}

fn check(p: &Problem, layout: Layout, dtype: DType, tol: f64) {
    let (n, c, h, w) = p.dims;
    let (hm, wm) = p.mask_hw;
    let got = run(p, layout, dtype);
    let mask = nearest_resize(&round_to(DType::F32, &p.mask), n, hm, wm, h, w);
    let f = |v: &[f32]| round_to(DType::F32, v);
    let want = region_norm_b_grad(
        &round_to(dtype, &p.x),
        (n, c, h * w),
        &mask,
        (&f(&p.params[0]), &f(&p.params[1])),
        &round_to(dtype, &p.dy),
        EPS as f64,
    );
    let what = format!("region_norm_b backward {:?} {layout:?} {dtype:?}", p.dims);
    let wants = [
        &want.dx,
        &want.dgamma_f,
        &want.dgamma_b,
        &want.dbeta_f,
        &want.dbeta_b,
    ];
    let names = ["dx", "dgamma_f", "dgamma_b", "dbeta_f", "dbeta_b"];
    for ((name, g), w) in names.iter().zip(&got).zip(wants) {
        assert_close(&format!("{what} {name}"), g, w, tol, tol);
    }
}

#[test]
fn region_norm_b_backward_matches_reference() {
    for layout in [Layout::Nchw, Layout::Nhwc] {
        // A mask at the feature size, and one twice as large (resized by nearest neighbour).
        check(&problem((2, 5, 4, 6), (4, 6), 0), layout, DType::F32, 2e-4);
        check(&problem((3, 4, 5, 3), (10, 6), 0), layout, DType::F32, 2e-4);
    }
    // An empty inside region: everything is the outside slot.
    check(
        &problem((2, 3, 4, 4), (4, 4), 1),
        Layout::Nchw,
        DType::F32,
        2e-4,
    );
}

#[test]
fn region_norm_b_backward_f16() {
    check(
        &problem((2, 8, 6, 6), (6, 6), 0),
        Layout::Nchw,
        DType::F16,
        3e-2,
    );
}

#[test]
fn region_norm_b_backward_is_bitwise_reproducible() {
    let p = problem((2, 5, 4, 6), (4, 6), 0);
    let a = run(&p, Layout::Nchw, DType::F32);
    let b = run(&p, Layout::Nchw, DType::F32);
    let bits = |e: &[f32]| e.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(bits(x), bits(y));
    }
}

/// A dy of the wrong shape, a parameter gradient of the wrong length and dx aliasing x are
/// refused; an empty batch zeroes the parameter gradients.
#[test]
fn region_norm_b_backward_refuses_bad_input_and_handles_empty() {
    let c_ = ctx();
    let op = RegionNormB::new(c_, Default::default()).unwrap();
    let x = c_.upload_f32(&noise(1, 24), &[1, 2, 3, 4]).unwrap();
    let mask = c_.upload_f32(&[1.0, 0.0, 0.0, 1.0], &[1, 1, 2, 2]).unwrap();
    let p = c_.upload_f32(&[0.1, 0.2], &[2]).unwrap();
    let p3 = c_.upload_f32(&[0.1, 0.2, 0.3], &[3]).unwrap();
    let dy_bad = c_.upload_f32(&noise(2, 24), &[1, 2, 4, 3]).unwrap();
    let dx = c_.empty(&[1, 2, 3, 4], DType::F32).unwrap();
    let inputs = |x| RegionNormInputs {
        x,
        mask: &mask,
        gamma_f: &p,
        gamma_b: &p,
        beta_f: &p,
        beta_b: &p,
    };
    let outputs = |dx, dg| RegionNormGradOutputs {
        dx,
        dgamma_f: dg,
        dgamma_b: None,
        dbeta_f: None,
        dbeta_b: None,
    };
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let r = op.encode_backward(&mut enc, &inputs(&x), &dy_bad, &outputs(&dx, None));
    assert!(
        matches!(r, Err(wgnorm::Error::ShapeMismatch { .. })),
        "{r:?}"
    );
    let r = op.encode_backward(&mut enc, &inputs(&x), &x, &outputs(&dx, Some(&p3)));
    assert!(
        matches!(r, Err(wgnorm::Error::ShapeMismatch { .. })),
        "{r:?}"
    );
    let r = op.encode_backward(&mut enc, &inputs(&x), &dx, &outputs(&x, None));
    assert!(
        matches!(r, Err(wgnorm::Error::AliasedBuffers { .. })),
        "{r:?}"
    );
    let e = c_.empty(&[0, 2, 3, 4], DType::F32).unwrap();
    let empty_mask = c_.empty(&[0, 1, 2, 2], DType::F32).unwrap();
    let g = op
        .backward(
            &RegionNormInputs {
                mask: &empty_mask,
                ..inputs(&e)
            },
            &e,
        )
        .unwrap();
    for t in &g[1..] {
        assert_eq!(c_.download(t).unwrap(), vec![0.0; 2]);
    }
}
