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
    // A GroupNorm with GELU is created fine; its backward is refused, typed.
    let gn = GroupNorm::new(
        c_,
        GroupNormConfig {
            activation: Activation::GeluErf,
            ..GroupNormConfig::new(3)
        },
    )
    .unwrap();
    let r = gn.backward(&NormGradInputs {
        x: &x,
        weight: None,
        bias: None,
        dy: &dy,
        saved: None,
    });
    assert!(
        matches!(
            r,
            Err(Error::InvalidParameter {
                name: "activation",
                ..
            })
        ),
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
