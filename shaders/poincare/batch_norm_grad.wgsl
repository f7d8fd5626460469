// Poincaré midpoint batch normalization's backward (docs/methods.md C1): the Euclidean gradients of
// sum(y . dy) for the tangent vectors v, the bias b and the weight w, after the forward's WEIGHTS,
// COLSUM, MEAN, DIST and VAR stages (`midpoint.wgsl`), whose scratch (`scratch`, read-only here)
// holds m, beta, their dot products, the gain and per point |v|^2, <v,b>, <v,m>, |w|^2.
//
// With w = (-m) (+) x = kv v - km m (x = exp0(v)), each output is y = cw w + cm m + cb beta whose
// coefficients are functions of seven scalars theta = (|w|^2, <w,beta>, <w,m>, |m|^2, |beta|^2,
// <m,beta>, gain) (`chain`: the forward's `apply_coefs` in dual numbers). So y . dy = cw <w,dy> +
// cm <m,dy> + cb <beta,dy>, and its gradient with respect to w, m and beta is a combination of
// dy, w, m and beta weighted by the partials of that scalar function; w's gradient then goes to
// v and m through the Möbius addition (kv and km are functions of |v|^2, <v,m>, |m|^2). Every dot
// product is summed coordinate-wise, w's coordinates recomputed from v and m. The variance
// sigma^2 = mean d(x_i, m)^2 adds a function of |w|^2 alone per point, weighted by
// e = dsigma^2 / P, known only after all points are summed: its parts are kept apart and
// weighted in the last stage.
//
//   GSTAGE 0 POINTS (per point): the dual evaluation; NQ weights per point into `g`; per tile the
//            sums of the scalar weights (of m and beta in dm and dbeta, and dgain).
//   GSTAGE 1 COLS   (per tile and coordinate): the tile sums of the point-dependent vector parts
//            (weights times dy, w or v) of dm and dbeta.
//   GSTAGE 2 FINAL  (one workgroup): dm, dbeta, dgain, dsigma^2, then db (through beta = exp0(b)),
//            dw and, with batch statistics, the mean's backward (`mean_grad.wgsl`): dS, dT.
//   GSTAGE 3 DX     (per point): dv = the point's own part + (through the midpoint)
//            lambda dS + c lambda^2 (dS . x + dT) x, through x = exp0(v).
// Every sum is in a fixed order (bitwise reproducible).
//
// g (f32): [dm (d) | dbeta (d) | dS (d) | dT, e (2) | per-point weights (NQ fields of p floats,
// `pq`) | tile sums of the vector parts (tiles * NCOLS * d) | tile sums of the scalars
// (tiles * NSC)].

override WG: u32 = 256u;
override GSTAGE: u32 = 0u;
// Normalized with the running statistics: m and sigma^2 are constants (no gradient through them).
override RUNNING: bool = false;

const G_POINTS: u32 = 0u;
const G_COLS: u32 = 1u;
const G_FINAL: u32 = 2u;

@group(0) @binding(0) var<uniform> params: BallParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> dy: array<Elem>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> scratch: array<f32>;
@group(0) @binding(5) var<storage, read_write> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(7) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(8) var<storage, read_write> dweight: array<f32>;

fn scalar(i: u32) -> f32 {
    return scratch[off_scalars() + i];
}
fn off_ds() -> u32 {
    return 2u * params.d;
}
fn off_dt() -> u32 {
    return 3u * params.d;
}
fn off_pts() -> u32 {
    return 3u * params.d + 2u;
}
// Field j of point p's weights: stored field-major ([NQ][p]), so a stage that reads one field of
// consecutive points reads consecutive floats.
fn pq(p: u32, j: u32) -> u32 {
    return off_pts() + j * params.p + p;
}
fn off_cols() -> u32 {
    return off_pts() + NQ * params.p;
}
fn off_sp() -> u32 {
    return off_cols() + NCOLS * params.tiles * params.d;
}

// The mean's backward reads dm from g and keeps dS, dT there.
fn dm_in(k: u32) -> f32 {
    return g[k];
}
fn ds_load(k: u32) -> f32 {
    return g[off_ds() + k];
}
fn ds_store(k: u32, v: f32) {
    g[off_ds() + k] = v;
}
fn dt_store(v: f32) {
    g[off_dt()] = v;
}

// tanh(a) / a and its derivative with respect to q = a^2 (the forward's `tanh_ratio`):
// d/dq = (1 - tanh(a)^2 - tanh(a) / a) / (2q); its series below a = 0.125, where that cancels.
fn tanh_ratio_q(q: f32) -> vec2<f32> {
    if q < 0.015625 {
        let f = 1.0 + q * (-1.0 / 3.0 + q * (2.0 / 15.0 + q * (-17.0 / 315.0 + q * (62.0 / 2835.0))));
        let df = -1.0 / 3.0 + q * (4.0 / 15.0 + q * (-51.0 / 315.0 + q * (248.0 / 2835.0)));
        return vec2<f32>(f, df);
    }
    let a = sqrt(q);
    let f = tanh_ratio(a);
    let t = f * a;
    return vec2<f32>(f, (1.0 - t * t - f) / (2.0 * q));
}

// artanh(u) / u (clamped as the forward's `artanh_ratio`) and its derivative in q = u^2:
// (1 / (1 - q) - artanh(u) / u) / (2q); the series below u = 0.125.
fn artanh_ratio_q(q: f32) -> vec2<f32> {
    if q < 0.015625 {
        let f = 1.0 + q * (1.0 / 3.0 + q * (1.0 / 5.0 + q * (1.0 / 7.0 + q * (1.0 / 9.0 + q * (1.0 / 11.0)))));
        let df = 1.0 / 3.0 + q * (2.0 / 5.0 + q * (3.0 / 7.0 + q * (4.0 / 9.0 + q * (5.0 / 11.0))));
        return vec2<f32>(f, df);
    }
    let u = sqrt(q);
    let f = artanh_ratio(u);
    if u > 0.99999988 {
        return vec2<f32>(f, -f / (2.0 * q));
    }
    return vec2<f32>(f, (1.0 / (1.0 - q) - f) / (2.0 * q));
}

fn du_tanh_ratio(q: Du) -> Du {
    let r = tanh_ratio_q(q.v);
    return du_chain(q, r.x, r.y);
}
fn du_artanh_ratio(q: Du) -> Du {
    let r = artanh_ratio_q(q.v);
    return du_chain(q, r.x, r.y);
}

// s with exp0(v) = s v, as a function of |v|^2 (tanh(sqrt(c)|v|) / (sqrt(c)|v|), projected).
fn du_exp0_scale(vv: Du) -> Du {
    let s = du_tanh_ratio(du_k(vv, params.c));
    if s.v * sqrt(vv.v) > params.max_norm {
        return du_div(du_c(params.max_norm), du_sqrt(vv));
    }
    return s;
}
// s and ds/d|v|^2.
fn exp0_scale_d(vv: f32) -> vec2<f32> {
    let s = du_exp0_scale(du_var(vv, 0u));
    return vec2<f32>(s.v, s.a.x);
}

// x (+) y = kx x + ky y (`mobius_coefs`) in dual numbers.
struct DuPair {
    x: Du,
    y: Du,
}
fn du_mobius(c: f32, xy: Du, xx: Du, yy: Du) -> DuPair {
    let two_cxy = du_addk(du_k(xy, 2.0 * c), 1.0);
    let den = du_max(du_add(two_cxy, du_k(du_mul(xx, yy), c * c)), MIN_NORM);
    let kx = du_div(du_add(two_cxy, du_k(yy, c)), den);
    let ky = du_div(du_addk(du_k(xx, -c), 1.0), den);
    return DuPair(kx, ky);
}

// w = (-m) (+) exp0(v) = kv v - km m, as functions of |v|^2, <v,m>, |m|^2 (inputs 0, 1, 2).
fn w_coefs(vv: Du, vm: Du, mm: Du) -> DuPair {
    let s = du_exp0_scale(vv);
    let kc = du_mobius(params.c, du_k(du_mul(s, vm), -1.0), mm, du_mul(du_mul(s, s), vv));
    return DuPair(du_mul(kc.y, s), kc.x);
}

// y = cw w + cm m + cb beta.
struct Chain {
    cw: Du,
    cm: Du,
    cb: Du,
}

// The forward's `apply_coefs` (midpoint.wgsl) from log_m x = l w on, on the dual inputs
// |w|^2, <w,beta>, <w,m>, |m|^2, |beta|^2, <m,beta>, gain. w is the variable rather than v:
// every term of order gain in the gradients then multiplies w, which is small when the points are
// close to their midpoint; in v, m and beta those terms would cancel in the sums over points.
fn chain(ww: Du, wb: Du, wm: Du, mm: Du, bb: Du, mb: Du, gain: Du) -> Chain {
    let c = params.c;
    // 2 / lambda_m and 2 / lambda_beta.
    let il_m = du_max(du_addk(du_k(mm, -c), 1.0), MIN_NORM);
    let il_b = du_max(du_addk(du_k(bb, -c), 1.0), MIN_NORM);
    let l = du_mul(il_m, du_artanh_ratio(du_k(ww, c)));
    // gyr[beta, -m] (l w) = l w + gx beta - gy m (`gyration_coefs` with uw = l <w,beta>,
    // vw = -l <w,m>, uv = -<m,beta>, uu = |beta|^2, vv = |m|^2).
    let uw = du_mul(l, wb);
    let vw = du_k(du_mul(l, wm), -1.0);
    let uv = du_k(mb, -1.0);
    let ga = du_add(du_add(du_k(du_mul(uw, mm), -c * c), du_k(vw, c)), du_k(du_mul(uv, vw), 2.0 * c * c));
    let gb = du_sub(du_k(du_mul(vw, bb), -c * c), du_k(uw, c));
    let gd = du_max(du_addk(du_add(du_k(uv, 2.0 * c), du_k(du_mul(bb, mm), c * c)), 1.0), MIN_NORM);
    let gx = du_k(du_div(ga, gd), 2.0);
    let gy = du_k(du_div(gb, gd), 2.0);
    // u = r (l w + gx beta - gy m), r = gain lambda_m / lambda_beta; |u| = r l |w|.
    let r = du_div(du_mul(gain, il_b), il_m);
    let rl = du_mul(r, l);
    let um = du_k(du_mul(r, gy), -1.0);
    let ub = du_mul(r, gx);
    let uu = du_mul(du_mul(rl, rl), ww);
    let u_b = du_mul(r, du_sub(du_add(du_mul(l, wb), du_mul(gx, bb)), du_mul(gy, mb)));
    // exp_beta(u) = project(beta (+) t u), t = tanh(sqrt(c) lambda_beta |u| / 2) / (sqrt(c) |u|).
    let lam_b = du_div(du_c(2.0), il_b);
    let t = du_mul(du_tanh_ratio(du_k(du_mul(du_mul(lam_b, lam_b), uu), 0.25 * c)), du_k(lam_b, 0.5));
    let bq = du_mul(t, u_b);
    let qq = du_mul(du_mul(t, t), uu);
    let ke = du_mobius(c, bq, bb, qq);
    let yy0 = du_add(du_add(du_mul(du_mul(ke.x, ke.x), bb), du_mul(du_mul(ke.y, ke.y), qq)), du_k(du_mul(du_mul(ke.x, ke.y), bq), 2.0));
    let yy = du_max(yy0, 0.0);
    var pr = du_c(1.0);
    if sqrt(yy.v) > params.max_norm {
        pr = du_div(du_c(params.max_norm), du_sqrt(yy));
    }
    // log0 of the projected point.
    let gl = du_mul(pr, du_artanh_ratio(du_k(du_mul(du_mul(pr, pr), yy), c)));
    let gkt = du_mul(du_mul(gl, ke.y), t);
    return Chain(du_mul(gkt, rl), du_mul(gkt, um), du_add(du_mul(gl, ke.x), du_mul(gkt, ub)));
}

// Through w = kv v - km m for an incoming gradient g of w with P = <g,v>, Q = <g,m>: besides
// kv g (to v) and -km g (to m), the weights of 2v, of m in dv (= of v in dm) and of 2m, from kv's
// and km's partials in |v|^2, <v,m>, |m|^2.
fn through_w(k: DuPair, p: f32, q: f32) -> vec3<f32> {
    return p * k.x.a.xyz - q * k.y.a.xyz;
}

// Per point in g (NQ fields, `pq`): kv, km; dv's own weights of dy, w, v, m, beta; the variance
// part's of w, v, m; the point's parts of the tile sums: dm's weights of dy, w, v, the variance
// part's of w, v, dbeta's of dy, w.
const NQ: u32 = 17u;
// Tile sums: 7 vectors (the last 7 per-point fields against dy, w or v) and 6 scalars (dm's
// weights of m and beta, the variance part's of m, dbeta's of m and beta, dgain).
const NCOLS: u32 = 7u;
const NSC: u32 = 6u;

fn grad_points(tile: u32, lid: u32) {
    let d = params.d;
    let c = params.c;
    let mm = scalar(S_MM);
    let mb = scalar(S_MB);
    let sb = scalar(S_SB);
    var acc = array<f32, 6>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var j = 0u; j < params.ppt; j++) {
        let p = tile * params.tile_points + j * WG + lid;
        if p >= params.p {
            continue;
        }
        let vv = scratch[pidx(p, 1u)];
        let vm = scratch[pidx(p, 3u)];
        let vb = sb * scratch[pidx(p, 2u)];
        let kw = w_coefs(du_var(vv, 0u), du_var(vm, 1u), du_var(mm, 2u));
        let kv = kw.x.v;
        let km = kw.y.v;
        let base = point_base(p, d, params.s);
        // <w,w>, <w,beta>, <w,m>, <w,v> and <w,dy>, <m,dy>, <beta,dy>, <v,dy>, coordinate-wise.
        var dw = vec4<f32>(0.0);
        var dd = vec4<f32>(0.0);
        for (var k = 0u; k < d; k++) {
            let i = base + k * params.s;
            let v = x_load(i);
            let m = scratch[k];
            let beta = scratch[off_beta() + k];
            let w = kv * v - km * m;
            dw += w * vec4<f32>(w, beta, m, v);
            dd += dy_load(i) * vec4<f32>(w, m, beta, v);
        }
        let ch = chain(
            du_var(dw.x, 0u),
            du_var(dw.y, 1u),
            du_var(dw.z, 2u),
            du_var(mm, 3u),
            du_var(scalar(S_BB), 4u),
            du_var(mb, 5u),
            du_var(scalar(S_GAIN), 6u),
        );
        let f = du_add(du_add(du_k(ch.cw, dd.x), du_k(ch.cm, dd.y)), du_k(ch.cb, dd.z));
        let cw = ch.cw.v;
        // dw = cw dy + 2 F_ww w + F_wb beta + F_wm m, against v and m.
        let fw = f.a;
        let pv = cw * dd.w + 2.0 * fw.x * dw.w + fw.y * vb + fw.z * vm;
        let qm = cw * dd.y + 2.0 * fw.x * dw.z + fw.y * mb + fw.z * mm;
        let jf = through_w(kw, pv, qm);
        // The variance's term of this point, 4 |w|^2 artanh_ratio(c |w|^2)^2: dw = 2 D' w.
        let ar = artanh_ratio_q(c * dw.x);
        let dvar = 4.0 * ar.x * ar.x + 8.0 * c * dw.x * ar.x * ar.y;
        let jd = through_w(kw, 2.0 * dvar * dw.w, 2.0 * dvar * dw.z);
        g[pq(p, 0u)] = kv;
        g[pq(p, 1u)] = km;
        g[pq(p, 2u)] = kv * cw;
        g[pq(p, 3u)] = 2.0 * kv * fw.x;
        g[pq(p, 4u)] = 2.0 * jf.x;
        g[pq(p, 5u)] = kv * fw.z + jf.y;
        g[pq(p, 6u)] = kv * fw.y;
        g[pq(p, 7u)] = 2.0 * kv * dvar;
        g[pq(p, 8u)] = 2.0 * jd.x;
        g[pq(p, 9u)] = jd.y;
        g[pq(p, 10u)] = ch.cm.v - km * cw;
        g[pq(p, 11u)] = fw.z - 2.0 * km * fw.x;
        g[pq(p, 12u)] = jf.y;
        g[pq(p, 13u)] = -2.0 * km * dvar;
        g[pq(p, 14u)] = jd.y;
        g[pq(p, 15u)] = ch.cb.v;
        g[pq(p, 16u)] = fw.y;
        acc[0] += 2.0 * fw.w - km * fw.z + 2.0 * jf.z;
        acc[1] += f.b.y - km * fw.y;
        acc[2] += 2.0 * jd.z;
        acc[3] += f.b.y;
        acc[4] += 2.0 * f.b.x;
        acc[5] += f.b.z;
    }
    let t0 = wg_sum4(lid, vec4<f32>(acc[0], acc[1], acc[2], acc[3]));
    let t1 = wg_sum4(lid, vec4<f32>(acc[4], acc[5], 0.0, 0.0));
    if lid == 0u {
        let o = off_sp() + tile * NSC;
        let tot = array<f32, 6>(t0.x, t0.y, t0.z, t0.w, t1.x, t1.y);
        for (var i = 0u; i < NSC; i++) {
            g[o + i] = tot[i];
        }
    }
}

// Tile sums of the point-dependent parts of dm and dbeta: the per-point weights 10..16 against
// dy, w, v, w, v, dy, w.
fn grad_cols(tile: u32, k: u32, lid: u32) {
    var acc = array<f32, 7>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let m = scratch[k];
    for (var j = 0u; j < params.ppt; j++) {
        let p = tile * params.tile_points + j * WG + lid;
        if p >= params.p {
            continue;
        }
        let i = point_base(p, params.d, params.s) + k * params.s;
        let v = x_load(i);
        let gy = dy_load(i);
        let w = g[pq(p, 0u)] * v - g[pq(p, 1u)] * m;
        acc[0] += g[pq(p, 10u)] * gy;
        acc[1] += g[pq(p, 11u)] * w;
        acc[2] += g[pq(p, 12u)] * v;
        acc[3] += g[pq(p, 13u)] * w;
        acc[4] += g[pq(p, 14u)] * v;
        acc[5] += g[pq(p, 15u)] * gy;
        acc[6] += g[pq(p, 16u)] * w;
    }
    let t0 = wg_sum4(lid, vec4<f32>(acc[0], acc[1], acc[2], acc[3]));
    let t1 = wg_sum4(lid, vec4<f32>(acc[4], acc[5], acc[6], 0.0));
    if lid == 0u {
        let tot = array<f32, 7>(t0.x, t0.y, t0.z, t0.w, t1.x, t1.y, t1.z);
        for (var i = 0u; i < NCOLS; i++) {
            g[off_cols() + (tile * NCOLS + i) * params.d + k] = tot[i];
        }
    }
}

fn grad_final(lid: u32) {
    let d = params.d;
    var tot = array<f32, 6>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var i = 0u; i < NSC; i++) {
        var part = 0.0;
        for (var t = lid; t < params.tiles; t += WG) {
            part += g[off_sp() + t * NSC + i];
        }
        tot[i] = wg_sum(lid, part);
    }
    let v = scalar(S_VAR);
    let gain = scalar(S_GAIN);
    let dgain = tot[5];
    // gain = sqrt(w / (sigma^2 + 1e-6)); e = dsigma^2 / P weights each point's variance term.
    var e = -dgain * gain / (2.0 * (v + 1e-6)) / f32(params.p);
    if RUNNING {
        e = 0.0;
    }
    var bd_part = 0.0;
    var bb_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        var cs = array<f32, 7>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (var t = 0u; t < params.tiles; t++) {
            let o = off_cols() + t * NCOLS * d + k;
            for (var i = 0u; i < NCOLS; i++) {
                cs[i] += g[o + i * d];
            }
        }
        let m = scratch[k];
        let beta = scratch[off_beta() + k];
        g[k] = cs[0] + cs[1] + cs[2] + e * (cs[3] + cs[4]) + (tot[0] + e * tot[2]) * m + tot[1] * beta;
        let dbeta = cs[5] + cs[6] + tot[3] * m + tot[4] * beta;
        g[d + k] = dbeta;
        bd_part += dbeta * bias[k];
        bb_part += bias[k] * bias[k];
    }
    let bd = wg_sum(lid, bd_part);
    // beta = sb(|b|^2) b.
    let sb = exp0_scale_d(wg_sum(lid, bb_part));
    for (var k = lid; k < d; k += WG) {
        dbias[k] = sb.x * g[d + k] + 2.0 * sb.y * bd * bias[k];
    }
    if lid == 0u {
        // d gain / d w = gain / (2 w) = 1 / (2 gain (sigma^2 + 1e-6)).
        dweight[0] = dgain / (2.0 * gain * (v + 1e-6));
        g[off_dt() + 1u] = e;
    }
    if !RUNNING {
        mean_grad(lid);
    }
}

fn grad_dx(tile: u32, lid: u32) {
    let d = params.d;
    let c = params.c;
    let e = g[off_dt() + 1u];
    for (var j = 0u; j < params.ppt; j++) {
        let p = tile * params.tile_points + j * WG + lid;
        if p >= params.p {
            continue;
        }
        let base = point_base(p, d, params.s);
        let kv = g[pq(p, 0u)];
        let km = g[pq(p, 1u)];
        let cdy = g[pq(p, 2u)];
        let cw = g[pq(p, 3u)] + e * g[pq(p, 7u)];
        var cv = g[pq(p, 4u)] + e * g[pq(p, 8u)];
        let cm = g[pq(p, 5u)] + e * g[pq(p, 9u)];
        let cb = g[pq(p, 6u)];
        var cs = 0.0;
        if !RUNNING {
            // Through the midpoint: dx = lambda dS + kappa x, x = s(|v|^2) v.
            var sv = 0.0;
            for (var k = 0u; k < d; k++) {
                sv += g[off_ds() + k] * x_load(base + k * params.s);
            }
            let vv = scratch[pidx(p, 1u)];
            let s = exp0_scale_d(vv);
            let lambda = conformal(c, s.x * s.x * vv);
            let kappa = c * lambda * lambda * (s.x * sv + g[off_dt()]);
            cs = s.x * lambda;
            cv += s.x * s.x * kappa + 2.0 * s.y * (lambda * sv + kappa * s.x * vv);
        }
        for (var k = 0u; k < d; k++) {
            let i = base + k * params.s;
            let v = x_load(i);
            let m = scratch[k];
            var gk = cdy * dy_load(i) + cw * (kv * v - km * m) + cv * v + cm * m + cb * scratch[off_beta() + k];
            if !RUNNING {
                gk += cs * g[off_ds() + k];
            }
            dx_store(i, gk);
        }
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile = wid.x + wid.y * nwg.x;
    switch GSTAGE {
        case G_POINTS: {
            if tile < params.tiles {
                grad_points(tile, lid);
            }
        }
        case G_COLS: {
            if tile < params.tiles {
                grad_cols(tile, wid.z, lid);
            }
        }
        case G_FINAL: {
            grad_final(lid);
        }
        default: {
            if tile < params.tiles {
                grad_dx(tile, lid);
            }
        }
    }
}
