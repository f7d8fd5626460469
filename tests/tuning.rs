//! Tuning tables: a measured kernel replaces the built-in choice where it can serve the call,
//! gives the same numbers, and a table of another adapter is refused.

use wgnorm::engine::rownorm::{RowKernel, RowMode, RowNorm, RowNormConfig};
use wgnorm::{Context, DType, Error, RowEntry, Tuning};
use wgnorm_reference::rownorm::layer_norm;
use wgnorm_tests::{assert_close, noise};

/// A context of its own: a table set on the shared one would change other tests' kernels.
fn fresh() -> Context {
    wgnorm_tests::context(None)
}

fn layer_norm_op(c: &Context) -> RowNorm {
    RowNorm::new(c, RowNormConfig::last_axis(RowMode::LayerNorm, DType::F32)).unwrap()
}

/// A kernel other than the built-in choice for 1024-element rows that every adapter can run.
fn other_than(default: RowKernel) -> RowKernel {
    let wg = match default {
        RowKernel::Workgroup { wg: 64 } => 128,
        _ => 64,
    };
    RowKernel::Workgroup { wg }
}

#[test]
fn a_tuned_kernel_replaces_the_default_and_matches_the_reference() {
    let c = fresh();
    let (rows, n) = (37usize, 1024usize);
    let x = noise(3, rows * n);
    let xt = c.upload(&x, &[rows, n], DType::F32).unwrap();
    let default = layer_norm_op(&c).kernel_for(&xt).unwrap().0;
    let tuned = other_than(default);
    let mut t = Tuning::new(c.adapter_info().name.clone());
    t.insert_row(RowEntry {
        mode: RowMode::LayerNorm,
        dtype: DType::F32,
        n: 1000, // the same power-of-two bucket as 1024
        rows: 4096,
        kernel: tuned,
    });
    c.set_tuning(t).unwrap();
    let op = layer_norm_op(&c);
    assert_eq!(op.kernel_for(&xt).unwrap().0, tuned);
    // Other lengths and RMSNorm keep the built-in choice.
    let short = c.upload(&x[..rows * 64], &[rows, 64], DType::F32).unwrap();
    assert_eq!(
        op.kernel_for(&short).unwrap().0,
        layer_norm_op(&fresh()).kernel_for(&short).unwrap().0
    );
    let (y, _, _) = op.forward(&xt, None, None, false).unwrap();
    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let want = layer_norm(&xd, n, None, None, 1e-5);
    assert_close("tuned y", &c.download(&y).unwrap(), &want.y, 1e-5, 1e-4);
}

#[test]
fn an_entry_that_cannot_serve_the_call_falls_back_to_the_built_in_choice() {
    let c = fresh();
    let n = 65536usize;
    let xt = c.upload(&noise(5, n), &[1, n], DType::F32).unwrap();
    let default = layer_norm_op(&c).kernel_for(&xt).unwrap().0;
    let mut t = Tuning::new(c.adapter_info().name.clone());
    // A register team holds at most TEAM_REGS accesses per lane: far fewer than 65536.
    t.insert_row(RowEntry {
        mode: RowMode::LayerNorm,
        dtype: DType::F32,
        n: n as u64,
        rows: 1024,
        kernel: RowKernel::TeamRegs {
            team: 1,
            rows_per_group: 64,
            rows_per_team: 1,
        },
    });
    c.set_tuning(t).unwrap();
    let op = layer_norm_op(&c);
    assert_eq!(op.kernel_for(&xt).unwrap().0, default);
    let (y, _, _) = op.forward(&xt, None, None, false).unwrap();
    let xd: Vec<f64> = noise(5, n).iter().map(|&v| v as f64).collect();
    let want = layer_norm(&xd, n, None, None, 1e-5);
    assert_close("fallback y", &c.download(&y).unwrap(), &want.y, 1e-5, 1e-4);
}

#[test]
fn a_table_of_another_adapter_is_refused() {
    let c = fresh();
    let e = c
        .set_tuning(Tuning::new("Some Other GPU 9000"))
        .unwrap_err();
    assert!(matches!(e, Error::Tuning(_)), "{e}");
    assert!(e.to_string().contains("Some Other GPU 9000"), "{e}");
    assert!(c.tuning().is_none());
}

/// A decode-step entry (measured on 1 row) replaces the choice for calls of one row of that
/// length only, and only with few-row kernels on: a prefill's rows keep the built-in choice,
/// and the result matches the reference.
#[test]
fn a_few_rows_entry_serves_calls_of_few_rows_only() {
    let c = fresh();
    let n = 16384usize;
    let x = noise(8, 64 * n);
    let one = c.upload(&x[..n], &[1, n], DType::F32).unwrap();
    let many = c.upload(&x, &[64, n], DType::F32).unwrap();
    let default_many = layer_norm_op(&c).kernel_for(&many).unwrap().0;
    let tuned = RowKernel::Split { wg: 32, chunks: 3 };
    let mut t = Tuning::new(c.adapter_info().name.clone());
    t.insert_row(RowEntry {
        mode: RowMode::LayerNorm,
        dtype: DType::F32,
        n: n as u64,
        rows: 1,
        kernel: tuned,
    });
    c.set_tuning(t).unwrap();
    // Row-count entries serve only ops with few-row kernels on (they change a row's bits).
    assert_eq!(layer_norm_op(&c).kernel_for(&one).unwrap().0, default_many);
    let op = layer_norm_op(&c).with_few_row_kernels(true);
    assert_eq!(op.kernel_for(&one).unwrap().0, tuned);
    assert_eq!(op.kernel_for(&many).unwrap().0, default_many);
    let (y, _, _) = op.forward(&one, None, None, false).unwrap();
    let xd: Vec<f64> = x[..n].iter().map(|&v| v as f64).collect();
    let want = layer_norm(&xd, n, None, None, 1e-5);
    assert_close("few-rows y", &c.download(&y).unwrap(), &want.y, 1e-5, 1e-4);
}

/// A measured lane plan for BatchNorm training of one geometry: the engine takes it for calls of
/// that geometry (training only), the output matches the f64 reference, and a forced plan still
/// wins over the table.
#[test]
fn a_tuned_lane_plan_serves_batch_norm_of_its_geometry() {
    use wgnorm::engine::core::chnorm::{ChannelView, LanePlan};
    use wgnorm::{BatchNorm, BatchNormConfig, BatchNormInputs, BatchNormOutputs, Layout, Mode};
    let c = fresh();
    let (n, ch, hw) = (4usize, 16usize, 36usize);
    let shape = [n, ch, 6, 6];
    let view = ChannelView::batch_norm(&shape, Layout::Nchw).unwrap();
    // Neither adapter class's default: one access per apply lane is the GPU default, contiguous
    // lane blocks the CPU one.
    let tuned: LanePlan = "strided+slot-lanes+apply1".parse().unwrap();
    let mut t = Tuning::new(c.adapter_info().name.clone());
    t.insert_lanes(wgnorm::LaneEntry {
        moments: true,
        dtype: DType::F32,
        view,
        plan: tuned,
    });
    c.set_tuning(t).unwrap();
    let bn = BatchNorm::new(&c, BatchNormConfig::default()).unwrap();
    assert_eq!(bn.engine().lanes_for(&view, true), tuned);
    assert_eq!(bn.engine().lanes_for(&view, false), LanePlan::default());
    let wide = ChannelView::batch_norm(&[n, 4 * ch, 6, 6], Layout::Nchw).unwrap();
    assert_eq!(bn.engine().lanes_for(&wide, true), LanePlan::default());
    let forced: LanePlan = "blocks+channel-lanes+apply16".parse().unwrap();
    let bn_forced = BatchNorm::new(&c, BatchNormConfig::default())
        .unwrap()
        .with_lane_plan(forced);
    assert_eq!(bn_forced.engine().lanes_for(&view, true), forced);

    let x: Vec<f32> = noise(21, n * ch * hw)
        .iter()
        .map(|v| v * 3.0 + 1.0)
        .collect();
    let w: Vec<f32> = noise(22, ch).iter().map(|v| v + 1.0).collect();
    let b = noise(23, ch);
    let (rm0, rv0) = (vec![0.0f32; ch], vec![1.0f32; ch]);
    let xt = c.upload(&x, &shape, DType::F32).unwrap();
    let (wt, bt) = (
        c.upload_f32(&w, &[ch]).unwrap(),
        c.upload_f32(&b, &[ch]).unwrap(),
    );
    let (rm, rv) = (
        c.upload_f32(&rm0, &[ch]).unwrap(),
        c.upload_f32(&rv0, &[ch]).unwrap(),
    );
    let y = c.empty(&shape, DType::F32).unwrap();
    let mut enc = c.device().create_command_encoder(&Default::default());
    let inputs = BatchNormInputs {
        x: &xt,
        weight: Some(&wt),
        bias: Some(&bt),
        running_mean: Some(&rm),
        running_var: Some(&rv),
    };
    let outputs = BatchNormOutputs { y: &y, saved: None };
    bn.encode(&mut enc, &inputs, &outputs, Mode::training(true))
        .unwrap();
    c.queue().submit([enc.finish()]);
    let f = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let want = wgnorm_reference::chnorm::batch_norm(
        &f(&x),
        n,
        ch,
        hw,
        Some(&f(&w)),
        Some(&f(&b)),
        &f(&rm0),
        &f(&rv0),
        true,
        0.1,
        true,
        1e-5,
    );
    assert_close(
        "tuned-plan y",
        &c.download(&y).unwrap(),
        &want.y,
        1e-5,
        1e-4,
    );
    assert_close(
        "tuned-plan running_var",
        &c.download(&rv).unwrap(),
        &want.running_var,
        1e-6,
        1e-5,
    );
    // The call ran the tuned plan's pipelines: the same call forced to that plan compiles none.
    let pipelines = c.pipeline_count();
    let bn_tuned = BatchNorm::new(&c, BatchNormConfig::default())
        .unwrap()
        .with_lane_plan(tuned);
    let y2 = c.empty(&shape, DType::F32).unwrap();
    let mut enc = c.device().create_command_encoder(&Default::default());
    let outputs2 = BatchNormOutputs {
        y: &y2,
        saved: None,
    };
    bn_tuned
        .encode(&mut enc, &inputs, &outputs2, Mode::training(true))
        .unwrap();
    assert_eq!(
        c.pipeline_count(),
        pipelines,
        "the tuned call ran another plan"
    );
}
