//! The hyperbolic family against the f64 reference: every ball op, the gyromidpoint and the
//! Poincaré midpoint batch norm, over curvatures 1e-3 .. 10, D = 1 .. 64, [P, D] and NCHW
//! layouts, points at 0.99 of the radius, identical points, tangent vectors whose norm would
//! overflow a naive tanh, running statistics over several steps, and bad input.
//!
//! Tolerances are relative to the largest expected magnitude of the output (`tol * max|want|`
//! absolute plus `tol` relative): the f32 kernels see the same f32 inputs as the reference, so the
//! error is the kernels' own rounding, amplified near the boundary by `1 / (1 - c|x|^2)` (50 at
//! 0.99 of the radius).

use wgnorm::{
    BallOps, Context, DType, PoincareBatchNorm, PoincareBatchNormConfig, PoincareBatchNormInputs,
    PoincareMidpoint, PoincareStatistics, Tensor,
};
use wgnorm_reference::poincare::{
    poincare_batch_norm, poincare_batch_norm_with, poincare_batch_stats, poincare_running_update,
    points_along, scatter_points, Ball, PoincareStats, PROJ_EPS_F32,
};
use wgnorm_tests::{assert_close, ball_points, ctx, noise, round_to};

/// `got` against `want` with a relative tolerance `tol` and an absolute one of `tol` times the
/// largest |want| (assert_close names the worst element when it fails).
fn check(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let scale = want.iter().fold(0.0f64, |a, w| a.max(w.abs())).max(1e-30);
    assert_close(what, got, want, tol * scale, tol);
}

fn up(c: &Context, v: &[f32], shape: &[usize]) -> Tensor {
    c.upload_f32(v, shape).unwrap()
}

fn rows(v: &[f64], d: usize) -> Vec<Vec<f64>> {
    v.chunks(d).map(|r| r.to_vec()).collect()
}

#[test]
fn ball_ops_match_reference() {
    let c_ = ctx();
    for (ci, &c) in [1e-3f64, 0.1, 1.0, 10.0].iter().enumerate() {
        for d in [1usize, 3, 64] {
            let p = 300;
            let seed = 100 * ci as u64 + d as u64;
            let xs = ball_points(seed, p, d, c);
            let ys = ball_points(seed + 7, p, d, c);
            // Tangent vectors of norm up to ~3/sqrt(c), plus a few huge ones (tanh overflow).
            let mut vs: Vec<f32> = noise(seed + 11, p * d)
                .iter()
                .map(|v| v * 3.0 / c.sqrt() as f32)
                .collect();
            for k in 0..d {
                vs[5 * d + k] = 1e4;
            }
            let ws: Vec<f32> = noise(seed + 13, p * d).to_vec();
            let ops = BallOps::new(
                c_,
                wgnorm::BallConfig {
                    c: c as f32,
                    feature_axis: -1,
                    dtype: DType::F32,
                },
            )
            .unwrap();
            let ball = Ball::new(c, PROJ_EPS_F32);
            let (xt, yt, vt, wt) = (
                up(c_, &xs, &[p, d]),
                up(c_, &ys, &[p, d]),
                up(c_, &vs, &[p, d]),
                up(c_, &ws, &[p, d]),
            );
            let (xr, yr, vr, wr) = (
                rows(&round_to(DType::F32, &xs), d),
                rows(&round_to(DType::F32, &ys), d),
                rows(&round_to(DType::F32, &vs), d),
                rows(&round_to(DType::F32, &ws), d),
            );
            // In 1-D every pair of points is parallel or anti-parallel: anti-parallel points at
            // 0.99 of the radius make the Möbius and gyration denominators (1 - c|x||y|)^2 ~ 4e-4,
            // so f32 rounding of the inputs' products is amplified ~1e3-1e4 times.
            let (tol_gyr, tol_exp) = if d == 1 { (2e-3, 5e-3) } else { (1e-4, 1e-4) };
            let out = c_.empty(&[p, d], DType::F32).unwrap();
            let out_s = c_.empty(&[p], DType::F32).unwrap();
            type Rec<'a> = Box<dyn Fn(&mut wgpu::CommandEncoder) -> wgnorm::Result<()> + 'a>;
            let vec_cases: Vec<(&str, Rec, Vec<Vec<f64>>, f64)> = vec![
                (
                    "project",
                    Box::new(|e| ops.project(e, &vt, &out)),
                    vr.iter().map(|v| ball.project(v)).collect(),
                    1e-5,
                ),
                (
                    "exp0",
                    Box::new(|e| ops.exp0(e, &vt, &out)),
                    vr.iter().map(|v| ball.exp0(v)).collect(),
                    1e-5,
                ),
                (
                    "log0",
                    Box::new(|e| ops.log0(e, &xt, &out)),
                    xr.iter().map(|x| ball.log0(x)).collect(),
                    1e-5,
                ),
                (
                    "mobius_add",
                    Box::new(|e| ops.mobius_add(e, &xt, &yt, &out)),
                    xr.iter()
                        .zip(&yr)
                        .map(|(x, y)| ball.mobius_add(x, y))
                        .collect(),
                    1e-4,
                ),
                (
                    "expmap",
                    Box::new(|e| ops.expmap(e, &xt, &wt, &out)),
                    xr.iter().zip(&wr).map(|(x, v)| ball.expmap(x, v)).collect(),
                    tol_exp,
                ),
                (
                    "logmap",
                    Box::new(|e| ops.logmap(e, &xt, &yt, &out)),
                    xr.iter().zip(&yr).map(|(x, y)| ball.logmap(x, y)).collect(),
                    1e-4,
                ),
                (
                    "gyration",
                    Box::new(|e| ops.gyration(e, &xt, &yt, &wt, &out)),
                    (0..p)
                        .map(|i| ball.gyration(&xr[i], &yr[i], &wr[i]))
                        .collect(),
                    tol_gyr,
                ),
                (
                    "transport",
                    Box::new(|e| ops.transport(e, &xt, &yt, &wt, &out)),
                    (0..p)
                        .map(|i| ball.transport(&xr[i], &yr[i], &wr[i]))
                        .collect(),
                    tol_gyr,
                ),
            ];
            for (name, rec, want, tol) in vec_cases {
                let mut enc = c_.device().create_command_encoder(&Default::default());
                rec(&mut enc).unwrap();
                c_.queue().submit([enc.finish()]);
                let got = c_.download(&out).unwrap();
                let want: Vec<f64> = want.concat();
                check(&format!("{name} c={c} d={d}"), &got, &want, tol);
            }
            let scalar_cases: Vec<(&str, Rec, Vec<f64>, f64)> = vec![
                (
                    "distance",
                    Box::new(|e| ops.distance(e, &xt, &yt, &out_s)),
                    // artanh'(u) = 1/(1 - u^2) amplifies |(-x) (+) y| near the boundary.
                    xr.iter()
                        .zip(&yr)
                        .map(|(x, y)| ball.distance(x, y))
                        .collect(),
                    5e-4,
                ),
                (
                    "conformal_factor",
                    Box::new(|e| ops.conformal_factor(e, &xt, &out_s)),
                    xr.iter().map(|x| ball.lambda(x)).collect(),
                    1e-4,
                ),
            ];
            for (name, rec, want, tol) in scalar_cases {
                let mut enc = c_.device().create_command_encoder(&Default::default());
                rec(&mut enc).unwrap();
                c_.queue().submit([enc.finish()]);
                let got = c_.download(&out_s).unwrap();
                check(&format!("{name} c={c} d={d}"), &got, &want, tol);
            }
        }
    }
}

#[test]
fn ball_ops_broadcast_and_channel_axis() {
    // NCHW points along axis 1, a single base point [C] for all of them.
    let c_ = ctx();
    let (n, ch, h, w) = (2, 5, 3, 4);
    let c = 0.5;
    let shape = [n, ch, h, w];
    let pts = ball_points(3, n * h * w, ch, c);
    // Lay the points out as NCHW.
    let pts_d = round_to(DType::F32, &pts);
    let nchw = scatter_points(&rows(&pts_d, ch), ch, h * w);
    let nchw_f: Vec<f32> = nchw.iter().map(|&v| v as f32).collect();
    let base = ball_points(4, 1, ch, c);
    let ops = BallOps::new(
        c_,
        wgnorm::BallConfig {
            c: c as f32,
            feature_axis: 1,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let xt = up(c_, &nchw_f, &shape);
    let bt = up(c_, &base, &[ch]);
    let out = c_.empty(&shape, DType::F32).unwrap();
    let dist = c_.empty(&[n, h, w], DType::F32).unwrap();
    let mut enc = c_.device().create_command_encoder(&Default::default());
    ops.logmap(&mut enc, &bt, &xt, &out).unwrap();
    ops.distance(&mut enc, &bt, &xt, &dist).unwrap();
    c_.queue().submit([enc.finish()]);
    let ball = Ball::new(c, PROJ_EPS_F32);
    let base_d = round_to(DType::F32, &base);
    let (points, d, s) = points_along(&nchw, &shape, 1);
    let want: Vec<Vec<f64>> = points.iter().map(|x| ball.logmap(&base_d, x)).collect();
    check(
        "logmap broadcast",
        &c_.download(&out).unwrap(),
        &scatter_points(&want, d, s),
        1e-4,
    );
    let want_d: Vec<f64> = points.iter().map(|x| ball.distance(&base_d, x)).collect();
    check(
        "distance broadcast",
        &c_.download(&dist).unwrap(),
        &want_d,
        1e-4,
    );
}

fn midpoint_case(shape: &[usize], axis: isize, c: f64, pts_rows: Vec<f32>) {
    let c_ = ctx();
    let ax = if axis < 0 {
        shape.len() - 1
    } else {
        axis as usize
    };
    let d = shape[ax];
    let s: usize = shape[ax + 1..].iter().product();
    // pts_rows holds the points as rows; lay them out along the axis.
    let x = scatter_points(&rows(&round_to(DType::F32, &pts_rows), d), d, s);
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let op = PoincareMidpoint::new(
        c_,
        wgnorm::BallConfig {
            c: c as f32,
            feature_axis: axis,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let m = op.forward(&up(c_, &xf, shape)).unwrap();
    let ball = Ball::new(c, PROJ_EPS_F32);
    let (points, _, _) = points_along(&x, shape, ax);
    let want = ball.midpoint(&points);
    check(
        &format!("midpoint {shape:?} c={c}"),
        &c_.download(&m).unwrap(),
        &want,
        2e-5,
    );
}

#[test]
fn midpoint_matches_reference() {
    // Many tiles on the row path (Kahan-summed tile partials), the channel path, D = 1, curvatures
    // from 1e-3 to 10.
    midpoint_case(&[200_000, 3], -1, 0.1, ball_points(1, 200_000, 3, 0.1));
    midpoint_case(&[8, 5, 33, 35], 1, 1.0, ball_points(2, 8 * 33 * 35, 5, 1.0));
    midpoint_case(&[1000, 1], -1, 10.0, ball_points(3, 1000, 1, 10.0));
    midpoint_case(&[777, 64], -1, 1e-3, ball_points(4, 777, 64, 1e-3));
    midpoint_case(&[3, 2], -1, 1.0, ball_points(5, 3, 2, 1.0));
    // Point blocks (pixels in runs of 4: H*W = 60, D = 8), one sample ending a block mid-tile.
    midpoint_case(&[5, 8, 6, 10], 1, 0.5, ball_points(7, 5 * 60, 8, 0.5));
    // H*W a multiple of 4 but D = 5: the midpoint is not whole vectors, no blocks.
    midpoint_case(&[3, 5, 4, 4], 1, 0.5, ball_points(8, 3 * 16, 5, 0.5));
    // Points clustered near the boundary on one side.
    let near: Vec<f32> = ball_points(6, 500, 4, 2.0)
        .chunks(4)
        .flat_map(|v| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            let r = 0.99 / 2f32.sqrt();
            [
                r * 0.9 + 0.1 * r * v[0] / n,
                0.1 * r * v[1] / n,
                0.0,
                0.05 * v[3],
            ]
        })
        .collect();
    midpoint_case(&[500, 4], -1, 2.0, near);
}

#[test]
fn midpoint_of_identical_points_is_the_point() {
    let c_ = ctx();
    let x0 = [0.3f32, -1.2, 0.7];
    let xs: Vec<f32> = (0..5000).flat_map(|_| x0).collect();
    let op = PoincareMidpoint::new(
        c_,
        wgnorm::BallConfig {
            c: 0.1,
            feature_axis: -1,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let m = c_
        .download(&op.forward(&up(c_, &xs, &[5000, 3])).unwrap())
        .unwrap();
    let want: Vec<f64> = x0.iter().map(|&v| v as f64).collect();
    assert_close("midpoint of identical points", &m, &want, 1e-6, 1e-5);
}

struct BnCase {
    shape: Vec<usize>,
    c: f64,
    scale: f32,
    w: f32,
    seed: u64,
}

fn bn_inputs(case: &BnCase) -> (Vec<f32>, Vec<f32>) {
    let numel: usize = case.shape.iter().product();
    let x: Vec<f32> = noise(case.seed, numel)
        .iter()
        .map(|v| v * case.scale)
        .collect();
    let b: Vec<f32> = noise(case.seed + 1, case.shape[1])
        .iter()
        .map(|v| v * 0.5)
        .collect();
    (x, b)
}

fn run_bn(
    op: &PoincareBatchNorm,
    x: &[f32],
    shape: &[usize],
    b: &[f32],
    w: f32,
    running: Option<(&Tensor, &Tensor)>,
    stats: PoincareStatistics,
) -> Vec<f32> {
    let c_ = ctx();
    let (xt, bt, wt) = (up(c_, x, shape), up(c_, b, &[b.len()]), up(c_, &[w], &[1]));
    let inputs = PoincareBatchNormInputs {
        x: &xt,
        bias: &bt,
        weight: &wt,
        running_mean: running.map(|r| r.0),
        running_var: running.map(|r| r.1),
    };
    let y = op.forward(&inputs, stats).unwrap();
    c_.download(&y).unwrap()
}

#[test]
fn batch_norm_matches_reference() {
    let cases = [
        BnCase {
            shape: vec![4, 8, 5, 5],
            c: 0.1,
            scale: 2.0,
            w: 1.0,
            seed: 1,
        },
        BnCase {
            shape: vec![64, 16],
            c: 0.1,
            scale: 1.5,
            w: 0.7,
            seed: 2,
        },
        BnCase {
            shape: vec![2, 3, 7, 7],
            c: 1.0,
            scale: 2.0,
            w: 1.3,
            seed: 3,
        },
        BnCase {
            shape: vec![3, 1, 4, 4],
            c: 0.5,
            scale: 1.0,
            w: 1.0,
            seed: 4,
        },
        BnCase {
            shape: vec![16, 32, 6, 6],
            c: 1e-3,
            scale: 40.0,
            w: 1.0,
            seed: 5,
        },
        BnCase {
            shape: vec![8, 4, 9, 9],
            c: 10.0,
            scale: 0.4,
            w: 2.0,
            seed: 6,
        },
        // Tangent norms of ~50/sqrt(c): most points land on the projection radius.
        BnCase {
            shape: vec![4, 6, 5, 5],
            c: 1.0,
            scale: 50.0,
            w: 1.0,
            seed: 7,
        },
        // Many points: several tiles, the channel-path tile sums.
        BnCase {
            shape: vec![32, 8, 28, 28],
            c: 0.1,
            scale: 2.0,
            w: 1.0,
            seed: 8,
        },
    ];
    for case in &cases {
        let c_ = ctx();
        let (x, b) = bn_inputs(case);
        let cfg = PoincareBatchNormConfig {
            c: case.c as f32,
            ..Default::default()
        };
        let op = PoincareBatchNorm::new(c_, cfg).unwrap();
        let got = run_bn(
            &op,
            &x,
            &case.shape,
            &b,
            case.w,
            None,
            PoincareStatistics::Batch,
        );
        let ball = Ball::new(case.c, PROJ_EPS_F32);
        let want = poincare_batch_norm(
            &ball,
            &round_to(DType::F32, &x),
            &case.shape,
            1,
            &round_to(DType::F32, &b),
            case.w as f64,
        );
        check(
            &format!("poincare bn {:?} c={}", case.shape, case.c),
            &got,
            &want,
            2e-4,
        );
    }
}

#[test]
fn batch_norm_of_identical_points() {
    // sigma^2 = 0: every u_i = 0, so y = log0(exp0(b)) = b. The gain sqrt(w / 1e-6) = 1000
    // amplifies the f32 rounding of log_m x_i (~1e-7 |x|) to ~1e-4, hence the looser tolerance
    // (expanding |u|^2 from its coefficients instead of using |u| = r l |w| gave 5e-2 here).
    let c_ = ctx();
    let (n, ch) = (50, 6);
    let v0: Vec<f32> = noise(9, ch);
    let x: Vec<f32> = (0..n).flat_map(|_| v0.clone()).collect();
    let b: Vec<f32> = noise(10, ch).iter().map(|v| v * 0.5).collect();
    let op = PoincareBatchNorm::new(c_, Default::default()).unwrap();
    let got = run_bn(&op, &x, &[n, ch], &b, 1.0, None, PoincareStatistics::Batch);
    let want: Vec<f64> = (0..n).flat_map(|_| round_to(DType::F32, &b)).collect();
    check("poincare bn identical points", &got, &want, 1e-3);
}

#[test]
fn batch_norm_running_statistics_over_steps() {
    let c_ = ctx();
    let shape = [6usize, 5, 4, 4];
    let c = 0.3;
    let cfg = PoincareBatchNormConfig {
        c: c as f32,
        momentum: 0.2,
        ..Default::default()
    };
    let op = PoincareBatchNorm::new(c_, cfg).unwrap();
    let ball = Ball::new(c, PROJ_EPS_F32);
    // Start from a running mean off the origin, as after earlier training.
    let rm0: Vec<f32> = noise(20, 5).iter().map(|v| v * 0.3).collect();
    let rm = up(c_, &rm0, &[5]);
    let rv = up(c_, &[1.5], &[1]);
    let mut state = PoincareStats {
        mean: round_to(DType::F32, &rm0),
        var: 1.5,
    };
    let b: Vec<f32> = noise(21, 5).iter().map(|v| v * 0.4).collect();
    let bd = round_to(DType::F32, &b);
    for step in 0..3u64 {
        let x: Vec<f32> = noise(30 + step, shape.iter().product())
            .iter()
            .map(|v| v * 2.0 + 0.3 * step as f32)
            .collect();
        let got = run_bn(
            &op,
            &x,
            &shape,
            &b,
            0.9,
            Some((&rm, &rv)),
            PoincareStatistics::BatchUpdateRunning,
        );
        let xd = round_to(DType::F32, &x);
        let want = poincare_batch_norm(&ball, &xd, &shape, 1, &bd, 0.9);
        check(&format!("poincare bn train step {step}"), &got, &want, 5e-5);
        let (pts, _, _) = points_along(&xd, &shape, 1);
        let batch = poincare_batch_stats(&ball, &pts);
        state = poincare_running_update(&ball, &state, &batch, 0.2);
        check(
            &format!("running_mean step {step}"),
            &c_.download(&rm).unwrap(),
            &state.mean,
            1e-4,
        );
        check(
            &format!("running_var step {step}"),
            &c_.download(&rv).unwrap(),
            &[state.var],
            1e-4,
        );
    }
    // Inference with the running statistics.
    let x: Vec<f32> = noise(40, shape.iter().product())
        .iter()
        .map(|v| v * 2.0)
        .collect();
    let got = run_bn(
        &op,
        &x,
        &shape,
        &b,
        0.9,
        Some((&rm, &rv)),
        PoincareStatistics::Running,
    );
    let xd = round_to(DType::F32, &x);
    let (pts, d, s) = points_along(&xd, &shape, 1);
    let want = scatter_points(
        &poincare_batch_norm_with(&ball, &pts, &state, &bd, 0.9),
        d,
        s,
    );
    check("poincare bn running inference", &got, &want, 5e-5);
    // Inference leaves the running statistics alone.
    check(
        "running_mean after inference",
        &c_.download(&rm).unwrap(),
        &state.mean,
        1e-4,
    );
}

#[test]
fn f16_io() {
    // f16 runs on every device (packed words without SHADER_F16).
    let c_ = ctx();
    let cfg = PoincareBatchNormConfig {
        dtype: DType::F16,
        ..Default::default()
    };
    let op = PoincareBatchNorm::new(c_, cfg).unwrap();
    // Points one by one (H*W = 25) and in blocks of 4 (H*W = 24).
    for shape in [[4usize, 8, 5, 5], [3, 8, 4, 6]] {
        f16_batch_norm(c_, &op, shape);
    }
    let mid = PoincareMidpoint::new(
        c_,
        wgnorm::BallConfig {
            c: 0.1,
            feature_axis: -1,
            dtype: DType::F16,
        },
    )
    .unwrap();
    let pts = ball_points(52, 300, 4, 0.1);
    let m = c_
        .download(
            &mid.forward(&c_.upload(&pts, &[300, 4], DType::F16).unwrap())
                .unwrap(),
        )
        .unwrap();
    let want = Ball::new(0.1, PROJ_EPS_F32).midpoint(&rows(&round_to(DType::F16, &pts), 4));
    check("midpoint f16", &m, &want, 1e-3);
}

fn f16_batch_norm(c_: &Context, op: &PoincareBatchNorm, shape: [usize; 4]) {
    let x: Vec<f32> = noise(50, shape.iter().product())
        .iter()
        .map(|v| v * 2.0)
        .collect();
    let b: Vec<f32> = noise(51, 8).iter().map(|v| v * 0.5).collect();
    let xt = c_.upload(&x, &shape, DType::F16).unwrap();
    let (bt, wt) = (up(c_, &b, &[8]), up(c_, &[1.0], &[1]));
    let inputs = PoincareBatchNormInputs {
        x: &xt,
        bias: &bt,
        weight: &wt,
        running_mean: None,
        running_var: None,
    };
    let got = c_
        .download(&op.forward(&inputs, PoincareStatistics::Batch).unwrap())
        .unwrap();
    let ball = Ball::new(0.1, PROJ_EPS_F32);
    let want = poincare_batch_norm(
        &ball,
        &round_to(DType::F16, &x),
        &shape,
        1,
        &round_to(DType::F32, &b),
        1.0,
    );
    // One f16 rounding of the output (2^-11 relative) dominates.
    check(&format!("poincare bn f16 {shape:?}"), &got, &want, 1e-3);
}

#[test]
fn bad_input_is_a_typed_error() {
    let c_ = ctx();
    assert!(BallOps::new(
        c_,
        wgnorm::BallConfig {
            c: 0.0,
            feature_axis: -1,
            dtype: DType::F32
        }
    )
    .is_err());
    assert!(BallOps::new(
        c_,
        wgnorm::BallConfig {
            c: f32::NAN,
            feature_axis: -1,
            dtype: DType::F32
        }
    )
    .is_err());
    assert!(PoincareMidpoint::new(
        c_,
        wgnorm::BallConfig {
            c: -1.0,
            feature_axis: -1,
            dtype: DType::F32
        }
    )
    .is_err());
    let ops = BallOps::new(
        c_,
        wgnorm::BallConfig {
            c: 1.0,
            feature_axis: -1,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let x = c_.empty(&[4, 3], DType::F32).unwrap();
    let y = c_.empty(&[4, 2], DType::F32).unwrap();
    let out = c_.empty(&[4, 3], DType::F32).unwrap();
    let mut enc = c_.device().create_command_encoder(&Default::default());
    // Mismatched shapes, wrong output shape, aliasing, bad axis.
    assert!(matches!(
        ops.mobius_add(&mut enc, &x, &y, &out),
        Err(wgnorm::Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        ops.distance(&mut enc, &x, &x, &out),
        Err(wgnorm::Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        ops.exp0(&mut enc, &x, &x),
        Err(wgnorm::Error::AliasedBuffers { .. })
    ));
    let bad_axis = BallOps::new(
        c_,
        wgnorm::BallConfig {
            c: 1.0,
            feature_axis: 2,
            dtype: DType::F32,
        },
    )
    .unwrap();
    assert!(matches!(
        bad_axis.exp0(&mut enc, &x, &out),
        Err(wgnorm::Error::AxisOutOfRange { .. })
    ));
    // Midpoint: wrong m shape, no points.
    let mid = PoincareMidpoint::new(
        c_,
        wgnorm::BallConfig {
            c: 1.0,
            feature_axis: -1,
            dtype: DType::F32,
        },
    )
    .unwrap();
    let m2 = c_.empty(&[2], DType::F32).unwrap();
    assert!(matches!(
        mid.encode(&mut enc, &x, &m2),
        Err(wgnorm::Error::ShapeMismatch { .. })
    ));
    let empty = c_.empty(&[0, 3], DType::F32).unwrap();
    let m3 = c_.empty(&[3], DType::F32).unwrap();
    assert!(matches!(
        mid.encode(&mut enc, &empty, &m3),
        Err(wgnorm::Error::InvalidParameter { .. })
    ));
    // Batch norm: bias shape, weight shape, running mode without running tensors, momentum.
    let bn = PoincareBatchNorm::new(c_, Default::default()).unwrap();
    let b3 = c_.empty(&[3], DType::F32).unwrap();
    let b2 = c_.empty(&[2], DType::F32).unwrap();
    let w1 = c_.empty(&[1], DType::F32).unwrap();
    let w2 = c_.empty(&[2], DType::F32).unwrap();
    let yb = c_.empty(&[4, 3], DType::F32).unwrap();
    let mk = |b: &'_ Tensor, w: &'_ Tensor| -> bool {
        let inputs = PoincareBatchNormInputs {
            x: &x,
            bias: b,
            weight: w,
            running_mean: None,
            running_var: None,
        };
        let mut e = c_.device().create_command_encoder(&Default::default());
        bn.encode(&mut e, &inputs, &yb, PoincareStatistics::Batch)
            .is_err()
    };
    assert!(mk(&b2, &w1));
    assert!(mk(&b3, &w2));
    assert!(!mk(&b3, &w1));
    let inputs = PoincareBatchNormInputs {
        x: &x,
        bias: &b3,
        weight: &w1,
        running_mean: None,
        running_var: None,
    };
    assert!(matches!(
        bn.encode(&mut enc, &inputs, &yb, PoincareStatistics::Running),
        Err(wgnorm::Error::InvalidParameter { .. })
    ));
    assert!(PoincareBatchNorm::new(
        c_,
        PoincareBatchNormConfig {
            momentum: 1.5,
            ..Default::default()
        }
    )
    .is_err());
    // An empty batch is a no-op for the batch norm.
    let ye = c_.empty(&[0, 3], DType::F32).unwrap();
    let inputs = PoincareBatchNormInputs {
        x: &empty,
        bias: &b3,
        weight: &w1,
        running_mean: None,
        running_var: None,
    };
    bn.encode(&mut enc, &inputs, &ye, PoincareStatistics::Batch)
        .unwrap();
    c_.queue().submit([enc.finish()]);
}

#[test]
fn guards_on_and_outside_the_boundary() {
    // Points on and outside the ball (as f32 rounding or a bad input produces them), the origin,
    // and tangent vectors whose norm overflows a naive tanh: every output must be finite and
    // match the reference with its clamps (artanh at 1 - 1e-7, projection at (1 - 4e-3)/sqrt(c)).
    // Norms are f32 sums of squares, as in the official code: |v| >= 1.8e19 overflows them.
    let c_ = ctx();
    for c in [1e-3f64, 1.0, 10.0] {
        let r = (1.0 / c.sqrt()) as f32;
        let d = 3;
        let xs: Vec<f32> = [
            [r, 0.0, 0.0],
            [0.0, -1.5 * r, 0.0],
            [0.0, 0.0, 0.0],
            [0.6 * r, 0.8 * r, 0.0],
            // |v| = 1.7e18: |v|^2 still fits f32; tanh(sqrt(c)|v|) must not become inf/inf.
            [1e18, -1e18, 1e18],
        ]
        .concat();
        let p = xs.len() / d;
        let ops = BallOps::new(
            c_,
            wgnorm::BallConfig {
                c: c as f32,
                feature_axis: -1,
                dtype: DType::F32,
            },
        )
        .unwrap();
        let ball = Ball::new(c, PROJ_EPS_F32);
        let xt = up(c_, &xs, &[p, d]);
        let out = c_.empty(&[p, d], DType::F32).unwrap();
        let xr = rows(&round_to(DType::F32, &xs), d);
        for (name, want) in [
            ("log0", xr.iter().map(|x| ball.log0(x)).collect::<Vec<_>>()),
            ("exp0", xr.iter().map(|x| ball.exp0(x)).collect()),
            ("project", xr.iter().map(|x| ball.project(x)).collect()),
        ] {
            let mut enc = c_.device().create_command_encoder(&Default::default());
            match name {
                "log0" => ops.log0(&mut enc, &xt, &out).unwrap(),
                "exp0" => ops.exp0(&mut enc, &xt, &out).unwrap(),
                _ => ops.project(&mut enc, &xt, &out).unwrap(),
            }
            c_.queue().submit([enc.finish()]);
            let got = c_.download(&out).unwrap();
            assert!(got.iter().all(|v| v.is_finite()), "{name} c={c}: {got:?}");
            let want = want.concat();
            check(&format!("{name} c={c}"), &got, &want, 1e-4);
        }
    }
}

/// Batch statistics of a single point are refused (found by the fuzzer: its variance is 0, so
/// y was the f32 rounding of the midpoint amplified by 1/sqrt(eps)); the running statistics
/// normalize one point fine.
#[test]
fn batch_norm_of_one_point_is_typed() {
    let c_ = ctx();
    let op = PoincareBatchNorm::new(c_, PoincareBatchNormConfig::default()).unwrap();
    let (xt, bt, wt) = (
        up(c_, &[0.3, -0.2, 0.1, 0.4, 0.0], &[1, 5]),
        up(c_, &[0.0; 5], &[5]),
        up(c_, &[1.0], &[1]),
    );
    let (rm, rv) = (up(c_, &[0.0; 5], &[5]), up(c_, &[1.0], &[1]));
    let inputs = PoincareBatchNormInputs {
        x: &xt,
        bias: &bt,
        weight: &wt,
        running_mean: Some(&rm),
        running_var: Some(&rv),
    };
    for stats in [
        PoincareStatistics::Batch,
        PoincareStatistics::BatchUpdateRunning,
    ] {
        let r = op.forward(&inputs, stats);
        assert!(
            matches!(r, Err(wgnorm::Error::InvalidParameter { name: "x", .. })),
            "{stats:?}: {:?}",
            r.err()
        );
    }
    assert!(op.forward(&inputs, PoincareStatistics::Running).is_ok());
}
