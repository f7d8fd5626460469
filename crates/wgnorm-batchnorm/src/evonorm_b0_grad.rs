//! EvoNorm-B0's backward (docs/methods.md A14): `shaders/batch_norm/evonorm_b0_grad.wgsl`, five
//! staged passes in fixed order (bitwise reproducible): the instance moments, the channel's
//! batch statistics, per-slab partial sums, the per-channel gradients, dx. The max's larger
//! branch takes the gradient, half each at an exact tie (PyTorch's and JAX's `maximum`).

use wgnorm_core::binding::{self, BufferRange};
use wgnorm_core::chnorm::Layout;
use wgnorm_core::shader::{snippet, Io, Kernel, Specialization};
use wgnorm_core::{DType, Error, Mode, Result, Slot, Tensor};

use crate::{EvoNormB0, EvoNormB0Inputs};

/// Lanes per workgroup: one workgroup per (sample, channel) slab in the reducing stages.
const WG: u32 = 64;

/// uniform, x, dy, weight, v, running_var, scratch, dx, out (one parameter gradient per
/// dispatch: eight storage bindings, WebGPU's default limit).
const GRAD_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
];

/// EvoNorm-B0's staged backward kernel.
pub const EVONORM_B0_GRAD_KERNEL: Kernel = Kernel::new(
    "batch_norm/evonorm_b0_grad",
    &[
        snippet::MOMENTS,
        snippet::WG_SUM,
        wgnorm_core::shader_file!("batch_norm/evonorm_b0_grad.wgsl"),
    ],
    GRAD_SLOTS,
);

wgnorm_core::uniform_block! {
    /// `EvoB0GradParams` (`batch_norm/evonorm_b0_grad.wgsl`).
    pub struct EvoB0GradParams {
        pub n: u32,
        pub c: u32,
        /// Elements per (sample, channel).
        pub hw: u32,
        pub _pad0: u32,
        pub eps: f32,
        pub _pad1: u32,
        pub _pad2: u32,
        pub _pad3: u32,
    }
}

/// The stages in order: (GSTAGE, PARAMS, which output the dispatch writes).
const STAGES: [(u32, u32, Out); 7] = [
    (0, 0, Out::Weight),
    (1, 0, Out::Weight),
    (2, 0, Out::Weight),
    (3, 0, Out::Weight),
    (3, 1, Out::Bias),
    (3, 2, Out::V),
    (4, 0, Out::Weight),
];

#[derive(Clone, Copy)]
enum Out {
    Weight,
    Bias,
    V,
}

fn grad_spec(io: Io, (stage, params): (u32, u32), training: bool, nhwc: bool) -> Specialization {
    Specialization::new(EVONORM_B0_GRAD_KERNEL, io)
        .set("WG", WG)
        .set("GSTAGE", stage)
        .set("PARAMS", params)
        .flag("TRAINING", training)
        .flag("NHWC", nhwc)
}

/// The backward's pipelines, for `cargo xtask validate`.
pub fn grad_specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        let io = Io { dtype, vec4: false };
        for training in [false, true] {
            for nhwc in [false, true] {
                for (stage, params, _) in STAGES {
                    out.push(grad_spec(io, (stage, params), training, nhwc));
                }
            }
        }
    }
    out
}

/// Outputs of [`EvoNormB0::encode_backward`]: `dx` like x; the parameters' gradients (f32
/// `[C]`) when wanted.
#[derive(Clone, Copy, Debug)]
pub struct EvoNormB0GradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of `weight`.
    pub dweight: Option<&'a Tensor>,
    /// Gradient of `bias`.
    pub dbias: Option<&'a Tensor>,
    /// Gradient of `v`.
    pub dv: Option<&'a Tensor>,
}

/// What [`EvoNormB0::backward`] allocates: `dx` like x, the rest f32 `[C]`.
#[derive(Debug)]
pub struct EvoNormB0Grads {
    /// Gradient of x.
    pub dx: Tensor,
    /// Gradient of `weight`.
    pub dweight: Tensor,
    /// Gradient of `bias`.
    pub dbias: Tensor,
    /// Gradient of `v`.
    pub dv: Tensor,
}

impl EvoNormB0 {
    /// Records the gradients of `sum(y * dy)` into the caller's encoder: training through the
    /// batch variance and each (sample, channel)'s, inference with `running_var` a constant;
    /// `running_var` is read (inference) and never written. Checked first; nothing is recorded
    /// on error. `inputs.bias` is not read.
    pub fn encode_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        inputs: &EvoNormB0Inputs,
        dy: &Tensor,
        outputs: &EvoNormB0GradOutputs,
        mode: Mode,
    ) -> Result<()> {
        let ctx = self.engine.context();
        let view = self.engine.view(inputs.x)?;
        let (n, c, hw) = (view.p, view.r, view.count());
        dy.expect_dtype("dy", self.engine.dtype())?;
        dy.expect_shape("dy", inputs.x.shape())?;
        outputs.dx.expect_dtype("dx", self.engine.dtype())?;
        outputs.dx.expect_shape("dx", inputs.x.shape())?;
        for (what, t) in [("weight", inputs.weight), ("v", inputs.v)] {
            t.expect_dtype(what, DType::F32)?;
            t.expect_shape(what, &[c])?;
        }
        inputs.running_var.expect_dtype("running_var", DType::F32)?;
        inputs.running_var.expect_shape("running_var", &[c])?;
        let grads = [outputs.dweight, outputs.dbias, outputs.dv];
        for (what, t) in ["dweight", "dbias", "dv"].into_iter().zip(grads) {
            if let Some(t) = t {
                t.expect_dtype(what, DType::F32)?;
                t.expect_shape(what, &[c])?;
            }
        }
        if inputs.x.numel() > u32::MAX as usize {
            return Err(Error::InvalidParameter {
                name: "x",
                value: format!("{} elements", inputs.x.numel()),
                why: "EvoNorm-B0's backward indexes x with 32 bits: split the batch",
            });
        }
        let r = |what, t: &Tensor| binding::storage_range(ctx, what, t);
        let ins = [
            r("x", inputs.x)?,
            r("dy", dy)?,
            r("weight", inputs.weight)?,
            r("v", inputs.v)?,
            r("running_var", inputs.running_var)?,
            r("dx", outputs.dx)?,
        ];
        let sink = self.grad_scratch.get(ctx, &[c], &[c.max(1)], DType::F32)?;
        let sink = r("sink", &sink)?;
        let outs: Vec<BufferRange> = grads
            .iter()
            .map(|t| t.map_or(Ok(sink.clone()), |t| r("parameter gradient", t)))
            .collect::<Result<_>>()?;
        let mut named = vec![
            ("x", Some(&ins[0]), false),
            ("dy", Some(&ins[1]), false),
            ("weight", Some(&ins[2]), false),
            ("v", Some(&ins[3]), false),
            ("running_var", Some(&ins[4]), false),
            ("dx", Some(&ins[5]), true),
        ];
        for (i, what) in ["dweight", "dbias", "dv"].into_iter().enumerate() {
            named.push((what, grads[i].map(|_| &outs[i]), true));
        }
        binding::check_no_alias(&named)?;
        self.record_backward(enc, inputs.x, (n, c, hw), (&ins, &outs), mode)
    }

    /// The five stages (with no elements, the finalize stage alone: zero gradients).
    fn record_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &Tensor,
        (n, c, hw): (usize, usize, usize),
        (ins, outs): (&[BufferRange; 6], &[BufferRange]),
        mode: Mode,
    ) -> Result<()> {
        if c == 0 {
            return Ok(());
        }
        let ctx = self.engine.context();
        let slabs = n * c;
        let scratch = self
            .grad_scratch
            .get(ctx, x.shape(), &[7 * slabs + 6 * c], DType::F32)?;
        let sr = binding::storage_range(ctx, "scratch", &scratch)?;
        let empty = slabs * hw == 0;
        let p = EvoB0GradParams {
            // (no elements: the finalize stage sums over no slab, writing zeros)
            n: if empty { 0 } else { n as u32 },
            c: c as u32,
            hw: hw as u32,
            eps: self.eps,
            ..Default::default()
        };
        let bind = |o: &BufferRange| {
            let list = [&ins[0], &ins[1], &ins[2], &ins[3], &ins[4], &sr, &ins[5], o];
            self.grad_binds.get(ctx, GRAD_SLOTS, &p, &list)
        };
        let groups = [bind(&outs[0])?, bind(&outs[1])?, bind(&outs[2])?];
        let io = Io {
            dtype: self.engine.dtype(),
            vec4: false,
        };
        let nhwc = self.layout == Layout::Nhwc;
        let per_channel = c.div_ceil(WG as usize);
        for (stage, which, out) in STAGES {
            let size = match stage {
                _ if empty && stage != 3 => continue,
                0 | 2 => slabs,
                4 => (slabs * hw).div_ceil(WG as usize),
                _ => per_channel,
            };
            let spec = grad_spec(io, (stage, which), mode.is_train(), nhwc);
            let pipe = ctx.pipeline(&spec)?;
            let (gx, gy) = binding::grid(ctx, size as u64);
            let bg = &groups[out as usize];
            binding::dispatch(enc, "wgnorm evonorm_b0 grad", &pipe, bg, (gx, gy, 1));
        }
        Ok(())
    }

    /// Allocates dx and the parameters' gradients, encodes the backward and submits (does not
    /// wait).
    pub fn backward(
        &self,
        inputs: &EvoNormB0Inputs,
        dy: &Tensor,
        mode: Mode,
    ) -> Result<EvoNormB0Grads> {
        let ctx = self.engine.context();
        let c = self.engine.view(inputs.x)?.r;
        let g = EvoNormB0Grads {
            dx: ctx.empty(inputs.x.shape(), self.engine.dtype())?,
            dweight: ctx.empty(&[c], DType::F32)?,
            dbias: ctx.empty(&[c], DType::F32)?,
            dv: ctx.empty(&[c], DType::F32)?,
        };
        let outputs = EvoNormB0GradOutputs {
            dx: &g.dx,
            dweight: Some(&g.dweight),
            dbias: Some(&g.dbias),
            dv: Some(&g.dv),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, inputs, dy, &outputs, mode))?;
        Ok(g)
    }
}
