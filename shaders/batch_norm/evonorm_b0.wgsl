// EvoNorm-B0 mixing (docs/methods.md): var_B per channel merged over n (biased; training) or
// running_var (run_a; inference), var_I per (n, c); training updates running_var with the
// unbiased (timm) or biased (TF) var_B. Writes [sqrt(var_B + eps)][sqrt(var_I + eps)][weight]
// [bias][v] (v = aux) for the max-denominator epilogue y = x / max(a, v x + b) * weight + bias.

struct EvoB0Params {
    n: u32,
    c: u32,
    eps: f32,
    momentum: f32,
}

@group(0) @binding(0) var<uniform> params: EvoB0Params;

override WG: u32 = 64u;
override TRAINING: bool = false;
override UNBIASED_RUNNING: bool = true;

fn evo_b0(ch: u32) {
    var var_b = run_a[ch];
    if TRAINING {
        let acc = batch_moments(ch);
        var_b = acc.m2 / acc.n;
        let m = params.momentum;
        run_a[ch] = (1.0 - m) * run_a[ch] + m * running_variance(acc, UNBIASED_RUNNING);
    }
    let a = sqrt(var_b + params.eps);
    for (var n = 0u; n < params.n; n++) {
        let mi = inst(n, ch);
        set_coef(5u, n, 0u, ch, a);
        set_coef(5u, n, 1u, ch, sqrt(mi.m2 / mi.n + params.eps));
        set_coef(5u, n, 2u, ch, weight[ch]);
        set_coef(5u, n, 3u, ch, bias[ch]);
        set_coef(5u, n, 4u, ch, aux[ch]);
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let ch = mix_channel(wid, nwg, lid);
    if ch < params.c {
        evo_b0(ch);
    }
}
