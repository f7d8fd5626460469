//! bf16 storage for the row norms and their fused adds: against the f64 reference on the values
//! bf16 holds, round-to-nearest-even on store, NaN kept to its row, and typed refusals where bf16
//! is not implemented.

use wgnorm::prelude::*;
use wgnorm::{AddRmsNormInputs, Error, LayerNormGradInputs};
use wgnorm_reference::rownorm::{layer_norm, rms_norm};
use wgnorm_tests::{assert_close, ctx, noise, round_to};

const BF: DType = DType::BF16;

/// Relative half-ulp of bf16 (8 significant bits) is 2^-8; f32 arithmetic adds a few f32 ulps.
const RTOL: f64 = 4.5e-3;
const ATOL: f64 = 1e-3;

#[test]
fn layer_norm_and_rms_norm_in_bf16_match_the_reference() {
    let c = ctx();
    for (rows, n, offset) in [
        (3, 4, 0.0),
        (33, 64, 100.0),
        (5, 1000, 0.0),
        (4, 4096, 1e3),
        (1, 65536, 0.0),
    ] {
        let x: Vec<f32> = noise(n as u64, rows * n)
            .iter()
            .map(|v| 3.0 * v + offset)
            .collect();
        let w: Vec<f32> = noise(7, n).iter().map(|v| 1.0 + 0.5 * v).collect();
        let b = noise(8, n);
        let (xd, wd, bd) = (round_to(BF, &x), round_to(BF, &w), round_to(BF, &b));
        let xt = c.upload(&x, &[rows, n], BF).unwrap();
        let (wt, bt) = (
            c.upload(&w, &[n], BF).unwrap(),
            c.upload(&b, &[n], BF).unwrap(),
        );

        let ln = LayerNorm::new(
            c,
            LayerNormConfig {
                dtype: BF,
                ..Default::default()
            },
        )
        .unwrap();
        let out = ln
            .forward(&LayerNormInputs {
                x: &xt,
                weight: Some(&wt),
                bias: Some(&bt),
            })
            .unwrap();
        assert_eq!(out.y.dtype(), BF);
        let want = layer_norm(&xd, n, Some(&wd), Some(&bd), 1e-5);
        assert_close(
            &format!("ln {rows}x{n}"),
            &c.download(&out.y).unwrap(),
            &want.y,
            ATOL,
            RTOL,
        );
        // Statistics are f32: as accurate as for f32 storage.
        assert_close(
            &format!("ln mean {rows}x{n}"),
            &c.download(&out.mean).unwrap(),
            &want.mean,
            1e-5,
            1e-5,
        );

        let cfg = RmsNormConfig {
            dtype: BF,
            weight_offset: 0.5,
            ..Default::default()
        };
        let rms = RmsNorm::new(c, cfg).unwrap();
        let out = rms
            .forward(&RmsNormInputs {
                x: &xt,
                weight: Some(&wt),
            })
            .unwrap();
        let want = rms_norm(&xd, n, Some(&wd), 0.5, 1e-5);
        assert_close(
            &format!("rms {rows}x{n}"),
            &c.download(&out.y).unwrap(),
            &want.y,
            ATOL,
            RTOL,
        );
    }
}

#[test]
fn stores_round_to_nearest_even() {
    // RMSNorm of a constant row with a zero weight gives y = weight_offset exactly in f32; the
    // store then rounds it to bf16. Halfway cases go to the even neighbour, as `half` rounds.
    let c = ctx();
    let x = c.upload(&[2.0; 4], &[1, 4], BF).unwrap();
    let w = c.upload(&[0.0; 4], &[4], BF).unwrap();
    let h = 2f32.powi(-8); // half an ulp of bf16 at 1.0
    for offset in [
        1.0 + h,
        1.0 + 3.0 * h,
        1.0 + h + h / 16.0,
        -(1.0 + 3.0 * h),
        3.0e38,
    ] {
        let cfg = RmsNormConfig {
            dtype: BF,
            eps: 0.0,
            weight_offset: offset,
            ..Default::default()
        };
        let rms = RmsNorm::new(c, cfg).unwrap();
        let y = c
            .download(
                &rms.forward(&RmsNormInputs {
                    x: &x,
                    weight: Some(&w),
                })
                .unwrap()
                .y,
            )
            .unwrap();
        let want = half::bf16::from_f32(offset).to_f32();
        assert_eq!(y, vec![want; 4], "offset {offset}");
    }
}

#[test]
fn fused_add_stores_the_rounded_sum_and_nan_stays_in_its_row() {
    let c = ctx();
    let (rows, n) = (4usize, 256usize);
    let mut x = noise(1, rows * n);
    x[n + 5] = f32::NAN; // row 1
    let r = noise(2, rows * n);
    let (xt, rt) = (
        c.upload(&x, &[rows, n], BF).unwrap(),
        c.upload(&r, &[rows, n], BF).unwrap(),
    );
    let rms = RmsNorm::new(
        c,
        RmsNormConfig {
            dtype: BF,
            ..Default::default()
        },
    )
    .unwrap();
    let (y, sum) = rms
        .forward_add(&AddRmsNormInputs {
            x: &xt,
            residual: &rt,
            weight: None,
        })
        .unwrap();
    let (xd, rd) = (round_to(BF, &x), round_to(BF, &r));
    let want_sum: Vec<f32> = xd
        .iter()
        .zip(&rd)
        .map(|(a, b)| half::bf16::from_f64(a + b).to_f32())
        .collect();
    let got_sum = c.download(&sum).unwrap();
    for (i, (g, w)) in got_sum.iter().zip(&want_sum).enumerate() {
        assert!(
            g == w || (g.is_nan() && w.is_nan()),
            "sum[{i}] = {g}, want {w}"
        );
    }
    let y = c.download(&y).unwrap();
    for (row, vals) in y.chunks(n).enumerate() {
        assert_eq!(vals.iter().all(|v| v.is_nan()), row == 1, "row {row}");
        assert!(row == 1 || vals.iter().all(|v| v.is_finite()));
    }
    let exact: Vec<f64> = xd.iter().zip(&rd).map(|(a, b)| a + b).collect();
    let want = rms_norm(&exact[2 * n..], n, None, 0.0, 1e-5);
    assert_close("add rms rows 2-3", &y[2 * n..], &want.y, ATOL, RTOL);
}

#[test]
fn bf16_is_refused_where_it_is_not_implemented() {
    let c = ctx();
    let unsupported = |e: Error| {
        assert!(
            matches!(
                e,
                Error::UnsupportedDType {
                    dtype: DType::BF16,
                    ..
                }
            ),
            "{e}"
        )
    };
    // Rows whose length is not a multiple of 4: bf16 has no element-wise access.
    let x = c.upload(&[1.0; 6], &[2, 3], BF).unwrap();
    let ln = LayerNorm::new(
        c,
        LayerNormConfig {
            dtype: BF,
            ..Default::default()
        },
    )
    .unwrap();
    unsupported(
        ln.forward(&LayerNormInputs {
            x: &x,
            weight: None,
            bias: None,
        })
        .err()
        .unwrap(),
    );
    // The batch family.
    let x = c.upload(&[1.0; 32], &[2, 4, 2, 2], BF).unwrap();
    let gn = GroupNorm::new(
        c,
        GroupNormConfig {
            dtype: BF,
            ..GroupNormConfig::new(2)
        },
    );
    match gn {
        Err(e) => unsupported(e),
        Ok(gn) => unsupported(
            gn.forward(&NormInputs {
                x: &x,
                weight: None,
                bias: None,
            })
            .err()
            .unwrap(),
        ),
    }
    // The backward passes.
    let x = c.upload(&[1.0, 2.0, 3.0, 5.0], &[1, 4], BF).unwrap();
    let g = ln.backward(&LayerNormGradInputs {
        x: &x,
        weight: None,
        bias: None,
        dy: &x,
        mean: None,
        rstd: None,
    });
    unsupported(g.err().unwrap());
}
