// AlphaDropout (docs/methods.md D2, Klambauer et al. 2017): keeps SELU's mean and variance.
// x' = x where kept, alpha' = -lambda*alpha where dropped; y = a*x' + b. Element i is kept when
// hash(i, seed) < keep_threshold (q * 2^32): the mask is a pure function of (seed, index), so a
// call is reproducible and needs no RNG state. keep_all: identity (inference).

override WG: u32 = 256u;
// The backward: x holds dy and y receives dx = a * dy where kept, 0 where dropped (dy at
// inference): the same mask from the same (seed, index).
override GRAD: bool = false;

struct DropParams {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    keep_threshold: u32,
    a: f32,
    b: f32,
    alpha_p: f32,
    keep_all: u32,
}

@group(0) @binding(0) var<uniform> params: DropParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read_write> y: array<Elem>;

// PCG output permutation of a linear step (Jarzynski & Olano 2020), applied twice with the seed
// words mixed in between.
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn hash(i: u32) -> u32 {
    return pcg(pcg(i ^ params.seed_lo) ^ params.seed_hi);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if i >= params.n {
        return;
    }
    let v = x_load(i);
    if params.keep_all != 0u {
        y_store(i, v);
        return;
    }
    let kept = hash(i) < params.keep_threshold;
    if GRAD {
        y_store(i, select(0.0, params.a * v, kept));
        return;
    }
    y_store(i, params.a * select(params.alpha_p, v, kept) + params.b);
}
