//! Elementwise activations as standalone ops (SELU, ...): `y = act(x)` over any shape.

use crate::activation::Activation;
use crate::binding::{self, BindCache};
use crate::context::Slot;
use crate::shader::{snippet, Io, Kernel, Specialization};
use crate::uniform::{BlendParams, DropParams, EwParams};
use crate::{Context, DType, Error, Result, Tensor};

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
const WG: u32 = 256;

/// `y = act(x)`.
pub const ELEMENTWISE_KERNEL: Kernel = Kernel::new(
    "elementwise",
    &[snippet::ACTIVATION, crate::shader_file!("elementwise.wgsl")],
    SLOTS,
);
/// AlphaDropout with a counter-based mask (seed, index).
pub const DROPOUT_KERNEL: Kernel =
    Kernel::new("dropout", &[crate::shader_file!("dropout.wgsl")], SLOTS);
/// `y = lambda a + (1 - lambda) b`.
pub const BLEND_KERNEL: Kernel =
    Kernel::new("blend", &[crate::shader_file!("blend.wgsl")], BLEND_SLOTS);

/// Accesses per lane of the elementwise kernels: a contiguous block on CPU adapters.
fn block(cpu: bool) -> u32 {
    if cpu {
        16
    } else {
        1
    }
}

fn elementwise_spec(io: Io, cpu: bool, act: Activation) -> Specialization {
    Specialization::new(ELEMENTWISE_KERNEL, io)
        .set("WG", WG)
        .set("BLOCK", block(cpu))
        .with(&act.constants())
}

fn dropout_spec(io: Io) -> Specialization {
    Specialization::new(DROPOUT_KERNEL, io).set("WG", WG)
}

fn blend_spec(io: Io, cpu: bool) -> Specialization {
    Specialization::new(BLEND_KERNEL, io)
        .set("WG", WG)
        .set("BLOCK", block(cpu))
}

/// Every pipeline of this module, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for io in Io::ALL {
        for cpu in [false, true] {
            for act in Activation::ALL {
                out.push(elementwise_spec(io, cpu, act));
            }
            out.push(blend_spec(io, cpu));
        }
        if !io.vec4 {
            out.push(dropout_spec(io));
        }
    }
    out
}

/// An activation applied elementwise, f32 or f16 storage with f32 arithmetic.
pub struct Elementwise {
    ctx: Context,
    activation: Activation,
    dtype: DType,
    binds: BindCache,
}

impl Elementwise {
    pub fn new(ctx: &Context, activation: Activation, dtype: DType) -> Result<Elementwise> {
        if let Activation::Selu { alpha, lambda } = activation {
            if !alpha.is_finite() || !lambda.is_finite() {
                return Err(Error::InvalidParameter {
                    name: "selu alpha/lambda",
                    value: format!("{alpha}/{lambda}"),
                    why: "must be finite",
                });
            }
        }
        Ok(Elementwise {
            ctx: ctx.clone(),
            activation,
            dtype,
            binds: BindCache::default(),
        })
    }

    /// Records `y = act(x)`; x and y of one shape and this op's dtype, distinct buffers.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, x: &Tensor, y: &Tensor) -> Result<()> {
        x.expect_dtype("x", self.dtype)?;
        y.expect_dtype("y", self.dtype)?;
        y.expect_shape("y", x.shape())?;
        let n = x.numel();
        if n == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let (xr, yr) = (
            binding::storage_range(ctx, "x", x)?,
            binding::storage_range(ctx, "y", y)?,
        );
        binding::check_no_alias(&[("x", Some(&xr), false), ("y", Some(&yr), true)])?;
        let align = Io {
            dtype: self.dtype,
            vec4: true,
        }
        .alignment();
        let io = Io {
            dtype: self.dtype,
            vec4: n.is_multiple_of(4) && xr.offset % align == 0 && yr.offset % align == 0,
        };
        let block = block(ctx.is_cpu());
        let pipeline = ctx.pipeline(&elementwise_spec(io, ctx.is_cpu(), self.activation))?;
        let n_v = (n / io.width() as usize) as u32;
        let (selu_alpha, selu_lambda) = self.activation.selu_params();
        let params = EwParams {
            n_v,
            selu_alpha,
            selu_lambda,
            ..Default::default()
        };
        let bind = self.binds.get(ctx, SLOTS, &params, &[&xr, &yr])?;
        let (gx, gy) = binding::grid(ctx, (n_v as u64).div_ceil(block as u64).div_ceil(WG as u64));
        binding::dispatch(encoder, "wgnorm elementwise", &pipeline, &bind, (gx, gy, 1));
        Ok(())
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.ctx.empty(x.shape(), self.dtype)?;
        self.ctx.record_and_submit(|enc| self.encode(enc, x, &y))?;
        Ok(y)
    }
}

/// AlphaDropout (Klambauer et al. 2017; NORMS.md D2), the dropout that keeps SELU's
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
    pub fn new(ctx: &Context, rate: f32, dtype: DType) -> Result<AlphaDropout> {
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
        training: bool,
    ) -> Result<()> {
        x.expect_dtype("x", self.dtype)?;
        y.expect_dtype("y", self.dtype)?;
        y.expect_shape("y", x.shape())?;
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
            binding::storage_range(ctx, "x", x)?,
            binding::storage_range(ctx, "y", y)?,
        );
        binding::check_no_alias(&[("x", Some(&xr), false), ("y", Some(&yr), true)])?;
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
        let pipeline = ctx.pipeline(&dropout_spec(io))?;
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

/// `y = lambda * a + (1 - lambda) * b` over tensors of one shape and dtype (f32 arithmetic).
pub struct Blend {
    ctx: Context,
    dtype: DType,
    binds: BindCache,
}

const BLEND_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite];

impl Blend {
    pub fn new(ctx: &Context, dtype: DType) -> Result<Blend> {
        ctx.check_dtype(dtype)?;
        Ok(Blend {
            ctx: ctx.clone(),
            dtype,
            binds: BindCache::default(),
        })
    }

    /// Records the blend; `y` must not alias `a` or `b`.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        a: &Tensor,
        b: &Tensor,
        lambda: f32,
        y: &Tensor,
    ) -> Result<()> {
        for (what, t) in [("a", a), ("b", b), ("y", y)] {
            t.expect_dtype(what, self.dtype)?;
            t.expect_shape(what, a.shape())?;
        }
        if !lambda.is_finite() {
            return Err(Error::InvalidParameter {
                name: "lambda",
                value: lambda.to_string(),
                why: "must be finite",
            });
        }
        let n = a.numel();
        if n == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let (ar, br, yr) = (r(a, "a")?, r(b, "b")?, r(y, "y")?);
        binding::check_no_alias(&[
            ("a", Some(&ar), false),
            ("b", Some(&br), false),
            ("y", Some(&yr), true),
        ])?;
        let align = Io {
            dtype: self.dtype,
            vec4: true,
        }
        .alignment();
        let io = Io {
            dtype: self.dtype,
            vec4: n.is_multiple_of(4) && [&ar, &br, &yr].iter().all(|r| r.offset % align == 0),
        };
        ctx.check_io(io)?;
        let block = block(ctx.is_cpu());
        let pipeline = ctx.pipeline(&blend_spec(io, ctx.is_cpu()))?;
        let n_v = (n / io.width() as usize) as u32;
        let params = BlendParams {
            n_v,
            lambda,
            ..Default::default()
        };
        let bind = self
            .binds
            .get(ctx, BLEND_SLOTS, &params, &[&ar, &br, &yr])?;
        let (gx, gy) = binding::grid(ctx, (n_v as u64).div_ceil(block as u64).div_ceil(WG as u64));
        binding::dispatch(encoder, "wgnorm blend", &pipeline, &bind, (gx, gy, 1));
        Ok(())
    }
}
