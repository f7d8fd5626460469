//! Per-head RMSNorm + rotary embedding (QK-norm) against the f64 reference: both pair layouts,
//! angles from positions or tables, partial rotary dims, Gemma's weight offset, f16, and bad
//! input.

use wgnorm::rmsnorm::{QkNormRope, QkNormRopeConfig, QkNormRopeInputs, RopeAngles, RopeLayout};
use wgnorm::{DType, Error};
use wgnorm_reference::rownorm::{qk_norm_rope, RopeRef};
use wgnorm_tests::{assert_close, ctx, noise, round_to};

#[test]
fn qk_norm_rope_matches_the_reference() {
    let c_ = ctx();
    let (tokens, heads) = (5usize, 3usize);
    for (d, rot, layout, offset) in [
        (64usize, None, RopeLayout::NeoX, 0.0f32),
        (128, Some(64), RopeLayout::GptJ, 1.0),
        (96, None, RopeLayout::GptJ, 0.0),
        // NeoX with a partial rotary dim (pairs 4 accesses apart in the register team), and a
        // head dim the vec4 team cannot serve (the workgroup kernel).
        (128, Some(32), RopeLayout::NeoX, 0.0),
        (50, Some(36), RopeLayout::NeoX, 0.0),
    ] {
        for dtype in [DType::F32, DType::F16] {
            let x: Vec<f32> = noise(d as u64, tokens * heads * d)
                .iter()
                .map(|v| v * 3.0)
                .collect();
            let w = noise(7, d);
            let pos: Vec<f32> = (0..tokens).map(|t| (t * 37 + 5) as f32).collect();
            let r = rot.unwrap_or(d);
            let cos: Vec<f32> = (0..tokens * r / 2)
                .map(|i| (i as f32 * 0.37).cos())
                .collect();
            let sin: Vec<f32> = (0..tokens * r / 2)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let op = QkNormRope::new(
                c_,
                QkNormRopeConfig {
                    weight_offset: offset,
                    layout,
                    rotary_dim: rot,
                    base: 10_000.0,
                    dtype,
                    ..Default::default()
                },
            )
            .unwrap();
            let xt = c_.upload(&x, &[tokens, heads, d], dtype).unwrap();
            let wt = c_.upload(&w, &[d], dtype).unwrap();
            let pt = c_.upload_f32(&pos, &[tokens]).unwrap();
            let (ct, st) = (
                c_.upload_f32(&cos, &[tokens, r / 2]).unwrap(),
                c_.upload_f32(&sin, &[tokens, r / 2]).unwrap(),
            );
            let f = |v: &[f32]| round_to(DType::F32, v);
            let (pd, cd, sd) = (f(&pos), f(&cos), f(&sin));
            let neox = layout == RopeLayout::NeoX;
            for (name, angles, want_angles) in [
                (
                    "positions",
                    RopeAngles::Positions(&pt),
                    RopeRef::Positions {
                        pos: &pd,
                        base: 10_000.0,
                    },
                ),
                (
                    "table",
                    RopeAngles::Table { cos: &ct, sin: &st },
                    RopeRef::Table { cos: &cd, sin: &sd },
                ),
                ("none", RopeAngles::None, RopeRef::None),
            ] {
                let y = op
                    .forward(&QkNormRopeInputs {
                        x: &xt,
                        weight: Some(&wt),
                        angles,
                    })
                    .unwrap();
                let want = qk_norm_rope(
                    &round_to(dtype, &x),
                    heads,
                    d,
                    Some(&round_to(dtype, &w)),
                    offset as f64,
                    1e-6,
                    r,
                    neox,
                    want_angles,
                );
                let (atol, rtol) = if dtype == DType::F16 {
                    (4e-3, 4e-3)
                } else {
                    (2e-5, 1e-4)
                };
                let what =
                    format!("qk_rope d {d} rot {r} {layout:?} offset {offset} {dtype} {name}");
                assert_close(&what, &c_.download(&y).unwrap(), &want, atol * 4.0, rtol);
            }
        }
    }
}

#[test]
fn qk_norm_rope_bad_input_is_typed() {
    let c_ = ctx();
    let op = QkNormRope::new(c_, QkNormRopeConfig::default()).unwrap();
    let x = c_.empty(&[2, 2, 64], DType::F32).unwrap();
    let y = c_.empty(&[2, 2, 64], DType::F32).unwrap();
    let pos = c_.empty(&[3], DType::F32).unwrap();
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let r = op.encode(
        &mut enc,
        &QkNormRopeInputs {
            x: &x,
            weight: None,
            angles: RopeAngles::Positions(&pos),
        },
        &y,
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let big = c_.empty(&[1, 1, 1024], DType::F32).unwrap();
    let r = op.encode(
        &mut enc,
        &QkNormRopeInputs {
            x: &big,
            weight: None,
            angles: RopeAngles::None,
        },
        &c_.empty(&[1, 1, 1024], DType::F32).unwrap(),
    );
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
    let r = QkNormRope::new(
        c_,
        QkNormRopeConfig {
            rotary_dim: Some(7),
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(Error::InvalidParameter { .. })));
    let r = op.encode(
        &mut enc,
        &QkNormRopeInputs {
            x: &x,
            weight: None,
            angles: RopeAngles::None,
        },
        &x,
    );
    assert!(matches!(r, Err(Error::AliasedBuffers { .. })), "{r:?}");
}

/// The backward (`encode_backward`): dy rotated back through the rotation's transpose, then the
/// per-head RMSNorm's gradients with the shared weight. Both layouts, positions, tables and no
/// rotation, a partial rotary dim, Gemma's offset, f32 and f16, against the f64 reference
/// gradients (checked against finite differences of the forward in `wgnorm-reference`).
#[test]
fn qk_norm_rope_backward_matches_the_reference() {
    use wgnorm::rmsnorm::QkNormRopeGradInputs;
    use wgnorm_reference::grad::qk_norm_rope_grad;
    let c_ = ctx();
    let (tokens, heads) = (4usize, 3usize);
    for (d, rot, layout, offset, angles) in [
        (64usize, None, RopeLayout::NeoX, 0.0f32, 0u32),
        (128, Some(64), RopeLayout::GptJ, 1.0, 1),
        (96, None, RopeLayout::GptJ, 0.0, 2),
    ] {
        for dtype in [DType::F32, DType::F16] {
            let x: Vec<f32> = noise(d as u64 + 1, tokens * heads * d)
                .iter()
                .map(|v| v * 3.0)
                .collect();
            let (w, dy) = (noise(8, d), noise(9, tokens * heads * d));
            let r = rot.unwrap_or(d);
            let pos: Vec<f32> = (0..tokens).map(|t| (t * 37 + 5) as f32).collect();
            let cos: Vec<f32> = (0..tokens * r / 2)
                .map(|i| (i as f32 * 0.37).cos())
                .collect();
            let sin: Vec<f32> = (0..tokens * r / 2)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let op = QkNormRope::new(
                c_,
                QkNormRopeConfig {
                    weight_offset: offset,
                    layout,
                    rotary_dim: rot,
                    dtype,
                    ..Default::default()
                },
            )
            .unwrap();
            let shape = [tokens, heads, d];
            let xt = c_.upload(&x, &shape, dtype).unwrap();
            let dyt = c_.upload(&dy, &shape, dtype).unwrap();
            let wt = c_.upload(&w, &[d], dtype).unwrap();
            let pt = c_.upload_f32(&pos, &[tokens]).unwrap();
            let ct = c_.upload_f32(&cos, &[tokens, r / 2]).unwrap();
            let st = c_.upload_f32(&sin, &[tokens, r / 2]).unwrap();
            let a = match angles {
                0 => RopeAngles::Positions(&pt),
                1 => RopeAngles::Table { cos: &ct, sin: &st },
                _ => RopeAngles::None,
            };
            let (dx, dw) = op
                .backward(&QkNormRopeGradInputs {
                    x: &xt,
                    weight: Some(&wt),
                    angles: a,
                    dy: &dyt,
                })
                .unwrap();
            let f = |v: &[f32]| round_to(DType::F32, v);
            let (posd, cosd, sind) = (f(&pos), f(&cos), f(&sin));
            let aref = match angles {
                0 => RopeRef::Positions {
                    pos: &posd,
                    base: 10_000.0,
                },
                1 => RopeRef::Table {
                    cos: &cosd,
                    sin: &sind,
                },
                _ => RopeRef::None,
            };
            let want = qk_norm_rope_grad(
                &round_to(dtype, &x),
                (heads, d),
                (Some(&round_to(dtype, &w)), offset as f64),
                1e-6,
                (r, layout == RopeLayout::NeoX, aref),
                &round_to(dtype, &dy),
            );
            let what = format!("qk backward d{d} rot{r} {layout:?} angles {angles} {dtype}");
            let s = |v: &[f64]| v.iter().fold(1.0f64, |m, a| m.max(a.abs()));
            let (at, rt) = if dtype == DType::F16 {
                (4e-3, 1e-2)
            } else {
                (2e-5, 2e-4)
            };
            let got = c_.download(&dx).unwrap();
            assert_close(&format!("{what} dx"), &got, &want.dx, at * s(&want.dx), rt);
            let got = c_.download(&dw).unwrap();
            assert_close(
                &format!("{what} dweight"),
                &got,
                &want.dweight,
                at * s(&want.dweight),
                rt,
            );
        }
    }
}

/// A token's output bits are the same in a decode step (one token) and inside a prefill (many
/// tokens, the token at any place): the kernel is chosen by head dim and rotary dim only.
#[test]
fn qk_norm_rope_decode_matches_prefill_bitwise() {
    let c_ = ctx();
    let (tokens, heads) = (37usize, 4usize);
    for (d, rot, layout) in [
        (128usize, None, RopeLayout::NeoX),
        (64, Some(32), RopeLayout::GptJ),
        (50, Some(36), RopeLayout::NeoX),
    ] {
        let op = QkNormRope::new(
            c_,
            QkNormRopeConfig {
                layout,
                rotary_dim: rot,
                ..Default::default()
            },
        )
        .unwrap();
        let x: Vec<f32> = noise(d as u64 + 11, tokens * heads * d);
        let w = noise(8, d);
        let pos: Vec<f32> = (0..tokens).map(|t| (t * 13 + 2) as f32).collect();
        let wt = c_.upload_f32(&w, &[d]).unwrap();
        let run = |x: &[f32], pos: &[f32]| -> Vec<u32> {
            let t = pos.len();
            let xt = c_.upload_f32(x, &[t, heads, d]).unwrap();
            let pt = c_.upload_f32(pos, &[t]).unwrap();
            let y = op
                .forward(&QkNormRopeInputs {
                    x: &xt,
                    weight: Some(&wt),
                    angles: RopeAngles::Positions(&pt),
                })
                .unwrap();
            c_.download(&y)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let prefill = run(&x, &pos);
        let row = heads * d;
        for t in [0, 1, 17, tokens - 1] {
            let decode = run(&x[t * row..(t + 1) * row], &pos[t..t + 1]);
            assert_eq!(
                decode,
                prefill[t * row..(t + 1) * row],
                "d {d} rot {rot:?} {layout:?}: token {t} differs between decode and prefill"
            );
        }
    }
}

/// A rotary dim of 0 rotates nothing: with positions or (empty) tables the result is the per-head
/// RMSNorm alone (the fuzzer once found it bound an empty angle table).
#[test]
fn qk_norm_rope_with_rotary_dim_zero_is_the_norm_alone() {
    let c_ = ctx();
    let (tokens, heads, d) = (3usize, 2usize, 8usize);
    let x = noise(5, tokens * heads * d);
    let xt = c_.upload_f32(&x, &[tokens, heads, d]).unwrap();
    let pt = c_.upload_f32(&[1.0, 2.0, 3.0], &[tokens]).unwrap();
    let empty = c_.empty(&[tokens, 0], DType::F32).unwrap();
    let run = |rotary_dim, angles| {
        let cfg = QkNormRopeConfig {
            rotary_dim,
            ..Default::default()
        };
        let op = QkNormRope::new(c_, cfg).unwrap();
        let y = op
            .forward(&QkNormRopeInputs {
                x: &xt,
                weight: None,
                angles,
            })
            .unwrap();
        c_.download(&y).unwrap()
    };
    let plain = run(None, RopeAngles::None);
    let want: Vec<f64> = plain.iter().map(|&v| v as f64).collect();
    assert_close(
        "rot 0, positions",
        &run(Some(0), RopeAngles::Positions(&pt)),
        &want,
        0.0,
        0.0,
    );
    let table = RopeAngles::Table {
        cos: &empty,
        sin: &empty,
    };
    assert_close("rot 0, tables", &run(Some(0), table), &want, 0.0, 0.0);
}
