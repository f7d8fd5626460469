//! Every vendored conformance case (tests/conformance/cases, the project's shared case set) as a
//! test of its own, named `case::<file>`, through the same registry `cargo xtask conformance`
//! uses; a skipped case (an op the registry does not know) fails. Plus checks that the runner
//! itself can fail.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use wgnorm::conformance::{self, Outcome};
use wgnorm_tests::ctx;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases")
}

fn case_files() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(cases_dir())
        .expect("vendored cases")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    files
}

fn run_case(path: &Path) -> Result<(), Failed> {
    let (case, outcome) = conformance::run_file(ctx(), path)?;
    match outcome {
        Outcome::Passed => Ok(()),
        Outcome::Skipped => {
            Err(format!("op {} is not implemented (a skip is a failure)", case.op).into())
        }
        Outcome::Failed(why) => Err(format!("{} ({}): {why}", case.name, case.op).into()),
    }
}

fn the_vendored_set_is_complete() -> Result<(), Failed> {
    let n = case_files().len();
    if n < 140 {
        return Err(format!("expected the vendored case set, found {n} files").into());
    }
    Ok(())
}

fn a_wrong_output_fails_its_case() -> Result<(), Failed> {
    // The comparison must be able to fail: perturb one expected element beyond its tolerance.
    let mut case = conformance::load(&cases_dir().join("layer_norm_f32_4x768_axis-1.safetensors"))?;
    if conformance::run(ctx(), &case) != Outcome::Passed {
        return Err("the unperturbed case fails".into());
    }
    let y = case.expected.get_mut("y").unwrap();
    y.data[5] += 1e-3;
    match conformance::run(ctx(), &case) {
        Outcome::Failed(m) if m.contains("y[5]") => Ok(()),
        other => Err(format!("a perturbed expectation gave {other:?}").into()),
    }
}

fn unknown_attributes_fail_the_case() -> Result<(), Failed> {
    let mut case = conformance::load(&cases_dir().join("rms_norm_f32_1x7_axis-1.safetensors"))?;
    case.attrs
        .insert("elementwise_affine".into(), serde_json::Value::Bool(false));
    match conformance::run(ctx(), &case) {
        Outcome::Failed(m) if m.contains("unknown attribute") => Ok(()),
        other => Err(format!("an unknown attribute gave {other:?}").into()),
    }
}

fn compare_follows_the_nan_and_infinity_rules() -> Result<(), Failed> {
    let c = conformance::compare;
    let checks = [
        c("y", &[f32::NAN], &[f32::NAN], 0.0, 0.0).is_ok(),
        c("y", &[0.0], &[f32::NAN], 1.0, 1.0).is_err(),
        c("y", &[f32::INFINITY], &[f32::INFINITY], 0.0, 0.0).is_ok(),
        c("y", &[f32::MAX], &[f32::INFINITY], 1.0, 1.0).is_err(),
        c("y", &[1.0, 2.0], &[1.0], 1.0, 1.0).is_err(),
        c("y", &[1.05], &[1.0], 0.01, 0.05).is_ok(),
        c("y", &[1.07], &[1.0], 0.01, 0.05).is_err(),
    ];
    match checks.iter().position(|ok| !ok) {
        None => Ok(()),
        Some(i) => Err(format!("compare rule {i} broken").into()),
    }
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![
        Trial::test(
            "runner::the_vendored_set_is_complete",
            the_vendored_set_is_complete,
        ),
        Trial::test(
            "runner::a_wrong_output_fails_its_case",
            a_wrong_output_fails_its_case,
        ),
        Trial::test(
            "runner::unknown_attributes_fail_the_case",
            unknown_attributes_fail_the_case,
        ),
        Trial::test(
            "runner::compare_follows_the_nan_and_infinity_rules",
            compare_follows_the_nan_and_infinity_rules,
        ),
    ];
    for path in case_files() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        trials.push(Trial::test(format!("case::{name}"), move || {
            run_case(&path)
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
