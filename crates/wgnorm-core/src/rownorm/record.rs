//! Checking and recording a row-norm call: every input checked first (a [`Checked`] call),
//! then the pipeline from the plan cache, the bind group and one dispatch.

use crate::binding::{self, BufferRange};
use crate::shader::Io;
use crate::uniform::RowParams;
use crate::{DType, Error, Result, Tensor};

use super::choose::{cache_len_for, choose_for, loop_iterations, AdapterClass, RowKernel};
use super::choose::{
    split_chunk_len, split_for, CPU_LOOP_BUDGET, SPLIT_MAX_CHUNKS, SPLIT_MAX_ROWS,
};
use super::plan::{
    RowConstants, RowFlags, SLOTS, SPLIT_APPLY_SLOTS, SPLIT_PARTIALS_SLOTS, SPLIT_STATS_SLOTS,
};
use super::{Plan, PlanKey, RowMode, RowNorm, RowNormArgs};

/// A call that passed every check: its row count, the bound ranges of its tensors (whole), and
/// the rows per binding window (all of them unless x is larger than one storage binding).
struct Checked {
    rows: usize,
    window: usize,
    key: PlanKey,
    x: BufferRange,
    y: BufferRange,
    weight: Option<BufferRange>,
    bias: Option<BufferRange>,
    mean: Option<BufferRange>,
    rstd: Option<BufferRange>,
    residual: Option<BufferRange>,
    sum: Option<BufferRange>,
}

/// The row-indexed ranges of one binding window.
struct Ranges {
    /// The split kernel's chunk moments (`None` for the one-pass kernels).
    partials: Option<BufferRange>,
    x: BufferRange,
    y: BufferRange,
    residual: Option<BufferRange>,
    sum: Option<BufferRange>,
    mean: Option<BufferRange>,
    rstd: Option<BufferRange>,
}

impl RowNorm {
    fn check_tensor(&self, what: &str, t: &Tensor, shape: &[usize], dtype: DType) -> Result<()> {
        if t.shape() != shape {
            return Err(Error::ShapeMismatch {
                what: what.into(),
                expected: shape.to_vec(),
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

    fn check_stats(&self, what: &str, t: &Tensor, rows: usize) -> Result<()> {
        if t.numel() != rows {
            return Err(Error::ShapeMismatch {
                what: format!("{what} (one value per row)"),
                expected: vec![rows],
                got: t.shape().to_vec(),
            });
        }
        if t.dtype() != DType::F32 {
            return Err(Error::DTypeMismatch {
                what: what.into(),
                expected: DType::F32,
                got: t.dtype(),
            });
        }
        Ok(())
    }

    /// Shapes and dtypes of every tensor of a call: x-shaped ones, weight/bias over the reduced
    /// dims, one f32 statistic per row.
    fn check_tensors(&self, a: &RowNormArgs, rows: usize, reduced: &[usize]) -> Result<()> {
        let dtype = self.cfg.dtype;
        let shape = a.x.shape();
        self.check_tensor("x", a.x, shape, dtype)?;
        self.check_tensor("y", a.y, shape, dtype)?;
        if let Some(t) = a.residual {
            self.check_tensor("residual", t, shape, dtype)?;
        }
        if let Some(t) = a.sum {
            if a.residual.is_none() {
                return Err(Error::InvalidParameter {
                    name: "sum",
                    value: "without residual".into(),
                    why: "the sum output is x + residual: pass the residual too",
                });
            }
            self.check_tensor("sum", t, shape, dtype)?;
        }
        for (what, t) in [("weight", a.weight), ("bias", a.bias)] {
            if let Some(t) = t {
                self.check_tensor(what, t, reduced, dtype)?;
            }
        }
        for (what, t) in [("mean", a.mean), ("rstd", a.rstd)] {
            if let Some(t) = t {
                self.check_stats(what, t, rows)?;
            }
        }
        Ok(())
    }

    /// Every check of a call: shapes, dtypes, bindings, aliasing; `None` for an empty tensor.
    fn check(&self, a: &RowNormArgs) -> Result<Option<Checked>> {
        let dtype = self.cfg.dtype;
        let shape = a.x.shape();
        let (rows, n) = self.split(shape)?;
        let reduced = &shape[self.axis_index(shape)..];
        self.check_tensors(a, rows, reduced)?;
        if rows == 0 || n == 0 {
            return Ok(None);
        }
        // Kernels index rows and elements with u32.
        for (what, v) in [("rows", rows), ("row length", n)] {
            if v > u32::MAX as usize {
                return Err(Error::TooLarge {
                    what: what.into(),
                    value: v as u64,
                    limit: u32::MAX as u64,
                });
            }
        }
        let ctx = &self.ctx;
        // x-shaped tensors may be bound in windows of rows; weight, bias and the saved
        // statistics (offset per window by `stat_base`) are bound whole.
        let rows_of = |what, t: Option<&Tensor>| {
            t.map(|t| binding::storage_range_unbounded(ctx, what, t))
                .transpose()
        };
        let opt =
            |what, t: Option<&Tensor>| t.map(|t| binding::storage_range(ctx, what, t)).transpose();
        let window = self.window_rows(rows, n)?;
        let c = Checked {
            rows,
            window,
            key: PlanKey {
                n: n as u64,
                io: Io::F32,
                flags: RowFlags::default(),
                few_rows: 0,
            },
            x: binding::storage_range_unbounded(ctx, "x", a.x)?,
            y: binding::storage_range_unbounded(ctx, "y", a.y)?,
            weight: opt("weight", a.weight)?,
            bias: opt("bias", a.bias)?,
            mean: opt("mean", a.mean)?,
            rstd: opt("rstd", a.rstd)?,
            residual: rows_of("residual", a.residual)?,
            sum: rows_of("sum", a.sum)?,
        };
        binding::check_no_alias(&[
            ("residual", c.residual.as_ref(), false),
            ("sum", c.sum.as_ref(), true),
            ("x", Some(&c.x), false),
            ("weight", c.weight.as_ref(), false),
            ("bias", c.bias.as_ref(), false),
            ("y", Some(&c.y), true),
            ("mean", c.mean.as_ref(), true),
            ("rstd", c.rstd.as_ref(), true),
        ])?;
        let vec_align = Io { dtype, vec4: true }.alignment();
        let aligned = [
            Some(&c.x),
            Some(&c.y),
            c.weight.as_ref(),
            c.bias.as_ref(),
            c.residual.as_ref(),
            c.sum.as_ref(),
        ]
        .iter()
        .flatten()
        .all(|r| r.offset % vec_align == 0);
        let key = PlanKey {
            n: n as u64,
            io: Io {
                dtype,
                vec4: n % 4 == 0 && aligned,
            },
            flags: RowFlags {
                has_weight: c.weight.is_some(),
                has_bias: c.bias.is_some(),
                has_residual: c.residual.is_some(),
                write_sum: c.sum.is_some(),
                write_stats: c.mean.is_some() || c.rstd.is_some(),
            },
            few_rows: if self.few_row_kernels && (rows as u64) < SPLIT_MAX_ROWS && window == rows {
                rows as u64
            } else {
                0
            },
        };
        Ok(Some(Checked { key, ..c }))
    }

    /// Every check of [`RowNorm::encode`], recording nothing (for ops that record several passes
    /// and must fail before the first).
    pub fn check_args(&self, a: &RowNormArgs) -> Result<()> {
        let Some(c) = self.check(a)? else {
            return Ok(());
        };
        self.plan(c.key).map(|_| ())
    }

    /// Records the op into `encoder`: one dispatch, or one per window of rows when x is larger
    /// than one storage binding, or nothing for an empty tensor. Everything is checked before anything is recorded. Never submits or blocks; after
    /// the first call with given buffers and shape it creates no GPU object.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, a: &RowNormArgs) -> Result<()> {
        let Some(c) = self.check(a)? else {
            return Ok(());
        };
        let plan = self.plan(c.key)?;
        let (n, io) = (c.key.n, c.key.io);
        let (selu_alpha, selu_lambda) = self.activation.selu_params();
        let params = RowParams {
            rows: c.window as u32,
            n_vec: (n / io.width() as u64) as u32,
            n: n as u32,
            write_stats: c.mean.is_some() as u32 | (c.rstd.is_some() as u32) << 1,
            eps: self.cfg.eps,
            weight_offset: self.cfg.weight_offset,
            selu_alpha,
            selu_lambda,
            stat_base: 0,
            chunks: 1,
            chunk_vec: 0,
            _pad0: 0,
        };
        let params = match plan.kernel {
            RowKernel::Split { chunks, .. } => RowParams {
                chunks,
                chunk_vec: split_chunk_len(params.n_vec as u64, chunks) as u32,
                ..params
            },
            _ => params,
        };
        // The split kernel's chunk moments: one vec4 per chunk of each row of a window, in
        // op-owned scratch that is reused by every window (their passes run in order).
        let partials = match plan.kernel {
            RowKernel::Split { chunks, .. } => {
                let len = c.window * chunks as usize * 4;
                let key = [c.window, chunks as usize];
                let range = self
                    .scratch
                    .with(&self.ctx, &key, &[len], DType::F32, |t| {
                        binding::storage_range(&self.ctx, "split partials", t)
                    })?;
                Some(range?)
            }
            _ => None,
        };
        let label = match self.cfg.mode {
            RowMode::LayerNorm => "wgnorm layer_norm",
            RowMode::RmsNorm => "wgnorm rms_norm",
        };
        let windows = binding::Windows {
            total: c.rows as u64,
            per_window: c.window as u64,
            unit_bytes: n * self.cfg.dtype.size(),
        };
        // Every window's bind group first, then the dispatches: an error records nothing.
        for record in [false, true] {
            for (r0, rows_w) in windows.iter() {
                let win = |r: &BufferRange| windows.range(r, r0, rows_w);
                let ranges = Ranges {
                    partials: partials.clone(),
                    x: win(&c.x),
                    y: win(&c.y),
                    residual: c.residual.as_ref().map(win),
                    sum: c.sum.as_ref().map(win),
                    mean: c.mean.clone(),
                    rstd: c.rstd.clone(),
                };
                let params = RowParams {
                    rows: rows_w as u32,
                    stat_base: r0 as u32,
                    ..params
                };
                self.record_window(encoder, label, &plan, &c, &ranges, &params, record)?;
            }
        }
        Ok(())
    }

    /// Rows per binding window: all of them when every row-indexed tensor fits one storage
    /// binding, otherwise the most that fit with window starts the device can bind.
    fn window_rows(&self, rows: usize, n: usize) -> Result<usize> {
        let limits = self.ctx.limits();
        let limit = limits.max_storage_buffer_binding_size;
        let row_bytes = n as u64 * self.cfg.dtype.size();
        let align = limits.min_storage_buffer_offset_alignment as u64;
        binding::window_rows(rows, &[row_bytes], limit, align).ok_or_else(|| {
            Error::TooLargeForBinding {
                what: if row_bytes > limit {
                    "x (one row)".into()
                } else {
                    format!("x (windows of rows starting at {align}-byte multiples)")
                },
                bytes: row_bytes,
                limit,
            }
        })
    }

    /// Binds one window of rows and, when `record`, records its dispatch (`encode` makes every
    /// window's bind group before recording any, so that an error records nothing).
    #[allow(clippy::too_many_arguments)]
    fn record_window(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        label: &str,
        plan: &Plan,
        c: &Checked,
        w: &Ranges,
        params: &RowParams,
        record: bool,
    ) -> Result<()> {
        let ctx = &self.ctx;
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw = [0, 1, 2].map(|i| binding::dummy_range(ctx.dummy_write(i)));
        // Binding order of every row kernel; the split kernel's passes bind subsets of it
        // plus the chunk moments.
        let ranges = [
            &w.x,
            c.weight.as_ref().unwrap_or(&dr),
            c.bias.as_ref().unwrap_or(&dr),
            &w.y,
            w.mean.as_ref().unwrap_or(&dw[0]),
            w.rstd.as_ref().unwrap_or(&dw[1]),
            w.residual.as_ref().unwrap_or(&dr),
            w.sum.as_ref().unwrap_or(&dw[2]),
            w.partials.as_ref().unwrap_or(&dr),
        ];
        let split = w.partials.is_some();
        let slots = if split { SPLIT_APPLY_SLOTS } else { SLOTS };
        let bind = self
            .binds
            .get(ctx, slots, params, &ranges[..slots.len() - 1])?;
        let partials = match &plan.partials {
            Some(p) => Some((
                p,
                self.binds.get(ctx, SPLIT_PARTIALS_SLOTS, params, &ranges)?,
            )),
            None => None,
        };
        let stats = match &plan.stats {
            Some(p) => Some((p, self.binds.get(ctx, SPLIT_STATS_SLOTS, params, &ranges)?)),
            None => None,
        };
        if !record {
            return Ok(());
        }
        let groups = plan.kernel.groups(params.rows as u64);
        let (gx, gy) = binding::grid(ctx, groups);
        if let Some((pipeline, bind)) = &partials {
            binding::dispatch(encoder, label, pipeline, bind, (gx, gy, 1));
        }
        binding::dispatch(encoder, label, &plan.pipeline, &bind, (gx, gy, 1));
        if let Some((pipeline, bind)) = &stats {
            // One workgroup per row.
            let (sx, sy) = binding::grid(ctx, params.rows as u64);
            binding::dispatch(encoder, label, pipeline, bind, (sx, sy, 1));
        }
        Ok(())
    }

    fn axis_index(&self, shape: &[usize]) -> usize {
        let a = self.cfg.axis;
        (if a < 0 { a + shape.len() as isize } else { a }) as usize
    }

    fn plan(&self, key: PlanKey) -> Result<Plan> {
        if let Some(p) = crate::locked(&self.plans).get(&key) {
            return Ok(p.clone());
        }
        let class = self.class();
        let n_vec = key.n / key.io.width() as u64;
        let base = self.select(&class, key.n, key.io);
        let kernel = match key.few_rows {
            0 => base,
            rows => self
                .few_rows_choice(&class, rows, key.n, key.io, base)
                .unwrap_or(base),
        };
        let cache = check_kernel(&class, kernel, key.io, n_vec)?;
        let constants = RowConstants {
            mode: self.cfg.mode,
            flags: key.flags,
            kernel,
            n_vec,
            cache,
            activation: self.activation,
        };
        let pipeline = self.ctx.pipeline(&constants.spec(key.io))?;
        let partials = match constants.partials_spec(key.io) {
            Some(spec) => Some(self.ctx.pipeline(&spec)?),
            None => None,
        };
        let stats = match constants.stats_spec(key.io) {
            Some(spec) => Some(self.ctx.pipeline(&spec)?),
            None => None,
        };
        let plan = Plan {
            kernel,
            pipeline,
            partials,
            stats,
        };
        crate::locked(&self.plans).insert(key, plan.clone());
        Ok(plan)
    }
}

impl RowNorm {
    /// The kernel for rows of `n` elements: the forced one, else the context's tuning table's
    /// when it can serve them, else the built-in choice.
    pub(super) fn select(&self, class: &AdapterClass, n: u64, io: Io) -> RowKernel {
        if let Some(k) = self.forced {
            return k;
        }
        let n_vec = n / io.width() as u64;
        self.ctx
            .tuning()
            .and_then(|t| t.row_kernel(self.cfg.mode, self.cfg.dtype, n))
            .filter(|&k| check_kernel(class, k, io, n_vec).is_ok())
            .unwrap_or_else(|| choose_for(class, self.cfg.mode, n, io))
    }

    /// The kernel for a call of only `rows` rows of `n` elements whose row length selects `base`:
    /// the tuning table's entry for about that many rows, else the split kernel when the rows
    /// are too few to occupy the device; `None` keeps `base` (always with a forced kernel).
    pub(super) fn few_rows_choice(
        &self,
        class: &AdapterClass,
        rows: u64,
        n: u64,
        io: Io,
        base: RowKernel,
    ) -> Option<RowKernel> {
        if self.forced.is_some() {
            return None;
        }
        let n_vec = n / io.width() as u64;
        let (mode, dtype) = (self.cfg.mode, self.cfg.dtype);
        let tuned = self
            .ctx
            .tuning()
            .and_then(|t| t.few_rows_kernel(mode, dtype, rows, n));
        tuned
            .or_else(|| split_for(class, rows, n_vec, base))
            .filter(|&k| check_kernel(class, k, io, n_vec).is_ok())
    }
}

/// Whether `kernel` can serve rows of `n_vec` accesses on `class`; its cache length when so.
fn check_kernel(
    class: &AdapterClass,
    kernel: RowKernel,
    io: Io,
    n_vec: u64,
) -> Result<Option<u32>> {
    let cache = cache_len_for(class.workgroup_storage as u64, kernel, io, n_vec);
    match kernel {
        RowKernel::Team {
            team,
            rows_per_group,
            ..
        }
        | RowKernel::TeamRegs {
            team,
            rows_per_group,
            ..
        } => {
            let sg_ok = class.subgroups
                && team.is_power_of_two()
                && team <= class.subgroup_min
                && (team * rows_per_group) % class.subgroup_max.max(1) == 0
                && team * rows_per_group <= class.max_invocations;
            let needs_cache = matches!(
                kernel,
                RowKernel::TeamRegs { .. } | RowKernel::Team { cached: true, .. }
            );
            let regs_fit = !needs_cache || cache.is_some();
            if !sg_ok || !regs_fit {
                return Err(Error::InvalidParameter {
                    name: "kernel",
                    value: format!("{kernel:?}"),
                    why: "the team kernels need subgroups, team <= the minimum subgroup size, a workgroup that is a multiple of the maximum subgroup size within the device limit, and rows that fit workgroup memory (or TEAM_REGS accesses per lane)",
                });
            }
        }
        RowKernel::Workgroup { wg } | RowKernel::Split { wg, .. } => {
            if !wg.is_power_of_two() || wg > class.max_invocations {
                return Err(Error::InvalidParameter {
                    name: "kernel",
                    value: format!("{kernel:?}"),
                    why: "the workgroup and split kernels need a power-of-two size within the device limit",
                });
            }
            if matches!(kernel, RowKernel::Split { chunks, .. } if chunks == 0 || chunks > SPLIT_MAX_CHUNKS)
            {
                return Err(Error::InvalidParameter {
                    name: "kernel",
                    value: format!("{kernel:?}"),
                    why: "the split kernel takes 1 to SPLIT_MAX_CHUNKS (256) chunks per row",
                });
            }
        }
    }
    if class.cpu && loop_iterations(kernel, n_vec) > CPU_LOOP_BUDGET {
        return Err(Error::InvalidParameter {
            name: "kernel",
            value: format!("{kernel:?}"),
            why: "on a CPU adapter each lane of this kernel would loop past the driver's silent 65535-iteration limit for this row length: use more lanes",
        });
    }
    Ok(cache)
}
