// PowerNorm backward, phase 1: lane = channel, workgroup = (channel chunk, token tile); each lane
// walks its tile's tokens (consecutive lanes read consecutive channels of a token) and keeps
// (sum dy, sum dy z, sum over unpadded tokens of g z, of z^2) and (sum over unpadded tokens of
// xs^2, their count): psi2 is this batch's quadratic mean over them. Fixed order: reproducible.

@group(0) @binding(1) var<storage, read> xs: array<Elem>;
@group(0) @binding(2) var<storage, read> dy: array<Elem>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read> saved: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
// [tiles][C][2] partial sums.
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;

fn weight_at(ch: u32) -> f32 {
    if (HAS_WEIGHT) {
        return weight[ch];
    }
    return 1.0;
}

fn kept(tok: u32) -> f32 {
    if (HAS_MASK) {
        return 1.0 - mask[(tok % params.b) * params.t + tok / params.b];
    }
    return 1.0;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = linear_group(wid, nwg) + params.group_base;
    let chunks = (params.c + WG - 1u) / WG;
    let tile = g / chunks;
    let ch = (g % chunks) * WG + lid;
    if (tile >= params.tiles || ch >= params.c || g >= params.end) {
        return;
    }
    let rz = saved[ch].y;
    let w = weight_at(ch);
    let start = tile * params.tile_len;
    let end = min(params.tokens, start + params.tile_len);
    var acc = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    for (var tok = start; tok < end; tok++) {
        let e = tok * params.c + ch - params.x_base;
        let d = dy_load(e);
        let v = xs_load(e);
        let z = v * rz;
        let k = kept(tok);
        acc += vec4<f32>(d, d * z, k * d * w * z, k * z * z);
        acc2 += vec4<f32>(k * v * v, k, 0.0, 0.0);
    }
    let i = 2u * (tile * params.c + ch);
    partials[i] = acc;
    partials[i + 1u] = acc2;
}
