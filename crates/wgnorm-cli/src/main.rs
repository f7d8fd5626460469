//! `wgnorm`: adapter and kernel information, any wgnorm op on a safetensors file, a quick bench.

mod bench;
mod info;
mod run;

use clap::{Parser, Subcommand};

/// wgnorm's command for users: what it runs on this machine, and running it on your data.
#[derive(Parser, Debug)]
#[command(name = "wgnorm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The adapter, backend, features and limits, and the kernel chosen per op, dtype and row
    /// length (honouring WGNORM_TUNING=FILE).
    Info,
    /// Run an op on the tensors of a safetensors file and write its outputs to another.
    Run(run::Options),
    /// Time LayerNorm, RMSNorm, BatchNorm and GroupNorm against a copy of the same bytes.
    Bench(bench::Options),
}

fn main() {
    // Mesa's software Vulkan warns about this on headless machines; the warning is noise.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let cli = Cli::parse();
    let result = wgnorm::Context::new()
        .map_err(|e| e.to_string())
        .and_then(|ctx| match &cli.command {
            Command::Info => info::run(&ctx),
            Command::Run(o) => run::run(&ctx, o),
            Command::Bench(o) => bench::run(&ctx, o),
        });
    if let Err(e) = result {
        eprintln!("wgnorm: {e}");
        std::process::exit(1);
    }
}
