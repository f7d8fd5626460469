//! `cargo xtask validate --tint`: every distinct WGSL module the runtime can compose for a
//! browser device, compiled by Dawn's WGSL compiler (Tint, as in Chrome and Edge) through
//! dawn.node (the `webgpu` npm package, null backend: no driver needed), and a spread of each
//! module's pipelines created with the kernel's own bind-group layout.
//!
//! The modules are composed by the runtime's own code (`Kernel::source_for` with
//! `Target::Browser`), in every f16 access a device may get. Pipelines checked per module: the
//! first and last specialisation, an even spread between them, and every pipeline named in the
//! `--pipelines` logs (`WGNORM_LOG_PIPELINES=FILE` of a conformance run: the pipelines real calls
//! create). dawn.node can crash at random: the driver restarts it at the module it was on and
//! fails a module only when it crashes on it twice.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use wgnorm::engine::shader::{Specialization, Target};

use crate::shaders::{accesses, module_label};
use wgnorm::engine::Slot;

/// Evenly spread specialisations checked per module besides the first, the last and the logged.
const SPREAD: usize = 16;

/// One module: its composed source, layout and the specialisations to create pipelines for.
struct Job {
    label: String,
    source: String,
    /// The same module composed for naga (which reads the pipelines' needs).
    native: String,
    slots: &'static [Slot],
    specs: Vec<usize>,
}

/// The modules, each with the specialisations to create pipelines for: sampled, then those a
/// device with WebGPU's default limits can create (the runtime chooses other variants there;
/// `cargo xtask conformance --limits webgpu` checks that). Also returns how many sampled
/// specialisations were left out for that.
fn jobs(specs: &[Specialization], logged: &BTreeSet<String>) -> Result<(Vec<Job>, usize)> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut by_source: HashMap<String, usize> = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        for &access in accesses(spec) {
            let source = spec.kernel.source_for(spec.io, access, Target::Browser);
            let j = *by_source.entry(source.clone()).or_insert_with(|| {
                jobs.push(Job {
                    label: module_label(spec, access),
                    native: spec.kernel.source_for(spec.io, access, Target::Native),
                    source,
                    slots: spec.kernel.slots(),
                    specs: Vec::new(),
                });
                jobs.len() - 1
            });
            jobs[j].specs.push(i);
        }
    }
    let mut beyond = 0;
    for job in &mut jobs {
        let n = job.specs.len();
        let mut keep: BTreeSet<usize> = (0..=SPREAD).map(|k| k * (n - 1) / SPREAD).collect();
        keep.extend((0..n).filter(|&k| logged.contains(&specs[job.specs[k]].key())));
        let parsed = crate::shaders::Parsed::new(&job.native)
            .map_err(|e| anyhow!("{}: naga: {e}", job.label))?;
        let mut sampled = Vec::new();
        for k in keep {
            let i = job.specs[k];
            if parsed.needs(&specs[i])?.fits_webgpu_defaults() {
                sampled.push(i);
            } else {
                beyond += 1;
            }
        }
        job.specs = sampled;
    }
    Ok((jobs, beyond))
}

fn slot_name(s: Slot) -> &'static str {
    match s {
        Slot::Uniform => "uniform",
        Slot::Read => "read",
        Slot::ReadWrite => "read_write",
        Slot::Unused => "unused",
    }
}

fn write_jobs(path: &Path, jobs: &[Job], specs: &[Specialization]) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for job in jobs {
        let pipelines: Vec<Value> = job
            .specs
            .iter()
            .map(|&i| {
                let s = &specs[i];
                let constants: serde_json::Map<String, Value> = s
                    .constants
                    .iter()
                    .map(|&(k, v)| (k.to_string(), json!(v)))
                    .collect();
                json!({ "key": s.key(), "constants": constants })
            })
            .collect();
        let line = json!({
            "label": job.label,
            "source": job.source,
            "slots": job.slots.iter().map(|&s| slot_name(s)).collect::<Vec<_>>(),
            "pipelines": pipelines,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// The checker's folder, with its npm dependencies installed (`npm ci` on first use).
fn checker_dir() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tint");
    if !dir.join("node_modules/webgpu/package.json").exists() {
        eprintln!(
            "tint: installing the webgpu npm package (dawn.node) in {}",
            dir.display()
        );
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .context("running npm (install Node.js and npm to run the Tint check)")?
            .success();
        if !ok {
            bail!("npm ci in {} failed", dir.display());
        }
    }
    Ok(dir)
}

/// Runs the checker from job `first` on; records each reported job's errors. Returns the index
/// of the first job not reported (all of them when the checker finished).
fn run_from(
    dir: &Path,
    jobs_path: &Path,
    first: usize,
    errors: &mut [Option<Vec<String>>],
) -> Result<usize> {
    let mut child = Command::new("node")
        .arg(dir.join("check.mjs"))
        .arg(jobs_path)
        .arg(first.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running node (install Node.js to run the Tint check)")?;
    let stdout = child.stdout.take().expect("piped");
    let mut next = first;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow!("tint checker printed {line:?}: {e}"))?;
        let job = v["job"]
            .as_u64()
            .ok_or_else(|| anyhow!("no job in {line:?}"))? as usize;
        let errs = v["errors"].as_array().cloned().unwrap_or_default();
        errors[job] = Some(
            errs.iter()
                .map(|e| match e["key"].as_str() {
                    Some(k) => format!("pipeline {k}: {}", e["message"].as_str().unwrap_or("")),
                    None => e["message"].as_str().unwrap_or("").to_string(),
                })
                .collect(),
        );
        next = job + 1;
    }
    child.wait()?;
    Ok(next)
}

/// Compiles every distinct browser module with Tint; prints each failure (module, pipeline,
/// WGSL line) and a summary. Returns success.
pub fn run(logs: &[PathBuf]) -> Result<bool> {
    let specs = wgnorm::specializations();
    let mut logged = BTreeSet::new();
    for log in logs {
        let text = std::fs::read_to_string(log)
            .with_context(|| format!("reading pipeline log {}", log.display()))?;
        logged.extend(text.lines().map(str::to_string));
    }
    let (jobs, beyond) = jobs(&specs, &logged)?;
    let dir = checker_dir()?;
    let jobs_path = std::env::temp_dir().join(format!("wgnorm-tint-{}.jsonl", std::process::id()));
    write_jobs(&jobs_path, &jobs, &specs)?;

    let mut errors: Vec<Option<Vec<String>>> = vec![None; jobs.len()];
    let mut crashed = vec![false; jobs.len()];
    let mut next = 0;
    while next < jobs.len() {
        next = run_from(&dir, &jobs_path, next, &mut errors)?;
        if next < jobs.len() {
            if crashed[next] {
                errors[next] = Some(vec!["dawn.node crashed twice on this module".into()]);
                next += 1;
            } else {
                eprintln!(
                    "tint: dawn.node stopped at {}; restarting",
                    jobs[next].label
                );
                crashed[next] = true;
            }
        }
    }
    let _ = std::fs::remove_file(&jobs_path);

    let mut failed_modules = 0;
    let mut failures = 0;
    for (job, errs) in jobs.iter().zip(&errors) {
        let errs = errs.as_deref().unwrap_or_default();
        if !errs.is_empty() {
            failed_modules += 1;
            failures += errs.len();
            println!("FAIL {}:", job.label);
            for e in errs {
                println!("  {}", e.replace('\n', "\n  "));
            }
        }
    }
    let pipelines: usize = jobs.iter().map(|j| j.specs.len()).sum();
    println!(
        "\n## Tint (dawn.node, webgpu 0.6.2): {} modules, {pipelines} pipelines ({} logged keys; {beyond} sampled variants need more than WebGPU's default limits and were left out), {failed_modules} modules failed, {failures} errors\n",
        jobs.len(),
        logged.len(),
    );
    Ok(failures == 0)
}
