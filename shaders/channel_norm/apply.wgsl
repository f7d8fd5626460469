// Phase 3: y = act(epilogue(x, coefficients)), with the coefficients per (p, channel) from the
// finalize pass, stored structure-of-arrays per p: [mean x C][scale x C][shift x C] (and, for
// epilogues with more, COEF_ARRAYS arrays in all).
//
// The epilogue is a snippet composed before this body (channel_norm/epilogue_affine.wgsl is the
// engine's `(x - mean) * scale + shift`; methods bring their own). It defines COEF_ARRAYS,
// `epilogue_extra(p, ch, c, k) -> Coefs` (fills `e0`/`e1` from further coefficient arrays or the
// per-call `aux` input) and `epilogue(x, k) -> V`.
//
// Element e of x belongs to sample p = e / (Q*R*S) and channel (e / SDIV) % C in every view of
// common.wgsl, so apply needs no 4D decomposition. Each invocation handles BLOCK consecutive
// accesses and steps its channel and sample counters instead of dividing per element (CPU
// rasterisers want a contiguous block per lane; GPUs want BLOCK = 1, coalesced across lanes).
// CH_VEC: the VW elements of one access are VW consecutive channels (channels-last with C a
// multiple of 4): mean/scale/shift load as vectors. Otherwise one access lies in one channel.
// Invocation 0 also advances num_batches_tracked when COUNT_BATCH (after finalize read it).
// x and y may be bound in windows: invocations count from group_base, indices are the whole
// tensor's (x at access i is x_load(i - x_base)), and total_v is this window's end.

override WG: u32 = 256u;
override BLOCK: u32 = 1u;
override COUNT_BATCH: bool = false;
override CH_VEC: bool = false;
// Vector accesses over channel runs that are not a multiple of 4 elements long (SDIV >= 4, e.g.
// 7x7 maps): an access may straddle two channels, whose coefficients it then takes lane by lane.
override STRADDLE: bool = false;

@group(0) @binding(0) var<uniform> params: ChannelParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> coef: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<Elem>;
@group(0) @binding(4) var<storage, read_write> batches: array<u32>;
@group(0) @binding(5) var<storage, read> aux: array<f32>;
// The coefficients again, as vectors: channels-last (CH_VEC) loads four channels at once (the
// same buffer bound twice, both read-only).
@group(0) @binding(6) var<storage, read> coef4: array<vec4<f32>>;

// (mean, scale, shift) of channel ch (and the following VW - 1 when CH_VEC) of sample p.
fn coef_at(p: u32, ch: u32, c: u32, which: u32) -> V {
    let base = (p * COEF_ARRAYS + which) * c + ch;
    if (CH_VEC) {
        // c and ch are multiples of 4 here.
        return v_from4(coef4[base / 4u]);
    }
    return V(coef[base]);
}

// The per-channel aux value(s) of channel ch, like coef_at (for epilogues with a per-channel
// input).
fn aux_at(ch: u32) -> V {
    if (CH_VEC) {
        var v: V;
        for (var k = 0u; k < VW; k = k + 1u) {
            v = set_lane(v, k, aux[ch + k]);
        }
        return v;
    }
    return V(aux[ch]);
}

// The coefficients of one (sample, channel): mean, scale, shift, and two values an epilogue may
// add (e0, e1).
struct Coefs {
    mean: V,
    scale: V,
    shift: V,
    e0: V,
    e1: V,
}

fn load_coefs(p: u32, ch: u32, c: u32) -> Coefs {
    let k = Coefs(coef_at(p, ch, c, 0u), coef_at(p, ch, c, 1u), coef_at(p, ch, c, 2u), V(0.0), V(0.0));
    return epilogue_extra(p, ch, c, k);
}

// Lanes below n from a, the others from b.
fn mix_coefs(a: Coefs, b: Coefs, n: u32) -> Coefs {
    return Coefs(
        first_lanes(a.mean, b.mean, n),
        first_lanes(a.scale, b.scale, n),
        first_lanes(a.shift, b.shift, n),
        first_lanes(a.e0, b.e0, n),
        first_lanes(a.e1, b.e1, n),
    );
}

// x and y at access i of the whole tensor (bound from access x_base on).
fn x_at(i: u32) -> V {
    return x_load(i - params.x_base);
}

fn y_at(i: u32, v: V) {
    y_store(i - params.x_base, v);
}

// y for one access with the current channel's coefficients.
fn apply_one(xv: V, k: Coefs) -> V {
    return activate(epilogue(xv, k));
}

// Channels-last with four channels per access: invocation inv takes channel vector
// j = inv % (C / VW) of BLOCK consecutive tokens (C / VW accesses apart), so its coefficients
// load once per block (or per sample crossed) instead of once per access, and neighbouring
// invocations read neighbouring vectors of one token (coalesced on GPUs). The host
// dispatches (C / VW) * ceil(tokens / BLOCK) invocations for this mapping.
fn channels_last(inv: u32) {
    let c = params.r * params.cg;
    let per_p = params.per_p;
    let cv = c / VW;
    let tokens = params.total_v / cv;
    let j = inv % cv;
    let t0 = (inv / cv) * BLOCK;
    if (t0 >= tokens) {
        return;
    }
    let t_end = min(tokens, t0 + BLOCK);
    let per_sample = per_p / c;
    var ps = t0 / per_sample;
    var left = (ps + 1u) * per_sample - t0;
    var kc = load_coefs(ps, j * VW, c);
    var i = t0 * cv + j;
    var t = t0;
    // Runs of tokens of one sample: no test inside the inner loop.
    loop {
        let stop = min(t_end, t + left);
        for (; t < stop; t = t + 1u) {
            y_at(i, apply_one(x_at(i), kc));
            i = i + cv;
        }
        if (t >= t_end) {
            break;
        }
        ps = ps + 1u;
        left = per_sample;
        kc = load_coefs(ps, j * VW, c);
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let inv = (wid.x + wid.y * nwg.x) * WG + lid + params.group_base;
    // Once per call: only the first window has invocation 0.
    if (COUNT_BATCH && inv == 0u) {
        batches[0] = batches[0] + 1u;
    }
    if (CH_VEC) {
        channels_last(inv);
        return;
    }
    let c = params.r * params.cg;
    // Counters in elements: position within the current channel run (SDIV elements), channel,
    // position within the current sample (Q*R*S elements), sample.
    let per_p = params.per_p;
    let start = inv * BLOCK;
    if (start >= params.total_v) {
        return;
    }
    let e0 = start * VW;
    var within = e0 % params.sdiv;
    var ch = (e0 / params.sdiv) % c;
    var pin = e0 % per_p;
    var p = e0 / per_p;
    var k = load_coefs(p, ch, c);
    let end = min(params.total_v, start + BLOCK);
    if (STRADDLE) {
        // Runs of SDIV elements, in elements: `within` is the offset in the current run, and
        // the run after it starts at element e_next (its sample and channel by one division
        // each, once per run).
        var i = start;
        var e_next = e0 - within + params.sdiv;
        loop {
            if (i >= end) {
                break;
            }
            let stop = min(end, i + (params.sdiv - within) / 4u);
            within = within + (stop - i) * 4u;
            for (; i < stop; i = i + 1u) {
                y_at(i, apply_one(x_at(i), k));
            }
            if (i >= end) {
                break;
            }
            let kn = load_coefs(e_next / per_p, (e_next / params.sdiv) % c, c);
            e_next = e_next + params.sdiv;
            let rem = params.sdiv - within;
            if (rem > 0u) {
                // Access i ends this run and starts the next.
                y_at(i, apply_one(x_at(i), mix_coefs(k, kn, rem)));
                i = i + 1u;
            }
            within = 4u - rem;
            if (rem == 0u) {
                within = 0u;
            }
            k = kn;
        }
        return;
    }
    if (!CH_VEC) {
        // Runs of one channel: SDIV elements. The inner loop has no counters; the channel (and
        // at a sample's end the sample) advances between runs. A run never straddles samples.
        var i = start;
        loop {
            if (i >= end) {
                break;
            }
            let left = (params.sdiv - within) / VW;
            let stop = min(end, i + left);
            for (; i < stop; i = i + 1u) {
                y_at(i, apply_one(x_at(i), k));
            }
            if (i >= end) {
                break;
            }
            within = 0u;
            ch = ch + 1u;
            if (ch >= c) {
                ch = 0u;
            }
            pin = pin + left * VW;
            if (pin >= per_p) {
                pin = 0u;
                p = p + 1u;
            }
            k = load_coefs(p, ch, c);
        }
        return;
    }
}
