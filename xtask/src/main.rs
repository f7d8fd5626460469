//! `cargo xtask <command>`: the project's developer tasks.
//!
//! - `validate`: naga-validates every shader specialisation and translates it to SPIR-V, MSL and
//!   HLSL; then runs every op on the current adapter against the f64 reference over a sweep of
//!   shapes and prints the error table. Exits non-zero on any failure.
//! - `conformance DIR...`: runs every `.safetensors` case in the directories.
//! - `bench`: kernel throughput as a ratio to a copy kernel timed in the same run.
//! - `fuzz`: random valid and invalid calls of the public ops (see `fuzz.rs`).

mod autotune;
mod bench;
mod bench_fused;
mod bench_grad;
mod bench_plot;
mod cases;
mod conformance;
mod fuzz;
mod fuzz_grad;
mod fuzz_inputs;
mod fuzz_research;
mod shaders;
mod sweep;

use anyhow::Result;

const USAGE: &str = "usage: cargo xtask <validate [--list] | conformance [--allow-skipped] [--max-binding-size BYTES] DIR... | fuzz [--iterations N] [--seed S] | cases DIR | bench [--quick] [--autotune] [--json FILE] [--plot FILE.svg] [--ops a,b] [--shapes substr]>";

const HELP: &str = "  validate            naga-validate every shader specialisation, translate it for Vulkan (SPIR-V),
                      Metal (MSL) and DX12 (HLSL), and check every op against the f64 reference
    --list            print one key per specialisation instead (the format the runtime writes
                      to WGNORM_LOG_PIPELINES=FILE for every pipeline it creates)
  conformance DIR...  run every case file under the DIRs (format: tests/conformance/FORMAT.md);
                      a case of an op the runner does not know fails the run
    --allow-skipped   accept such cases as skipped
    --max-binding-size BYTES
                      run on a device whose storage bindings hold at most BYTES (windows)
  fuzz                random calls of the public ops, valid and invalid (shapes, dtypes, axes,
                      parameters, aliasing, short buffers, missing usages, misaligned offsets):
                      each must match the f64 reference or be a typed error that wrote nothing
    --iterations N    calls (default 2000)
    --seed S          the generator's seed (default 1)
  cases DIR           write the project's own conformance cases (ops the shared set lacks) into
                      DIR, expected values from the f64 reference
  bench               time every op against the best copy shader on the same adapter
    --quick           small shapes, seconds on software Vulkan
    --autotune        instead of the bench rows: time every row kernel that serves each bench
                      shape, print the fastest beside the runtime's choice; with --json, the
                      table an app loads with wgnorm::Tuning::from_json (or WGNORM_TUNING=FILE)
    --json FILE       every figure plus adapter info
    --plot FILE.svg   copy ratio per family (one panel each) against the size that matters
    --ops a,b         only these ops (layer_norm, rms_norm, batch_norm_train, ...)
    --shapes SUBSTR   only shapes whose label (e.g. 1024x4096) contains SUBSTR
Exit status: 0 when every check passed, non-zero otherwise.";

fn main() -> Result<()> {
    // Mesa's software Vulkan warns about this on headless machines; the warning is noise.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}\n{HELP}");
        return Ok(());
    }
    let ok = match args.first().map(String::as_str) {
        Some("validate") if args.get(1).map(String::as_str) == Some("--list") => {
            for spec in wgnorm::specializations() {
                println!("{}", spec.key());
            }
            true
        }
        Some("validate") if args.len() > 1 => {
            eprintln!("unknown option {}\n{USAGE}", args[1]);
            std::process::exit(2);
        }
        Some("validate") => {
            let shaders_ok = shaders::validate_all()?;
            let sweep_ok = sweep::run()?;
            shaders_ok && sweep_ok
        }
        Some("conformance") => conformance::run(&args[1..])?,
        Some("bench") => bench::run(&args[1..])?,
        Some("fuzz") => fuzz::run(&args[1..])?,
        Some("cases") => cases::run(&args[1..])?,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// The headless context, with the adapter named on stderr.
fn context() -> Result<wgnorm::Context> {
    context_with_binding_limit(None)
}

/// The headless context, its storage bindings limited to `max_binding` bytes when given.
fn context_with_binding_limit(max_binding: Option<u64>) -> Result<wgnorm::Context> {
    let ctx = wgnorm::Context::new_with_limits(|l| {
        if let Some(b) = max_binding {
            l.max_storage_buffer_binding_size = b.min(l.max_storage_buffer_binding_size);
        }
    })?;
    let info = ctx.adapter_info();
    eprintln!(
        "adapter: {} ({:?}, {:?}, driver {} {}), features: {:?}",
        info.name,
        info.backend,
        info.device_type,
        info.driver,
        info.driver_info,
        ctx.features()
    );
    Ok(ctx)
}
