//! BatchNorm, GroupNorm and InstanceNorm on the GPU against the f64 reference: layouts, dtypes,
//! multi-step running statistics, large reductions and bad input.

use wgnorm::batchnorm::{
    GhostBatchNorm, GhostBatchNormConfig, RepBatchNorm, TestTimeBn, TestTimeBnConfig,
};
use wgnorm::prelude::*;
use wgnorm::Error;
use wgnorm::Mode;
use wgnorm_reference::chnorm as reference;
use wgnorm_tests::{assert_close, ctx, noise, round_to};

fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (2e-5, 1e-4),
        DType::F16 => (2e-3, 2e-3),
        DType::BF16 => unreachable!("bf16 is for the forward row norms only"),
    }
}

fn shape_of(n: usize, c: usize, sp: &[usize], layout: Layout) -> Vec<usize> {
    match layout {
        Layout::Nchw => [&[n, c][..], sp].concat(),
        Layout::Nhwc => [&[n][..], sp, &[c]].concat(),
    }
}

/// Uploads NCHW data `x` in `layout` (transposing for NHWC); returns the tensor.
fn upload_layout(
    x: &[f32],
    n: usize,
    c: usize,
    sp: &[usize],
    layout: Layout,
    dtype: DType,
) -> Tensor {
    let hw: usize = sp.iter().product();
    let data: Vec<f32> = match layout {
        Layout::Nchw => x.to_vec(),
        Layout::Nhwc => {
            let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            reference::to_nhwc(&xd, n, c, hw)
                .iter()
                .map(|&v| v as f32)
                .collect()
        }
    };
    ctx()
        .upload(&data, &shape_of(n, c, sp, layout), dtype)
        .unwrap()
}

fn want_in_layout(want: &[f64], n: usize, c: usize, hw: usize, layout: Layout) -> Vec<f64> {
    match layout {
        Layout::Nchw => want.to_vec(),
        Layout::Nhwc => reference::to_nhwc(want, n, c, hw),
    }
}

/// BatchNorm in one layout, dtype and shape, training and inference, against the reference:
/// y, the running statistics and the saved statistics.
fn batch_norm_case(layout: Layout, dtype: DType, n: usize, c: usize, sp: &[usize]) {
    let c_ = ctx();
    let hw: usize = sp.iter().product();
    let x: Vec<f32> = noise((n * c * hw) as u64, n * c * hw)
        .iter()
        .map(|v| v * 3.0 + 0.5)
        .collect();
    let w: Vec<f32> = noise(3, c).iter().map(|v| v + 1.0).collect();
    let b = noise(4, c);
    let rm0 = noise(5, c);
    let rv0: Vec<f32> = noise(6, c).iter().map(|v| v.abs() + 0.5).collect();
    let xd = round_to(dtype, &x);
    let f = |v: &[f32]| round_to(DType::F32, v);
    for training in [true, false] {
        let want = reference::batch_norm(
            &xd,
            n,
            c,
            hw,
            Some(&f(&w)),
            Some(&f(&b)),
            &f(&rm0),
            &f(&rv0),
            training,
            0.1,
            true,
            1e-5,
        );
        let bn = BatchNorm::new(
            c_,
            BatchNormConfig {
                layout,
                dtype,
                ..Default::default()
            },
        )
        .unwrap();
        let xt = upload_layout(&x, n, c, sp, layout, dtype);
        let (wt, bt) = (
            c_.upload_f32(&w, &[c]).unwrap(),
            c_.upload_f32(&b, &[c]).unwrap(),
        );
        let (rm, rv) = (
            c_.upload_f32(&rm0, &[c]).unwrap(),
            c_.upload_f32(&rv0, &[c]).unwrap(),
        );
        let y = c_.empty(xt.shape(), dtype).unwrap();
        let saved = c_.empty(&[c, 2], DType::F32).unwrap();
        let mut enc = c_.device().create_command_encoder(&Default::default());
        bn.encode(
            &mut enc,
            &BatchNormInputs {
                x: &xt,
                weight: Some(&wt),
                bias: Some(&bt),
                running_mean: Some(&rm),
                running_var: Some(&rv),
            },
            &BatchNormOutputs {
                y: &y,
                saved: Some(&saved),
            },
            Mode::training(training),
        )
        .unwrap();
        c_.queue().submit([enc.finish()]);
        let what = format!("bn {layout:?} {dtype} {n}x{c}x{sp:?} training={training}");
        let (atol, rtol) = tol(dtype);
        assert_close(
            &format!("{what} y"),
            &c_.download(&y).unwrap(),
            &want_in_layout(&want.y, n, c, hw, layout),
            atol,
            rtol,
        );
        assert_close(
            &format!("{what} running_mean"),
            &c_.download(&rm).unwrap(),
            &want.running_mean,
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("{what} running_var"),
            &c_.download(&rv).unwrap(),
            &want.running_var,
            1e-6,
            1e-5,
        );
        let s = c_.download(&saved).unwrap();
        let means: Vec<f32> = s.iter().step_by(2).copied().collect();
        let rstd: Vec<f32> = s.iter().skip(1).step_by(2).copied().collect();
        let want_rstd: Vec<f64> = want.var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
        assert_close(
            &format!("{what} saved mean"),
            &means,
            &want.mean,
            1e-5,
            1e-5,
        );
        assert_close(&format!("{what} saved rstd"), &rstd, &want_rstd, 1e-5, 1e-4);
    }
}

/// One test per (layout, dtype, shape).
macro_rules! batch_norm_tests {
    ($($name:ident: $layout:ident, $dtype:ident, $n:expr, $c:expr, $sp:expr;)*) => {
        $(
            #[test]
            fn $name() {
                batch_norm_case(Layout::$layout, DType::$dtype, $n, $c, $sp);
            }
        )*
    };
}

batch_norm_tests! {
    batch_norm_nchw_f32_2x3x4x5: Nchw, F32, 2, 3, &[4, 5];
    batch_norm_nchw_f16_2x3x4x5: Nchw, F16, 2, 3, &[4, 5];
    batch_norm_nhwc_f32_2x3x4x5: Nhwc, F32, 2, 3, &[4, 5];
    batch_norm_nhwc_f16_2x3x4x5: Nhwc, F16, 2, 3, &[4, 5];
    batch_norm_nchw_f32_16x32: Nchw, F32, 16, 32, &[];
    batch_norm_nchw_f16_16x32: Nchw, F16, 16, 32, &[];
    batch_norm_nhwc_f32_16x32: Nhwc, F32, 16, 32, &[];
    batch_norm_nhwc_f16_16x32: Nhwc, F16, 16, 32, &[];
    batch_norm_nchw_f32_4x8x10: Nchw, F32, 4, 8, &[10];
    batch_norm_nchw_f16_4x8x10: Nchw, F16, 4, 8, &[10];
    batch_norm_nhwc_f32_4x8x10: Nhwc, F32, 4, 8, &[10];
    batch_norm_nhwc_f16_4x8x10: Nhwc, F16, 4, 8, &[10];
    batch_norm_nchw_f32_8x64x7x7: Nchw, F32, 8, 64, &[7, 7];
    batch_norm_nchw_f16_8x64x7x7: Nchw, F16, 8, 64, &[7, 7];
    batch_norm_nhwc_f32_8x64x7x7: Nhwc, F32, 8, 64, &[7, 7];
    batch_norm_nhwc_f16_8x64x7x7: Nhwc, F16, 8, 64, &[7, 7];
    batch_norm_nchw_f32_3x5x1: Nchw, F32, 3, 5, &[1];
    batch_norm_nchw_f16_3x5x1: Nchw, F16, 3, 5, &[1];
    batch_norm_nhwc_f32_3x5x1: Nhwc, F32, 3, 5, &[1];
    batch_norm_nhwc_f16_3x5x1: Nhwc, F16, 3, 5, &[1];
    batch_norm_nchw_f32_2x4x3x3: Nchw, F32, 2, 4, &[3, 3];
    batch_norm_nchw_f16_2x4x3x3: Nchw, F16, 2, 4, &[3, 3];
    batch_norm_nhwc_f32_2x4x3x3: Nhwc, F32, 2, 4, &[3, 3];
    batch_norm_nhwc_f16_2x4x3x3: Nhwc, F16, 2, 4, &[3, 3];
}

#[test]
fn running_statistics_over_several_steps() {
    // Three training steps in a row update the running statistics in place; momentum=None is
    // the cumulative average (num_batches_tracked on the GPU).
    let c_ = ctx();
    let (n, c, hw) = (4, 6, 9);
    for momentum in [Some(0.25), None] {
        for unbiased in [true, false] {
            let bn = BatchNorm::new(
                c_,
                BatchNormConfig {
                    momentum,
                    running_var_unbiased: unbiased,
                    ..Default::default()
                },
            )
            .unwrap();
            let rm = c_.upload_f32(&vec![0.0; c], &[c]).unwrap();
            let rv = c_.upload_f32(&vec![1.0; c], &[c]).unwrap();
            let (mut want_rm, mut want_rv) = (vec![0.0; c], vec![1.0; c]);
            for step in 1..=3u64 {
                let x: Vec<f32> = noise(step * 7, n * c * hw)
                    .iter()
                    .map(|v| v * step as f32 + 1.0)
                    .collect();
                let xt = c_.upload_f32(&x, &[n, c, 3, 3]).unwrap();
                let inputs = BatchNormInputs {
                    x: &xt,
                    weight: None,
                    bias: None,
                    running_mean: Some(&rm),
                    running_var: Some(&rv),
                };
                let y = bn.forward(&inputs, Mode::Train).unwrap();
                let m = momentum.map(f64::from).unwrap_or(1.0 / step as f64);
                let want = reference::batch_norm(
                    &round_to(DType::F32, &x),
                    n,
                    c,
                    hw,
                    None,
                    None,
                    &want_rm,
                    &want_rv,
                    true,
                    m,
                    unbiased,
                    1e-5,
                );
                (want_rm, want_rv) = (want.running_mean.clone(), want.running_var.clone());
                let what = format!("step {step} momentum {momentum:?} unbiased {unbiased}");
                assert_close(
                    &format!("{what} y"),
                    &c_.download(&y).unwrap(),
                    &want.y,
                    2e-5,
                    1e-4,
                );
                assert_close(
                    &format!("{what} rm"),
                    &c_.download(&rm).unwrap(),
                    &want_rm,
                    1e-6,
                    1e-5,
                );
                assert_close(
                    &format!("{what} rv"),
                    &c_.download(&rv).unwrap(),
                    &want_rv,
                    1e-6,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn nchw_and_nhwc_give_the_same_result() {
    let c_ = ctx();
    let (n, c, sp) = (3, 16, [5usize, 6]);
    let hw = 30;
    let x = noise(99, n * c * hw);
    let w = noise(98, c);
    let mut outs = Vec::new();
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let gn = GroupNorm::new(
            c_,
            GroupNormConfig {
                layout,
                activation: Activation::Silu,
                ..GroupNormConfig::new(4)
            },
        )
        .unwrap();
        let wt = c_.upload_f32(&w, &[c]).unwrap();
        let y = gn
            .forward(&NormInputs {
                x: &upload_layout(&x, n, c, &sp, layout, DType::F32),
                weight: Some(&wt),
                bias: None,
            })
            .unwrap();
        let y = c_.download(&y).unwrap();
        // Bring NHWC back to NCHW to compare element by element.
        let y: Vec<f32> = match layout {
            Layout::Nchw => y,
            Layout::Nhwc => (0..n * c * hw)
                .map(|i| {
                    let (b, rest) = (i / (c * hw), i % (c * hw));
                    let (ch, k) = (rest / hw, rest % hw);
                    y[(b * hw + k) * c + ch]
                })
                .collect(),
        };
        outs.push(y);
    }
    let want: Vec<f64> = outs[0].iter().map(|&v| v as f64).collect();
    assert_close("nhwc vs nchw", &outs[1], &want, 1e-6, 1e-5);
    let r = reference::group_norm(
        &round_to(DType::F32, &x),
        n,
        c,
        hw,
        4,
        Some(&round_to(DType::F32, &w)),
        None,
        1e-5,
        true,
    );
    assert_close("gn+silu", &outs[0], &r, 2e-5, 1e-4);
}

/// GroupNorm (g groups) and InstanceNorm in one layout, dtype and shape against the reference.
fn group_and_instance_case(
    layout: Layout,
    dtype: DType,
    n: usize,
    c: usize,
    sp: &[usize],
    g: usize,
) {
    let c_ = ctx();
    let hw: usize = sp.iter().product();
    let x: Vec<f32> = noise((n * c * hw + g) as u64, n * c * hw)
        .iter()
        .map(|v| v * 2.0 - 0.3)
        .collect();
    let (w, b) = (noise(11, c), noise(12, c));
    let xd = round_to(dtype, &x);
    let (wd, bd) = (round_to(DType::F32, &w), round_to(DType::F32, &b));
    let xt = upload_layout(&x, n, c, sp, layout, dtype);
    let (wt, bt) = (
        c_.upload_f32(&w, &[c]).unwrap(),
        c_.upload_f32(&b, &[c]).unwrap(),
    );
    let inputs = NormInputs {
        x: &xt,
        weight: Some(&wt),
        bias: Some(&bt),
    };
    let (atol, rtol) = tol(dtype);
    let gn = GroupNorm::new(
        c_,
        GroupNormConfig {
            layout,
            dtype,
            ..GroupNormConfig::new(g)
        },
    )
    .unwrap();
    let want = reference::group_norm(&xd, n, c, hw, g, Some(&wd), Some(&bd), 1e-5, false);
    let what = format!("gn {layout:?} {dtype} {n}x{c}x{sp:?} g{g}");
    assert_close(
        &what,
        &c_.download(&gn.forward(&inputs).unwrap()).unwrap(),
        &want_in_layout(&want, n, c, hw, layout),
        atol,
        rtol,
    );
    let inorm = InstanceNorm::new(
        c_,
        InstanceNormConfig {
            layout,
            dtype,
            ..Default::default()
        },
    )
    .unwrap();
    let want = reference::instance_norm(&xd, n, c, hw, Some(&wd), Some(&bd), 1e-5);
    let what = format!("in {layout:?} {dtype} {n}x{c}x{sp:?}");
    assert_close(
        &what,
        &c_.download(&inorm.forward(&inputs).unwrap()).unwrap(),
        &want_in_layout(&want, n, c, hw, layout),
        atol,
        rtol,
    );
}

/// One test per (layout, dtype, shape, groups).
macro_rules! group_norm_tests {
    ($($name:ident: $layout:ident, $dtype:ident, $n:expr, $c:expr, $sp:expr, $g:expr;)*) => {
        $(
            #[test]
            fn $name() {
                group_and_instance_case(Layout::$layout, DType::$dtype, $n, $c, $sp, $g);
            }
        )*
    };
}

group_norm_tests! {
    group_norm_nchw_f32_2x32x8x8_g8: Nchw, F32, 2, 32, &[8, 8], 8;
    group_norm_nchw_f16_2x32x8x8_g8: Nchw, F16, 2, 32, &[8, 8], 8;
    group_norm_nhwc_f32_2x32x8x8_g8: Nhwc, F32, 2, 32, &[8, 8], 8;
    group_norm_nhwc_f16_2x32x8x8_g8: Nhwc, F16, 2, 32, &[8, 8], 8;
    group_norm_nchw_f32_1x64x16x16_g32: Nchw, F32, 1, 64, &[16, 16], 32;
    group_norm_nchw_f16_1x64x16x16_g32: Nchw, F16, 1, 64, &[16, 16], 32;
    group_norm_nhwc_f32_1x64x16x16_g32: Nhwc, F32, 1, 64, &[16, 16], 32;
    group_norm_nhwc_f16_1x64x16x16_g32: Nhwc, F16, 1, 64, &[16, 16], 32;
    group_norm_nchw_f32_2x6x5_g1: Nchw, F32, 2, 6, &[5], 1;
    group_norm_nchw_f16_2x6x5_g1: Nchw, F16, 2, 6, &[5], 1;
    group_norm_nhwc_f32_2x6x5_g1: Nhwc, F32, 2, 6, &[5], 1;
    group_norm_nhwc_f16_2x6x5_g1: Nhwc, F16, 2, 6, &[5], 1;
    group_norm_nchw_f32_3x4x2x2_g2: Nchw, F32, 3, 4, &[2, 2], 2;
    group_norm_nchw_f16_3x4x2x2_g2: Nchw, F16, 3, 4, &[2, 2], 2;
    group_norm_nhwc_f32_3x4x2x2_g2: Nhwc, F32, 3, 4, &[2, 2], 2;
    group_norm_nhwc_f16_3x4x2x2_g2: Nhwc, F16, 3, 4, &[2, 2], 2;
    group_norm_nchw_f32_2x6x5_g6: Nchw, F32, 2, 6, &[5], 6;
    group_norm_nchw_f16_2x6x5_g6: Nchw, F16, 2, 6, &[5], 6;
    group_norm_nhwc_f32_2x6x5_g6: Nhwc, F32, 2, 6, &[5], 6;
    group_norm_nhwc_f16_2x6x5_g6: Nhwc, F16, 2, 6, &[5], 6;
    // Channels-last groups reduced per channel, then merged: 10 channels per group (Stable
    // Diffusion's 320 / 32), 3 (a vector of four channels spans two groups), 320 channels.
    group_norm_nhwc_f32_2x20x6x5_g2: Nhwc, F32, 2, 20, &[6, 5], 2;
    group_norm_nhwc_f16_2x20x6x5_g2: Nhwc, F16, 2, 20, &[6, 5], 2;
    group_norm_nhwc_f32_3x12x9_g4: Nhwc, F32, 3, 12, &[9], 4;
    group_norm_nhwc_f16_3x12x9_g4: Nhwc, F16, 3, 12, &[9], 4;
    group_norm_nhwc_f32_2x320x8x8_g32: Nhwc, F32, 2, 320, &[8, 8], 32;
    // Channels-last apply blocks of tokens that cross samples (7 tokens per sample) and end
    // short of a block (35 and 162 tokens).
    group_norm_nhwc_f32_5x12x7_g3: Nhwc, F32, 5, 12, &[7], 3;
    group_norm_nhwc_f16_5x12x7_g3: Nhwc, F16, 5, 12, &[7], 3;
    group_norm_nhwc_f32_2x64x9x9_g32: Nhwc, F32, 2, 64, &[9, 9], 32;
}

#[test]
fn huge_reductions_with_few_channels() {
    // C = 3, N*HW = 1.5M per channel: many tiles per slot, merged in order; with an offset.
    let c_ = ctx();
    let (n, c, sp) = (2, 3, [512usize, 512]);
    let hw = 512 * 512;
    let x: Vec<f32> = noise(5, n * c * hw).iter().map(|v| v + 100.0).collect();
    let xd = round_to(DType::F32, &x);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let bn = BatchNorm::new(
            c_,
            BatchNormConfig {
                layout,
                ..Default::default()
            },
        )
        .unwrap();
        let xt = upload_layout(&x, n, c, &sp, layout, DType::F32);
        let y = bn
            .forward(
                &BatchNormInputs {
                    x: &xt,
                    weight: None,
                    bias: None,
                    running_mean: None,
                    running_var: None,
                },
                Mode::Train,
            )
            .unwrap();
        let want = reference::batch_norm(
            &xd, n, c, hw, None, None, &[0.0; 3], &[1.0; 3], true, 0.1, true, 1e-5,
        );
        // f32 rounding of x itself (|x| ~ 100, spread ~0.6) bounds the attainable accuracy.
        assert_close(
            &format!("bn huge {layout:?}"),
            &c_.download(&y).unwrap(),
            &want_in_layout(&want.y, n, c, hw, layout),
            2e-4,
            1e-4,
        );
    }
}

#[test]
fn batch_family_bad_input_gets_typed_errors() {
    let c_ = ctx();
    let x = c_.upload_f32(&noise(1, 2 * 6 * 4), &[2, 6, 4]).unwrap();
    let gn = GroupNorm::new(c_, GroupNormConfig::new(4)).unwrap();
    let r = gn.forward(&NormInputs {
        x: &x,
        weight: None,
        bias: None,
    });
    assert!(
        matches!(
            r,
            Err(Error::InvalidParameter {
                name: "num_groups",
                ..
            })
        ),
        "{r:?}"
    );

    let bn = BatchNorm::new(c_, BatchNormConfig::default()).unwrap();
    let none = BatchNormInputs {
        x: &x,
        weight: None,
        bias: None,
        running_mean: None,
        running_var: None,
    };
    assert!(matches!(
        bn.forward(&none, Mode::Infer),
        Err(Error::InvalidParameter {
            name: "running statistics",
            ..
        })
    ));
    let w_bad = c_.upload_f32(&[1.0; 5], &[5]).unwrap();
    assert!(matches!(
        bn.forward(
            &BatchNormInputs {
                weight: Some(&w_bad),
                ..none
            },
            Mode::Train
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let w_f16 = c_.upload(&[1.0; 6], &[6], DType::F16).unwrap();
    assert!(matches!(
        bn.forward(
            &BatchNormInputs {
                weight: Some(&w_f16),
                ..none
            },
            Mode::Train
        ),
        Err(Error::DTypeMismatch { .. })
    ));
    let one = c_.upload_f32(&[1.0, 2.0, 3.0], &[1, 3]).unwrap();
    let (rm, rv) = (
        c_.upload_f32(&[0.0; 3], &[3]).unwrap(),
        c_.upload_f32(&[1.0; 3], &[3]).unwrap(),
    );
    let r = bn.forward(
        &BatchNormInputs {
            x: &one,
            weight: None,
            bias: None,
            running_mean: Some(&rm),
            running_var: Some(&rv),
        },
        Mode::Train,
    );
    assert!(
        matches!(r, Err(Error::InvalidParameter { name: "batch", .. })),
        "{r:?}"
    );
    let bad_m = BatchNorm::new(
        c_,
        BatchNormConfig {
            momentum: Some(1.5),
            ..Default::default()
        },
    )
    .unwrap();
    let x2 = c_.upload_f32(&noise(2, 12), &[4, 3]).unwrap();
    let r = bad_m.forward(
        &BatchNormInputs {
            x: &x2,
            weight: None,
            bias: None,
            running_mean: Some(&rm),
            running_var: Some(&rv),
        },
        Mode::Train,
    );
    assert!(
        matches!(
            r,
            Err(Error::InvalidParameter {
                name: "momentum",
                ..
            })
        ),
        "{r:?}"
    );
    let vec_x = c_.upload_f32(&[1.0; 4], &[4]).unwrap();
    assert!(matches!(
        bn.forward(&BatchNormInputs { x: &vec_x, ..none }, Mode::Train),
        Err(Error::AxisOutOfRange { .. })
    ));
    assert!(matches!(
        BatchNorm::new(
            c_,
            BatchNormConfig {
                eps: -1.0,
                ..Default::default()
            }
        ),
        Err(Error::InvalidParameter { name: "eps", .. })
    ));

    // Empty batches are a no-op.
    let empty = c_.empty(&[0, 6, 4], DType::F32).unwrap();
    let y = gn_ok()
        .forward(&NormInputs {
            x: &empty,
            weight: None,
            bias: None,
        })
        .unwrap();
    assert!(c_.download(&y).unwrap().is_empty());
}

fn gn_ok() -> GroupNorm {
    GroupNorm::new(ctx(), GroupNormConfig::new(3)).unwrap()
}

#[test]
fn zero_variance_slots_with_an_offset_give_the_bias() {
    // One element per instance: x - mean is exactly 0, so y is the bias. Folding the mean into
    // the shift (x * s + (b - mean * s)) would leave an error of ulp(mean * rstd) ~ 1e-3 here.
    let c_ = ctx();
    let (n, c) = (4, 8);
    let x: Vec<f32> = noise(8, n * c).iter().map(|v| v + 10.0).collect();
    let b = noise(9, c);
    let inorm = InstanceNorm::new(c_, InstanceNormConfig::default()).unwrap();
    let (xt, bt) = (
        c_.upload_f32(&x, &[n, c, 1]).unwrap(),
        c_.upload_f32(&b, &[c]).unwrap(),
    );
    let y = c_
        .download(
            &inorm
                .forward(&NormInputs {
                    x: &xt,
                    weight: None,
                    bias: Some(&bt),
                })
                .unwrap(),
        )
        .unwrap();
    let want: Vec<f64> = (0..n * c).map(|i| b[i % c] as f64).collect();
    assert_close("instance norm of single elements", &y, &want, 1e-6, 0.0);
}

#[test]
fn lp_norm_along_any_axis() {
    let c_ = ctx();
    for dtype in [DType::F32, DType::F16] {
        for (shape, axis) in [
            (&[4usize, 7][..], -1isize),
            (&[3, 5, 4], 1),
            (&[2, 3, 8], -1),
            (&[6, 2], 0),
            (&[2, 3, 4, 5], 2),
        ] {
            let numel: usize = shape.iter().product();
            let mut x = noise(numel as u64 * 7 + axis.unsigned_abs() as u64, numel);
            // A slice that is all zero must give zeros, not NaN.
            if axis == -1 {
                let n = shape[shape.len() - 1];
                x[..n].iter_mut().for_each(|v| *v = 0.0);
            }
            for p in [1u32, 2] {
                let op = LpNorm::new(c_, wgnorm::LpNormConfig { axis, p, dtype }).unwrap();
                let y = op.forward(&c_.upload(&x, shape, dtype).unwrap()).unwrap();
                let want = reference::lp_norm(&round_to(dtype, &x), shape, axis, p);
                let (atol, rtol) = tol(dtype);
                assert_close(
                    &format!("lp{p} {dtype} {shape:?} axis {axis}"),
                    &c_.download(&y).unwrap(),
                    &want,
                    atol,
                    rtol,
                );
            }
        }
    }
    assert!(matches!(
        LpNorm::new(
            c_,
            wgnorm::LpNormConfig {
                axis: -1,
                p: 3,
                dtype: DType::F32
            }
        ),
        Err(Error::InvalidParameter { name: "p", .. })
    ));
}

#[test]
fn mean_variance_norm_over_axes() {
    let c_ = ctx();
    let cases: &[(&[usize], &[isize])] = &[
        (&[2, 3, 4, 5], &[0, 2, 3]),
        (&[2, 3, 4, 5], &[1, 2, 3]),
        (&[2, 3, 4, 5], &[0, 1, 2, 3]),
        (&[4, 6, 5], &[1]),
        (&[4, 6, 5], &[0, 2]),
        (&[3, 4, 5, 6], &[1, 3]),
        // A size-1 dim between reduced ones joins their run (found by the fuzzer: it was
        // refused as alternating too often).
        (&[5, 1, 7, 3], &[0, 2]),
        (&[1, 4, 1, 6, 1], &[0, 3]),
    ];
    for &(shape, axes) in cases {
        let numel: usize = shape.iter().product();
        let x: Vec<f32> = noise(numel as u64, numel)
            .iter()
            .map(|v| v * 4.0 + 2.0)
            .collect();
        let op = MeanVarianceNorm::new(
            c_,
            wgnorm::MeanVarianceNormConfig {
                axes: axes.to_vec(),
                eps: 1e-9,
                dtype: DType::F32,
            },
        )
        .unwrap();
        let y = op.forward(&c_.upload_f32(&x, shape).unwrap()).unwrap();
        let want = reference::mean_variance_norm(&round_to(DType::F32, &x), shape, axes, 1e-9);
        assert_close(
            &format!("mvn {shape:?} {axes:?}"),
            &c_.download(&y).unwrap(),
            &want,
            2e-5,
            1e-4,
        );
    }
    // Kept and reduced dims alternating too often need a transpose first: a typed error.
    let op = MeanVarianceNorm::new(
        c_,
        wgnorm::MeanVarianceNormConfig {
            axes: [0, 2, 4].to_vec(),
            eps: 1e-9,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let x = c_.empty(&[2, 2, 2, 2, 2, 2], DType::F32).unwrap();
    assert!(matches!(
        op.forward(&x),
        Err(Error::InvalidParameter { name: "axes", .. })
    ));
    // An axis listed twice (-1 and 2 of a 3-D tensor) is refused, as PyTorch and NumPy do.
    let op = MeanVarianceNorm::new(
        c_,
        wgnorm::MeanVarianceNormConfig {
            axes: [-1, 2].to_vec(),
            eps: 1e-9,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let x = c_.empty(&[2, 3, 4], DType::F32).unwrap();
    let r = op.forward(&x);
    assert!(
        matches!(r, Err(Error::InvalidParameter { name: "axes", .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn ibn_and_evonorm_b0_training_on_one_value_per_channel_is_typed() {
    // The unbiased batch variance fed to the running statistics needs two values per channel
    // (found by the fuzzer: IBN accepted a [1, 1] batch and wrote NaN running statistics).
    let c_ = ctx();
    let x = c_.upload_f32(&[0.5, -0.5], &[1, 2, 1, 1]).unwrap();
    let ones = c_.upload_f32(&[1.0, 1.0], &[2]).unwrap();
    let zeros = c_.upload_f32(&[0.0, 0.0], &[2]).unwrap();
    let (rm, rv) = (
        c_.upload_f32(&[0.0], &[1]).unwrap(),
        c_.upload_f32(&[1.0], &[1]).unwrap(),
    );
    let ibn = wgnorm::IbnNorm::new(c_, wgnorm::IbnConfig::default()).unwrap();
    let inputs = wgnorm::IbnInputs {
        x: &x,
        weight: &ones,
        bias: &zeros,
        running_mean: &rm,
        running_var: &rv,
    };
    let r = ibn.forward(&inputs, Mode::Train);
    assert!(
        matches!(r, Err(Error::InvalidParameter { name: "batch", .. })),
        "{:?}",
        r.err()
    );
    // Inference reads the running statistics: fine.
    assert!(ibn.forward(&inputs, Mode::Infer).is_ok());
    let evo = wgnorm::EvoNormB0::new(c_, wgnorm::EvoNormB0Config::default()).unwrap();
    let inputs = wgnorm::EvoNormB0Inputs {
        x: &x,
        weight: &ones,
        bias: &zeros,
        v: &ones,
        running_var: &ones,
    };
    let r = evo.forward(&inputs, Mode::Train);
    assert!(
        matches!(r, Err(Error::InvalidParameter { name: "batch", .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn instance_norm_tracking_running_statistics() {
    // PyTorch track_running_stats=True: the running statistics move towards the batch average of
    // the instance means and unbiased variances; inference then normalizes with them.
    let c_ = ctx();
    let (n, c, sp) = (3, 4, [5usize, 4]);
    let hw = 20;
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let inorm = InstanceNorm::new(
            c_,
            InstanceNormConfig {
                layout,
                momentum: 0.2,
                ..Default::default()
            },
        )
        .unwrap();
        let rm = c_.upload_f32(&[0.0; 4], &[c]).unwrap();
        let rv = c_.upload_f32(&[1.0; 4], &[c]).unwrap();
        let (mut want_rm, mut want_rv) = (vec![0.0f64; c], vec![1.0f64; c]);
        let w = noise(71, c);
        let wt = c_.upload_f32(&w, &[c]).unwrap();
        for step in 1..=2u64 {
            let x: Vec<f32> = noise(70 + step, n * c * hw)
                .iter()
                .map(|v| v * 2.0 + step as f32)
                .collect();
            let xd = round_to(DType::F32, &x);
            let xt = upload_layout(&x, n, c, &sp, layout, DType::F32);
            let y = c_.empty(xt.shape(), DType::F32).unwrap();
            let mut enc = c_.device().create_command_encoder(&Default::default());
            let inputs = NormInputs {
                x: &xt,
                weight: Some(&wt),
                bias: None,
            };
            inorm
                .encode_tracked(
                    &mut enc,
                    &inputs,
                    &rm,
                    &rv,
                    &NormOutputs { y: &y, saved: None },
                    Mode::Train,
                )
                .unwrap();
            c_.queue().submit([enc.finish()]);
            for ch in 0..c {
                let (mut m_sum, mut v_sum) = (0.0, 0.0);
                for i in 0..n {
                    let vals = &xd[(i * c + ch) * hw..(i * c + ch + 1) * hw];
                    let m = vals.iter().sum::<f64>() / hw as f64;
                    m_sum += m;
                    v_sum += vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (hw - 1) as f64;
                }
                want_rm[ch] = 0.8 * want_rm[ch] + 0.2 * m_sum / n as f64;
                want_rv[ch] = 0.8 * want_rv[ch] + 0.2 * v_sum / n as f64;
            }
            let want_y = reference::instance_norm(
                &xd,
                n,
                c,
                hw,
                Some(&round_to(DType::F32, &w)),
                None,
                1e-5,
            );
            let what = format!("tracked IN {layout:?} step {step}");
            assert_close(
                &format!("{what} y"),
                &c_.download(&y).unwrap(),
                &want_in_layout(&want_y, n, c, hw, layout),
                2e-5,
                1e-4,
            );
            assert_close(
                &format!("{what} running_mean"),
                &c_.download(&rm).unwrap(),
                &want_rm,
                1e-6,
                1e-5,
            );
            assert_close(
                &format!("{what} running_var"),
                &c_.download(&rv).unwrap(),
                &want_rv,
                1e-6,
                1e-5,
            );
        }
        // Inference with the running statistics: BatchNorm's inference formula per channel.
        let x = noise(80, n * c * hw);
        let xt = upload_layout(&x, n, c, &sp, layout, DType::F32);
        let y = c_.empty(xt.shape(), DType::F32).unwrap();
        let mut enc = c_.device().create_command_encoder(&Default::default());
        inorm
            .encode_tracked(
                &mut enc,
                &NormInputs {
                    x: &xt,
                    weight: Some(&wt),
                    bias: None,
                },
                &rm,
                &rv,
                &NormOutputs { y: &y, saved: None },
                Mode::Infer,
            )
            .unwrap();
        c_.queue().submit([enc.finish()]);
        let want = reference::batch_norm(
            &round_to(DType::F32, &x),
            n,
            c,
            hw,
            Some(&round_to(DType::F32, &w)),
            None,
            &want_rm,
            &want_rv,
            false,
            0.1,
            true,
            1e-5,
        );
        assert_close(
            &format!("tracked IN {layout:?} inference"),
            &c_.download(&y).unwrap(),
            &want_in_layout(&want.y, n, c, hw, layout),
            2e-5,
            1e-4,
        );
    }
}

#[test]
fn test_time_bn_mixes_source_and_batch_statistics() {
    let c_ = ctx();
    let (n, c, hw) = (4, 5, 9);
    let x: Vec<f32> = noise(61, n * c * hw)
        .iter()
        .map(|v| v * 2.0 + 1.0)
        .collect();
    let xd = round_to(DType::F32, &x);
    let (rm0, rv0) = (
        noise(62, c),
        noise(63, c)
            .iter()
            .map(|v| v.abs() + 0.5)
            .collect::<Vec<f32>>(),
    );
    let w = noise(64, c);
    for w_src in [0.0f32, 0.3, 1.0] {
        let bn = TestTimeBn::new(
            c_,
            TestTimeBnConfig {
                w_src,
                ..Default::default()
            },
        )
        .unwrap();
        let xt = c_.upload_f32(&x, &[n, c, 3, 3]).unwrap();
        let (rm, rv) = (
            c_.upload_f32(&rm0, &[c]).unwrap(),
            c_.upload_f32(&rv0, &[c]).unwrap(),
        );
        let wt = c_.upload_f32(&w, &[c]).unwrap();
        let y = c_.empty(&[n, c, 3, 3], DType::F32).unwrap();
        let mut enc = c_.device().create_command_encoder(&Default::default());
        let inputs = BatchNormInputs {
            x: &xt,
            weight: Some(&wt),
            bias: None,
            running_mean: Some(&rm),
            running_var: Some(&rv),
        };
        bn.encode(&mut enc, &inputs, &BatchNormOutputs { y: &y, saved: None })
            .unwrap();
        c_.queue().submit([enc.finish()]);
        let want_y = reference::test_time_bn(
            &xd,
            n,
            c,
            hw,
            Some(&round_to(DType::F32, &w)),
            None,
            &round_to(DType::F32, &rm0),
            &round_to(DType::F32, &rv0),
            w_src as f64,
            1e-5,
        );
        assert_close(
            &format!("tbn w_src={w_src}"),
            &c_.download(&y).unwrap(),
            &want_y,
            2e-5,
            1e-4,
        );
        // Source statistics are not touched.
        assert_close(
            "running_mean untouched",
            &c_.download(&rm).unwrap(),
            &round_to(DType::F32, &rm0),
            0.0,
            0.0,
        );
    }
    // A weight outside [0, 1] is refused when the op is made.
    let r = TestTimeBn::new(
        c_,
        TestTimeBnConfig {
            w_src: 1.5,
            ..Default::default()
        },
    );
    assert!(
        matches!(r, Err(Error::InvalidParameter { name: "w_src", .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn rep_batch_norm_adds_alpha_x() {
    // RepBN on tokens [B, T, C]: BatchNorm over B and T per channel (channels-last) + alpha * x.
    let c_ = ctx();
    let (b, t, c) = (3, 10, 8);
    let x: Vec<f32> = noise(91, b * t * c).iter().map(|v| v * 3.0).collect();
    let alpha = 0.7f32;
    for training in [true, false] {
        let bn = RepBatchNorm::new(
            c_,
            BatchNormConfig {
                layout: Layout::Nhwc,
                ..Default::default()
            },
        )
        .unwrap();
        let xt = c_.upload_f32(&x, &[b, t, c]).unwrap();
        let (rm0, rv0) = (noise(92, c), vec![1.5f32; c]);
        let (rm, rv) = (
            c_.upload_f32(&rm0, &[c]).unwrap(),
            c_.upload_f32(&rv0, &[c]).unwrap(),
        );
        let at = c_.upload_f32(&[alpha], &[1]).unwrap();
        let y = c_.empty(&[b, t, c], DType::F32).unwrap();
        let mut enc = c_.device().create_command_encoder(&Default::default());
        let inputs = BatchNormInputs {
            x: &xt,
            weight: None,
            bias: None,
            running_mean: Some(&rm),
            running_var: Some(&rv),
        };
        bn.encode(
            &mut enc,
            &inputs,
            &at,
            &BatchNormOutputs { y: &y, saved: None },
            Mode::training(training),
        )
        .unwrap();
        c_.queue().submit([enc.finish()]);
        // [B, T, C] row-major is NCHW with N = B*T and one spatial element: the same memory.
        let xd = round_to(DType::F32, &x);
        let want = reference::batch_norm(
            &xd,
            b * t,
            c,
            1,
            None,
            None,
            &round_to(DType::F32, &rm0),
            &round_to(DType::F32, &rv0),
            training,
            0.1,
            true,
            1e-5,
        );
        let want_y: Vec<f64> = want
            .y
            .iter()
            .zip(&xd)
            .map(|(yv, xv)| yv + alpha as f64 * xv)
            .collect();
        assert_close(
            &format!("repbn training={training}"),
            &c_.download(&y).unwrap(),
            &want_y,
            2e-5,
            1e-4,
        );
        assert_close(
            "repbn running_mean",
            &c_.download(&rm).unwrap(),
            &want.running_mean,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn ghost_batch_norm_per_chunk_statistics_and_sequential_updates() {
    let c_ = ctx();
    let (n, c, sp, g) = (6, 4, [3usize, 3], 2);
    let hw = 9;
    let x: Vec<f32> = noise(51, n * c * hw)
        .iter()
        .enumerate()
        .map(|(i, v)| v + (i / (c * hw)) as f32)
        .collect();
    let xd = round_to(DType::F32, &x);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let ghost = |ghost_size| {
            GhostBatchNorm::new(
                c_,
                GhostBatchNormConfig {
                    batch_norm: BatchNormConfig {
                        layout,
                        momentum: Some(0.2),
                        ..Default::default()
                    },
                    ghost_size,
                },
            )
            .unwrap()
        };
        let bn = ghost(g);
        let xt = upload_layout(&x, n, c, &sp, layout, DType::F32);
        let (rm, rv) = (
            c_.upload_f32(&[0.0; 4], &[c]).unwrap(),
            c_.upload_f32(&[1.0; 4], &[c]).unwrap(),
        );
        let y = c_.empty(xt.shape(), DType::F32).unwrap();
        let mut enc = c_.device().create_command_encoder(&Default::default());
        let inputs = BatchNormInputs {
            x: &xt,
            weight: None,
            bias: None,
            running_mean: Some(&rm),
            running_var: Some(&rv),
        };
        bn.encode(
            &mut enc,
            &inputs,
            &BatchNormOutputs { y: &y, saved: None },
            Mode::Train,
        )
        .unwrap();
        c_.queue().submit([enc.finish()]);
        // Reference: BatchNorm on each chunk in turn, threading the running statistics.
        let (mut want_rm, mut want_rv, mut want_y) = (vec![0.0; c], vec![1.0; c], Vec::new());
        for chunk in xd.chunks(g * c * hw) {
            let o = reference::batch_norm(
                chunk, g, c, hw, None, None, &want_rm, &want_rv, true, 0.2, true, 1e-5,
            );
            want_y.extend(o.y);
            (want_rm, want_rv) = (o.running_mean, o.running_var);
        }
        let what = format!("ghost {layout:?}");
        assert_close(
            &format!("{what} y"),
            &c_.download(&y).unwrap(),
            &want_in_layout(&want_y, n, c, hw, layout),
            2e-5,
            1e-4,
        );
        assert_close(
            &format!("{what} running_mean"),
            &c_.download(&rm).unwrap(),
            &want_rm,
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("{what} running_var"),
            &c_.download(&rv).unwrap(),
            &want_rv,
            1e-6,
            1e-5,
        );
        let r = ghost(4).encode(
            &mut c_.device().create_command_encoder(&Default::default()),
            &inputs,
            &BatchNormOutputs { y: &y, saved: None },
            Mode::Train,
        );
        assert!(
            matches!(
                r,
                Err(Error::InvalidParameter {
                    name: "ghost_size",
                    ..
                })
            ),
            "{r:?}"
        );
    }
}

#[test]
fn weight_standardization_variants() {
    use wgnorm::{WeightStandardization, WsVariant};
    let c_ = ctx();
    let (o, k) = (6, 3 * 3 * 5);
    let w: Vec<f32> = noise(33, o * k).iter().map(|v| v * 0.2 + 0.05).collect();
    let wd = round_to(DType::F32, &w);
    let eps = 1e-5;
    for (variant, unbiased, inside) in [
        (WsVariant::UnbiasedStdPlusEps, true, false),
        (WsVariant::UnbiasedVarInsideSqrt, true, true),
        (WsVariant::BiasedStdPlusEps, false, false),
        (WsVariant::BiasedVarInsideSqrt, false, true),
    ] {
        let op = WeightStandardization::new(
            c_,
            wgnorm::WeightStandardizationConfig {
                variant,
                eps: eps as f32,
                dtype: DType::F32,
            },
        )
        .unwrap();
        let y = op
            .forward(&c_.upload_f32(&w, &[o, 5, 3, 3]).unwrap())
            .unwrap();
        let want = reference::weight_standardization(&wd, o, unbiased, inside, eps);
        assert_close(
            &format!("ws {variant:?}"),
            &c_.download(&y).unwrap(),
            &want,
            2e-5,
            1e-4,
        );
    }
}

#[test]
fn evonorm_s0_in_both_layouts() {
    use wgnorm::EvoNormS0;
    let c_ = ctx();
    let (n, c, sp, g) = (2, 8, [3usize, 4], 2);
    let hw = 12;
    let x: Vec<f32> = noise(41, n * c * hw)
        .iter()
        .map(|v| v * 2.0 + 0.3)
        .collect();
    let (v, w, b) = (noise(42, c), noise(43, c), noise(44, c));
    let xd = round_to(DType::F32, &x);
    let f = |v: &[f32]| round_to(DType::F32, v);
    let want = reference::evonorm_s0(&xd, n, c, hw, g, &f(&v), &f(&w), &f(&b), 1e-5);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let op = EvoNormS0::new(
            c_,
            wgnorm::EvoNormS0Config {
                groups: g,
                eps: 1e-5,
                layout,
                dtype: DType::F32,
            },
        )
        .unwrap();
        let xt = upload_layout(&x, n, c, &sp, layout, DType::F32);
        let up = |d: &[f32]| c_.upload_f32(d, &[c]).unwrap();
        let y = op
            .forward(
                &NormInputs {
                    x: &xt,
                    weight: Some(&up(&w)),
                    bias: Some(&up(&b)),
                },
                &up(&v),
            )
            .unwrap();
        assert_close(
            &format!("evonorm_s0 {layout:?}"),
            &c_.download(&y).unwrap(),
            &want_in_layout(&want, n, c, hw, layout),
            2e-5,
            1e-4,
        );
    }
}

#[test]
fn batch_channel_norm_is_bn_then_group_norm_with_group_affine() {
    use wgnorm::batchnorm::{BatchChannelNorm, BatchChannelNormInputs};
    let c_ = ctx();
    let (n, c, hw, g) = (4, 8, 6, 2);
    let x: Vec<f32> = noise(21, n * c * hw)
        .iter()
        .map(|v| v * 3.0 - 1.0)
        .collect();
    let (bw, bb, gw, gb) = (noise(22, c), noise(23, c), noise(24, g), noise(25, g));
    let xd = round_to(DType::F32, &x);
    let f = |v: &[f32]| round_to(DType::F32, v);
    for training in [true, false] {
        let (rm, rv) = (
            c_.upload_f32(&[0.1; 8], &[c]).unwrap(),
            c_.upload_f32(&[1.2; 8], &[c]).unwrap(),
        );
        let op = BatchChannelNorm::new(
            c_,
            wgnorm::batchnorm::BatchChannelNormConfig {
                batch_norm: BatchNormConfig::default(),
                groups: g,
            },
        )
        .unwrap();
        let up = |v: &[f32], len| c_.upload_f32(v, &[len]).unwrap();
        let (bwt, bbt, gwt, gbt) = (up(&bw, c), up(&bb, c), up(&gw, g), up(&gb, g));
        let xt = c_.upload_f32(&x, &[n, c, 2, 3]).unwrap();
        let y = c_.empty(&[n, c, 2, 3], DType::F32).unwrap();
        let inputs = BatchChannelNormInputs {
            x: &xt,
            bn_weight: Some(&bwt),
            bn_bias: Some(&bbt),
            running_mean: Some(&rm),
            running_var: Some(&rv),
            weight: Some(&gwt),
            bias: Some(&gbt),
        };
        let mut enc = c_.device().create_command_encoder(&Default::default());
        op.encode(&mut enc, &inputs, &y, Mode::training(training))
            .unwrap();
        c_.queue().submit([enc.finish()]);
        let bn = reference::batch_norm(
            &xd,
            n,
            c,
            hw,
            Some(&f(&bw)),
            Some(&f(&bb)),
            &[0.1; 8].map(|v: f32| v as f64),
            &[1.2; 8].map(|v: f32| v as f64),
            training,
            0.1,
            true,
            1e-5,
        );
        // Group affine: expand the per-group weight and bias to channels for the reference.
        let cg = c / g;
        let ew: Vec<f64> = (0..c).map(|ch| gw[ch / cg] as f64).collect();
        let eb: Vec<f64> = (0..c).map(|ch| gb[ch / cg] as f64).collect();
        let want = reference::group_norm(&bn.y, n, c, hw, g, Some(&ew), Some(&eb), 1e-5, false);
        assert_close(
            &format!("bcn training={training}"),
            &c_.download(&y).unwrap(),
            &want,
            5e-5,
            2e-4,
        );
        assert_close(
            "bcn running_mean",
            &c_.download(&rm).unwrap(),
            &bn.running_mean,
            1e-6,
            1e-5,
        );
    }
}

/// SLAB's progressive LN -> RepBN: warm-up calls are LN only (RepBN's running statistics stay
/// put), then lambda = iter / total_step falls by 1/total_step per call down to 0; inference is
/// RepBN with the running statistics.
#[test]
fn progressive_rep_norm_schedule() {
    use wgnorm::batchnorm::{ProgressiveRepNorm, ProgressiveRepNormInputs};
    let c_ = ctx();
    let (b, t, c) = (3, 4, 8);
    let tokens = b * t;
    let op = ProgressiveRepNorm::new(
        c_,
        wgnorm::ProgressiveRepNormConfig {
            warm: 2,
            total_step: 3,
            eps: 1e-5,
            momentum: 0.1,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let lw: Vec<f32> = noise(1, c).iter().map(|v| v + 1.0).collect();
    let lb = noise(2, c);
    let bw: Vec<f32> = noise(3, c).iter().map(|v| v * 0.5 + 1.0).collect();
    let bb = noise(4, c);
    let alpha = 0.7f32;
    let up = |v: &[f32]| c_.upload_f32(v, &[v.len()]).unwrap();
    let (lwt, lbt, bwt, bbt, at) = (up(&lw), up(&lb), up(&bw), up(&bb), up(&[alpha]));
    let rm_t = up(&vec![0.0; c]);
    let rv_t = up(&vec![1.0; c]);
    let (mut rm, mut rv) = (vec![0.0f64; c], vec![1.0f64; c]);
    let d = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<f64>>();
    // (training, expected lambda): 2 warm-up calls, then iter 3, 2, 1, 0, 0.
    let plan = [
        (true, 1.0),
        (true, 1.0),
        (true, 1.0),
        (true, 2.0 / 3.0),
        (true, 1.0 / 3.0),
        (true, 0.0),
        (false, 0.0),
    ];
    for (call, &(training, lambda_want)) in plan.iter().enumerate() {
        let x: Vec<f32> = noise(10 + call as u64, tokens * c)
            .iter()
            .map(|v| v * 2.0 + 0.5)
            .collect();
        let xd = d(&x);
        let ln =
            wgnorm_reference::rownorm::layer_norm(&xd, c, Some(&d(&lw)), Some(&d(&lb)), 1e-5).y;
        // RepBN: BN over all tokens per channel (+ running update in training) + alpha * x.
        let uses_bn = !(training && call < 2);
        let mut rep = vec![0.0; tokens * c];
        if uses_bn {
            for ch in 0..c {
                let vals: Vec<f64> = (0..tokens).map(|k| xd[k * c + ch]).collect();
                let mean = vals.iter().sum::<f64>() / tokens as f64;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / tokens as f64;
                let (m, v) = if training {
                    rm[ch] = 0.9 * rm[ch] + 0.1 * mean;
                    rv[ch] = 0.9 * rv[ch] + 0.1 * var * tokens as f64 / (tokens as f64 - 1.0);
                    (mean, var)
                } else {
                    (rm[ch], rv[ch])
                };
                for k in 0..tokens {
                    let i = k * c + ch;
                    rep[i] = (xd[i] - m) / (v + 1e-5).sqrt() * bw[ch] as f64
                        + bb[ch] as f64
                        + alpha as f64 * xd[i];
                }
            }
        }
        let want: Vec<f64> = (0..tokens * c)
            .map(|i| lambda_want * ln[i] + (1.0 - lambda_want) * rep[i])
            .collect();
        let xt = c_.upload_f32(&x, &[b, t, c]).unwrap();
        let y = c_.empty(&[b, t, c], DType::F32).unwrap();
        let inputs = ProgressiveRepNormInputs {
            x: &xt,
            ln_weight: Some(&lwt),
            ln_bias: Some(&lbt),
            bn_weight: Some(&bwt),
            bn_bias: Some(&bbt),
            running_mean: &rm_t,
            running_var: &rv_t,
            alpha: &at,
        };
        let mut enc = c_.device().create_command_encoder(&Default::default());
        let lambda = op
            .encode(&mut enc, &inputs, &y, Mode::training(training))
            .unwrap();
        c_.queue().submit([enc.finish()]);
        assert!(
            (lambda as f64 - lambda_want).abs() < 1e-7,
            "call {call}: lambda {lambda}"
        );
        let what = format!("progressive rep norm call {call}");
        assert_close(&what, &c_.download(&y).unwrap(), &want, 2e-5, 2e-5);
        assert_close(&what, &c_.download(&rm_t).unwrap(), &rm, 1e-6, 1e-6);
        assert_close(&what, &c_.download(&rv_t).unwrap(), &rv, 1e-6, 1e-6);
    }
    assert_eq!(op.counters(), (0, 0));
}

#[test]
fn rep_batch_norm_inference_folds_to_scale_and_shift() {
    use wgnorm::batchnorm::fold_rep_batch_norm;
    let c_ = ctx();
    let (b, t, c) = (2, 6, 5);
    let x: Vec<f32> = noise(95, b * t * c).iter().map(|v| v * 2.0 + 1.0).collect();
    let (g, be) = (noise(96, c), noise(97, c));
    let (rm0, rv0): (Vec<f32>, Vec<f32>) = (
        noise(98, c),
        noise(99, c).iter().map(|v| v.abs() + 0.5).collect(),
    );
    let alpha = 0.3f32;
    let bn = RepBatchNorm::new(
        c_,
        BatchNormConfig {
            layout: Layout::Nhwc,
            ..Default::default()
        },
    )
    .unwrap();
    let up = |v: &[f32]| c_.upload_f32(v, &[v.len()]).unwrap();
    let (gt, bt, rm, rv, at) = (up(&g), up(&be), up(&rm0), up(&rv0), up(&[alpha]));
    let xt = c_.upload_f32(&x, &[b, t, c]).unwrap();
    let y = c_.empty(&[b, t, c], DType::F32).unwrap();
    let inputs = BatchNormInputs {
        x: &xt,
        weight: Some(&gt),
        bias: Some(&bt),
        running_mean: Some(&rm),
        running_var: Some(&rv),
    };
    let mut enc = c_.device().create_command_encoder(&Default::default());
    bn.encode(
        &mut enc,
        &inputs,
        &at,
        &BatchNormOutputs { y: &y, saved: None },
        Mode::Infer,
    )
    .unwrap();
    c_.queue().submit([enc.finish()]);
    let (scale, shift) = fold_rep_batch_norm(Some(&g), Some(&be), &rm0, &rv0, alpha, 1e-5).unwrap();
    let folded: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 * scale[i % c] as f64 + shift[i % c] as f64)
        .collect();
    assert_close(
        "folded RepBN",
        &c_.download(&y).unwrap(),
        &folded,
        1e-5,
        1e-5,
    );
    assert!(fold_rep_batch_norm(Some(&g[..2]), None, &rm0, &rv0, alpha, 1e-5).is_err());
}

/// Every lane mapping of the moments pass (contiguous lane blocks or interleaved lanes; one lane
/// per channel for channels-last views or a workgroup per channel) and of the apply pass (blocks
/// of 16 accesses or one), forced on this adapter, so the paths GPUs take are checked here too.
#[test]
fn every_moments_lane_mapping_matches_reference() {
    use wgnorm::engine::chnorm::{ChannelNorm, ChannelNormArgs, ChannelView, LanePlan};
    let c_ = ctx();
    for (n, c, hw) in [(4, 12, 37), (3, 64, 100), (2, 9, 1024)] {
        let x: Vec<f32> = noise(200 + c as u64, n * c * hw)
            .iter()
            .map(|v| v * 3.0 + 5.0)
            .collect();
        let xd = round_to(DType::F32, &x);
        let bn = reference::batch_norm(
            &xd,
            n,
            c,
            hw,
            None,
            None,
            &vec![0.0; c],
            &vec![1.0; c],
            true,
            0.1,
            true,
            1e-5,
        )
        .y;
        let inn = reference::instance_norm(&xd, n, c, hw, None, None, 1e-5);
        let groups = if c % 4 == 0 { c / 4 } else { 3 };
        let gn = reference::group_norm(&xd, n, c, hw, groups, None, None, 1e-5, false);
        // Every lane mapping with the adapter's tiles, then the smallest and largest tiles a
        // plan may set (many tiles per slot, one tile per slot) with two of them.
        let mappings = [(false, false), (false, true), (true, false), (true, true)];
        let tiled = [(None, 0..4), (Some(64), 0..2), (Some(16384), 2..4)];
        for (tile, range) in tiled {
            for &(lane_blocks, channel_lanes) in &mappings[range] {
                // The GPU-style apply (one access per lane) with the GPU-style moments.
                let plan = LanePlan {
                    lane_blocks: Some(lane_blocks),
                    channel_lanes: Some(channel_lanes),
                    apply_block: Some(if lane_blocks { 16 } else { 1 }),
                    tile,
                };
                let engine = ChannelNorm::new(c_, 1e-5, DType::F32, Default::default())
                    .unwrap()
                    .with_lane_plan(plan);
                for (layout, what, want) in [
                    (Layout::Nchw, "bn", &bn),
                    (Layout::Nhwc, "bn", &bn),
                    (Layout::Nchw, "in", &inn),
                    (Layout::Nhwc, "in", &inn),
                    (Layout::Nchw, "gn", &gn),
                    (Layout::Nhwc, "gn", &gn),
                ] {
                    let (data, shape) = match layout {
                        Layout::Nchw => (x.clone(), vec![n, c, hw]),
                        Layout::Nhwc => (
                            reference::to_nhwc(&xd, n, c, hw)
                                .iter()
                                .map(|&v| v as f32)
                                .collect(),
                            vec![n, hw, c],
                        ),
                    };
                    let view = match what {
                        "bn" => ChannelView::batch_norm(&shape, layout).unwrap(),
                        "in" => ChannelView::instance_norm(&shape, layout).unwrap(),
                        _ => ChannelView::group_norm(&shape, layout, groups).unwrap(),
                    };
                    let xt = c_.upload_f32(&data, &shape).unwrap();
                    let y = c_.empty(&shape, DType::F32).unwrap();
                    let mut enc = c_.device().create_command_encoder(&Default::default());
                    engine
                        .encode(&mut enc, &ChannelNormArgs::new(&xt, &y, view))
                        .unwrap();
                    c_.queue().submit([enc.finish()]);
                    let want_l = match layout {
                        Layout::Nchw => want.clone(),
                        Layout::Nhwc => reference::to_nhwc(want, n, c, hw),
                    };
                    assert_close(
                        &format!("{what} {layout:?} {n}x{c}x{hw} {plan:?}"),
                        &c_.download(&y).unwrap(),
                        &want_l,
                        2e-5,
                        1e-4,
                    );
                }
            }
        }
    }
}

#[test]
fn progressive_rep_norm_bad_running_stats_fail_before_any_pass() {
    use wgnorm::batchnorm::{ProgressiveRepNorm, ProgressiveRepNormInputs};
    let c_ = ctx();
    let (b, t, c) = (2, 3, 4);
    // No warm-up: the first training call records LN, RepBN and the blend.
    let op = ProgressiveRepNorm::new(
        c_,
        wgnorm::ProgressiveRepNormConfig {
            warm: 0,
            total_step: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let up = |v: &[f32]| c_.upload_f32(v, &[v.len()]).unwrap();
    let xt = c_.upload_f32(&noise(1, b * t * c), &[b, t, c]).unwrap();
    let sentinel = vec![7.0f32; b * t * c];
    let y = c_.upload_f32(&sentinel, &[b, t, c]).unwrap();
    let (rm, rv_bad, alpha) = (up(&[0.0; 4]), up(&[1.0; 3]), up(&[0.5]));
    let inputs = ProgressiveRepNormInputs {
        x: &xt,
        ln_weight: None,
        ln_bias: None,
        bn_weight: None,
        bn_bias: None,
        running_mean: &rm,
        running_var: &rv_bad,
        alpha: &alpha,
    };
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let r = op.encode(&mut enc, &inputs, &y, Mode::Train);
    assert!(
        matches!(r, Err(Error::ShapeMismatch { .. })),
        "a running_var of the wrong length gave {r:?}"
    );
    c_.queue().submit([enc.finish()]);
    assert_eq!(op.counters(), (0, 3), "a failed call advanced the schedule");
    assert_eq!(c_.download(&y).unwrap(), sentinel, "a failed call wrote y");
}

/// Offset data (a common offset of 1e2..1e4 per channel, unit spread): the batch statistics are
/// taken around a per-slot shift, so BatchNorm, InstanceNorm and GroupNorm stay as accurate as
/// on centred data (an f32 mean near 1e4 alone is off by up to 5e-4).
#[test]
fn offset_channels_are_as_accurate_as_centred_ones() {
    let c_ = ctx();
    let (n, c, sp) = (4usize, 8usize, [6usize, 5]);
    let hw: usize = sp.iter().product();
    for offset in [1e2f32, 1e3, 1e4] {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let x: Vec<f32> = noise(offset as u64, n * c * hw)
                .iter()
                .enumerate()
                .map(|(i, v)| offset * (1.0 + ((i / hw) % c) as f32 * 0.1) + v)
                .collect();
            let xd = round_to(DType::F32, &x);
            let xt = upload_layout(&x, n, c, &sp, layout, DType::F32);
            let what = format!("offset {offset} {layout:?}");
            let inputs = NormInputs {
                x: &xt,
                weight: None,
                bias: None,
            };
            // BatchNorm, training (batch statistics).
            let bn = BatchNorm::new(
                c_,
                BatchNormConfig {
                    layout,
                    ..Default::default()
                },
            )
            .unwrap();
            let y = bn
                .forward(
                    &BatchNormInputs {
                        x: &xt,
                        weight: None,
                        bias: None,
                        running_mean: None,
                        running_var: None,
                    },
                    Mode::Train,
                )
                .unwrap();
            let zeros = vec![0.0; c];
            let ones = vec![1.0; c];
            let want = reference::batch_norm(
                &xd, n, c, hw, None, None, &zeros, &ones, true, 0.1, true, 1e-5,
            );
            assert_close(
                &format!("{what} batch_norm"),
                &c_.download(&y).unwrap(),
                &want_in_layout(&want.y, n, c, hw, layout),
                2e-5,
                1e-4,
            );
            // InstanceNorm and GroupNorm (2 groups).
            let inorm = InstanceNorm::new(
                c_,
                InstanceNormConfig {
                    layout,
                    ..Default::default()
                },
            )
            .unwrap();
            let want = reference::instance_norm(&xd, n, c, hw, None, None, 1e-5);
            assert_close(
                &format!("{what} instance_norm"),
                &c_.download(&inorm.forward(&inputs).unwrap()).unwrap(),
                &want_in_layout(&want, n, c, hw, layout),
                2e-5,
                1e-4,
            );
            let gn = GroupNorm::new(
                c_,
                GroupNormConfig {
                    layout,
                    ..GroupNormConfig::new(2)
                },
            )
            .unwrap();
            let want = reference::group_norm(&xd, n, c, hw, 2, None, None, 1e-5, false);
            assert_close(
                &format!("{what} group_norm"),
                &c_.download(&gn.forward(&inputs).unwrap()).unwrap(),
                &want_in_layout(&want, n, c, hw, layout),
                // A group spans channels whose offsets differ by 10 %: its spread is ~offset/10,
                // so its y has ordinary magnitude and the same relative accuracy.
                2e-5,
                1e-4,
            );
        }
    }
}

/// eps that matters for the batch family: variances at or below eps (eps 1e-5..1e-2) for
/// BatchNorm (training, and inference with running variances below eps), GroupNorm and
/// InstanceNorm in both layouts. Ignoring eps, or adding it outside the square root, changes y
/// by a factor of ~2 here.
#[test]
fn eps_at_and_above_the_variance_for_the_batch_family() {
    let c_ = ctx();
    let (n, c, sp) = (3usize, 8usize, [5usize, 4]);
    let hw: usize = sp.iter().product();
    for eps in [1e-5f32, 1e-3, 1e-2] {
        let scale = eps.sqrt();
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let x: Vec<f32> = noise(eps.to_bits() as u64, n * c * hw)
                .iter()
                .map(|v| v * scale + 0.25)
                .collect();
            let xd = round_to(DType::F32, &x);
            let xt = upload_layout(&x, n, c, &sp, layout, DType::F32);
            let what = format!("eps {eps} {layout:?}");
            let e = eps as f64;
            let rm0 = vec![0.25f32; c];
            let rv0: Vec<f32> = (0..c).map(|i| eps * (0.2 + 0.1 * i as f32)).collect();
            for mode in [Mode::Train, Mode::Infer] {
                let bn = BatchNorm::new(
                    c_,
                    BatchNormConfig {
                        eps,
                        layout,
                        ..Default::default()
                    },
                )
                .unwrap();
                let (rm, rv) = (
                    c_.upload_f32(&rm0, &[c]).unwrap(),
                    c_.upload_f32(&rv0, &[c]).unwrap(),
                );
                let y = bn
                    .forward(
                        &BatchNormInputs {
                            x: &xt,
                            weight: None,
                            bias: None,
                            running_mean: Some(&rm),
                            running_var: Some(&rv),
                        },
                        mode,
                    )
                    .unwrap();
                let f = |v: &[f32]| round_to(DType::F32, v);
                let want = reference::batch_norm(
                    &xd,
                    n,
                    c,
                    hw,
                    None,
                    None,
                    &f(&rm0),
                    &f(&rv0),
                    mode.is_train(),
                    0.1,
                    true,
                    e,
                );
                assert_close(
                    &format!("{what} batch_norm {mode:?}"),
                    &c_.download(&y).unwrap(),
                    &want_in_layout(&want.y, n, c, hw, layout),
                    2e-5,
                    1e-4,
                );
            }
            let inputs = NormInputs {
                x: &xt,
                weight: None,
                bias: None,
            };
            let gn = GroupNorm::new(
                c_,
                GroupNormConfig {
                    eps,
                    layout,
                    ..GroupNormConfig::new(4)
                },
            )
            .unwrap();
            let want = reference::group_norm(&xd, n, c, hw, 4, None, None, e, false);
            assert_close(
                &format!("{what} group_norm"),
                &c_.download(&gn.forward(&inputs).unwrap()).unwrap(),
                &want_in_layout(&want, n, c, hw, layout),
                2e-5,
                1e-4,
            );
            let inorm = InstanceNorm::new(
                c_,
                InstanceNormConfig {
                    eps,
                    layout,
                    ..Default::default()
                },
            )
            .unwrap();
            let want = reference::instance_norm(&xd, n, c, hw, None, None, e);
            assert_close(
                &format!("{what} instance_norm"),
                &c_.download(&inorm.forward(&inputs).unwrap()).unwrap(),
                &want_in_layout(&want, n, c, hw, layout),
                2e-5,
                1e-4,
            );
        }
    }
}

/// An empty tensor is a no-op even when its empty dim is the channel dim (found by the fuzzer:
/// GroupNorm channels-last with C = 0 was refused as an inconsistent view).
#[test]
fn zero_channels_is_a_no_op() {
    let c_ = ctx();
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let shape = match layout {
            Layout::Nchw => [2usize, 0, 3, 3],
            Layout::Nhwc => [2, 3, 3, 0],
        };
        let x = c_.empty(&shape, DType::F32).unwrap();
        let gn = GroupNorm::new(
            c_,
            GroupNormConfig {
                layout,
                ..GroupNormConfig::new(2)
            },
        )
        .unwrap();
        let y = gn
            .forward(&NormInputs {
                x: &x,
                weight: None,
                bias: None,
            })
            .unwrap();
        assert_eq!(y.numel(), 0, "{layout:?}");
    }
}

/// Batch-Channel Norm's passes bind x and y separately (x -> scratch -> y), so it checks an
/// aliased output itself (found by the fuzzer).
#[test]
fn batch_channel_norm_refuses_y_aliasing_x() {
    use wgnorm::batchnorm::{BatchChannelNorm, BatchChannelNormConfig, BatchChannelNormInputs};
    let c_ = ctx();
    let op = BatchChannelNorm::new(
        c_,
        BatchChannelNormConfig {
            batch_norm: BatchNormConfig::default(),
            groups: 2,
        },
    )
    .unwrap();
    let x = c_.empty(&[4, 8, 3], DType::F32).unwrap();
    let inputs = BatchChannelNormInputs {
        x: &x,
        bn_weight: None,
        bn_bias: None,
        running_mean: None,
        running_var: None,
        weight: None,
        bias: None,
    };
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let r = op.encode(&mut enc, &inputs, &x, Mode::Train);
    assert!(
        matches!(r, Err(Error::AliasedBuffers { .. })),
        "{:?}",
        r.err()
    );
}
