//! Activations in f64 (the kernels' epilogues), with an erf accurate to ~1e-15.

/// erf: Taylor series for |x| < 2.5, continued fraction of erfc beyond (both converge fast there).
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.5 {
        // 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + 2/(a + ...)))))
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

pub fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

pub fn gelu_tanh(v: f64) -> f64 {
    0.5 * v * (1.0 + (0.7978845608028654 * (v + 0.044715 * v * v * v)).tanh())
}

pub fn gelu_erf(v: f64) -> f64 {
    0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2))
}

pub fn relu(v: f64) -> f64 {
    v.max(0.0)
}

pub fn selu(v: f64, alpha: f64, lambda: f64) -> f64 {
    lambda * if v > 0.0 { v } else { alpha * (v.exp() - 1.0) }
}

/// An activation fused after a norm's affine, as a value: its f64 function and derivative.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    /// The identity.
    None,
    /// `v * sigmoid(v)`.
    Silu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// GELU, exact (erf).
    GeluErf,
    /// `max(v, 0)`.
    Relu,
    /// SELU with its constants.
    Selu {
        /// alpha.
        alpha: f64,
        /// lambda (scale).
        lambda: f64,
    },
}

/// SELU with the paper's (and PyTorch's) constants.
pub const SELU: Act = Act::Selu {
    alpha: 1.6732632423543772,
    lambda: 1.0507009873554805,
};

impl Act {
    /// The activation at `v`.
    pub fn apply(self, v: f64) -> f64 {
        match self {
            Act::None => v,
            Act::Silu => silu(v),
            Act::GeluTanh => gelu_tanh(v),
            Act::GeluErf => gelu_erf(v),
            Act::Relu => relu(v),
            Act::Selu { alpha, lambda } => selu(v, alpha, lambda),
        }
    }

    /// Its derivative at `v` (ReLU's at 0 is 0, as PyTorch's; SELU's at 0 is the left one).
    pub fn grad(self, v: f64) -> f64 {
        match self {
            Act::None => 1.0,
            Act::Silu => {
                let s = 1.0 / (1.0 + (-v).exp());
                s * (1.0 + v * (1.0 - s))
            }
            Act::GeluTanh => {
                let k = 0.7978845608028654;
                let t = (k * (v + 0.044715 * v * v * v)).tanh();
                0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * v * v)
            }
            Act::GeluErf => {
                let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
                0.5 * (1.0 + erf(v / std::f64::consts::SQRT_2)) + v * pdf
            }
            Act::Relu => {
                if v > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Act::Selu { alpha, lambda } => lambda * if v > 0.0 { 1.0 } else { alpha * v.exp() },
        }
    }
}

fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// AlphaDropout (docs/methods.md D2) in training, with wgnorm's counter-based mask: element i is kept
/// when `pcg(pcg(i ^ seed_lo) ^ seed_hi) < floor(q * 2^32)`, q = 1 - rate (the PCG output
/// permutation of Jarzynski & Olano 2020). Returns y and the number of kept elements.
pub fn alpha_dropout(x: &[f64], rate: f64, seed: u64) -> (Vec<f64>, usize) {
    let q = 1.0 - rate;
    let alpha_p = -1.050_700_987_355_480_5 * 1.673_263_242_354_377_3;
    let a = (q + alpha_p * alpha_p * q * (1.0 - q)).powf(-0.5);
    let b = -a * (1.0 - q) * alpha_p;
    let threshold = (q * 4_294_967_296.0).min(4_294_967_295.0) as u32;
    let mut kept = 0;
    let y = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let keep = pcg(pcg(i as u32 ^ seed as u32) ^ (seed >> 32) as u32) < threshold;
            kept += keep as usize;
            a * if keep { v } else { alpha_p } + b
        })
        .collect();
    (y, kept)
}

/// AlphaDropout's backward for `dy` (training, the same seed as the forward): `a * dy` where the
/// mask kept the element, 0 where it dropped it (the forward is `a * x + b` or a constant).
pub fn alpha_dropout_grad(dy: &[f64], rate: f64, seed: u64) -> Vec<f64> {
    // The forward's slope per element: a where kept, 0 where dropped.
    let (ones, _) = alpha_dropout(&vec![1.0; dy.len()], rate, seed);
    let (zeros, _) = alpha_dropout(&vec![0.0; dy.len()], rate, seed);
    dy.iter()
        .zip(ones.iter().zip(&zeros))
        .map(|(d, (y1, y0))| d * (y1 - y0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AlphaDropout's backward against central differences of its forward, element by element.
    #[test]
    fn alpha_dropout_grad_matches_finite_differences() {
        let (n, rate, seed) = (64, 0.3, 0x1234_5678_9abc_def0u64);
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let dy: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
        let g = alpha_dropout_grad(&dy, rate, seed);
        let loss = |x: &[f64]| {
            let (y, _) = alpha_dropout(x, rate, seed);
            y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>()
        };
        for i in 0..n {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[i] += 1e-6;
            b[i] -= 1e-6;
            let numeric = (loss(&a) - loss(&b)) / 2e-6;
            assert!(
                (g[i] - numeric).abs() < 1e-7,
                "element {i}: {} vs {numeric}",
                g[i]
            );
        }
        assert!(g.contains(&0.0) && g.iter().any(|&v| v != 0.0));
    }

    /// Every activation's derivative against central differences of its function, away from
    /// ReLU's and SELU's kink at 0.
    #[test]
    fn activation_derivatives_match_finite_differences() {
        let acts = [
            Act::None,
            Act::Silu,
            Act::GeluTanh,
            Act::GeluErf,
            Act::Relu,
            SELU,
        ];
        for act in acts {
            for i in -40..=40 {
                let v = i as f64 * 0.1 + 0.013;
                let h = 1e-6;
                let numeric = (act.apply(v + h) - act.apply(v - h)) / (2.0 * h);
                let d = act.grad(v);
                assert!(
                    (d - numeric).abs() < 1e-7,
                    "{act:?} at {v}: {d} vs {numeric}"
                );
            }
        }
    }

    #[test]
    fn erf_known_values() {
        // erf(0.5), erf(1), erf(2), erf(3) to 15 digits.
        for (x, want) in [
            (0.5, 0.520499877813047),
            (1.0, 0.842700792949715),
            (2.0, 0.995322265018953),
            (3.0, 0.999977909503001),
        ] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-14);
        }
        assert!((gelu_erf(1.0) - 0.841344746068543).abs() < 1e-14);
    }
}
