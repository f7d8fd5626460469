//! The f16 <-> f32 conversions of the packed f16 I/O path (`shaders/common/half.wgsl`), run on
//! the device in a shader of the test's own and compared bit for bit with the `half` crate:
//! every f16 pattern, and f32 patterns around every rounding boundary of every exponent.

use wgnorm_core::shader::{HALF_CONVERSIONS_WGSL, IO_F16_V4_VECTOR};
use wgnorm_core::{Context, DType, Tensor};
use wgnorm_tests::{ctx, ctx_with_shader_f16};

const HARNESS: &str = r#"
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;

fn index(g: vec3<u32>) -> u32 {
    return g.x + g.y * 65535u * 64u;
}

@compute @workgroup_size(64)
fn unpack(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = index(g);
    if (i < arrayLength(&src)) {
        dst[i] = bitcast<vec4<u32>>(half_to_f32(src[i]));
    }
}

@compute @workgroup_size(64)
fn pack(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = index(g);
    if (i < arrayLength(&src)) {
        dst[i] = f32_to_half(bitcast<vec4<f32>>(src[i]));
    }
}
"#;

/// Runs entry point `entry` over `input` (a multiple of 4 words) and returns the output words.
/// The words travel as f32 tensors: upload and download copy their bits unchanged.
fn run(entry: &str, input: &[u32]) -> Vec<u32> {
    run_with(
        ctx(),
        &format!("{HALF_CONVERSIONS_WGSL}\n{HARNESS}"),
        entry,
        input,
        input.len(),
    )
}

/// `run` with the shader `source`, whose entry writes `out_words` words (one invocation per
/// four of the larger side).
fn run_with(ctx: &Context, source: &str, entry: &str, input: &[u32], out_words: usize) -> Vec<u32> {
    let device = ctx.device();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("half conversions"),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    });
    let words: Vec<f32> = input.iter().map(|&w| f32::from_bits(w)).collect();
    let src = ctx.upload_f32(&words, &[words.len()]).unwrap();
    let dst = ctx.empty(&[out_words], DType::F32).unwrap();
    fn binding(t: &Tensor) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: t.buffer(),
            offset: t.offset(),
            size: std::num::NonZeroU64::new(t.byte_len()),
        })
    }
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: binding(&src),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: binding(&dst),
            },
        ],
    });
    let groups = (input.len().max(out_words) as u32 / 4).div_ceil(64);
    let (gx, gy) = (groups.min(65535), groups.div_ceil(65535));
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
    }
    ctx.queue().submit([enc.finish()]);
    ctx.download(&dst)
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn every_f16_pattern_unpacks_exactly() {
    let input: Vec<u32> = (0..=u16::MAX as u32).collect();
    let got = run("unpack", &input);
    for (&h, &g) in input.iter().zip(&got) {
        let want = half::f16::from_bits(h as u16).to_f32();
        let g = f32::from_bits(g);
        if want.is_nan() {
            assert!(g.is_nan(), "f16 {h:#06x}: got {g:e}, want NaN");
        } else {
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "f16 {h:#06x}: got {g:e}, want {want:e}"
            );
        }
    }
}

/// A shader of the vector f16 snippet whose entry `main` writes `dst[i] = f(src[i])` (`f` is
/// `to_v` or `from_v`), with `src` and `dst` arrays of `src_ty` and `dst_ty`.
fn vector_harness(f: &str, src_ty: &str, dst_ty: &str) -> String {
    // `enable f16;` opens the snippet: it must come first in the module.
    format!(
        "{IO_F16_V4_VECTOR}
@group(0) @binding(0) var<storage, read> src: array<{src_ty}>;
@group(0) @binding(1) var<storage, read_write> dst: array<{dst_ty}>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {{
    let i = g.x + g.y * 65535u * 64u;
    if (i < arrayLength(&src)) {{
        dst[i] = {f}(src[i]);
    }}
}}
"
    )
}

#[test]
fn every_f16_pattern_loads_exactly_through_vector_conversions() {
    // The device's own conversions: a device with SHADER_F16 whatever the environment's profile.
    let c = ctx_with_shader_f16();
    // Two f16 patterns per input word; 65536 patterns in 32768 words, 65536 f32 out.
    let input: Vec<u32> = (0..=u16::MAX as u32 / 2)
        .map(|i| (2 * i) | (2 * i + 1) << 16)
        .collect();
    let source = vector_harness("to_v", "vec4<f16>", "vec4<f32>");
    let got = run_with(c, &source, "main", &input, 2 * input.len());
    let mut wrong = Vec::new();
    for (h, &g) in (0..=u16::MAX).zip(&got) {
        let want = half::f16::from_bits(h).to_f32();
        let g = f32::from_bits(g);
        let ok = if want.is_nan() {
            g.is_nan()
        } else {
            g.to_bits() == want.to_bits()
        };
        if !ok {
            wrong.push(format!("{h:#06x}: got {g:e}, want {want:e}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 65536 wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(8)]
    );
}

#[test]
fn f32_packs_round_to_nearest_even_at_every_boundary() {
    let input = rounding_boundaries();
    let got = run("pack", &input);
    check_rounding(&input, &got);
}

#[test]
fn f32_stores_round_to_nearest_even_through_vector_conversions() {
    // The device's own conversions: a device with SHADER_F16 whatever the environment's profile.
    let c = ctx_with_shader_f16();
    let input = rounding_boundaries();
    let source = vector_harness("from_v", "vec4<f32>", "vec4<f16>");
    // Two halves per output word.
    let words = run_with(c, &source, "main", &input, input.len() / 2);
    let got: Vec<u32> = words.iter().flat_map(|w| [w & 0xffff, w >> 16]).collect();
    check_rounding(&input, &got);
}

/// Every sign and exponent; for each, every value of the ten mantissa bits an f16 keeps, with
/// the thirteen dropped bits just below, at and just above the halfway point (ties go to even),
/// zero, one and all ones. Covers overflow (65520 is a tie that rounds to infinity), the
/// subnormal range and its boundary, f32 subnormals, infinities and NaN.
fn rounding_boundaries() -> Vec<u32> {
    let low: [u32; 7] = [0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x0800];
    let mut input = Vec::new();
    for sign_exp in 0..512u32 {
        for kept in 0..1024u32 {
            for &l in &low {
                input.push(sign_exp << 23 | kept << 13 | l);
            }
        }
    }
    assert_eq!(input.len() % 4, 0, "the shaders read vec4 words");
    input
}

/// `got[i]` (an f16 pattern in the low bits) is f32 `input[i]` rounded to nearest even.
fn check_rounding(input: &[u32], got: &[u32]) {
    let mut checked_ties = 0;
    for (&bits, &g) in input.iter().zip(got) {
        let f = f32::from_bits(bits);
        let want = half::f16::from_f32(f);
        if want.is_nan() {
            let h = half::f16::from_bits(g as u16);
            assert!(
                g <= 0xffff && h.is_nan(),
                "f32 {f:e} ({bits:#010x}): got {g:#06x}, want NaN"
            );
        } else {
            assert_eq!(
                g,
                want.to_bits() as u32,
                "f32 {f:e} ({bits:#010x}): got {g:#06x}, want {:#06x}",
                want.to_bits()
            );
        }
        checked_ties += (bits & 0x1fff == 0x1000) as u32;
    }
    assert!(checked_ties > 500_000, "{checked_ties} ties checked");
}
