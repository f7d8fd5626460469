//! f16 storage without `SHADER_F16`: the packed access (u32 words; one-element accesses store
//! their half with two atomics) gives the same bits as the device's f16 types, for every f16
//! conformance case (every op, forward and backward, odd lengths, both layouts), and a store
//! never disturbs the other half of a word it shares with data outside the tensor.

use std::path::Path;

use wgnorm::engine::shader::F16Access;
use wgnorm::layernorm::{LayerNorm, LayerNormConfig, LayerNormInputs, LayerNormOutputs};
use wgnorm::{conformance, Context, DType, DeviceOptions, Tensor};

fn context(access: F16Access) -> Context {
    // Vector needs SHADER_F16 (lavapipe has it); the error says so.
    wgnorm_tests::context(Some(DeviceOptions {
        f16_access: Some(access),
        ..Default::default()
    }))
}

/// Bit patterns, with every NaN as one pattern (payloads are not part of the contract).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() })
        .collect()
}

#[test]
fn every_f16_conformance_case_gives_the_same_bits_packed_and_vector() {
    let (packed, vector) = (context(F16Access::Packed), context(F16Access::Vector));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut compared = 0;
    let mut scalar = 0;
    for dir in ["cases", "wgnorm"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        for path in files {
            let case = conformance::load(&path).unwrap();
            let f16 = case.inputs.values().any(|t| t.dtype == "F16");
            if !f16 {
                continue;
            }
            let run = |ctx: &Context| {
                conformance::execute(ctx, &case.op, case.attrs.clone(), case.inputs.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name))
            };
            let (a, b) = (run(&packed), run(&vector));
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
            for (name, va) in &a {
                let vb = &b[name];
                let first = bits(va).iter().zip(bits(vb)).position(|(x, y)| *x != y);
                assert!(
                    first.is_none(),
                    "{} output {name}: element {} is {} packed, {} vector",
                    case.name,
                    first.unwrap(),
                    va[first.unwrap()],
                    vb[first.unwrap()]
                );
            }
            // Cases whose normalized length is odd take the one-element access.
            let odd = case
                .inputs
                .get("x")
                .and_then(|x| x.shape.last())
                .map(|n| n % 2 == 1);
            if odd == Some(true) {
                scalar += 1;
            }
            compared += 1;
        }
    }
    assert!(compared >= 30, "only {compared} f16 cases compared");
    assert!(scalar >= 5, "only {scalar} f16 cases of odd length");
}

/// y viewed in a buffer whose bytes around it are a sentinel: rows of odd length end in the
/// middle of a word, whose other half belongs to the buffer's next bytes.
#[test]
fn packed_f16_stores_leave_the_neighbouring_half_alone() {
    let ctx = context(F16Access::Packed);
    let (rows, n) = (3, 7);
    let x: Vec<f32> = (0..rows * n).map(|i| (i as f32 * 0.37).sin()).collect();
    let xt = ctx.upload(&x, &[rows, n], DType::F16).unwrap();
    // 21 halves (42 bytes) at offset 0 of a 64-byte buffer filled with 0xABCD halves.
    let sentinel = half::f16::from_bits(0xABCD);
    let fill = vec![sentinel; 32];
    let buffer = ctx.upload_f16(&fill, &[32]).unwrap().buffer().clone();
    let y = Tensor::from_buffer(buffer.clone(), 0, &[rows, n], DType::F16).unwrap();
    let ln = LayerNorm::new(
        &ctx,
        LayerNormConfig {
            dtype: DType::F16,
            ..Default::default()
        },
    )
    .unwrap();
    let inputs = LayerNormInputs {
        x: &xt,
        weight: None,
        bias: None,
    };
    let outputs = LayerNormOutputs {
        y: &y,
        mean: None,
        rstd: None,
    };
    ctx.record_and_submit(|enc| ln.encode(enc, &inputs, &outputs))
        .unwrap();
    let all = Tensor::from_buffer(buffer, 0, &[32], DType::F16).unwrap();
    let got = ctx.download(&all).unwrap();
    for (i, v) in got.iter().enumerate().skip(rows * n) {
        assert_eq!(
            half::f16::from_f32(*v).to_bits(),
            0xABCD,
            "half {i} past the tensor changed"
        );
    }
    for row in got[..rows * n].chunks(n) {
        let mean = row.iter().sum::<f32>() / n as f32;
        assert!(mean.abs() < 2e-3, "row mean {mean}: {row:?}");
    }
}
