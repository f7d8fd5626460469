//! The batch family's part of `cargo xtask bench --autotune`: every lane plan of the channel
//! engine (contiguous blocks or strided lanes in the moments pass, one lane per channel or per
//! slot, 1 or 16 accesses per apply lane) on BatchNorm training and inference, NCHW and NHWC,
//! against the runtime's default plan. Reported and written to the JSON, whose entries the
//! runtime loads with the row kernels' (`Tuning::lane_plan`: views of the same geometry take the
//! measured plan).

use anyhow::{bail, Result};
use serde_json::json;
use wgnorm::engine::core::chnorm::LanePlan;
use wgnorm::{
    BatchNorm, BatchNormConfig, BatchNormInputs, BatchNormOutputs, Context, Layout, Mode, Tensor,
};

use crate::autotune::time_rotated;
use crate::bench::{pattern, Timer};

/// One tuned batch-family shape.
pub(crate) struct Tuned {
    op: &'static str,
    shape: [usize; 4],
    layout: Layout,
    best: Option<LanePlan>,
    best_ms: f64,
    default_ms: f64,
}

/// A plan's name: `default` (the runtime's choice), or the forced plan's.
fn label(plan: Option<LanePlan>) -> String {
    plan.map_or_else(|| "default".into(), |p| p.to_string())
}

impl Tuned {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "op": self.op, "shape": self.shape, "dtype": "f32",
            "layout": format!("{:?}", self.layout).to_uppercase(),
            "best": label(self.best), "best_ms": self.best_ms,
            "default": "default", "default_ms": self.default_ms,
        })
    }
}

/// Every fully forced lane mapping the pipeline enumeration covers, then moments tile sizes.
fn plans() -> Vec<LanePlan> {
    let mut out = Vec::new();
    for lane_blocks in [false, true] {
        for channel_lanes in [false, true] {
            for apply_block in [1, 16] {
                out.push(LanePlan {
                    lane_blocks: Some(lane_blocks),
                    channel_lanes: Some(channel_lanes),
                    apply_block: Some(apply_block),
                    tile: None,
                });
            }
        }
    }
    // Moments tiles around the defaults (GPU: 256 or 16 per lane of a workgroup; CPU: 4096 or
    // 256 per lane), the lane mapping left to the adapter.
    for tile in [256, 1024, 4096, 16384] {
        out.push(LanePlan {
            tile: Some(tile),
            ..LanePlan::default()
        });
    }
    out
}

/// The tensors of one shape: x, affine, running statistics.
struct Buffers {
    x: Tensor,
    w: Tensor,
    b: Tensor,
    rm: Tensor,
    rv: Tensor,
}

fn encode(bn: &BatchNorm, t: &Buffers, y: &Tensor, train: bool, enc: &mut wgpu::CommandEncoder) {
    let inputs = BatchNormInputs {
        x: &t.x,
        weight: Some(&t.w),
        bias: Some(&t.b),
        running_mean: Some(&t.rm),
        running_var: Some(&t.rv),
    };
    bn.encode(
        enc,
        &inputs,
        &BatchNormOutputs { y, saved: None },
        Mode::training(train),
    )
    .expect("shapes checked when the op was made");
}

fn tune(
    ctx: &Context,
    timer: &Timer,
    (op, nchw, layout): (&'static str, [usize; 4], Layout),
    reps: usize,
) -> Result<Tuned> {
    let [n, c, h, w] = nchw;
    let shape = match layout {
        Layout::Nchw => vec![n, c, h, w],
        Layout::Nhwc => vec![n, h, w, c],
    };
    let train = op == "batch_norm_train";
    let t = Buffers {
        x: ctx.upload_f32(&pattern(3, n * c * h * w, 0.0, 2.0), &shape)?,
        w: ctx.upload_f32(&pattern(1, c, 1.0, 1.0), &[c])?,
        b: ctx.upload_f32(&pattern(2, c, 0.0, 0.5), &[c])?,
        rm: ctx.upload_f32(&pattern(5, c, 0.0, 0.2), &[c])?,
        rv: ctx.upload_f32(&pattern(6, c, 1.0, 1.0), &[c])?,
    };
    let cfg = BatchNormConfig {
        layout,
        // The running statistics stay as they are: every candidate sees the same inputs.
        momentum: Some(0.0),
        ..Default::default()
    };
    let mut ops = Vec::new();
    for plan in std::iter::once(None).chain(plans().into_iter().map(Some)) {
        let bn = BatchNorm::new(ctx, cfg)?;
        let bn = match plan {
            Some(p) => bn.with_lane_plan(p),
            None => bn,
        };
        ops.push((plan, bn, ctx.empty(&shape, wgnorm::DType::F32)?));
    }
    let t = &t;
    let runs: Vec<_> = ops
        .iter()
        .map(|(_, bn, y)| move |enc: &mut wgpu::CommandEncoder| encode(bn, t, y, train, enc))
        .collect();
    let (med, best) = time_rotated(timer, &runs, reps)?;
    let (got, want) = (ctx.download(&ops[best].2)?, ctx.download(&ops[0].2)?);
    if let Some(i) = (0..got.len()).find(|&i| (got[i] - want[i]).abs() > 1e-4) {
        bail!(
            "{op} {nchw:?} {layout:?}: {} gives {} where the default gives {} at {i}",
            label(ops[best].0),
            got[i],
            want[i]
        );
    }
    Ok(Tuned {
        op,
        shape: nchw,
        layout,
        best: ops[best].0,
        best_ms: med[best],
        default_ms: med[0],
    })
}

/// Sweeps the lane plans on the bench's BatchNorm shapes.
pub(crate) fn sweep(
    ctx: &Context,
    quick: bool,
    reps: usize,
    progress: bool,
    wants: &dyn Fn(&str) -> bool,
) -> Result<Vec<Tuned>> {
    let shapes: &[[usize; 4]] = if quick {
        &[[8, 64, 28, 28]]
    } else {
        &[[32, 64, 56, 56], [8, 256, 28, 28], [256, 512, 7, 7]]
    };
    let timer = Timer::new(ctx, plans().len() as u32 + 4);
    let mut out = Vec::new();
    for op in ["batch_norm_train", "batch_norm_infer"] {
        if !wants(op) {
            continue;
        }
        for &nchw in shapes {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                if progress {
                    eprint!("\rautotune {op} {nchw:?} {layout:?}              ");
                }
                out.push(tune(ctx, &timer, (op, nchw, layout), reps)?);
            }
        }
    }
    Ok(out)
}

/// Prints the batch family's table.
pub(crate) fn print(tuned: &[Tuned]) {
    println!("\n| op | shape | layout | best lane plan | best ms | default ms | default / best |");
    println!("|---|---|---|---|---|---|---|");
    let mut within = 0;
    for t in tuned {
        let r = t.default_ms / t.best_ms;
        within += (r <= 1.10) as usize;
        let shape = t.shape.map(|d| d.to_string()).join("x");
        println!(
            "| {} | {shape} | {:?} | {} | {:.3} | {:.3} | {r:.2} |",
            t.op,
            t.layout,
            label(t.best),
            t.best_ms,
            t.default_ms
        );
    }
    println!(
        "\nbatch family: default lane plan within 10% of the best: {within}/{} shapes",
        tuned.len()
    );
}
