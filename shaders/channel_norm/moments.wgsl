// Phase 1: partial moments (count, mean, M2) of one tile of one slot per workgroup. Each lane
// keeps Welford moments of its accesses; the workgroup merges them with Chan's formula.

override WG: u32 = 256u;
// 0: mean and M2 (Welford). 1: sum of squares (L2 norm). 2: sum of absolute values (L1 norm);
// sums are kept in the m2 field with mean 0, which Chan's merge adds exactly.
override REDUCE: u32 = 0u;
override HAS_MASK: bool = false;
// Each lane reduces one contiguous block of the tile instead of every WG-th access (CPU
// adapters: a lane is a loop iteration there, and contiguous blocks stream; GPUs want lanes
// interleaved so a warp's loads coalesce).
override LANE_BLOCK: bool = false;
// Views with S = 1 (channels-last BatchNorm / InstanceNorm): one lane per slot r, so the lanes of
// a workgroup read consecutive channels of one token (contiguous memory) and each lane walks the
// tokens of its tile; workgroup g = ((p * chunks + chunk) * tiles + tile). No workgroup merge.
override CHANNEL_LANES: bool = false;
// REDUCE 0: moments of x - shift, with shift the mean of the slot's first access, so a large
// common offset does not limit the precision of the mean (an f32 mean of values near 1e4 is off
// by up to 5e-4). Tile 0 stores the shift after the partials, at slots * tiles + slot, as
// Moments(0, shift, 0); finalize and merge add it back. A binding window that starts past the
// slot's first access reads the shift back (tile 0 ran in an earlier window), so every tile of a
// slot shares one shift whatever the windows.
override SHIFTED: bool = false;

// Where slot (pp, rr)'s shift is kept: after the partials, one per slot, or one per group of
// `shift_cg` channels whose moments a grouped finalize merges (the group's slot index there).
fn shift_index(pp: u32, rr: u32) -> u32 {
    let g = max(params.shift_cg, 1u);
    return params.p * params.r * params.tiles + pp * (params.r / g) + rr / g;
}

// x at access `e` of the whole tensor: this dispatch binds x from access x_base on.
fn x_at(e: u32) -> V {
    return x_load(e - params.x_base);
}

// The shift of a slot whose first access is `first`: read from x when this window binds it,
// else the one tile 0 stored.
fn shift_at(first: u32, pp: u32, rr: u32) -> f32 {
    if (first < params.x_base) {
        return partials[shift_index(pp, rr)].mean;
    }
    return hsum(x_at(first)) / f32(VW);
}

fn slot_shift(pp: u32, rr: u32) -> f32 {
    if (!SHIFTED) {
        return 0.0;
    }
    return shift_at((pp * params.q * params.r + rr) * params.s_v, pp, rr);
}

fn store_shift(pp: u32, rr: u32, tile: u32, shift: f32) {
    if (SHIFTED && tile == 0u) {
        partials[shift_index(pp, rr)] = Moments(0.0, shift, 0.0);
    }
}

// Where tile `tile` of a slot keeps its partial moments.
fn partial_index(slot: u32, tile: u32) -> u32 {
    return slot * params.tiles + tile;
}

// Workgroup g of the channel-lane paths is (pp, tile, chunk), chunks fastest, so the workgroups
// of a range of tiles read one contiguous run of tokens (one binding window).
fn channel_lanes(g: u32, lid: u32) {
    let chunks = (params.r + WG - 1u) / WG;
    let chunk = g % chunks;
    let tile = (g / chunks) % params.tiles;
    let pp = g / chunks / params.tiles;
    let rr = chunk * WG + lid;
    if (pp >= params.p || rr >= params.r) {
        return;
    }
    let start = tile * params.tile_len;
    let end = min(params.q, start + params.tile_len);
    let stride = params.r * params.s_v;
    let shift = slot_shift(pp, rr);
    store_shift(pp, rr, tile, shift);
    let sh = V(shift);
    var e = (pp * params.q + start) * stride + rr;
    var acc = Moments(0.0, 0.0, 0.0);
    for (var j = start; j < end; j = j + 4u) {
        let ok1 = j + 1u < end;
        let ok2 = j + 2u < end;
        let ok3 = j + 3u < end;
        let v0 = x_at(e) - sh;
        let v1 = select(V(0.0), x_at(select(e, e + stride, ok1)) - sh, ok1);
        let v2 = select(V(0.0), x_at(select(e, e + 2u * stride, ok2)) - sh, ok2);
        let v3 = select(V(0.0), x_at(select(e, e + 3u * stride, ok3)) - sh, ok3);
        acc = push4(acc, v0, v1, v2, v3, 1u + u32(ok1) + u32(ok2) + u32(ok3));
        e = e + 4u * stride;
    }
    partials[partial_index(pp * params.r + rr, tile)] = acc;
}

// CHANNEL_LANES with vector accesses (VW = 4: channels-last, C a multiple of 4, mean and
// variance without a mask): each lane takes four consecutive channels as one access, so a token
// row is read with a quarter of the loads, and keeps per-channel moments in vector registers
// (one count: every channel of a token is present). The shift is per channel, as above.
fn channel_vec_lanes(g: u32, lid: u32) {
    let cv = params.r / VW;
    let chunks = (cv + WG - 1u) / WG;
    let chunk = g % chunks;
    let tile = (g / chunks) % params.tiles;
    let pp = g / chunks / params.tiles;
    let jv = chunk * WG + lid;
    if (pp >= params.p || jv >= cv) {
        return;
    }
    let start = tile * params.tile_len;
    let end = min(params.q, start + params.tile_len);
    let ch0 = jv * VW;
    var sh = V(0.0);
    if (SHIFTED) {
        let first = pp * params.q * cv + jv;
        if (first < params.x_base) {
            for (var k = 0u; k < VW; k++) {
                sh = set_lane(sh, k, partials[shift_index(pp, ch0 + k)].mean);
            }
        } else if (params.shift_cg <= 1u) {
            sh = x_at(first);
            if (tile == 0u) {
                for (var k = 0u; k < VW; k++) {
                    partials[shift_index(pp, ch0 + k)] = Moments(0.0, get_lane(sh, k), 0.0);
                }
            }
        } else {
            // Grouped channels share the first token's value of their group's first channel;
            // that channel's lane stores it (that token's row is in every window binding it).
            for (var k = 0u; k < VW; k++) {
                let c = ch0 + k;
                let first = c - c % params.shift_cg;
                let e = pp * params.q * params.r + first;
                let v = get_lane(x_at(e / VW), e % VW);
                sh = set_lane(sh, k, v);
                if (tile == 0u && c == first) {
                    partials[shift_index(pp, c)] = Moments(0.0, v, 0.0);
                }
            }
        }
    }
    var n = 0.0;
    var mean = V(0.0);
    var m2 = V(0.0);
    var e = (pp * params.q + start) * cv + jv;
    for (var j = start; j < end; j = j + 4u) {
        let ok1 = j + 1u < end;
        let ok2 = j + 2u < end;
        let ok3 = j + 3u < end;
        let v0 = x_at(e) - sh;
        let v1 = select(V(0.0), x_at(select(e, e + cv, ok1)) - sh, ok1);
        let v2 = select(V(0.0), x_at(select(e, e + 2u * cv, ok2)) - sh, ok2);
        let v3 = select(V(0.0), x_at(select(e, e + 3u * cv, ok3)) - sh, ok3);
        // The chunk's own mean and centred M2 per channel, then one Chan merge.
        let k = 1.0 + f32(ok1) + f32(ok2) + f32(ok3);
        let cm = (v0 + v1 + v2 + v3) / k;
        let d0 = v0 - cm;
        let d1 = select(V(0.0), v1 - cm, ok1);
        let d2 = select(V(0.0), v2 - cm, ok2);
        let d3 = select(V(0.0), v3 - cm, ok3);
        let nn = n + k;
        let delta = cm - mean;
        mean = mean + delta * (k / nn);
        m2 = m2 + (d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3) + delta * delta * (n * k / nn);
        n = nn;
        e = e + 4u * cv;
    }
    for (var k = 0u; k < VW; k++) {
        let m = Moments(n, get_lane(mean, k), get_lane(m2, k));
        partials[partial_index(pp * params.r + ch0 + k, tile)] = m;
    }
}

@group(0) @binding(0) var<uniform> params: ChannelParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read_write> partials: array<Moments>;
// HAS_MASK (token views [1, T*B, C, 1] only, REDUCE 1): mask[b * T + t] = 1 marks padding, which
// is left out of the sums and the count. Access q of the slot is token (t, b) = (q / B, q % B).
@group(0) @binding(3) var<storage, read> mask: array<f32>;

fn load(pp: u32, rr: u32, j: u32) -> V {
    let q = j / params.s_v;
    let s = j - q * params.s_v;
    return x_at(((pp * params.q + q) * params.r + rr) * params.s_v + s);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // This dispatch's workgroups are the whole call's from group_base on (x bound in windows).
    let g = linear_group(wid, nwg) + params.group_base;
    if (g >= params.group_end) {
        return;
    }
    if (CHANNEL_LANES && VW == 4u) {
        channel_vec_lanes(g, lid);
        return;
    }
    if (CHANNEL_LANES) {
        channel_lanes(g, lid);
        return;
    }
    // Workgroup g is (slot, tile) when Q = 1 (a slot's run is contiguous), else (pp, tile, rr),
    // slots fastest: either way a range of workgroups reads one contiguous range of x.
    let slots = params.p * params.r;
    let live = g < slots * params.tiles;
    var slot = g / params.tiles;
    var tile = g % params.tiles;
    if (params.q > 1u) {
        let rr_g = g % params.r;
        let pt = g / params.r;
        tile = pt % params.tiles;
        slot = (pt / params.tiles) * params.r + rr_g;
    }
    let pp = slot / params.r;
    let rr = slot % params.r;
    let len = params.q * params.s_v;
    let start = tile * params.tile_len;
    let end = select(0u, min(len, start + params.tile_len), live);

    var acc = Moments(0.0, 0.0, 0.0);
    if (HAS_MASK) {
        let tokens_t = params.q / params.mask_b;
        for (var j = start + lid; j < end; j = j + WG) {
            let keep = 1.0 - mask[(j % params.mask_b) * tokens_t + j / params.mask_b];
            let v = load(pp, rr, j);
            acc.n = acc.n + keep * f32(VW);
            acc.m2 = acc.m2 + keep * hsum(v * v);
        }
    }
    // Chunks of four accesses: an exact two-pass mean and M2 over the chunk in registers, then
    // one Chan merge, so the divisions are per chunk rather than per element. Access j is
    // (q, s) = (j / S_V, j % S_V); the lane steps (q, s) by WG accesses with a carry instead of
    // dividing per access (integer division per element dominated this loop on CPU adapters).
    let sv = params.s_v;
    let row = params.r * sv;
    let base0 = (pp * params.q * params.r + rr) * sv;
    // Workgroups past the last slot read nothing (select would evaluate the load anyway).
    var shift = 0.0;
    if (live) {
        shift = slot_shift(pp, rr);
    }
    let sh = V(shift);
    if (live && lid == 0u) {
        store_shift(pp, rr, tile, shift);
    }
    // Lane range and stride: every WG-th access from start + lid, or one contiguous block.
    var j0 = start + lid;
    var j_end = select(end, start, HAS_MASK);
    var step = WG;
    if (LANE_BLOCK) {
        let per_lane = (params.tile_len + WG - 1u) / WG;
        j0 = start + lid * per_lane;
        j_end = min(j_end, j0 + per_lane);
        step = 1u;
    }
    let dq = step / sv;
    let ds = step - dq * sv;
    var q = j0 / sv;
    var s = j0 - q * sv;
    for (var j = j0; j < j_end; j = j + 4u * step) {
        let ok1 = j + step < j_end;
        let ok2 = j + 2u * step < j_end;
        let ok3 = j + 3u * step < j_end;
        var e: array<u32, 4>;
        for (var k = 0u; k < 4u; k++) {
            e[k] = base0 + q * row + s;
            q += dq;
            s += ds;
            if s >= sv {
                s -= sv;
                q += 1u;
            }
        }
        // Past the range's end, read a valid element and drop it.
        let v0 = x_at(e[0]) - sh;
        let v1 = select(V(0.0), x_at(select(e[0], e[1], ok1)) - sh, ok1);
        let v2 = select(V(0.0), x_at(select(e[0], e[2], ok2)) - sh, ok2);
        let v3 = select(V(0.0), x_at(select(e[0], e[3], ok3)) - sh, ok3);
        acc = push4(acc, v0, v1, v2, v3, 1u + u32(ok1) + u32(ok2) + u32(ok3));
    }
    let merged = workgroup_merge(acc, lid);
    if (live && lid == 0u) {
        partials[partial_index(slot, tile)] = merged;
    }
}
