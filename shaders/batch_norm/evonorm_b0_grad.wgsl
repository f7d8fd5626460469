// EvoNorm-B0's backward (docs/methods.md A14): y = x / d * w + b with d = max(a, v x + s),
// a = sqrt(var_B + eps) per channel (batch in training, running_var at inference), s =
// sqrt(var_I + eps) per (sample, channel). With g = dy w and h = -g x / d^2, the larger branch of
// the max takes h (each h / 2 at an exact tie, as PyTorch's and JAX's maximum); summed over the
// batch branch's elements of a channel (H_a) and the instance branch's of a slab (H_s):
//   dx = g / d + [inst] v h + (x - mean_B) H_a / (a N hw) + (x - mean_I) H_s / (s hw),
//   dv = sum [inst] h x, dweight = sum dy x / d, dbias = sum dy.
// Scratch: [slab moments (2 NC) | channel (mean_B, a) (2 C) | slab partials (5 NC) |
// channel sums (dweight, dbias, dv, H_a / (a N hw)) (4 C)]. Stages (GSTAGE), each in fixed order:
//   0 MOMENTS  per slab (workgroup): mean_I, M2_I (two passes over the slab)
//   1 CHANNEL  per channel: the slabs merged in order (Chan) -> mean_B, a
//   2 PARTIALS per slab (workgroup): sum dy, sum dy x / d, H_a's and H_s's part, sum [inst] h x
//   3 FINALIZE per channel: the slabs' partials summed in order; writes out (PARAMS 0: dweight,
//              1: dbias, 2: dv)
//   4 DX       per element

override WG: u32 = 64u;
override GSTAGE: u32 = 0u;
override PARAMS: u32 = 0u;
override TRAINING: bool = true;
// x is (N, H, W, C) instead of (N, C, H, W).
override NHWC: bool = false;

struct EvoB0GradParams {
    n: u32,
    c: u32,
    hw: u32,
    _pad0: u32,
    eps: f32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> params: EvoB0GradParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> dy: array<Elem>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read> running_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;

var<workgroup> red4: array<vec4<f32>, WG>;

fn slabs() -> u32 {
    return params.n * params.c;
}
fn off_channel() -> u32 {
    return 2u * slabs();
}
fn off_partials() -> u32 {
    return off_channel() + 2u * params.c;
}
fn off_sums() -> u32 {
    return off_partials() + 5u * slabs();
}

// Element k of slab (n, ch).
fn index(n: u32, ch: u32, k: u32) -> u32 {
    if NHWC {
        return (n * params.hw + k) * params.c + ch;
    }
    return (n * params.c + ch) * params.hw + k;
}

fn inst_std(slab: u32) -> f32 {
    return sqrt(scratch[2u * slab + 1u] / f32(params.hw) + params.eps);
}

// Stages 0 and 2 run one workgroup per slab; a padding group (past the last slab) takes part in
// the barriers on the last slab but writes nothing.
fn slab_moments(g: u32, lid: u32) {
    let slab = min(g, slabs() - 1u);
    let n = slab / params.c;
    let ch = slab - n * params.c;
    // Two passes (the mean, then the centred squares): no division per element.
    var sum = 0.0;
    for (var k = lid; k < params.hw; k += WG) {
        sum += x_load(index(n, ch, k));
    }
    let mean = wg_sum(lid, sum) / f32(params.hw);
    var sq = 0.0;
    for (var k = lid; k < params.hw; k += WG) {
        let d = x_load(index(n, ch, k)) - mean;
        sq += d * d;
    }
    let m2 = wg_sum(lid, sq);
    if lid == 0u && g < slabs() {
        scratch[2u * slab] = mean;
        scratch[2u * slab + 1u] = m2;
    }
}

fn channel(ch: u32) {
    if ch >= params.c {
        return;
    }
    var acc = Moments(0.0, 0.0, 0.0);
    for (var n = 0u; n < params.n; n++) {
        let s = n * params.c + ch;
        acc = moments_merge(acc, Moments(f32(params.hw), scratch[2u * s], scratch[2u * s + 1u]));
    }
    var var_b = running_var[ch];
    if TRAINING {
        var_b = acc.m2 / acc.n;
    }
    scratch[off_channel() + 2u * ch] = acc.mean;
    scratch[off_channel() + 2u * ch + 1u] = sqrt(var_b + params.eps);
}

// The denominator max(a, b) (b = v x + s, the instance branch) and the instance branch's share
// of its gradient: 1 when it is the larger, 1/2 at a tie.
fn denominator(a: f32, b: f32) -> vec2<f32> {
    return vec2<f32>(max(a, b), select(select(0.5, 0.0, b < a), 1.0, b > a));
}

fn partials(g: u32, lid: u32) {
    let slab = min(g, slabs() - 1u);
    let n = slab / params.c;
    let ch = slab - n * params.c;
    let a = scratch[off_channel() + 2u * ch + 1u];
    let s = inst_std(slab);
    var acc = vec4<f32>(0.0);
    var hx = 0.0;
    for (var k = lid; k < params.hw; k += WG) {
        let i = index(n, ch, k);
        let e = x_load(i);
        let dyv = dy_load(i);
        let ds = denominator(a, v[ch] * e + s);
        let d = ds.x;
        let share = ds.y;
        let h = -dyv * weight[ch] * e / (d * d);
        acc += vec4<f32>(dyv, dyv * e / d, (1.0 - share) * h, share * h);
        hx += share * h * e;
    }
    // One tree for the five sums (not five: a barrier is dear on CPU drivers).
    red4[lid] = acc;
    red[lid] = hx;
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        workgroupBarrier();
        if lid < h {
            red4[lid] += red4[lid + h];
            red[lid] += red[lid + h];
        }
    }
    if lid == 0u && g < slabs() {
        let o = off_partials() + 5u * slab;
        scratch[o] = red4[0].x;
        scratch[o + 1u] = red4[0].y;
        scratch[o + 2u] = red4[0].z;
        scratch[o + 3u] = red4[0].w;
        scratch[o + 4u] = red[0];
    }
}

fn finalize(ch: u32) {
    if ch >= params.c {
        return;
    }
    let o = off_sums() + 4u * ch;
    if PARAMS == 0u {
        // dweight, dbias, dv, H_a
        var acc = vec4<f32>(0.0);
        for (var n = 0u; n < params.n; n++) {
            let p = off_partials() + 5u * (n * params.c + ch);
            acc += vec4<f32>(scratch[p + 1u], scratch[p], scratch[p + 4u], scratch[p + 2u]);
        }
        let a = scratch[off_channel() + 2u * ch + 1u];
        scratch[o] = acc.x;
        scratch[o + 1u] = acc.y;
        scratch[o + 2u] = acc.z;
        scratch[o + 3u] = select(0.0, acc.w / (a * f32(params.n * params.hw)), TRAINING);
    }
    out[ch] = scratch[o + PARAMS];
}

fn dx_at(i: u32) {
    if i >= slabs() * params.hw {
        return;
    }
    var ch: u32;
    var n: u32;
    if NHWC {
        ch = i % params.c;
        n = i / (params.c * params.hw);
    } else {
        let nc = i / params.hw;
        ch = nc % params.c;
        n = nc / params.c;
    }
    let slab = n * params.c + ch;
    let a = scratch[off_channel() + 2u * ch + 1u];
    let s = inst_std(slab);
    let e = x_load(i);
    let g = dy_load(i) * weight[ch];
    let ds = denominator(a, v[ch] * e + s);
    let d = ds.x;
    let share = ds.y;
    let h_s = scratch[off_partials() + 5u * slab + 3u];
    var r = g / d - share * v[ch] * g * e / (d * d);
    if TRAINING {
        // (not at inference: the batch mean there may be another slab's NaN)
        r += (e - scratch[off_channel() + 2u * ch]) * scratch[off_sums() + 4u * ch + 3u];
    }
    r += (e - scratch[2u * slab]) * h_s / (s * f32(params.hw));
    dx_store(i, r);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    switch GSTAGE {
        case 0u: {
            slab_moments(g, lid);
        }
        case 1u: {
            channel(g * WG + lid);
        }
        case 2u: {
            partials(g, lid);
        }
        case 3u: {
            finalize(g * WG + lid);
        }
        default: {
            dx_at(g * WG + lid);
        }
    }
}
