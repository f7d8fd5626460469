//! Every vendored conformance case (tests/conformance/cases, copied from shared/conformance)
//! through the same registry `cargo xtask conformance` uses.

use std::path::Path;

use wgnorm::conformance::{self, Outcome};
use wgnorm_tests::ctx;

#[test]
fn vendored_cases_pass_for_every_implemented_op() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("vendored cases")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    assert!(
        files.len() > 100,
        "expected the vendored case set, found {} files",
        files.len()
    );
    let (mut passed, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for f in &files {
        let (case, outcome) = conformance::run_file(ctx(), f).unwrap_or_else(|e| panic!("{e}"));
        match outcome {
            Outcome::Passed => passed += 1,
            Outcome::Skipped => {
                assert!(!conformance::implemented(&case.op));
                skipped += 1;
            }
            Outcome::Failed(why) => failures.push(format!("{} ({}): {why}", case.name, case.op)),
        }
    }
    eprintln!(
        "{passed} passed, {} failed, {skipped} skipped",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
    // Both row norms have cases; none of them may be skipped.
    assert!(passed >= 37, "only {passed} cases ran");
}

#[test]
fn a_wrong_output_fails_its_case() {
    // The comparison must be able to fail: perturb one expected element beyond its tolerance.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let mut case = conformance::load(&dir.join("layer_norm_f32_4x768_axis-1.safetensors")).unwrap();
    assert_eq!(conformance::run(ctx(), &case), Outcome::Passed);
    let y = case.expected.get_mut("y").unwrap();
    y.data[5] += 1e-3;
    assert!(matches!(conformance::run(ctx(), &case), Outcome::Failed(m) if m.contains("y[5]")));
}

#[test]
fn unknown_attributes_fail_the_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let mut case = conformance::load(&dir.join("rms_norm_f32_1x7_axis-1.safetensors")).unwrap();
    case.attrs
        .insert("elementwise_affine".into(), serde_json::Value::Bool(false));
    assert!(
        matches!(conformance::run(ctx(), &case), Outcome::Failed(m) if m.contains("unknown attribute"))
    );
}

#[test]
fn compare_follows_the_nan_and_infinity_rules() {
    assert!(conformance::compare("y", &[f32::NAN], &[f32::NAN], 0.0, 0.0).is_ok());
    assert!(conformance::compare("y", &[0.0], &[f32::NAN], 1.0, 1.0).is_err());
    assert!(conformance::compare("y", &[f32::INFINITY], &[f32::INFINITY], 0.0, 0.0).is_ok());
    assert!(conformance::compare("y", &[f32::MAX], &[f32::INFINITY], 1.0, 1.0).is_err());
    assert!(conformance::compare("y", &[1.0, 2.0], &[1.0], 1.0, 1.0).is_err());
    assert!(conformance::compare("y", &[1.05], &[1.0], 0.01, 0.05).is_ok());
    assert!(conformance::compare("y", &[1.07], &[1.0], 0.01, 0.05).is_err());
}
