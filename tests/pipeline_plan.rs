//! One plan for runtime and validation: every pipeline the runtime creates while running every
//! vendored conformance case is in the list `cargo xtask validate` translates
//! (`wgnorm::specializations()`, printed by `cargo xtask validate --list`). The runtime's side
//! comes from `WGNORM_LOG_PIPELINES`, the same log an app or CI can write.

use std::collections::HashSet;
use std::path::Path;

use wgnorm::conformance::{self, Outcome};

#[test]
fn every_pipeline_created_by_the_conformance_cases_is_validated() {
    let log = std::env::temp_dir().join(format!("wgnorm-pipelines-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    // This test binary runs this one test: no other thread reads the environment.
    std::env::set_var("WGNORM_LOG_PIPELINES", &log);
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let ctx = wgnorm::Context::new().expect("GPU tests need an adapter (mesa-vulkan-drivers)");

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("vendored cases")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    for f in &files {
        let (case, outcome) = conformance::run_file(&ctx, f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome, Outcome::Passed, "{}", case.name);
    }

    let created = std::fs::read_to_string(&log).expect("the runtime wrote the pipeline log");
    let _ = std::fs::remove_file(&log);
    let listed: HashSet<String> = wgnorm::specializations().iter().map(|s| s.key()).collect();
    let created: Vec<&str> = created.lines().collect();
    assert!(
        created.len() > 50,
        "only {} pipelines logged",
        created.len()
    );
    let missing: Vec<&&str> = created.iter().filter(|k| !listed.contains(**k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} pipelines created at run time are not validated:\n{}",
        missing.len(),
        created.len(),
        missing
            .iter()
            .map(|k| format!("  {k}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
