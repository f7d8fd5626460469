// Batch-statistics backward, phase 1: workgroup (p, channel, tile) sums dz and dz * xhat over its
// tile of the channel's Q * SDIV elements in sample p (tree sum), into partials (vec2 per
// (p, channel, tile)). No atomics: fixed-order sums, bitwise reproducible.

override WG: u32 = 256u;
// Each lane sums one contiguous block of the tile, in runs along s with no index arithmetic per
// element (CPU adapters, where a lane is a loop iteration); otherwise lanes interleave so a
// warp's loads coalesce (GPUs).
override LANE_BLOCK: bool = false;
// A gradient term sums its own per-element values (`term_partial`, from its snippet) instead of
// (dz, dz * xhat, xhat).
override TERM_PARTIALS: bool = false;

// The tree sums: `wg_sum4` (common/workgroup_sum4.wgsl).

@group(0) @binding(4) var<storage, read> x: array<Elem>;
@group(0) @binding(5) var<storage, read> dy: array<Elem>;
@group(0) @binding(6) var<storage, read> weight: array<f32>;
// The bias, or (TERM_PARTIALS, no activation: the bias is unused) the gradient term's input, read
// with `term_input_at`: a binding of its own would be a ninth storage buffer.
@group(0) @binding(7) var<storage, read> bias: array<f32>;
// Per (p, channel, tile): (sum dz, sum dz * xhat', sum xhat', 0), xhat' centred on the slot's
// statistics as given (the finalize corrects an f32-rounded mean with sum xhat').
@group(0) @binding(8) var<storage, read_write> partials: array<vec4<f32>>;

// (Ifs, not select: without a weight or bias a dummy without element `ch` is bound.)
fn weight_at(ch: u32) -> f32 {
    if (HAS_WEIGHT) {
        return weight[ch];
    }
    return 1.0;
}

fn bias_at(ch: u32) -> f32 {
    if (HAS_BIAS) {
        return bias[ch];
    }
    return 0.0;
}

fn term_input_at(ch: u32) -> f32 {
    return bias[ch];
}

// One element's sums: the term's, or (dz, dz * xhat, xhat).
fn element_sums(xv: f32, d: f32, st: vec4<f32>, w: f32, b: f32, ch: u32) -> vec4<f32> {
    if (TERM_PARTIALS) {
        return term_partial(xv, d, st, w, ch);
    }
    let xhat = centred_hat(xv, st);
    let dz = act_grad(d, xhat * w + b);
    return vec4<f32>(dz, dz * xhat, xhat, 0.0);
}

// Sums of (dz, dz * xhat, xhat) over elements lo..hi of a channel's Q * SDIV, walked in runs of
// consecutive s (one channel plane row each).
fn block_sums(pp: u32, rr: u32, ch: u32, st: vec4<f32>, w: f32, b: f32, lo: u32, hi: u32) -> vec4<f32> {
    let s0 = (ch % params.cg) * params.sdiv;
    var acc = vec4<f32>(0.0);
    var j = lo;
    var qq = lo / params.sdiv;
    var t = lo - qq * params.sdiv;
    loop {
        if (j >= hi) {
            break;
        }
        let run = min(hi - j, params.sdiv - t);
        let base = ((pp * params.q + qq) * params.r + rr) * params.s + s0 + t;
        var a = 0.0;
        var c = 0.0;
        var z = 0.0;
        for (var k = 0u; k < run; k++) {
            let xv = x_load(base + k - params.x_base);
            let d = dy_load(base + k - params.x_base);
            if (ACT != 0u || TERM_PARTIALS) {
                acc += element_sums(xv, d, st, w, b, ch);
            } else {
                let xc = (xv - st.x) - st.y;
                a += d;
                c += d * xc;
                z += xc;
            }
        }
        if (ACT == 0u && !TERM_PARTIALS) {
            c *= st.z;
            z *= st.z;
        }
        acc += vec4<f32>(a, c, z, 0.0);
        j += run;
        qq += 1u;
        t = 0u;
    }
    return acc;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Workgroup g is (p, channel, tile) when Q = 1 (a channel's run is contiguous), else
    // (p, tile, channel), channels fastest: either way a range of workgroups reads one
    // contiguous range of x (a binding window).
    let g = linear_group(wid, nwg) + params.group_base;
    let c = channels();
    if (g >= params.p * c * params.tiles || g >= params.group_end) {
        return;
    }
    var tile = g % params.tiles;
    var pc = g / params.tiles;
    if (params.q > 1u) {
        let pt = g / c;
        tile = pt % params.tiles;
        pc = (pt / params.tiles) * c + g % c;
    }
    let ch = pc % c;
    let pp = pc / c;
    let rr = ch / params.cg;
    let st = slot_stats(pp * params.r + rr);
    let w = weight_at(ch);
    let b = bias_at(ch);
    let len = params.q * params.sdiv;
    let start = tile * params.tile_len;
    let end = min(len, start + params.tile_len);
    let s0 = (ch % params.cg) * params.sdiv;
    if (LANE_BLOCK) {
        let per_lane = (params.tile_len + WG - 1u) / WG;
        let lo = min(end, start + lid * per_lane);
        let hi = min(end, lo + per_lane);
        let sums = wg_sum4(lid, block_sums(pp, rr, ch, st, w, b, lo, hi));
        if (lid == 0u) {
            partials[pc * params.tiles + tile] = sums;
        }
        return;
    }
    // Element j of the channel is (q, t) = (j / SDIV, j % SDIV); lanes step by WG with a carry
    // instead of dividing per element.
    let dq = WG / params.sdiv;
    let dt = WG - dq * params.sdiv;
    let j0 = start + lid;
    var qq = j0 / params.sdiv;
    var t = j0 - qq * params.sdiv;
    var acc = vec4<f32>(0.0);
    for (var j = j0; j < end; j += WG) {
        let e = ((pp * params.q + qq) * params.r + rr) * params.s + s0 + t;
        acc += element_sums(x_load(e - params.x_base), dy_load(e - params.x_base), st, w, b, ch);
        t += dt;
        qq += dq;
        if (t >= params.sdiv) {
            t -= params.sdiv;
            qq += 1u;
        }
    }
    let sums = wg_sum4(lid, acc);
    if (lid == 0u) {
        partials[pc * params.tiles + tile] = sums;
    }
}
