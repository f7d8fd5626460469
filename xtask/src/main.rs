//! `cargo xtask <command>`: the project's developer tasks.
//!
//! - `validate`: naga-validates every shader specialisation and translates it to SPIR-V, MSL and
//!   HLSL; then runs every op on the current adapter against the f64 reference over a sweep of
//!   shapes and prints the error table. Exits non-zero on any failure.
//! - `conformance DIR...`: runs every `.safetensors` case in the directories.
//! - `bench`: kernel throughput as a ratio to a copy kernel timed in the same run.
//! - `fuzz`: random valid and invalid calls of the public ops (see `fuzz.rs`).

mod autotune;
mod autotune_batch;
mod bench;
mod bench_fused;
mod bench_grad;
mod bench_methods_grad;
mod bench_models;
mod bench_plot;
mod bench_startup;
mod cases;
mod cases_grad;
mod cases_method_grad;
mod conformance;
mod fuzz;
mod fuzz_grad;
mod fuzz_inputs;
mod fuzz_poincare;
mod fuzz_qk;
mod fuzz_research;
mod shaders;
mod sweep;
mod tint;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The project's developer tasks.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about,
    after_help = "Exit status: 0 when every check passed, non-zero otherwise."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// naga-validate every shader specialisation, translate it for Vulkan (SPIR-V), Metal (MSL)
    /// and DX12 (HLSL), and check every op against the f64 reference.
    Validate {
        /// Print one key per specialisation instead (the format the runtime writes to
        /// WGNORM_LOG_PIPELINES=FILE for every pipeline it creates).
        #[arg(long)]
        list: bool,
        /// Compile every distinct module with Dawn's Tint (the WGSL compiler of Chrome and Edge)
        /// as composed for a browser device, and create a spread of its pipelines, instead of
        /// the naga translation and the numeric sweep. Needs Node.js and npm (installs the
        /// `webgpu` package under scripts/tint on first use).
        #[arg(long, conflicts_with = "list")]
        tint: bool,
        /// With --tint: pipeline logs (WGNORM_LOG_PIPELINES=FILE of a run) whose pipelines are
        /// checked too.
        #[arg(long, requires = "tint")]
        pipelines: Vec<std::path::PathBuf>,
    },
    /// Run every case file under the DIRs; a case of an op the runner does not know fails the run.
    Conformance(conformance::Options),
    /// Random calls of the public ops, valid and invalid (shapes, dtypes, axes, parameters,
    /// aliasing, short buffers, missing usages, misaligned offsets): each must match the f64
    /// reference or be a typed error that wrote nothing.
    Fuzz(fuzz::Options),
    /// Write the project's own conformance cases (ops the shared set lacks) into DIR, expected
    /// values from the f64 reference.
    Cases {
        /// Where the case files go.
        dir: std::path::PathBuf,
    },
    /// Time every op against the best copy shader on the same adapter.
    Bench(bench::Options),
}

fn main() -> Result<()> {
    // Mesa's software Vulkan warns about this on headless machines; the warning is noise.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let cli = Cli::parse();
    let ok = match &cli.command {
        Command::Validate { list: true, .. } => {
            for spec in wgnorm::specializations() {
                println!("{}", spec.key());
            }
            true
        }
        Command::Validate {
            tint: true,
            pipelines,
            ..
        } => tint::run(pipelines)?,
        Command::Validate { .. } => {
            let shaders_ok = shaders::validate_all()?;
            let sweep_ok = sweep::run()?;
            shaders_ok && sweep_ok
        }
        Command::Conformance(o) => conformance::run(o)?,
        Command::Bench(o) => bench::run(o)?,
        Command::Fuzz(o) => fuzz::run(o)?,
        Command::Cases { dir } => cases::run(dir)?,
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// The headless context, with the adapter named on stderr.
fn context() -> Result<wgnorm::Context> {
    context_with(wgnorm::DeviceOptions::from_env()?)
}

/// A headless context created as `options` say, with the adapter, features and the limits that
/// differ from WebGPU's defaults named on stderr.
fn context_with(options: wgnorm::DeviceOptions) -> Result<wgnorm::Context> {
    let ctx = wgnorm::Context::new_with(options)?;
    let info = ctx.adapter_info();
    let l = ctx.limits();
    eprintln!(
        "adapter: {} ({:?}, {:?}, driver {} {}), features: {:?}, limits {:?}: storage buffers/stage {}, workgroup memory {} B, invocations {}, binding {} B",
        info.name,
        info.backend,
        info.device_type,
        info.driver,
        info.driver_info,
        ctx.features(),
        options.limits,
        l.max_storage_buffers_per_shader_stage,
        l.max_compute_workgroup_storage_size,
        l.max_compute_invocations_per_workgroup,
        l.max_storage_buffer_binding_size,
    );
    Ok(ctx)
}
