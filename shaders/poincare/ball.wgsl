// Poincaré ball operations, one invocation per point (docs/methods.md C1). OP selects the operation;
// inputs a, b, w are points or tangent vectors as the op defines, each either one vector per
// point or one vector for all (params.bcast). Vector ops write y with the layout of the inputs;
// DIST and LAMBDA write one value per point.

override WG: u32 = 64u;
override OP: u32 = 0u;
// Inputs the op reads (1..3).
override N_IN: u32 = 1u;

const OP_PROJECT: u32 = 0u;
const OP_EXP0: u32 = 1u;
const OP_LOG0: u32 = 2u;
const OP_MOBIUS_ADD: u32 = 3u;
const OP_EXPMAP: u32 = 4u;
const OP_LOGMAP: u32 = 5u;
const OP_DIST: u32 = 6u;
const OP_LAMBDA: u32 = 7u;
const OP_GYRATION: u32 = 8u;
const OP_TRANSPORT: u32 = 9u;

@group(0) @binding(0) var<uniform> params: BallParams;
@group(0) @binding(1) var<storage, read> a: array<Elem>;
@group(0) @binding(2) var<storage, read> b: array<Elem>;
@group(0) @binding(3) var<storage, read> w: array<Elem>;
@group(0) @binding(4) var<storage, read_write> y: array<Elem>;

fn la(base: u32, k: u32) -> f32 {
    if (params.bcast & 1u) != 0u {
        return a_load(k);
    }
    return a_load(base + k * params.s);
}

fn lb(base: u32, k: u32) -> f32 {
    if (params.bcast & 2u) != 0u {
        return b_load(k);
    }
    return b_load(base + k * params.s);
}

fn lw(base: u32, k: u32) -> f32 {
    if (params.bcast & 4u) != 0u {
        return w_load(k);
    }
    return w_load(base + k * params.s);
}

fn comb(base: u32, k: u32, co: vec3<f32>) -> f32 {
    var v = co.x * la(base, k);
    if N_IN >= 2u {
        v += co.y * lb(base, k);
    }
    if N_IN >= 3u {
        v += co.z * lw(base, k);
    }
    return v;
}

// |co.x a + co.y b + co.z w|^2 summed coordinate-wise (no cancellation of expanded products).
fn comb_norm2(base: u32, co: vec3<f32>) -> f32 {
    var acc = 0.0;
    for (var k = 0u; k < params.d; k++) {
        let v = comb(base, k, co);
        acc += v * v;
    }
    return acc;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let p = (wid.x + wid.y * nwg.x) * WG + lid;
    if p >= params.p {
        return;
    }
    let d = params.d;
    let base = point_base(p, d, params.s);
    let c = params.c;
    let sc = sqrt(c);

    var aa = 0.0;
    var bb = 0.0;
    var ww = 0.0;
    var ab = 0.0;
    var aw = 0.0;
    var bw = 0.0;
    for (var k = 0u; k < d; k++) {
        let av = la(base, k);
        aa += av * av;
        if N_IN >= 2u {
            let bv = lb(base, k);
            bb += bv * bv;
            ab += av * bv;
            if N_IN >= 3u {
                let wv = lw(base, k);
                ww += wv * wv;
                aw += av * wv;
                bw += bv * wv;
            }
        }
    }

    // y = co.x a + co.y b + co.z w, or one scalar per point.
    var co = vec3<f32>(0.0);
    var scalar = 0.0;
    switch OP {
        case OP_PROJECT: {
            co.x = proj_scale(sqrt(aa), params.max_norm);
        }
        case OP_EXP0: {
            let n = max(sqrt(aa), MIN_NORM);
            let t = tanh_ratio(sc * n);
            co.x = t * proj_scale(t * n, params.max_norm);
        }
        case OP_LOG0: {
            co.x = artanh_ratio(sc * max(sqrt(aa), MIN_NORM));
        }
        case OP_MOBIUS_ADD: {
            let k = mobius_coefs(c, ab, aa, bb);
            co = vec3<f32>(k, 0.0);
        }
        case OP_EXPMAP: {
            // exp_a(b) = project(a (+) t b), t = tanh(sqrt(c) lambda_a |b| / 2) / (sqrt(c) |b|).
            let n = max(sqrt(bb), MIN_NORM);
            let lam = conformal(c, aa);
            let t = tanh_ratio(sc * lam * n * 0.5) * lam * 0.5;
            let k = mobius_coefs(c, t * ab, aa, t * t * bb);
            co = vec3<f32>(k.x, k.y * t, 0.0);
            co *= proj_scale(sqrt(comb_norm2(base, co)), params.max_norm);
        }
        case OP_LOGMAP, OP_DIST: {
            // w = (-a) (+) b; log_a(b) = 2/(sqrt(c) lambda_a) artanh(sqrt(c)|w|) w/|w|.
            let k = mobius_coefs(c, -ab, aa, bb);
            let wco = vec3<f32>(-k.x, k.y, 0.0);
            let n = max(sqrt(comb_norm2(base, wco)), MIN_NORM);
            if OP == OP_DIST {
                scalar = 2.0 / sc * artanh_clamped(sc * n);
            } else {
                co = wco * (2.0 / conformal(c, aa) * artanh_ratio(sc * n));
            }
        }
        case OP_LAMBDA: {
            scalar = conformal(c, aa);
        }
        case OP_GYRATION: {
            let g = gyration_coefs(c, aw, bw, ab, aa, bb);
            co = vec3<f32>(g.x, g.y, 1.0);
        }
        case OP_TRANSPORT: {
            // transp_{a->b}(w) = gyr[b, -a] w * lambda_a / lambda_b.
            let g = gyration_coefs(c, bw, -aw, -ab, bb, aa);
            let r = conformal(c, aa) / conformal(c, bb);
            co = vec3<f32>(-g.y, g.x, 1.0) * r;
        }
        default: {}
    }

    if OP == OP_DIST || OP == OP_LAMBDA {
        y_store(p, scalar);
        return;
    }
    for (var k = 0u; k < d; k++) {
        y_store(base + k * params.s, comb(base, k, co));
    }
}
