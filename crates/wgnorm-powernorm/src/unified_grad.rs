//! Unified Normalization's backward (docs/methods.md B3): the official code's gradient
//! compensation, an approximation with its own state (`buffer_gz` `[M, C]` and `ema_gz` `[C]`,
//! zeros at the start of training, updated in place), not the gradient through the window's
//! geometric mean. Passes: PowerNorm's per-(token tile, channel) sums, the per-channel
//! finalize (`shaders/power_norm/unified_grad_finalize.wgsl`: the state update and the dx
//! coefficients), PowerNorm's elementwise dx. The forward saves what the backward needs
//! ([`UnifiedNorm::encode_train_saving`]).

use wgnorm_core::binding::{self, BindCache};
use wgnorm_core::context::Slot;
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{DType, Error, Result, Tensor};

use crate::grad::{
    PowerGradParams, GRAD_DX_KERNEL, GRAD_DX_SLOTS, GRAD_PARTIALS_KERNEL, GRAD_PARTIALS_SLOTS,
};
use crate::{UnifiedNorm, UnifiedNormInputs};

wgnorm_core::uniform_block! {
    /// `UnifiedGradParams` (`power_norm/unified_grad_finalize.wgsl`).
    pub struct UnifiedGradParams {
        pub c: u32,
        pub tiles: u32,
        pub tokens: u32,
        /// The step t (>= 1) and the window M.
        pub step: u32,
        pub window: u32,
        pub warmup: u32,
        /// Weight of the new value in `ema_gz`'s update.
        pub momentum: f32,
        pub _pad0: u32,
    }
}

/// finalize: uniform, saved, buffer_gz, weight, partials, ema_gz, coef, dweight, dbias.
const FINALIZE_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::ReadWrite,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
];

/// The per-channel state update and dx coefficients.
pub const UNIFIED_GRAD_FINALIZE_KERNEL: Kernel = Kernel::new(
    "power_norm/unified_grad_finalize",
    &[wgnorm_core::shader_file!(
        "power_norm/unified_grad_finalize.wgsl"
    )],
    FINALIZE_SLOTS,
);

const WG: u64 = 64;
const TILE: usize = 256;

fn specs(io: Io, dweight: bool, dbias: bool) -> [Specialization; 3] {
    [
        Specialization::new(GRAD_PARTIALS_KERNEL, io)
            .flag("HAS_MASK", false)
            .flag("HAS_WEIGHT", true),
        Specialization::new(UNIFIED_GRAD_FINALIZE_KERNEL, Io::F32)
            .flag("HAS_DWEIGHT", dweight)
            .flag("HAS_DBIAS", dbias),
        Specialization::new(GRAD_DX_KERNEL, io),
    ]
}

/// The backward's pipelines, for `cargo xtask validate`.
pub(crate) fn grad_specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for bits in 0..4 {
            out.extend(specs(
                Io { dtype, vec4: false },
                bits & 1 != 0,
                bits & 2 != 0,
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.key()));
    out
}

/// Inputs of the backward of training step `step`: the forward's `x` and `weight`, the
/// upstream gradient `dy` (x's shape and dtype), the forward's `saved` (f32 `[C, 2]`, from
/// [`UnifiedNorm::encode_train_saving`]) and the backward's state `ema_gz` (f32 `[C]`) and
/// `buffer_gz` (f32 `[M, C]`), zeros at the start of training, updated in place.
#[derive(Clone, Copy, Debug)]
pub struct UnifiedNormGradInputs<'a> {
    /// The forward's input `[B, N, C]`.
    pub x: &'a Tensor,
    /// The forward's weight (f32 `[C]`).
    pub weight: &'a Tensor,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
    /// The forward's saved `(r, 1 / sqrt(sigma^2 + eps))` per channel (r = -1: an outlier step).
    pub saved: &'a Tensor,
    /// The running mean of the statistic's gradient, updated.
    pub ema_gz: &'a Tensor,
    /// The window of the statistic's gradients, updated.
    pub buffer_gz: &'a Tensor,
}

/// Outputs of the backward: `dx` like x; `dweight`, `dbias` f32 `[C]` when wanted (PowerNorm's).
pub type UnifiedNormGradOutputs<'a> = crate::PowerNormGradOutputs<'a>;

/// The backward's caches, owned by the op.
#[derive(Default)]
pub(crate) struct GradCaches {
    binds: BindCache,
    partials: ScratchCache,
    coef: ScratchCache,
}

impl UnifiedNorm {
    /// [`UnifiedNorm::encode_train`], also writing what the backward of this step needs into
    /// `saved` (f32 `[C, 2]`): the gradient compensation ratio `r` and `1 / sqrt(sigma^2 + eps)`.
    pub fn encode_train_saving(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &UnifiedNormInputs,
        y: &Tensor,
        step: u64,
        saved: &Tensor,
    ) -> Result<()> {
        self.encode_train_with(encoder, inputs, y, step, Some(saved))
    }

    /// Records the official code's approximate backward of training step `step` (the same
    /// step the forward was called with, window `M` and warm-up of [`UnifiedNorm::with_training`];
    /// one window for the forward's statistics and the backward's): with `z` the normalized x
    /// and `g = dy·w·r`, `gz = mean(g·z)` over all tokens enters `buffer_gz[t mod M]`,
    /// `mean_gz` is `gz` (while `t <= M`, `t < warmup` or an outlier step) or the window's mean,
    /// `ema_gz ← (1 − momentum)·ema_gz + momentum·mean_gz`, and
    /// `dx = (g − K·z) / sqrt(sigma^2 + eps)` with `K = ema_gz` (`mean_gz` for an outlier step);
    /// `dweight = Σ dy·r·z`, `dbias = Σ dy`. Padding tokens are not told apart (as the official
    /// code). Checked first; nothing recorded on error.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &UnifiedNormGradInputs,
        outputs: &UnifiedNormGradOutputs,
        step: u64,
    ) -> Result<()> {
        let (tokens, c) = self.check_backward(inputs, outputs, step)?;
        if c == 0 {
            return Ok(());
        }
        let ctx = self.mix.context();
        let dtype = self.mix.dtype();
        let io = Io { dtype, vec4: false };
        ctx.check_io(io)?;
        let g = &self.grad;
        let shape = inputs.x.shape();
        let tiles = tokens.div_ceil(TILE);
        let partials = g
            .partials
            .get(ctx, shape, &[tiles.max(1) * c, 8], DType::F32)?;
        let coef = g.coef.get(ctx, shape, &[c, 2], DType::F32)?;
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let dw = [0, 1].map(|i| binding::dummy_range(ctx.dummy_write(i)));
        let opt =
            |t: Option<&Tensor>, what, d| t.map(|t| r(t, what)).transpose().map(|o| o.unwrap_or(d));
        let (x, dy, dx) = (r(inputs.x, "x")?, r(inputs.dy, "dy")?, r(outputs.dx, "dx")?);
        let (saved, w) = (r(inputs.saved, "saved")?, r(inputs.weight, "weight")?);
        let (ema, buf) = (
            r(inputs.ema_gz, "ema_gz")?,
            r(inputs.buffer_gz, "buffer_gz")?,
        );
        let (part, cf) = (r(&partials, "partials")?, r(&coef, "coef")?);
        let dwr = opt(outputs.dweight, "dweight", dw[0].clone())?;
        let dbr = opt(outputs.dbias, "dbias", dw[1].clone())?;
        let (pp, fp) = self.grad_params(tokens, c, step);
        let dr = binding::dummy_range(ctx.dummy_read());
        let binds = [
            g.binds.get(
                ctx,
                GRAD_PARTIALS_SLOTS,
                &pp,
                &[&x, &dy, &dr, &saved, &w, &part],
            )?,
            g.binds.get(
                ctx,
                FINALIZE_SLOTS,
                &fp,
                &[&saved, &buf, &w, &part, &ema, &cf, &dwr, &dbr],
            )?,
            g.binds.get(ctx, GRAD_DX_SLOTS, &pp, &[&x, &dy, &cf, &dx])?,
        ];
        let chunks = (c as u64).div_ceil(WG);
        let groups = [
            tiles as u64 * chunks,
            chunks,
            ((tokens * c) as u64).div_ceil(WG),
        ];
        let specs = specs(io, outputs.dweight.is_some(), outputs.dbias.is_some());
        let pipes = specs
            .iter()
            .map(|s| ctx.pipeline(s))
            .collect::<Result<Vec<_>>>()?;
        // (no tokens: the finalize pass alone, writing zero parameter gradients)
        for ((pipe, bind), n) in pipes.iter().zip(&binds).zip(groups) {
            if n > 0 {
                let (gx, gy) = binding::grid(ctx, n);
                let label = "wgnorm unified_norm backward";
                binding::dispatch(encoder, label, pipe, bind, (gx, gy, 1));
            }
        }
        Ok(())
    }

    /// The partials and dx passes' block (PowerNorm's, no mask) and the finalize's, for
    /// `tokens` x `c` in tiles of [`TILE`] tokens at step `step`.
    fn grad_params(
        &self,
        tokens: usize,
        c: usize,
        step: u64,
    ) -> (PowerGradParams, UnifiedGradParams) {
        let tiles = tokens.div_ceil(TILE) as u32;
        let t = self.train;
        let pp = PowerGradParams {
            tokens: tokens as u32,
            c: c as u32,
            b: 1,
            t: tokens as u32,
            tiles,
            tile_len: TILE as u32,
            eps: self.eps,
            one_minus_alpha: 0.0,
            group_base: 0,
            x_base: 0,
            end: u32::MAX,
            _pad0: 0,
        };
        let fp = UnifiedGradParams {
            c: c as u32,
            tiles,
            tokens: tokens as u32,
            step: step as u32,
            window: t.window as u32,
            warmup: t.warmup.min(u32::MAX as u64) as u32,
            momentum: t.momentum,
            _pad0: 0,
        };
        (pp, fp)
    }

    /// Allocates dx, dweight and dbias, encodes the backward and submits (does not wait).
    pub fn backward(
        &self,
        inputs: &UnifiedNormGradInputs,
        step: u64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let ctx = self.mix.context();
        let c = inputs.x.shape().last().copied().unwrap_or(0);
        let dx = ctx.empty(inputs.x.shape(), self.mix.dtype())?;
        let (dweight, dbias) = (ctx.empty(&[c], DType::F32)?, ctx.empty(&[c], DType::F32)?);
        let outputs = UnifiedNormGradOutputs {
            dx: &dx,
            dweight: Some(&dweight),
            dbias: Some(&dbias),
        };
        ctx.record_and_submit(|enc| self.encode_backward(enc, inputs, &outputs, step))?;
        Ok((dx, dweight, dbias))
    }

    /// Shapes, dtypes and aliasing of a backward call; `(tokens, C)`.
    fn check_backward(
        &self,
        inputs: &UnifiedNormGradInputs,
        outputs: &UnifiedNormGradOutputs,
        step: u64,
    ) -> Result<(usize, usize)> {
        let shape = inputs.x.shape();
        if shape.len() != 3 {
            return Err(Error::ShapeMismatch {
                what: "unified_norm x [B, N, C]".into(),
                expected: vec![0, 0, 0],
                got: shape.to_vec(),
            });
        }
        let (tokens, c) = (shape[0] * shape[1], shape[2]);
        let m = self.train.window;
        if step == 0 || step > u32::MAX as u64 || m == 0 {
            return Err(Error::InvalidParameter {
                name: "step",
                value: step.to_string(),
                why: "steps count from 1 (the forward's step) and fit 32 bits",
            });
        }
        let dtype = self.mix.dtype();
        for (what, t) in [("x", inputs.x), ("dy", inputs.dy), ("dx", outputs.dx)] {
            t.expect_dtype(what, dtype)?;
            t.expect_shape(what, shape)?;
        }
        let f32s = [
            ("weight", Some(inputs.weight), vec![c]),
            ("saved", Some(inputs.saved), vec![c, 2]),
            ("ema_gz", Some(inputs.ema_gz), vec![c]),
            ("buffer_gz", Some(inputs.buffer_gz), vec![m, c]),
            ("dweight", outputs.dweight, vec![c]),
            ("dbias", outputs.dbias, vec![c]),
        ];
        for (what, t, want) in &f32s {
            if let Some(t) = t {
                t.expect_dtype(what, DType::F32)?;
                t.expect_shape(what, want)?;
            }
        }
        let named = [
            ("x", inputs.x),
            ("dy", inputs.dy),
            ("weight", inputs.weight),
            ("saved", inputs.saved),
        ];
        let outs = [
            ("dx", Some(outputs.dx)),
            ("ema_gz", Some(inputs.ema_gz)),
            ("buffer_gz", Some(inputs.buffer_gz)),
            ("dweight", outputs.dweight),
            ("dbias", outputs.dbias),
        ];
        for (what, out) in outs {
            if let Some(out) = out {
                binding::check_output_distinct((what, out), &named)?;
            }
        }
        for (i, (a, ta)) in outs.iter().enumerate() {
            for (b, tb) in &outs[i + 1..] {
                if let (Some(ta), Some(tb)) = (ta, tb) {
                    binding::check_output_distinct((a, ta), &[(b, tb)])?;
                }
            }
        }
        Ok((tokens, c))
    }
}
