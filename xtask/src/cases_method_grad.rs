//! The project's own backward cases of the research methods used in training
//! (`cargo xtask cases`): the expected gradients from `wgnorm_reference::grad`, each checked
//! against central finite differences of its f64 forward there.

use std::path::Path;

use anyhow::Result;
use safetensors::Dtype;
use wgnorm_reference::grad::BatchChannel;

use crate::cases::{rounded, tensor, values, write, Out};

/// Per-channel mean and variance.
type Stats<'a> = (&'a [f64], &'a [f64]);

/// `batch_channel_norm_grad` in its three forms: training through the batch statistics,
/// inference, and EstBN training (the expected gradients with the statistics its forward
/// updates, taken as constants). eps = 1e-3 next to BN variances of about 1e-3: eps matters.
fn batch_channel_cases(dir: &Path) -> Result<()> {
    let (n, c, side, groups, eps) = (4usize, 8usize, 3usize, 4usize, 1e-3);
    let hw = side * side;
    let shape = [n, c, side, side];
    let f = |v: &[f64]| rounded(Dtype::F32, v);
    let x = f(&values(61, n * c * hw, 0.05)
        .iter()
        .map(|v| v + 3.0)
        .collect::<Vec<_>>());
    let dy = f(&values(62, x.len(), 1.0));
    let bw = f(&values(63, c, 0.5)
        .iter()
        .map(|v| v + 1.0)
        .collect::<Vec<_>>());
    let bb = f(&values(64, c, 0.5));
    let w = f(&values(65, groups, 0.5)
        .iter()
        .map(|v| v + 1.0)
        .collect::<Vec<_>>());
    let b = f(&values(66, groups, 0.5));
    let rm = f(&values(67, c, 0.02)
        .iter()
        .map(|v| v + 3.0)
        .collect::<Vec<_>>());
    let rv = f(&values(68, c, 5e-4)
        .iter()
        .map(|v| v + 1e-3)
        .collect::<Vec<_>>());
    let op = BatchChannel {
        n,
        c,
        hw,
        groups,
        bn_weight: Some(&bw),
        bn_bias: Some(&bb),
        weight: &w,
        bias: &b,
        eps,
    };
    let ms = 0.25;
    let (erm, erv) = estbn_updated(&x, (n, c, hw), (&rm, &rv), ms);
    // (tag, training, EstBN moving speed, the statistics the backward takes as constants)
    let forms: [(&str, bool, Option<f64>, Option<Stats>); 3] = [
        ("train", true, None, None),
        ("infer", false, None, Some((&rm, &rv))),
        ("estbn_train", true, Some(ms), Some((&erm, &erv))),
    ];
    for (tag, training, estbn, running) in forms {
        let g = op.grad(&x, &dy, running);
        let outs: Vec<Out> = vec![
            tensor("x", Dtype::F32, &shape, &x),
            tensor("bn_weight", Dtype::F32, &[c], &bw),
            tensor("bn_bias", Dtype::F32, &[c], &bb),
            tensor("running_mean", Dtype::F32, &[c], &rm),
            tensor("running_var", Dtype::F32, &[c], &rv),
            tensor("weight", Dtype::F32, &[groups], &w),
            tensor("bias", Dtype::F32, &[groups], &b),
            tensor("dy", Dtype::F32, &shape, &dy),
            tensor("expected.dx", Dtype::F32, &shape, &g.dx),
            tensor("expected.dbn_weight", Dtype::F32, &[c], &g.dbn_weight),
            tensor("expected.dbn_bias", Dtype::F32, &[c], &g.dbn_bias),
            tensor("expected.dweight", Dtype::F32, &[groups], &g.dweight),
            tensor("expected.dbias", Dtype::F32, &[groups], &g.dbias),
        ];
        let mut attrs = serde_json::json!({
            "num_groups": groups, "eps": eps, "momentum": 0.1, "training": training,
        });
        if let Some(ms) = estbn {
            attrs["estbn_moving_speed"] = serde_json::json!(ms);
        }
        let file = format!("batch_channel_norm_grad_{tag}_f32_4x8x3x3_g4.safetensors");
        write(
            dir,
            &file,
            "batch_channel_norm_grad",
            attrs,
            (5e-5, 2e-4),
            outs,
        )?;
    }
    Ok(())
}

/// EstBN's running statistics after one training step (docs/methods.md A6):
/// `rm' = (1 - ms) rm + ms mean`, `rv' = (1 - ms) rv + ms mean((x - rm)^2)` (centred on the old
/// running mean), per channel of NCHW `(n, c, hw)`.
fn estbn_updated(
    x: &[f64],
    (n, c, hw): (usize, usize, usize),
    (rm, rv): (&[f64], &[f64]),
    ms: f64,
) -> (Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    (0..c)
        .map(|ch| {
            let vals = (0..n).flat_map(|i| x[(i * c + ch) * hw..(i * c + ch + 1) * hw].iter());
            let (s, s2) = vals.fold((0.0, 0.0), |(s, s2), v| (s + v, s2 + (v - rm[ch]).powi(2)));
            (
                (1.0 - ms) * rm[ch] + ms * s / m,
                (1.0 - ms) * rv[ch] + ms * s2 / m,
            )
        })
        .unzip()
}

/// `rep_batch_norm_grad` over `[B, T, C]` tokens, training and inference: BatchNorm's
/// gradients of the `(B T, C)` view plus `alpha * dy`, and `dalpha = sum(dy * x)`. Values about
/// 0.03 apart next to eps = 1e-3.
fn rep_batch_norm_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::rep_batch_norm_grad;
    let (b, t, c, eps, alpha) = (3usize, 5usize, 8usize, 1e-3, 0.35);
    let f = |v: &[f64]| rounded(Dtype::F32, v);
    let x = f(&values(91, b * t * c, 0.03)
        .iter()
        .map(|v| v - 2.0)
        .collect::<Vec<_>>());
    let dy = f(&values(92, x.len(), 1.0));
    let w = f(&values(93, c, 0.5)
        .iter()
        .map(|v| v + 1.0)
        .collect::<Vec<_>>());
    let bias = f(&values(94, c, 0.5));
    let rm = f(&values(95, c, 0.02)
        .iter()
        .map(|v| v - 2.0)
        .collect::<Vec<_>>());
    let rv = f(&values(96, c, 5e-4)
        .iter()
        .map(|v| v + 1e-3)
        .collect::<Vec<_>>());
    for (tag, training) in [("train", true), ("infer", false)] {
        let running = (!training).then_some((rm.as_slice(), rv.as_slice()));
        // Channels-last [B T, C] is NCHW with N = B T and one position.
        let (g, dalpha) = rep_batch_norm_grad(&x, b * t, c, 1, Some(&w), alpha, &dy, running, eps);
        let shape = [b, t, c];
        let outs: Vec<Out> = vec![
            tensor("x", Dtype::F32, &shape, &x),
            tensor("weight", Dtype::F32, &[c], &w),
            tensor("bias", Dtype::F32, &[c], &bias),
            tensor("running_mean", Dtype::F32, &[c], &rm),
            tensor("running_var", Dtype::F32, &[c], &rv),
            tensor("alpha", Dtype::F32, &[1], &[alpha]),
            tensor("dy", Dtype::F32, &shape, &dy),
            tensor("expected.dx", Dtype::F32, &shape, &g.dx),
            tensor("expected.dweight", Dtype::F32, &[c], &g.dweight),
            tensor("expected.dbias", Dtype::F32, &[c], &g.dbias),
            tensor("expected.dalpha", Dtype::F32, &[1], &[dalpha]),
        ];
        let attrs = serde_json::json!({ "eps": eps, "momentum": 0.1, "training": training });
        let file = format!("rep_batch_norm_grad_{tag}_f32_3x5x8.safetensors");
        write(dir, &file, "rep_batch_norm_grad", attrs, (5e-5, 2e-4), outs)?;
    }
    Ok(())
}

/// `sinkhorn_normalize_grad` at the default 5 iterations and at 2, f32 and f16.
fn sinkhorn_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::sinkhorn_grad;
    for (m, n, iterations, dtype) in [
        (6usize, 10usize, 5usize, Dtype::F32),
        (12, 7, 2, Dtype::F32),
        (8, 16, 5, Dtype::F16),
    ] {
        let x = rounded(dtype, &values(121 + m as u64, m * n, 1.0));
        let dy = rounded(dtype, &values(122, m * n, 1.0));
        let dx = sinkhorn_grad(&x, (m, n), iterations, 1e-8, &dy);
        let outs = vec![
            tensor("x", dtype, &[m, n], &x),
            tensor("dy", dtype, &[m, n], &dy),
            tensor("expected.dx", Dtype::F32, &[m, n], &dx),
        ];
        let attrs = serde_json::json!({ "iterations": iterations, "eps": 1e-8 });
        let name = if dtype == Dtype::F16 { "f16" } else { "f32" };
        let file = format!("sinkhorn_normalize_grad_{name}_{m}x{n}_l{iterations}.safetensors");
        // f16: every pass's input and gradient is rounded to f16 (as the forward's).
        let tol = if dtype == Dtype::F16 {
            (2e-2, 2e-2)
        } else {
            (5e-5, 5e-4)
        };
        write(dir, &file, "sinkhorn_normalize_grad", attrs, tol, outs)?;
    }
    Ok(())
}

/// `evonorm_s0_grad`, f32 and f16: group variances about eps (values 0.05 apart around 2).
fn evonorm_s0_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::evonorm_s0_grad;
    for (n, c, side, groups, dtype) in [
        (2usize, 16usize, 5usize, 4usize, Dtype::F32),
        (3, 8, 4, 2, Dtype::F16),
    ] {
        let (hw, eps) = (side * side, 1e-3);
        let shape = [n, c, side, side];
        let f = |v: &[f64]| rounded(Dtype::F32, v);
        let x = rounded(
            dtype,
            &values(151, n * c * hw, 0.05)
                .iter()
                .map(|v| v + 2.0)
                .collect::<Vec<_>>(),
        );
        let dy = rounded(dtype, &values(152, x.len(), 1.0));
        let v = f(&values(153, c, 1.0));
        let w = f(&values(154, c, 0.5)
            .iter()
            .map(|e| e + 1.0)
            .collect::<Vec<_>>());
        let b = f(&values(155, c, 0.5));
        let g = evonorm_s0_grad(&x, (n, c, hw, groups), (&v, &w), &dy, eps);
        let outs = vec![
            tensor("x", dtype, &shape, &x),
            tensor("weight", Dtype::F32, &[c], &w),
            tensor("bias", Dtype::F32, &[c], &b),
            tensor("v", Dtype::F32, &[c], &v),
            tensor("dy", dtype, &shape, &dy),
            tensor("expected.dx", Dtype::F32, &shape, &g.dx),
            tensor("expected.dv", Dtype::F32, &[c], &g.dv),
            tensor("expected.dweight", Dtype::F32, &[c], &g.dweight),
            tensor("expected.dbias", Dtype::F32, &[c], &g.dbias),
        ];
        let attrs = serde_json::json!({ "groups": groups, "eps": eps });
        let name = if dtype == Dtype::F16 { "f16" } else { "f32" };
        let file = format!("evonorm_s0_grad_{name}_{n}x{c}x{side}x{side}_g{groups}.safetensors");
        let tol = if dtype == Dtype::F16 {
            (2e-2, 2e-2)
        } else {
            (5e-5, 2e-4)
        };
        write(dir, &file, "evonorm_s0_grad", attrs, tol, outs)?;
    }
    Ok(())
}

/// `evonorm_b0_grad`: training and inference in f32, training in f16, and one exact tie of the
/// max (one sample in training with v = 0: the batch and instance denominators are the same
/// number; each branch takes half). Values 0.05 apart about 0.3 next to eps = 1e-3, v of both
/// signs; away from the tie case no element lies within 1e-4 of a tie (asserted), so a float32
/// kernel takes the same branch as the float64 reference.
fn evonorm_b0_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::{evonorm_b0_grad, EvoB0Variance};
    let eps = 1e-3;
    for (tag, (n, c, side), dtype, training) in [
        ("train", (3usize, 6usize, 4usize), Dtype::F32, true),
        ("infer", (2, 6, 5), Dtype::F32, false),
        ("train", (2, 8, 4), Dtype::F16, true),
        ("tie", (1, 4, 3), Dtype::F32, true),
    ] {
        let (hw, shape) = (side * side, [n, c, side, side]);
        let f = |v: &[f64]| rounded(Dtype::F32, v);
        let x = rounded(
            dtype,
            &values(161, n * c * hw, 0.05)
                .iter()
                .map(|v| v + 0.3)
                .collect::<Vec<_>>(),
        );
        let dy = rounded(dtype, &values(162, x.len(), 1.0));
        let v = f(&values(163, c, if tag == "tie" { 0.0 } else { 0.3 }));
        let w = f(&values(164, c, 0.5)
            .iter()
            .map(|e| e + 1.0)
            .collect::<Vec<_>>());
        let b = f(&values(165, c, 0.5));
        let rv = f(&values(166, c, 0.001)
            .iter()
            .map(|e| e + 0.002)
            .collect::<Vec<_>>());
        let var_b = if training {
            EvoB0Variance::Batch
        } else {
            EvoB0Variance::Running(&rv)
        };
        if tag != "tie" {
            b0_margin_check(&x, (n, c, hw), &v, var_b, eps)?;
        }
        let g = evonorm_b0_grad(&x, (n, c, hw), (&v, &w), var_b, &dy, eps);
        let outs = vec![
            tensor("x", dtype, &shape, &x),
            tensor("weight", Dtype::F32, &[c], &w),
            tensor("bias", Dtype::F32, &[c], &b),
            tensor("v", Dtype::F32, &[c], &v),
            tensor("running_var", Dtype::F32, &[c], &rv),
            tensor("dy", dtype, &shape, &dy),
            tensor("expected.dx", Dtype::F32, &shape, &g.dx),
            tensor("expected.dweight", Dtype::F32, &[c], &g.dweight),
            tensor("expected.dbias", Dtype::F32, &[c], &g.dbias),
            tensor("expected.dv", Dtype::F32, &[c], &g.dv),
        ];
        let attrs = serde_json::json!({ "eps": eps, "training": training });
        let name = if dtype == Dtype::F16 { "f16" } else { "f32" };
        let file = format!("evonorm_b0_grad_{name}_{tag}_{n}x{c}x{side}x{side}.safetensors");
        let tol = if dtype == Dtype::F16 {
            (2e-2, 2e-2)
        } else {
            (1e-4, 5e-4)
        };
        write(dir, &file, "evonorm_b0_grad", attrs, tol, outs)?;
    }
    Ok(())
}

/// Fails when an element of an EvoNorm-B0 case lies within 1e-4 of the max's tie.
fn b0_margin_check(
    x: &[f64],
    (n, c, hw): (usize, usize, usize),
    v: &[f64],
    var_b: wgnorm_reference::grad::EvoB0Variance,
    eps: f64,
) -> Result<()> {
    let var = |e: &[f64]| {
        let m = e.iter().sum::<f64>() / e.len() as f64;
        e.iter().map(|a| (a - m).powi(2)).sum::<f64>() / e.len() as f64
    };
    for ch in 0..c {
        let all: Vec<f64> = (0..n)
            .flat_map(|i| x[(i * c + ch) * hw..(i * c + ch + 1) * hw].to_vec())
            .collect();
        let a = match var_b {
            wgnorm_reference::grad::EvoB0Variance::Batch => (var(&all) + eps).sqrt(),
            wgnorm_reference::grad::EvoB0Variance::Running(rv) => (rv[ch] + eps).sqrt(),
        };
        for i in 0..n {
            let slab = &x[(i * c + ch) * hw..(i * c + ch + 1) * hw];
            let s = (var(slab) + eps).sqrt();
            if let Some(e) = slab.iter().find(|e| (v[ch] * *e + s - a).abs() < 1e-4) {
                anyhow::bail!("evonorm_b0_grad case: x = {e} of channel {ch} is near a tie");
            }
        }
    }
    Ok(())
}

/// `poincare_midpoint_grad`: points spread over the ball (some at 0.95 of its radius, where the
/// conformal weights are steep), one case with points outside it (the projection's Jacobian, at
/// the f32 kernels' radius `(1 - 4e-3) / sqrt(c)`), f32 and f16.
fn poincare_midpoint_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::poincare_midpoint_grad;
    use wgnorm_reference::poincare::{Ball, PROJ_EPS_F32};
    for (tag, (p, d), c, dtype) in [
        ("inside", (64usize, 5usize), 1.0, Dtype::F32),
        ("outside", (24, 3), 0.5, Dtype::F32),
        ("inside", (32, 8), 0.1, Dtype::F16),
    ] {
        let radius = 1.0 / f64::sqrt(c);
        let raw = values(191, p * d, 1.0);
        let scale = values(192, p, 1.0);
        let x: Vec<f64> = raw
            .chunks(d)
            .zip(&scale)
            .enumerate()
            .flat_map(|(i, (v, s))| {
                let n = v.iter().map(|e| e * e).sum::<f64>().sqrt().max(1e-9);
                let r = match (tag, i % 6) {
                    ("outside", 0) => 2.0,
                    (_, 1) => 0.95,
                    _ => 0.45 * (s + 1.0),
                };
                v.iter()
                    .map(move |e| e / n * r * radius)
                    .collect::<Vec<_>>()
            })
            .collect();
        let x = rounded(dtype, &x);
        let dy = rounded(dtype, &values(193, d, 1.0));
        let ball = Ball::new(c, PROJ_EPS_F32);
        let points: Vec<Vec<f64>> = x.chunks(d).map(|v| v.to_vec()).collect();
        let dx = poincare_midpoint_grad(&ball, &points, &dy).concat();
        let outs = vec![
            tensor("x", dtype, &[p, d], &x),
            tensor("dy", dtype, &[d], &dy),
            tensor("expected.dx", Dtype::F32, &[p, d], &dx),
        ];
        let attrs = serde_json::json!({ "c": c });
        let name = if dtype == Dtype::F16 { "f16" } else { "f32" };
        let file = format!("poincare_midpoint_grad_{name}_{tag}_{p}x{d}_c{c}.safetensors");
        let scale = dx.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let tol = if dtype == Dtype::F16 {
            (2e-2 * scale, 2e-2)
        } else {
            (1e-4 * scale, 1e-4)
        };
        write(dir, &file, "poincare_midpoint_grad", attrs, tol, outs)?;
    }
    Ok(())
}

/// `poincare_batch_norm_grad` (NCHW, batch statistics): tangent vectors spread over the ball, some
/// far past the projection radius, points 1e-3 apart around an offset (the Fréchet variance at
/// the 1e-6 that regularizes the gain), f32 and f16.
fn poincare_batch_norm_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::poincare_batch_norm_grad;
    use wgnorm_reference::poincare::{points_along, scatter_points, Ball, PROJ_EPS_F32};
    for (tag, shape, c, scale, offset, dtype) in [
        ("spread", [4usize, 5, 3, 3], 0.1, 1.5, 0.0, Dtype::F32),
        ("projected", [3, 4, 2, 4], 1.0, 8.0, 0.0, Dtype::F32),
        ("variance_at_eps", [6, 3, 2, 2], 0.5, 1e-3, 0.4, Dtype::F32),
        ("spread", [2, 6, 3, 3], 0.1, 1.5, 0.0, Dtype::F16),
    ] {
        let numel: usize = shape.iter().product();
        let (d, s) = (shape[1], shape[2] * shape[3]);
        let x: Vec<f64> = values(221, numel, scale)
            .iter()
            .map(|v| v + offset)
            .collect();
        let x = rounded(dtype, &x);
        let dy = rounded(dtype, &values(222, numel, 1.0));
        let bias = rounded(Dtype::F32, &values(223, d, 0.5));
        let weight = 0.8;
        let ball = Ball::new(c, PROJ_EPS_F32);
        let (points, _, _) = points_along(&x, &shape, 1);
        let (dyp, _, _) = points_along(&dy, &shape, 1);
        let g = poincare_batch_norm_grad(&ball, &points, (&bias, weight), &dyp);
        let dx = scatter_points(&g.dx, d, s);
        let outs = vec![
            tensor("x", dtype, &shape, &x),
            tensor("bias", Dtype::F32, &[d], &bias),
            tensor("weight", Dtype::F32, &[1], &[weight]),
            tensor("dy", dtype, &shape, &dy),
            tensor("expected.dx", Dtype::F32, &shape, &dx),
            tensor("expected.dbias", Dtype::F32, &[d], &g.dbias),
            tensor("expected.dweight", Dtype::F32, &[1], &[g.dweight]),
        ];
        let attrs = serde_json::json!({ "c": c });
        let name = if dtype == Dtype::F16 { "f16" } else { "f32" };
        let dims = shape.map(|e| e.to_string()).join("x");
        let file = format!("poincare_batch_norm_grad_{name}_{tag}_{dims}_c{c}.safetensors");
        // Relative to the largest gradient: the f32 kernels' own rounding is ~1e-4 of it.
        let big = [&dx, &g.dbias, &vec![g.dweight]]
            .iter()
            .flat_map(|v| v.iter())
            .fold(0.0f64, |m, v| m.max(v.abs()));
        let rel = if dtype == Dtype::F16 { 3e-3 } else { 1e-3 };
        write(
            dir,
            &file,
            "poincare_batch_norm_grad",
            attrs,
            (rel * big, rel),
            outs,
        )?;
    }
    Ok(())
}

/// `ibn_norm_grad`, training and inference (C odd: half = 4 of 9), values 0.05 apart at an
/// offset next to eps = 1e-3.
fn ibn_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::ibn_grad;
    let (n, c, side, eps) = (4usize, 9usize, 5usize, 1e-3);
    let (hw, half) = (side * side, c / 2);
    let shape = [n, c, side, side];
    let f = |v: &[f64]| rounded(Dtype::F32, v);
    let x = f(&values(181, n * c * hw, 0.05)
        .iter()
        .map(|v| v + 1.5)
        .collect::<Vec<_>>());
    let dy = f(&values(182, x.len(), 1.0));
    let w = f(&values(183, c, 0.5)
        .iter()
        .map(|e| e + 1.0)
        .collect::<Vec<_>>());
    let b = f(&values(184, c, 0.5));
    let rm = f(&values(185, c - half, 0.02)
        .iter()
        .map(|e| e + 1.5)
        .collect::<Vec<_>>());
    let rv = f(&values(186, c - half, 5e-4)
        .iter()
        .map(|e| e + 1e-3)
        .collect::<Vec<_>>());
    for (tag, training) in [("train", true), ("infer", false)] {
        let running = (!training).then_some((rm.as_slice(), rv.as_slice()));
        let g = ibn_grad(&x, (n, c, hw, half), &w, &dy, running, eps);
        let outs = vec![
            tensor("x", Dtype::F32, &shape, &x),
            tensor("weight", Dtype::F32, &[c], &w),
            tensor("bias", Dtype::F32, &[c], &b),
            tensor("running_mean", Dtype::F32, &[c - half], &rm),
            tensor("running_var", Dtype::F32, &[c - half], &rv),
            tensor("dy", Dtype::F32, &shape, &dy),
            tensor("expected.dx", Dtype::F32, &shape, &g.dx),
            tensor("expected.dweight", Dtype::F32, &[c], &g.dweight),
            tensor("expected.dbias", Dtype::F32, &[c], &g.dbias),
        ];
        let attrs = serde_json::json!({
            "ratio": 0.5, "eps": eps, "momentum": 0.1, "training": training,
        });
        let file = format!("ibn_norm_grad_{tag}_f32_4x9x5x5.safetensors");
        write(dir, &file, "ibn_norm_grad", attrs, (5e-5, 2e-4), outs)?;
    }
    Ok(())
}

/// `region_norm_b_grad` with a U8 mask at the feature size, values 0.05 apart next to
/// eps = 1e-3 (scaled by NHW / S).
fn region_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::region_norm_b_grad;
    let (n, c, h, w, eps) = (2usize, 6usize, 5usize, 4usize, 1e-3);
    let hw = h * w;
    let shape = [n, c, h, w];
    let f = |v: &[f64]| rounded(Dtype::F32, v);
    let x = f(&values(211, n * c * hw, 0.05)
        .iter()
        .map(|v| v + 1.0)
        .collect::<Vec<_>>());
    let dy = f(&values(212, x.len(), 1.0));
    let mask: Vec<f64> = (0..n * hw)
        .map(|p| ((p / w + p % w) % 3 == 0) as u8 as f64)
        .collect();
    let [gf, gb, bf, bb] = [213, 214, 215, 216].map(|s| f(&values(s, c, 0.5)));
    let g = region_norm_b_grad(&x, (n, c, hw), &mask, (&gf, &gb), &dy, eps);
    let outs = vec![
        tensor("x", Dtype::F32, &shape, &x),
        tensor("mask", Dtype::U8, &[n, 1, h, w], &mask),
        tensor("gamma_f", Dtype::F32, &[c], &gf),
        tensor("gamma_b", Dtype::F32, &[c], &gb),
        tensor("beta_f", Dtype::F32, &[c], &bf),
        tensor("beta_b", Dtype::F32, &[c], &bb),
        tensor("dy", Dtype::F32, &shape, &dy),
        tensor("expected.dx", Dtype::F32, &shape, &g.dx),
        tensor("expected.dgamma_f", Dtype::F32, &[c], &g.dgamma_f),
        tensor("expected.dgamma_b", Dtype::F32, &[c], &g.dgamma_b),
        tensor("expected.dbeta_f", Dtype::F32, &[c], &g.dbeta_f),
        tensor("expected.dbeta_b", Dtype::F32, &[c], &g.dbeta_b),
    ];
    let attrs = serde_json::json!({ "eps": eps });
    let file = "region_norm_b_grad_f32_2x6x5x4.safetensors";
    write(dir, file, "region_norm_b_grad", attrs, (5e-5, 2e-4), outs)
}

/// Every backward case of the research methods.
pub fn method_grad_cases(dir: &Path) -> Result<()> {
    region_cases(dir)?;
    batch_channel_cases(dir)?;
    rep_batch_norm_cases(dir)?;
    sinkhorn_cases(dir)?;
    evonorm_s0_cases(dir)?;
    evonorm_b0_cases(dir)?;
    poincare_midpoint_cases(dir)?;
    poincare_batch_norm_cases(dir)?;
    ibn_cases(dir)
}
