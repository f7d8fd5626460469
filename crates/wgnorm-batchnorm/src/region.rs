//! Region Normalization, RN-B (Yu et al. 2020; NORMS.md A7, official `rn.py`).

use wgnorm_core::binding::{self, BindCache, PARAM_WORDS};
use wgnorm_core::chnorm::Layout;
use wgnorm_core::scratch::ScratchCache;
use wgnorm_core::shader::{Io, Kernel, Specialization};
use wgnorm_core::{Context, DType, Error, Result, Slot, Tensor};

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
const WG: u32 = 256;

/// RN-B: per channel, BatchNorm statistics (batch, biased, also at inference, as the official
/// code) inside the region mask and outside it; each pixel is normalized with its region's:
/// `y = (x - mu_r) / sqrt(var_r + eps * NHW / S_r) * (1 + gamma_r) + beta_f + beta_b`, r the
/// foreground (mask 1, `gamma_f`) or background (`gamma_b`), `S_r` the region's pixel count (an
/// empty region counts 1; it has no pixels to normalize). This is the official
/// `BN(x*M + (1-M)*mu) * sqrt(S/NHW)` written without the detour (NORMS.md A7).
///
/// The mask, f32 with 1 = foreground (values > 0.5), `[N, 1, Hm, Wm]` for NCHW or
/// `[N, Hm, Wm, 1]` for NHWC, is resized to the feature size by nearest neighbour on the GPU
/// (PyTorch's `interpolate(mode="nearest")`). Parameters are f32 `[C]` (zeros at init).
pub struct RegionNormB {
    ctx: Context,
    eps: f32,
    layout: Layout,
    dtype: DType,
    binds: BindCache,
    scratch: ScratchCache,
}

/// Tensors of an RN-B call.
#[derive(Clone, Copy, Debug)]
pub struct RegionNormInputs<'a> {
    pub x: &'a Tensor,
    pub mask: &'a Tensor,
    pub gamma_f: &'a Tensor,
    pub gamma_b: &'a Tensor,
    pub beta_f: &'a Tensor,
    pub beta_b: &'a Tensor,
}

impl RegionNormB {
    pub fn new(ctx: &Context, eps: f32, layout: Layout, dtype: DType) -> Result<RegionNormB> {
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "eps",
                value: eps.to_string(),
                why: "must be finite and >= 0",
            });
        }
        ctx.check_dtype(dtype)?;
        Ok(RegionNormB {
            ctx: ctx.clone(),
            eps,
            layout,
            dtype,
            binds: BindCache::default(),
            scratch: ScratchCache::default(),
        })
    }

    pub fn encode(
        &self,
        enc: &mut wgpu::CommandEncoder,
        a: &RegionNormInputs,
        y: &Tensor,
    ) -> Result<()> {
        let s = a.x.shape();
        if s.len() != 4 {
            return Err(Error::ShapeMismatch {
                what: "x (N, C, H, W) or (N, H, W, C)".into(),
                expected: vec![0; 4],
                got: s.to_vec(),
            });
        }
        let (n, c, h, w) = match self.layout {
            Layout::Nchw => (s[0], s[1], s[2], s[3]),
            Layout::Nhwc => (s[0], s[3], s[1], s[2]),
        };
        for (what, t, dtype) in [("x", a.x, self.dtype), ("y", y, self.dtype)] {
            if t.dtype() != dtype {
                return Err(Error::DTypeMismatch {
                    what: what.into(),
                    expected: dtype,
                    got: t.dtype(),
                });
            }
        }
        if y.shape() != s {
            return Err(Error::ShapeMismatch {
                what: "y".into(),
                expected: s.to_vec(),
                got: y.shape().to_vec(),
            });
        }
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
        if a.x.numel() == 0 {
            return Ok(());
        }
        let ctx = &self.ctx;
        let pixels = n * h * w;
        let per_tile = WG as usize * if ctx.is_cpu() { 64 } else { 16 };
        let tiles = pixels.div_ceil(per_tile).clamp(1, 4096);
        let tile_len = pixels.div_ceil(tiles);
        if ctx.is_cpu() && (tile_len.div_ceil(WG as usize) + tiles) as u64 > 60_000 {
            return Err(Error::InvalidParameter {
                name: "shape",
                value: format!("{s:?}"),
                why: "on a CPU adapter an invocation would loop past the driver's 65535-iteration limit",
            });
        }
        let len = pixels + c * tiles * 6 + 5 * c;
        let scratch = self.scratch.get(ctx, s, &[len], DType::F32)?;
        let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
        let ranges = [
            r(a.x, "x")?,
            r(a.mask, "mask")?,
            r(a.gamma_f, "gamma_f")?,
            r(a.gamma_b, "gamma_b")?,
            r(a.beta_f, "beta_f")?,
            r(a.beta_b, "beta_b")?,
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
        let mut params = [0u32; PARAM_WORDS];
        for (i, v) in [n, c, h, w, hm, wm, tiles, tile_len]
            .into_iter()
            .enumerate()
        {
            params[i] = u32::try_from(v).map_err(|_| Error::InvalidParameter {
                name: "shape",
                value: format!("{s:?}"),
                why: "a dimension exceeds 2^32 - 1",
            })?;
        }
        params[8] = self.eps.to_bits();
        let bind = self
            .binds
            .get(ctx, SLOTS, &params, &ranges.iter().collect::<Vec<_>>())?;
        let io = Io {
            dtype: self.dtype,
            vec4: false,
        };
        let nhwc = if self.layout == Layout::Nhwc {
            1.0
        } else {
            0.0
        };
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgnorm region norm"),
            timestamp_writes: None,
        });
        let groups = [
            pixels.div_ceil(WG as usize),
            c * tiles,
            c.div_ceil(WG as usize),
            a.x.numel().div_ceil(WG as usize),
        ];
        for (stage, g) in groups.into_iter().enumerate() {
            let pipeline = ctx.pipeline(
                Kernel::ChannelRegion,
                io,
                SLOTS,
                &[("WG", WG as f64), ("STAGE", stage as f64), ("NHWC", nhwc)],
            )?;
            let (gx, gy) = binding::grid(ctx, g as u64);
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        Ok(())
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, a: &RegionNormInputs) -> Result<Tensor> {
        let y = self.ctx.empty(a.x.shape(), self.dtype)?;
        let mut enc = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        self.encode(&mut enc, a, &y)?;
        self.ctx.queue().submit([enc.finish()]);
        Ok(y)
    }
}

/// The pipelines RN-B creates, for `cargo xtask validate`.
pub fn specializations() -> Vec<Specialization> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for stage in 0..4 {
            for nhwc in [0.0, 1.0] {
                out.push(Specialization {
                    kernel: Kernel::ChannelRegion,
                    io: Io { dtype, vec4: false },
                    constants: vec![("WG", WG as f64), ("STAGE", stage as f64), ("NHWC", nhwc)],
                });
            }
        }
    }
    out
}
