//! Every check of a channel-engine call, before anything is recorded: shapes, dtypes, what each
//! kind of statistics needs, buffer bindings and aliasing, and the per-lane loop budget of CPU
//! adapters. The result is a [`Checked`] call that recording cannot reject.

use super::plan::{self, CallShape, EpilogueInput, StatKind, ViewFacts};
use super::split::{apply_spans, Budget, MomentsGroups, Span};
use super::{ChannelNorm, ChannelNormArgs, ChannelView, LanePlan, Reduction, Statistics};
use crate::binding::{self, BufferRange};
use crate::shader::Io;
use crate::{DType, Error, Result, Tensor};

/// The bound ranges of a call's tensors.
pub(super) struct Ranges {
    pub x: BufferRange,
    pub y: BufferRange,
    pub weight: Option<BufferRange>,
    pub bias: Option<BufferRange>,
    pub running_mean: Option<BufferRange>,
    pub running_var: Option<BufferRange>,
    pub stats: Option<BufferRange>,
    pub moments: Option<BufferRange>,
    pub aux: Option<BufferRange>,
    pub mask: Option<BufferRange>,
}

/// The bound ranges of a checked reduce call.
pub(super) struct ReduceRanges {
    pub x: BufferRange,
    pub moments: BufferRange,
    pub mask: Option<BufferRange>,
}

/// A call that passed every check: its ranges, its shape for planning, and the moments pass's
/// tiling.
pub(super) struct Checked {
    pub ranges: Ranges,
    pub shape: CallShape,
    pub facts: ViewFacts,
    /// Tiles per slot in the partials (every window's), and accesses per tile. Grouped calls
    /// (`shape.grouped`): tiles per group slot (its channels' tiles), and accesses per tile of
    /// a channel.
    pub tiles: u32,
    pub tile_len: u32,
    /// Grouped calls: the moments pass's tiles per channel.
    pub channel_tiles: u32,
    /// The moments pass's dispatches (none when the statistics are not computed here) and the
    /// apply pass's: one each when x fits one binding, else one per binding window.
    pub moments_spans: Vec<Span>,
    pub apply_spans: Vec<Span>,
}

/// `t` has `numel` elements of `dtype`.
pub(crate) fn expect(what: &str, t: &Tensor, numel: usize, dtype: DType) -> Result<()> {
    if t.numel() != numel {
        return Err(Error::ShapeMismatch {
            what: what.into(),
            expected: vec![numel],
            got: t.shape().to_vec(),
        });
    }
    if t.dtype() != dtype {
        return Err(Error::DTypeMismatch {
            what: what.into(),
            expected: dtype,
            got: t.dtype(),
        });
    }
    Ok(())
}

fn missing_running(what: &str) -> Error {
    Error::InvalidParameter {
        name: "running statistics",
        value: format!("{what} missing"),
        why: "running statistics are read (inference) or updated (training): pass running_mean and running_var",
    }
}

impl ChannelNorm {
    /// Checks a call without recording anything (what [`ChannelNorm::encode`] checks first), so a
    /// caller recording several passes can fail before the first.
    pub fn check_args(&self, a: &ChannelNormArgs) -> Result<()> {
        self.validate(a).map(|_| ())
    }

    /// Every check of a call; the checked call, or `None` for an empty tensor.
    pub(super) fn validate(&self, a: &ChannelNormArgs) -> Result<Option<Checked>> {
        let v = a.view;
        self.check_tensors(a)?;
        self.check_statistics(a)?;
        self.check_extras(a)?;
        if v.numel() == 0 {
            return Ok(None);
        }
        let ranges = self.bind_ranges(a)?;
        let align = Io {
            dtype: self.dtype(),
            vec4: true,
        }
        .alignment();
        let aligned = ranges.x.offset % align == 0 && ranges.y.offset % align == 0;
        let shape = CallShape {
            stats: StatKind::of(&a.statistics),
            has_weight: a.weight.is_some(),
            has_bias: a.bias.is_some(),
            epilogue: a.epilogue,
            mask: a.mask.is_some(),
            given_moments: a.moments.is_some(),
            aligned,
            lanes: LanePlan::default(),
            grouped: false,
        };
        let moments = shape.stats != StatKind::Running && !shape.given_moments;
        let shape = CallShape {
            lanes: self.lanes_for(&v, moments),
            ..shape
        };
        let facts = ViewFacts::of(&v);
        let lanes = plan::channel_lanes(&shape.lanes, &facts, shape.mask);
        let vec_lanes = plan::vec_channel_lanes(self.config.reduction, &facts, shape.mask, lanes);
        let io = plan::moments_io(self.dtype(), &facts, aligned, vec_lanes);
        let (aio, _, _) = plan::apply_io(self.dtype(), &facts, aligned);
        self.ctx.check_io(io)?;
        self.ctx.check_io(aio)?;
        check_u32_indexing(&v)?;
        let cpu = self.ctx.is_cpu();
        let width = plan::reduced_width(io, vec_lanes);
        let grouped = self.reduce_per_channel(&v, &shape, &facts);
        let tile = shape.lanes.tile;
        let (tiles, tile_len, channel_tiles, moments_spans) = if grouped {
            // Each channel's tiles, then a group's channels' tiles merged by the finalize.
            let io = Io {
                dtype: self.dtype(),
                vec4: true,
            };
            let cv = v.per_channel();
            let (ct, ct_len, spans) = self.moments_windows(&cv, (true, true), 1, io, tile)?;
            (ct * v.cg as u32, ct_len, ct, spans)
        } else {
            let lanes = (lanes, vec_lanes);
            let (tiles, tile_len, spans) = self.moments_windows(&v, lanes, width, io, tile)?;
            (tiles, tile_len, tiles, spans)
        };
        let moments_spans = if moments { moments_spans } else { Vec::new() };
        let (_, ch_vec, _) = plan::apply_io(self.dtype(), &facts, aligned);
        let block = plan::apply_block(&shape.lanes, cpu) as u64;
        let cv = (v.channels() / 4).max(1) as u64;
        let budget = self.budget(&v, aio);
        let apply_spans = if ch_vec {
            apply_spans(budget, block * cv, cv)?
        } else {
            apply_spans(budget, block, 1)?
        };
        Ok(Some(Checked {
            ranges,
            shape: CallShape { grouped, ..shape },
            facts,
            tiles,
            tile_len,
            channel_tiles,
            moments_spans,
            apply_spans,
        }))
    }

    /// x of a view read with accesses of `io` under the device's binding limits.
    pub(super) fn budget(&self, v: &ChannelView, io: Io) -> Budget {
        let total = (v.numel() / io.width() as usize) as u64;
        Budget::of(&self.ctx, total, io.width() as u64 * self.dtype().size())
    }

    /// The moments pass's tiling of `v` (tiles per slot, accesses per tile; `tile`: a lane
    /// plan's) and its dispatches, one per binding window of x (lanes: per channel, four
    /// channels per access). The tiling is the adapter's whatever the windows, so windows
    /// reduce the same tiles as one dispatch would; only where one tile's reads (a tile of every
    /// slot of a sample, for Q > 1) do not fit one binding are the tiles shortened.
    pub(super) fn moments_windows(
        &self,
        v: &ChannelView,
        lanes: (bool, bool),
        width: u32,
        io: Io,
        mut tile: Option<u32>,
    ) -> Result<(u32, u32, Vec<Span>)> {
        let cpu = self.ctx.is_cpu();
        let budget = self.budget(v, io);
        loop {
            let (tiles, tile_len) = super::tiling(v, width, cpu, lanes.0, tile);
            self.check_loop_budget(v, tiles, tile_len)?;
            let wg = plan::moments_wg(cpu);
            let groups = MomentsGroups::of(*v, lanes, width, (tiles, tile_len), wg);
            match groups.spans(budget) {
                Err(Error::TooLargeForBinding { .. })
                    if tile_len / 2 >= super::MIN_TILE
                        && super::tiling(v, width, cpu, lanes.0, Some(tile_len / 2)).1
                            < tile_len =>
                {
                    tile = Some(tile_len / 2);
                }
                r => return r.map(|s| (tiles, tile_len, s)),
            }
        }
    }

    /// Whether a call's groups are reduced per channel: channels-last groups of several channels
    /// (GroupNorm NHWC), whose group slots are runs of `cg` scalars with a stride of C, while the
    /// per-channel view reads whole token rows with vector accesses (four channels each), as
    /// channels-last BatchNorm does. Batch mean and variance (computed here, without a mask),
    /// C a multiple of 4, x and y aligned, channel lanes not forced off.
    fn reduce_per_channel(&self, v: &ChannelView, shape: &CallShape, facts: &ViewFacts) -> bool {
        v.cg > 1
            && v.sdiv == 1
            && v.s == v.cg
            && facts.ch_vec
            && shape.aligned
            && !shape.mask
            && !shape.given_moments
            && matches!(shape.stats, StatKind::Batch { .. })
            && self.config.reduction == Reduction::MeanVariance
            && shape.lanes.channel_lanes != Some(false)
    }

    /// The view and the shapes and dtypes of x, y, weight and bias.
    fn check_tensors(&self, a: &ChannelNormArgs) -> Result<()> {
        let v = a.view;
        // An empty tensor (a 0-sized dim, C = 0 included) is a no-op whatever its view.
        let inconsistent = v.cg == 0 || v.sdiv == 0 || (v.s != 0 && v.s != v.cg * v.sdiv);
        if inconsistent && v.numel() > 0 {
            return Err(Error::InvalidParameter {
                name: "view",
                value: format!("{v:?}"),
                why: "inconsistent channel view",
            });
        }
        expect("x", a.x, v.numel(), self.dtype())?;
        if a.y.shape() != a.x.shape() {
            return Err(Error::ShapeMismatch {
                what: "y".into(),
                expected: a.x.shape().to_vec(),
                got: a.y.shape().to_vec(),
            });
        }
        expect("y", a.y, v.numel(), self.dtype())?;
        let affine_len = if self.config.affine_per_slot {
            v.r
        } else {
            v.channels()
        };
        for (what, t) in [("weight", a.weight), ("bias", a.bias)] {
            if let Some(t) = t {
                expect(what, t, affine_len, DType::F32)?;
            }
        }
        Ok(())
    }

    /// What each kind of statistics needs: running statistics, parameters in range, enough
    /// values per slot.
    fn check_statistics(&self, a: &ChannelNormArgs) -> Result<()> {
        let v = a.view;
        let qm_engine = self.config.reduction == Reduction::QuadraticMean;
        let needs_running = match a.statistics {
            Statistics::Running => true,
            Statistics::Batch(u) => u.is_some(),
            Statistics::UpdatedRunning { momentum, .. } => {
                crate::check_unit_interval("momentum", momentum)?;
                true
            }
            Statistics::QuadraticMean {
                use_running,
                update,
            } => {
                if !qm_engine {
                    return Err(Error::InvalidParameter {
                        name: "statistics",
                        value: "QuadraticMean".into(),
                        why: "needs an engine created with Reduction::QuadraticMean",
                    });
                }
                if (use_running || update.is_some()) && a.running_var.is_none() {
                    return Err(Error::InvalidParameter {
                        name: "running statistics",
                        value: "running_var missing".into(),
                        why: "the running quadratic mean lives in running_var: pass it",
                    });
                }
                false
            }
            Statistics::Mixed { w_src } => {
                crate::check_unit_interval("w_src", w_src)?;
                if v.count() < 2 && v.numel() > 0 {
                    return Err(Error::InvalidParameter {
                        name: "batch",
                        value: "1 value per channel".into(),
                        why:
                            "the unbiased test-batch variance needs more than one value per channel",
                    });
                }
                true
            }
        };
        // A quadratic mean has no running mean: only its running_var is read.
        match (a.running_mean, a.running_var) {
            (None, _) if needs_running && !qm_engine => {
                return Err(missing_running("running_mean"))
            }
            (_, None) if needs_running => return Err(missing_running("running_var")),
            _ => {}
        }
        for (what, t) in [
            ("running_mean", a.running_mean),
            ("running_var", a.running_var),
        ] {
            if let Some(t) = t {
                expect(what, t, v.r, DType::F32)?;
            }
        }
        self.check_update(a)
    }

    /// The running update's momentum, and enough values for an unbiased variance.
    fn check_update(&self, a: &ChannelNormArgs) -> Result<()> {
        let v = a.view;
        let update = match a.statistics {
            Statistics::Batch(u) => u,
            Statistics::UpdatedRunning {
                momentum,
                unbiased,
                estimated,
            } => Some(super::RunningUpdate {
                momentum: Some(momentum),
                unbiased: unbiased && !estimated,
            }),
            _ => None,
        };
        if let Some(u) = update {
            if let Some(m) = u.momentum {
                crate::check_unit_interval("momentum", m)?;
            }
            if u.unbiased && v.count() == 1 && v.numel() > 0 {
                return Err(Error::InvalidParameter {
                    name: "batch",
                    value: "1 value per channel".into(),
                    why: "training needs more than one value per channel to estimate the unbiased variance (as in PyTorch)",
                });
            }
        }
        Ok(())
    }

    /// The epilogue's input, saved statistics, token mask and given moments.
    fn check_extras(&self, a: &ChannelNormArgs) -> Result<()> {
        let v = a.view;
        if a.epilogue.coef_arrays != 3 {
            return Err(Error::InvalidParameter {
                name: "epilogue",
                value: a.epilogue.kernel.name().into(),
                why: "its coefficient arrays come from a mixing pass, not from batch statistics",
            });
        }
        match (a.epilogue.input, a.aux) {
            (EpilogueInput::None, None) => {}
            (EpilogueInput::Scalar, Some(t)) => expect("epilogue input", t, 1, DType::F32)?,
            (EpilogueInput::PerChannel, Some(t)) => {
                expect("epilogue input", t, v.channels(), DType::F32)?
            }
            (input, aux) => {
                return Err(Error::InvalidParameter {
                    name: "aux",
                    value: format!("{:?} for {input:?}", aux.map(|t| t.shape().to_vec())),
                    why: "pass the epilogue's input (one f32, or one per channel) exactly when it has one",
                })
            }
        }
        if let Some(s) = a.stats {
            expect("stats", s, v.slots() * 2, DType::F32)?;
        }
        if let Some(m) = a.mask {
            let ok = self.config.reduction == Reduction::QuadraticMean
                && v.p == 1
                && v.s == 1
                && m.shape().len() == 2
                && m.numel() == v.q
                && m.shape()[0] > 0;
            if !ok {
                return Err(Error::InvalidParameter {
                    name: "mask",
                    value: format!("{:?}", m.shape()),
                    why: "a padding mask is [B, T] for a token tensor [T, B, C] with a quadratic mean",
                });
            }
            expect("mask", m, v.q, DType::F32)?;
        }
        if let Some(m) = a.moments {
            expect("moments", m, v.slots() * 3, DType::F32)?;
            if !matches!(a.statistics, Statistics::Batch(_)) {
                return Err(Error::InvalidParameter {
                    name: "moments",
                    value: "with running or mixed statistics".into(),
                    why: "merged moments replace batch statistics: use Statistics::Batch",
                });
            }
        }
        Ok(())
    }

    /// Storage ranges of every tensor, and no output sharing a buffer with another binding.
    fn bind_ranges(&self, a: &ChannelNormArgs) -> Result<Ranges> {
        let ctx = &self.ctx;
        let opt =
            |what, t: Option<&Tensor>| t.map(|t| binding::storage_range(ctx, what, t)).transpose();
        // x and y may be bound in windows (see `split`).
        let whole = |what, t| binding::storage_range_unbounded(ctx, what, t);
        let r = Ranges {
            x: whole("x", a.x)?,
            y: whole("y", a.y)?,
            weight: opt("weight", a.weight)?,
            bias: opt("bias", a.bias)?,
            running_mean: opt("running_mean", a.running_mean)?,
            running_var: opt("running_var", a.running_var)?,
            stats: opt("stats", a.stats)?,
            moments: opt("moments", a.moments)?,
            mask: opt("mask", a.mask)?,
            aux: opt("aux", a.aux)?,
        };
        binding::check_no_alias(&[
            ("aux", r.aux.as_ref(), false),
            ("mask", r.mask.as_ref(), false),
            ("x", Some(&r.x), false),
            ("weight", r.weight.as_ref(), false),
            ("bias", r.bias.as_ref(), false),
            ("y", Some(&r.y), true),
            ("running_mean", r.running_mean.as_ref(), true),
            ("running_var", r.running_var.as_ref(), true),
            ("stats", r.stats.as_ref(), true),
            ("moments", r.moments.as_ref(), false),
        ])?;
        Ok(r)
    }

    /// The checks of [`ChannelNorm::encode_reduce_masked`] and its bound ranges (x, moments,
    /// mask); `None` for an empty tensor. `keep_shift`: the moments hold the shifts too.
    pub(super) fn reduce_ranges(
        &self,
        x: &Tensor,
        view: ChannelView,
        mask: Option<&Tensor>,
        out: &Tensor,
        keep_shift: bool,
    ) -> Result<Option<ReduceRanges>> {
        expect("x", x, view.numel(), self.dtype())?;
        let per_slot = if keep_shift { 6 } else { 3 };
        expect("moments", out, view.slots() * per_slot, DType::F32)?;
        if let Some(m) = mask {
            expect("mask", m, view.q, DType::F32)?;
            let qm = self.config.reduction == Reduction::QuadraticMean;
            if !qm || view.p != 1 || view.s != 1 {
                return Err(Error::InvalidParameter {
                    name: "mask",
                    value: format!("{view:?}"),
                    why: "a token mask needs a quadratic-mean engine and a token view [1, tokens, C, 1]",
                });
            }
        }
        if view.numel() == 0 {
            return Ok(None);
        }
        let ctx = &self.ctx;
        // x may be bound in windows past the binding limit (see `split`).
        let xr = binding::storage_range_unbounded(ctx, "x", x)?;
        let or = binding::storage_range(ctx, "moments", out)?;
        let mr = mask
            .map(|m| binding::storage_range(ctx, "mask", m))
            .transpose()?;
        binding::check_no_alias(&[
            ("x", Some(&xr), false),
            ("mask", mr.as_ref(), false),
            ("moments", Some(&or), true),
        ])?;
        Ok(Some(ReduceRanges {
            x: xr,
            moments: or,
            mask: mr,
        }))
    }

    /// lavapipe stops a lane's loops after 65535 iterations in total: refuse views whose moments
    /// and finalize lanes would loop past that on CPU adapters.
    pub(super) fn check_loop_budget(
        &self,
        v: &ChannelView,
        tiles: u32,
        tile_len: u32,
    ) -> Result<()> {
        let wgm = plan::moments_wg(true);
        let per_lane = tile_len.div_ceil(wgm) as u64 + tiles as u64 + v.cg as u64;
        if self.ctx.is_cpu() && per_lane > crate::rownorm::CPU_LOOP_BUDGET {
            return Err(Error::InvalidParameter {
                name: "shape",
                value: format!("{v:?}"),
                why: "a lane would loop past the software rasterizer's 65535-iteration limit",
            });
        }
        Ok(())
    }
}

/// Every index the kernels compute fits in 32 bits: they index the whole tensor by element,
/// also when it is bound in windows.
pub(super) fn check_u32_indexing(v: &ChannelView) -> Result<()> {
    for (n, what, max) in [
        (v.p * v.q * v.r, "p*q*r", u32::MAX / 2),
        (v.s, "s", u32::MAX / 2),
        (v.numel(), "elements", u32::MAX),
    ] {
        if n > max as usize {
            return Err(Error::InvalidParameter {
                name: "shape",
                value: format!("{what} = {n}"),
                why: "too large for 32-bit indexing",
            });
        }
    }
    Ok(())
}
