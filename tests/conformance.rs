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

/// The project's own cases (ops the shared set lacks), written by `cargo xtask cases`.
fn own_cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/wgnorm")
}

fn files_in(dir: PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("case directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    files
}

fn case_files() -> Vec<PathBuf> {
    files_in(cases_dir())
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

/// Writes a case file with these metadata entries and one expected tensor.
fn write_case(name: &str, meta: &[(&str, &str)]) -> PathBuf {
    let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data)
        .expect("a valid view");
    let meta: std::collections::HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let bytes = safetensors::serialize([("expected.y", view)], Some(meta)).expect("serialize");
    let path = std::env::temp_dir().join(format!(
        "wgnorm-case-{}-{name}.safetensors",
        std::process::id()
    ));
    std::fs::write(&path, bytes).expect("write");
    path
}

/// Malformed files: a clear error naming the file, never a panic.
fn malformed_files_are_errors_naming_the_file() -> Result<(), Failed> {
    let garbage = std::env::temp_dir().join(format!(
        "wgnorm-case-{}-garbage.safetensors",
        std::process::id()
    ));
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7f not a header").unwrap();
    let ok_meta = [
        ("op", "layer_norm"),
        ("attrs", "{}"),
        ("atol", "1e-5"),
        ("rtol", "1e-5"),
    ];
    let good = write_case("good", &ok_meta);
    let truncated = std::env::temp_dir().join(format!(
        "wgnorm-case-{}-truncated.safetensors",
        std::process::id()
    ));
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let cases = [
        (garbage, "not a safetensors file"),
        (truncated, "not a safetensors file"),
        (
            write_case("no_op", &[("atol", "0"), ("rtol", "0")]),
            "lacks \"op\"",
        ),
        (
            write_case(
                "atol_text",
                &[("op", "layer_norm"), ("atol", "abc"), ("rtol", "0")],
            ),
            "atol is not a number",
        ),
        (
            write_case(
                "atol_negative",
                &[("op", "layer_norm"), ("atol", "-1"), ("rtol", "0")],
            ),
            "must be finite and >= 0",
        ),
        (
            write_case(
                "rtol_nan",
                &[("op", "layer_norm"), ("atol", "0"), ("rtol", "NaN")],
            ),
            "must be finite and >= 0",
        ),
        (
            write_case(
                "attrs_array",
                &[
                    ("op", "layer_norm"),
                    ("attrs", "[1, 2]"),
                    ("atol", "0"),
                    ("rtol", "0"),
                ],
            ),
            "attrs is not a JSON object",
        ),
    ];
    for (path, want) in &cases {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        match conformance::run_file(ctx(), path) {
            Err(e) if e.contains(&file) && e.contains(want) => {}
            other => {
                return Err(
                    format!("{file}: expected an error with {want:?}, got {other:?}").into(),
                )
            }
        }
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(&good);
    Ok(())
}

/// An op the runner does not know is a skip, which the harness and `cargo xtask conformance`
/// count as a failure.
fn unknown_op_is_skipped() -> Result<(), Failed> {
    let path = write_case(
        "unknown_op",
        &[("op", "no_such_norm"), ("atol", "0"), ("rtol", "0")],
    );
    let r = conformance::run_file(ctx(), &path);
    let _ = std::fs::remove_file(&path);
    match r {
        Ok((_, Outcome::Skipped)) => Ok(()),
        other => Err(format!("an unknown op gave {other:?}").into()),
    }
}

/// A change to every input of a case.
type Mutation = fn(&mut conformance::HostTensor);

/// Every op's runner on inputs of the wrong rank or size (one vendored case per op, its
/// inputs reshaped, shortened or emptied): an error or a comparison failure, never a panic.
fn every_runner_refuses_wrong_shapes_without_panicking() -> Result<(), Failed> {
    let mut seen = std::collections::BTreeSet::new();
    for path in case_files() {
        let case = conformance::load(&path)?;
        if !seen.insert(case.op.clone()) {
            continue;
        }
        let mutations: [(&str, Mutation); 3] = [
            ("flattened", |t| t.shape = vec![t.data.len()]),
            ("rank - 1", |t| {
                if t.shape.pop().is_some() {
                    let n: usize = t.shape.iter().product();
                    t.data.truncate(n);
                }
            }),
            ("empty", |t| {
                t.shape = vec![0; t.shape.len().max(1)];
                t.data.clear();
            }),
        ];
        for (what, mutate) in mutations {
            let mut bad = case.clone();
            for t in bad.inputs.values_mut() {
                mutate(t);
            }
            if let Outcome::Failed(m) = conformance::run(ctx(), &bad) {
                if m.contains("panicked") {
                    return Err(format!("{} ({what} inputs): {m}", case.name).into());
                }
            }
        }
    }
    Ok(())
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
        Trial::test(
            "runner::malformed_files_are_errors_naming_the_file",
            malformed_files_are_errors_naming_the_file,
        ),
        Trial::test("runner::unknown_op_is_skipped", unknown_op_is_skipped),
        Trial::test(
            "runner::every_runner_refuses_wrong_shapes_without_panicking",
            every_runner_refuses_wrong_shapes_without_panicking,
        ),
    ];
    for path in case_files() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        trials.push(Trial::test(format!("case::{name}"), move || {
            run_case(&path)
        }));
    }
    for path in files_in(own_cases_dir()) {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        trials.push(Trial::test(format!("own_case::{name}"), move || {
            run_case(&path)
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
