// PowerNorm backward, phase 2, one invocation per channel: the tiles' sums in order, the dx
// coefficients (dxs = ca * dy + cb * xs), nu's update (read before: ĝ uses the old nu), dw, db.

@group(0) @binding(1) var<storage, read> saved: array<vec2<f32>>;
// (Unused: the layout keeps its slot.)
@group(0) @binding(2) var<storage, read> unused: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ema_gz: array<f32>;
@group(0) @binding(6) var<storage, read_write> coef: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(8) var<storage, read_write> dbias: array<f32>;

override HAS_DWEIGHT: bool = false;
override HAS_DBIAS: bool = false;

fn weight_at(ch: u32) -> f32 {
    if (HAS_WEIGHT) {
        return weight[ch];
    }
    return 1.0;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let ch = linear_group(wid, nwg) * WG + lid;
    if (ch >= params.c) {
        return;
    }
    var acc = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    for (var t = 0u; t < params.tiles; t++) {
        let i = 2u * (t * params.c + ch);
        acc += partials[i];
        acc2 += partials[i + 1u];
    }
    // A batch of padding only has psi2 = 0, as the forward.
    let n = acc2.y;
    let psi2 = select(0.0, acc2.x / n, n > 0.0);
    let rz = saved[ch].y;
    let nu = ema_gz[ch];
    let inv = 1.0 / sqrt(psi2 + params.eps);
    let a = params.one_minus_alpha;
    coef[ch] = vec2<f32>(weight_at(ch) * inv, -a * nu * rz * inv);
    if (n > 0.0) {
        // mean(ĝ z) = (sum g z - a nu sum z^2) / n over the unpadded tokens.
        ema_gz[ch] = nu + (acc.z - a * nu * acc.w) / n;
    }
    if (HAS_DWEIGHT) {
        dweight[ch] = acc.y;
    }
    if (HAS_DBIAS) {
        dbias[ch] = acc.x;
    }
}
