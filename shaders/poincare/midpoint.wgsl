// Gyromidpoint reduction and Poincaré midpoint batch normalization (docs/methods.md C1), in stages
// selected by STAGE. Points are tiled: tile t holds points [t*tile_points, (t+1)*tile_points);
// every per-point stage runs one workgroup per tile, `ppt` points per invocation.
//
//   WEIGHTS   per point: x = exp0(v) (TANGENT) or project(v); s = |x|/|v|, lambda(x), <v, b>;
//             per tile: sum(lambda - 1)
//   COLSUM    per (tile, d): sum over the tile of lambda*s*v[d] (its own tiling: ctiles)
//   MEAN      one workgroup: z = sum lambda x / sum(lambda - 1), m = z / (1 + sqrt(1 - c|z|^2)),
//             beta = exp0(b), the scalars the later stages share (or m from the running mean)
//   DIST      per point: <v, m>, |(-m) (+) x|^2; per tile: sum of d(x, m)^2
//   VAR       one workgroup: sigma^2, the gain sqrt(w / (sigma^2 + 1e-6)), running updates
//   APPLY     per point: y = log0(exp_beta(transp_{m->beta}(log_m x) * gain))
//
// Scratch (f32, its offsets in `scratch.wgsl`): [m (d) | beta (d) | scalars (16) | per point (PS each) | tile sums of lambda*s*v
// (ctiles*d) | tile sums of lambda - 1 (tiles) | tile sums of d^2 (tiles)].
//
// Point blocks: when points are pixels of a channel-major layout (s a multiple of 4), an
// invocation of the per-point stages and of COLSUM takes VW = 4 consecutive points at once, one
// vector load per coordinate (consecutive invocations read consecutive vectors), the coordinate
// loops in vector registers; only the O(1)-per-point ball algebra runs point by point. The
// per-point scratch is grouped by PG points (field f of point p at group p/PG, slot f*PG + p%PG)
// so a block reads each field as PG consecutive floats; every stage of one call uses one PG.

override WG: u32 = 256u;
override STAGE: u32 = 0u;
// Inputs are tangent vectors at the origin (batch norm) rather than points (midpoint).
override TANGENT: bool = false;
// COLSUM on rows (s = 1): invocations over d, coalesced along the row, DW coordinates per
// workgroup (a power of two dividing WG).
override ROWS: bool = false;
override DW: u32 = 256u;
// MEAN and VAR take the running statistics instead of the batch ones.
override USE_RUNNING: bool = false;
// VAR updates the running statistics with the batch ones (training).
override UPDATE_RUNNING: bool = false;
// MEAN writes m to y (the midpoint op).
override OUT_M: bool = false;

const STAGE_WEIGHTS: u32 = 0u;
const STAGE_COLSUM: u32 = 1u;
const STAGE_MEAN: u32 = 2u;
const STAGE_DIST: u32 = 3u;
const STAGE_VAR: u32 = 4u;
const STAGE_APPLY: u32 = 5u;

@group(0) @binding(0) var<uniform> params: BallParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<Elem>;
@group(0) @binding(6) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(7) var<storage, read_write> running_var: array<f32>;

fn scalar(i: u32) -> f32 {
    return scratch[off_scalars() + i];
}



// Field `f` of the VW points from `p` (VW <= PG: one group).
fn pfield(p: u32, f: u32) -> V {
    let o = pidx(p, f);
    var v = V(0.0);
    for (var q = 0u; q < VW; q++) {
        v = set_lane(v, q, scratch[o + q]);
    }
    return v;
}

// Stores field `f` of the VW points from `p`.
fn pstore(p: u32, f: u32, v: V) {
    let o = pidx(p, f);
    for (var q = 0u; q < VW; q++) {
        scratch[o + q] = get_lane(v, q);
    }
}

// Element index of the block of VW points from `p`, and the stride between its coordinates.
fn block_base(p: u32) -> u32 {
    return point_base(p, params.d, params.s) / VW;
}
fn block_stride() -> u32 {
    return params.s / VW;
}

fn tile_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The weights of the VW points from `p` from |v|^2 and <v, b> into their scratch fields;
// returns the sum of their lambda - 1.
fn weight_block(p: u32, vv: V, vb: V) -> f32 {
    let c = params.c;
    let n = max(sqrt(vv), V(MIN_NORM));
    var s = V(1.0);
    if TANGENT {
        s = tanh_ratio_v(sqrt(c) * n);
    }
    s *= proj_scale_v(s * n, params.max_norm);
    let xx = s * s * vv;
    let q = max(1.0 - c * xx, V(MIN_NORM));
    pstore(p, 0u, s);
    pstore(p, 1u, vv);
    pstore(p, 2u, vb);
    pstore(p, 3u, 2.0 / q * s);
    // lambda - 1 = (1 + c|x|^2) / (1 - c|x|^2), without cancellation near the origin.
    return hsum((1.0 + c * xx) / q);
}

fn weights(tile: u32, lid: u32) {
    let sv = block_stride();
    var den = 0.0;
    for (var j = 0u; j < params.ppt; j += VW) {
        let p = tile * params.tile_points + j * WG + lid * VW;
        if p < params.p {
            let base = block_base(p);
            var vv = V(0.0);
            var vb = V(0.0);
            for (var k = 0u; k < params.d; k++) {
                let v = x_load(base + k * sv);
                vv += v * v;
                if TANGENT {
                    vb += v * bias[k];
                }
            }
            den += weight_block(p, vv, vb);
        }
    }
    let total = wg_sum(lid, den);
    if lid == 0u {
        scratch[off_den() + tile] = total;
    }
}

// Tile sums of lambda*s*v[k]. Every sum is a tree or a short run (at most CT_RUN terms in
// sequence): compensated summation is not an option, since Vulkan drivers may reassociate
// floating-point adds that SPIR-V does not mark exact.
fn colsum(ct: u32, dz: u32, lid: u32) {
    let d = params.d;
    let first = ct * params.ct_points;
    let last = min(params.p, first + params.ct_points);
    if ROWS {
        // Invocation (g, kl): coordinate dz*DW + kl of points first + g, + G, ...; consecutive
        // invocations read consecutive floats of a row. Then a tree over g.
        let g = lid / DW;
        let kl = lid - g * DW;
        let k = dz * DW + kl;
        var acc = 0.0;
        if k < d {
            for (var p = first + g; p < last; p += WG / DW) {
                // Rows run with VW = 1 (hsum is the identity there): blocks are never rows.
                acc += scratch[pidx(p, 3u)] * hsum(x_load(p * d + k));
            }
        }
        workgroupBarrier();
        red[lid] = acc;
        for (var h = WG / DW / 2u; h > 0u; h >>= 1u) {
            workgroupBarrier();
            if g < h {
                red[lid] += red[lid + h * DW];
            }
        }
        workgroupBarrier();
        if g == 0u && k < d {
            scratch[off_zsum() + ct * d + k] = red[lid];
        }
    } else {
        // One workgroup per coordinate: consecutive invocations read consecutive blocks of VW
        // points. The block's (i, j) advance by stepped counters: a division per element cost
        // 4x the loads on a software rasterizer.
        let k = dz;
        let sj = params.s;
        let step = WG * VW;
        let p0 = first + lid * VW;
        var i = p0 / sj;
        var j = p0 - i * sj;
        let di = step / sj;
        let dj = step - di * sj;
        var acc = V(0.0);
        for (var p = p0; p < last; p += step) {
            acc += pfield(p, 3u) * x_load(((i * d + k) * sj + j) / VW);
            i += di;
            j += dj;
            if j >= sj {
                j -= sj;
                i += 1u;
            }
        }
        let total = wg_sum(lid, hsum(acc));
        if lid == 0u {
            scratch[off_zsum() + ct * d + k] = total;
        }
    }
}

fn mean(lid: u32) {
    let d = params.d;
    let c = params.c;
    let sc = sqrt(c);
    // Every invocation owns coordinates lid, lid + WG, ...
    var zz = 0.0;
    if USE_RUNNING {
        for (var k = lid; k < d; k += WG) {
            let m = running_mean[k];
            scratch[k] = m;
        }
    } else {
        var den_part = 0.0;
        for (var t = lid; t < params.tiles; t += WG) {
            den_part += scratch[off_den() + t];
        }
        let den = max(wg_sum(lid, den_part), MIN_NORM);
        // Pairwise sums of the tile partials, in place: level h adds tile t + h into tile t for
        // t a multiple of 2h.
        let zs = off_zsum();
        for (var h = 1u; h < params.ctiles; h <<= 1u) {
            let pairs = (params.ctiles + 2u * h - 1u) / (2u * h);
            for (var i = lid; i < pairs * d; i += WG) {
                let t = (i / d) * 2u * h;
                let k = i - (i / d) * d;
                if t + h < params.ctiles {
                    scratch[zs + t * d + k] += scratch[zs + (t + h) * d + k];
                }
            }
            storageBarrier();
        }
        var zz_part = 0.0;
        for (var k = lid; k < d; k += WG) {
            let z = scratch[zs + k] / den;
            scratch[k] = z;
            zz_part += z * z;
        }
        zz = wg_sum(lid, zz_part);
        // The Möbius half of z; sqrt(c)|z| <= 1 in exact arithmetic, clamped for rounding.
        let hm = 1.0 / (1.0 + sqrt(max(1.0 - c * zz, 0.0)));
        for (var k = lid; k < d; k += WG) {
            scratch[k] *= hm;
        }
    }
    var mm_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        mm_part += scratch[k] * scratch[k];
    }
    var mm = wg_sum(lid, mm_part);
    let pm = proj_scale(sqrt(mm), params.max_norm);
    mm *= pm * pm;
    for (var k = lid; k < d; k += WG) {
        scratch[k] *= pm;
        if OUT_M {
            // MEAN runs with VW = 1 (the splat only types the vector variants it never runs as).
            y_store(k, V(scratch[k]));
        }
    }
    if !TANGENT {
        return;
    }
    // beta = exp0(b) = sb * b.
    var bb_part = 0.0;
    var mb_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        bb_part += bias[k] * bias[k];
        mb_part += scratch[k] * bias[k];
    }
    let bb_raw = wg_sum(lid, bb_part);
    let mb_raw = wg_sum(lid, mb_part);
    let nb = max(sqrt(bb_raw), MIN_NORM);
    var sb = tanh_ratio(sc * nb);
    sb *= proj_scale(sb * nb, params.max_norm);
    for (var k = lid; k < d; k += WG) {
        scratch[off_beta() + k] = sb * bias[k];
    }
    if lid == 0u {
        let bb = sb * sb * bb_raw;
        let o = off_scalars();
        scratch[o + S_MM] = mm;
        scratch[o + S_BB] = bb;
        scratch[o + S_MB] = sb * mb_raw;
        scratch[o + S_LAM_M] = conformal(c, mm);
        scratch[o + S_LAM_B] = conformal(c, bb);
        scratch[o + S_SB] = sb;
    }
}

fn dist(tile: u32, lid: u32) {
    let c = params.c;
    let sc = sqrt(c);
    let mm = scalar(S_MM);
    let sv = block_stride();
    var acc = 0.0;
    for (var j = 0u; j < params.ppt; j += VW) {
        let p = tile * params.tile_points + j * WG + lid * VW;
        if p < params.p {
            let base = block_base(p);
            let s = pfield(p, 0u);
            let vv = pfield(p, 1u);
            var vm = V(0.0);
            for (var k = 0u; k < params.d; k++) {
                vm += x_load(base + k * sv) * scratch[k];
            }
            // w = (-m) (+) x = -k.x m + k.y s v.
            let kc = mobius_coefs_v(c, -s * vm, V(mm), s * s * vv);
            let kys = kc.y * s;
            var ww = V(0.0);
            for (var k = 0u; k < params.d; k++) {
                let wk = kys * x_load(base + k * sv) - kc.x * scratch[k];
                ww += wk * wk;
            }
            pstore(p, 3u, vm);
            pstore(p, 4u, ww);
            let dd = 2.0 / sc * artanh_clamped_v(sc * sqrt(ww));
            acc += hsum(dd * dd);
        }
    }
    let total = wg_sum(lid, acc);
    if lid == 0u {
        scratch[off_dist() + tile] = total;
    }
}

fn variance(lid: u32) {
    var part = 0.0;
    for (var t = lid; t < params.tiles; t += WG) {
        part += scratch[off_dist() + t];
    }
    let batch_var = wg_sum(lid, part) / f32(params.p);
    var v = batch_var;
    if USE_RUNNING {
        v = running_var[0];
    }
    if lid == 0u {
        scratch[off_scalars() + S_VAR] = v;
        scratch[off_scalars() + S_GAIN] = sqrt(weight[0] / (v + 1e-6));
    }
    if UPDATE_RUNNING {
        update_running(lid, batch_var);
    }
}

// Running statistics (an extension of C1, not in the official code): the running mean r moves
// along the geodesic to the batch midpoint, r <- exp_r(momentum * log_r(m)); the running variance
// is an exponential average of the batch variance.
fn update_running(lid: u32, batch_var: f32) {
    let d = params.d;
    let c = params.c;
    let sc = sqrt(c);
    let mom = params.momentum;
    let mm = scalar(S_MM);
    var rr_part = 0.0;
    var rm_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        let r = running_mean[k];
        rr_part += r * r;
        rm_part += r * scratch[k];
    }
    let rr = wg_sum(lid, rr_part);
    let rm = wg_sum(lid, rm_part);
    // w = (-r) (+) m = -k.x r + k.y m; step = mom * log_r(m) = a.x r + a.y m.
    let kc = mobius_coefs(c, -rm, rr, mm);
    var ww_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        let wk = -kc.x * running_mean[k] + kc.y * scratch[k];
        ww_part += wk * wk;
    }
    let nw = max(sqrt(wg_sum(lid, ww_part)), MIN_NORM);
    let lam = conformal(c, rr);
    let l = mom * 2.0 / lam * artanh_ratio(sc * nw);
    let a = vec2<f32>(-kc.x * l, kc.y * l);
    // exp_r(step) = project(r (+) t step); |step| = l |w| (no cancelling expansion when r ~ m).
    let step2 = l * l * nw * nw;
    let ns = max(l * nw, MIN_NORM);
    let t = tanh_ratio(sc * lam * ns * 0.5) * lam * 0.5;
    let q = a * t;
    let rq = q.x * rr + q.y * rm;
    let ke = mobius_coefs(c, rq, rr, t * t * step2);
    let co = vec2<f32>(ke.x + ke.y * q.x, ke.y * q.y);
    var nn_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        let v = co.x * running_mean[k] + co.y * scratch[k];
        nn_part += v * v;
    }
    let pr = proj_scale(sqrt(wg_sum(lid, nn_part)), params.max_norm);
    // Every invocation read its own coordinates above; the barrier in wg_sum ordered the reads.
    for (var k = lid; k < d; k += WG) {
        running_mean[k] = pr * (co.x * running_mean[k] + co.y * scratch[k]);
    }
    if lid == 0u {
        running_var[0] = (1.0 - mom) * running_var[0] + mom * batch_var;
    }
}

// The outputs of the VW points from `p` as y = cv v + cm m + cb beta (x = s v is the input).
struct OutCoefs {
    cv: V,
    cm: V,
    cb: V,
}

fn apply_coefs(p: u32) -> OutCoefs {
    let c = params.c;
    let sc = sqrt(c);
    let mm = V(scalar(S_MM));
    let bb = V(scalar(S_BB));
    let mb = V(scalar(S_MB));
    let lam_m = scalar(S_LAM_M);
    let lam_b = scalar(S_LAM_B);
    let s = pfield(p, 0u);
    let vv = pfield(p, 1u);
    let vbeta = scalar(S_SB) * pfield(p, 2u);
    let vm = pfield(p, 3u);
    let ww = pfield(p, 4u);
    let nw = max(sqrt(ww), V(MIN_NORM));
    // log_m x = l w, w = (-m) (+) x = -k.x m + k.y s v.
    let kc = mobius_coefs_v(c, -s * vm, mm, s * s * vv);
    let l = 2.0 / lam_m * artanh_ratio_v(sc * nw);
    let w_beta = -kc.x * mb + kc.y * s * vbeta;
    let w_m = -kc.x * mm + kc.y * s * vm;
    // u = transp_{m->beta}(l w) * gain = r (l w + g.x beta - g.y m), r = gain lambda_m/lambda_beta.
    let g = gyration_coefs_v(c, l * w_beta, -l * w_m, -mb, bb, mm);
    let r = scalar(S_GAIN) * lam_m / lam_b;
    let um = r * (-l * kc.x - g.y);
    let uv = r * l * kc.y * s;
    let ub = r * g.x;
    // Gyrations preserve norms, so |u| = r l |w| exactly; expanding |u|^2 from the
    // coefficients would cancel catastrophically when x is near m and the gain is large.
    let uu = r * r * l * l * ww;
    let u_beta = r * (l * w_beta + g.x * bb - g.y * mb);
    // exp_beta(u) = project(beta (+) t u).
    let nu = max(sqrt(uu), V(MIN_NORM));
    let t = tanh_ratio_v(sc * lam_b * nu * 0.5) * lam_b * 0.5;
    let bq = t * u_beta;
    let qq = t * t * uu;
    let ke = mobius_coefs_v(c, bq, bb, qq);
    let yy = max(ke.x * ke.x * bb + ke.y * ke.y * qq + 2.0 * ke.x * ke.y * bq, V(0.0));
    let ny = sqrt(yy);
    let pr = proj_scale_v(ny, params.max_norm);
    // log0 of the projected point.
    let gl = pr * artanh_ratio_v(sc * max(pr * ny, V(MIN_NORM)));
    return OutCoefs(gl * ke.y * t * uv, gl * ke.y * t * um, gl * (ke.x + ke.y * t * ub));
}

fn apply(tile: u32, lid: u32) {
    let sv = block_stride();
    for (var j = 0u; j < params.ppt; j += VW) {
        let p = tile * params.tile_points + j * WG + lid * VW;
        if p >= params.p {
            continue;
        }
        let co = apply_coefs(p);
        let base = block_base(p);
        for (var k = 0u; k < params.d; k++) {
            let i = base + k * sv;
            y_store(i, co.cv * x_load(i) + co.cm * scratch[k] + co.cb * scratch[off_beta() + k]);
        }
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile = tile_of(wid, nwg);
    switch STAGE {
        case STAGE_WEIGHTS: {
            if tile < params.tiles {
                weights(tile, lid);
            }
        }
        case STAGE_COLSUM: {
            if tile < params.ctiles {
                colsum(tile, wid.z, lid);
            }
        }
        case STAGE_MEAN: {
            mean(lid);
        }
        case STAGE_DIST: {
            if tile < params.tiles {
                dist(tile, lid);
            }
        }
        case STAGE_VAR: {
            variance(lid);
        }
        default: {
            if tile < params.tiles {
                apply(tile, lid);
            }
        }
    }
}
