// No gradient term (`chgrad::GradTerm::NONE`): the engine's own backward.

fn term_dx(x: f32, dy: f32, ch: u32) -> f32 {
    return 0.0;
}

fn term_grad() {}
