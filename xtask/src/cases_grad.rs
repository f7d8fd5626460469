//! The project's own backward cases (`cargo xtask cases`): the row norms and GroupNorm through
//! each fused activation, SELU's, QK-norm + RoPE's, LpNorm's and MVN's backward, the expected gradients from
//! `wgnorm_reference::grad` and `activation::Act` (both checked against finite differences
//! there).

use std::path::Path;

use anyhow::Result;
use safetensors::Dtype;
use wgnorm_reference::activation::{Act, SELU};
use wgnorm_reference::grad::{group_norm_act_grad, layer_norm_act_grad, rms_norm_act_grad};

use crate::cases::{rounded, tensor, values, write, Out};

fn tol(dtype: Dtype) -> (f64, f64) {
    if dtype == Dtype::F16 {
        (5e-3, 5e-3)
    } else {
        (2e-5, 1e-4)
    }
}

/// `dx`, `dweight`, `dbias` (when given) as expected outputs.
fn expected(shape: &[usize], n: usize, dx: &[f64], dw: &[f64], db: Option<&[f64]>) -> Vec<Out> {
    let mut out = vec![
        tensor("expected.dx", Dtype::F32, shape, dx),
        tensor("expected.dweight", Dtype::F32, &[n], dw),
    ];
    if let Some(db) = db {
        out.push(tensor("expected.dbias", Dtype::F32, &[n], db));
    }
    out
}

/// LayerNorm (plain and as the fused add) and RMSNorm through an activation.
fn row_cases(dir: &Path) -> Result<()> {
    // (tag, op, activation name, act, dtype, rows, n, weight_offset)
    let cases = [
        (
            "gelu_f32_6x40",
            "layer_norm_grad",
            "gelu",
            Act::GeluTanh,
            Dtype::F32,
            6,
            40,
            0.0,
        ),
        (
            "relu_f32_4x24",
            "add_layer_norm_grad",
            "relu",
            Act::Relu,
            Dtype::F32,
            4,
            24,
            0.0,
        ),
        (
            "selu_f32_5x33",
            "layer_norm_grad",
            "selu",
            SELU,
            Dtype::F32,
            5,
            33,
            0.0,
        ),
        (
            "silu_f16_3x64_gemma",
            "rms_norm_grad",
            "silu",
            Act::Silu,
            Dtype::F16,
            3,
            64,
            1.0,
        ),
        (
            "gelu_erf_f32_4x48",
            "add_rms_norm_grad",
            "gelu_erf",
            Act::GeluErf,
            Dtype::F32,
            4,
            48,
            0.0,
        ),
    ];
    for (tag, op, name, act, dtype, rows, n, offset) in cases {
        let shape = [rows, n];
        let x = rounded(dtype, &values(n as u64 + 1, rows * n, 2.0));
        let w = rounded(
            dtype,
            &values(3, n, 0.6)
                .iter()
                .map(|v| v + 1.0)
                .collect::<Vec<_>>(),
        );
        let b = rounded(dtype, &values(4, n, 0.5));
        let dy = rounded(dtype, &values(5, rows * n, 1.0));
        let add = op.starts_with("add_");
        let layer = op.contains("layer");
        let res = rounded(dtype, &values(6, rows * n, 1.0));
        let dsum = rounded(dtype, &values(7, rows * n, 0.5));
        let s: Vec<f64> = if add {
            x.iter().zip(&res).map(|(a, b)| a + b).collect()
        } else {
            x.clone()
        };
        let eps = 1e-5;
        let mut g = if layer {
            layer_norm_act_grad(&s, n, (Some(&w), Some(&b)), &dy, eps, act)
        } else {
            rms_norm_act_grad(&s, n, (Some(&w), offset), &dy, eps, act)
        };
        let mut outs = vec![
            tensor("x", dtype, &shape, &x),
            tensor("weight", dtype, &[n], &w),
            tensor("dy", dtype, &shape, &dy),
        ];
        if layer {
            outs.push(tensor("bias", dtype, &[n], &b));
        }
        if add {
            outs.push(tensor("residual", dtype, &shape, &res));
            outs.push(tensor("dsum", dtype, &shape, &dsum));
            g.dx.iter_mut().zip(&dsum).for_each(|(d, s)| *d += s);
        }
        let db = layer.then_some(g.dbias.as_slice());
        outs.extend(expected(&shape, n, &g.dx, &g.dweight, db));
        let mut attrs = serde_json::json!({ "axis": -1, "eps": eps, "activation": name });
        if !layer {
            attrs["weight_offset"] = serde_json::json!(offset);
        }
        write(
            dir,
            &format!("{op}_{tag}.safetensors"),
            op,
            attrs,
            tol(dtype),
            outs,
        )?;
    }
    Ok(())
}

/// GroupNorm through an activation (NCHW).
fn group_cases(dir: &Path) -> Result<()> {
    // (tag, activation name, act, dtype, n, c, hw side, groups)
    let cases = [
        (
            "gelu_erf_f32_2x8x3x3_g4",
            "gelu_erf",
            Act::GeluErf,
            Dtype::F32,
            2,
            8,
            3,
            4,
        ),
        (
            "relu_f32_3x6x4x4_g3",
            "relu",
            Act::Relu,
            Dtype::F32,
            3,
            6,
            4,
            3,
        ),
        (
            "selu_f16_2x16x5x5_g8",
            "selu",
            SELU,
            Dtype::F16,
            2,
            16,
            5,
            8,
        ),
    ];
    for (tag, name, act, dtype, n, c, side, groups) in cases {
        let hw = side * side;
        let shape = [n, c, side, side];
        let x = rounded(dtype, &values(c as u64 + 11, n * c * hw, 1.5));
        let w = rounded(
            Dtype::F32,
            &values(12, c, 0.6)
                .iter()
                .map(|v| v + 1.0)
                .collect::<Vec<_>>(),
        );
        let b = rounded(Dtype::F32, &values(13, c, 0.5));
        let dy = rounded(dtype, &values(14, n * c * hw, 1.0));
        let g = group_norm_act_grad(&x, (n, c, hw, groups), &w, &b, &dy, 1e-5, act);
        let mut outs = vec![
            tensor("x", dtype, &shape, &x),
            tensor("weight", Dtype::F32, &[c], &w),
            tensor("bias", Dtype::F32, &[c], &b),
            tensor("dy", dtype, &shape, &dy),
        ];
        outs.extend(expected(&shape, c, &g.dx, &g.dweight, Some(&g.dbias)));
        let attrs = serde_json::json!({ "num_groups": groups, "eps": 1e-5, "activation": name });
        let file = format!("group_norm_grad_{tag}.safetensors");
        write(dir, &file, "group_norm_grad", attrs, tol(dtype), outs)?;
    }
    Ok(())
}

/// `selu_grad`: PyTorch's constants in f32 and custom ones in f16, values across the kink.
fn selu_cases(dir: &Path) -> Result<()> {
    for (tag, dtype, alpha, gamma, n) in [
        (
            "f32_1000",
            Dtype::F32,
            1.6732632423543772,
            1.0507009873554805,
            1000,
        ),
        ("f16_257_custom", Dtype::F16, 1.25, 0.75, 257),
    ] {
        let x = rounded(dtype, &values(21, n, 4.0));
        let dy = rounded(dtype, &values(22, n, 1.0));
        let act = Act::Selu {
            alpha: alpha as f32 as f64,
            lambda: gamma as f32 as f64,
        };
        let dx: Vec<f64> = x.iter().zip(&dy).map(|(&v, &d)| d * act.grad(v)).collect();
        let outs = vec![
            tensor("x", dtype, &[n], &x),
            tensor("dy", dtype, &[n], &dy),
            tensor("expected.dx", Dtype::F32, &[n], &dx),
        ];
        let attrs = serde_json::json!({ "alpha": alpha, "gamma": gamma });
        let file = format!("selu_grad_{tag}.safetensors");
        write(dir, &file, "selu_grad", attrs, tol(dtype), outs)?;
    }
    Ok(())
}

/// `qk_norm_rope_grad`: NeoX from positions (f32), GPT-J from tables with a partial rotary dim
/// and Gemma's offset (f16).
fn qk_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::qk_norm_rope_grad;
    use wgnorm_reference::rownorm::RopeRef;
    for (tag, dtype, tokens, heads, d, rot, gptj, offset) in [
        (
            "f32_4x4x64_neox_positions",
            Dtype::F32,
            4,
            4,
            64,
            None,
            false,
            0.0,
        ),
        (
            "f16_3x2x128_gptj_table_rot64_gemma",
            Dtype::F16,
            3,
            2,
            128,
            Some(64),
            true,
            1.0,
        ),
    ] {
        let r: usize = rot.unwrap_or(d);
        let shape = [tokens, heads, d];
        let x = rounded(dtype, &values(d as u64 + 3, tokens * heads * d, 3.0));
        let w = rounded(dtype, &values(8, d, 0.5));
        let dy = rounded(dtype, &values(9, tokens * heads * d, 1.0));
        let pos: Vec<f64> = (0..tokens).map(|t| (t * 57 + 2) as f64).collect();
        let table = |f: fn(f64) -> f64| {
            rounded(
                Dtype::F32,
                &(0..tokens * r / 2)
                    .map(|i| f(i as f64 * 0.31))
                    .collect::<Vec<_>>(),
            )
        };
        let (cos, sin) = (table(f64::cos), table(f64::sin));
        let (eps, base) = (1e-6, 10_000.0);
        let angles = if gptj {
            RopeRef::Table {
                cos: &cos,
                sin: &sin,
            }
        } else {
            RopeRef::Positions { pos: &pos, base }
        };
        let g = qk_norm_rope_grad(
            &x,
            (heads, d),
            (Some(&w), offset),
            eps,
            (r, !gptj, angles),
            &dy,
        );
        let mut outs = vec![
            tensor("x", dtype, &shape, &x),
            tensor("weight", dtype, &[d], &w),
            tensor("dy", dtype, &shape, &dy),
            tensor("expected.dx", Dtype::F32, &shape, &g.dx),
            tensor("expected.dweight", Dtype::F32, &[d], &g.dweight),
        ];
        if gptj {
            outs.push(tensor("cos", Dtype::F32, &[tokens, r / 2], &cos));
            outs.push(tensor("sin", Dtype::F32, &[tokens, r / 2], &sin));
        } else {
            outs.push(tensor("positions", Dtype::F32, &[tokens], &pos));
        }
        let attrs = serde_json::json!({
            "eps": eps,
            "weight_offset": offset,
            "layout": if gptj { "gptj" } else { "neox" },
            "rotary_dim": rot,
            "base": base,
        });
        let file = format!("qk_norm_rope_grad_{tag}.safetensors");
        write(dir, &file, "qk_norm_rope_grad", attrs, tol(dtype), outs)?;
    }
    Ok(())
}

/// `lp_norm_grad` (p = 1, 2, a zero slot) and `mean_variance_norm_grad` (ONNX's default axes
/// and the last axis, with an offset).
fn lp_mvn_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::{lp_norm_grad, mean_variance_norm_grad};
    let shape = [2usize, 6, 3, 5];
    let numel: usize = shape.iter().product();
    for (tag, dtype, p, axis) in [
        ("p2_axis1_f32_2x6x3x5", Dtype::F32, 2u32, 1isize),
        ("p1_axis-1_f16_2x6x3x5", Dtype::F16, 1, -1),
    ] {
        let mut x = values(31, numel, 2.0);
        x[..5].fill(0.0); // one zero slot along the last axis, a zero element along axis 1
        let x = rounded(dtype, &x);
        let dy = rounded(dtype, &values(32, numel, 1.0));
        let dx = lp_norm_grad(&x, &shape, axis, p, &dy);
        let outs = vec![
            tensor("x", dtype, &shape, &x),
            tensor("dy", dtype, &shape, &dy),
            tensor("expected.dx", Dtype::F32, &shape, &dx),
        ];
        let attrs = serde_json::json!({ "axis": axis, "p": p });
        let file = format!("lp_norm_grad_{tag}.safetensors");
        write(dir, &file, "lp_norm_grad", attrs, tol(dtype), outs)?;
    }
    for (tag, dtype, axes) in [
        ("default_axes_f32_2x6x3x5", Dtype::F32, vec![0isize, 2, 3]),
        ("last_axis_f16_2x6x3x5", Dtype::F16, vec![-1]),
    ] {
        let x: Vec<f64> = values(33, numel, 1.0).iter().map(|v| v + 5.0).collect();
        let x = rounded(dtype, &x);
        let dy = rounded(dtype, &values(34, numel, 1.0));
        let dx = mean_variance_norm_grad(&x, &shape, &axes, 1e-9, &dy);
        let outs = vec![
            tensor("x", dtype, &shape, &x),
            tensor("dy", dtype, &shape, &dy),
            tensor("expected.dx", Dtype::F32, &shape, &dx),
        ];
        let attrs = serde_json::json!({ "axes": axes });
        let file = format!("mean_variance_norm_grad_{tag}.safetensors");
        write(
            dir,
            &file,
            "mean_variance_norm_grad",
            attrs,
            tol(dtype),
            outs,
        )?;
    }
    Ok(())
}

/// `ghost_batch_norm_grad`: training, 3 chunks of 2 samples, the expected gradients
/// BatchNorm's per chunk (dweight, dbias summed over the chunks).
fn ghost_cases(dir: &Path) -> Result<()> {
    use wgnorm_reference::grad::batch_norm_grad;
    let (n, c, side, ghost) = (6usize, 4usize, 3usize, 2usize);
    let hw = side * side;
    let shape = [n, c, side, side];
    let x: Vec<f64> = values(41, n * c * hw, 1.5)
        .iter()
        .map(|v| v + 2.0)
        .collect();
    let x = rounded(Dtype::F32, &x);
    let w = rounded(
        Dtype::F32,
        &values(42, c, 0.5)
            .iter()
            .map(|v| v + 1.0)
            .collect::<Vec<_>>(),
    );
    let b = rounded(Dtype::F32, &values(43, c, 0.5));
    let dy = rounded(Dtype::F32, &values(44, n * c * hw, 1.0));
    let chunk = ghost * c * hw;
    let (mut dx, mut dw, mut db) = (Vec::new(), vec![0.0; c], vec![0.0; c]);
    for k in 0..n / ghost {
        let r = k * chunk..(k + 1) * chunk;
        let g = batch_norm_grad(&x[r.clone()], ghost, c, hw, Some(&w), &dy[r], None, 1e-5);
        dx.extend(g.dx);
        (0..c).for_each(|ch| {
            dw[ch] += g.dweight[ch];
            db[ch] += g.dbias[ch];
        });
    }
    let mut outs = vec![
        tensor("x", Dtype::F32, &shape, &x),
        tensor("weight", Dtype::F32, &[c], &w),
        tensor("bias", Dtype::F32, &[c], &b),
        tensor("dy", Dtype::F32, &shape, &dy),
    ];
    outs.extend(expected(&shape, c, &dx, &dw, Some(&db)));
    let attrs = serde_json::json!({ "ghost_size": ghost, "eps": 1e-5, "training": true });
    let file = "ghost_batch_norm_grad_f32_6x4x3x3_g2.safetensors";
    write(
        dir,
        file,
        "ghost_batch_norm_grad",
        attrs,
        tol(Dtype::F32),
        outs,
    )
}

/// Every backward case of the project's own.
pub fn activation_grad_cases(dir: &Path) -> Result<()> {
    row_cases(dir)?;
    group_cases(dir)?;
    selu_cases(dir)?;
    qk_cases(dir)?;
    lp_mvn_cases(dir)?;
    ghost_cases(dir)
}
