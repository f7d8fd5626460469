//! BatchNorm / GroupNorm (+SiLU) / InstanceNorm backward on the GPU against the f64 reference
//! gradients (checked against finite differences in `wgnorm-reference`): both layouts, f16,
//! saved or recomputed statistics, inference, offsets and eps-sized variances, 5-D input,
//! bitwise reproducibility, empty batches and bad input.

use wgnorm::prelude::*;
use wgnorm::{BatchNormGradInputs, Error, Mode, NormGradInputs};
use wgnorm_reference::{chnorm as cref, grad};
use wgnorm_tests::{assert_close, ctx, noise, round_to};

/// NCHW f64 data in the layout's order.
fn in_layout(v: &[f64], n: usize, c: usize, hw: usize, layout: Layout) -> Vec<f64> {
    match layout {
        Layout::Nchw => v.to_vec(),
        Layout::Nhwc => cref::to_nhwc(v, n, c, hw),
    }
}

/// Uploads NCHW `v` as `layout` with spatial dims `sp`.
fn upload(v: &[f32], n: usize, c: usize, sp: &[usize], layout: Layout, dtype: DType) -> Tensor {
    let hw: usize = sp.iter().product();
    let d: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    let data: Vec<f32> = in_layout(&d, n, c, hw, layout)
        .iter()
        .map(|&x| x as f32)
        .collect();
    let mut shape = vec![n];
    match layout {
        Layout::Nchw => {
            shape.push(c);
            shape.extend(sp);
        }
        Layout::Nhwc => {
            shape.extend(sp);
            shape.push(c);
        }
    }
    ctx().upload(&data, &shape, dtype).unwrap()
}

fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (3e-5, 3e-4),
        DType::F16 => (6e-3, 1e-2),
        DType::BF16 => unreachable!("bf16 is for the forward row norms only"),
    }
}

fn scale(v: &[f64]) -> f64 {
    v.iter().fold(1.0f64, |m, x| m.max(x.abs()))
}

#[test]
fn batch_norm_backward_training_and_inference() {
    let c_ = ctx();
    // (n, c, spatial dims, spread, offset, eps)
    type Case = (usize, usize, &'static [usize], f32, f32, f32);
    let cases: &[Case] = &[
        (4, 8, &[3, 3], 1.0, 0.0, 1e-5),
        (8, 16, &[5, 5], 2.0, 1e3, 1e-5),
        (32, 12, &[], 1.0, 0.0, 1e-5),
        (3, 4, &[2, 3, 2], 0.01, 0.0, 1e-4), // 5-D, variance at eps
        (2, 3, &[40, 40], 0.5, -3.0, 1e-3),
        (20, 2, &[30, 30], 1.0, 0.5, 1e-5), // 18,000 values per channel: two tiles on CPU
    ];
    for &(n, c, sp, spread, offset, eps) in cases {
        let hw: usize = sp.iter().product::<usize>().max(1);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for dtype in [DType::F32, DType::F16] {
                if dtype == DType::F16 && offset.abs() > 10.0 {
                    continue; // f16 cannot hold 1e3 + a unit spread
                }
                let x: Vec<f32> = noise(n as u64, n * c * hw)
                    .iter()
                    .map(|v| v * spread + offset)
                    .collect();
                let (w, dy) = (noise(3, c), noise(4, n * c * hw));
                let rm: Vec<f32> = noise(5, c).iter().map(|v| v + offset).collect();
                let rv: Vec<f32> = noise(6, c).iter().map(|v| v.abs() + 0.2).collect();
                let (xd, dyd) = (round_to(dtype, &x), round_to(dtype, &dy));
                let f = |v: &[f32]| round_to(DType::F32, v);
                let bn = BatchNorm::new(
                    c_,
                    BatchNormConfig {
                        eps,
                        layout,
                        dtype,
                        ..Default::default()
                    },
                )
                .unwrap();
                let xt = upload(&x, n, c, sp, layout, dtype);
                let dyt = upload(&dy, n, c, sp, layout, dtype);
                let up = |v: &[f32]| c_.upload_f32(v, &[c]).unwrap();
                let (wt, rmt, rvt) = (up(&w), up(&rm), up(&rv));
                for training in [true, false] {
                    let g = bn
                        .backward(
                            &BatchNormGradInputs {
                                x: &xt,
                                weight: Some(&wt),
                                dy: &dyt,
                                saved: None,
                                running_mean: Some(&rmt),
                                running_var: Some(&rvt),
                            },
                            Mode::training(training),
                        )
                        .unwrap();
                    let running = (!training).then(|| (f(&rm), f(&rv)));
                    let want = grad::batch_norm_grad(
                        &xd,
                        n,
                        c,
                        hw,
                        Some(&f(&w)),
                        &dyd,
                        running.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice())),
                        eps as f64,
                    );
                    let what = format!(
                        "bn {n}x{c}x{sp:?} {layout:?} {dtype} offset {offset} training {training}"
                    );
                    let (atol, rtol) = tol(dtype);
                    let dx = c_.download(&g.dx).unwrap();
                    let want_dx = in_layout(&want.dx, n, c, hw, layout);
                    assert_close(
                        &format!("{what} dx"),
                        &dx,
                        &want_dx,
                        atol * scale(&want_dx),
                        rtol,
                    );
                    let dw = c_.download(&g.dweight).unwrap();
                    assert_close(
                        &format!("{what} dweight"),
                        &dw,
                        &want.dweight,
                        atol * scale(&want.dweight),
                        rtol,
                    );
                    let db = c_.download(&g.dbias).unwrap();
                    assert_close(
                        &format!("{what} dbias"),
                        &db,
                        &want.dbias,
                        atol * scale(&want.dbias),
                        rtol,
                    );
                }
            }
        }
    }
}

#[test]
fn batch_norm_backward_reuses_the_saved_statistics() {
    let c_ = ctx();
    let (n, c, hw) = (6, 5, 16);
    let x: Vec<f32> = noise(11, n * c * hw)
        .iter()
        .map(|v| v * 3.0 + 1.0)
        .collect();
    let dy = noise(12, n * c * hw);
    let bn = BatchNorm::new(c_, BatchNormConfig::default()).unwrap();
    let xt = c_.upload_f32(&x, &[n, c, 4, 4]).unwrap();
    let dyt = c_.upload_f32(&dy, &[n, c, 4, 4]).unwrap();
    let y = c_.empty(xt.shape(), DType::F32).unwrap();
    let saved = c_.empty(&[c, 2], DType::F32).unwrap();
    c_.record_and_submit(|enc| {
        bn.encode(
            enc,
            &BatchNormInputs {
                x: &xt,
                weight: None,
                bias: None,
                running_mean: None,
                running_var: None,
            },
            &BatchNormOutputs {
                y: &y,
                saved: Some(&saved),
            },
            Mode::Train,
        )
    })
    .unwrap();
    let g = bn
        .backward(
            &BatchNormGradInputs {
                x: &xt,
                weight: None,
                dy: &dyt,
                saved: Some(&saved),
                running_mean: None,
                running_var: None,
            },
            Mode::Train,
        )
        .unwrap();
    let f = |v: &[f32]| round_to(DType::F32, v);
    let want = grad::batch_norm_grad(&f(&x), n, c, hw, None, &f(&dy), None, 1e-5);
    assert_close(
        "bn saved dx",
        &c_.download(&g.dx).unwrap(),
        &want.dx,
        3e-5 * scale(&want.dx),
        3e-4,
    );
    assert_close(
        "bn saved dweight",
        &c_.download(&g.dweight).unwrap(),
        &want.dweight,
        1e-4,
        3e-4,
    );
}

#[test]
fn group_and_instance_norm_backward_with_silu() {
    let c_ = ctx();
    for (n, c, sp, groups) in [
        (2usize, 32usize, [6usize, 6], 8usize),
        (3, 6, [2, 5], 3),
        (1, 64, [8, 8], 32),
    ] {
        let hw = sp[0] * sp[1];
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for dtype in [DType::F32, DType::F16] {
                for silu in [false, true] {
                    let x: Vec<f32> = noise(21, n * c * hw)
                        .iter()
                        .map(|v| v * 0.7 + 0.3)
                        .collect();
                    let (w, b, dy) = (noise(22, c), noise(23, c), noise(24, n * c * hw));
                    let (xd, dyd) = (round_to(dtype, &x), round_to(dtype, &dy));
                    let f = |v: &[f32]| round_to(DType::F32, v);
                    let xt = upload(&x, n, c, &sp, layout, dtype);
                    let dyt = upload(&dy, n, c, &sp, layout, dtype);
                    let (wt, bt) = (
                        c_.upload_f32(&w, &[c]).unwrap(),
                        c_.upload_f32(&b, &[c]).unwrap(),
                    );
                    let inputs = NormGradInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: Some(&bt),
                        dy: &dyt,
                        saved: None,
                    };
                    let activation = if silu {
                        Activation::Silu
                    } else {
                        Activation::None
                    };
                    let gn = GroupNorm::new(
                        c_,
                        GroupNormConfig {
                            activation,
                            layout,
                            dtype,
                            ..GroupNormConfig::new(groups)
                        },
                    )
                    .unwrap();
                    let g = gn.backward(&inputs).unwrap();
                    let want = grad::group_norm_grad(
                        &xd,
                        n,
                        c,
                        hw,
                        groups,
                        &f(&w),
                        &f(&b),
                        &dyd,
                        1e-5,
                        silu,
                    );
                    let what =
                        format!("gn {n}x{c}x{sp:?} g{groups} {layout:?} {dtype} silu {silu}");
                    let (atol, rtol) = tol(dtype);
                    let want_dx = in_layout(&want.dx, n, c, hw, layout);
                    assert_close(
                        &format!("{what} dx"),
                        &c_.download(&g.dx).unwrap(),
                        &want_dx,
                        atol * scale(&want_dx),
                        rtol,
                    );
                    assert_close(
                        &format!("{what} dweight"),
                        &c_.download(&g.dweight).unwrap(),
                        &want.dweight,
                        atol * scale(&want.dweight),
                        rtol,
                    );
                    assert_close(
                        &format!("{what} dbias"),
                        &c_.download(&g.dbias).unwrap(),
                        &want.dbias,
                        atol * scale(&want.dbias),
                        rtol,
                    );
                    if !silu {
                        let inorm = InstanceNorm::new(
                            c_,
                            InstanceNormConfig {
                                layout,
                                dtype,
                                ..Default::default()
                            },
                        )
                        .unwrap();
                        let g = inorm.backward(&inputs).unwrap();
                        let want = grad::group_norm_grad(
                            &xd,
                            n,
                            c,
                            hw,
                            c,
                            &f(&w),
                            &f(&b),
                            &dyd,
                            1e-5,
                            false,
                        );
                        let want_dx = in_layout(&want.dx, n, c, hw, layout);
                        assert_close(
                            &format!("in {what} dx"),
                            &c_.download(&g.dx).unwrap(),
                            &want_dx,
                            atol * scale(&want_dx),
                            rtol,
                        );
                        assert_close(
                            &format!("in {what} dweight"),
                            &c_.download(&g.dweight).unwrap(),
                            &want.dweight,
                            atol * scale(&want.dweight),
                            rtol,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn channel_backward_is_bitwise_reproducible_and_empty_batches_give_zeros() {
    let c_ = ctx();
    let (n, c, hw) = (16, 8, 900);
    let bn = BatchNorm::new(c_, BatchNormConfig::default()).unwrap();
    let xt = c_
        .upload_f32(&noise(31, n * c * hw), &[n, c, 30, 30])
        .unwrap();
    let dyt = c_
        .upload_f32(&noise(32, n * c * hw), &[n, c, 30, 30])
        .unwrap();
    let inputs = BatchNormGradInputs {
        x: &xt,
        weight: None,
        dy: &dyt,
        saved: None,
        running_mean: None,
        running_var: None,
    };
    let bits = |t: &Tensor| -> Vec<u32> {
        c_.download(t)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    let first = bn.backward(&inputs, Mode::Train).unwrap();
    for _ in 0..3 {
        let g = bn.backward(&inputs, Mode::Train).unwrap();
        assert_eq!(bits(&g.dx), bits(&first.dx));
        assert_eq!(bits(&g.dweight), bits(&first.dweight));
        assert_eq!(bits(&g.dbias), bits(&first.dbias));
    }
    // No samples: dweight and dbias are sums over nothing.
    let e = c_.empty(&[0, c, 3, 3], DType::F32).unwrap();
    let g = bn
        .backward(
            &BatchNormGradInputs {
                x: &e,
                dy: &c_.empty(&[0, c, 3, 3], DType::F32).unwrap(),
                ..inputs
            },
            Mode::Train,
        )
        .unwrap();
    assert_eq!(c_.download(&g.dweight).unwrap(), vec![0.0; c]);
    assert_eq!(c_.download(&g.dbias).unwrap(), vec![0.0; c]);
}

#[test]
fn channel_backward_bad_input_is_typed() {
    let c_ = ctx();
    let bn = BatchNorm::new(c_, BatchNormConfig::default()).unwrap();
    let x = c_.empty(&[2, 3, 4], DType::F32).unwrap();
    let dy = c_.empty(&[2, 3, 4], DType::F32).unwrap();
    let short = c_.empty(&[2, 3, 3], DType::F32).unwrap();
    let inputs = BatchNormGradInputs {
        x: &x,
        weight: None,
        dy: &dy,
        saved: None,
        running_mean: None,
        running_var: None,
    };
    let outputs = wgnorm::BatchNormGradOutputs {
        dx: &short,
        dweight: None,
        dbias: None,
    };
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let r = bn.encode_backward(&mut enc, &inputs, &outputs, Mode::Train);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    // Inference needs the running statistics.
    let dx = c_.empty(&[2, 3, 4], DType::F32).unwrap();
    let outputs = wgnorm::BatchNormGradOutputs { dx: &dx, ..outputs };
    let r = bn.encode_backward(&mut enc, &inputs, &outputs, Mode::Infer);
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
    // dx aliasing dy.
    let outputs = wgnorm::BatchNormGradOutputs { dx: &dy, ..outputs };
    let r = bn.encode_backward(&mut enc, &inputs, &outputs, Mode::Train);
    assert!(matches!(r, Err(Error::AliasedBuffers { .. })), "{r:?}");
    // A weight of the wrong length.
    let short_w = c_.upload_f32(&[1.0; 2], &[2]).unwrap();
    let gn = GroupNorm::new(c_, GroupNormConfig::new(3)).unwrap();
    let r = gn.backward(&NormGradInputs {
        x: &x,
        weight: Some(&short_w),
        bias: None,
        dy: &dy,
        saved: None,
    });
    assert!(
        matches!(r, Err(Error::ShapeMismatch { .. })),
        "{:?}",
        r.err()
    );
}

/// RepBN (`y = BN(x) + alpha x`, tokens channels-last): BatchNorm's gradients plus `alpha dy`,
/// and `dalpha = sum(dy x)`, training and inference; an empty batch gives dalpha = 0.
#[test]
fn rep_batch_norm_backward_adds_alpha_and_its_gradient() {
    use wgnorm::batchnorm::RepBatchNorm;
    let c_ = ctx();
    let (b, t, c) = (3usize, 5usize, 8usize);
    let x: Vec<f32> = noise(41, b * t * c).iter().map(|v| v * 2.0 + 1.0).collect();
    let (w, dy) = (noise(42, c), noise(43, b * t * c));
    let (rm, rv) = (
        noise(44, c),
        noise(45, c)
            .iter()
            .map(|v| v.abs() + 0.3)
            .collect::<Vec<_>>(),
    );
    let alpha = 0.35f32;
    let op = RepBatchNorm::new(
        c_,
        BatchNormConfig {
            layout: Layout::Nhwc,
            ..Default::default()
        },
    )
    .unwrap();
    let xt = c_.upload_f32(&x, &[b, t, c]).unwrap();
    let dyt = c_.upload_f32(&dy, &[b, t, c]).unwrap();
    let up = |v: &[f32], len: usize| c_.upload_f32(v, &[len]).unwrap();
    let (wt, rmt, rvt, at) = (up(&w, c), up(&rm, c), up(&rv, c), up(&[alpha], 1));
    let f = |v: &[f32]| round_to(DType::F32, v);
    for training in [true, false] {
        let dx = c_.empty(&[b, t, c], DType::F32).unwrap();
        let dw = c_.empty(&[c], DType::F32).unwrap();
        let dalpha = c_.empty(&[1], DType::F32).unwrap();
        c_.record_and_submit(|enc| {
            op.encode_backward(
                enc,
                &BatchNormGradInputs {
                    x: &xt,
                    weight: Some(&wt),
                    dy: &dyt,
                    saved: None,
                    running_mean: Some(&rmt),
                    running_var: Some(&rvt),
                },
                &at,
                &wgnorm::BatchNormGradOutputs {
                    dx: &dx,
                    dweight: Some(&dw),
                    dbias: None,
                },
                Some(&dalpha),
                Mode::training(training),
            )
        })
        .unwrap();
        // Channels-last [BT, C] is NCHW with N = BT, hw = 1.
        let running = (!training).then(|| (f(&rm), f(&rv)));
        let (want, want_dalpha) = grad::rep_batch_norm_grad(
            &f(&x),
            b * t,
            c,
            1,
            Some(&f(&w)),
            alpha as f64,
            &f(&dy),
            running.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice())),
            1e-5,
        );
        let what = format!("repbn training {training}");
        assert_close(
            &format!("{what} dx"),
            &c_.download(&dx).unwrap(),
            &want.dx,
            1e-4,
            3e-4,
        );
        assert_close(
            &format!("{what} dweight"),
            &c_.download(&dw).unwrap(),
            &want.dweight,
            1e-4,
            3e-4,
        );
        assert_close(
            &format!("{what} dalpha"),
            &c_.download(&dalpha).unwrap(),
            &[want_dalpha],
            1e-4,
            3e-4,
        );
    }
    let e = c_.empty(&[0, t, c], DType::F32).unwrap();
    let dalpha = c_.upload_f32(&[5.0], &[1]).unwrap();
    c_.record_and_submit(|enc| {
        op.encode_backward(
            enc,
            &BatchNormGradInputs {
                x: &e,
                weight: None,
                dy: &c_.empty(&[0, t, c], DType::F32).unwrap(),
                saved: None,
                running_mean: None,
                running_var: None,
            },
            &at,
            &wgnorm::BatchNormGradOutputs {
                dx: &c_.empty(&[0, t, c], DType::F32).unwrap(),
                dweight: None,
                dbias: None,
            },
            Some(&dalpha),
            Mode::Train,
        )
    })
    .unwrap();
    assert_eq!(
        c_.download(&dalpha).unwrap(),
        vec![0.0],
        "dalpha of an empty batch"
    );
}

/// Weight Standardization's backward in its four variants (unbiased or biased variance, eps
/// inside the square root or added to the deviation), f32 and f16, conv-shaped weights.
#[test]
fn weight_standardization_backward_in_every_variant() {
    let c_ = ctx();
    let (o, shape) = (16usize, [16usize, 8, 3, 3]);
    let k = 8 * 9;
    let w: Vec<f32> = noise(51, o * k).iter().map(|v| 0.05 * v + 0.02).collect();
    let dy = noise(52, o * k);
    for dtype in [DType::F32, DType::F16] {
        for (unbiased, inside) in [(true, false), (true, true), (false, false), (false, true)] {
            let op = wgnorm::WeightStandardization::new(
                c_,
                wgnorm::WeightStandardizationConfig {
                    variant: wgnorm::WsVariant::from_flags(unbiased, inside),
                    eps: 1e-4,
                    dtype,
                },
            )
            .unwrap();
            let wt = c_.upload(&w, &shape, dtype).unwrap();
            let dyt = c_.upload(&dy, &shape, dtype).unwrap();
            let dw = op.backward(&wt, &dyt).unwrap();
            let want = grad::weight_standardization_grad(
                &round_to(dtype, &w),
                o,
                unbiased,
                inside,
                1e-4,
                &round_to(dtype, &dy),
            );
            let (atol, rtol) = tol(dtype);
            assert_close(
                &format!("ws {dtype} unbiased {unbiased} inside {inside}"),
                &c_.download(&dw).unwrap(),
                &want,
                atol * scale(&want),
                rtol,
            );
        }
    }
}

/// A common offset far above the spread (2000 ± 1, 1e4 ± 0.25) costs the batch-statistics
/// backward no precision: with recomputed statistics the slot is centred on its merged
/// moments' shift, with saved ones the f32 mean's rounding is corrected from the exact sum of
/// the centred values. BatchNorm and GroupNorm (+SiLU), both layouts, against the f64
/// reference at 2e-5 of each gradient's scale (an f32 mean alone is off by up to 6e-5 of the
/// spread at 2000, 5e-4 at 1e4).
#[test]
fn channel_backward_at_large_offsets_is_as_accurate_as_centred() {
    let c_ = ctx();
    let (n, c, sp, groups) = (4usize, 8usize, [6usize, 6], 2usize);
    let hw = sp[0] * sp[1];
    for (offset, spread) in [(2e3f32, 1.0f32), (1e4, 0.25)] {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let x: Vec<f32> = noise(91, n * c * hw)
                .iter()
                .map(|v| offset + v * spread)
                .collect();
            let (w, b, dy) = (noise(92, c), noise(93, c), noise(94, n * c * hw));
            let f = |v: &[f32]| round_to(DType::F32, v);
            let (xd, dyd) = (f(&x), f(&dy));
            let xt = upload(&x, n, c, &sp, layout, DType::F32);
            let dyt = upload(&dy, n, c, &sp, layout, DType::F32);
            let wt = c_.upload_f32(&w, &[c]).unwrap();
            let bt = c_.upload_f32(&b, &[c]).unwrap();
            let check = |what: &str, got: &Tensor, want: &[f64], nhwc: bool| {
                let want = if nhwc {
                    in_layout(want, n, c, hw, layout)
                } else {
                    want.to_vec()
                };
                let got = c_.download(got).unwrap();
                assert_close(what, &got, &want, 2e-5 * scale(&want), 0.0);
            };
            for saved in [false, true] {
                let what = format!("offset {offset} ± {spread} {layout:?} saved {saved}");
                // BatchNorm.
                let bn = BatchNorm::new(
                    c_,
                    BatchNormConfig {
                        layout,
                        ..Default::default()
                    },
                )
                .unwrap();
                let st = c_.empty(&[c, 2], DType::F32).unwrap();
                let y = c_.empty(xt.shape(), DType::F32).unwrap();
                c_.record_and_submit(|enc| {
                    let inputs = BatchNormInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: None,
                        running_mean: None,
                        running_var: None,
                    };
                    let outs = BatchNormOutputs {
                        y: &y,
                        saved: Some(&st),
                    };
                    bn.encode(enc, &inputs, &outs, Mode::Train)
                })
                .unwrap();
                let g = bn
                    .backward(
                        &BatchNormGradInputs {
                            x: &xt,
                            weight: Some(&wt),
                            dy: &dyt,
                            saved: saved.then_some(&st),
                            running_mean: None,
                            running_var: None,
                        },
                        Mode::Train,
                    )
                    .unwrap();
                let want = grad::batch_norm_grad(&xd, n, c, hw, Some(&f(&w)), &dyd, None, 1e-5);
                check(&format!("bn {what} dx"), &g.dx, &want.dx, true);
                check(
                    &format!("bn {what} dweight"),
                    &g.dweight,
                    &want.dweight,
                    false,
                );
                check(&format!("bn {what} dbias"), &g.dbias, &want.dbias, false);
                // GroupNorm with and without SiLU; the saved statistics only without it (with
                // SiLU a saved f32 mean also shifts the activation's argument, a second-order
                // error the correction does not reach).
                let silus: &[bool] = if saved { &[false] } else { &[false, true] };
                for &silu in silus {
                    let activation = if silu {
                        Activation::Silu
                    } else {
                        Activation::None
                    };
                    let cfg = GroupNormConfig {
                        activation,
                        layout,
                        ..GroupNormConfig::new(groups)
                    };
                    let gn = GroupNorm::new(c_, cfg).unwrap();
                    let gst = c_.empty(&[n * groups, 2], DType::F32).unwrap();
                    let inputs = NormInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: Some(&bt),
                    };
                    c_.record_and_submit(|enc| {
                        let outs = NormOutputs {
                            y: &y,
                            saved: Some(&gst),
                        };
                        gn.encode(enc, &inputs, &outs)
                    })
                    .unwrap();
                    let g = gn
                        .backward(&NormGradInputs {
                            x: &xt,
                            weight: Some(&wt),
                            bias: Some(&bt),
                            dy: &dyt,
                            saved: saved.then_some(&gst),
                        })
                        .unwrap();
                    let want = grad::group_norm_grad(
                        &xd,
                        n,
                        c,
                        hw,
                        groups,
                        &f(&w),
                        &f(&b),
                        &dyd,
                        1e-5,
                        silu,
                    );
                    let what = format!("gn silu {silu} {what}");
                    check(&format!("{what} dx"), &g.dx, &want.dx, true);
                    check(&format!("{what} dweight"), &g.dweight, &want.dweight, false);
                    check(&format!("{what} dbias"), &g.dbias, &want.dbias, false);
                }
            }
        }
    }
}

/// GroupNorm with every fused activation differentiates through it (z = xhat * w + b, dz =
/// dy * act'(z)): GELU (tanh and erf), ReLU and SELU, both layouts, f32 and f16, against the
/// f64 reference gradients (checked against finite differences in `wgnorm-reference`).
#[test]
fn group_norm_backward_through_every_activation() {
    use wgnorm_reference::activation::Act;
    let c_ = ctx();
    let (n, c, sp, groups) = (2usize, 12usize, [5usize, 4], 3usize);
    let hw = sp[0] * sp[1];
    let selu = Activation::SELU;
    let (alpha, lambda) = selu.selu_params();
    let acts = [
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
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for dtype in [DType::F32, DType::F16] {
                let x: Vec<f32> = noise(31, n * c * hw)
                    .iter()
                    .map(|v| v * 1.3 - 0.2)
                    .collect();
                let (w, b, dy) = (noise(32, c), noise(33, c), noise(34, n * c * hw));
                let (xd, dyd) = (round_to(dtype, &x), round_to(dtype, &dy));
                let f = |v: &[f32]| round_to(DType::F32, v);
                let xt = upload(&x, n, c, &sp, layout, dtype);
                let dyt = upload(&dy, n, c, &sp, layout, dtype);
                let wt = c_.upload_f32(&w, &[c]).unwrap();
                let bt = c_.upload_f32(&b, &[c]).unwrap();
                let cfg = GroupNormConfig {
                    activation,
                    layout,
                    dtype,
                    ..GroupNormConfig::new(groups)
                };
                let g = GroupNorm::new(c_, cfg)
                    .unwrap()
                    .backward(&NormGradInputs {
                        x: &xt,
                        weight: Some(&wt),
                        bias: Some(&bt),
                        dy: &dyt,
                        saved: None,
                    })
                    .unwrap();
                let shape = (n, c, hw, groups);
                let want = grad::group_norm_act_grad(&xd, shape, &f(&w), &f(&b), &dyd, 1e-5, act);
                let what = format!("gn {activation:?} {layout:?} {dtype}");
                let (atol, rtol) = tol(dtype);
                let want_dx = in_layout(&want.dx, n, c, hw, layout);
                let got_dx = c_.download(&g.dx).unwrap();
                assert_close(
                    &format!("{what} dx"),
                    &got_dx,
                    &want_dx,
                    atol * scale(&want_dx),
                    rtol,
                );
                for (name, got, want) in [
                    ("dweight", &g.dweight, &want.dweight),
                    ("dbias", &g.dbias, &want.dbias),
                ] {
                    let got = c_.download(got).unwrap();
                    assert_close(
                        &format!("{what} {name}"),
                        &got,
                        want,
                        atol * scale(want),
                        rtol,
                    );
                }
            }
        }
    }
}

/// InstanceNorm with `track_running_stats`: its inference form differentiates the running
/// statistics as constants (BatchNorm's inference gradients of the same x), and its training
/// form is the instance-statistics backward; both layouts.
#[test]
fn tracked_instance_norm_backward_in_both_modes() {
    let c_ = ctx();
    let (n, c, sp) = (3usize, 5usize, [4usize, 3]);
    let hw = sp[0] * sp[1];
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let x: Vec<f32> = noise(51, n * c * hw)
            .iter()
            .map(|v| v * 2.0 + 0.5)
            .collect();
        let (w, b, dy) = (noise(52, c), noise(53, c), noise(54, n * c * hw));
        let rm: Vec<f32> = noise(55, c).iter().map(|v| v * 0.3).collect();
        let rv: Vec<f32> = noise(56, c).iter().map(|v| v.abs() + 0.5).collect();
        let f = |v: &[f32]| round_to(DType::F32, v);
        let xt = upload(&x, n, c, &sp, layout, DType::F32);
        let dyt = upload(&dy, n, c, &sp, layout, DType::F32);
        let up = |v: &[f32]| c_.upload_f32(v, &[c]).unwrap();
        let (wt, bt, rmt, rvt) = (up(&w), up(&b), up(&rm), up(&rv));
        let inorm = InstanceNorm::new(
            c_,
            InstanceNormConfig {
                layout,
                ..Default::default()
            },
        )
        .unwrap();
        let inputs = NormGradInputs {
            x: &xt,
            weight: Some(&wt),
            bias: Some(&bt),
            dy: &dyt,
            saved: None,
        };
        for mode in [Mode::Infer, Mode::Train] {
            let (dx, dw, db) = (
                c_.empty(xt.shape(), DType::F32).unwrap(),
                c_.empty(&[c], DType::F32).unwrap(),
                c_.empty(&[c], DType::F32).unwrap(),
            );
            c_.record_and_submit(|enc| {
                let outs = wgnorm::NormGradOutputs {
                    dx: &dx,
                    dweight: Some(&dw),
                    dbias: Some(&db),
                };
                inorm.encode_tracked_backward(enc, &inputs, (&rmt, &rvt), &outs, mode)
            })
            .unwrap();
            let want = if mode == Mode::Infer {
                let running = Some((f(&rm), f(&rv)));
                let running = running.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice()));
                grad::batch_norm_grad(&f(&x), n, c, hw, Some(&f(&w)), &f(&dy), running, 1e-5)
            } else {
                grad::group_norm_grad(&f(&x), n, c, hw, c, &f(&w), &f(&b), &f(&dy), 1e-5, false)
            };
            let what = format!("tracked instance norm {layout:?} {mode:?}");
            let want_dx = in_layout(&want.dx, n, c, hw, layout);
            let got = c_.download(&dx).unwrap();
            assert_close(
                &format!("{what} dx"),
                &got,
                &want_dx,
                3e-5 * scale(&want_dx),
                3e-4,
            );
            let got = c_.download(&dw).unwrap();
            assert_close(&format!("{what} dweight"), &got, &want.dweight, 3e-5, 3e-4);
            let got = c_.download(&db).unwrap();
            assert_close(&format!("{what} dbias"), &got, &want.dbias, 3e-5, 3e-4);
        }
    }
}

/// MVN (eps outside the square root, over several axes, with an offset) and LpNorm (p = 1, 2,
/// any axis, a zero slot and a zero element) backward against the f64 reference, f32 and f16.
#[test]
fn mean_variance_and_lp_norm_backward() {
    use wgnorm::{LpNormConfig, MeanVarianceNormConfig};
    let c_ = ctx();
    let shape = [3usize, 5, 4, 6];
    let numel: usize = shape.iter().product();
    for dtype in [DType::F32, DType::F16] {
        let mut x: Vec<f32> = noise(71, numel).iter().map(|v| v * 2.0 + 3.0).collect();
        let dy = noise(72, numel);
        let f = |v: &[f32]| round_to(dtype, v);
        let (atol, rtol) = tol(dtype);
        let up = |v: &[f32]| c_.upload(v, &shape, dtype).unwrap();
        for axes in [vec![0isize, 2, 3], vec![-1], vec![1, 2]] {
            let mvn = MeanVarianceNorm::new(
                c_,
                MeanVarianceNormConfig {
                    axes: axes.clone(),
                    eps: 1e-4,
                    dtype,
                },
            )
            .unwrap();
            let dx = c_
                .download(&mvn.backward(&up(&x), &up(&dy)).unwrap())
                .unwrap();
            let want = grad::mean_variance_norm_grad(&f(&x), &shape, &axes, 1e-4, &f(&dy));
            let what = format!("mvn {axes:?} {dtype}");
            assert_close(&what, &dx, &want, atol * scale(&want), rtol);
        }
        // A slot of zeros along axis 1 (norm 0: dx 0) and a zero element (L1's kink).
        for b in 0..shape[1] {
            x[b * shape[2] * shape[3]] = 0.0;
        }
        x[7] = 0.0;
        for (p, axis) in [(2u32, 1isize), (1, 1), (2, -1), (1, 0)] {
            let lp = LpNorm::new(c_, LpNormConfig { axis, p, dtype }).unwrap();
            let dx = c_
                .download(&lp.backward(&up(&x), &up(&dy)).unwrap())
                .unwrap();
            let want = grad::lp_norm_grad(&f(&x), &shape, axis, p, &f(&dy));
            let what = format!("lp{p} axis {axis} {dtype}");
            assert_close(&what, &dx, &want, atol * scale(&want), rtol);
        }
    }
}

/// Ghost BatchNorm's backward: each chunk of `ghost_size` samples through its own statistics
/// (BatchNorm's gradients per chunk, dweight and dbias summed over the chunks), both layouts;
/// inference is BatchNorm's.
#[test]
fn ghost_batch_norm_backward_per_chunk() {
    use wgnorm::batchnorm::{GhostBatchNorm, GhostBatchNormConfig};
    use wgnorm::BatchNormGradOutputs;
    let c_ = ctx();
    let (n, c, sp, ghost) = (6usize, 4usize, [3usize, 5], 2usize);
    let hw = sp[0] * sp[1];
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let x: Vec<f32> = noise(81, n * c * hw)
            .iter()
            .map(|v| v * 2.0 + 1.0)
            .collect();
        let (w, dy) = (noise(82, c), noise(83, n * c * hw));
        let f = |v: &[f32]| round_to(DType::F32, v);
        let (xd, dyd, wd) = (f(&x), f(&dy), f(&w));
        let xt = upload(&x, n, c, &sp, layout, DType::F32);
        let dyt = upload(&dy, n, c, &sp, layout, DType::F32);
        let wt = c_.upload_f32(&w, &[c]).unwrap();
        let op = GhostBatchNorm::new(
            c_,
            GhostBatchNormConfig {
                batch_norm: BatchNormConfig {
                    layout,
                    ..Default::default()
                },
                ghost_size: ghost,
            },
        )
        .unwrap();
        let (dx, dw, db) = (
            c_.empty(xt.shape(), DType::F32).unwrap(),
            c_.empty(&[c], DType::F32).unwrap(),
            c_.empty(&[c], DType::F32).unwrap(),
        );
        c_.record_and_submit(|enc| {
            let inputs = BatchNormGradInputs {
                x: &xt,
                weight: Some(&wt),
                dy: &dyt,
                saved: None,
                running_mean: None,
                running_var: None,
            };
            let outs = BatchNormGradOutputs {
                dx: &dx,
                dweight: Some(&dw),
                dbias: Some(&db),
            };
            op.encode_backward(enc, &inputs, &outs, Mode::Train)
        })
        .unwrap();
        // The reference: BatchNorm's training gradients chunk by chunk (NCHW order).
        let chunk = ghost * c * hw;
        let (mut want_dx, mut want_dw, mut want_db) = (Vec::new(), vec![0.0; c], vec![0.0; c]);
        for k in 0..n / ghost {
            let r = k * chunk..(k + 1) * chunk;
            let g =
                grad::batch_norm_grad(&xd[r.clone()], ghost, c, hw, Some(&wd), &dyd[r], None, 1e-5);
            want_dx.extend(g.dx);
            for ch in 0..c {
                want_dw[ch] += g.dweight[ch];
                want_db[ch] += g.dbias[ch];
            }
        }
        let what = format!("ghost bn {layout:?}");
        let want_dx = in_layout(&want_dx, n, c, hw, layout);
        let got = c_.download(&dx).unwrap();
        assert_close(
            &format!("{what} dx"),
            &got,
            &want_dx,
            3e-5 * scale(&want_dx),
            3e-4,
        );
        let got = c_.download(&dw).unwrap();
        assert_close(
            &format!("{what} dweight"),
            &got,
            &want_dw,
            3e-5 * scale(&want_dw),
            3e-4,
        );
        let got = c_.download(&db).unwrap();
        assert_close(
            &format!("{what} dbias"),
            &got,
            &want_db,
            3e-5 * scale(&want_db),
            3e-4,
        );
    }
}

/// The progressive LN -> RepBN replacement's backward for the lambda its forward returned:
/// warm-up (1), blending (2/3) and inference (0), against the f64 composition (checked by finite
/// differences); RepBN's running statistics are not written; a lambda the forward could not
/// have returned is refused.
#[test]
fn progressive_rep_norm_backward_follows_the_blend() {
    use wgnorm::batchnorm::{ProgressiveRepNorm, ProgressiveRepNormInputs};
    use wgnorm::ProgressiveRepNormGradOutputs;
    let c_ = ctx();
    let (b, t, c) = (2, 5, 6);
    let tokens = b * t;
    let op = ProgressiveRepNorm::new(
        c_,
        wgnorm::ProgressiveRepNormConfig {
            warm: 1,
            total_step: 3,
            eps: 1e-3,
            ..Default::default()
        },
    )
    .unwrap();
    let d = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<f64>>();
    let x: Vec<f32> = noise(31, tokens * c)
        .iter()
        .map(|v| 0.05 * v + 1.5)
        .collect();
    let dy = noise(32, x.len());
    let (lw, bw) = (noise(33, c), noise(34, c));
    let (lb, bb) = (noise(35, c), noise(36, c));
    let (rm, rv) = (vec![1.4f32; c], vec![0.002f32; c]);
    let up = |v: &[f32]| c_.upload_f32(v, &[v.len()]).unwrap();
    let (xt, dyt) = (
        c_.upload_f32(&x, &[b, t, c]).unwrap(),
        c_.upload_f32(&dy, &[b, t, c]).unwrap(),
    );
    let (lwt, lbt, bwt, bbt, at) = (up(&lw), up(&lb), up(&bw), up(&bb), up(&[0.6]));
    let (rmt, rvt) = (up(&rm), up(&rv));
    let inputs = ProgressiveRepNormInputs {
        x: &xt,
        ln_weight: Some(&lwt),
        ln_bias: Some(&lbt),
        bn_weight: Some(&bwt),
        bn_bias: Some(&bbt),
        running_mean: &rmt,
        running_var: &rvt,
        alpha: &at,
    };
    let y = c_.empty(&[b, t, c], DType::F32).unwrap();
    let g: Vec<Tensor> = [&[b, t, c][..], &[c], &[c], &[c], &[c], &[1]]
        .iter()
        .map(|s| c_.empty(s, DType::F32).unwrap())
        .collect();
    let outputs = ProgressiveRepNormGradOutputs {
        dx: &g[0],
        dln_weight: Some(&g[1]),
        dln_bias: Some(&g[2]),
        dbn_weight: Some(&g[3]),
        dbn_bias: Some(&g[4]),
        dalpha: Some(&g[5]),
    };
    let mut lambdas = vec![];
    for (call, training) in [true, true, true, false].into_iter().enumerate() {
        let mode = Mode::training(training);
        let outputs = ProgressiveRepNormGradOutputs {
            dln_weight: outputs.dln_weight.filter(|_| training),
            dln_bias: outputs.dln_bias.filter(|_| training),
            ..outputs
        };
        let mut enc = c_.device().create_command_encoder(&Default::default());
        let lambda = op.encode(&mut enc, &inputs, &y, mode).unwrap();
        lambdas.push(lambda);
        c_.queue().submit([enc.finish()]);
        let (rm_now, rv_now) = (c_.download(&rmt).unwrap(), c_.download(&rvt).unwrap());
        let mut enc = c_.device().create_command_encoder(&Default::default());
        op.encode_backward(&mut enc, &inputs, &dyt, lambda, &outputs, mode)
            .unwrap();
        c_.queue().submit([enc.finish()]);
        assert_eq!(
            c_.download(&rvt).unwrap(),
            rv_now,
            "call {call}: running var"
        );
        let (lwd, bwd, rmd, rvd) = (d(&lw), d(&bw), d(&rm_now), d(&rv_now));
        let p = grad::Progressive {
            ln_weight: &lwd,
            bn_weight: &bwd,
            alpha: 0.6f32 as f64,
            lambda: lambda as f64,
            running: (!training).then_some((&rmd[..], &rvd[..])),
            eps: 1e-3,
        };
        let want = p.grad(&d(&x), c, &d(&dy));
        let what = format!("progressive backward call {call} lambda {lambda}");
        let ln_grads = [
            ("dln_weight", &g[1], &want.dln_weight),
            ("dln_bias", &g[2], &want.dln_bias),
        ];
        for (name, t, w) in ln_grads.into_iter().filter(|_| training) {
            assert_close(
                &format!("{what} {name}"),
                &c_.download(t).unwrap(),
                w,
                1e-4,
                1e-4,
            );
        }
        for (name, t, w) in [
            ("dx", &g[0], &want.dx),
            ("dbn_weight", &g[3], &want.dbn_weight),
            ("dbn_bias", &g[4], &want.dbn_bias),
            ("dalpha", &g[5], &vec![want.dalpha]),
        ] {
            assert_close(
                &format!("{what} {name}"),
                &c_.download(t).unwrap(),
                w,
                1e-4,
                1e-4,
            );
        }
    }
    let mut enc = c_.device().create_command_encoder(&Default::default());
    for (lambda, mode) in [
        (0.5, Mode::Infer),
        (1.5, Mode::Train),
        (f32::NAN, Mode::Train),
    ] {
        let r = op.encode_backward(&mut enc, &inputs, &dyt, lambda, &outputs, mode);
        assert!(
            matches!(r, Err(Error::InvalidParameter { .. })),
            "{lambda}: {r:?}"
        );
    }
}
