//! `wgnorm info`.

use wgnorm::engine::rownorm::{RowMode, RowNorm, RowNormConfig, SPLIT_MAX_ROWS};
use wgnorm::{Context, DType};

/// Row lengths the kernel table shows.
const LENGTHS: [usize; 6] = [64, 256, 1024, 4096, 16384, 65536];

pub fn run(ctx: &Context) -> Result<(), String> {
    let i = ctx.adapter_info();
    println!(
        "adapter:  {} ({:?}, {:?})",
        i.name, i.backend, i.device_type
    );
    println!("driver:   {} {}", i.driver, i.driver_info);
    println!("features: {:?}", ctx.features());
    let l = ctx.limits();
    println!(
        "limits:   {} storage buffers per stage, storage binding {} B, workgroup memory {} B, {} invocations per workgroup, subgroups {}..{}",
        l.max_storage_buffers_per_shader_stage,
        l.max_storage_buffer_binding_size,
        l.max_compute_workgroup_storage_size,
        l.max_compute_invocations_per_workgroup,
        i.subgroup_min_size,
        i.subgroup_max_size
    );
    println!(
        "f16:      {:?} access (WGNORM_F16_ACCESS=packed|vector)",
        ctx.f16_access()
    );
    match ctx.tuning() {
        Some(t) => println!(
            "tuning:   {} row entries, {} lane-plan entries (WGNORM_TUNING)",
            t.rows().len(),
            t.lane_entries().len()
        ),
        None => println!("tuning:   built-in defaults (no WGNORM_TUNING table)"),
    }
    println!(
        "\nrow-norm kernel per op, dtype and row length (every call by default: batch-invariant; \
         where it differs, a one-row decode step's with few-row kernels on):\n"
    );
    print!("| op | dtype |");
    for n in LENGTHS {
        print!(" {n} |");
    }
    println!("\n|---|---|{}", "---|".repeat(LENGTHS.len()));
    for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
        let name = mode.name();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let cfg = RowNormConfig::last_axis(mode, dtype);
            let op = RowNorm::new(ctx, cfg).map_err(|e| e.to_string())?;
            // The decode-step kernel an op gets with few-row kernels on (opt-in).
            let few = RowNorm::new(ctx, cfg)
                .map_err(|e| e.to_string())?
                .with_few_row_kernels(true);
            print!("| {name} | {dtype} |");
            for n in LENGTHS {
                let (k, io) = op
                    .kernel_for_shape(&[SPLIT_MAX_ROWS as usize, n], true)
                    .map_err(|e| e.to_string())?;
                let (one, _) = few
                    .kernel_for_shape(&[1, n], true)
                    .map_err(|e| e.to_string())?;
                match one == k {
                    true => print!(" {k} ({}) |", io.label()),
                    false => print!(" {k} ({}); 1 row: {one} |", io.label()),
                }
            }
            println!();
        }
    }
    Ok(())
}
