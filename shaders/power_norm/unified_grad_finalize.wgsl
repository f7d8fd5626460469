// Unified Normalization's backward (docs/methods.md B3), the official code's gradient
// compensation, one invocation per channel after PowerNorm's partials pass (no mask: all
// tokens) summed over its token tiles in order. With z = x / sqrt(sigma^2 + eps), g = dy w r
// (r the forward's saved ratio, 1 for an outlier step):
//   gz = mean over tokens of g z; buffer_gz[t mod M] = gz (an outlier step: the old ema_gz);
//   mean_gz = gz while t <= M, t < warmup or an outlier step, else the mean of buffer_gz;
//   ema_gz = (1 - momentum) ema_gz + momentum mean_gz;
//   dx = (g - K z) / sqrt(sigma^2 + eps), K = mean_gz for an outlier step, else the new ema_gz;
//   dweight = sum dy r z, dbias = sum dy.
// dx = ca dy + cb x: the coefficients go to PowerNorm's dx pass. A step without tokens leaves
// the state as it is.

struct UnifiedGradParams {
    c: u32,
    tiles: u32,
    tokens: u32,
    // The step t (>= 1) and the window M.
    step: u32,
    window: u32,
    warmup: u32,
    momentum: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: UnifiedGradParams;
// Per channel: (r, or -1 for an outlier step; 1 / sqrt(sigma^2 + eps)).
@group(0) @binding(1) var<storage, read> saved: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> buffer_gz: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
// [tiles][C][2] partial sums: (sum dy, sum dy z, sum dy w z, -), (-, -, -, -).
@group(0) @binding(4) var<storage, read> partials: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ema_gz: array<f32>;
@group(0) @binding(6) var<storage, read_write> coef: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(8) var<storage, read_write> dbias: array<f32>;

override WG: u32 = 64u;
override HAS_DWEIGHT: bool = false;
override HAS_DBIAS: bool = false;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = params.c;
    let ch = (wid.x + wid.y * nwg.x) * WG + lid;
    if ch >= c {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var t = 0u; t < params.tiles; t++) {
        acc += partials[2u * (t * c + ch)];
    }
    let s = saved[ch];
    let skip = s.x < 0.0;
    let r = select(s.x, 1.0, skip);
    let inv = s.y;
    if HAS_DWEIGHT {
        dweight[ch] = r * acc.y;
    }
    if HAS_DBIAS {
        dbias[ch] = acc.x;
    }
    if params.tokens == 0u {
        coef[ch] = vec2<f32>(0.0);
        return;
    }
    let gz = r * acc.z / f32(params.tokens);
    let m = params.window;
    let t = params.step;
    let old = ema_gz[ch];
    buffer_gz[(t % m) * c + ch] = select(gz, old, skip);
    var mean_gz = gz;
    if !(t <= m || t < params.warmup || skip) {
        var sum = 0.0;
        for (var k = 0u; k < m; k++) {
            sum += buffer_gz[k * c + ch];
        }
        mean_gz = sum / f32(m);
    }
    let ema = (1.0 - params.momentum) * old + params.momentum * mean_gz;
    ema_gz[ch] = ema;
    let k = select(ema, mean_gz, skip);
    coef[ch] = vec2<f32>(weight[ch] * r * inv, -k * inv * inv);
}
