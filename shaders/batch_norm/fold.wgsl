// Folds an inference BatchNorm into the preceding linear / convolution layer:
//   s[o] = gamma[o] / sqrt(running_var[o] + eps)
//   W'[o, k] = W[o, k] * s[o]          b'[o] = (b[o] - running_mean[o]) * s[o] + beta[o]
// W is row-major [O, K] (K = product of the remaining dims), f32. One invocation per element of
// W; invocation e < O also writes b'[e].

override WG: u32 = 256u;
override HAS_BIAS: bool = false;
override HAS_GAMMA: bool = false;
override HAS_BETA: bool = false;

struct FoldParams {
    o: u32,
    k: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: FoldParams;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read> running_mean: array<f32>;
@group(0) @binding(6) var<storage, read> running_var: array<f32>;
@group(0) @binding(7) var<storage, read_write> w_out: array<f32>;
@group(0) @binding(8) var<storage, read_write> b_out: array<f32>;

fn scale(o: u32) -> f32 {
    var g = 1.0;
    if (HAS_GAMMA) {
        g = gamma[o];
    }
    return g * inverseSqrt(running_var[o] + params.eps);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    if (e < params.o) {
        var bias = 0.0;
        if (HAS_BIAS) {
            bias = b[e];
        }
        var shift = 0.0;
        if (HAS_BETA) {
            shift = beta[e];
        }
        b_out[e] = (bias - running_mean[e]) * scale(e) + shift;
    }
    if (e < params.o * params.k) {
        w_out[e] = w[e] * scale(e / params.k);
    }
}
