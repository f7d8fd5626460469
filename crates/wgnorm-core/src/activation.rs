//! Activation epilogues (`shaders/common/activation.wgsl`), fused after a norm's affine or run
//! alone by [`crate::elementwise::Elementwise`].

/// What follows the affine, in the same pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    #[default]
    None,
    /// `x * sigmoid(x)` (GroupNorm + SiLU, the diffusion-UNet block).
    Silu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// GELU with erf (erf approximated to 1.5e-7 in the shader).
    GeluErf,
    Relu,
    /// SELU `lambda * (x > 0 ? x : alpha * (exp(x) - 1))` (Klambauer et al. 2017; ONNX calls
    /// lambda `gamma`). [`Activation::SELU`] has the standard constants.
    Selu {
        alpha: f32,
        lambda: f32,
    },
}

impl Activation {
    /// SELU with the self-normalizing constants.
    pub const SELU: Activation = Activation::Selu {
        alpha: 1.673_263_2,
        lambda: 1.050_701,
    };

    /// The pipeline constants selecting this activation.
    pub fn constants(self) -> [(&'static str, f64); 3] {
        let (code, alpha, lambda) = match self {
            Activation::None => (0.0, 0.0, 0.0),
            Activation::Silu => (1.0, 0.0, 0.0),
            Activation::GeluTanh => (2.0, 0.0, 0.0),
            Activation::GeluErf => (3.0, 0.0, 0.0),
            Activation::Relu => (4.0, 0.0, 0.0),
            Activation::Selu { alpha, lambda } => (5.0, alpha as f64, lambda as f64),
        };
        // Unused SELU constants are pinned so every other activation shares one pipeline.
        let (alpha, lambda) = if code == 5.0 {
            (alpha, lambda)
        } else {
            (1.6732632423543772, 1.0507009873554805)
        };
        [
            ("ACT", code),
            ("SELU_ALPHA", alpha),
            ("SELU_LAMBDA", lambda),
        ]
    }

    /// Parses the names used by the conformance cases and configuration files.
    pub fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "none" => Activation::None,
            "silu" => Activation::Silu,
            "gelu" | "gelu_tanh" => Activation::GeluTanh,
            "gelu_erf" => Activation::GeluErf,
            "relu" => Activation::Relu,
            "selu" => Activation::SELU,
            _ => return None,
        })
    }

    /// Every activation kind once, for `cargo xtask validate`.
    pub const ALL: [Activation; 6] = [
        Activation::None,
        Activation::Silu,
        Activation::GeluTanh,
        Activation::GeluErf,
        Activation::Relu,
        Activation::SELU,
    ];
}
