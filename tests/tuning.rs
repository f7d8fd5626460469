//! Tuning tables: a measured kernel replaces the built-in choice where it can serve the call,
//! gives the same numbers, and a table of another adapter is refused.

use wgnorm::engine::rownorm::{RowKernel, RowMode, RowNorm, RowNormConfig};
use wgnorm::{Context, DType, Error, RowEntry, Tuning};
use wgnorm_reference::rownorm::layer_norm;
use wgnorm_tests::{assert_close, ctx, noise};

/// A context of its own: a table set on the shared one would change other tests' kernels.
fn fresh() -> Context {
    ctx(); // sets up the environment the software adapter wants
    Context::new().expect("adapter")
}

fn layer_norm_op(c: &Context) -> RowNorm {
    let cfg = RowNormConfig {
        mode: RowMode::LayerNorm,
        axis: -1,
        eps: 1e-5,
        weight_offset: 0.0,
        dtype: DType::F32,
    };
    RowNorm::new(c, cfg).unwrap()
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
/// length only: a prefill's rows keep the built-in choice, and the result matches the reference.
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
    let op = layer_norm_op(&c);
    assert_eq!(op.kernel_for(&one).unwrap().0, tuned);
    assert_eq!(op.kernel_for(&many).unwrap().0, default_many);
    let (y, _, _) = op.forward(&one, None, None, false).unwrap();
    let xd: Vec<f64> = x[..n].iter().map(|&v| v as f64).collect();
    let want = layer_norm(&xd, n, None, None, 1e-5);
    assert_close("few-rows y", &c.download(&y).unwrap(), &want.y, 1e-5, 1e-4);
}
