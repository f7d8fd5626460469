//! Per-head RMSNorm with a rotary-embedding epilogue in one pass (QK-norm as in Qwen3, Gemma 3,
//! OLMo 2): `x[tokens, heads, D]`, every head's D values normalized by their RMS and scaled by
//! `weight + weight_offset` (`[D]`, shared by the heads), then the first `rotary_dim` dims rotated
//! in pairs by the token's angles (NeoX half-split or GPT-J interleaved), the rest passed through.
//! Two kernel shapes, chosen per head dim and rotary dim (never per token count, so a token's
//! bits do not depend on the batch): with subgroups, the row engine's register team
//! (`rms_norm/qk_rope_team.wgsl`: a team of lanes per (token, head) row, several rows per
//! workgroup, the rotation applied from registers); otherwise one workgroup per row, the row in
//! workgroup memory (`rms_norm/qk_rope.wgsl`, D <= 512).

use wgnorm_core::binding::{self, BindCache};
use wgnorm_core::context::Slot;
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Error, Result, Tensor};

wgnorm_core::uniform_block! {
    /// `QkRopeParams` (`rms_norm/qk_rope.wgsl`).
    pub struct QkRopeParams {
        pub rows: u32,
        pub heads: u32,
        /// Head dim, and the rotated dims (even, at most the head dim).
        pub d: u32,
        pub rot: u32,
        pub eps: f32,
        pub weight_offset: f32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

/// uniform, x, weight, positions, cos, sin, y.
pub const QK_ROPE_SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
];

const QK_ROPE_COMMON: &str = wgnorm_core::shader_file!("rms_norm/qk_rope_common.wgsl");

/// The fused kernel, one workgroup per row.
pub const QK_ROPE_KERNEL: Kernel = Kernel::new(
    "rms_norm/qk_rope",
    &[
        QK_ROPE_COMMON,
        wgnorm_core::shader_file!("rms_norm/qk_rope.wgsl"),
    ],
    QK_ROPE_SLOTS,
);

/// The fused kernel, a subgroup team per row with the row in registers (needs `SUBGROUP`), with
/// `$regs` slots per lane.
macro_rules! qk_team_kernel {
    ($name:literal, $regs:literal) => {
        Kernel::new(
            $name,
            &[
                $regs,
                QK_ROPE_COMMON,
                wgnorm_core::shader::snippet::MOMENTS,
                wgnorm_core::shader::snippet::TEAM_SUM,
                wgnorm_core::shader_file!("rms_norm/qk_rope_team.wgsl"),
            ],
            QK_ROPE_SLOTS,
        )
        .with_features(wgpu::Features::SUBGROUP)
    };
}

/// The register team kernels by slots per lane: the smallest that holds a call's row serves it.
pub const QK_ROPE_TEAM_KERNELS: [(u32, Kernel); 3] = [
    (
        8,
        qk_team_kernel!("rms_norm/qk_rope_team8", "const REGS: u32 = 8u;\n"),
    ),
    (
        16,
        qk_team_kernel!("rms_norm/qk_rope_team16", "const REGS: u32 = 16u;\n"),
    ),
    (
        32,
        qk_team_kernel!("rms_norm/qk_rope_team32", "const REGS: u32 = 32u;\n"),
    ),
];

/// The register team's shape for a call: the row engine's choice for RMSNorm rows of the head
/// dim, narrowed so the team divides the row's vec4 accesses and, for NeoX, a pair's distance
/// (`rot / 8` accesses), which keeps both halves of every pair in one lane's registers. Needs
/// head dims and rotary dims that are multiples of 4 and 8 (the rows and the angle tables are
/// read as vec4s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TeamPlan {
    /// Lanes per row.
    pub team: u32,
    /// Teams per workgroup.
    pub rows_per_group: u32,
    /// Consecutive rows each team normalizes.
    pub rows_per_team: u32,
    /// vec4 accesses per lane.
    pub per_lane: u32,
    /// Rotated accesses per lane (NeoX: of the first half, each paired with the access
    /// `rot_k` slots further; GPT-J: of the rotary part).
    pub rot_k: u32,
}

impl TeamPlan {
    /// The plan on an adapter of `class` for head dim `d`, `rot` rotated dims (0: none), or
    /// `None` where the register team does not serve the shape.
    pub fn of(
        class: &wgnorm_core::rownorm::AdapterClass,
        d: usize,
        rot: usize,
        layout: RopeLayout,
        dtype: DType,
    ) -> Option<TeamPlan> {
        use wgnorm_core::rownorm::{RowKernel, RowMode, TEAM_REGS};
        // vec4 accesses of the row and of the angle tables' rows (rot / 2 pairs).
        if !class.subgroups || !d.is_multiple_of(4) || !rot.is_multiple_of(8) {
            return None;
        }
        let neox = rot > 0 && layout == RopeLayout::NeoX;
        let io = Io { dtype, vec4: true };
        let RowKernel::TeamRegs {
            mut team,
            mut rows_per_group,
            rows_per_team,
        } = class.choose(RowMode::RmsNorm, d as u64, io)
        else {
            return None;
        };
        let n_vec = (d / 4) as u32;
        // The rotated accesses of a NeoX half or of a GPT-J rotary part: every lane has the same
        // number of them when the team divides it.
        let rotated = if neox { rot / 8 } else { rot / 4 } as u32;
        while team > 1 && (!n_vec.is_multiple_of(team) || !rotated.is_multiple_of(team)) {
            team /= 2;
            rows_per_group *= 2;
        }
        let per_lane = n_vec / team;
        (per_lane <= TEAM_REGS).then_some(TeamPlan {
            team,
            rows_per_group,
            rows_per_team,
            per_lane,
            rot_k: rotated / team,
        })
    }

    /// Rows one workgroup normalizes.
    pub fn rows_per_workgroup(&self) -> u32 {
        self.rows_per_group * self.rows_per_team
    }

    fn apply(&self, spec: Specialization) -> Specialization {
        spec.set("TEAM", self.team)
            .set("WG", self.team * self.rows_per_group)
            .set("ROWS_PER_TEAM", self.rows_per_team)
            .set("PER_LANE", self.per_lane)
            .set("ROT_K", self.rot_k)
    }
}

/// The register team's pipeline for `plan` (the constants as [`qk_rope_spec_with`]'s).
pub fn qk_rope_team_spec(
    dtype: DType,
    plan: TeamPlan,
    weight: bool,
    layout: RopeLayout,
    angles: u32,
    (norm, inverse): (bool, bool),
) -> Specialization {
    let io = Io { dtype, vec4: true };
    let kernel = QK_ROPE_TEAM_KERNELS
        .into_iter()
        .find(|(regs, _)| *regs >= plan.per_lane)
        .map_or(QK_ROPE_TEAM_KERNELS[2].1, |(_, k)| k);
    plan.apply(
        Specialization::new(kernel, io)
            .flag("NORM", norm)
            .flag("INVERSE", inverse)
            .flag("HAS_WEIGHT", weight)
            .set("LAYOUT", (layout == RopeLayout::GptJ) as u32)
            .set("ANGLES", angles),
    )
}

/// Which dims a rotation pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RopeLayout {
    /// GPT-NeoX / LLaMA (`rotate_half`): pairs `(p, p + rot/2)`.
    #[default]
    NeoX,
    /// GPT-J: interleaved pairs `(2p, 2p + 1)`.
    GptJ,
}

/// What is fixed when the op is created.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QkNormRopeConfig {
    /// Added to the mean square. Default 1e-6 (Qwen3).
    pub eps: f32,
    /// Added to the weight (Gemma: 1). Default 0.
    pub weight_offset: f32,
    /// The pairing of rotated dims.
    pub layout: RopeLayout,
    /// Dims rotated (`None`: the whole head); even.
    pub rotary_dim: Option<usize>,
    /// RoPE base theta for angles from positions. Default 10000.
    pub base: f32,
    /// Storage type of x, weight and y.
    pub dtype: DType,
}

impl Default for QkNormRopeConfig {
    fn default() -> Self {
        QkNormRopeConfig {
            eps: 1e-6,
            weight_offset: 0.0,
            layout: RopeLayout::NeoX,
            rotary_dim: None,
            base: 10_000.0,
            dtype: DType::F32,
        }
    }
}

/// The rotation angles of a call.
#[derive(Clone, Copy, Debug)]
pub enum RopeAngles<'a> {
    /// No rotation: per-head RMSNorm alone.
    None,
    /// f32 `[tokens]` positions; angle of pair p = `pos * base^(-2p / rotary_dim)`, computed in
    /// f32 on the GPU: its error grows as `pos * 6e-8` rad (1e-4 at 2k tokens). For long
    /// contexts pass tables computed in f64.
    Positions(&'a Tensor),
    /// f32 `[tokens, rotary_dim / 2]` tables of cos and sin (what inference engines cache).
    Table {
        /// cos of each token's angles.
        cos: &'a Tensor,
        /// sin of each token's angles.
        sin: &'a Tensor,
    },
}

/// Inputs of a call.
#[derive(Clone, Copy, Debug)]
pub struct QkNormRopeInputs<'a> {
    /// `[tokens, heads, head_dim]` in the op's dtype.
    pub x: &'a Tensor,
    /// `[head_dim]` in the op's dtype; `None`: 1 (plus the offset).
    pub weight: Option<&'a Tensor>,
    /// The rotation.
    pub angles: RopeAngles<'a>,
}

/// The largest head dim; workgroup memory holds one row.
pub const MAX_HEAD_DIM: usize = 512;
const WG: u32 = 64;

/// The row buffer size for head dim `d`.
fn max_d(d: usize) -> u32 {
    [64u32, 128, 256, 512]
        .into_iter()
        .find(|&m| m as usize >= d)
        .unwrap_or(512)
}

fn angles_value(a: &RopeAngles) -> u32 {
    match a {
        RopeAngles::Positions(_) => 0,
        RopeAngles::Table { .. } => 1,
        RopeAngles::None => 2,
    }
}

/// The pipeline of a call shape.
pub fn qk_rope_spec(
    io: Io,
    d: usize,
    weight: bool,
    layout: RopeLayout,
    angles: u32,
) -> Specialization {
    qk_rope_spec_with(io, d, weight, layout, angles, true)
}

/// Lanes per row: a workgroup is a loop on CPU adapters and each tree level a pass over it, so
/// few lanes there; 64 on GPUs.
pub fn qk_rope_wg(cpu: bool) -> u32 {
    if cpu {
        8
    } else {
        WG
    }
}

/// [`qk_rope_spec`], or with `norm` false the rotation alone: the benchmarks' unfused baseline
/// runs a norm-only pass (`angles` 2) and a rotation-only one.
pub fn qk_rope_spec_with(
    io: Io,
    d: usize,
    weight: bool,
    layout: RopeLayout,
    angles: u32,
    norm: bool,
) -> Specialization {
    Specialization::new(QK_ROPE_KERNEL, io)
        .flag("NORM", norm)
        .flag("INVERSE", false)
        .set("WG", WG)
        .set("MAX_D", max_d(d))
        .flag("HAS_WEIGHT", weight)
        .set("LAYOUT", (layout == RopeLayout::GptJ) as u32)
        .set("ANGLES", angles)
}

/// A pipeline with `wg` lanes per row ([`qk_rope_wg`]).
pub fn with_wg(spec: Specialization, wg: u32) -> Specialization {
    spec.set("WG", wg)
}

/// Every pipeline the op can create, for `cargo xtask validate`.
pub fn qk_rope_specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for d in [64, 128, 256, 512] {
            for weight in [false, true] {
                for layout in [RopeLayout::NeoX, RopeLayout::GptJ] {
                    let io = Io { dtype, vec4: false };
                    for wg in [qk_rope_wg(true), qk_rope_wg(false)] {
                        for angles in 0..3 {
                            out.push(with_wg(qk_rope_spec(io, d, weight, layout, angles), wg));
                        }
                        for angles in 0..2 {
                            let rot_only = qk_rope_spec_with(io, d, false, layout, angles, false);
                            out.push(with_wg(rot_only.clone(), wg));
                            out.push(with_wg(rot_only.flag("INVERSE", true), wg));
                        }
                    }
                }
            }
        }
    }
    out.extend(team_specializations());
    out
}

/// The register team's pipelines on the typical adapters, for head dims 64..512 with full and
/// half rotary dims.
fn team_specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for class in &wgnorm_core::rownorm::AdapterClass::TYPICAL {
        for dtype in [DType::F32, DType::F16] {
            for d in [64, 128, 256, 512] {
                for layout in [RopeLayout::NeoX, RopeLayout::GptJ] {
                    for (rot, angles) in [(d, 0), (d, 1), (d / 2, 0), (d / 2, 1), (0, 2)] {
                        let Some(plan) = TeamPlan::of(class, d, rot, layout, dtype) else {
                            continue;
                        };
                        let spec = |w, a, f| qk_rope_team_spec(dtype, plan, w, layout, a, f);
                        for weight in [false, true] {
                            out.push(spec(weight, angles, (true, false)));
                        }
                        if angles != 2 {
                            out.push(spec(false, angles, (false, false)));
                            out.push(spec(false, angles, (false, true)));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Inputs of the backward: the forward's and the upstream gradient `dy` (x's shape and dtype).
#[derive(Clone, Copy, Debug)]
pub struct QkNormRopeGradInputs<'a> {
    /// The forward's input `[tokens, heads, head_dim]`.
    pub x: &'a Tensor,
    /// The forward's weight `[head_dim]`; `None`: 1 (plus the offset).
    pub weight: Option<&'a Tensor>,
    /// The forward's rotation.
    pub angles: RopeAngles<'a>,
    /// Upstream gradient of y.
    pub dy: &'a Tensor,
}

/// Outputs of the backward: `dx` like x; `dweight` (`[head_dim]`, the op's dtype) when wanted.
#[derive(Clone, Copy, Debug)]
pub struct QkNormRopeGradOutputs<'a> {
    /// Gradient of x.
    pub dx: &'a Tensor,
    /// Gradient of the weight, summed over tokens and heads, written when given.
    pub dweight: Option<&'a Tensor>,
}

/// The fused per-head RMSNorm + RoPE bound to a device.
pub struct QkNormRope {
    ctx: Context,
    cfg: QkNormRopeConfig,
    binds: BindCache,
    /// The per-head RMSNorm's backward (rows `[tokens * heads, head_dim]`).
    grad: wgnorm_core::rowgrad::RowGrad,
    /// The upstream gradient rotated back, per x shape.
    rotated: wgnorm_core::scratch::ScratchCache,
    /// `base^(-2p / rot)` for p < rot / 2, computed in f64, per rotary dim seen (angles from
    /// positions): uploaded on a call's first use of that dim.
    inv_freq: std::sync::Mutex<std::collections::HashMap<usize, Tensor>>,
}

/// `base^(-2p / rot)` for each pair p, in f64 rounded once to f32.
pub fn inv_freq(base: f32, rot: usize) -> Vec<f32> {
    (0..rot / 2)
        .map(|p| (base as f64).powf(-2.0 * p as f64 / rot as f64) as f32)
        .collect()
}

impl QkNormRope {
    /// Checks the configuration (eps finite >= 0, offset finite, base finite > 1, rotary_dim
    /// even).
    pub fn new(ctx: &Context, cfg: QkNormRopeConfig) -> Result<QkNormRope> {
        wgnorm_core::check_eps(cfg.eps)?;
        let bad = |name, value: String, why| Err(Error::InvalidParameter { name, value, why });
        if !cfg.weight_offset.is_finite() {
            return bad(
                "weight_offset",
                cfg.weight_offset.to_string(),
                "must be finite",
            );
        }
        if !(cfg.base.is_finite() && cfg.base > 1.0) {
            return bad("base", cfg.base.to_string(), "must be finite and > 1");
        }
        if cfg.rotary_dim.is_some_and(|r| r % 2 == 1) {
            return bad(
                "rotary_dim",
                format!("{:?}", cfg.rotary_dim),
                "must be even",
            );
        }
        let grad = wgnorm_core::rowgrad::RowGrad::new(
            ctx,
            wgnorm_core::rowgrad::RowGradConfig {
                mode: wgnorm_core::rownorm::RowMode::RmsNorm,
                axis: -1,
                eps: cfg.eps,
                weight_offset: cfg.weight_offset,
                dtype: cfg.dtype,
                unbiased: false,
                eps_outside: false,
            },
        )?;
        Ok(QkNormRope {
            ctx: ctx.clone(),
            cfg,
            binds: BindCache::default(),
            grad,
            rotated: Default::default(),
            inv_freq: Default::default(),
        })
    }

    /// Records the op into the caller's encoder; `y` has x's shape and dtype. Checked first;
    /// nothing recorded on error; an empty x records nothing.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &QkNormRopeInputs,
        y: &Tensor,
    ) -> Result<()> {
        self.record(encoder, inputs, y, false)
    }

    /// Records the backward (the gradients of `sum(y * dy)`): `dy` rotated back through the
    /// rotation's transpose (the same angles, sin negated) into op-owned scratch, then the
    /// per-head RMSNorm's backward over the `[tokens * heads, head_dim]` rows with the shared
    /// weight: dweight summed over tokens and heads in the row backward's fixed block order
    /// (bitwise reproducible). Checked first; nothing recorded on error.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &QkNormRopeGradInputs,
        outputs: &QkNormRopeGradOutputs,
    ) -> Result<()> {
        let shape = inputs.x.shape();
        inputs.dy.expect_shape("dy", shape)?;
        let rows = [
            shape.iter().take(2).product::<usize>(),
            *shape.last().unwrap_or(&0),
        ];
        let forward = QkNormRopeInputs {
            x: inputs.dy,
            weight: None,
            angles: inputs.angles,
        };
        let rotate = !matches!(inputs.angles, RopeAngles::None);
        let dz = self.rotated.get(&self.ctx, shape, shape, self.cfg.dtype)?;
        let row_dy = if rotate { &dz } else { inputs.dy };
        let args = wgnorm_core::rowgrad::RowGradArgs {
            x: &inputs.x.reshape(&rows)?,
            residual: None,
            weight: inputs.weight,
            bias: None,
            dy: &row_dy.reshape(&rows)?,
            dsum: None,
            mean: None,
            rstd: None,
            dx: &outputs.dx.reshape(&rows)?,
            dweight: outputs.dweight,
            dbias: None,
        };
        // Both passes checked before either is recorded.
        self.check(&forward, &dz)?;
        self.grad.check_args(&args)?;
        wgnorm_core::binding::check_output_distinct(
            ("dx", outputs.dx),
            &[("x", inputs.x), ("dy", inputs.dy)],
        )?;
        if rotate {
            self.record(encoder, &forward, &dz, true)?;
        }
        self.grad.encode(encoder, &args)
    }

    /// Allocates dx and dweight, encodes the backward and submits (does not wait).
    pub fn backward(&self, inputs: &QkNormRopeGradInputs) -> Result<(Tensor, Tensor)> {
        let d = inputs.x.shape().last().copied().unwrap_or(0);
        let dx = self.ctx.empty(inputs.x.shape(), self.cfg.dtype)?;
        let dweight = self.ctx.empty(&[d], self.cfg.dtype)?;
        let outputs = QkNormRopeGradOutputs {
            dx: &dx,
            dweight: Some(&dweight),
        };
        self.ctx
            .record_and_submit(|enc| self.encode_backward(enc, inputs, &outputs))?;
        Ok((dx, dweight))
    }

    /// The forward, or with `inverse` the rotation's transpose alone (the backward's first
    /// pass, on dy).
    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &QkNormRopeInputs,
        y: &Tensor,
        inverse: bool,
    ) -> Result<()> {
        let (params, ranges) = match self.check(inputs, y)? {
            Some(c) => c,
            None => return Ok(()),
        };
        let io = Io {
            dtype: self.cfg.dtype,
            vec4: false,
        };
        self.ctx.check_io(io)?;
        let weight = inputs.weight.is_some();
        let angles = if params.rot == 0 {
            angles_value(&RopeAngles::None)
        } else {
            angles_value(&inputs.angles)
        };
        let layout = self.cfg.layout;
        let (spec, groups) = match self.team_plan(&params, &ranges, weight) {
            Some(plan) => (
                qk_rope_team_spec(io.dtype, plan, weight, layout, angles, (!inverse, inverse)),
                (params.rows as u64).div_ceil(plan.rows_per_workgroup() as u64),
            ),
            None => {
                let spec =
                    qk_rope_spec_with(io, params.d as usize, weight, layout, angles, !inverse)
                        .flag("INVERSE", inverse);
                (
                    with_wg(spec, qk_rope_wg(self.ctx.is_cpu())),
                    params.rows as u64,
                )
            }
        };
        let pipeline = self.ctx.pipeline(&spec)?;
        let refs: Vec<&binding::BufferRange> = ranges.iter().collect();
        let bind = self.binds.get(&self.ctx, QK_ROPE_SLOTS, &params, &refs)?;
        let groups = binding::grid(&self.ctx, groups);
        binding::dispatch(
            encoder,
            "wgnorm qk_norm_rope",
            &pipeline,
            &bind,
            (groups.0, groups.1, 1),
        );
        Ok(())
    }

    /// The register team's plan for a checked call: the adapter serves it and x, y (and the
    /// weight) are bound at offsets vec4 accesses allow.
    fn team_plan(
        &self,
        params: &QkRopeParams,
        ranges: &[binding::BufferRange],
        weight: bool,
    ) -> Option<TeamPlan> {
        let io = Io {
            dtype: self.cfg.dtype,
            vec4: true,
        };
        self.ctx.check_io(io).ok()?;
        let bound = [
            Some(&ranges[0]),
            weight.then_some(&ranges[1]),
            Some(&ranges[5]),
        ];
        if bound
            .iter()
            .flatten()
            .any(|r| r.offset % io.alignment() != 0)
        {
            return None;
        }
        let class = wgnorm_core::rownorm::AdapterClass::of(&self.ctx);
        let (d, rot) = (params.d as usize, params.rot as usize);
        TeamPlan::of(&class, d, rot, self.cfg.layout, self.cfg.dtype)
    }

    /// Allocates y, encodes and submits (does not wait).
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::Context;
    /// use wgnorm_rmsnorm::{QkNormRope, QkNormRopeConfig, QkNormRopeInputs, RopeAngles, RopeLayout};
    ///
    /// // Queries [tokens, heads, head_dim]: RMSNorm per head, then rotate pairs (NeoX: i, i + D/2).
    /// let ctx = Context::new()?;
    /// let (tokens, heads, d) = (2, 1, 4);
    /// let q = ctx.upload_f32(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], &[tokens, heads, d])?;
    /// // Token 0 is not rotated, token 1 by a quarter turn in its first pair.
    /// let cos = ctx.upload_f32(&[1.0, 1.0, 0.0, 1.0], &[tokens, d / 2])?;
    /// let sin = ctx.upload_f32(&[0.0, 0.0, 1.0, 0.0], &[tokens, d / 2])?;
    /// let op = QkNormRope::new(
    ///     &ctx,
    ///     QkNormRopeConfig { eps: 0.0, layout: RopeLayout::NeoX, ..Default::default() },
    /// )?;
    /// let y = op.forward(&QkNormRopeInputs {
    ///     x: &q,
    ///     weight: None,
    ///     angles: RopeAngles::Table { cos: &cos, sin: &sin },
    /// })?;
    /// let y = ctx.download(&y)?;
    /// // rms([1, 0, 0, 0]) = 1/2: the normalized head is [2, 0, 0, 0]; the rotation moves token 1's
    /// // first pair (x0, x2) = (2, 0) to (0, 2).
    /// assert_eq!(&y[..4], &[2.0, 0.0, 0.0, 0.0]);
    /// assert!(y[4].abs() < 1e-6 && (y[6] - 2.0).abs() < 1e-6);
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn forward(&self, inputs: &QkNormRopeInputs) -> Result<Tensor> {
        let y = self.ctx.empty(inputs.x.shape(), self.cfg.dtype)?;
        self.ctx
            .record_and_submit(|enc| self.encode(enc, inputs, &y))?;
        Ok(y)
    }

    /// Shapes, dtypes, bindings; the parameters and the six bound ranges, or `None` when empty.
    fn check(
        &self,
        inputs: &QkNormRopeInputs,
        y: &Tensor,
    ) -> Result<Option<(QkRopeParams, Vec<binding::BufferRange>)>> {
        let shape = inputs.x.shape();
        if shape.len() != 3 {
            return Err(Error::ShapeMismatch {
                what: "qk_norm_rope x [tokens, heads, head_dim]".into(),
                expected: vec![0, 0, 0],
                got: shape.to_vec(),
            });
        }
        let (tokens, heads, d) = (shape[0], shape[1], shape[2]);
        let dtype = self.cfg.dtype;
        inputs.x.expect_dtype("x", dtype)?;
        y.expect_dtype("y", dtype)?;
        y.expect_shape("y", shape)?;
        if let Some(w) = inputs.weight {
            w.expect_dtype("weight", dtype)?;
            w.expect_shape("weight", &[d])?;
        }
        let rot = self.cfg.rotary_dim.unwrap_or(d);
        if d > MAX_HEAD_DIM
            || rot > d
            || (rot % 2 == 1 && !matches!(inputs.angles, RopeAngles::None))
        {
            return Err(Error::InvalidParameter {
                name: "head_dim / rotary_dim",
                value: format!("{d} / {rot}"),
                why: "need head_dim <= 512 and an even rotary_dim <= head_dim",
            });
        }
        match inputs.angles {
            RopeAngles::Positions(p) => {
                p.expect_dtype("positions", DType::F32)?;
                p.expect_shape("positions", &[tokens])?;
            }
            RopeAngles::Table { cos, sin } => {
                for (what, t) in [("cos", cos), ("sin", sin)] {
                    t.expect_dtype(what, DType::F32)?;
                    t.expect_shape(what, &[tokens, rot / 2])?;
                }
            }
            RopeAngles::None => {}
        }
        if tokens * heads * d == 0 {
            return Ok(None);
        }
        let rows = tokens * heads;
        if rows > u32::MAX as usize / 2 {
            return Err(Error::TooLarge {
                what: "rows".into(),
                value: rows as u64,
                limit: u32::MAX as u64 / 2,
            });
        }
        let ctx = &self.ctx;
        let r = |what, t: &Tensor| binding::storage_range(ctx, what, t);
        let dr = binding::dummy_range(ctx.dummy_read());
        // A rotary dim of 0 rotates nothing: its angles (empty tables) are not bound.
        let (pos, cos, sin) = match inputs.angles {
            _ if rot == 0 => (dr.clone(), dr.clone(), dr.clone()),
            RopeAngles::Positions(p) => (r("positions", p)?, self.inv_freq_range(rot)?, dr.clone()),
            RopeAngles::Table { cos, sin } => (dr.clone(), r("cos", cos)?, r("sin", sin)?),
            RopeAngles::None => (dr.clone(), dr.clone(), dr.clone()),
        };
        let weight = inputs.weight.map(|w| r("weight", w)).transpose()?;
        let ranges = vec![
            r("x", inputs.x)?,
            weight.unwrap_or_else(|| dr.clone()),
            pos,
            cos,
            sin,
            r("y", y)?,
        ];
        binding::check_no_alias(&[
            ("x", Some(&ranges[0]), false),
            ("weight", inputs.weight.map(|_| &ranges[1]), false),
            ("y", Some(&ranges[5]), true),
        ])?;
        let params = QkRopeParams {
            rows: rows as u32,
            heads: heads as u32,
            d: d as u32,
            rot: if matches!(inputs.angles, RopeAngles::None) {
                0
            } else {
                rot as u32
            },
            eps: self.cfg.eps,
            weight_offset: self.cfg.weight_offset,
            _pad0: 0,
            _pad1: 0,
        };
        Ok(Some((params, ranges)))
    }

    /// The bound inverse-frequency table of rotary dim `rot` (uploaded on first use).
    fn inv_freq_range(&self, rot: usize) -> Result<binding::BufferRange> {
        let tables = || self.inv_freq.lock().unwrap_or_else(|e| e.into_inner());
        let cached = tables().get(&rot).cloned();
        let t = match cached {
            Some(t) => t,
            None => {
                // Uploaded outside the lock: no GPU call while a cache lock is held.
                let mut freq = inv_freq(self.cfg.base, rot);
                if freq.is_empty() {
                    freq.push(0.0);
                }
                let t = self.ctx.upload_f32(&freq, &[freq.len()])?;
                tables().entry(rot).or_insert(t).clone()
            }
        };
        binding::storage_range(&self.ctx, "inverse frequencies", &t)
    }
}
