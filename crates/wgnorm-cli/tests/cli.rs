//! The `wgnorm` command end to end: `info`, `run` on a conformance case (its output against the
//! case's expected values), and argument errors.

use std::path::PathBuf;
use std::process::Command;

fn wgnorm(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgnorm"));
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    c.args(args).output().expect("the wgnorm binary runs")
}

fn case(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/conformance/cases")
        .join(name)
}

fn f32s(st: &safetensors::SafeTensors, name: &str) -> Vec<f32> {
    let v = st.tensor(name).unwrap();
    assert_eq!(v.dtype(), safetensors::Dtype::F32);
    v.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn info_names_the_adapter_and_the_kernel_per_row_length() {
    let out = wgnorm(&["info"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("adapter:"), "{text}");
    for needle in ["| layer_norm | bf16 |", "| rms_norm | f16 |", "65536"] {
        assert!(text.contains(needle), "missing {needle}: {text}");
    }
}

#[test]
fn run_computes_a_case_with_its_own_attrs() {
    let input = case("layer_norm_f32_2x3x4x5_axis1.safetensors");
    let output =
        std::env::temp_dir().join(format!("wgnorm-cli-{}.safetensors", std::process::id()));
    let out = wgnorm(&[
        "run",
        "layer_norm",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (want_bytes, got_bytes) = (
        std::fs::read(&input).unwrap(),
        std::fs::read(&output).unwrap(),
    );
    let (want, got) = (
        safetensors::SafeTensors::deserialize(&want_bytes).unwrap(),
        safetensors::SafeTensors::deserialize(&got_bytes).unwrap(),
    );
    assert_eq!(got.tensor("y").unwrap().shape(), &[2, 3, 4, 5]);
    let (g, w) = (f32s(&got, "y"), f32s(&want, "expected.y"));
    let worst = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "max |y - expected.y| = {worst}");
    std::fs::remove_file(output).unwrap();
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = wgnorm(&["info", "--bogus"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let out = wgnorm(&["run", "--list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == "qk_norm_rope"));
    let out = wgnorm(&["run", "no_such_op", "--input", "a", "--output", "b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown op"));
}
