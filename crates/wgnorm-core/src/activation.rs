//! Activation epilogues (`shaders/common/activation.wgsl`), fused after a norm's affine or run
//! alone by [`crate::elementwise::Elementwise`].

/// What follows the affine, in the same pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    #[default]
    /// No activation.
    None,
    /// `x * sigmoid(x)` (GroupNorm + SiLU, the diffusion-UNet block).
    Silu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// GELU with erf (erf approximated to 1.5e-7 in the shader).
    GeluErf,
    /// `max(x, 0)`.
    Relu,
    /// SELU `lambda * (x > 0 ? x : alpha * (exp(x) - 1))` (Klambauer et al. 2017; ONNX calls
    /// lambda `gamma`). [`Activation::SELU`] has the standard constants.
    Selu {
        /// SELU's alpha (1.6732632423543772 standard).
        alpha: f32,
        /// SELU's lambda (ONNX: gamma; 1.0507009873554805 standard).
        lambda: f32,
    },
}

impl Activation {
    /// SELU with the self-normalizing constants.
    pub const SELU: Activation = Activation::Selu {
        alpha: 1.673_263_2,
        lambda: 1.050_701,
    };

    /// The `ACT` pipeline constant selecting this activation. SELU's alpha and lambda are not
    /// constants: they travel in the kernel's uniform block ([`Activation::selu_params`]), so
    /// custom values share one pipeline.
    pub fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::Silu => 1,
            Activation::GeluTanh => 2,
            Activation::GeluErf => 3,
            Activation::Relu => 4,
            Activation::Selu { .. } => 5,
        }
    }

    /// The pipeline constants selecting this activation.
    pub fn constants(self) -> [(&'static str, f64); 1] {
        [("ACT", self.code() as f64)]
    }

    /// `(alpha, lambda)` for the uniform block's `selu_alpha`/`selu_lambda` (read by the
    /// activation snippet); the standard constants for other activations.
    pub fn selu_params(self) -> (f32, f32) {
        match self {
            Activation::Selu { alpha, lambda } => (alpha, lambda),
            _ => (1.673_263_2, 1.050_701),
        }
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
