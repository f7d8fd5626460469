//! Region Normalization, RN-B (Yu et al. 2020; docs/methods.md A7, official `rn.py`).

use wgnorm_core::binding::{self, BindCache};
use wgnorm_core::chnorm::Layout;
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::shader::{snippet, Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Error, Result, Slot, Tensor};

wgnorm_core::uniform_block! {
    /// `RegionParams` (`batch_norm/region.wgsl`): Region Normalization over `(n, c, h, w)`
    /// with a mask of `hm x wm`.
    pub struct RegionParams {
        pub n: u32,
        pub c: u32,
        pub h: u32,
        pub w: u32,
        pub hm: u32,
        pub wm: u32,
        /// Tiles per (sample, channel) plane and accesses per tile.
        pub tiles: u32,
        pub tile_len: u32,
        pub eps: f32,
        /// RN-L: the mask threshold on the attention map.
        pub threshold: f32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

const SLOTS: &[Slot] = &[
    Slot::Uniform,
    Slot::Read,      // x
    Slot::Read,      // mask
    Slot::Read,      // gamma_f
    Slot::Read,      // gamma_b
    Slot::Read,      // beta_f
    Slot::Read,      // beta_b
    Slot::ReadWrite, // scratch
    Slot::ReadWrite, // y
];
pub(crate) const WG: u32 = 256;

/// What [`RegionNormB::new`] takes; `Default` gives the usual defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegionNormBConfig {
    /// Added to the region variances (scaled by NHW/S as the official code).
    pub eps: f32,
    /// Layout of x and y.
    pub layout: Layout,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for RegionNormBConfig {
    fn default() -> Self {
        RegionNormBConfig {
            eps: 1e-5,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

/// RN-B: per channel, BatchNorm statistics (batch, biased, also at inference, as the official
/// code) inside the region mask and outside it; each pixel is normalized with its region's:
/// `y = (x - mu_r) / sqrt(var_r + eps * NHW / S_r) * (1 + gamma_r) + beta_f + beta_b`, r the
/// foreground (mask 1, `gamma_f`) or background (`gamma_b`), `S_r` the region's pixel count (an
/// empty region counts 1; it has no pixels to normalize). This is the official
/// `BN(x*M + (1-M)*mu) * sqrt(S/NHW)` written without the detour (docs/methods.md A7).
///
/// The mask, f32 with 1 = foreground (values > 0.5), `[N, 1, Hm, Wm]` for NCHW or
/// `[N, Hm, Wm, 1]` for NHWC, is resized to the feature size by nearest neighbour on the GPU
/// (PyTorch's `interpolate(mode="nearest")`). Parameters are f32 `[C]` (zeros at init).
pub struct RegionNormB {
    pub(crate) ctx: Context,
    pub(crate) eps: f32,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) binds: BindCache,
    pub(crate) scratch: ScratchCache,
    /// The backward's bind groups and parameter-gradient sinks.
    pub(crate) grad_binds: BindCache,
    pub(crate) grad_scratch: ScratchCache,
}

/// Tensors of an RN-B call.
#[derive(Clone, Copy, Debug)]
pub struct RegionNormInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// The binary region mask (f32, 1 = inside), resized to x's spatial size by nearest neighbour.
    pub mask: &'a Tensor,
    /// Per-channel scale offsets inside (`1 + gamma_f`) and outside (`1 + gamma_b`) the region.
    pub gamma_f: &'a Tensor,
    /// See `gamma_f`.
    pub gamma_b: &'a Tensor,
    /// Per-channel shifts, both added at every pixel.
    pub beta_f: &'a Tensor,
    /// See `beta_f`.
    pub beta_b: &'a Tensor,
}

impl RegionNormB {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: RegionNormBConfig) -> Result<RegionNormB> {
        let RegionNormBConfig { eps, layout, dtype } = cfg;
        wgnorm_core::check_eps(eps)?;
        // Region Norm reads one element at a time (f16 as packed words without SHADER_F16).
        ctx.check_io(Io { dtype, vec4: false })?;
        Ok(RegionNormB {
            ctx: ctx.clone(),
            eps,
            layout,
            dtype,
            binds: BindCache::default(),
            scratch: ScratchCache::default(),
            grad_binds: BindCache::default(),
            grad_scratch: ScratchCache::default(),
        })
    }

    /// `[n, c, h, w, hm, wm]` of a call whose output is `y`, every input checked.
    pub(crate) fn dims(&self, a: &RegionNormInputs, y: &Tensor) -> Result<[usize; 6]> {
        let (n, c, h, w) = dims_of(a.x, y, self.layout, self.dtype)?;
        let ms = a.mask.shape();
        let (mn, hm, wm, one) = match (self.layout, ms) {
            (Layout::Nchw, [mn, one, hm, wm]) => (*mn, *hm, *wm, *one),
            (Layout::Nhwc, [mn, hm, wm, one]) => (*mn, *hm, *wm, *one),
            _ => (usize::MAX, 0, 0, 0),
        };
        if mn != n || one != 1 || a.mask.dtype() != DType::F32 || (n * h * w > 0 && hm * wm == 0) {
            return Err(Error::ShapeMismatch {
                what: format!("mask (f32, {n} x 1 x Hm x Wm in the layout of x)"),
                expected: match self.layout {
                    Layout::Nchw => vec![n, 1, h, w],
                    Layout::Nhwc => vec![n, h, w, 1],
                },
                got: ms.to_vec(),
            });
        }
        for (what, t) in [
            ("gamma_f", a.gamma_f),
            ("gamma_b", a.gamma_b),
            ("beta_f", a.beta_f),
            ("beta_b", a.beta_b),
        ] {
            if t.dtype() != DType::F32 || t.numel() != c {
                return Err(Error::ShapeMismatch {
                    what: format!("{what} (f32)"),
                    expected: vec![c],
                    got: t.shape().to_vec(),
                });
            }
        }
        Ok([n, c, h, w, hm, wm])
    }

    /// Records RN-B: the resized mask, the statistics inside and outside it, the output.
    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        a: &RegionNormInputs,
        y: &Tensor,
    ) -> Result<()> {
        let [n, c, h, w, hm, wm] = self.dims(a, y)?;
        let params = [a.mask, a.gamma_f, a.gamma_b, a.beta_f, a.beta_b];
        record(
            &self.ctx,
            &self.binds,
            &self.scratch,
            enc,
            (a.x, y, params),
            [n, c, h, w, hm, wm],
            (self.eps, None),
            (self.layout, self.dtype, false),
        )
        .map(|_| ())
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, a: &RegionNormInputs) -> Result<Tensor> {
        let y = self.ctx.empty(a.x.shape(), self.dtype)?;
        self.ctx.record_and_submit(|enc| self.encode(enc, a, &y))?;
        Ok(y)
    }
}

/// Region Normalization RN-L (Yu et al. 2020; docs/methods.md A7, official `rn.py`): the region is
/// learned from x. `s = sigmoid(conv7x7([mean_c x, max_c x]))` (2 -> 1 channels, no bias),
/// `M = [s >= threshold]` (0.8; detached in training), then RN over the two regions as
/// [`RegionNormB`] (batch statistics, `eps * NHW / S`), scaled and shifted by the per-pixel maps
/// `gamma = conv7x7(s) + b_g` and `beta = conv7x7(s) + b_b`: `y = r (1 + gamma) + beta`. The three
/// small convolutions (zero padding 3, cross-correlation as `torch.nn.Conv2d`) are part of the op.
pub struct RegionNormL {
    ctx: Context,
    eps: f32,
    threshold: f32,
    layout: Layout,
    dtype: DType,
    binds: BindCache,
    scratch: ScratchCache,
}

/// Tensors of an RN-L call (f32): `mask_conv` `[1, 2, 7, 7]` (input channel 0 the channel mean, 1
/// the channel max), `gamma_conv`, `beta_conv` `[1, 1, 7, 7]` with biases `[1]`.
#[derive(Clone, Copy, Debug)]
pub struct RegionNormLInputs<'a> {
    /// Input, row-major, in the op's dtype.
    pub x: &'a Tensor,
    /// The 7x7 mask convolution `[1, 2, 7, 7]` over `[mean_c x, max_c x]` (no bias).
    pub mask_conv: &'a Tensor,
    /// The 7x7 convolution `[1, 1, 7, 7]` giving the spatial gamma map from the attention map.
    pub gamma_conv: &'a Tensor,
    /// Its bias `[1]`.
    pub gamma_conv_bias: &'a Tensor,
    /// The 7x7 convolution `[1, 1, 7, 7]` giving the spatial beta map.
    pub beta_conv: &'a Tensor,
    /// Its bias `[1]`.
    pub beta_conv_bias: &'a Tensor,
}

/// What [`RegionNormL::new`] takes; `Default` gives the paper's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegionNormLConfig {
    /// Added to the region variances (scaled by NHW/S as the official code).
    pub eps: f32,
    /// Mask threshold on the sigmoid attention map.
    pub threshold: f32,
    /// Layout of x and y.
    pub layout: Layout,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for RegionNormLConfig {
    fn default() -> Self {
        RegionNormLConfig {
            eps: 1e-5,
            threshold: 0.8,
            layout: Layout::Nchw,
            dtype: DType::F32,
        }
    }
}

impl RegionNormL {
    /// The op bound to `ctx` with `cfg`; an invalid configuration is a typed error.
    pub fn new(ctx: &Context, cfg: RegionNormLConfig) -> Result<RegionNormL> {
        let RegionNormLConfig {
            eps,
            threshold,
            layout,
            dtype,
        } = cfg;
        if !(eps.is_finite() && eps >= 0.0 && threshold.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "eps / threshold",
                value: format!("{eps} / {threshold}"),
                why: "eps must be finite and >= 0, the threshold finite",
            });
        }
        // Region Norm reads one element at a time (f16 as packed words without SHADER_F16).
        ctx.check_io(Io { dtype, vec4: false })?;
        Ok(RegionNormL {
            ctx: ctx.clone(),
            eps,
            threshold,
            layout,
            dtype,
            binds: BindCache::default(),
            scratch: ScratchCache::default(),
        })
    }

    /// Records RN-L: the attention map and its mask, the two region statistics, the spatial affine.
    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        a: &RegionNormLInputs,
        y: &Tensor,
    ) -> Result<()> {
        let (n, c, h, w) = dims_of(a.x, y, self.layout, self.dtype)?;
        for (what, t, len) in [
            ("mask_conv", a.mask_conv, 98),
            ("gamma_conv", a.gamma_conv, 49),
            ("gamma_conv_bias", a.gamma_conv_bias, 1),
            ("beta_conv", a.beta_conv, 49),
            ("beta_conv_bias", a.beta_conv_bias, 1),
        ] {
            if t.dtype() != DType::F32 || t.numel() != len {
                return Err(Error::ShapeMismatch {
                    what: format!("{what} (f32, {len} values)"),
                    expected: vec![len],
                    got: t.shape().to_vec(),
                });
            }
        }
        record(
            &self.ctx,
            &self.binds,
            &self.scratch,
            enc,
            (
                a.x,
                y,
                [
                    a.mask_conv,
                    a.gamma_conv,
                    a.gamma_conv_bias,
                    a.beta_conv,
                    a.beta_conv_bias,
                ],
            ),
            [n, c, h, w, h, w],
            (self.eps, Some(self.threshold)),
            (self.layout, self.dtype, false),
        )
        .map(|_| ())
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, a: &RegionNormLInputs) -> Result<Tensor> {
        let y = self.ctx.empty(a.x.shape(), self.dtype)?;
        self.ctx.record_and_submit(|enc| self.encode(enc, a, &y))?;
        Ok(y)
    }
}

/// (N, C, H, W) of a 4-D activation in `layout`, with the dtype and y-shape checks.
fn dims_of(
    x: &Tensor,
    y: &Tensor,
    layout: Layout,
    dtype: DType,
) -> Result<(usize, usize, usize, usize)> {
    let s = x.shape();
    if s.len() != 4 {
        return Err(Error::ShapeMismatch {
            what: "x (N, C, H, W) or (N, H, W, C)".into(),
            expected: vec![0; 4],
            got: s.to_vec(),
        });
    }
    x.expect_dtype("x", dtype)?;
    y.expect_dtype("y", dtype)?;
    y.expect_shape("y", s)?;
    Ok(match layout {
        Layout::Nchw => (s[0], s[1], s[2], s[3]),
        Layout::Nhwc => (s[0], s[3], s[1], s[2]),
    })
}

/// The staged kernel for RN-B (`threshold` None: `params` are mask, gamma_f, gamma_b, beta_f,
/// beta_b) or RN-L (`params` are the mask conv, gamma conv weight and bias, beta conv weight
/// and bias). `for_grad`: the statistics only (no output stage; y is not written), in a scratch
/// with room for the backward's; returns that scratch and the parameter block.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    ctx: &Context,
    binds: &BindCache,
    scratch_cache: &ScratchCache,
    enc: &mut wgpu::CommandEncoder,
    tensors: (&Tensor, &Tensor, [&Tensor; 5]),
    dims: [usize; 6],
    eps_threshold: (f32, Option<f32>),
    (layout, dtype, for_grad): (Layout, DType, bool),
) -> Result<Option<(Tensor, RegionParams)>> {
    let (x, y, p) = tensors;
    let [n, c, h, w, hm, wm] = dims;
    let (eps, threshold) = eps_threshold;
    let s = x.shape();
    if x.numel() == 0 {
        return Ok(None);
    }
    let pixels = n * h * w;
    let per_tile = WG as usize * if ctx.is_cpu() { 64 } else { 16 };
    let tiles = pixels.div_ceil(per_tile).clamp(1, 4096);
    let tile_len = pixels.div_ceil(tiles);
    if ctx.is_cpu() && (tile_len.div_ceil(WG as usize) + tiles) as u64 > 60_000 {
        return Err(Error::InvalidParameter {
            name: "shape",
            value: format!("{s:?}"),
            why:
                "on a CPU adapter an invocation would loop past the driver's 65535-iteration limit",
        });
    }
    let rnl = threshold.is_some();
    let len = pixels + c * tiles * 6 + 5 * c + if rnl { 5 * pixels } else { 0 };
    // The backward's tail (`region_grad.wgsl`): stats, partials, sums.
    let len = len + if for_grad { 10 * c + 4 * c * tiles } else { 0 };
    let scratch = scratch_cache.get(ctx, s, &[len], DType::F32)?;
    let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
    let ranges = [
        r(x, "x")?,
        r(p[0], "mask")?,
        r(p[1], "gamma_f")?,
        r(p[2], "gamma_b")?,
        r(p[3], "beta_f")?,
        r(p[4], "beta_b")?,
        r(&scratch, "scratch")?,
        r(y, "y")?,
    ];
    binding::check_no_alias(&[
        ("x", Some(&ranges[0]), false),
        ("mask", Some(&ranges[1]), false),
        ("gamma_f", Some(&ranges[2]), false),
        ("gamma_b", Some(&ranges[3]), false),
        ("beta_f", Some(&ranges[4]), false),
        ("beta_b", Some(&ranges[5]), false),
        ("y", Some(&ranges[7]), true),
    ])?;
    let u = |v: usize| {
        u32::try_from(v).map_err(|_| Error::InvalidParameter {
            name: "shape",
            value: format!("{s:?}"),
            why: "a dimension exceeds 2^32 - 1",
        })
    };
    let params = RegionParams {
        n: u(n)?,
        c: u(c)?,
        h: u(h)?,
        w: u(w)?,
        hm: u(hm)?,
        wm: u(wm)?,
        tiles: u(tiles)?,
        tile_len: u(tile_len)?,
        eps,
        threshold: threshold.unwrap_or(0.0),
        _pad1: 0,
        _pad2: 0,
    };
    let bind = binds.get(ctx, SLOTS, &params, &ranges.iter().collect::<Vec<_>>())?;
    let io = Io { dtype, vec4: false };
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("wgnorm region norm"),
        timestamp_writes: None,
    });
    let per_pixel = pixels.div_ceil(WG as usize);
    let mut stages = if rnl {
        vec![(4, per_pixel), (5, per_pixel), (6, per_pixel)]
    } else {
        vec![(0, per_pixel)]
    };
    stages.extend([(1, c * tiles), (2, c.div_ceil(WG as usize))]);
    if !for_grad {
        stages.push((3, x.numel().div_ceil(WG as usize)));
    }
    for (stage, g) in stages {
        let pipeline = ctx.pipeline(&region_spec(io, stage, layout == Layout::Nhwc, rnl))?;
        let (gx, gy) = binding::grid(ctx, g as u64);
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
    }
    Ok(Some((scratch, params)))
}

/// What both region kernels share: the parameter block, x's layout, the regions' statistics.
pub(crate) const REGION_COMMON: &str = wgnorm_core::shader_file!("batch_norm/region_common.wgsl");

/// The staged Region Normalization kernel.
pub const REGION_KERNEL: Kernel = Kernel::new(
    "batch_norm/region",
    &[
        snippet::MOMENTS,
        REGION_COMMON,
        wgnorm_core::shader_file!("batch_norm/region.wgsl"),
    ],
    SLOTS,
);

/// Stage `stage` (0: RN-B's mask resize; 1-3: statistics, merge, output; 4-6: RN-L's mask and
/// affine maps) of the region kernel.
fn region_spec(io: Io, stage: u32, nhwc: bool, rnl: bool) -> Specialization {
    Specialization::new(REGION_KERNEL, io)
        .set("WG", WG)
        .set("STAGE", stage)
        .flag("NHWC", nhwc)
        .flag("RNL", rnl)
}

/// The pipelines RN-B and RN-L create, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for rnl in [false, true] {
            for stage in 0..7 {
                for nhwc in [false, true] {
                    out.push(region_spec(Io { dtype, vec4: false }, stage, nhwc, rnl));
                }
            }
        }
    }
    out
}
