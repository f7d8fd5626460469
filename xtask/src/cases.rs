//! `cargo xtask cases DIR`: writes the project's own conformance cases (ops the shared case set
//! does not cover yet) into DIR, in the format of `tests/conformance/FORMAT.md`, the expected
//! values from the f64 reference of `wgnorm-reference` on inputs already rounded to the case's
//! dtype. The committed copies live in `tests/conformance/wgnorm/`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use wgnorm_reference::rownorm::{qk_norm_rope, RopeRef};

/// A tensor to write: name, dtype, shape, values (rounded to the dtype when F16).
pub(crate) struct Out {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

pub(crate) fn tensor(name: &str, dtype: Dtype, shape: &[usize], v: &[f64]) -> Out {
    let bytes = match dtype {
        Dtype::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f64(x).to_le_bytes())
            .collect(),
        Dtype::U8 => v.iter().map(|&x| x as u8).collect(),
        _ => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
    };
    Out {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        bytes,
    }
}

/// The value a stored input holds (what the kernel sees).
pub(crate) fn rounded(dtype: Dtype, v: &[f64]) -> Vec<f64> {
    v.iter()
        .map(|&x| match dtype {
            Dtype::F16 => half::f16::from_f64(x).to_f64(),
            _ => x as f32 as f64,
        })
        .collect()
}

pub(crate) fn write(
    dir: &Path,
    file: &str,
    op: &str,
    attrs: serde_json::Value,
    tol: (f64, f64),
    outs: Vec<Out>,
) -> Result<()> {
    let meta: HashMap<String, String> = [
        ("op", op.to_string()),
        ("attrs", attrs.to_string()),
        ("atol", tol.0.to_string()),
        ("rtol", tol.1.to_string()),
        (
            "source",
            "wgnorm-reference (f64), cargo xtask cases".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let views: Vec<(String, TensorView)> = outs
        .iter()
        .map(|o| {
            Ok((
                o.name.clone(),
                TensorView::new(o.dtype, o.shape.clone(), &o.bytes)?,
            ))
        })
        .collect::<Result<_>>()?;
    let path = dir.join(file);
    if unchanged(&path, &meta, &views) {
        println!("unchanged {file}");
        return Ok(());
    }
    let data = safetensors::tensor::serialize(views, Some(meta))?;
    std::fs::write(path, data)?;
    println!("wrote {file}");
    Ok(())
}

/// Whether `path` already holds these tensors and metadata: the header's key order follows a
/// HashMap, so equal cases serialize to different bytes and would churn the repository.
fn unchanged(path: &Path, meta: &HashMap<String, String>, views: &[(String, TensorView)]) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let Ok((_, old_meta)) = safetensors::SafeTensors::read_metadata(&bytes) else {
        return false;
    };
    let Ok(old) = safetensors::SafeTensors::deserialize(&bytes) else {
        return false;
    };
    old_meta.metadata().as_ref() == Some(meta)
        && old.len() == views.len()
        && views.iter().all(|(name, v)| {
            old.tensor(name).is_ok_and(|t| {
                t.dtype() == v.dtype() && t.shape() == v.shape() && t.data() == v.data()
            })
        })
}

/// Deterministic values in about [-scale, scale].
pub(crate) fn values(seed: u64, len: usize, scale: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s % 20001) as f64 / 10000.0 - 1.0) * scale
        })
        .collect()
}

/// The qk_norm_rope cases: layouts, angle sources, partial rotary dims, Gemma's offset, f16.
fn qk_norm_rope_cases(dir: &Path) -> Result<()> {
    // (file tag, dtype, tokens, heads, d, rotary_dim, gptj, angles: 0 positions 1 table, offset)
    let cases = [
        (
            "f32_4x8x128_neox_positions",
            Dtype::F32,
            4,
            8,
            128,
            None,
            false,
            0,
            0.0,
        ),
        (
            "f32_3x4x64_gptj_table_rot32",
            Dtype::F32,
            3,
            4,
            64,
            Some(32),
            true,
            1,
            0.0,
        ),
        (
            "f16_5x2x256_neox_positions_gemma",
            Dtype::F16,
            5,
            2,
            256,
            None,
            false,
            0,
            1.0,
        ),
    ];
    for (tag, dtype, tokens, heads, d, rot, gptj, angles, offset) in cases {
        let r: usize = rot.unwrap_or(d);
        let x = rounded(dtype, &values(d as u64, tokens * heads * d, 3.0));
        let w = rounded(dtype, &values(7, d, 0.5));
        let pos: Vec<f64> = (0..tokens).map(|t| (t * 131 + 3) as f64).collect();
        let cos = rounded(
            Dtype::F32,
            &(0..tokens * r / 2)
                .map(|i| (i as f64 * 0.29).cos())
                .collect::<Vec<_>>(),
        );
        let sin = rounded(
            Dtype::F32,
            &(0..tokens * r / 2)
                .map(|i| (i as f64 * 0.29).sin())
                .collect::<Vec<_>>(),
        );
        let (eps, base) = (1e-6, 10_000.0);
        let angle_ref = if angles == 0 {
            RopeRef::Positions { pos: &pos, base }
        } else {
            RopeRef::Table {
                cos: &cos,
                sin: &sin,
            }
        };
        let y = qk_norm_rope(&x, heads, d, Some(&w), offset, eps, r, !gptj, angle_ref);
        let mut outs = vec![
            tensor("x", dtype, &[tokens, heads, d], &x),
            tensor("weight", dtype, &[d], &w),
            tensor("expected.y", Dtype::F32, &[tokens, heads, d], &y),
        ];
        if angles == 0 {
            outs.push(tensor("positions", Dtype::F32, &[tokens], &pos));
        } else {
            outs.push(tensor("cos", Dtype::F32, &[tokens, r / 2], &cos));
            outs.push(tensor("sin", Dtype::F32, &[tokens, r / 2], &sin));
        }
        let attrs = serde_json::json!({
            "eps": eps,
            "weight_offset": offset,
            "layout": if gptj { "gptj" } else { "neox" },
            "rotary_dim": rot,
            "base": base,
        });
        let tol = if dtype == Dtype::F16 {
            (4e-3, 4e-3)
        } else {
            (2e-5, 1e-4)
        };
        write(
            dir,
            &format!("qk_norm_rope_{tag}.safetensors"),
            "qk_norm_rope",
            attrs,
            tol,
            outs,
        )?;
    }
    Ok(())
}

/// Writes every case into `args[0]`.
pub fn run(dir: &Path) -> Result<bool> {
    std::fs::create_dir_all(dir)?;
    qk_norm_rope_cases(dir)?;
    crate::cases_grad::activation_grad_cases(dir)?;
    crate::cases_method_grad::method_grad_cases(dir)?;
    Ok(true)
}
