//! Activation epilogues fused into the norms, and SELU as an elementwise op, against f64.

use wgnorm::prelude::*;
use wgnorm::Mode;
use wgnorm::{Activation, Elementwise};
use wgnorm_reference::activation as act;
use wgnorm_reference::{chnorm, rownorm};
use wgnorm_tests::{assert_close, ctx, noise, round_to};

fn reference(a: Activation, v: f64) -> f64 {
    match a {
        Activation::None => v,
        Activation::Silu => act::silu(v),
        Activation::GeluTanh => act::gelu_tanh(v),
        Activation::GeluErf => act::gelu_erf(v),
        Activation::Relu => act::relu(v),
        Activation::Selu { alpha, lambda } => act::selu(v, alpha as f64, lambda as f64),
    }
}

#[test]
fn layer_norm_and_group_norm_with_every_activation() {
    let c = ctx();
    let (rows, n) = (6, 256);
    let x: Vec<f32> = noise(1, rows * n).iter().map(|v| v * 3.0).collect();
    let w: Vec<f32> = noise(2, n).iter().map(|v| v * 4.0).collect();
    let xd = round_to(DType::F32, &x);
    let wd = round_to(DType::F32, &w);
    let xt = c.upload_f32(&x, &[rows, n]).unwrap();
    let wt = c.upload_f32(&w, &[n]).unwrap();
    for a in Activation::ALL {
        let ln = LayerNorm::new(c, LayerNormConfig::default())
            .unwrap()
            .with_activation(a);
        let y = c
            .download(
                &ln.forward(&LayerNormInputs {
                    x: &xt,
                    weight: Some(&wt),
                    bias: None,
                })
                .unwrap()
                .y,
            )
            .unwrap();
        let want: Vec<f64> = rownorm::layer_norm(&xd, n, Some(&wd), None, 1e-5)
            .y
            .iter()
            .map(|&v| reference(a, v))
            .collect();
        assert_close(&format!("layer_norm + {a:?}"), &y, &want, 2e-5, 1e-4);

        let (nn, ch, hw) = (2, 8, 16);
        let xg = noise(3, nn * ch * hw);
        let gn = GroupNorm::new(
            c,
            GroupNormConfig {
                activation: a,
                ..GroupNormConfig::new(4)
            },
        )
        .unwrap();
        let y = gn
            .forward(&NormInputs {
                x: &c.upload_f32(&xg, &[nn, ch, 4, 4]).unwrap(),
                weight: None,
                bias: None,
            })
            .unwrap();
        let want: Vec<f64> = chnorm::group_norm(
            &round_to(DType::F32, &xg),
            nn,
            ch,
            hw,
            4,
            None,
            None,
            1e-5,
            false,
        )
        .iter()
        .map(|&v| reference(a, v))
        .collect();
        assert_close(
            &format!("group_norm + {a:?}"),
            &c.download(&y).unwrap(),
            &want,
            2e-5,
            1e-4,
        );
    }
}

#[test]
fn elementwise_activations_including_extremes() {
    let c = ctx();
    let mut x: Vec<f32> = noise(9, 1003).iter().map(|v| v * 8.0).collect();
    x.extend([0.0, -0.0, 88.0, -88.0, 1e-30, -1e-30, 30.0, -30.0]);
    for dtype in [DType::F32, DType::F16] {
        let x: Vec<f32> = if dtype == DType::F16 {
            x.iter().map(|v| v.clamp(-60.0, 60.0)).collect()
        } else {
            x.clone()
        };
        let xd = round_to(dtype, &x);
        let xt = c.upload(&x, &[x.len()], dtype).unwrap();
        let mut acts = Activation::ALL.to_vec();
        acts.push(Activation::Selu {
            alpha: 1.5,
            lambda: 2.0,
        });
        for a in acts {
            let y = Elementwise::new(
                c,
                wgnorm::ElementwiseConfig {
                    activation: a,
                    dtype,
                },
            )
            .unwrap()
            .forward(&xt)
            .unwrap();
            let want: Vec<f64> = xd.iter().map(|&v| reference(a, v)).collect();
            let (atol, rtol) = if dtype == DType::F32 {
                (1e-6, 1e-5)
            } else {
                (1e-3, 2e-3)
            };
            assert_close(
                &format!("{a:?} {dtype}"),
                &c.download(&y).unwrap(),
                &want,
                atol,
                rtol,
            );
        }
    }
    let bad = Elementwise::new(
        c,
        wgnorm::ElementwiseConfig {
            activation: Activation::Selu {
                alpha: f32::NAN,
                lambda: 1.0,
            },
            dtype: DType::F32,
        },
    );
    assert!(matches!(bad, Err(wgnorm::Error::InvalidParameter { .. })));
}

#[test]
fn alpha_dropout_mask_affine_and_moments() {
    use wgnorm::selfnorm::{alpha_dropout_keeps, AlphaDropout};
    let c_ = ctx();
    let n = 100_003;
    // Roughly standard normal input (sum of uniforms), the regime AlphaDropout is built for.
    let u: Vec<f32> = (0..4).flat_map(|k| noise(80 + k, n)).collect();
    let x: Vec<f32> = (0..n)
        .map(|i| (u[i] + u[n + i] + u[2 * n + i] + u[3 * n + i]) * (3.0f32 / 4.0).sqrt())
        .collect();
    let xt = c_.upload_f32(&x, &[n]).unwrap();
    let y = c_.empty(&[n], DType::F32).unwrap();
    let rate = 0.2;
    let op = AlphaDropout::new(
        c_,
        wgnorm::AlphaDropoutConfig {
            rate: rate as f32,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let run = |seed: u64, training: bool| {
        let mut enc = c_.device().create_command_encoder(&Default::default());
        op.encode(&mut enc, &xt, &y, seed, Mode::training(training))
            .unwrap();
        c_.queue().submit([enc.finish()]);
        c_.download(&y).unwrap()
    };
    let q: f64 = 1.0 - rate;
    let got = run(7, true);
    // The reference draws the mask with its own copy of the hash; the host helper must agree.
    let (want, kept) = act::alpha_dropout(&round_to(DType::F32, &x), rate, 7);
    let threshold = (q * 4294967296.0) as u32;
    let host_kept = (0..n as u32)
        .filter(|&i| alpha_dropout_keeps(7, threshold, i))
        .count();
    assert_eq!(kept, host_kept);
    assert_close("alpha dropout", &got, &want, 1e-6, 1e-6);
    // The mask keeps q of the elements (5 sigma), and the output keeps mean 0 / variance 1.
    let frac = kept as f64 / n as f64;
    assert!(
        (frac - q).abs() < 5.0 * (q * (1.0 - q) / n as f64).sqrt(),
        "kept {frac}"
    );
    let mean = got.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = got.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    let xm = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let xv = x.iter().map(|&v| (v as f64 - xm).powi(2)).sum::<f64>() / n as f64;
    assert!(
        (mean - xm).abs() < 0.02 && (var - xv).abs() < 0.03,
        "mean {mean} var {var} (input {xm} {xv})"
    );
    // Same seed, same mask; another seed, another mask; inference is the identity.
    assert_eq!(run(7, true), got);
    assert_ne!(run(8, true), got);
    assert_eq!(run(7, false), x);
    assert!(AlphaDropout::new(
        c_,
        wgnorm::AlphaDropoutConfig {
            rate: 1.0,
            dtype: DType::F32
        }
    )
    .is_err());
    assert!(AlphaDropout::new(
        c_,
        wgnorm::AlphaDropoutConfig {
            rate: -0.1,
            dtype: DType::F32
        }
    )
    .is_err());
}

/// The standalone activations' backward, `dx = dy * act'(x)`, for every activation (SELU with
/// custom constants too), f32 and f16, vector and scalar accesses, against the f64 derivative
/// (itself checked against finite differences in `wgnorm-reference`).
#[test]
fn elementwise_activation_backward() {
    use wgnorm::ElementwiseConfig;
    use wgnorm_reference::activation::Act;
    let c = ctx();
    let custom = Activation::Selu {
        alpha: 1.2,
        lambda: 0.9,
    };
    for a in Activation::ALL.into_iter().chain([custom]) {
        let r = match a {
            Activation::None => Act::None,
            Activation::Silu => Act::Silu,
            Activation::GeluTanh => Act::GeluTanh,
            Activation::GeluErf => Act::GeluErf,
            Activation::Relu => Act::Relu,
            Activation::Selu { alpha, lambda } => Act::Selu {
                alpha: alpha as f64,
                lambda: lambda as f64,
            },
        };
        for (dtype, n) in [
            (DType::F32, 1024usize),
            (DType::F32, 1001),
            (DType::F16, 999),
        ] {
            let x: Vec<f32> = noise(61, n).iter().map(|v| v * 6.0).collect();
            let dy = noise(62, n);
            let (xd, dyd) = (round_to(dtype, &x), round_to(dtype, &dy));
            let op = Elementwise::new(
                c,
                ElementwiseConfig {
                    activation: a,
                    dtype,
                },
            )
            .unwrap();
            let xt = c.upload(&x, &[n], dtype).unwrap();
            let dyt = c.upload(&dy, &[n], dtype).unwrap();
            let dx = c.download(&op.backward(&xt, &dyt).unwrap()).unwrap();
            let want: Vec<f64> = xd.iter().zip(&dyd).map(|(&v, &d)| d * r.grad(v)).collect();
            let (at, rt) = if dtype == DType::F16 {
                (2e-3, 2e-3)
            } else {
                (1e-6, 1e-5)
            };
            assert_close(&format!("{a:?} backward {dtype} n={n}"), &dx, &want, at, rt);
        }
    }
}

/// AlphaDropout's backward with the forward's seed: `a * dy` exactly where the forward kept the
/// element, 0 where it dropped it, `dy` at inference; f32 and f16.
#[test]
fn alpha_dropout_backward_follows_the_forward_mask() {
    use wgnorm::selfnorm::AlphaDropout;
    let c_ = ctx();
    let (n, rate, seed) = (10_007usize, 0.25f32, 0xfeed_beef_0042u64);
    for dtype in [DType::F32, DType::F16] {
        let op = AlphaDropout::new(c_, wgnorm::AlphaDropoutConfig { rate, dtype }).unwrap();
        let dy = noise(90, n);
        let dyt = c_.upload(&dy, &[n], dtype).unwrap();
        let dyd = round_to(dtype, &dy);
        let got = c_
            .download(&op.backward(&dyt, seed, Mode::Train).unwrap())
            .unwrap();
        let want = act::alpha_dropout_grad(&dyd, rate as f64, seed);
        let tol = if dtype == DType::F16 { 2e-3 } else { 1e-6 };
        assert_close(
            &format!("alpha dropout backward {dtype}"),
            &got,
            &want,
            tol,
            tol,
        );
        // Exactly the forward's mask: zero gradients where the forward wrote the dropped value.
        let dropped = want.iter().filter(|&&v| v == 0.0).count();
        assert!(
            dropped > n / 5 && dropped < n / 3,
            "{dropped} of {n} dropped"
        );
        assert!(got
            .iter()
            .zip(&want)
            .all(|(g, w)| (*g == 0.0) == (*w == 0.0)));
        let infer = c_
            .download(&op.backward(&dyt, seed, Mode::Infer).unwrap())
            .unwrap();
        assert_close(
            &format!("alpha dropout backward {dtype} inference"),
            &infer,
            &dyd,
            0.0,
            0.0,
        );
    }
}
