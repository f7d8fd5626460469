//! `cargo xtask conformance DIR...`: every `.safetensors` case of the directories on the GPU.

use anyhow::Result;
use wgnorm::conformance::{self, Outcome};

/// `cargo xtask conformance` options.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Accept cases of ops the runner does not know as skipped (a skip fails the run otherwise).
    #[arg(long)]
    allow_skipped: bool,
    /// Run on a device whose storage bindings hold at most BYTES (exercises windows).
    #[arg(long, value_name = "BYTES")]
    max_binding_size: Option<u64>,
    /// The device's limits: the adapter's, WebGPU's defaults (`wgpu::Limits::default()`, what
    /// most apps create), or the downlevel defaults (4 storage buffers per stage).
    #[arg(long, value_name = "PROFILE", default_value = "adapter")]
    limits: wgnorm::LimitsProfile,
    /// Run on a device created without SHADER_F16 (f16 through packed words only).
    #[arg(long)]
    without_f16: bool,
    /// Directories of case files (format: tests/conformance/FORMAT.md).
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<String>,
}

/// Runs every case under the directories. A case whose op the runner does not know is skipped,
/// and a skip fails the run unless `--allow-skipped` is given; an unreadable or malformed file
/// is a failed case naming the file.
pub fn run(o: &Options) -> Result<bool> {
    let (allow_skipped, dirs) = (o.allow_skipped, &o.dirs);
    let mut files = Vec::new();
    for d in dirs {
        let entries = std::fs::read_dir(d).map_err(|e| anyhow::anyhow!("{d}: {e}"))?;
        for e in entries {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut device = wgnorm::DeviceOptions {
        limits: o.limits,
        max_storage_buffer_binding_size: o.max_binding_size,
        ..Default::default()
    };
    if o.without_f16 {
        device.features.remove(wgnorm::wgpu::Features::SHADER_F16);
    }
    let ctx = crate::context_with(device)?;
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
