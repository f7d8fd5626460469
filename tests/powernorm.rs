//! PowerNorm over several training steps across the warm-up boundary, with padding, then
//! inference, against the f64 reference.

use wgnorm::{DType, PowerNorm, PowerNormConfig, PowerNormInputs};
use wgnorm_reference::powernorm::{power_norm, PowerNormRef};
use wgnorm_tests::{assert_close, ctx, noise, round_to};

fn run(
    t: usize,
    b: usize,
    c: usize,
    groups: usize,
    mask: Option<Vec<f32>>,
    warmup: u64,
    steps: u64,
) {
    let c_ = ctx();
    let cfg = PowerNormConfig {
        warmup_iters: warmup,
        group_num: groups,
        ..Default::default()
    };
    let op = PowerNorm::new(c_, cfg).unwrap();
    let (w, bias) = (noise(1, c), noise(2, c));
    let (wt, bt) = (
        c_.upload_f32(&w, &[c]).unwrap(),
        c_.upload_f32(&bias, &[c]).unwrap(),
    );
    let phi_t = c_.upload_f32(&vec![1.0; c], &[c]).unwrap();
    let mut phi = vec![1.0f64; c];
    let mask_t = mask.as_ref().map(|m| c_.upload_f32(m, &[b, t]).unwrap());
    let mask_d: Option<Vec<f64>> = mask.as_ref().map(|m| m.iter().map(|&v| v as f64).collect());
    for step in (1..=steps).map(Some).chain([None]) {
        let x: Vec<f32> = noise(step.unwrap_or(99) * 13, t * b * c)
            .iter()
            .map(|v| v * 2.0 + 0.4)
            .collect();
        let xt = c_.upload_f32(&x, &[t, b, c]).unwrap();
        let y = c_.empty(&[t, b, c], DType::F32).unwrap();
        let inputs = PowerNormInputs {
            x: &xt,
            pad_mask: mask_t.as_ref(),
            weight: Some(&wt),
            bias: Some(&bt),
            running_phi: &phi_t,
        };
        let mut enc = c_.device().create_command_encoder(&Default::default());
        match step {
            Some(s) => op.encode_train(&mut enc, &inputs, &y, s).unwrap(),
            None => op.encode_infer(&mut enc, &inputs, &y).unwrap(),
        }
        c_.queue().submit([enc.finish()]);
        let settings = PowerNormRef {
            eps: 1e-5,
            alpha_fwd: 0.9,
            warmup,
            group_num: groups,
            step,
        };
        let want = power_norm(
            &round_to(DType::F32, &x),
            t,
            b,
            c,
            mask_d.as_deref(),
            &round_to(DType::F32, &w),
            &round_to(DType::F32, &bias),
            &mut phi,
            settings,
        );
        let what = format!("power_norm {t}x{b}x{c} g{groups} step {step:?}");
        assert_close(
            &format!("{what} y"),
            &c_.download(&y).unwrap(),
            &want,
            2e-5,
            2e-4,
        );
        assert_close(
            &format!("{what} phi"),
            &c_.download(&phi_t).unwrap(),
            &phi,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn warm_up_boundary_with_padding() {
    // Steps 1, 2 average phi cumulatively, 3 is the last batch-statistic step, 4 and 5 use phi.
    let (t, b) = (5, 3);
    let mask: Vec<f32> = (0..b * t)
        .map(|i| if i % 4 == 3 { 1.0 } else { 0.0 })
        .collect();
    run(t, b, 16, 1, Some(mask), 3, 5);
    run(t, b, 16, 4, None, 3, 5);
}

#[test]
fn single_token_and_all_padding() {
    run(1, 4, 8, 2, None, 2, 3);
    // Every token padded: psi2 = 0 by convention; phi and y stay finite.
    run(2, 2, 8, 1, Some(vec![1.0; 4]), 2, 3);
}

#[test]
fn bad_input_is_typed() {
    let c_ = ctx();
    let op = PowerNorm::new(
        c_,
        PowerNormConfig {
            group_num: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let x = c_.empty(&[2, 2, 8], DType::F32).unwrap();
    let phi = c_.upload_f32(&[1.0; 8], &[8]).unwrap();
    let y = c_.empty(&[2, 2, 8], DType::F32).unwrap();
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let inputs = PowerNormInputs {
        x: &x,
        pad_mask: None,
        weight: None,
        bias: None,
        running_phi: &phi,
    };
    assert!(matches!(
        op.encode_train(&mut enc, &inputs, &y, 1),
        Err(wgnorm::Error::InvalidParameter {
            name: "group_num",
            ..
        })
    ));
    let op = PowerNorm::new(c_, PowerNormConfig::default()).unwrap();
    let bad_mask = c_.upload_f32(&[0.0; 3], &[3, 1]).unwrap();
    let r = op.encode_train(
        &mut enc,
        &PowerNormInputs {
            pad_mask: Some(&bad_mask),
            ..inputs
        },
        &y,
        1,
    );
    assert!(
        matches!(r, Err(wgnorm::Error::ShapeMismatch { .. })),
        "{r:?}"
    );
    assert!(matches!(
        op.encode_train(&mut enc, &inputs, &y, 0),
        Err(wgnorm::Error::InvalidParameter { name: "step", .. })
    ));
    // y aliasing x: the passes bind different pairs, so the op checks it itself (found by the
    // fuzzer: PowerNorm and Sinkhorn accepted it).
    let x = c_.empty(&[2, 2, 8], DType::F32).unwrap();
    let r = op.encode_train(&mut enc, &PowerNormInputs { x: &x, ..inputs }, &x, 1);
    assert!(
        matches!(r, Err(wgnorm::Error::AliasedBuffers { .. })),
        "{r:?}"
    );
    let sk = wgnorm::SinkhornNormalize::new(c_, Default::default()).unwrap();
    let x = c_.empty(&[4, 8], DType::F32).unwrap();
    let r = sk.encode(&mut enc, &x, &x);
    assert!(
        matches!(r, Err(wgnorm::Error::AliasedBuffers { .. })),
        "{r:?}"
    );
}

#[test]
fn sinkhorn_rows_then_columns() {
    use wgnorm::SinkhornNormalize;
    let c_ = ctx();
    for (m, n, iters) in [(7usize, 3usize, 1usize), (16, 24, 5), (5, 8, 3)] {
        let mut x = noise((m * n) as u64, m * n);
        x[..n].iter_mut().for_each(|v| *v = 0.0); // a zero row: the eps clamp keeps it 0
        let r = wgnorm_reference::powernorm::sinkhorn(&round_to(DType::F32, &x), m, n, iters, 1e-8);
        let op = SinkhornNormalize::new(
            c_,
            wgnorm::SinkhornConfig {
                iterations: iters,
                eps: 1e-8,
                dtype: DType::F32,
            },
        )
        .unwrap();
        let y = op.forward(&c_.upload_f32(&x, &[m, n]).unwrap()).unwrap();
        assert_close(
            &format!("sinkhorn {m}x{n} L={iters}"),
            &c_.download(&y).unwrap(),
            &r,
            1e-5,
            1e-4,
        );
    }
    assert!(SinkhornNormalize::new(
        c_,
        wgnorm::SinkhornConfig {
            iterations: 0,
            eps: 1e-8,
            dtype: DType::F32
        }
    )
    .is_err());
}

/// Sinkhorn's backward against the f64 reverse mode (checked against finite differences in
/// `wgnorm-reference`): several shapes and iteration counts, a row clamped at eps (its
/// gradient the linear map's), f16, bitwise reproducibility and bad shapes.
#[test]
fn sinkhorn_backward_matches_reference() {
    use wgnorm::{SinkhornConfig, SinkhornNormalize};
    let c_ = ctx();
    // (m, n, iterations, eps, dtype, tolerance)
    for (m, n, iters, eps, dtype, tol) in [
        (7usize, 3usize, 1usize, 1e-8f32, DType::F32, 1e-4),
        (16, 24, 5, 1e-8, DType::F32, 1e-4),
        (5, 8, 3, 0.5, DType::F32, 1e-4),
        (12, 16, 5, 1e-8, DType::F16, 3e-2),
    ] {
        let mut x = noise((m * n) as u64 + 7, m * n);
        // With eps = 0.5 the first row (norm about 0.1) is clamped.
        x[..n].iter_mut().for_each(|v| *v *= 0.05);
        let dy = noise(3, m * n);
        let op = SinkhornNormalize::new(
            c_,
            SinkhornConfig {
                iterations: iters,
                eps,
                dtype,
            },
        )
        .unwrap();
        let (xt, dyt) = (
            c_.upload(&x, &[m, n], dtype).unwrap(),
            c_.upload(&dy, &[m, n], dtype).unwrap(),
        );
        let want = wgnorm_reference::grad::sinkhorn_grad(
            &round_to(dtype, &x),
            (m, n),
            iters,
            eps as f64,
            &round_to(dtype, &dy),
        );
        let got = c_.download(&op.backward(&xt, &dyt).unwrap()).unwrap();
        let what = format!("sinkhorn backward {m}x{n} L={iters} eps {eps} {dtype:?}");
        assert_close(&what, &got, &want, tol, tol);
        let again = c_.download(&op.backward(&xt, &dyt).unwrap()).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&again), "{what}: not reproducible");
    }
    let op = SinkhornNormalize::new(c_, Default::default()).unwrap();
    let x = c_.upload_f32(&noise(1, 12), &[3, 4]).unwrap();
    let dy = c_.upload_f32(&noise(2, 12), &[4, 3]).unwrap();
    assert!(matches!(
        op.backward(&x, &dy),
        Err(wgnorm::Error::ShapeMismatch { .. })
    ));
    let dx = c_.empty(&[3, 4], DType::F32).unwrap();
    let mut enc = c_.device().create_command_encoder(&Default::default());
    assert!(matches!(
        op.encode_backward(&mut enc, &x, &x, &x),
        Err(wgnorm::Error::AliasedBuffers { .. })
    ));
    assert!(op.encode_backward(&mut enc, &x, &x, &dx).is_ok());
}

#[test]
fn unified_norm_inference_is_a_per_channel_scale() {
    use wgnorm::UnifiedNorm;
    let c_ = ctx();
    let (b, n, c) = (3, 10, 8);
    let x = noise(5, b * n * c);
    let (w, bias) = (noise(6, c), noise(7, c));
    let rv: Vec<f32> = noise(8, c).iter().map(|v| v.abs() + 0.1).collect();
    let up = |v: &[f32], s: &[usize]| c_.upload_f32(v, s).unwrap();
    let (xt, wt, bt, rvt) = (
        up(&x, &[b, n, c]),
        up(&w, &[c]),
        up(&bias, &[c]),
        up(&rv, &[c]),
    );
    let y = c_.empty(&[b, n, c], DType::F32).unwrap();
    let op = UnifiedNorm::new(
        c_,
        wgnorm::UnifiedNormConfig {
            eps: 1e-5,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let inputs = wgnorm::UnifiedNormInputs {
        x: &xt,
        pad_mask: None,
        weight: Some(&wt),
        bias: Some(&bt),
        running_var: &rvt,
        window: None,
    };
    op.encode_infer(&mut enc, &inputs, &y).unwrap();
    c_.queue().submit([enc.finish()]);
    let f = |v: &[f32]| round_to(DType::F32, v);
    let want = wgnorm_reference::powernorm::unified_norm_infer(
        &f(&x),
        c,
        &f(&w),
        &f(&bias),
        &f(&rv),
        1e-5,
    );
    assert_close(
        "unified_norm inference",
        &c_.download(&y).unwrap(),
        &want,
        1e-5,
        1e-4,
    );
}

/// Unified Norm training over steps that cross the window-full and warm-up boundaries, with
/// padding, an all-padding batch and an outlier batch that the filtration must catch.
#[test]
fn unified_norm_training_over_steps() {
    use wgnorm::powernorm::UnifiedTraining;
    use wgnorm::UnifiedNorm;
    use wgnorm_reference::powernorm::{unified_norm_train, UnifiedState};
    let c_ = ctx();
    let (b, n, c) = (3, 5, 8);
    let tokens = b * n;
    let train = UnifiedTraining {
        window: 3,
        warmup: 5,
        filter: true,
        momentum: 0.1,
    };
    let op = UnifiedNorm::new(
        c_,
        wgnorm::UnifiedNormConfig {
            eps: 1e-5,
            dtype: DType::F32,
        },
    )
    .unwrap()
    .with_training(train);
    let w: Vec<f32> = noise(1, c).iter().map(|v| v + 1.0).collect();
    let bias = noise(2, c);
    let (wt, bt) = (
        c_.upload_f32(&w, &[c]).unwrap(),
        c_.upload_f32(&bias, &[c]).unwrap(),
    );
    let window_t = c_.upload_f32(&vec![0.0; 3 * c], &[3, c]).unwrap();
    let rv_t = c_.upload_f32(&vec![1.0; c], &[c]).unwrap();
    let mut state = UnifiedState {
        window: vec![0.0; 3 * c],
        running_var: vec![1.0; c],
    };
    let mask: Vec<f32> = (0..tokens)
        .map(|t| (t % n >= n - 1 - t / n) as u8 as f32)
        .collect();
    let mask_t = c_.upload_f32(&mask, &[b, n]).unwrap();
    let all_pad = c_.upload_f32(&vec![1.0; tokens], &[b, n]).unwrap();
    let mut flags = Vec::new();
    for step in 1..=10u64 {
        // Step 8: a batch 30x larger than the others, which the filtration must reject.
        let scale = if step == 8 {
            30.0
        } else {
            1.0 + 0.1 * step as f32
        };
        let x: Vec<f32> = noise(10 + step, tokens * c)
            .iter()
            .map(|v| v * scale + 0.2)
            .collect();
        let (m, md): (Option<&wgnorm::Tensor>, Option<Vec<f64>>) = match step {
            2 => (Some(&all_pad), Some(vec![1.0; tokens])),
            s if s % 2 == 0 => (Some(&mask_t), Some(round_to(DType::F32, &mask))),
            _ => (None, None),
        };
        let (want, saved) = unified_norm_train(
            &round_to(DType::F32, &x),
            tokens,
            c,
            md.as_deref(),
            &round_to(DType::F32, &w),
            &round_to(DType::F32, &bias),
            &mut state,
            step,
            3,
            5,
            true,
            0.1,
            1e-5,
        );
        // The GPU's window (compared below) shows it made the same filtration decision.
        flags.push((step, saved.skip));
        let xt = c_.upload_f32(&x, &[b, n, c]).unwrap();
        let y = c_.empty(&[b, n, c], DType::F32).unwrap();
        let mut enc = c_.device().create_command_encoder(&Default::default());
        let inputs = wgnorm::UnifiedNormInputs {
            x: &xt,
            pad_mask: m,
            weight: Some(&wt),
            bias: Some(&bt),
            running_var: &rv_t,
            window: Some(&window_t),
        };
        op.encode_train(&mut enc, &inputs, &y, step).unwrap();
        c_.queue().submit([enc.finish()]);
        let what = format!("unified_norm train step {step}");
        assert_close(&what, &c_.download(&y).unwrap(), &want, 1e-5, 1e-5);
        assert_close(
            &what,
            &c_.download(&window_t).unwrap(),
            &state.window,
            1e-5,
            1e-5,
        );
        assert_close(
            &what,
            &c_.download(&rv_t).unwrap(),
            &state.running_var,
            1e-5,
            1e-5,
        );
    }
    // The inputs exercise both paths after warm-up: the 30x batch is filtered, and some step
    // normalizes with the window's geometric mean.
    assert!(flags.contains(&(8, true)), "{flags:?}");
    assert!(flags.iter().any(|&(s, k)| s > 5 && !k), "{flags:?}");
}

/// Training Unified Norm without its window (or weight/bias) is a typed error, and nothing is
/// recorded: the window and running variance keep their values.
#[test]
fn unified_norm_training_without_window_is_typed() {
    use wgnorm::{UnifiedNorm, UnifiedNormInputs};
    let c_ = ctx();
    let (b, n, c) = (2, 3, 4);
    let xt = c_.upload_f32(&noise(1, b * n * c), &[b, n, c]).unwrap();
    let wt = c_.upload_f32(&[1.0; 4], &[c]).unwrap();
    let rv = c_.upload_f32(&[1.0; 4], &[c]).unwrap();
    let y = c_.empty(&[b, n, c], DType::F32).unwrap();
    let op = UnifiedNorm::new(c_, Default::default()).unwrap();
    let inputs = UnifiedNormInputs {
        x: &xt,
        pad_mask: None,
        weight: Some(&wt),
        bias: Some(&wt),
        running_var: &rv,
        window: None,
    };
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let r = op.encode_train(&mut enc, &inputs, &y, 1);
    assert!(
        matches!(r, Err(wgnorm::Error::InvalidParameter { name, .. }) if name.contains("window")),
        "{r:?}"
    );
    c_.queue().submit([enc.finish()]);
    assert_eq!(c_.download(&rv).unwrap(), vec![1.0; 4]);
}

/// PowerNorm's approximate backward over training steps across the warm-up boundary, with
/// padding and GroupScaling groups: dx, dweight, dbias and the running estimate `ema_gz`
/// against the f64 reference (whose dx is checked against finite differences where the
/// approximation is exact).
#[test]
fn power_norm_approximate_backward_over_steps() {
    use wgnorm::powernorm::{PowerNormGradInputs, PowerNormGradOutputs};
    use wgnorm_reference::powernorm::power_norm_grad;
    let c_ = ctx();
    let (t, b, c, groups, warmup) = (5usize, 3usize, 8usize, 2usize, 2u64);
    let mut mask = vec![0.0f32; b * t];
    mask[t - 1] = 1.0; // sample 0's last token
    mask[2 * t - 2] = 1.0; // sample 1's two last tokens
    mask[2 * t - 1] = 1.0;
    let mask_d: Vec<f64> = mask.iter().map(|&v| v as f64).collect();
    let op = PowerNorm::new(
        c_,
        PowerNormConfig {
            warmup_iters: warmup,
            group_num: groups,
            ..Default::default()
        },
    )
    .unwrap();
    let w = noise(61, c);
    let wt = c_.upload_f32(&w, &[c]).unwrap();
    let bt = c_.upload_f32(&noise(62, c), &[c]).unwrap();
    let mask_t = c_.upload_f32(&mask, &[b, t]).unwrap();
    let phi_t = c_.upload_f32(&vec![1.0; c], &[c]).unwrap();
    let ema_t = c_.upload_f32(&vec![0.0; c], &[c]).unwrap();
    let saved = c_.empty(&[c, 2], DType::F32).unwrap();
    let mut nu = vec![0.0f64; c];
    for step in 1..=4u64 {
        let x: Vec<f32> = noise(70 + step, t * b * c)
            .iter()
            .map(|v| v * 1.5 + 0.2)
            .collect();
        let dy = noise(80 + step, t * b * c);
        let xt = c_.upload_f32(&x, &[t, b, c]).unwrap();
        let dyt = c_.upload_f32(&dy, &[t, b, c]).unwrap();
        let phi_old: Vec<f64> = round_to(DType::F32, &c_.download(&phi_t).unwrap());
        let y = c_.empty(&[t, b, c], DType::F32).unwrap();
        let (dx, dw, db) = (
            c_.empty(&[t, b, c], DType::F32).unwrap(),
            c_.empty(&[c], DType::F32).unwrap(),
            c_.empty(&[c], DType::F32).unwrap(),
        );
        c_.record_and_submit(|enc| {
            let inputs = PowerNormInputs {
                x: &xt,
                pad_mask: Some(&mask_t),
                weight: Some(&wt),
                bias: Some(&bt),
                running_phi: &phi_t,
            };
            op.encode_train_saving(enc, &inputs, &y, step, &saved)?;
            op.encode_backward(
                enc,
                &PowerNormGradInputs {
                    x: &xt,
                    pad_mask: Some(&mask_t),
                    weight: Some(&wt),
                    dy: &dyt,
                    saved: &saved,
                    ema_gz: &ema_t,
                },
                &PowerNormGradOutputs {
                    dx: &dx,
                    dweight: Some(&dw),
                    dbias: Some(&db),
                },
            )
        })
        .unwrap();
        let s = PowerNormRef {
            eps: 1e-5,
            alpha_fwd: 0.9,
            warmup,
            group_num: groups,
            step: Some(step),
        };
        let f = |v: &[f32]| round_to(DType::F32, v);
        let want = power_norm_grad(
            &f(&x),
            t,
            b,
            c,
            Some(&mask_d),
            &f(&w),
            &f(&dy),
            &phi_old,
            s,
            0.9,
            &mut nu,
        );
        let what = format!("power_norm backward step {step}");
        assert_close(
            &format!("{what} dx"),
            &c_.download(&dx).unwrap(),
            &want.dx,
            5e-5,
            5e-4,
        );
        assert_close(
            &format!("{what} dweight"),
            &c_.download(&dw).unwrap(),
            &want.dweight,
            5e-5,
            5e-4,
        );
        assert_close(
            &format!("{what} dbias"),
            &c_.download(&db).unwrap(),
            &want.dbias,
            5e-5,
            5e-4,
        );
        assert_close(
            &format!("{what} ema_gz"),
            &c_.download(&ema_t).unwrap(),
            &nu,
            5e-5,
            5e-4,
        );
    }
}

/// No tokens: PowerNorm's backward zeroes dweight and dbias (sums over nothing) and leaves
/// `ema_gz` alone, as the other backward ops.
#[test]
fn power_norm_backward_of_no_tokens_zeroes_the_parameter_gradients() {
    use wgnorm::powernorm::{PowerNormGradInputs, PowerNormGradOutputs};
    let c_ = ctx();
    let c = 6;
    let op = PowerNorm::new(c_, PowerNormConfig::default()).unwrap();
    let x = c_.empty(&[0, 2, c], DType::F32).unwrap();
    let saved = c_.upload_f32(&[0.0, 1.0].repeat(c), &[c, 2]).unwrap();
    let ema = c_.upload_f32(&[0.5; 6], &[c]).unwrap();
    let (dw, db) = (
        c_.upload_f32(&[7.0; 6], &[c]).unwrap(),
        c_.upload_f32(&[7.0; 6], &[c]).unwrap(),
    );
    c_.record_and_submit(|enc| {
        op.encode_backward(
            enc,
            &PowerNormGradInputs {
                x: &x,
                pad_mask: None,
                weight: None,
                dy: &c_.empty(&[0, 2, c], DType::F32).unwrap(),
                saved: &saved,
                ema_gz: &ema,
            },
            &PowerNormGradOutputs {
                dx: &c_.empty(&[0, 2, c], DType::F32).unwrap(),
                dweight: Some(&dw),
                dbias: Some(&db),
            },
        )
    })
    .unwrap();
    assert_eq!(c_.download(&dw).unwrap(), vec![0.0; c]);
    assert_eq!(c_.download(&db).unwrap(), vec![0.0; c]);
    assert_eq!(c_.download(&ema).unwrap(), vec![0.5; c]);
}

/// Unified Norm's approximate backward (the official gradient compensation) over steps that
/// cross the window-full and warm-up boundaries, an outlier step and steps past 1000 where the
/// compensation ratio r leaves 1: the saved (r, 1/sqrt(sigma^2 + eps)), dx, dweight, dbias and
/// the backward's state (ema_gz, buffer_gz) against the f64 reference step by step.
fn unified_backward_steps(dtype: DType, tol: f64) {
    use wgnorm::powernorm::UnifiedTraining;
    use wgnorm::{UnifiedNorm, UnifiedNormGradInputs};
    use wgnorm_reference::powernorm::{
        unified_norm_grad, unified_norm_train, UnifiedGradState, UnifiedState,
    };
    let c_ = ctx();
    let (b, n, c, m) = (2, 6, 5, 3);
    let tokens = b * n;
    let train = UnifiedTraining {
        window: m,
        warmup: 5,
        filter: true,
        momentum: 0.3,
    };
    let op = UnifiedNorm::new(c_, wgnorm::UnifiedNormConfig { eps: 1e-3, dtype })
        .unwrap()
        .with_training(train);
    let f = |v: &[f32]| round_to(DType::F32, v);
    let io = |v: &[f32]| round_to(dtype, v);
    let up = |v: &[f32], s: &[usize]| c_.upload_f32(v, s).unwrap();
    let w: Vec<f32> = noise(1, c).iter().map(|v| v + 1.0).collect();
    let bias = noise(2, c);
    let (wt, bt) = (up(&w, &[c]), up(&bias, &[c]));
    let (window_t, rv_t) = (up(&vec![0.0; m * c], &[m, c]), up(&vec![1.0; c], &[c]));
    let (ema_t, buf_t) = (up(&vec![0.0; c], &[c]), up(&vec![0.0; m * c], &[m, c]));
    let saved_t = c_.empty(&[c, 2], DType::F32).unwrap();
    let mut state = UnifiedState {
        window: vec![0.0; m * c],
        running_var: vec![1.0; c],
    };
    let mut gstate = UnifiedGradState {
        ema_gz: vec![0.0; c],
        buffer_gz: vec![0.0; m * c],
    };
    let mut seen = (false, false);
    for step in [1u64, 2, 3, 4, 5, 6, 7, 8, 9, 1001, 1002, 1003, 1004] {
        let scale = if step == 8 {
            30.0
        } else {
            0.05 * (1.0 + (step % 7) as f32)
        };
        let x: Vec<f32> = noise(20 + step, tokens * c)
            .iter()
            .map(|v| v * scale + 0.02)
            .collect();
        let dy = noise(40 + step, tokens * c);
        let (want_y, saved) = unified_norm_train(
            &io(&x),
            tokens,
            c,
            None,
            &f(&w),
            &f(&bias),
            &mut state,
            step,
            m,
            5,
            true,
            0.3,
            1e-3,
        );
        let want = unified_norm_grad(
            &io(&x),
            c,
            &f(&w),
            &io(&dy),
            &saved,
            &mut gstate,
            (step, m, 5),
            0.3,
        );
        seen.0 |= saved.skip;
        seen.1 |= saved.ratio.iter().any(|r| *r != 1.0);
        let upd = |v: &[f32]| c_.upload(v, &[b, n, c], dtype).unwrap();
        let (xt, dyt) = (upd(&x), upd(&dy));
        let y = c_.empty(&[b, n, c], dtype).unwrap();
        let inputs = wgnorm::UnifiedNormInputs {
            x: &xt,
            pad_mask: None,
            weight: Some(&wt),
            bias: Some(&bt),
            running_var: &rv_t,
            window: Some(&window_t),
        };
        let mut enc = c_.device().create_command_encoder(&Default::default());
        op.encode_train_saving(&mut enc, &inputs, &y, step, &saved_t)
            .unwrap();
        c_.queue().submit([enc.finish()]);
        let (dx, dw, db) = op
            .backward(
                &UnifiedNormGradInputs {
                    x: &xt,
                    weight: &wt,
                    dy: &dyt,
                    saved: &saved_t,
                    ema_gz: &ema_t,
                    buffer_gz: &buf_t,
                },
                step,
            )
            .unwrap();
        let what = format!("unified_norm backward step {step}");
        let d = |t: &wgnorm::Tensor| c_.download(t).unwrap();
        assert_close(&what, &d(&y), &want_y, tol, tol);
        let saved_want: Vec<f64> = (0..c)
            .flat_map(|ch| {
                let r = if saved.skip { -1.0 } else { saved.ratio[ch] };
                [r, saved.inv[ch]]
            })
            .collect();
        assert_close(
            &format!("{what} saved"),
            &d(&saved_t),
            &saved_want,
            tol,
            tol,
        );
        for (name, got, want) in [
            ("dx", d(&dx), &want.dx),
            ("dweight", d(&dw), &want.dweight),
            ("dbias", d(&db), &want.dbias),
            ("ema_gz", d(&ema_t), &gstate.ema_gz),
            ("buffer_gz", d(&buf_t), &gstate.buffer_gz),
        ] {
            assert_close(
                &format!("{what} {name}"),
                &got,
                want,
                10.0 * tol,
                10.0 * tol,
            );
        }
    }
    assert!(
        seen.0 && seen.1,
        "an outlier step and a ratio other than 1: {seen:?}"
    );
}

#[test]
fn unified_norm_backward_over_steps() {
    unified_backward_steps(DType::F32, 1e-5);
}

#[test]
fn unified_norm_backward_over_steps_f16() {
    unified_backward_steps(DType::F16, 1e-3);
}
