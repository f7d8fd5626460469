// Poincaré ball of curvature -c (docs/methods.md C1): the scalar algebra shared by the ball ops and the
// midpoint / batch-norm kernels, and the view of a tensor as points.
//
// A tensor is seen as points along a feature axis: shape [n, d, s] (s = product of the dims after
// the feature axis), point p = i*s + j has coordinates x[i*d*s + k*s + j], k < d. [P, D] rows
// are s = 1; NCHW with points = pixels is n = N, d = C, s = H*W.
//
// Every vector these kernels produce is a linear combination of at most three input vectors, so
// a kernel first reduces the dot products it needs over d, does the ball algebra on scalars, and
// writes the combination in a last pass. Norms whose relative precision matters (|(-x) (+) y| in
// distances and log maps) are recomputed coordinate-wise, never from expanded dot products.

struct BallParams {
    d: u32,
    s: u32,
    // Number of points n * s.
    p: u32,
    // Ball ops: bit i set = input i is one point [d] shared by all points.
    bcast: u32,
    // Midpoint reduction: per-point stages run tiles of `tile_points` points, `ppt` per
    // invocation; the weighted coordinate sums run `ctiles` tiles of `ct_points` points.
    tiles: u32,
    tile_points: u32,
    ppt: u32,
    ctiles: u32,
    c: f32,
    // (1 - eps) / sqrt(c): the projection radius.
    max_norm: f32,
    momentum: f32,
    ct_points: u32,
}

const MIN_NORM: f32 = 1e-15;

fn point_base(p: u32, d: u32, s: u32) -> u32 {
    let i = p / s;
    return i * d * s + (p - i * s);
}

// tanh(a) / a for a >= 0 (1 at 0). The series below 0.125 keeps full relative precision where
// 1 - exp(-2a) cancels; above, exp(-2a) cannot overflow, unlike a naive (e^2a - 1)/(e^2a + 1).
fn tanh_ratio(a: f32) -> f32 {
    if a < 0.125 {
        let x2 = a * a;
        return 1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0))));
    }
    let e = exp(-2.0 * min(a, 20.0));
    return (1.0 - e) / ((1.0 + e) * a);
}

// artanh(min(u, 1 - 1e-7)) / u for u >= 0 (artanh(1) = inf). 1 - 1e-7 is not an f32: every u
// above the largest f32 below it takes the clamped value artanh(1 - 1e-7), as in f64.
// 0.5*log((1+u)/(1-u)) above 0.125, the series below, where the log of a number near 1 loses
// the low digits.
const ARTANH_MAX: f32 = 8.405621391;
fn artanh_ratio(u: f32) -> f32 {
    if u > 0.99999988 {
        return ARTANH_MAX / u;
    }
    if u < 0.125 {
        let x2 = u * u;
        return 1.0 + x2 * (1.0 / 3.0 + x2 * (1.0 / 5.0 + x2 * (1.0 / 7.0 + x2 * (1.0 / 9.0 + x2 * (1.0 / 11.0)))));
    }
    return 0.5 * log((1.0 + u) / (1.0 - u)) / u;
}

// artanh(min(u, 1 - 1e-7)) for u >= 0.
fn artanh_clamped(u: f32) -> f32 {
    return artanh_ratio(u) * u;
}

// Factor that brings a point of norm `n` back inside the projection radius.
fn proj_scale(n: f32, max_norm: f32) -> f32 {
    if n > max_norm {
        return max_norm / n;
    }
    return 1.0;
}

// Conformal factor 2 / (1 - c|x|^2), the denominator clamped.
fn conformal(c: f32, xx: f32) -> f32 {
    return 2.0 / max(1.0 - c * xx, MIN_NORM);
}

// x (+) y = k.x * x + k.y * y from <x,y>, |x|^2, |y|^2.
fn mobius_coefs(c: f32, xy: f32, xx: f32, yy: f32) -> vec2<f32> {
    let den = max(1.0 + 2.0 * c * xy + c * c * xx * yy, MIN_NORM);
    return vec2<f32>((1.0 + 2.0 * c * xy + c * yy) / den, (1.0 - c * xx) / den);
}

// gyr[u, v] w = w + k.x * u + k.y * v from the dot products (closed form for tangent vectors).
fn gyration_coefs(c: f32, uw: f32, vw: f32, uv: f32, uu: f32, vv: f32) -> vec2<f32> {
    let a = -c * c * uw * vv + c * vw + 2.0 * c * c * uv * vw;
    let b = -c * c * vw * uu - c * uw;
    let d = max(1.0 + 2.0 * c * uv + c * c * uu * vv, MIN_NORM);
    return vec2<f32>(2.0 * a / d, 2.0 * b / d);
}
