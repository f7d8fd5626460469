//! Helpers shared by the workspace integration tests.

use std::sync::OnceLock;

use wgnorm_core::{Context, DeviceOptions};

/// The process-wide test context (the environment's device profile). Panics with the reason
/// (and what to install) when no adapter can be had: a GPU test never passes by skipping, in CI
/// or anywhere else.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| context(None))
}

/// A context whose device has `SHADER_F16` whatever the environment's device profile
/// (`WGNORM_WITHOUT_F16`), for the tests of the device's own f16 conversions. Panics when the
/// adapter lacks it (lavapipe has it).
pub fn ctx_with_shader_f16() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = context(Some(DeviceOptions::default()));
        assert!(
            c.features().contains(wgnorm_core::wgpu::Features::SHADER_F16),
            "this test checks the device's f16 conversions: its adapter needs SHADER_F16 (lavapipe has it)"
        );
        c
    })
}

/// A new context of its own (a fresh tuning table, other limits, ...): created as `options` say,
/// or with the environment's profile (`Context::new`) when `None`. Panics as [`ctx`] does.
pub fn context(options: Option<DeviceOptions>) -> Context {
    // Mesa's software Vulkan complains on headless machines without it.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let made = match options {
        Some(o) => Context::new_with(o),
        None => Context::new(),
    };
    made.unwrap_or_else(|e| {
        panic!(
            "GPU tests need an adapter: {e}\n\
             On Linux without a GPU: apt-get install -y mesa-vulkan-drivers (software Vulkan)."
        )
    })
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift), so failures reproduce.
pub fn noise(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Rounds values as storing them in `dtype` would, so references see what the GPU sees.
pub fn round_to(dtype: wgnorm_core::DType, v: &[f32]) -> Vec<f64> {
    match dtype {
        wgnorm_core::DType::F32 => v.iter().map(|&x| x as f64).collect(),
        wgnorm_core::DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f64()).collect(),
        wgnorm_core::DType::BF16 => v
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f64())
            .collect(),
    }
}

/// Asserts `|got - want| <= atol + rtol * |want|` element-wise (NaN must match NaN, infinities
/// must match exactly), reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        };
        if !ok {
            let excess = if g.is_finite() {
                (g - w).abs() - rtol * w.abs()
            } else {
                f64::INFINITY
            };
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} got {} want {} (atol {atol}, rtol {rtol}, {} elements)",
            got[i],
            want[i],
            got.len()
        );
    }
}

/// `p` points of dimension `d` inside the ball of curvature -c: random directions, radii spread
/// over [0, 0.99) of the ball's radius, every 7th point at exactly 0.99 of it.
pub fn ball_points(seed: u64, p: usize, d: usize, c: f64) -> Vec<f32> {
    let dirs = noise(seed, p * d);
    let radii = noise(seed + 1, p);
    let mut out = Vec::with_capacity(p * d);
    for i in 0..p {
        let v = &dirs[i * d..(i + 1) * d];
        let n = v
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        let r = if i % 7 == 3 {
            0.99
        } else {
            0.99 * (radii[i] as f64 + 1.0) / 2.0
        };
        let s = r / c.sqrt() / n;
        out.extend(v.iter().map(|x| (*x as f64 * s) as f32));
    }
    out
}
