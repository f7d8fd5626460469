//! Poincaré ball of curvature `-c` (`c > 0`), docs/methods.md C1: the ball operations, the gyromidpoint
//! and Poincaré midpoint batch normalization, written on plain slices of `f64` (or of
//! [`crate::dual::Dual`], for exact derivatives).
//!
//! A *point* lies in the open ball `|x| < 1/sqrt(c)`; a *tangent vector* is any vector of R^D (at
//! the origin unless a base point is named). Norms and denominators are clamped at 1e-15 and
//! `artanh` clamps its argument to `[-1 + 1e-7, 1 - 1e-7]`, as in hypll / poincare-resnet.

/// Projection margin of the official code in f64. The f32 kernels use [`PROJ_EPS_F32`]; call
/// the functions below with the one matching the precision being modelled.
pub const PROJ_EPS_F64: f64 = 1e-5;
/// Projection margin of the official code in f32.
pub const PROJ_EPS_F32: f64 = 4e-3;

/// The clamp of norms and denominators.
pub(crate) const MIN_NORM: f64 = 1e-15;

use crate::dual::Real;

pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::of(0.0), |s, (x, y)| s + *x * *y)
}

fn norm<T: Real>(a: &[T]) -> T {
    dot(a, a).sqrt()
}

fn scale<T: Real>(a: &[T], s: T) -> Vec<T> {
    a.iter().map(|x| *x * s).collect()
}

fn neg<T: Real>(a: &[T]) -> Vec<T> {
    a.iter().map(|x| -*x).collect()
}

/// `artanh(u)`, the argument clamped away from +-1.
pub fn artanh(u: f64) -> f64 {
    artanh_of(u)
}

fn artanh_of<T: Real>(u: T) -> T {
    // (A NaN stays NaN, as f64::clamp keeps it.)
    let u = if u.value().is_nan() {
        u
    } else {
        u.at_least(-1.0 + 1e-7).at_most(1.0 - 1e-7)
    };
    T::of(0.5) * ((T::of(1.0) + u) / (T::of(1.0) - u)).ln()
}

/// The ball of curvature `-c` with projection margin `eps`. Its maps take `f64` coordinates, or
/// [`crate::dual::Dual`] ones for exact derivatives (the gradients in [`crate::grad`]).
#[derive(Clone, Copy, Debug)]
pub struct Ball {
    pub c: f64,
    pub eps: f64,
}

impl Ball {
    pub fn new(c: f64, eps: f64) -> Ball {
        Ball { c, eps }
    }

    fn sc<T: Real>(&self) -> T {
        T::of(self.c.sqrt())
    }

    /// Rescales `x` onto the sphere of radius `(1 - eps)/sqrt(c)` when it lies outside it.
    pub fn project<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = norm(x).at_least(MIN_NORM);
        let max = (1.0 - self.eps) / self.c.sqrt();
        if n.value() > max {
            scale(x, T::of(max) / n)
        } else {
            x.to_vec()
        }
    }

    /// Conformal factor `lambda_x = 2 / (1 - c |x|^2)`.
    pub fn lambda<T: Real>(&self, x: &[T]) -> T {
        T::of(2.0) / (T::of(1.0) - T::of(self.c) * dot(x, x)).at_least(MIN_NORM)
    }

    /// Möbius addition `x (+) y`.
    pub fn mobius_add<T: Real>(&self, x: &[T], y: &[T]) -> Vec<T> {
        let (c, one, two) = (T::of(self.c), T::of(1.0), T::of(2.0));
        let (xy, xx, yy) = (dot(x, y), dot(x, x), dot(y, y));
        let num_x = one + two * c * xy + c * yy;
        let num_y = one - c * xx;
        let den = (one + two * c * xy + c * c * xx * yy).at_least(MIN_NORM);
        x.iter()
            .zip(y)
            .map(|(a, b)| (num_x * *a + num_y * *b) / den)
            .collect()
    }

    /// Exponential map at the origin: tangent vector -> point.
    pub fn exp0<T: Real>(&self, v: &[T]) -> Vec<T> {
        let sc = self.sc::<T>();
        let n = norm(v).at_least(MIN_NORM);
        self.project(&scale(v, (sc * n).tanh() / (sc * n)))
    }

    /// Logarithmic map at the origin: point -> tangent vector.
    pub fn log0<T: Real>(&self, y: &[T]) -> Vec<T> {
        let sc = self.sc::<T>();
        let n = norm(y).at_least(MIN_NORM);
        scale(y, artanh_of(sc * n) / (sc * n))
    }

    /// Exponential map at the point `x` of the tangent vector `v`.
    pub fn expmap<T: Real>(&self, x: &[T], v: &[T]) -> Vec<T> {
        let sc = self.sc::<T>();
        let n = norm(v).at_least(MIN_NORM);
        let second = scale(v, (sc * self.lambda(x) * n / T::of(2.0)).tanh() / (sc * n));
        self.project(&self.mobius_add(x, &second))
    }

    /// Logarithmic map at the point `x` of the point `y`.
    pub fn logmap<T: Real>(&self, x: &[T], y: &[T]) -> Vec<T> {
        let sc = self.sc::<T>();
        let w = self.mobius_add(&neg(x), y);
        let n = norm(&w).at_least(MIN_NORM);
        scale(
            &w,
            T::of(2.0) / (sc * self.lambda(x)) * artanh_of(sc * n) / n,
        )
    }

    /// Geodesic distance `2/sqrt(c) artanh(sqrt(c) |(-x) (+) y|)`.
    pub fn distance<T: Real>(&self, x: &[T], y: &[T]) -> T {
        let sc = self.sc::<T>();
        T::of(2.0) / sc * artanh_of(sc * norm(&self.mobius_add(&neg(x), y)))
    }

    /// Gyration `gyr[u, v] w` (closed form).
    pub fn gyration<T: Real>(&self, u: &[T], v: &[T], w: &[T]) -> Vec<T> {
        let (c, one, two) = (T::of(self.c), T::of(1.0), T::of(2.0));
        let (uw, vw, uv, uu, vv) = (dot(u, w), dot(v, w), dot(u, v), dot(u, u), dot(v, v));
        let a = -c * c * uw * vv + c * vw + two * c * c * uv * vw;
        let b = -c * c * vw * uu - c * uw;
        let d = (one + two * c * uv + c * c * uu * vv).at_least(MIN_NORM);
        (0..w.len())
            .map(|i| w[i] + two * (a * u[i] + b * v[i]) / d)
            .collect()
    }

    /// Parallel transport of the tangent vector `v` from `x` to `y`.
    pub fn transport<T: Real>(&self, x: &[T], y: &[T], v: &[T]) -> Vec<T> {
        let g = self.gyration(y, &neg(x), v);
        scale(&g, self.lambda(x) / self.lambda(y))
    }

    /// Gyromidpoint of the points `x[p]` (each projected first, as the kernels do; a no-op for
    /// points inside the projection radius): `z = sum lambda_i x_i / sum (lambda_i - 1)`, then
    /// the Möbius half `z / (1 + sqrt(1 - c |z|^2))`, projected.
    pub fn midpoint<T: Real>(&self, points: &[Vec<T>]) -> Vec<T> {
        let d = points.first().map_or(0, |p| p.len());
        let mut num = vec![T::of(0.0); d];
        let mut den = T::of(0.0);
        for x in points {
            let x = &self.project(x);
            let l = self.lambda(x);
            for (n, xi) in num.iter_mut().zip(x) {
                *n = *n + l * *xi;
            }
            den = den + l - T::of(1.0);
        }
        let z = scale(&num, T::of(1.0) / den.at_least(MIN_NORM));
        let s = (T::of(1.0) - T::of(self.c) * dot(&z, &z))
            .at_least(0.0)
            .sqrt();
        self.project(&scale(&z, T::of(1.0) / (T::of(1.0) + s)))
    }
}

/// Splits `x` of `shape` into points along `axis`: returns (points, n, d, s) with point
/// `i * s + j` made of `x[i*d*s + k*s + j]` for k < d.
pub fn points_along(x: &[f64], shape: &[usize], axis: usize) -> (Vec<Vec<f64>>, usize, usize) {
    let n: usize = shape[..axis].iter().product();
    let d = shape[axis];
    let s: usize = shape[axis + 1..].iter().product();
    let pts = (0..n * s)
        .map(|p| {
            let (i, j) = (p / s, p % s);
            (0..d).map(|k| x[i * d * s + k * s + j]).collect()
        })
        .collect();
    (pts, d, s)
}

/// Inverse of [`points_along`].
pub fn scatter_points(points: &[Vec<f64>], d: usize, s: usize) -> Vec<f64> {
    let mut out = vec![0.0; points.len() * d];
    for (p, v) in points.iter().enumerate() {
        let (i, j) = (p / s, p % s);
        for k in 0..d {
            out[i * d * s + k * s + j] = v[k];
        }
    }
    out
}

/// Statistics of one Poincaré batch norm call: the midpoint and the Fréchet variance.
#[derive(Clone, Debug, PartialEq)]
pub struct PoincareStats {
    pub mean: Vec<f64>,
    pub var: f64,
}

/// The batch statistics of C1 steps 1 and 3: midpoint of `exp0(v_i)` and the mean squared distance
/// to it (biased, one scalar).
pub fn poincare_batch_stats(ball: &Ball, tangents: &[Vec<f64>]) -> PoincareStats {
    let xs: Vec<Vec<f64>> = tangents.iter().map(|v| ball.exp0(v)).collect();
    let m = ball.midpoint(&xs);
    let var = xs.iter().map(|x| ball.distance(x, &m).powi(2)).sum::<f64>() / xs.len() as f64;
    PoincareStats { mean: m, var }
}

/// Poincaré midpoint batch normalization (C1 steps 1-5) of tangent vectors `v_i` at the origin
/// with the given statistics, bias `b` (tangent at the origin) and variance weight `w`:
/// `log0(exp_beta(transp_{m->beta}(log_m exp0(v_i)) * sqrt(w / (var + 1e-6))))`, `beta = exp0(b)`.
pub fn poincare_batch_norm_with(
    ball: &Ball,
    tangents: &[Vec<f64>],
    stats: &PoincareStats,
    bias: &[f64],
    weight: f64,
) -> Vec<Vec<f64>> {
    let beta = ball.exp0(bias);
    let k = (weight / (stats.var + 1e-6)).sqrt();
    tangents
        .iter()
        .map(|v| {
            let x = ball.exp0(v);
            let u = scale(
                &ball.transport(&stats.mean, &beta, &ball.logmap(&stats.mean, &x)),
                k,
            );
            ball.log0(&ball.expmap(&beta, &u))
        })
        .collect()
}

/// Poincaré midpoint batch normalization with batch statistics (what the official code does in
/// training and inference). `x` of `shape`, points along `axis`; returns y of the same layout.
pub fn poincare_batch_norm(
    ball: &Ball,
    x: &[f64],
    shape: &[usize],
    axis: usize,
    bias: &[f64],
    weight: f64,
) -> Vec<f64> {
    let (pts, d, s) = points_along(x, shape, axis);
    let stats = poincare_batch_stats(ball, &pts);
    scatter_points(
        &poincare_batch_norm_with(ball, &pts, &stats, bias, weight),
        d,
        s,
    )
}

/// The running-statistics extension (not in the official code): the running mean moves along the
/// geodesic towards the batch midpoint, `exp_r(momentum * log_r(m))`, the running variance is an
/// exponential average of the batch variance.
pub fn poincare_running_update(
    ball: &Ball,
    running: &PoincareStats,
    batch: &PoincareStats,
    momentum: f64,
) -> PoincareStats {
    let step = scale(&ball.logmap(&running.mean, &batch.mean), momentum);
    PoincareStats {
        mean: ball.expmap(&running.mean, &step),
        var: (1.0 - momentum) * running.var + momentum * batch.var,
    }
}
