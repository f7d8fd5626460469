//! Batch invariance of the row norms: a row's output bits do not depend on how many rows its
//! call has or where in the call it sits, for row lengths that cross every kernel choice, on
//! this adapter's class and on a GPU class forced (whose decode shapes would take the split
//! kernel), with and without a tuning table. Kernels chosen for a call's row count (the split
//! kernel, row-count tuning entries) sum in another order: they are opt-in
//! (`with_few_row_kernels`), and off here.

use wgnorm::engine::core::tuning::{LaneEntry, RowEntry, Tuning};
use wgnorm::engine::rownorm::{AdapterClass, RowKernel, RowMode, RowNorm, RowNormConfig};
use wgnorm::{Context, DType};
use wgnorm_tests::noise;

/// The call sizes compared with one-row calls, and the rows sampled.
const CALL_ROWS: [usize; 7] = [1, 2, 3, 8, 17, 63, 64];
const SAMPLED: [usize; 4] = [0, 1, 7, 63];

/// A context of its own: the tuning test sets a table on it.
fn fresh() -> Context {
    wgnorm_tests::context(None)
}

/// y of `op` on the first `rows` rows of `x`, as bit patterns (f16 widened exactly).
fn run(ctx: &Context, op: &RowNorm, x: &[f32], rows: usize, n: usize, dtype: DType) -> Vec<u32> {
    let xt = ctx.upload(&x[..rows * n], &[rows, n], dtype).unwrap();
    let (y, _, _) = op.forward(&xt, None, None, false).unwrap();
    ctx.download(&y)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Every sampled row of every call size has its one-row call's bits.
fn check(ctx: &Context, op: &RowNorm, n: usize, dtype: DType, what: &str) {
    let most = *CALL_ROWS.last().unwrap();
    let x: Vec<f32> = noise(n as u64 + 3, most * n)
        .iter()
        .map(|v| v * 3.0 + 0.25)
        .collect();
    let alone: Vec<Vec<u32>> = SAMPLED
        .iter()
        .map(|&r| run(ctx, op, &x[r * n..], 1, n, dtype))
        .collect();
    for rows in CALL_ROWS {
        let y = run(ctx, op, &x, rows, n, dtype);
        for (k, &r) in SAMPLED.iter().enumerate().filter(|(_, &r)| r < rows) {
            let row = &y[r * n..(r + 1) * n];
            let diff = row.iter().zip(&alone[k]).filter(|(a, b)| a != b).count();
            assert_eq!(
                diff, 0,
                "{what} n {n} {dtype}: row {r} of a {rows}-row call differs from the row alone in {diff} elements"
            );
        }
    }
}

fn op(ctx: &Context, mode: RowMode, dtype: DType, class: Option<AdapterClass>) -> RowNorm {
    let op = RowNorm::new(ctx, RowNormConfig::last_axis(mode, dtype)).unwrap();
    match class {
        Some(c) => op.with_adapter_class(c),
        None => op,
    }
}

/// Lengths across this adapter's choices (register, team and workgroup kernels; scalar and
/// vector access) and a GPU class without subgroups (workgroup kernels; one or few rows of 4096
/// and more would take the split kernel there with few-row kernels on).
#[test]
fn a_rows_bits_do_not_depend_on_its_calls_row_count() {
    let ctx = fresh();
    let gpu = AdapterClass::TYPICAL[3];
    for mode in [RowMode::LayerNorm, RowMode::RmsNorm] {
        for n in [7, 64, 100, 1000, 1024, 4096, 4097, 16384] {
            check(
                &ctx,
                &op(&ctx, mode, DType::F32, None),
                n,
                DType::F32,
                "this adapter",
            );
            check(
                &ctx,
                &op(&ctx, mode, DType::F32, Some(gpu)),
                n,
                DType::F32,
                "GPU class",
            );
        }
        for n in [63, 256] {
            check(
                &ctx,
                &op(&ctx, mode, DType::F16, None),
                n,
                DType::F16,
                "this adapter",
            );
        }
    }
}

/// The very long rows a CPU adapter splits with few-row kernels on (2^16 accesses and more).
#[test]
fn a_long_rows_bits_do_not_depend_on_its_calls_row_count() {
    let ctx = fresh();
    let n = 1 << 18;
    let op = op(&ctx, RowMode::LayerNorm, DType::F32, None);
    let x: Vec<f32> = noise(5, 8 * n).iter().map(|v| v + 100.0).collect();
    let alone = run(&ctx, &op, &x, 1, n, DType::F32);
    let eight = run(&ctx, &op, &x, 8, n, DType::F32);
    assert!(
        eight[..n] == alone[..],
        "row 0 of 8 differs from the row alone"
    );
    // The opt-in split kernel is there for speed, not for these bits.
    let few = RowNorm::new(
        &ctx,
        RowNormConfig::last_axis(RowMode::LayerNorm, DType::F32),
    )
    .unwrap()
    .with_few_row_kernels(true);
    let t = ctx.empty(&[1, n], DType::F32).unwrap();
    assert!(matches!(
        few.kernel_for(&t).unwrap().0,
        RowKernel::Split { .. }
    ));
}

/// A tuning table with an entry for a row length (used by every call of it) and a decode-step
/// entry (used only with few-row kernels on) keeps every row's bits.
#[test]
fn a_tuning_table_keeps_rows_batch_invariant() {
    let ctx = fresh();
    let n = 1024;
    let default = op(&ctx, RowMode::LayerNorm, DType::F32, None)
        .kernel_for(&ctx.empty(&[64, n], DType::F32).unwrap())
        .unwrap()
        .0;
    let other = match default {
        RowKernel::Workgroup { wg: 64 } => RowKernel::Workgroup { wg: 128 },
        _ => RowKernel::Workgroup { wg: 64 },
    };
    let mut t = Tuning::new(ctx.adapter_info().name.clone());
    for (rows, kernel) in [(64, other), (1, RowKernel::Split { wg: 64, chunks: 4 })] {
        t.insert_row(RowEntry {
            mode: RowMode::LayerNorm,
            dtype: DType::F32,
            n: n as u64,
            rows,
            kernel,
        });
    }
    ctx.set_tuning(t).unwrap();
    let op = op(&ctx, RowMode::LayerNorm, DType::F32, None);
    let one = ctx.empty(&[1, n], DType::F32).unwrap();
    assert_eq!(op.kernel_for(&one).unwrap().0, other);
    check(&ctx, &op, n, DType::F32, "tuned");
}

/// An op's y on the first `n` samples.
type Run<'a> = dyn Fn(&Context, usize) -> Vec<f32> + 'a;

/// GroupNorm (+SiLU) and InstanceNorm: a sample's output bits do not depend on how many
/// samples its call has, nor on the binding windows (a device with 1 MiB bindings windows the
/// batch axis), nor, with a tuning table, on which batch size its lane plan was measured on,
/// in both layouts.
#[test]
fn a_samples_bits_do_not_depend_on_the_batch_or_the_windows() {
    use wgnorm::engine::chnorm::{ChannelView, LanePlan};
    use wgnorm::{Activation, GroupNorm, GroupNormConfig, InstanceNorm, InstanceNormConfig};
    use wgnorm::{Layout, NormInputs};
    let ctx = fresh();
    let windowed = wgnorm_tests::context(Some(wgnorm::DeviceOptions {
        max_storage_buffer_binding_size: Some(1 << 20),
        ..Default::default()
    }));
    // 200 KiB per sample: 8 samples take several 1 MiB windows.
    let (c, h, w) = (32usize, 40usize, 40usize);
    let per = c * h * w;
    let most = 8;
    let x: Vec<f32> = noise(11, most * per)
        .iter()
        .map(|v| v * 2.0 + 1.0)
        .collect();
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let shape = |n: usize| match layout {
            Layout::Nchw => vec![n, c, h, w],
            Layout::Nhwc => vec![n, h, w, c],
        };
        let group = |ctx: &Context, n: usize| {
            let cfg = GroupNormConfig {
                activation: Activation::Silu,
                layout,
                ..GroupNormConfig::new(8)
            };
            let xt = ctx.upload(&x[..n * per], &shape(n), DType::F32).unwrap();
            let op = GroupNorm::new(ctx, cfg).unwrap();
            let inputs = NormInputs {
                x: &xt,
                weight: None,
                bias: None,
            };
            ctx.download(&op.forward(&inputs).unwrap()).unwrap()
        };
        let instance = |ctx: &Context, n: usize| {
            let cfg = InstanceNormConfig {
                layout,
                ..Default::default()
            };
            let xt = ctx.upload(&x[..n * per], &shape(n), DType::F32).unwrap();
            let op = InstanceNorm::new(ctx, cfg).unwrap();
            let inputs = NormInputs {
                x: &xt,
                weight: None,
                bias: None,
            };
            ctx.download(&op.forward(&inputs).unwrap()).unwrap()
        };
        // A tuning table whose lane plans (strided lanes, 64-access tiles: another summation
        // order than the default) were measured on the full batch.
        let tuned = fresh();
        let mut t = Tuning::new(tuned.adapter_info().name.clone());
        let plan = LanePlan {
            lane_blocks: Some(false),
            channel_lanes: Some(false),
            apply_block: Some(1),
            tile: Some(64),
        };
        for groups in [8, c] {
            t.insert_lanes(LaneEntry {
                moments: true,
                dtype: DType::F32,
                view: ChannelView::group_norm(&shape(most), layout, groups).unwrap(),
                plan,
            });
        }
        tuned.set_tuning(t).unwrap();
        let ops: [(&str, &Run); 2] = [("group_norm", &group), ("instance_norm", &instance)];
        for (name, run) in ops {
            let alone = run(&ctx, 1);
            for (device, ctx) in [("", &ctx), (" (1 MiB bindings)", &windowed)] {
                for n in [1, 3, most] {
                    let y = run(ctx, n);
                    let same = y[..per]
                        .iter()
                        .zip(&alone)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{name} {layout:?}{device}: sample 0 of {n} differs");
                }
            }
            // The tuned plan serves every batch size (and is in use: it sums in another order).
            let tuned_alone = run(&tuned, 1);
            assert!(
                tuned_alone
                    .iter()
                    .zip(&alone)
                    .any(|(a, b)| a.to_bits() != b.to_bits()),
                "{name} {layout:?}: the tuning table's lane plan was not used"
            );
            for n in [3, most] {
                let y = run(&tuned, n);
                let same = y[..per]
                    .iter()
                    .zip(&tuned_alone)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name} {layout:?} (tuned): sample 0 of {n} differs");
            }
        }
    }
}
