//! Region Normalization RN-B's backward (docs/methods.md A7): the forward kernel's statistics
//! stages, then `shaders/batch_norm/region_grad.wgsl`: per channel and region the BatchNorm
//! backward over the region's pixels of the batch, and the affine's gradients.

use wgnorm_core::binding::{self, BufferRange};
use wgnorm_core::chnorm::Layout;
use wgnorm_core::shader::{snippet, Io, Kernel, Specialization};
use wgnorm_core::{DType, Result, Slot, Tensor};

use crate::region::{record, RegionParams, WG};
use crate::{RegionNormB, RegionNormInputs};

/// uniform, x, dy, gamma_f, gamma_b, scratch, dx, out_a, out_b.
const GRAD_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
];

/// RN-B's staged backward kernel.
pub const REGION_GRAD_KERNEL: Kernel = Kernel::new(
    "batch_norm/region_grad",
    &[
        snippet::MOMENTS,
        crate::region::REGION_COMMON,
        wgnorm_core::shader_file!("batch_norm/region_grad.wgsl"),
    ],
    GRAD_SLOTS,
);

/// Stage `stage` (0 statistics, 1 partials, 2 finalize with `params` 0: dgamma, 1: dbeta, 3 dx).
fn grad_spec(io: Io, stage: u32, nhwc: bool, params: u32) -> Specialization {
    Specialization::new(REGION_GRAD_KERNEL, io)
        .set("WG", WG)
        .set("GSTAGE", stage)
        .flag("NHWC", nhwc)
        .set("PARAMS", params)
}

/// The backward's pipelines, for `cargo xtask validate`.
pub fn grad_specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for nhwc in [false, true] {
            let io = Io { dtype, vec4: false };
            for (stage, params) in [(0, 0), (1, 0), (2, 0), (2, 1), (3, 0)] {
                out.push(grad_spec(io, stage, nhwc, params));
            }
        }
    }
    out
}

/// Outputs of [`RegionNormB::encode_backward`]: `dx` like x; the affine's gradients (f32 `[C]`)
/// when wanted.
#[derive(Clone, Copy, Debug)]
pub struct RegionNormGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of `gamma_f`.
    pub dgamma_f: Option<&'a Tensor>,
    /// Gradient of `gamma_b`.
    pub dgamma_b: Option<&'a Tensor>,
    /// Gradient of `beta_f`.
    pub dbeta_f: Option<&'a Tensor>,
    /// Gradient of `beta_b`.
    pub dbeta_b: Option<&'a Tensor>,
}

impl RegionNormB {
    /// Records the backward into the caller's encoder: each pixel's region (inside or outside
    /// the mask) is a BatchNorm slot of its channel over the batch (`eps * NHW / S`, as the
    /// forward), `dx = rs (1 + gamma_R) (dy - mean_R(dy) - xhat mean_R(dy xhat))`,
    /// `dgamma_R = sum_R dy xhat`, `dbeta_f = dbeta_b = sum dy`; the mask gets no gradient. The
    /// forward's statistics are recomputed; fixed-order sums (bitwise reproducible). Checked
    /// first; nothing is recorded on error.
    pub fn encode_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        a: &RegionNormInputs,
        dy: &Tensor,
        o: &RegionNormGradOutputs,
    ) -> Result<()> {
        let dims = self.dims(a, o.dx)?;
        dy.expect_dtype("dy", self.dtype)?;
        dy.expect_shape("dy", a.x.shape())?;
        let c = dims[1];
        let outs = [o.dgamma_f, o.dgamma_b, o.dbeta_f, o.dbeta_b];
        for (what, t) in ["dgamma_f", "dgamma_b", "dbeta_f", "dbeta_b"]
            .iter()
            .zip(outs)
        {
            if let Some(t) = t {
                t.expect_dtype(what, DType::F32)?;
                t.expect_shape(what, &[c])?;
            }
        }
        let r = |what, t: &Tensor| binding::storage_range(&self.ctx, what, t);
        let ranges = [
            r("x", a.x)?,
            r("dy", dy)?,
            r("gamma_f", a.gamma_f)?,
            r("gamma_b", a.gamma_b)?,
            r("dx", o.dx)?,
        ];
        // Missing parameter gradients go to a sink.
        let sink = self
            .grad_scratch
            .get(&self.ctx, &[c], &[c.max(1)], DType::F32)?;
        let sink = r("sink", &sink)?;
        let outs: Vec<BufferRange> = outs
            .iter()
            .map(|t| t.map_or(Ok(sink.clone()), |t| r("parameter gradient", t)))
            .collect::<Result<_>>()?;
        let mut named = vec![
            ("x", Some(&ranges[0]), false),
            ("dy", Some(&ranges[1]), false),
            ("gamma_f", Some(&ranges[2]), false),
            ("gamma_b", Some(&ranges[3]), false),
            ("dx", Some(&ranges[4]), true),
        ];
        let out_names = ["dgamma_f", "dgamma_b", "dbeta_f", "dbeta_b"];
        for (i, t) in [o.dgamma_f, o.dgamma_b, o.dbeta_f, o.dbeta_b]
            .iter()
            .enumerate()
        {
            named.push((out_names[i], t.map(|_| &outs[i]), true));
        }
        binding::check_no_alias(&named)?;
        self.record_backward(enc, (a, o.dx), dims, (&ranges, &outs))
    }

    /// The forward's statistics stages, then the backward's (or, with no elements, the
    /// parameter gradients' zeros).
    fn record_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        (a, dx): (&RegionNormInputs, &Tensor),
        dims: [usize; 6],
        (ranges, outs): (&[BufferRange; 5], &[BufferRange]),
    ) -> Result<()> {
        let ctx = &self.ctx;
        let c = dims[1];
        let params = [a.mask, a.gamma_f, a.gamma_b, a.beta_f, a.beta_b];
        let stats = record(
            ctx,
            &self.binds,
            &self.scratch,
            enc,
            // (y is not written by the statistics stages: dx stands in.)
            (a.x, dx, params),
            dims,
            (self.eps, None),
            (self.layout, self.dtype, true),
        )?;
        let (scratch, p) = match stats {
            Some(s) => s,
            None if c == 0 => return Ok(()),
            // Sums over nothing: the finalize stage with no tiles writes zeros.
            None => (
                self.grad_scratch
                    .get(ctx, a.x.shape(), &[15 * c], DType::F32)?,
                RegionParams {
                    n: 0,
                    c: c as u32,
                    ..Default::default()
                },
            ),
        };
        let sr = binding::storage_range(ctx, "scratch", &scratch)?;
        let bind = |o: [&BufferRange; 2]| {
            let list = [
                &ranges[0], &ranges[1], &ranges[2], &ranges[3], &sr, &ranges[4], o[0], o[1],
            ];
            self.grad_binds.get(ctx, GRAD_SLOTS, &p, &list)
        };
        let (gammas, betas) = (bind([&outs[0], &outs[1]])?, bind([&outs[2], &outs[3]])?);
        let io = Io {
            dtype: self.dtype,
            vec4: false,
        };
        let nhwc = self.layout == Layout::Nhwc;
        let per_channel = c.div_ceil(WG as usize);
        let numel = a.x.numel();
        let stages: Vec<(u32, u32, usize, &wgpu::BindGroup)> = if numel == 0 {
            vec![(2, 0, per_channel, &gammas), (2, 1, per_channel, &betas)]
        } else {
            vec![
                (0, 0, per_channel, &gammas),
                (1, 0, c * p.tiles as usize, &gammas),
                (2, 0, per_channel, &gammas),
                (2, 1, per_channel, &betas),
                (3, 0, numel.div_ceil(WG as usize), &gammas),
            ]
        };
        for (stage, which, groups, bind) in stages {
            let pipe = ctx.pipeline(&grad_spec(io, stage, nhwc, which))?;
            let (gx, gy) = binding::grid(ctx, groups as u64);
            binding::dispatch(enc, "wgnorm region_norm_b grad", &pipe, bind, (gx, gy, 1));
        }
        Ok(())
    }

    /// Allocates dx and the four parameter gradients, encodes and submits (does not wait).
    pub fn backward(&self, a: &RegionNormInputs, dy: &Tensor) -> Result<[Tensor; 5]> {
        let c = a.gamma_f.numel();
        let ctx = &self.ctx;
        let dx = ctx.empty(a.x.shape(), self.dtype)?;
        let p = [
            ctx.empty(&[c], DType::F32)?,
            ctx.empty(&[c], DType::F32)?,
            ctx.empty(&[c], DType::F32)?,
            ctx.empty(&[c], DType::F32)?,
        ];
        let o = RegionNormGradOutputs {
            dx: &dx,
            dgamma_f: Some(&p[0]),
            dgamma_b: Some(&p[1]),
            dbeta_f: Some(&p[2]),
            dbeta_b: Some(&p[3]),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, a, dy, &o))?;
        let [a0, a1, a2, a3] = p;
        Ok([dx, a0, a1, a2, a3])
    }
}
