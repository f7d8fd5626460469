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

// The maps below take V: one point per lane (VW points of a block in the midpoint kernel, one
// point elsewhere), branch-free, each lane selecting its own case; the scalar forms take lane 0.

// tanh(a) / a for a >= 0 (1 at 0). The series below 0.125 keeps full relative precision where
// 1 - exp(-2a) cancels; above, exp(-2a) cannot overflow, unlike a naive (e^2a - 1)/(e^2a + 1).
fn tanh_ratio_v(a: V) -> V {
    let x2 = a * a;
    let series = 1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0))));
    let e = exp(-2.0 * min(a, V(20.0)));
    return select((1.0 - e) / ((1.0 + e) * a), series, a < V(0.125));
}
fn tanh_ratio(a: f32) -> f32 {
    return get_lane(tanh_ratio_v(V(a)), 0u);
}

// artanh(min(u, 1 - 1e-7)) / u for u >= 0 (artanh(1) = inf). 1 - 1e-7 is not an f32: every u
// above the largest f32 below it takes the clamped value artanh(1 - 1e-7), as in f64.
// 0.5*log((1+u)/(1-u)) above 0.125, the series below, where the log of a number near 1 loses
// the low digits.
const ARTANH_MAX: f32 = 8.405621391;
fn artanh_ratio_v(u: V) -> V {
    let x2 = u * u;
    let series = 1.0 + x2 * (1.0 / 3.0 + x2 * (1.0 / 5.0 + x2 * (1.0 / 7.0 + x2 * (1.0 / 9.0 + x2 * (1.0 / 11.0)))));
    let mid = select(0.5 * log((1.0 + u) / (1.0 - u)) / u, series, u < V(0.125));
    return select(mid, ARTANH_MAX / u, u > V(0.99999988));
}
fn artanh_ratio(u: f32) -> f32 {
    return get_lane(artanh_ratio_v(V(u)), 0u);
}

// artanh(min(u, 1 - 1e-7)) for u >= 0.
fn artanh_clamped_v(u: V) -> V {
    return artanh_ratio_v(u) * u;
}
fn artanh_clamped(u: f32) -> f32 {
    return artanh_ratio(u) * u;
}

// Factor that brings a point of norm `n` back inside the projection radius.
fn proj_scale_v(n: V, max_norm: f32) -> V {
    return select(V(1.0), max_norm / n, n > V(max_norm));
}
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

// A pair of per-point coefficients.
struct Coefs {
    x: V,
    y: V,
}

// x (+) y = k.x * x + k.y * y from <x,y>, |x|^2, |y|^2.
fn mobius_coefs_v(c: f32, xy: V, xx: V, yy: V) -> Coefs {
    let den = max(1.0 + 2.0 * c * xy + c * c * xx * yy, V(MIN_NORM));
    return Coefs((1.0 + 2.0 * c * xy + c * yy) / den, (1.0 - c * xx) / den);
}
fn mobius_coefs(c: f32, xy: f32, xx: f32, yy: f32) -> vec2<f32> {
    let k = mobius_coefs_v(c, V(xy), V(xx), V(yy));
    return vec2<f32>(get_lane(k.x, 0u), get_lane(k.y, 0u));
}

// gyr[u, v] w = w + k.x * u + k.y * v from the dot products (closed form for tangent vectors).
fn gyration_coefs_v(c: f32, uw: V, vw: V, uv: V, uu: V, vv: V) -> Coefs {
    let a = -c * c * uw * vv + c * vw + 2.0 * c * c * uv * vw;
    let b = -c * c * vw * uu - c * uw;
    let d = max(1.0 + 2.0 * c * uv + c * c * uu * vv, V(MIN_NORM));
    return Coefs(2.0 * a / d, 2.0 * b / d);
}
fn gyration_coefs(c: f32, uw: f32, vw: f32, uv: f32, uu: f32, vv: f32) -> vec2<f32> {
    let g = gyration_coefs_v(c, V(uw), V(vw), V(uv), V(uu), V(vv));
    return vec2<f32>(get_lane(g.x, 0u), get_lane(g.y, 0u));
}
