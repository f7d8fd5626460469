//! Normalizations whose statistics are built from per-instance moments: IBN-Net's IN/BN split,
//! EvoNorm-B0 and UnMix-TNS. One reduce pass over an InstanceNorm view of x gives (count, mean,
//! M2) per (n, c); `shaders/channel_norm/instance_mix.wgsl` turns them into the apply pass's
//! coefficients (merging over n with Chan's formula where a method needs batch statistics, and
//! updating its running state); the channel engine's apply pass writes y. x is read twice.

use crate::binding::{self, BindCache};
use crate::chnorm::{ChannelNorm, ChannelView, Layout};
use crate::context::Slot;
use crate::scratch::ScratchCache;
use crate::shader::{snippet, Io, Kernel, Specialization};
use crate::{Activation, Context, DType, Error, Result, Tensor};

const SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // instance moments
    Slot::Read,      // weight
    Slot::Read,      // bias
    Slot::Read,      // aux (EvoNorm-B0 v)
    Slot::ReadWrite, // run_a
    Slot::ReadWrite, // run_b
    Slot::ReadWrite, // coefficients
    Slot::ReadWrite, // assignment (UnMix-TNS)
];
const WG: u32 = 64;

/// Statistics built from per-instance moments: the apply pass's coefficients and the methods'
/// GPU state.
pub const INSTANCE_MIX_KERNEL: Kernel = Kernel::new(
    "channel_norm/instance_mix",
    &[
        snippet::MOMENTS,
        snippet::WG_SUM,
        crate::shader_file!("channel_norm/instance_mix.wgsl"),
    ],
    SLOTS,
);

crate::uniform_block! {
    /// `InstanceParams` (`channel_norm/instance_mix.wgsl`): the mixing kernel over per-(n, c)
    /// instance moments.
    pub struct InstanceParams {
        pub n: u32,
        pub c: u32,
        /// IBN: channels of the InstanceNorm part. Unified Norm: the step t (>= 1).
        pub half: u32,
        /// UnMix-TNS: components K. AdaB2N: tasks T. Unified Norm: window M.
        pub k: u32,
        pub eps: f32,
        pub momentum: f32,
        pub temperature: f32,
        /// Unified Norm: warm-up steps.
        pub warmup: u32,
    }
}

/// Which method, with its per-call settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// IBN-Net: InstanceNorm on channels `[0, half)`, BatchNorm on the rest. Training normalizes
    /// the BN part with batch statistics and updates the running ones (`momentum`, unbiased
    /// variance); inference uses the running statistics.
    Ibn {
        half: usize,
        training: bool,
        momentum: f32,
    },
    /// EvoNorm-B0: training uses the batch variance and updates `running_var` with the unbiased
    /// (timm) or biased (TF) variance; inference uses `running_var`.
    EvoB0 {
        training: bool,
        momentum: f32,
        unbiased_running: bool,
    },
    /// AdaB²N with task-weighted statistics over `tasks` tasks (training; `momentum` is this
    /// step's eta, see `adab2n_momentum`). Needs `v` = theta `[tasks]` and `task_ids` `[N]`.
    AdaB2n { tasks: usize, momentum: f32 },
    /// Unified Normalization training step `step` (>= 1) with a window of `window` quadratic
    /// means, `warmup` steps, running-variance `momentum` (1 - decay) and optional outlier
    /// filtration (NORMS.md B3).
    Unified {
        window: usize,
        step: u64,
        warmup: u64,
        momentum: f32,
        filter: bool,
    },
    /// UnMix-TNS with `k` components, update rate `momentum` (M, already adjusted for the batch
    /// size) and softmax temperature.
    Unmix {
        k: usize,
        momentum: f32,
        temperature: f32,
    },
}

impl Method {
    fn mode(&self) -> f64 {
        match self {
            Method::Ibn { .. } => 0.0,
            Method::EvoB0 { .. } => 1.0,
            Method::Unmix { .. } => 2.0,
            Method::AdaB2n { .. } => 3.0,
            Method::Unified { .. } => 4.0,
        }
    }

    fn spec(&self) -> Specialization {
        let (training, unbiased) = match *self {
            Method::Ibn { training, .. } => (training, true),
            Method::EvoB0 {
                training,
                unbiased_running,
                ..
            } => (training, unbiased_running),
            Method::Unmix { .. } | Method::AdaB2n { .. } | Method::Unified { .. } => (false, true),
        };
        mix_spec(
            self.mode(),
            training,
            unbiased,
            matches!(self, Method::Unified { filter: true, .. }),
        )
    }
}

fn mix_spec(mode: f64, training: bool, unbiased: bool, filter: bool) -> Specialization {
    Specialization::new(INSTANCE_MIX_KERNEL, Io::F32)
        .set("WG", WG)
        .set("MODE", mode)
        .flag("TRAINING", training)
        .flag("UNBIASED_RUNNING", unbiased)
        .flag("FILTER", filter)
}

/// Tensors of one call; which ones a method needs is said at [`InstanceMix::encode`].
#[derive(Clone, Copy, Debug)]
pub struct InstanceMixArgs<'a> {
    /// `(N, C, *)` in the layout, this engine's dtype.
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    /// f32 `[C]` (required).
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    /// EvoNorm-B0's `v`, f32 `[C]`; AdaB²N's task logits theta, f32 `[T]`.
    pub v: Option<&'a Tensor>,
    /// AdaB²N: the task of each sample, f32 `[N]` holding integers in `[0, T)`.
    pub task_ids: Option<&'a Tensor>,
    /// IBN: running mean `[C - half]`; EvoNorm-B0: running variance `[C]`; UnMix-TNS: component
    /// means `[K, C]`. f32, updated in place where the method updates state.
    pub state_a: Option<&'a Tensor>,
    /// IBN: running variance `[C - half]`; UnMix-TNS: component variances `[K, C]`.
    pub state_b: Option<&'a Tensor>,
}

/// The engine: a channel engine for the reduce and apply passes, and the mixing kernel between.
pub struct InstanceMix {
    ctx: Context,
    eps: f32,
    layout: Layout,
    dtype: DType,
    engine: ChannelNorm,
    binds: BindCache,
    /// Per input shape: instance moments, coefficients, assignment.
    moments: ScratchCache,
    coef: ScratchCache,
    assign: ScratchCache,
}

impl InstanceMix {
    pub fn new(ctx: &Context, eps: f32, layout: Layout, dtype: DType) -> Result<InstanceMix> {
        let engine = ChannelNorm::new(ctx, eps, dtype, Activation::None)?;
        Ok(InstanceMix {
            ctx: ctx.clone(),
            eps,
            layout,
            dtype,
            engine,
            binds: BindCache::default(),
            moments: ScratchCache::default(),
            coef: ScratchCache::default(),
            assign: ScratchCache::default(),
        })
    }

    /// Records reduce, mix and apply. Needs: IBN `state_a`/`state_b` `[C - half]`; EvoNorm-B0
    /// `v` and `state_a` `[C]`; UnMix-TNS `state_a`/`state_b` `[K, C]`; AdaB²N `v` (theta),
    /// `task_ids`, `state_a`/`state_b` `[C]`.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        a: &InstanceMixArgs,
        method: Method,
    ) -> Result<()> {
        let view = ChannelView::instance_norm(a.x.shape(), self.layout)?;
        let engine = &self.engine;
        self.encode_view(encoder, a, method, view, |enc, moments| {
            engine.encode_reduce(enc, a.x, view, moments)
        })
    }

    /// [`InstanceMix::encode`] over any view with one slot per (p, channel), the moments
    /// recorded by `reduce` into the given f32 `[slots, 3]` tensor (a masked token reduction for
    /// Unified Norm). Unified Norm needs `state_a` (the window `[M, C]`) and `state_b` (the
    /// running variance `[C]`).
    pub fn encode_view(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        a: &InstanceMixArgs,
        method: Method,
        view: ChannelView,
        reduce: impl FnOnce(&mut wgpu::CommandEncoder, &Tensor) -> Result<()>,
    ) -> Result<()> {
        if view.cg != 1 {
            return Err(Error::InvalidParameter {
                name: "view",
                value: format!("{view:?}"),
                why: "instance statistics need one channel per slot",
            });
        }
        if a.y.shape() != a.x.shape() {
            return Err(Error::ShapeMismatch {
                what: "y".into(),
                expected: a.x.shape().to_vec(),
                got: a.y.shape().to_vec(),
            });
        }
        let (n, c) = (view.p, view.r);
        let check = |what: &str, t: Option<&Tensor>, len: usize| -> Result<()> {
            let t = t.ok_or_else(|| Error::InvalidParameter {
                name: "state",
                value: format!("{what}: None"),
                why: "this method needs the tensor (see InstanceMix::encode)",
            })?;
            if t.dtype() != DType::F32 || t.numel() != len {
                return Err(Error::ShapeMismatch {
                    what: format!("{what} (f32)"),
                    expected: vec![len],
                    got: t.shape().to_vec(),
                });
            }
            Ok(())
        };
        check("weight", Some(a.weight), c)?;
        check("bias", Some(a.bias), c)?;
        let mut params = InstanceParams {
            n: n as u32,
            c: c as u32,
            eps: self.eps,
            ..Default::default()
        };
        let ncoef = if matches!(method, Method::EvoB0 { .. }) {
            5
        } else {
            3
        };
        let momentum = match method {
            Method::Ibn { momentum, .. }
            | Method::EvoB0 { momentum, .. }
            | Method::Unmix { momentum, .. }
            | Method::AdaB2n { momentum, .. }
            | Method::Unified { momentum, .. } => momentum,
        };
        crate::check_unit_interval("momentum", momentum)?;
        params.momentum = momentum;
        let mut k_assign = 1;
        match method {
            Method::Ibn { half, .. } => {
                if half > c {
                    return Err(Error::InvalidParameter {
                        name: "half",
                        value: half.to_string(),
                        why: "the InstanceNorm part cannot have more channels than x",
                    });
                }
                check("running_mean", a.state_a, c - half)?;
                check("running_var", a.state_b, c - half)?;
                params.half = half as u32;
            }
            Method::EvoB0 { .. } => {
                check("v", a.v, c)?;
                check("running_var", a.state_a, c)?;
            }
            Method::AdaB2n { tasks, .. } => {
                if tasks == 0 {
                    return Err(Error::InvalidParameter {
                        name: "tasks",
                        value: "0".into(),
                        why: "need at least one task",
                    });
                }
                check("theta", a.v, tasks)?;
                check("task_ids", a.task_ids, n)?;
                check("running_mean", a.state_a, c)?;
                check("running_var", a.state_b, c)?;
                params.k = tasks as u32;
            }
            Method::Unified {
                window,
                step,
                warmup,
                ..
            } => {
                if window == 0 || step == 0 {
                    return Err(Error::InvalidParameter {
                        name: "window / step",
                        value: format!("{window} / {step}"),
                        why: "the window holds at least one step and steps count from 1",
                    });
                }
                check("window", a.state_a, window * c)?;
                check("running_var", a.state_b, c)?;
                let u = |name, v: u64| {
                    u32::try_from(v).map_err(|_| Error::InvalidParameter {
                        name,
                        value: v.to_string(),
                        why: "exceeds 2^32 - 1",
                    })
                };
                params.half = u("step", step)?;
                params.k = window as u32;
                params.warmup = u("warmup", warmup)?;
            }
            Method::Unmix { k, temperature, .. } => {
                if k == 0 || !(temperature.is_finite() && temperature > 0.0) {
                    return Err(Error::InvalidParameter {
                        name: "k / temperature",
                        value: format!("{k} / {temperature}"),
                        why: "need at least one component and a positive temperature",
                    });
                }
                check("component_mean", a.state_a, k * c)?;
                check("component_var", a.state_b, k * c)?;
                params.k = k as u32;
                params.temperature = temperature;
                k_assign = k;
            }
        }
        if view.numel() == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        if ctx.is_cpu() {
            // Per-invocation loops of the mixing kernel (lavapipe's 65535-iteration budget).
            let wg = WG as usize;
            let per_lane = match method {
                Method::Unified { window, .. } => {
                    2 * (window * c).div_ceil(wg) + 3 * c.div_ceil(wg) * window
                }
                Method::Unmix { k, .. } => {
                    (n * k).div_ceil(wg) * c
                        + n * k
                        + (n * c).div_ceil(wg) * 2 * k
                        + (k * c).div_ceil(wg) * n
                }
                Method::AdaB2n { tasks, .. } => 3 * n * (n + 1) + tasks * (n + 1),
                _ => 2 * n,
            };
            if per_lane as u64 > crate::rownorm::CPU_LOOP_BUDGET {
                return Err(Error::InvalidParameter {
                    name: "shape",
                    value: format!("{:?}", a.x.shape()),
                    why: "on a CPU adapter an invocation would loop past the driver's 65535-iteration limit",
                });
            }
        }
        // Keyed by the input shape and the method's sizes (five coefficient arrays for
        // EvoNorm-B0, K assignments per sample for UnMix-TNS).
        let mut key = a.x.shape().to_vec();
        key.extend([ncoef, k_assign]);
        let moments = self.moments.get(ctx, &key, &[n * c * 3], DType::F32)?;
        let coef = self.coef.get(ctx, &key, &[n * ncoef * c], DType::F32)?;
        let assign = self.assign.get(ctx, &key, &[n * k_assign], DType::F32)?;
        // AdaB²N reads the task ids where UnMix-TNS keeps its assignment.
        let assign = match (method, a.task_ids) {
            (Method::AdaB2n { .. }, Some(t)) => t.clone(),
            _ => assign,
        };
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let dr = binding::dummy_range(ctx.dummy_read());
        let dw0 = binding::dummy_range(ctx.dummy_write(0));
        let dw1 = binding::dummy_range(ctx.dummy_write(1));
        let (mr, wr, br, cr, ar) = (
            r(&moments, "moments")?,
            r(a.weight, "weight")?,
            r(a.bias, "bias")?,
            r(&coef, "coefficients")?,
            r(&assign, "assignment")?,
        );
        let vr = a.v.map(|t| r(t, "v")).transpose()?;
        let sa = a.state_a.map(|t| r(t, "state")).transpose()?;
        let sb = a.state_b.map(|t| r(t, "state")).transpose()?;
        let xr = r(a.x, "x")?;
        let yr = r(a.y, "y")?;
        binding::check_no_alias(&[
            ("x", Some(&xr), false),
            ("weight", Some(&wr), false),
            ("bias", Some(&br), false),
            ("v", vr.as_ref(), false),
            // Bound in the read-write assignment slot: it must not share a buffer with anything.
            ("task_ids", a.task_ids.map(|_| &ar), true),
            ("state a", sa.as_ref(), true),
            ("state b", sb.as_ref(), true),
            ("y", Some(&yr), true),
        ])?;
        reduce(encoder, &moments)?;
        let pipeline = ctx.pipeline(&method.spec())?;
        let bind = self.binds.get(
            ctx,
            SLOTS,
            &params,
            &[
                &mr,
                &wr,
                &br,
                vr.as_ref().unwrap_or(&dr),
                sa.as_ref().unwrap_or(&dw0),
                sb.as_ref().unwrap_or(&dw1),
                &cr,
                &ar,
            ],
        )?;
        let (gx, gy) = match method {
            Method::Unmix { .. } | Method::Unified { .. } => (1, 1),
            _ => binding::grid(ctx, (c as u64).div_ceil(WG as u64)),
        };
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgnorm instance mix"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        self.engine.encode_apply(
            encoder,
            a.x,
            a.y,
            view,
            &coef,
            if matches!(method, Method::EvoB0 { .. }) {
                crate::chnorm::Epilogue::MaxDenominator
            } else {
                crate::chnorm::Epilogue::Affine
            },
        )
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

/// Specialisations for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for mode in [0.0, 1.0, 2.0, 3.0, 4.0] {
        for bits in 0..8u32 {
            let f = |i: u32| bits & (1 << i) != 0;
            out.push(mix_spec(mode, f(0), f(1), f(2)));
        }
    }
    out
}
