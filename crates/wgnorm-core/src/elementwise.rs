//! Elementwise ops: activations as standalone ops (`y = act(x)` over any shape) and a blend of
//! two tensors.

use crate::activation::Activation;
use crate::binding::{self, BindCache, BufferRange, Windows};
use crate::context::Slot;
use crate::shader::{snippet, Io, Kernel, Specialization};
use crate::uniform::{BlendParams, EwParams};
use crate::{Context, DType, Error, Result, Tensor};

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
const WG: u32 = 256;

const COMMON: &str = crate::shader_file!("elementwise_common.wgsl");
const GRAD_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite];

/// `y = act(x)`.
pub const ELEMENTWISE_KERNEL: Kernel = Kernel::new(
    "elementwise",
    &[
        snippet::ACTIVATION,
        COMMON,
        crate::shader_file!("elementwise.wgsl"),
    ],
    SLOTS,
);
/// `dx = dy * act'(x)`.
pub const ELEMENTWISE_GRAD_KERNEL: Kernel = Kernel::new(
    "elementwise_grad",
    &[
        snippet::ACTIVATION,
        COMMON,
        crate::shader_file!("elementwise_grad.wgsl"),
    ],
    GRAD_SLOTS,
);
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

fn elementwise_spec(io: Io, cpu: bool, act: Activation, grad: bool) -> Specialization {
    let kernel = if grad {
        ELEMENTWISE_GRAD_KERNEL
    } else {
        ELEMENTWISE_KERNEL
    };
    Specialization::new(kernel, io)
        .set("WG", WG)
        .set("BLOCK", block(cpu))
        .with(&act.constants())
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
                for grad in [false, true] {
                    out.push(elementwise_spec(io, cpu, act, grad));
                }
            }
            out.push(blend_spec(io, cpu));
        }
    }
    out
}

/// What [`Elementwise::new`] takes; `Default` gives the usual defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ElementwiseConfig {
    /// The activation applied.
    pub activation: Activation,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for ElementwiseConfig {
    fn default() -> Self {
        ElementwiseConfig {
            activation: Activation::SELU,
            dtype: DType::F32,
        }
    }
}

/// An activation applied elementwise, f32 or f16 storage with f32 arithmetic.
pub struct Elementwise {
    ctx: Context,
    activation: Activation,
    dtype: DType,
    binds: BindCache,
}

impl Elementwise {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: ElementwiseConfig) -> Result<Elementwise> {
        let ElementwiseConfig { activation, dtype } = cfg;
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
        self.record(encoder, &[("x", x)], ("y", y))
    }

    /// Records the backward, `dx = dy * act'(x)` (ReLU's derivative at 0 is 0, as PyTorch's):
    /// x, dy and dx of one shape and this op's dtype, dx in a buffer of its own.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        self.record(encoder, &[("x", x), ("dy", dy)], ("dx", dx))
    }

    /// Allocates dx, encodes the backward and submits (does not wait).
    pub fn backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dx = self.ctx.empty(x.shape(), self.dtype)?;
        self.ctx
            .record_and_submit(|enc| self.encode_backward(enc, x, dy, &dx))?;
        Ok(dx)
    }

    /// The forward (one input) or the backward (x and dy): inputs and output checked, bound in
    /// windows of elements, every bind group made before the first dispatch.
    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[(&str, &Tensor)],
        (out_name, out): (&str, &Tensor),
    ) -> Result<()> {
        let x = inputs[0].1;
        for &(what, t) in inputs.iter().chain([&(out_name, out)]) {
            t.expect_dtype(what, self.dtype)?;
            t.expect_shape(what, x.shape())?;
        }
        let n = x.numel();
        if n == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let mut ranges = inputs
            .iter()
            .map(|&(what, t)| binding::storage_range_unbounded(ctx, what, t))
            .collect::<Result<Vec<_>>>()?;
        ranges.push(binding::storage_range_unbounded(ctx, out_name, out)?);
        let named: Vec<_> = inputs
            .iter()
            .map(|i| i.0)
            .chain([out_name])
            .zip(&ranges)
            .enumerate()
            .map(|(k, (what, r))| (what, Some(r), k == inputs.len()))
            .collect();
        binding::check_no_alias(&named)?;
        let align = Io {
            dtype: self.dtype,
            vec4: true,
        }
        .alignment();
        let io = Io {
            dtype: self.dtype,
            vec4: n.is_multiple_of(4) && ranges.iter().all(|r| r.offset % align == 0),
        };
        ctx.check_io(io)?;
        let grad = inputs.len() == 2;
        let spec = elementwise_spec(io, ctx.is_cpu(), self.activation, grad);
        let pipeline = ctx.pipeline(&spec)?;
        let slots = if grad { GRAD_SLOTS } else { SLOTS };
        let (selu_alpha, selu_lambda) = self.activation.selu_params();
        let windows = windows(ctx, (n / io.width() as usize) as u64, io)?;
        let binds = windows
            .iter()
            .map(|(first, len)| {
                let params = EwParams {
                    n_v: len as u32,
                    selu_alpha,
                    selu_lambda,
                    ..Default::default()
                };
                let windowed: Vec<_> = ranges
                    .iter()
                    .map(|r| windows.range(r, first, len))
                    .collect();
                let refs: Vec<&BufferRange> = windowed.iter().collect();
                Ok((self.binds.get(ctx, slots, &params, &refs)?, len))
            })
            .collect::<Result<Vec<_>>>()?;
        for (bind, len) in &binds {
            let label = "wgnorm elementwise";
            binding::dispatch(encoder, label, &pipeline, bind, groups(ctx, *len));
        }
        Ok(())
    }

    /// Allocates y, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::elementwise::{Elementwise, ElementwiseConfig};
    /// use wgnorm_core::{Activation, Context, DType};
    ///
    /// let ctx = Context::new()?;
    /// let x = ctx.upload_f32(&[-1.0, 0.0, 2.0], &[3])?;
    /// let relu = Elementwise::new(
    ///     &ctx,
    ///     ElementwiseConfig { activation: Activation::Relu, dtype: DType::F32 },
    /// )?;
    /// assert_eq!(ctx.download(&relu.forward(&x)?)?, vec![0.0, 0.0, 2.0]);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.ctx.empty(x.shape(), self.dtype)?;
        self.ctx.record_and_submit(|enc| self.encode(enc, x, &y))?;
        Ok(y)
    }
}

/// `y = wa * a + wb * b` over tensors of one shape and dtype (f32 arithmetic): a blend of two
/// outputs (`lambda`, `1 - lambda`), a sum or a scale of gradients.
pub struct Blend {
    ctx: Context,
    dtype: DType,
    binds: BindCache,
}

const BLEND_SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite];

impl Blend {
    /// A blend of tensors of `dtype` bound to `ctx`.
    pub fn new(ctx: &Context, dtype: DType) -> Result<Blend> {
        Ok(Blend {
            ctx: ctx.clone(),
            dtype,
            binds: BindCache::default(),
        })
    }

    /// Records `y = lambda * a + (1 - lambda) * b`; `y` must not alias `a` or `b`.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        a: &Tensor,
        b: &Tensor,
        lambda: f32,
        y: &Tensor,
    ) -> Result<()> {
        if !lambda.is_finite() {
            return Err(Error::InvalidParameter {
                name: "lambda",
                value: lambda.to_string(),
                why: "must be finite",
            });
        }
        self.encode_weighted(encoder, (a, b), (lambda, 1.0 - lambda), y)
    }

    /// Records `y = wa * a + wb * b` (`a` and `b` may be the same tensor: `y = (wa + wb) a`
    /// rounded as the sum of the two products); `y` must not alias `a` or `b`.
    pub fn encode_weighted(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (a, b): (&Tensor, &Tensor),
        (wa, wb): (f32, f32),
        y: &Tensor,
    ) -> Result<()> {
        for (what, t) in [("a", a), ("b", b), ("y", y)] {
            t.expect_dtype(what, self.dtype)?;
            t.expect_shape(what, a.shape())?;
        }
        if !(wa.is_finite() && wb.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "weights",
                value: format!("({wa}, {wb})"),
                why: "must be finite",
            });
        }
        let n = a.numel();
        if n == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let r = |t: &Tensor, what| binding::storage_range_unbounded(ctx, what, t);
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
        let pipeline = ctx.pipeline(&blend_spec(io, ctx.is_cpu()))?;
        let windows = windows(ctx, (n / io.width() as usize) as u64, io)?;
        // Every bind group first, so that an error records nothing; then the dispatches.
        for pass in [false, true] {
            for (first, len) in windows.iter() {
                let params = BlendParams {
                    n_v: len as u32,
                    wa,
                    wb,
                    ..Default::default()
                };
                let w = |r: &BufferRange| windows.range(r, first, len);
                let bind =
                    self.binds
                        .get(ctx, BLEND_SLOTS, &params, &[&w(&ar), &w(&br), &w(&yr)])?;
                if pass {
                    let groups = groups(ctx, len);
                    binding::dispatch(encoder, "wgnorm blend", &pipeline, &bind, groups);
                }
            }
        }
        Ok(())
    }
}

/// An elementwise call's binding windows: `total` accesses of the I/O width, split so that
/// each window fits one storage binding (one window unless the tensors are larger).
fn windows(ctx: &Context, total: u64, io: Io) -> Result<Windows> {
    let unit_bytes = io.width() as u64 * io.dtype.size();
    Ok(Windows {
        total,
        per_window: binding::window_accesses(ctx, "x", total, unit_bytes)?,
        unit_bytes,
    })
}

/// Workgroups of one window of `len` accesses.
fn groups(ctx: &Context, len: u64) -> (u32, u32, u32) {
    let (gx, gy) = binding::grid(
        ctx,
        len.div_ceil(block(ctx.is_cpu()) as u64).div_ceil(WG as u64),
    );
    (gx, gy, 1)
}
