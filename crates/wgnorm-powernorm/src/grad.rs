//! PowerNorm's approximate backward (Shen et al. 2020, the official `mask_powernorm.py`): the
//! batch statistic's gradient replaced by a running estimate `nu` (`ema_gz`, f32 `[C]`, kept on
//! the GPU next to `running_phi`), updated over the unpadded tokens each step. Passes: the
//! GroupScaling again (into the forward's scratch), then
//! `shaders/power_norm/grad_*` (per (token tile, channel) sums with this batch's psi2 over the
//! unpadded tokens, per-channel coefficients and the `nu` update, dxs), and the row backward
//! through the GroupScaling.

use wgnorm_core::binding::{self, BindCache, BufferRange};
use wgnorm_core::chnorm::split::{apply_spans, Budget, Span};
use wgnorm_core::context::Slot;
use wgnorm_core::rowgrad::RowGradArgs;
use wgnorm_core::rownorm::RowNormArgs;
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{DType, Error, Result, Tensor};

use crate::PowerNorm;

wgnorm_core::uniform_block! {
    /// `PowerGradParams` (`power_norm/grad_common.wgsl`): PowerNorm's backward over the token
    /// view `[tokens, C]`.
    pub struct PowerGradParams {
        pub tokens: u32,
        pub c: u32,
        /// The mask's `[B, T]`.
        pub b: u32,
        pub t: u32,
        /// Token tiles of the partials pass, and tokens per tile.
        pub tiles: u32,
        pub tile_len: u32,
        pub eps: f32,
        /// `1 - alpha_bkw`.
        pub one_minus_alpha: f32,
        /// xs, dy and dxs bound in windows: this dispatch's first workgroup (partials) or
        /// element (dx) in the whole call's numbering, the element its bindings start at, and
        /// its end (partials: workgroups; dx: elements). Indices stay the whole call's.
        pub group_base: u32,
        pub x_base: u32,
        pub end: u32,
        pub _pad0: u32,
    }
}

const COMMON: &str = wgnorm_core::shader_file!("power_norm/grad_common.wgsl");

/// partials: uniform, xs, dy, mask, saved, weight, partials.
pub const GRAD_PARTIALS_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
];
/// finalize: uniform, saved, (unused), weight, partials, ema_gz, coef, dweight, dbias.
pub const GRAD_FINALIZE_SLOTS: &[Slot] = &[
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
/// dx: uniform, xs, dy, coef, dxs.
pub const GRAD_DX_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
];

/// Per (token tile, channel) sums.
pub const GRAD_PARTIALS_KERNEL: Kernel = Kernel::new(
    "power_norm/grad_partials",
    &[
        COMMON,
        wgnorm_core::shader_file!("power_norm/grad_partials.wgsl"),
    ],
    GRAD_PARTIALS_SLOTS,
);
/// Per-channel coefficients, the `nu` update and the parameter gradients.
pub const GRAD_FINALIZE_KERNEL: Kernel = Kernel::new(
    "power_norm/grad_finalize",
    &[
        COMMON,
        wgnorm_core::shader_file!("power_norm/grad_finalize.wgsl"),
    ],
    GRAD_FINALIZE_SLOTS,
);
/// dxs, elementwise.
pub const GRAD_DX_KERNEL: Kernel = Kernel::new(
    "power_norm/grad_dx",
    &[COMMON, wgnorm_core::shader_file!("power_norm/grad_dx.wgsl")],
    GRAD_DX_SLOTS,
);

/// The pipelines of a call: partials (mask, weight), finalize (weight, dweight, dbias), dx.
fn specs(io: Io, mask: bool, weight: bool, dweight: bool, dbias: bool) -> [Specialization; 3] {
    [
        Specialization::new(GRAD_PARTIALS_KERNEL, io)
            .flag("HAS_MASK", mask)
            .flag("HAS_WEIGHT", weight),
        Specialization::new(GRAD_FINALIZE_KERNEL, Io::F32)
            .flag("HAS_WEIGHT", weight)
            .flag("HAS_DWEIGHT", dweight)
            .flag("HAS_DBIAS", dbias),
        Specialization::new(GRAD_DX_KERNEL, io),
    ]
}

/// Every pipeline of the backward, for `cargo xtask validate`.
pub fn grad_specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        let io = Io { dtype, vec4: false };
        for bits in 0..16u32 {
            let b = |k: u32| bits & (1 << k) != 0;
            out.extend(specs(io, b(0), b(1), b(2), b(3)));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.key()));
    out
}

/// Inputs of the backward of training step `step`: the forward's `x`, `pad_mask`, `weight`,
/// the upstream gradient `dy` (x's shape and dtype), the forward's `saved` pairs (f32 `[C, 2]`,
/// written by [`PowerNorm::encode_train_saving`]: the scale z was normalized with) and the
/// running estimate `ema_gz` (f32 `[C]`, zeros at the start of training; updated in place).
#[derive(Clone, Copy, Debug)]
pub struct PowerNormGradInputs<'a> {
    /// The forward's input `[T, B, C]`.
    pub x: &'a Tensor,
    /// The forward's padding mask (f32 `[B, T]`, 1 = padding).
    pub pad_mask: Option<&'a Tensor>,
    /// The forward's weight; `None`: 1.
    pub weight: Option<&'a Tensor>,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
    /// The forward's saved `(0, 1 / sqrt(v + eps))` per channel.
    pub saved: &'a Tensor,
    /// The backward's running estimate (`ema_gz`), updated.
    pub ema_gz: &'a Tensor,
}

/// Outputs of the backward: `dx` like x; `dweight`, `dbias` f32 `[C]` when wanted.
#[derive(Clone, Copy, Debug)]
pub struct PowerNormGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of the weight, written when given.
    pub dweight: Option<&'a Tensor>,
    /// Gradient of the bias, written when given.
    pub dbias: Option<&'a Tensor>,
}

/// Scratch and caches of the backward, owned by the op.
#[derive(Default)]
pub(crate) struct GradState {
    binds: BindCache,
    partials: ScratchCache,
    coef: ScratchCache,
    dxs: ScratchCache,
}

/// One dispatch of the backward: pipeline, bind group, workgroups.
type GradPass = (wgpu::ComputePipeline, wgpu::BindGroup, u64);

/// `alpha_bkw` of the paper and the official code.
const ALPHA_BKW: f32 = 0.9;
const WG: u64 = 64;

impl PowerNorm {
    /// Records the approximate backward of a training step (the paper's `alpha_bkw` = 0.9):
    /// `ĝ = dy·w − (1 − alpha_bkw)·nu·z`, `dxs = ĝ / sqrt(psi2 + eps)` with this batch's psi2,
    /// `nu += mean(ĝ·z)` over the unpadded tokens, then dx through the GroupScaling; `dweight =
    /// sum dy·z`, `dbias = sum dy` (all tokens). Checked first; nothing recorded on error.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &PowerNormGradInputs,
        outputs: &PowerNormGradOutputs,
    ) -> Result<()> {
        let (t, b, c) = self.check_backward(inputs, outputs)?;
        let ctx = self.engine.context();
        let dtype = self.cfg.dtype;
        let tokens = t * b;
        if tokens * c == 0 {
            return self.encode_empty_backward(encoder, inputs, outputs, c);
        }
        let io = Io { dtype, vec4: false };
        ctx.check_io(io)?;
        let (passes, scaled, dxs) = self.grad_passes(inputs, outputs, io, (t, b, c))?;
        let g = self.cfg.group_num;
        let rows = [tokens * g, c / g];
        let row_args = RowGradArgs {
            x: &inputs.x.reshape(&rows)?,
            residual: None,
            weight: None,
            bias: None,
            dy: &dxs.reshape(&rows)?,
            dsum: None,
            mean: None,
            rstd: None,
            dx: &outputs.dx.reshape(&rows)?,
            dweight: None,
            dbias: None,
        };
        self.scaling_grad.check_args(&row_args)?;
        // Recording starts here: everything above was checked or created.
        self.scaling.encode(
            encoder,
            &RowNormArgs {
                x: &inputs.x.reshape(&rows)?,
                weight: None,
                bias: None,
                y: &scaled.reshape(&rows)?,
                mean: None,
                rstd: None,
                residual: None,
                sum: None,
            },
        )?;
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgnorm power_norm backward"),
                timestamp_writes: None,
            });
            for (pipe, bind, n) in &passes {
                let (gx, gy) = binding::grid(ctx, *n);
                pass.set_pipeline(pipe);
                pass.set_bind_group(0, bind, &[]);
                pass.dispatch_workgroups(gx, gy, 1);
            }
        }
        self.scaling_grad.encode(encoder, &row_args)
    }

    /// The three kernels' pipelines, bind groups and workgroup counts, with the scratch they
    /// use: the GroupScaled x and dxs.
    fn grad_passes(
        &self,
        inputs: &PowerNormGradInputs,
        outputs: &PowerNormGradOutputs,
        io: Io,
        (t, b, c): (usize, usize, usize),
    ) -> Result<(Vec<GradPass>, Tensor, Tensor)> {
        let ctx = self.engine.context();
        let dtype = self.cfg.dtype;
        let shape = inputs.x.shape();
        let tokens = t * b;
        let st = &self.grad;
        let scaled = self.scaled.get(ctx, shape, shape, dtype)?;
        let tile_len = 256usize;
        let tiles = tokens.div_ceil(tile_len);
        let partials = st.partials.get(ctx, shape, &[tiles * c, 8], DType::F32)?;
        let coef = st.coef.get(ctx, shape, &[c, 2], DType::F32)?;
        let dxs = st.dxs.get(ctx, shape, shape, dtype)?;
        let params = self.grad_params((t, b, c), (tiles, tile_len));
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw = [0, 1].map(|i| binding::dummy_range(ctx.dummy_write(i)));
        let opt =
            |t: Option<&Tensor>, what, d| t.map(|t| r(t, what)).transpose().map(|o| o.unwrap_or(d));
        // xs, dy and dxs may be larger than one binding: bound in windows of whole token tiles
        // (partials) and of elements (dx), indices the whole call's, so the sums and their
        // order do not depend on the windows.
        let whole = |t: &Tensor, what| binding::storage_range_unbounded(ctx, what, t);
        let (xs, dy, saved) = (
            whole(&scaled, "scaled")?,
            whole(inputs.dy, "dy")?,
            r(inputs.saved, "saved")?,
        );
        let (mask, weight) = (
            opt(inputs.pad_mask, "pad_mask", dr.clone())?,
            opt(inputs.weight, "weight", dr.clone())?,
        );
        let (part, cf, dxs_r, ema) = (
            r(&partials, "partials")?,
            r(&coef, "coef")?,
            whole(&dxs, "dxs")?,
            r(inputs.ema_gz, "ema_gz")?,
        );
        let (dwr, dbr) = (
            opt(outputs.dweight, "dweight", dw[0].clone())?,
            opt(outputs.dbias, "dbias", dw[1].clone())?,
        );
        let specs = specs(
            io,
            inputs.pad_mask.is_some(),
            inputs.weight.is_some(),
            outputs.dweight.is_some(),
            outputs.dbias.is_some(),
        );
        let total = (tokens * c) as u64;
        let budget = Budget::of(ctx, total, dtype.size());
        let chunks = (c as u64).div_ceil(WG);
        let win = |t: &BufferRange, s: &Span| s.bind(t, total, dtype.size());
        let mut passes = Vec::new();
        let pipe = ctx.pipeline(&specs[0])?;
        for s in apply_spans(budget, (tile_len * c) as u64, chunks)? {
            let pr = PowerGradParams {
                group_base: s.first as u32,
                x_base: s.base as u32,
                end: (s.first + s.count) as u32,
                ..params
            };
            let ranges = [&win(&xs, &s), &win(&dy, &s), &mask, &saved, &weight, &part];
            let bind = st.binds.get(ctx, GRAD_PARTIALS_SLOTS, &pr, &ranges)?;
            passes.push((pipe.clone(), bind, s.count));
        }
        let bind = st.binds.get(
            ctx,
            GRAD_FINALIZE_SLOTS,
            &params,
            &[&saved, &dr, &weight, &part, &ema, &cf, &dwr, &dbr],
        )?;
        passes.push((ctx.pipeline(&specs[1])?, bind, (c as u64).div_ceil(WG)));
        let pipe = ctx.pipeline(&specs[2])?;
        for s in apply_spans(budget, 1, 1)? {
            let pr = PowerGradParams {
                group_base: s.first as u32,
                x_base: s.base as u32,
                end: s.end as u32,
                ..params
            };
            let ranges = [&win(&xs, &s), &win(&dy, &s), &cf, &win(&dxs_r, &s)];
            let bind = st.binds.get(ctx, GRAD_DX_SLOTS, &pr, &ranges)?;
            passes.push((pipe.clone(), bind, s.count.div_ceil(WG)));
        }
        Ok((passes, scaled, dxs))
    }

    /// The backward's uniform block for `x[t, b, c]` in token tiles of `tile_len`, bound whole.
    fn grad_params(
        &self,
        (t, b, c): (usize, usize, usize),
        (tiles, tile_len): (usize, usize),
    ) -> PowerGradParams {
        PowerGradParams {
            tokens: (t * b) as u32,
            c: c as u32,
            b: b as u32,
            t: t as u32,
            tiles: tiles as u32,
            tile_len: tile_len as u32,
            eps: self.cfg.eps,
            one_minus_alpha: 1.0 - ALPHA_BKW,
            group_base: 0,
            x_base: 0,
            end: u32::MAX,
            _pad0: 0,
        }
    }

    /// Allocates dx, dweight and dbias, encodes the backward and submits (does not wait).
    pub fn backward(&self, inputs: &PowerNormGradInputs) -> Result<(Tensor, Tensor, Tensor)> {
        let ctx = self.engine.context();
        let c = inputs.x.shape().last().copied().unwrap_or(0);
        let dx = ctx.empty(inputs.x.shape(), self.cfg.dtype)?;
        let dweight = ctx.empty(&[c], DType::F32)?;
        let dbias = ctx.empty(&[c], DType::F32)?;
        let outputs = PowerNormGradOutputs {
            dx: &dx,
            dweight: Some(&dweight),
            dbias: Some(&dbias),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, inputs, &outputs))?;
        Ok((dx, dweight, dbias))
    }

    /// No tokens: dweight and dbias are sums over nothing (zeros), `ema_gz` stays; the finalize
    /// pass alone, over zero tiles.
    fn encode_empty_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &PowerNormGradInputs,
        outputs: &PowerNormGradOutputs,
        c: usize,
    ) -> Result<()> {
        if c == 0 || (outputs.dweight.is_none() && outputs.dbias.is_none()) {
            return Ok(());
        }
        let ctx = self.engine.context();
        let params = PowerGradParams {
            tokens: 0,
            c: c as u32,
            b: 0,
            t: 0,
            tiles: 0,
            tile_len: 1,
            eps: self.cfg.eps,
            one_minus_alpha: 1.0 - ALPHA_BKW,
            group_base: 0,
            x_base: 0,
            end: u32::MAX,
            _pad0: 0,
        };
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw = [0, 1].map(|i| binding::dummy_range(ctx.dummy_write(i)));
        let coef = self
            .grad
            .coef
            .get(ctx, inputs.x.shape(), &[c, 2], DType::F32)?;
        let outs = [
            outputs.dweight.map(|t| r(t, "dweight")).transpose()?,
            outputs.dbias.map(|t| r(t, "dbias")).transpose()?,
        ];
        let bind = self.grad.binds.get(
            ctx,
            GRAD_FINALIZE_SLOTS,
            &params,
            &[
                &r(inputs.saved, "saved")?,
                &dr,
                &dr,
                &dr,
                &r(inputs.ema_gz, "ema_gz")?,
                &r(&coef, "coef")?,
                outs[0].as_ref().unwrap_or(&dw[0]),
                outs[1].as_ref().unwrap_or(&dw[1]),
            ],
        )?;
        let spec = specs(
            Io::F32,
            false,
            false,
            outputs.dweight.is_some(),
            outputs.dbias.is_some(),
        );
        let pipe = ctx.pipeline(&spec[1])?;
        let (gx, gy) = binding::grid(ctx, (c as u64).div_ceil(WG));
        binding::dispatch(
            encoder,
            "wgnorm power_norm backward",
            &pipe,
            &bind,
            (gx, gy, 1),
        );
        Ok(())
    }

    /// Shapes and dtypes of a backward call; `(T, B, C)`.
    fn check_backward(
        &self,
        inputs: &PowerNormGradInputs,
        outputs: &PowerNormGradOutputs,
    ) -> Result<(usize, usize, usize)> {
        let shape = inputs.x.shape();
        if shape.len() != 3 {
            return Err(Error::ShapeMismatch {
                what: "power_norm x [T, B, C]".into(),
                expected: vec![0, 0, 0],
                got: shape.to_vec(),
            });
        }
        let (t, b, c) = (shape[0], shape[1], shape[2]);
        if c % self.cfg.group_num != 0 {
            return Err(Error::InvalidParameter {
                name: "group_num",
                value: self.cfg.group_num.to_string(),
                why: "must divide the channel count",
            });
        }
        for (what, tensor) in [("dy", inputs.dy), ("dx", outputs.dx)] {
            tensor.expect_dtype(what, self.cfg.dtype)?;
            tensor.expect_shape(what, shape)?;
        }
        inputs.x.expect_dtype("x", self.cfg.dtype)?;
        inputs.saved.expect_dtype("saved", DType::F32)?;
        inputs.saved.expect_shape("saved", &[c, 2])?;
        inputs.ema_gz.expect_dtype("ema_gz", DType::F32)?;
        inputs.ema_gz.expect_shape("ema_gz", &[c])?;
        for (what, tensor) in [
            ("weight", inputs.weight),
            ("dweight", outputs.dweight),
            ("dbias", outputs.dbias),
        ] {
            if let Some(tensor) = tensor {
                tensor.expect_dtype(what, DType::F32)?;
                tensor.expect_shape(what, &[c])?;
            }
        }
        if let Some(m) = inputs.pad_mask {
            m.expect_dtype("pad_mask", DType::F32)?;
            m.expect_shape("pad_mask", &[b, t])?;
        }
        let mut named = vec![("x", inputs.x), ("dy", inputs.dy), ("saved", inputs.saved)];
        named.extend(inputs.pad_mask.map(|m| ("pad_mask", m)));
        named.extend(inputs.weight.map(|m| ("weight", m)));
        for (what, out) in [
            ("dx", Some(outputs.dx)),
            ("ema_gz", Some(inputs.ema_gz)),
            ("dweight", outputs.dweight),
            ("dbias", outputs.dbias),
        ] {
            if let Some(out) = out {
                binding::check_output_distinct((what, out), &named)?;
            }
        }
        Ok((t, b, c))
    }
}
