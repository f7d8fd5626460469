//! `cargo xtask conformance DIR...`: every `.safetensors` case of the directories on the GPU.

use anyhow::{bail, Result};
use wgnorm::conformance::{self, Outcome};

const USAGE: &str =
    "usage: cargo xtask conformance [--allow-skipped] [--max-binding-size BYTES] DIR...";

/// Runs every case under the directories. A case whose op the runner does not know is skipped,
/// and a skip fails the run unless `--allow-skipped` is given; an unreadable or malformed file
/// is a failed case naming the file.
pub fn run(args: &[String]) -> Result<bool> {
    let mut allow_skipped = false;
    let mut max_binding = None;
    let mut dirs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--allow-skipped" => allow_skipped = true,
            "--max-binding-size" => {
                let v = it.next().and_then(|v| v.parse::<u64>().ok());
                max_binding = Some(v.ok_or_else(|| {
                    anyhow::anyhow!("--max-binding-size needs a byte count\n{USAGE}")
                })?);
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
            dir => dirs.push(dir.to_string()),
        }
    }
    if dirs.is_empty() {
        bail!("{USAGE}");
    }
    let mut files = Vec::new();
    for d in &dirs {
        let entries = std::fs::read_dir(d).map_err(|e| anyhow::anyhow!("{d}: {e}"))?;
        for e in entries {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                files.push(p);
            }
        }
    }
    files.sort();
    let ctx = crate::context_with_binding_limit(max_binding)?;
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut skipped_ops = std::collections::BTreeMap::<String, usize>::new();
    for f in &files {
        match conformance::run_file(&ctx, f) {
            Err(e) => {
                failed += 1;
                println!("FAIL {} (unreadable): {e}", f.display());
            }
            Ok((case, Outcome::Passed)) => {
                let _ = case;
                passed += 1;
            }
            Ok((case, Outcome::Failed(why))) => {
                failed += 1;
                println!("FAIL {} op={}: {why}", case.name, case.op);
            }
            Ok((case, Outcome::Skipped)) => {
                skipped += 1;
                *skipped_ops.entry(case.op).or_default() += 1;
            }
        }
    }
    if !skipped_ops.is_empty() {
        let list: Vec<String> = skipped_ops
            .iter()
            .map(|(k, v)| format!("{k} ({v})"))
            .collect();
        println!("skipped (op not implemented): {}", list.join(", "));
        if !allow_skipped {
            println!("a skipped case is a failure (pass --allow-skipped to accept skips)");
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    Ok(failed == 0 && (skipped == 0 || allow_skipped))
}
