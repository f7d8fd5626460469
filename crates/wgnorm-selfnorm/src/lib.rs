//! Self-normalizing networks (Klambauer et al. 2017, see `docs/methods.md`): AlphaDropout, the
//! dropout that keeps SELU's fixed point of mean 0 and variance 1. SELU itself is an activation
//! of the core ([`wgnorm_core::Activation::SELU`], standalone or fused after any norm).

#![deny(missing_docs)]

use wgnorm_core::binding::{self, BindCache};
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Error, Mode, Result, Slot, Tensor};

const WG: u32 = 256;

wgnorm_core::uniform_block! {
    /// `DropParams` (`dropout.wgsl`): AlphaDropout's counter-based mask and affine correction.
    pub struct DropParams {
        pub n: u32,
        /// The 64-bit seed as two words.
        pub seed_lo: u32,
        pub seed_hi: u32,
        /// An element is kept when its hash is at or above this threshold.
        pub keep_threshold: u32,
        pub a: f32,
        pub b: f32,
        pub alpha_p: f32,
        /// 1: identity (inference, or rate 0).
        pub keep_all: u32,
    }
}

/// AlphaDropout with a counter-based mask (seed, index).
pub const DROPOUT_KERNEL: Kernel = Kernel::new(
    "dropout",
    &[wgnorm_core::shader_file!("dropout.wgsl")],
    DROP_SLOTS,
);

fn dropout_spec(io: Io, grad: bool) -> Specialization {
    Specialization::new(DROPOUT_KERNEL, io)
        .set("WG", WG)
        .flag("GRAD", grad)
}

/// The dropout pipelines, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    Io::ALL
        .into_iter()
        .filter(|io| !io.vec4)
        .flat_map(|io| [dropout_spec(io, false), dropout_spec(io, true)])
        .collect()
}

/// What [`AlphaDropout::new`] takes; `Default` gives the usual defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlphaDropoutConfig {
    /// Probability of dropping an element, in [0, 1).
    pub rate: f32,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for AlphaDropoutConfig {
    fn default() -> Self {
        AlphaDropoutConfig {
            rate: 0.1,
            dtype: DType::F32,
        }
    }
}

/// AlphaDropout (Klambauer et al. 2017; see `docs/methods.md`), the dropout that keeps SELU's
/// self-normalizing mean and variance: with `q = 1 - rate` and `alpha' = -lambda * alpha`,
/// dropped elements become `alpha'` and `y = a * x' + b`, `a = (q + alpha'^2 q (1 - q))^(-1/2)`,
/// `b = -a (1 - q) alpha'`. Identity at inference.
///
/// The mask is counter-based: element i (row-major index) is kept when
/// `pcg(pcg(i ^ seed_lo) ^ seed_hi) < q * 2^32` ([`alpha_dropout_keeps`] is the same function on
/// the host), so a (seed, shape) pair always gives the same mask on every backend, and a call
/// needs no RNG state; pass a new seed per training step.
pub struct AlphaDropout {
    ctx: Context,
    rate: f32,
    dtype: DType,
    binds: BindCache,
}

const DROP_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_LAMBDA: f64 = 1.050_700_987_355_480_5;

fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// Whether AlphaDropout with `seed` and keep threshold `threshold` (`q * 2^32`) keeps element
/// `i`; what the kernel computes.
pub fn alpha_dropout_keeps(seed: u64, threshold: u32, i: u32) -> bool {
    pcg(pcg(i ^ seed as u32) ^ (seed >> 32) as u32) < threshold
}

impl AlphaDropout {
    /// `rate` in [0, 1): the probability of dropping an element.
    pub fn new(ctx: &Context, cfg: AlphaDropoutConfig) -> Result<AlphaDropout> {
        let AlphaDropoutConfig { rate, dtype } = cfg;
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::InvalidParameter {
                name: "rate",
                value: rate.to_string(),
                why: "must be in [0, 1)",
            });
        }
        ctx.check_io(Io { dtype, vec4: false })?;
        Ok(AlphaDropout {
            ctx: ctx.clone(),
            rate,
            dtype,
            binds: BindCache::default(),
        })
    }

    /// The keep threshold `q * 2^32` and the affine `(a, b, alpha')` of this rate (f64 math).
    pub fn coefficients(&self) -> (u32, f64, f64, f64) {
        let q = 1.0 - self.rate as f64;
        let alpha_p = -SELU_LAMBDA * SELU_ALPHA;
        let a = (q + alpha_p * alpha_p * q * (1.0 - q)).powf(-0.5);
        let b = -a * (1.0 - q) * alpha_p;
        let threshold = (q * 4_294_967_296.0).min(4_294_967_295.0) as u32;
        (threshold, a, b, alpha_p)
    }

    /// Records `y = alpha_dropout(x)`: the seeded mask when `training`, a copy otherwise.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
        seed: u64,
        mode: Mode,
    ) -> Result<()> {
        self.record(encoder, (x, y), seed, mode, false)
    }

    /// Records the backward of the call with the same `seed` and `mode`: `dx = a * dy` where
    /// the mask kept the element, 0 where it dropped it (`dy` at inference).
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dy: &Tensor,
        dx: &Tensor,
        seed: u64,
        mode: Mode,
    ) -> Result<()> {
        self.record(encoder, (dy, dx), seed, mode, true)
    }

    /// Allocates dx, encodes the backward and submits (does not wait).
    pub fn backward(&self, dy: &Tensor, seed: u64, mode: Mode) -> Result<Tensor> {
        let dx = self.ctx.empty(dy.shape(), self.dtype)?;
        self.ctx
            .record_and_submit(|enc| self.encode_backward(enc, dy, &dx, seed, mode))?;
        Ok(dx)
    }

    /// The forward (`grad` false: x to y) or the backward (dy to dx).
    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (x, y): (&Tensor, &Tensor),
        seed: u64,
        mode: Mode,
        grad: bool,
    ) -> Result<()> {
        let training = mode.is_train();
        let (xn, yn) = if grad { ("dy", "dx") } else { ("x", "y") };
        x.expect_dtype(xn, self.dtype)?;
        y.expect_dtype(yn, self.dtype)?;
        y.expect_shape(yn, x.shape())?;
        let n = x.numel();
        if n == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let n32 = u32::try_from(n).map_err(|_| Error::InvalidParameter {
            name: "x",
            value: n.to_string(),
            why: "more than 2^32 - 1 elements",
        })?;
        let (xr, yr) = (
            binding::storage_range(ctx, xn, x)?,
            binding::storage_range(ctx, yn, y)?,
        );
        binding::check_no_alias(&[(xn, Some(&xr), false), (yn, Some(&yr), true)])?;
        let (threshold, a, b, alpha_p) = self.coefficients();
        let params = DropParams {
            n: n32,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            keep_threshold: threshold,
            a: a as f32,
            b: b as f32,
            alpha_p: alpha_p as f32,
            keep_all: (!training || self.rate == 0.0) as u32,
        };
        let io = Io {
            dtype: self.dtype,
            vec4: false,
        };
        let pipeline = ctx.pipeline(&dropout_spec(io, grad))?;
        let bind = self.binds.get(ctx, DROP_SLOTS, &params, &[&xr, &yr])?;
        let (gx, gy) = binding::grid(ctx, (n as u64).div_ceil(WG as u64));
        binding::dispatch(
            encoder,
            "wgnorm alpha dropout",
            &pipeline,
            &bind,
            (gx, gy, 1),
        );
        Ok(())
    }
}
