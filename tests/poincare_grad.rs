//! The hyperbolic backward passes against the f64 reference gradients (checked against finite
//! differences in `wgnorm_reference::grad`). The gyromidpoint's: layouts, curvatures 0.1 .. 10,
//! f16, points outside the ball. Poincaré midpoint batch norm's:
//! [P, D] rows and NCHW (point blocks or not), curvatures 0.01 .. 10, a batch whose Fréchet
//! variance is below the 1e-6 that regularizes it (points 1e-3 apart: the eps matters), tangent
//! vectors far past the projection radius, several tiles, f16, running statistics, bitwise
//! reproducibility and bad input.

use wgnorm::{
    Context, DType, PoincareBatchNorm, PoincareBatchNormConfig, PoincareBatchNormGradOutputs,
    PoincareBatchNormInputs, PoincareMidpoint, PoincareStatistics, Tensor,
};
use wgnorm_reference::grad::poincare_batch_norm_grad_with;
use wgnorm_reference::poincare::{points_along, scatter_points, Ball, PoincareStats, PROJ_EPS_F32};
use wgnorm_tests::{assert_close, ball_points, ctx, noise, round_to};

/// `got` against `want`: absolute `tol * max|want|` plus `tol` relative.
fn check(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let scale = want.iter().fold(0.0f64, |a, w| a.max(w.abs())).max(1e-30);
    assert_close(what, got, want, tol * scale, tol);
}

struct Case {
    shape: Vec<usize>,
    /// 1 (NCHW, points are pixels) or -1 (rows).
    axis: isize,
    c: f64,
    /// Spread of the tangent vectors, and a common offset added to them.
    scale: f32,
    offset: f32,
    w: f32,
    dtype: DType,
    seed: u64,
}

impl Case {
    fn new(shape: &[usize], axis: isize, c: f64, scale: f32) -> Case {
        Case {
            shape: shape.to_vec(),
            axis,
            c,
            scale,
            offset: 0.0,
            w: 0.8,
            dtype: DType::F32,
            seed: shape.iter().sum::<usize>() as u64,
        }
    }

    fn ax(&self) -> usize {
        if self.axis < 0 {
            self.shape.len() - 1
        } else {
            self.axis as usize
        }
    }

    fn d(&self) -> usize {
        self.shape[self.ax()]
    }
}

struct Data {
    x: Vec<f32>,
    bias: Vec<f32>,
    dy: Vec<f32>,
}

fn data(case: &Case) -> Data {
    let numel: usize = case.shape.iter().product();
    let round =
        |v: Vec<f32>| -> Vec<f32> { round_to(case.dtype, &v).iter().map(|&e| e as f32).collect() };
    Data {
        x: round(
            noise(case.seed, numel)
                .iter()
                .map(|v| v * case.scale + case.offset)
                .collect(),
        ),
        bias: noise(case.seed + 1, case.d())
            .iter()
            .map(|v| v * 0.5)
            .collect(),
        dy: round(noise(case.seed + 2, numel)),
    }
}

fn up(c: &Context, v: &[f32], shape: &[usize]) -> Tensor {
    c.upload_f32(v, shape).unwrap()
}

fn rows(v: &[f64], d: usize) -> Vec<Vec<f64>> {
    v.chunks(d).map(|r| r.to_vec()).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&e| e as f64).collect()
}

/// The backward on the device: dx, dbias, dweight.
fn device(
    c_: &Context,
    op: &PoincareBatchNorm,
    case: &Case,
    data: &Data,
    running: Option<&PoincareStats>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = case.d();
    let up = |v: &[f32], shape: &[usize], dtype| c_.upload(v, shape, dtype).unwrap();
    let x = up(&data.x, &case.shape, case.dtype);
    let dy = up(&data.dy, &case.shape, case.dtype);
    let bias = up(&data.bias, &[d], DType::F32);
    let weight = up(&[case.w], &[1], DType::F32);
    let rm = running.map(|s| {
        let m: Vec<f32> = s.mean.iter().map(|&v| v as f32).collect();
        up(&m, &[d], DType::F32)
    });
    let rv = running.map(|s| up(&[s.var as f32], &[1], DType::F32));
    let inputs = PoincareBatchNormInputs {
        x: &x,
        bias: &bias,
        weight: &weight,
        running_mean: rm.as_ref(),
        running_var: rv.as_ref(),
    };
    let stats = match running {
        Some(_) => PoincareStatistics::Running,
        None => PoincareStatistics::Batch,
    };
    let g = op.backward(&inputs, &dy, stats).unwrap();
    let get = |t: &Tensor| c_.download(t).unwrap();
    (get(&g.dx), get(&g.dbias), get(&g.dweight))
}

fn op_for(c_: &Context, case: &Case) -> PoincareBatchNorm {
    let cfg = PoincareBatchNormConfig {
        c: case.c as f32,
        feature_axis: case.axis,
        dtype: case.dtype,
        ..Default::default()
    };
    PoincareBatchNorm::new(c_, cfg).unwrap()
}

/// The device's gradients against the reference's, and the same bits on a second run.
fn run_case(case: &Case, running: Option<&PoincareStats>, tol: f64) {
    let c_ = ctx();
    let op = op_for(c_, case);
    let data = data(case);
    let got = device(c_, &op, case, &data, running);
    let (ax, d) = (case.ax(), case.d());
    let s: usize = case.shape[ax + 1..].iter().product();
    let ball = Ball::new(case.c, PROJ_EPS_F32);
    let (points, _, _) = points_along(&f64s(&data.x), &case.shape, ax);
    let (dyp, _, _) = points_along(&f64s(&data.dy), &case.shape, ax);
    let bias = f64s(&data.bias);
    let want = poincare_batch_norm_grad_with(&ball, &points, (&bias, case.w as f64), &dyp, running);
    let what = format!(
        "poincare bn backward {:?} axis {} c={} scale {} {:?}{}",
        case.shape,
        case.axis,
        case.c,
        case.scale,
        case.dtype,
        if running.is_some() { " running" } else { "" }
    );
    check(
        &format!("{what}: dx"),
        &got.0,
        &scatter_points(&want.dx, d, s),
        tol,
    );
    check(&format!("{what}: dbias"), &got.1, &want.dbias, tol);
    check(&format!("{what}: dweight"), &got.2, &[want.dweight], tol);
    let again = device(c_, &op, case, &data, running);
    let bits = |v: &[f32]| -> Vec<u32> { v.iter().map(|e| e.to_bits()).collect() };
    assert_eq!(
        bits(&got.0),
        bits(&again.0),
        "{what}: dx bitwise reproducible"
    );
    assert_eq!(
        bits(&got.1),
        bits(&again.1),
        "{what}: dbias bitwise reproducible"
    );
}

#[test]
fn backward_rows_match_reference() {
    run_case(&Case::new(&[64, 16], -1, 0.1, 1.5), None, 1e-3);
    run_case(&Case::new(&[5, 3], -1, 1.0, 0.7), None, 1e-3);
    run_case(&Case::new(&[40, 1], -1, 10.0, 0.2), None, 1e-3);
}

#[test]
fn backward_nchw_matches_reference() {
    // 25 pixels: one point per invocation; 36: blocks of 4 points in the forward's stages.
    run_case(&Case::new(&[4, 8, 5, 5], 1, 0.1, 2.0), None, 1e-3);
    run_case(&Case::new(&[2, 4, 6, 6], 1, 1.0, 1.0), None, 1e-3);
    run_case(&Case::new(&[3, 5, 4, 4], 1, 0.01, 6.0), None, 1e-3);
}

#[test]
fn backward_over_several_tiles() {
    run_case(&Case::new(&[16, 8, 28, 28], 1, 0.1, 2.0), None, 1e-3);
}

/// Points within ~1e-3 of each other around an offset: the Fréchet variance (~1e-6) is at the
/// eps that regularizes the gain, |(-m) (+) x| is 1e-3 of |x|, and the gain ~ 700 amplifies
/// every rounding of log_m x. A kernel that expanded |w|^2 from dot products fails here.
#[test]
fn backward_with_variance_at_eps() {
    let mut case = Case::new(&[48, 6], -1, 0.5, 1e-3);
    case.offset = 0.4;
    run_case(&case, None, 1e-3);
}

/// Tangent vectors far past the radius: exp0 lands every point on the projection.
#[test]
fn backward_through_projections() {
    run_case(&Case::new(&[4, 6, 5, 5], 1, 1.0, 50.0), None, 1e-3);
}

#[test]
fn backward_f16() {
    let mut case = Case::new(&[4, 8, 4, 4], 1, 0.1, 2.0);
    case.dtype = DType::F16;
    // The reference sees the same f16 inputs; dx is rounded to f16 on the way out.
    run_case(&case, None, 3e-3);
}

/// Running statistics are constants: only each point's chain, exp0 and the parameters.
#[test]
fn backward_with_running_statistics() {
    let case = Case::new(&[6, 5, 3, 3], 1, 0.5, 1.0);
    let stats = PoincareStats {
        mean: noise(77, 5).iter().map(|&v| 0.3 * v as f64).collect(),
        var: 0.42,
    };
    run_case(&case, Some(&stats), 1e-3);
}

#[test]
fn backward_bad_input_is_typed_and_empty_is_a_no_op() {
    let c_ = ctx();
    let case = Case::new(&[2, 3, 2, 2], 1, 0.1, 1.0);
    let op = op_for(c_, &case);
    let f = |v: &[f32], shape: &[usize]| c_.upload_f32(v, shape).unwrap();
    let x = f(&[0.1; 24], &[2, 3, 2, 2]);
    let bias = f(&[0.0; 3], &[3]);
    let weight = f(&[1.0], &[1]);
    let inputs = PoincareBatchNormInputs {
        x: &x,
        bias: &bias,
        weight: &weight,
        running_mean: None,
        running_var: None,
    };
    let bad_dy = f(&[0.0; 12], &[2, 3, 2]);
    let r = op.backward(&inputs, &bad_dy, PoincareStatistics::Batch);
    assert!(
        matches!(r, Err(wgnorm::Error::ShapeMismatch { .. })),
        "{:?}",
        r.err()
    );
    let dy = f(&[0.0; 24], &[2, 3, 2, 2]);
    let dx = c_.empty(&[2, 3, 2, 2], DType::F32).unwrap();
    let wrong = c_.empty(&[3], DType::F16).unwrap();
    let outputs = PoincareBatchNormGradOutputs {
        dx: &dx,
        dbias: Some(&wrong),
        dweight: None,
    };
    let r = c_.record_and_submit(|enc| {
        op.encode_backward(enc, &inputs, &dy, &outputs, PoincareStatistics::Batch)
    });
    assert!(
        matches!(r, Err(wgnorm::Error::DTypeMismatch { .. })),
        "{:?}",
        r.err()
    );
    // The running mode without its statistics.
    let r = op.backward(&inputs, &dy, PoincareStatistics::Running);
    assert!(
        matches!(
            r,
            Err(wgnorm::Error::InvalidParameter {
                name: "running_mean",
                ..
            })
        ),
        "{:?}",
        r.err()
    );
    // One point: batch statistics are undefined, as in the forward.
    let one = f(&[0.1, 0.2, 0.3], &[1, 3]);
    let rows = op_for(c_, &Case::new(&[1, 3], -1, 0.1, 1.0));
    let one_in = PoincareBatchNormInputs { x: &one, ..inputs };
    let r = rows.backward(&one_in, &one, PoincareStatistics::Batch);
    assert!(
        matches!(r, Err(wgnorm::Error::InvalidParameter { name: "x", .. })),
        "{:?}",
        r.err()
    );
    // No points: nothing to do, nothing written.
    let empty = c_.empty(&[0, 3, 2, 2], DType::F32).unwrap();
    let e_in = PoincareBatchNormInputs {
        x: &empty,
        ..inputs
    };
    let g = op
        .backward(&e_in, &empty, PoincareStatistics::Batch)
        .unwrap();
    assert_eq!(c_.download(&g.dx).unwrap().len(), 0);
}

/// The midpoint's backward for `x` of `shape` (points as rows in `pts_rows`) against
/// `wgnorm_reference::grad::poincare_midpoint_grad` (checked by finite differences there).
fn midpoint_grad_case(shape: &[usize], axis: isize, c: f64, pts_rows: Vec<f32>, dtype: DType) {
    let c_ = ctx();
    let ax = if axis < 0 {
        shape.len() - 1
    } else {
        axis as usize
    };
    let (d, s) = (shape[ax], shape[ax + 1..].iter().product::<usize>());
    let x = scatter_points(&rows(&round_to(dtype, &pts_rows), d), d, s);
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let dm: Vec<f32> = noise(91, d);
    let op = PoincareMidpoint::new(
        c_,
        wgnorm::BallConfig {
            c: c as f32,
            feature_axis: axis,
            dtype,
        },
    )
    .unwrap();
    let (xt, dmt) = (
        c_.upload(&xf, shape, dtype).unwrap(),
        c_.upload(&dm, &[d], dtype).unwrap(),
    );
    let dx = op.backward(&xt, &dmt).unwrap();
    let ball = Ball::new(c, PROJ_EPS_F32);
    let (points, _, _) = points_along(&x, shape, ax);
    let g = wgnorm_reference::grad::poincare_midpoint_grad(&ball, &points, &round_to(dtype, &dm));
    let want = scatter_points(&g, d, s);
    let tol = if dtype == DType::F16 { 2e-2 } else { 1e-4 };
    let what = format!("midpoint backward {shape:?} axis {axis} c={c} {dtype:?}");
    check(&what, &c_.download(&dx).unwrap(), &want, tol);
    let again = op.backward(&xt, &dmt).unwrap();
    let bits = |t: &Tensor| -> Vec<u32> {
        c_.download(t)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&dx), bits(&again), "{what}: bitwise reproducible");
}

#[test]
fn midpoint_backward_matches_reference() {
    midpoint_grad_case(
        &[3000, 3],
        -1,
        0.1,
        ball_points(11, 3000, 3, 0.1),
        DType::F32,
    );
    midpoint_grad_case(
        &[4, 5, 7, 9],
        1,
        1.0,
        ball_points(12, 4 * 63, 5, 1.0),
        DType::F32,
    );
    midpoint_grad_case(
        &[5, 8, 6, 10],
        1,
        0.5,
        ball_points(13, 300, 8, 0.5),
        DType::F32,
    );
    midpoint_grad_case(
        &[200, 1],
        -1,
        10.0,
        ball_points(14, 200, 1, 10.0),
        DType::F32,
    );
    midpoint_grad_case(&[3, 2], -1, 1.0, ball_points(15, 3, 2, 1.0), DType::F32);
    midpoint_grad_case(&[64, 16], -1, 0.3, ball_points(16, 64, 16, 0.3), DType::F16);
    // Points outside the ball: the projection's Jacobian.
    let outside: Vec<f32> = ball_points(17, 40, 4, 1.0)
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 12 < 4 { v * 3.0 } else { *v })
        .collect();
    midpoint_grad_case(&[40, 4], -1, 1.0, outside, DType::F32);
}

#[test]
fn midpoint_backward_bad_input_is_typed() {
    let c_ = ctx();
    let op = PoincareMidpoint::new(c_, Default::default()).unwrap();
    let x = up(c_, &ball_points(21, 6, 3, 1.0), &[6, 3]);
    let (dm, dm_bad) = (up(c_, &[1.0; 3], &[3]), up(c_, &[1.0; 2], &[2]));
    let dx = c_.empty(&[6, 3], DType::F32).unwrap();
    let mut enc = c_.device().create_command_encoder(&Default::default());
    let r = op.encode_backward(&mut enc, &x, &dm_bad, &dx);
    assert!(
        matches!(r, Err(wgnorm::Error::ShapeMismatch { .. })),
        "{r:?}"
    );
    let r = op.encode_backward(&mut enc, &x, &dm, &x);
    assert!(r.is_err(), "dx aliasing x: {r:?}");
    let none = c_.empty(&[0, 3], DType::F32).unwrap();
    let r = op.encode_backward(&mut enc, &none, &dm, &none);
    assert!(
        matches!(r, Err(wgnorm::Error::InvalidParameter { .. })),
        "{r:?}"
    );
}
