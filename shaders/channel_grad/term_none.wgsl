// No gradient term (`chgrad::GradTerm::NONE`): the engine's own backward. Every hook a body may
// call, as the identity (the bodies call them only when the term's overrides say so).

fn term_partial(x: f32, dy: f32, st: vec4<f32>, w: f32, ch: u32) -> vec4<f32> {
    return vec4<f32>(0.0);
}

fn term_g(x: f32, dy: f32, w: f32, ch: u32) -> f32 {
    return 0.0;
}

fn term_dx(x: f32, dy: f32, ch: u32) -> f32 {
    return 0.0;
}

fn term_grad(item: u32) {}

fn term_slot_sums(pp: u32, rr: u32) -> vec4<f32> {
    return vec4<f32>(0.0);
}
