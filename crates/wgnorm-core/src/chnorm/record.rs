//! Recording checked calls: pipelines from the plan (cached per call shape), bind groups
//! (cached per buffers and parameters), and the dispatches. Nothing here rejects user input;
//! what can fail is the device (out of memory, lost, a driver's validation error).

use std::sync::Arc;

use super::check::{self, expect, Checked};
use super::plan::{self, CallShape, Epilogue, ViewFacts};
use super::split::Span;
use super::{ChannelNorm, ChannelNormArgs, ChannelView, RunningUpdate, Statistics};
use crate::binding::{self, BufferRange};
use crate::shader::Io;
use crate::uniform::ChannelParams;
use crate::{DType, Error, Result, Tensor};

/// The bind groups of a call: one moments and apply dispatch per binding window (one each when
/// x fits one binding), with their workgroups or invocations, and one finalize.
struct CallBinds {
    moments: Vec<(wgpu::BindGroup, u64)>,
    finalize: wgpu::BindGroup,
    apply: Vec<(wgpu::BindGroup, u64)>,
}

/// A uniform block placed on one span: its first workgroup or invocation and binding base.
fn on_span(p: ChannelParams, s: &Span) -> ChannelParams {
    ChannelParams {
        group_base: s.first as u32,
        group_end: (s.first + s.count) as u32,
        x_base: s.base as u32,
        ..p
    }
}

/// The compiled pipelines of one call shape.
pub(super) struct Pipelines {
    plan: plan::ChannelPlan,
    moments: Option<wgpu::ComputePipeline>,
    finalize: wgpu::ComputePipeline,
    apply: wgpu::ComputePipeline,
}

/// The uniform block of every channel-norm kernel for a view, its access width and tiling.
fn channel_params(
    v: &ChannelView,
    width: u32,
    tiles: u32,
    tile_len: u32,
    eps: f32,
    update: Option<RunningUpdate>,
) -> ChannelParams {
    let (selu_alpha, selu_lambda) = crate::Activation::None.selu_params();
    ChannelParams {
        p: v.p as u32,
        q: v.q as u32,
        r: v.r as u32,
        s_v: (v.s / width as usize) as u32,
        cg: v.cg as u32,
        sdiv: v.sdiv as u32,
        tiles,
        tile_len,
        eps,
        momentum: update.and_then(|u| u.momentum).unwrap_or(0.0),
        cumulative: update.is_some_and(|u| u.momentum.is_none()) as u32,
        total_v: (v.numel() / width as usize) as u32,
        per_p: (v.q * v.r * v.s) as u32,
        w_src: 0.0,
        mask_b: 0,
        norm_target: 0.0,
        selu_alpha,
        selu_lambda,
        group_base: 0,
        x_base: 0,
        group_end: u32::MAX,
        _pad1: 0,
        shift_cg: 1,
        _pad2: 0,
    }
}

/// The coefficients bound again as `array<vec4<f32>>` need at least one vector; shorter ranges
/// (a single channel) never take the vector path and bind the dummy instead.
fn vec4_view<'a>(r: &'a BufferRange, dummy: &'a BufferRange) -> &'a BufferRange {
    if r.size >= 16 {
        r
    } else {
        dummy
    }
}

/// The running update a call's statistics make, with its momentum.
fn running_update(s: &Statistics) -> Option<RunningUpdate> {
    match *s {
        Statistics::Batch(u) => u,
        Statistics::UpdatedRunning {
            momentum,
            unbiased,
            estimated,
        } => Some(RunningUpdate {
            momentum: Some(momentum),
            unbiased: unbiased && !estimated,
        }),
        _ => None,
    }
}

impl ChannelNorm {
    /// The pipelines of a call shape, planned and compiled on first use.
    fn pipelines(&self, shape: &CallShape, facts: &ViewFacts) -> Result<Arc<Pipelines>> {
        let key = (*shape, *facts);
        if let Some(p) = crate::locked(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        let plan = plan::plan(&self.config, shape, facts, self.ctx.is_cpu());
        let p = Arc::new(Pipelines {
            moments: plan
                .moments
                .as_ref()
                .map(|s| self.ctx.pipeline(s))
                .transpose()?,
            finalize: self.ctx.pipeline(&plan.finalize)?,
            apply: self.ctx.pipeline(&plan.apply)?,
            plan,
        });
        crate::locked(&self.pipelines).insert(key, p.clone());
        Ok(p)
    }

    /// The uniform blocks of a checked call over view `v` (the call's, or a window of its
    /// samples): the statistics passes' and the apply pass's.
    fn call_params(
        &self,
        a: &ChannelNormArgs,
        v: &ChannelView,
        c: &Checked,
        width: u32,
        aio: Io,
    ) -> (ChannelParams, ChannelParams) {
        let update = running_update(&a.statistics);
        let qm_update = match a.statistics {
            Statistics::QuadraticMean { update, .. } => update,
            _ => None,
        };
        let w_src = match a.statistics {
            Statistics::Mixed { w_src } => Some(w_src),
            _ => None,
        };
        // Given moments are one merged partial per slot.
        let tiles = if c.ranges.moments.is_some() {
            1
        } else {
            c.tiles
        };
        let base = channel_params(v, width, tiles, c.tile_len, self.eps, update);
        let params = ChannelParams {
            // The source-statistics weight, or the quadratic mean's warm-up factor.
            w_src: w_src.or(qm_update.map(|u| u.warm)).unwrap_or(0.0),
            momentum: qm_update.map_or(base.momentum, |u| u.momentum),
            mask_b: a.mask.map_or(0, |m| m.shape()[0] as u32),
            norm_target: self.norm_target,
            ..base
        };
        let (selu_alpha, selu_lambda) = self.activation.selu_params();
        let apply_params = ChannelParams {
            total_v: (v.numel() / aio.width() as usize) as u32,
            selu_alpha,
            selu_lambda,
            ..params
        };
        (params, apply_params)
    }

    /// Records the passes into `encoder`: the moments and apply passes once, or once per
    /// binding window when x is larger than one storage binding (see `split`), and one finalize
    /// between them. Everything is checked and every bind group made first; nothing is recorded
    /// on error, and nothing for an empty tensor.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, a: &ChannelNormArgs) -> Result<()> {
        let Some(c) = self.validate(a)? else {
            return Ok(());
        };
        let p = self.pipelines(&c.shape, &c.facts)?;
        let binds = self.call_binds(a, &c, &p)?;
        let ctx = &self.ctx;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm channel_norm"),
            timestamp_writes: None,
        });
        if let Some(mp) = &p.moments {
            for (bg, groups) in &binds.moments {
                record(ctx, &mut pass, mp, bg, *groups);
            }
        }
        let slots = a.view.slots() as u64;
        record(
            ctx,
            &mut pass,
            &p.finalize,
            &binds.finalize,
            slots.div_ceil(plan::FINALIZE_WG as u64),
        );
        for (bg, invocations) in &binds.apply {
            let groups = invocations.div_ceil(plan::APPLY_WG as u64);
            record(ctx, &mut pass, &p.apply, bg, groups);
        }
        Ok(())
    }

    /// The bind groups of a checked call: x and y whole or windowed per span, the engine's
    /// scratch and the statistics tensors whole.
    fn call_binds(&self, a: &ChannelNormArgs, c: &Checked, p: &Pipelines) -> Result<CallBinds> {
        let ctx = &self.ctx;
        let v = a.view;
        let aio = p.plan.aio;
        let scratch = self.scratch(a.view, c.tiles)?;
        let (params, apply_params) = self.call_params(a, &v, c, p.plan.reduced_width, aio);
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let rg = &c.ranges;
        let partials = match &rg.moments {
            Some(g) => g.clone(),
            None => r(&scratch.partials, "partials")?,
        };
        let ss = r(&scratch.scale_shift, "scale_shift")?;
        let stats = match &rg.stats {
            Some(s) => s.clone(),
            None => r(&scratch.stats, "stats")?,
        };
        let batches = r(&self.batches, "batches")?;
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw0 = binding::dummy_range(ctx.dummy_write(0));
        let dw1 = binding::dummy_range(ctx.dummy_write(1));
        let finalize = self.binds.get(
            ctx,
            plan::FINALIZE_SLOTS,
            &params,
            &[
                &partials,
                rg.weight.as_ref().unwrap_or(&dr),
                rg.bias.as_ref().unwrap_or(&dr),
                rg.running_mean.as_ref().unwrap_or(&dw0),
                rg.running_var.as_ref().unwrap_or(&dw1),
                &stats,
                &ss,
                &batches,
            ],
        )?;
        let ab = aio.width() as u64 * self.dtype().size();
        let total = (v.numel() / aio.width() as usize) as u64;
        let apply = c
            .apply_spans
            .iter()
            .map(|s| {
                let (x, y) = (s.bind(&rg.x, total, ab), s.bind(&rg.y, total, ab));
                let pr = ChannelParams {
                    total_v: s.end as u32,
                    ..on_span(apply_params, s)
                };
                let aux = rg.aux.as_ref().unwrap_or(&dr);
                let bind = self.binds.get(
                    ctx,
                    plan::APPLY_SLOTS,
                    &pr,
                    &[&x, &ss, &y, &batches, aux, vec4_view(&ss, &dr)],
                )?;
                Ok((bind, s.count))
            })
            .collect::<Result<Vec<_>>>()?;
        let moments = match &p.moments {
            Some(_) => {
                let ranges = [&rg.x, &partials, rg.mask.as_ref().unwrap_or(&dr)];
                self.moments_binds(c, p, &v, &params, &ranges)?
            }
            None => Vec::new(),
        };
        Ok(CallBinds {
            moments,
            finalize,
            apply,
        })
    }

    /// The moments pass's bind group and workgroups per span of a call over `v` (ranges: x
    /// whole, partials, mask). Grouped calls reduce the per-channel view: its own uniform block
    /// (the group's channels share a shift).
    fn moments_binds(
        &self,
        c: &Checked,
        p: &Pipelines,
        v: &ChannelView,
        params: &ChannelParams,
        ranges: &[&BufferRange; 3],
    ) -> Result<Vec<(wgpu::BindGroup, u64)>> {
        let params = if c.shape.grouped {
            let cv = v.per_channel();
            ChannelParams {
                shift_cg: v.cg as u32,
                ..channel_params(&cv, 1, c.channel_tiles, c.tile_len, self.eps, None)
            }
        } else {
            *params
        };
        let io = p.plan.io;
        let ab = io.width() as u64 * self.dtype().size();
        let total = (v.numel() / io.width() as usize) as u64;
        c.moments_spans
            .iter()
            .map(|s| {
                let x = s.bind(ranges[0], total, ab);
                let bind = self.binds.get(
                    &self.ctx,
                    plan::MOMENTS_SLOTS,
                    &on_span(params, s),
                    &[&x, ranges[1], ranges[2]],
                )?;
                Ok((bind, s.count))
            })
            .collect()
    }

    /// Records the statistics of `x` per slot into `out` (f32 `[slots, 3]`: count, mean, M2),
    /// the first half of a synchronised normalization: reduce on every device, merge (e.g.
    /// [`super::Moments::merge`] after an all-reduce of the downloaded moments), upload the
    /// merged moments and pass them as [`ChannelNormArgs::moments`]. An empty `x` records
    /// nothing.
    pub fn encode_reduce(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        view: ChannelView,
        out: &Tensor,
    ) -> Result<()> {
        self.encode_reduce_masked(encoder, x, view, None, out)
    }

    /// [`ChannelNorm::encode_reduce`] over the unpadded tokens only: with a
    /// [`Reduction::QuadraticMean`](super::Reduction::QuadraticMean) engine, a token view `[1, B*N, C, 1]` of `x[B, N, C]` and an
    /// f32 `mask` of B*N values (1 = padding, token `b*N + n`), the moments hold (count of kept
    /// tokens, 0, sum of squares) per channel.
    pub fn encode_reduce_masked(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        view: ChannelView,
        mask: Option<&Tensor>,
        out: &Tensor,
    ) -> Result<()> {
        self.reduce(encoder, x, view, mask, out, false)
    }

    /// [`ChannelNorm::encode_reduce`] with each slot's shift kept apart (f32 `[2 * slots, 3]`):
    /// per slot (count, mean of `x - shift`, M2), then per slot `(0, shift, 0)`, the shift an
    /// element of the slot. The mean is `shift + mean`, and `(x - shift) - mean` centres exactly
    /// where an f32 mean of values with a large common offset would not (the batch-statistics
    /// backward reads these).
    pub fn encode_reduce_centred(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        view: ChannelView,
        out: &Tensor,
    ) -> Result<()> {
        self.reduce(encoder, x, view, None, out, true)
    }

    fn reduce(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        view: ChannelView,
        mask: Option<&Tensor>,
        out: &Tensor,
        keep_shift: bool,
    ) -> Result<()> {
        let Some(check::ReduceRanges {
            x: xr,
            moments: or,
            mask: mr,
        }) = self.reduce_ranges(x, view, mask, out, keep_shift)?
        else {
            return Ok(());
        };
        let ctx = &self.ctx;
        let facts = ViewFacts::of(&view);
        let align = Io {
            dtype: self.dtype(),
            vec4: true,
        }
        .alignment();
        let plan_lanes = self.lanes_for(&view, true);
        let lanes = plan::channel_lanes(&plan_lanes, &facts, mask.is_some());
        let vec_lanes =
            plan::vec_channel_lanes(self.config.reduction, &facts, mask.is_some(), lanes);
        let io = plan::moments_io(self.dtype(), &facts, xr.offset % align == 0, vec_lanes);
        ctx.check_io(io)?;
        check::check_u32_indexing(&view)?;
        let cpu = ctx.is_cpu();
        let width = plan::reduced_width(io, vec_lanes);
        let (tiles, tile_len, spans) =
            self.moments_windows(&view, (lanes, vec_lanes), width, io, plan_lanes.tile)?;
        let budget = self.budget(&view, io);

        let scratch = self.scratch(view, tiles)?;
        let spec = plan::moments_spec(
            self.config.reduction,
            io,
            cpu,
            &plan_lanes,
            mask.is_some(),
            lanes,
        );
        let moments = ctx.pipeline(&spec)?;
        let shifted = plan::shifted(self.config.reduction, mask.is_some());
        let merge = ctx.pipeline(&plan::merge_spec(shifted, keep_shift))?;
        let partials = binding::storage_range(ctx, "partials", &scratch.partials)?;
        let dr = binding::dummy_range(ctx.dummy_read());
        let params = ChannelParams {
            // Token b*N + n is mask[b*N + n]: the moments kernel's [B, T] indexing, B = 1.
            mask_b: 1,
            ..channel_params(&view, width, tiles, tile_len, self.eps, None)
        };
        let mut binds = Vec::with_capacity(spans.len());
        for s in &spans {
            let xw = s.bind(&xr, budget.total, budget.access_bytes);
            let mb = self.binds.get(
                ctx,
                plan::MOMENTS_SLOTS,
                &on_span(params, s),
                &[&xw, &partials, mr.as_ref().unwrap_or(&dr)],
            )?;
            binds.push((mb, s.count));
        }
        let gb = self
            .binds
            .get(ctx, plan::MERGE_SLOTS, &params, &[&partials, &or])?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm channel_norm reduce"),
            timestamp_writes: None,
        });
        for (mb, groups) in &binds {
            record(ctx, &mut pass, &moments, mb, *groups);
        }
        let slots = (view.slots() as u64).div_ceil(plan::FINALIZE_WG as u64);
        record(ctx, &mut pass, &merge, &gb, slots);
        Ok(())
    }

    /// Every check of [`ChannelNorm::encode_running_from_moments`], recording nothing.
    pub fn check_running_from_moments(
        &self,
        view: ChannelView,
        merged: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
    ) -> Result<()> {
        self.running_ranges(view, merged, running_mean, running_var, momentum)
            .map(|_| ())
    }

    fn running_ranges(
        &self,
        view: ChannelView,
        merged: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
    ) -> Result<Option<[BufferRange; 3]>> {
        expect("moments", merged, view.slots() * 3, DType::F32)?;
        expect("running_mean", running_mean, view.r, DType::F32)?;
        expect("running_var", running_var, view.r, DType::F32)?;
        crate::check_unit_interval("momentum", momentum)?;
        if view.count() < 2 && view.numel() > 0 {
            return Err(Error::InvalidParameter {
                name: "input",
                value: "1 value per instance".into(),
                why: "tracking running statistics needs more than one spatial value per instance",
            });
        }
        if view.numel() == 0 {
            return Ok(None);
        }
        let ctx = &self.ctx;
        let r = |what: &str, t: &Tensor| binding::storage_range(ctx, what, t);
        let (mr, rm, rv) = (
            r("moments", merged)?,
            r("running_mean", running_mean)?,
            r("running_var", running_var)?,
        );
        binding::check_no_alias(&[
            ("moments", Some(&mr), false),
            ("running_mean", Some(&rm), true),
            ("running_var", Some(&rv), true),
        ])?;
        Ok(Some([mr, rm, rv]))
    }

    /// Running statistics (f32 `[C]`, `r = (1 - momentum) r + momentum s`, unbiased variance)
    /// from merged per-(p, channel) moments written by [`ChannelNorm::encode_reduce`]:
    /// `sequential = false` averages the P statistics first and updates once (InstanceNorm
    /// `track_running_stats`); `sequential = true` updates once per p, in order (per-chunk
    /// statistics).
    #[allow(clippy::too_many_arguments)] // one per tensor and setting; all are needed
    pub fn encode_running_from_moments(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        view: ChannelView,
        merged: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
        sequential: bool,
    ) -> Result<()> {
        let Some([mr, rm, rv]) =
            self.running_ranges(view, merged, running_mean, running_var, momentum)?
        else {
            return Ok(());
        };
        let ctx = &self.ctx;
        let pipeline = ctx.pipeline(&plan::running_spec(sequential))?;
        let update = RunningUpdate {
            momentum: Some(momentum),
            unbiased: true,
        };
        let params = channel_params(&view, 1, 1, 1, self.eps, Some(update));
        let bind = self
            .binds
            .get(ctx, plan::RUNNING_SLOTS, &params, &[&mr, &rm, &rv])?;
        let (gx, gy) = binding::grid(ctx, (view.r as u64).div_ceil(plan::FINALIZE_WG as u64));
        binding::dispatch(
            encoder,
            "wgnorm running statistics from moments",
            &pipeline,
            &bind,
            (gx, gy, 1),
        );
        Ok(())
    }

    /// Records only the apply pass, with coefficients computed elsewhere (f32, per sample p of
    /// `view`: `epilogue.coef_arrays` arrays of C, `[mean][scale][shift]` for
    /// [`Epilogue::AFFINE`]). For engines built on this one; `coef` must not alias x or y.
    pub fn encode_apply(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        y: &Tensor,
        view: ChannelView,
        coef: &Tensor,
        epilogue: Epilogue,
    ) -> Result<()> {
        expect("x", x, view.numel(), self.dtype())?;
        expect("y", y, view.numel(), self.dtype())?;
        if epilogue.input != super::EpilogueInput::None {
            return Err(Error::InvalidParameter {
                name: "epilogue",
                value: epilogue.kernel.name().into(),
                why: "an apply pass with given coefficients binds no per-call epilogue input",
            });
        }
        let ncoef = epilogue.coef_arrays as usize;
        expect(
            "coefficients",
            coef,
            view.p * ncoef * view.channels(),
            DType::F32,
        )?;
        if view.numel() == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let (xr, yr, cr) = (r(x, "x")?, r(y, "y")?, r(coef, "coefficients")?);
        binding::check_no_alias(&[
            ("x", Some(&xr), false),
            ("coefficients", Some(&cr), false),
            ("y", Some(&yr), true),
        ])?;
        let align = Io {
            dtype: self.dtype(),
            vec4: true,
        }
        .alignment();
        let aligned = xr.offset % align == 0 && yr.offset % align == 0;
        let (aio, ch_vec, straddle) = plan::apply_io(self.dtype(), &ViewFacts::of(&view), aligned);
        ctx.check_io(aio)?;
        check::check_u32_indexing(&view)?;
        let total_v = (view.numel() / aio.width() as usize) as u32;
        let (selu_alpha, selu_lambda) = self.activation.selu_params();
        let params = ChannelParams {
            total_v,
            selu_alpha,
            selu_lambda,
            ..channel_params(&view, aio.width(), 1, 1, self.eps, None)
        };
        let block = plan::apply_block(&self.lanes_for(&view, false), ctx.is_cpu());
        let apply = ctx.pipeline(&plan::apply_spec(
            aio,
            block,
            self.config.activation,
            false,
            (ch_vec, straddle),
            epilogue,
        ))?;
        let batches = r(&self.batches, "batches")?;
        let dr = binding::dummy_range(ctx.dummy_read());
        let bind = self.binds.get(
            ctx,
            plan::APPLY_SLOTS,
            &params,
            &[&xr, &cr, &yr, &batches, &dr, vec4_view(&cr, &dr)],
        )?;
        let invocations = plan::apply_invocations(total_v, block, ch_vec, view.channels());
        let (gx, gy) = binding::grid(ctx, invocations.div_ceil(plan::APPLY_WG as u64));
        binding::dispatch(
            encoder,
            "wgnorm channel_norm apply",
            &apply,
            &bind,
            (gx, gy, 1),
        );
        Ok(())
    }
}

/// Records one dispatch of `groups` workgroups (over a 2D grid when they exceed one dimension).
fn record(
    ctx: &crate::Context,
    pass: &mut wgpu::ComputePass,
    pipeline: &wgpu::ComputePipeline,
    bind: &wgpu::BindGroup,
    groups: u64,
) {
    let (gx, gy) = binding::grid(ctx, groups);
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind, &[]);
    pass.dispatch_workgroups(gx, gy, 1);
}
