//! The f16 <-> f32 conversions of the packed f16 I/O path (`shaders/common/half.wgsl`), run on
//! the device in a shader of the test's own and compared bit for bit with the `half` crate:
//! every f16 pattern, and f32 patterns around every rounding boundary of every exponent.

use wgnorm_core::shader::HALF_CONVERSIONS_WGSL;
use wgnorm_core::{DType, Tensor};
use wgnorm_tests::ctx;

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
    let ctx = ctx();
    let device = ctx.device();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("half conversions"),
        source: wgpu::ShaderSource::Wgsl(format!("{HALF_CONVERSIONS_WGSL}\n{HARNESS}").into()),
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
    let dst = ctx.empty(&[words.len()], DType::F32).unwrap();
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
    let groups = (input.len() as u32 / 4).div_ceil(64);
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

#[test]
fn f32_packs_round_to_nearest_even_at_every_boundary() {
    // Every sign and exponent; for each, every value of the ten mantissa bits an f16 keeps,
    // with the thirteen dropped bits just below, at and just above the halfway point (ties go
    // to even), zero, one and all ones. Covers overflow (65520 is a tie that rounds to
    // infinity), the subnormal range and its boundary, f32 subnormals, infinities and NaN.
    let low: [u32; 7] = [0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x0800];
    let mut input = Vec::new();
    for sign_exp in 0..512u32 {
        for kept in 0..1024u32 {
            for &l in &low {
                input.push(sign_exp << 23 | kept << 13 | l);
            }
        }
    }
    assert_eq!(input.len() % 4, 0, "the shader reads vec4 words");
    let got = run("pack", &input);
    let mut checked_ties = 0;
    for (&bits, &g) in input.iter().zip(&got) {
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
