//! Elementwise activations as standalone ops (SELU, ...): `y = act(x)` over any shape.

use crate::activation::Activation;
use crate::binding::{self, BindCache, PARAM_WORDS};
use crate::context::Slot;
use crate::shader::{Io, Kernel};
use crate::{Context, DType, Error, Result, Tensor};

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Read, Slot::ReadWrite];
const WG: u32 = 256;

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
        for (what, t) in [("x", x), ("y", y)] {
            if t.dtype() != self.dtype {
                return Err(Error::DTypeMismatch {
                    what: what.into(),
                    expected: self.dtype,
                    got: t.dtype(),
                });
            }
        }
        if y.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                what: "y".into(),
                expected: x.shape().to_vec(),
                got: y.shape().to_vec(),
            });
        }
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
        let block: u32 = if ctx.is_cpu() { 16 } else { 1 };
        let mut constants = vec![("WG", WG as f64), ("BLOCK", block as f64)];
        constants.extend(self.activation.constants());
        let pipeline = ctx.pipeline(Kernel::Elementwise, io, SLOTS, &constants)?;
        let n_v = (n / io.width() as usize) as u32;
        let mut params = [0u32; PARAM_WORDS];
        params[0] = n_v;
        let bind = self.binds.get(ctx, SLOTS, &params, &[&xr, &yr])?;
        let (gx, gy) = binding::grid(ctx, (n_v as u64).div_ceil(block as u64).div_ceil(WG as u64));
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm elementwise"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.ctx.empty(x.shape(), self.dtype)?;
        let mut enc = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        self.encode(&mut enc, x, &y)?;
        self.ctx.queue().submit([enc.finish()]);
        Ok(y)
    }
}
