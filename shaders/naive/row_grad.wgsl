// Naive row-norm backward, the benchmark baseline: one invocation per row and three serial passes
// over it (the statistics, the two reductions, dx): correct, stable, uncoalesced across lanes.
// Bindings as row_grad/dx.wgsl.

override WG: u32 = 64u;
override HAS_WEIGHT: bool = false;

@group(0) @binding(0) var<uniform> params: RowGradParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> residual: array<Elem>;
@group(0) @binding(3) var<storage, read> weight: array<Elem>;
@group(0) @binding(4) var<storage, read> dy: array<Elem>;
@group(0) @binding(5) var<storage, read> dsum: array<Elem>;
@group(0) @binding(6) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(7) var<storage, read_write> stats: array<vec4<f32>>;
// The dx kernel's bias (a fused activation's argument): in the shared layout, unused here.
@group(0) @binding(8) var<storage, read> bias: array<Elem>;

fn load_g(e: u32, i: u32) -> V {
    if (HAS_WEIGHT) {
        return dy_load(e) * (weight_load(i) + params.weight_offset);
    }
    return dy_load(e);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_group(wid, nwg) * WG + lid;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.n_vec;
    let nf = f32(params.n);
    var mean = 0.0;
    var sg = 0.0;
    for (var i = 0u; i < params.n_vec; i++) {
        mean += hsum(x_load(base + i));
        sg += hsum(load_g(base + i, i));
    }
    mean = select(0.0, mean / nf, MODE == 0u);
    var m2 = 0.0;
    var sgd = 0.0;
    for (var i = 0u; i < params.n_vec; i++) {
        let d = x_load(base + i) - V(mean);
        m2 += hsum(d * d);
        sgd += hsum(load_g(base + i, i) * d);
    }
    let rstd = 1.0 / sqrt(m2 / nf + params.eps);
    let mean_g = select(0.0, sg / nf, MODE == 0u);
    let mean_gx = rstd * sgd / nf;
    for (var i = 0u; i < params.n_vec; i++) {
        let xhat = (x_load(base + i) - V(mean)) * rstd;
        dx_store(base + i, rstd * (load_g(base + i, i) - V(mean_g) - xhat * mean_gx));
    }
    stats[row] = vec4<f32>(mean, 0.0, rstd, 0.0);
}
