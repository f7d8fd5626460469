//! LayerNorm / RMSNorm backward on the GPU against the f64 reference gradients (themselves
//! checked against finite differences in `wgnorm-reference`): row lengths that take the scalar
//! and vec4 paths, f16, the fused add with dsum, saved statistics, eps-sensitive rows, bitwise
//! reproducibility, empty inputs and bad input.

use wgnorm::prelude::*;
use wgnorm::{
    AddLayerNormGradInputs, Error, LayerNormGradInputs, LayerNormGradOutputs, RmsNormGradInputs,
    RmsNormGradOutputs,
};
use wgnorm_reference::grad;
use wgnorm_tests::{assert_close, ctx, noise, round_to};

fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (2e-5, 2e-4),
        DType::F16 => (4e-3, 1e-2),
        DType::BF16 => unreachable!("bf16 is for the forward row norms only"),
    }
}

/// `x` rows with a spread of `spread` around `offset`.
fn rows_of(seed: u64, rows: usize, n: usize, spread: f32, offset: f32) -> Vec<f32> {
    noise(seed, rows * n)
        .iter()
        .map(|v| v * spread + offset)
        .collect()
}

struct LnCase {
    rows: usize,
    n: usize,
    dtype: DType,
    spread: f32,
    offset: f32,
    eps: f32,
    affine: bool,
    saved: bool,
}

fn run_layer_norm(c: LnCase) {
    run_layer_norm_within(c, None);
}

/// [`run_layer_norm`], with every gradient within `rel` of its largest reference magnitude
/// when given (instead of the dtype's tolerances).
fn run_layer_norm_within(c: LnCase, rel: Option<f64>) {
    let ctx = ctx();
    let (rows, n, dtype) = (c.rows, c.n, c.dtype);
    let x = rows_of(n as u64, rows, n, c.spread, c.offset);
    let (w, dy) = (noise(7, n), noise(8, rows * n));
    let (xd, wd, dyd) = (
        round_to(dtype, &x),
        round_to(dtype, &w),
        round_to(dtype, &dy),
    );
    let ln = LayerNorm::new(
        ctx,
        LayerNormConfig {
            eps: c.eps,
            dtype,
            ..Default::default()
        },
    )
    .unwrap();
    let up = |v: &[f32], shape: &[usize]| ctx.upload(v, shape, dtype).unwrap();
    let (xt, wt, dyt) = (up(&x, &[rows, n]), up(&w, &[n]), up(&dy, &[rows, n]));
    let fwd = ln
        .forward(&LayerNormInputs {
            x: &xt,
            weight: c.affine.then_some(&wt),
            bias: None,
        })
        .unwrap();
    let inputs = LayerNormGradInputs {
        x: &xt,
        weight: c.affine.then_some(&wt),
        bias: None,
        dy: &dyt,
        mean: c.saved.then_some(&fwd.mean),
        rstd: c.saved.then_some(&fwd.rstd),
    };
    let g = ln.backward(&inputs).unwrap();
    let want = grad::layer_norm_grad(
        &xd,
        n,
        c.affine.then_some(wd.as_slice()),
        &dyd,
        c.eps as f64,
    );
    let what = format!(
        "ln {rows}x{n} {dtype} spread {} offset {} eps {} affine {} saved {}",
        c.spread, c.offset, c.eps, c.affine, c.saved
    );
    let (atol, rtol) = rel.map_or(tol(dtype), |r| (r, 0.0));
    // dx scales with rstd: compare relative to its largest magnitude.
    let scale = want.dx.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert_close(
        &format!("{what} dx"),
        &ctx.download(&g.dx).unwrap(),
        &want.dx,
        atol * scale,
        rtol,
    );
    if c.affine {
        let dw_scale = want.dweight.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(
            &format!("{what} dweight"),
            &ctx.download(&g.dweight).unwrap(),
            &want.dweight,
            atol * dw_scale,
            rtol,
        );
        let db_scale = want.dbias.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(
            &format!("{what} dbias"),
            &ctx.download(&g.dbias).unwrap(),
            &want.dbias,
            atol * db_scale.max(rows as f64),
            rtol,
        );
    }
}

#[test]
fn layer_norm_backward_row_lengths_and_dtypes() {
    for (rows, n) in [(3, 1), (4, 7), (5, 64), (3, 1001), (6, 4096), (2, 70_000)] {
        for dtype in [DType::F32, DType::F16] {
            for (affine, saved) in [(true, false), (false, true), (true, true)] {
                run_layer_norm(LnCase {
                    rows,
                    n,
                    dtype,
                    spread: 1.0,
                    offset: 0.0,
                    eps: 1e-5,
                    affine,
                    saved,
                });
            }
        }
    }
}

#[test]
fn layer_norm_backward_eps_and_offsets_matter() {
    // Variances at and below eps (eps up to 1e-2), and a common offset of 1e3 with unit spread.
    for (spread, offset, eps) in [(0.01, 0.0, 1e-4), (0.05, 2.0, 1e-2), (1.0, 1e3, 1e-5)] {
        run_layer_norm(LnCase {
            rows: 5,
            n: 96,
            dtype: DType::F32,
            spread,
            offset,
            eps,
            affine: true,
            saved: false,
        });
    }
}

/// A common offset of 1e3 to 1e4 at spreads of 1 and less costs the gradients no precision:
/// centred values are (s - shift) - delta, never s minus an f32-rounded mean (which gave dweight
/// errors of 3e-4 at offset 2000), with and without the forward's saved statistics.
#[test]
fn layer_norm_backward_at_large_offsets_is_as_accurate_as_centred() {
    for (offset, spread) in [(1e3, 1.0), (2e3, 1.0), (1e4, 1.0), (1e3, 0.1), (1e4, 0.25)] {
        for (n, saved) in [(128, false), (97, true), (256, true)] {
            run_layer_norm_within(
                LnCase {
                    rows: 6,
                    n,
                    dtype: DType::F32,
                    spread,
                    offset,
                    eps: 1e-5,
                    affine: true,
                    saved,
                },
                Some(1e-5),
            );
        }
    }
}

#[test]
fn rms_norm_backward_with_offset_fused_add_and_saved_rstd() {
    let ctx = ctx();
    for (rows, n, dtype, offset, fused) in [
        (4, 768, DType::F32, 0.0, false),
        (3, 1001, DType::F32, 1.0, false),
        (8, 1024, DType::F16, 0.0, false),
        (4, 768, DType::F32, 0.0, true),
        (5, 9, DType::F32, 1.0, true),
    ] {
        let x = rows_of(1, rows, n, 1.0, 0.0);
        let (res, w, dy, dsum) = (
            noise(2, rows * n),
            noise(3, n),
            noise(4, rows * n),
            noise(5, rows * n),
        );
        let up = |v: &[f32], shape: &[usize]| ctx.upload(v, shape, dtype).unwrap();
        let (xt, rt, wt, dyt, dst) = (
            up(&x, &[rows, n]),
            up(&res, &[rows, n]),
            up(&w, &[n]),
            up(&dy, &[rows, n]),
            up(&dsum, &[rows, n]),
        );
        let rms = RmsNorm::new(
            ctx,
            RmsNormConfig {
                weight_offset: offset,
                dtype,
                ..Default::default()
            },
        )
        .unwrap();
        // The saved rstd of the forward on the same (summed) rows.
        let s: Vec<f32> = if fused {
            x.iter()
                .zip(&res)
                .map(|(a, b)| round_to(dtype, &[*a])[0] as f32 + round_to(dtype, &[*b])[0] as f32)
                .collect()
        } else {
            x.clone()
        };
        let st = ctx.upload(&s, &[rows, n], DType::F32).unwrap();
        let saved = RmsNorm::new(ctx, RmsNormConfig::default())
            .unwrap()
            .forward(&RmsNormInputs {
                x: &st,
                weight: None,
            })
            .unwrap()
            .rstd;
        let dx = ctx.empty(&[rows, n], dtype).unwrap();
        let dweight = ctx.empty(&[n], dtype).unwrap();
        let inputs = RmsNormGradInputs {
            x: &xt,
            residual: fused.then_some(&rt),
            weight: Some(&wt),
            dy: &dyt,
            dsum: fused.then_some(&dst),
            rstd: (!fused && dtype == DType::F32).then_some(&saved),
        };
        ctx.record_and_submit(|enc| {
            rms.encode_backward(
                enc,
                &inputs,
                &RmsNormGradOutputs {
                    dx: &dx,
                    dweight: Some(&dweight),
                },
            )
        })
        .unwrap();
        let sd: Vec<f64> = if fused {
            round_to(dtype, &x)
                .iter()
                .zip(round_to(dtype, &res))
                .map(|(a, b)| a + b)
                .collect()
        } else {
            round_to(dtype, &x)
        };
        let want = grad::rms_norm_grad(
            &sd,
            n,
            Some(&round_to(dtype, &w)),
            offset as f64,
            &round_to(dtype, &dy),
            1e-5,
        );
        let mut want_dx = want.dx.clone();
        if fused {
            for (d, s) in want_dx.iter_mut().zip(round_to(dtype, &dsum)) {
                *d += s;
            }
        }
        let what = format!("rms {rows}x{n} {dtype} offset {offset} fused {fused}");
        let (atol, rtol) = tol(dtype);
        let scale = want_dx.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(
            &format!("{what} dx"),
            &ctx.download(&dx).unwrap(),
            &want_dx,
            atol * scale,
            rtol,
        );
        let dw_scale = want.dweight.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(
            &format!("{what} dweight"),
            &ctx.download(&dweight).unwrap(),
            &want.dweight,
            atol * dw_scale,
            rtol,
        );
    }
}

#[test]
fn add_layer_norm_backward_is_the_gradient_of_both_inputs() {
    let ctx = ctx();
    let (rows, n) = (4, 768);
    let (x, res, w, dy, dsum) = (
        noise(11, rows * n),
        noise(12, rows * n),
        noise(13, n),
        noise(14, rows * n),
        noise(15, rows * n),
    );
    let up = |v: &[f32], shape: &[usize]| ctx.upload_f32(v, shape).unwrap();
    let ln = LayerNorm::new(ctx, LayerNormConfig::default()).unwrap();
    let (xt, rt, wt, dyt, dst) = (
        up(&x, &[rows, n]),
        up(&res, &[rows, n]),
        up(&w, &[n]),
        up(&dy, &[rows, n]),
        up(&dsum, &[rows, n]),
    );
    let dx = ctx.empty(&[rows, n], DType::F32).unwrap();
    let (dw, db) = (
        ctx.empty(&[n], DType::F32).unwrap(),
        ctx.empty(&[n], DType::F32).unwrap(),
    );
    ctx.record_and_submit(|enc| {
        ln.encode_add_backward(
            enc,
            &AddLayerNormGradInputs {
                x: &xt,
                residual: &rt,
                weight: Some(&wt),
                bias: None,
                dy: &dyt,
                dsum: Some(&dst),
                mean: None,
                rstd: None,
            },
            &LayerNormGradOutputs {
                dx: &dx,
                dweight: Some(&dw),
                dbias: Some(&db),
            },
        )
    })
    .unwrap();
    let f = |v: &[f32]| round_to(DType::F32, v);
    let s: Vec<f64> = f(&x).iter().zip(f(&res)).map(|(a, b)| a + b).collect();
    let want = grad::layer_norm_grad(&s, n, Some(&f(&w)), &f(&dy), 1e-5);
    let want_dx: Vec<f64> = want.dx.iter().zip(f(&dsum)).map(|(a, b)| a + b).collect();
    assert_close(
        "add ln dx",
        &ctx.download(&dx).unwrap(),
        &want_dx,
        1e-4,
        2e-4,
    );
    assert_close(
        "add ln dweight",
        &ctx.download(&dw).unwrap(),
        &want.dweight,
        1e-4,
        2e-4,
    );
    assert_close(
        "add ln dbias",
        &ctx.download(&db).unwrap(),
        &want.dbias,
        1e-4,
        2e-4,
    );
}

#[test]
fn backward_is_bitwise_reproducible() {
    // 300 rows: several blocks of the parameter-gradient pass, summed in a fixed order.
    let ctx = ctx();
    let (rows, n) = (300, 256);
    let ln = LayerNorm::new(ctx, LayerNormConfig::default()).unwrap();
    let (xt, wt, dyt) = (
        ctx.upload_f32(&noise(21, rows * n), &[rows, n]).unwrap(),
        ctx.upload_f32(&noise(22, n), &[n]).unwrap(),
        ctx.upload_f32(&noise(23, rows * n), &[rows, n]).unwrap(),
    );
    let inputs = LayerNormGradInputs {
        x: &xt,
        weight: Some(&wt),
        bias: None,
        dy: &dyt,
        mean: None,
        rstd: None,
    };
    let first = ln.backward(&inputs).unwrap();
    let bits = |t: &Tensor| -> Vec<u32> {
        ctx.download(t)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    let (dx0, dw0, db0) = (bits(&first.dx), bits(&first.dweight), bits(&first.dbias));
    for _ in 0..3 {
        let g = ln.backward(&inputs).unwrap();
        assert_eq!(bits(&g.dx), dx0);
        assert_eq!(bits(&g.dweight), dw0);
        assert_eq!(bits(&g.dbias), db0);
    }
    let want = grad::layer_norm_grad(
        &round_to(DType::F32, &noise(21, rows * n)),
        n,
        Some(&round_to(DType::F32, &noise(22, n))),
        &round_to(DType::F32, &noise(23, rows * n)),
        1e-5,
    );
    assert_close(
        "dweight over 300 rows",
        &ctx.download(&first.dweight).unwrap(),
        &want.dweight,
        2e-4,
        2e-4,
    );
}

#[test]
fn nan_rows_stay_in_their_row_and_empty_batches_give_zero_parameter_gradients() {
    let ctx = ctx();
    let n = 16;
    let mut x = noise(31, 3 * n);
    x[n + 3] = f32::NAN;
    let ln = LayerNorm::new(ctx, LayerNormConfig::default()).unwrap();
    let xt = ctx.upload_f32(&x, &[3, n]).unwrap();
    let dyt = ctx.upload_f32(&noise(32, 3 * n), &[3, n]).unwrap();
    let g = ln
        .backward(&LayerNormGradInputs {
            x: &xt,
            weight: None,
            bias: None,
            dy: &dyt,
            mean: None,
            rstd: None,
        })
        .unwrap();
    let dx = ctx.download(&g.dx).unwrap();
    assert!(dx[n..2 * n].iter().all(|v| v.is_nan()), "the NaN row");
    assert!(
        dx[..n].iter().chain(&dx[2 * n..]).all(|v| v.is_finite()),
        "other rows"
    );
    // No rows: dx is empty, dweight and dbias are the sum over no rows.
    let e = ctx.empty(&[0, n], DType::F32).unwrap();
    let (dw, db) = (
        ctx.upload_f32(&[7.0; 16], &[n]).unwrap(),
        ctx.upload_f32(&[7.0; 16], &[n]).unwrap(),
    );
    ctx.record_and_submit(|enc| {
        ln.encode_backward(
            enc,
            &LayerNormGradInputs {
                x: &e,
                weight: None,
                bias: None,
                dy: &e.clone(),
                mean: None,
                rstd: None,
            },
            &LayerNormGradOutputs {
                dx: &ctx.empty(&[0, n], DType::F32).unwrap(),
                dweight: Some(&dw),
                dbias: Some(&db),
            },
        )
    })
    .unwrap();
    assert_eq!(ctx.download(&dw).unwrap(), vec![0.0; n]);
    assert_eq!(ctx.download(&db).unwrap(), vec![0.0; n]);
}

#[test]
fn backward_bad_input_is_typed() {
    let ctx = ctx();
    let ln = LayerNorm::new(ctx, LayerNormConfig::default()).unwrap();
    let x = ctx.empty(&[2, 8], DType::F32).unwrap();
    let dy = ctx.empty(&[2, 8], DType::F32).unwrap();
    let dx = ctx.empty(&[2, 8], DType::F32).unwrap();
    let short = ctx.empty(&[2, 7], DType::F32).unwrap();
    let stats = ctx.empty(&[2], DType::F32).unwrap();
    let inputs = LayerNormGradInputs {
        x: &x,
        weight: None,
        bias: None,
        dy: &dy,
        mean: None,
        rstd: None,
    };
    let outputs = LayerNormGradOutputs {
        dx: &dx,
        dweight: None,
        dbias: None,
    };
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let r = ln.encode_backward(
        &mut enc,
        &LayerNormGradInputs {
            dy: &short,
            ..inputs
        },
        &outputs,
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = ln.encode_backward(
        &mut enc,
        &LayerNormGradInputs {
            mean: Some(&stats),
            ..inputs
        },
        &outputs,
    );
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
    let r = ln.encode_backward(
        &mut enc,
        &inputs,
        &LayerNormGradOutputs { dx: &dy, ..outputs },
    );
    assert!(matches!(r, Err(Error::AliasedBuffers { .. })), "{r:?}");
    // A bias of the wrong length (read by an activation's backward).
    let gelu = LayerNorm::new(ctx, LayerNormConfig::default())
        .unwrap()
        .with_activation(wgnorm::Activation::GeluErf);
    let short_b = ctx.empty(&[3], DType::F32).unwrap();
    let inputs = LayerNormGradInputs {
        bias: Some(&short_b),
        ..inputs
    };
    let r = gelu.encode_backward(&mut enc, &inputs, &outputs);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
}

/// LayerNorm (its bias in the activation's argument) and Gemma-style RMSNorm (offset 1) with
/// every fused activation differentiate through it: rows on the vector and scalar paths, f32
/// and f16, LayerNorm also as the fused add, dx, dweight and dbias against the f64 reference.
#[test]
fn row_backward_through_every_activation() {
    use wgnorm_reference::activation::Act;
    let c = ctx();
    let selu = Activation::SELU;
    let (alpha, lambda) = selu.selu_params();
    let acts = [
        (Activation::Silu, Act::Silu),
        (Activation::GeluTanh, Act::GeluTanh),
        (Activation::GeluErf, Act::GeluErf),
        (Activation::Relu, Act::Relu),
        (
            selu,
            Act::Selu {
                alpha: alpha as f64,
                lambda: lambda as f64,
            },
        ),
    ];
    for (activation, act) in acts {
        for (dtype, rows, n) in [
            (DType::F32, 5usize, 96usize),
            (DType::F16, 4, 33),
            (DType::F32, 3, 1001),
        ] {
            let x: Vec<f32> = noise(41, rows * n).iter().map(|v| v * 1.5 + 0.3).collect();
            let (w, b, dy) = (noise(42, n), noise(43, n), noise(44, rows * n));
            let res = noise(45, rows * n);
            let (xd, wd, bd, dyd) = (
                round_to(dtype, &x),
                round_to(dtype, &w),
                round_to(dtype, &b),
                round_to(dtype, &dy),
            );
            let up = |v: &[f32], shape: &[usize]| c.upload(v, shape, dtype).unwrap();
            let (xt, wt, bt, dyt, rt) = (
                up(&x, &[rows, n]),
                up(&w, &[n]),
                up(&b, &[n]),
                up(&dy, &[rows, n]),
                up(&res, &[rows, n]),
            );
            let (atol, rtol) = tol(dtype);
            let s = |v: &[f64]| v.iter().fold(1.0f64, |m, a| m.max(a.abs()));
            let what = format!("{activation:?} {dtype} {rows}x{n}");
            let check = |name: &str, got: &Tensor, want: &[f64]| {
                let got = c.download(got).unwrap();
                assert_close(&format!("{what} {name}"), &got, want, atol * s(want), rtol);
            };
            // LayerNorm, plain and as the fused add (the row is x + residual).
            let ln = LayerNorm::new(
                c,
                LayerNormConfig {
                    dtype,
                    ..Default::default()
                },
            )
            .unwrap()
            .with_activation(activation);
            let g = ln
                .backward(&LayerNormGradInputs {
                    x: &xt,
                    weight: Some(&wt),
                    bias: Some(&bt),
                    dy: &dyt,
                    mean: None,
                    rstd: None,
                })
                .unwrap();
            let want = grad::layer_norm_act_grad(&xd, n, (Some(&wd), Some(&bd)), &dyd, 1e-5, act);
            check("ln dx", &g.dx, &want.dx);
            check("ln dweight", &g.dweight, &want.dweight);
            check("ln dbias", &g.dbias, &want.dbias);
            let (dx, dw, db) = (
                c.empty(&[rows, n], dtype).unwrap(),
                c.empty(&[n], dtype).unwrap(),
                c.empty(&[n], dtype).unwrap(),
            );
            c.record_and_submit(|enc| {
                ln.encode_add_backward(
                    enc,
                    &AddLayerNormGradInputs {
                        x: &xt,
                        residual: &rt,
                        weight: Some(&wt),
                        bias: Some(&bt),
                        dy: &dyt,
                        dsum: None,
                        mean: None,
                        rstd: None,
                    },
                    &LayerNormGradOutputs {
                        dx: &dx,
                        dweight: Some(&dw),
                        dbias: Some(&db),
                    },
                )
            })
            .unwrap();
            let sum: Vec<f64> = xd
                .iter()
                .zip(round_to(dtype, &res))
                .map(|(a, b)| a + b)
                .collect();
            let want = grad::layer_norm_act_grad(&sum, n, (Some(&wd), Some(&bd)), &dyd, 1e-5, act);
            check("add ln dx", &dx, &want.dx);
            check("add ln dweight", &dw, &want.dweight);
            check("add ln dbias", &db, &want.dbias);
            // RMSNorm with Gemma's weight offset.
            let rms = RmsNorm::new(
                c,
                RmsNormConfig {
                    dtype,
                    weight_offset: 1.0,
                    ..Default::default()
                },
            )
            .unwrap()
            .with_activation(activation);
            let (dx, dw) = rms
                .backward(&RmsNormGradInputs {
                    x: &xt,
                    residual: None,
                    weight: Some(&wt),
                    dy: &dyt,
                    dsum: None,
                    rstd: None,
                })
                .unwrap();
            let want = grad::rms_norm_act_grad(&xd, n, (Some(&wd), 1.0), &dyd, 1e-5, act);
            check("rms dx", &dx, &want.dx);
            check("rms dweight", &dw, &want.dweight);
        }
    }
}
