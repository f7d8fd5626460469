// RepBN's gradient term, dx part: y = BN(x) + alpha * x, so dx gains alpha * dy (alpha: the
// term input, one f32).

fn term_dx(x: f32, dy: f32, ch: u32) -> f32 {
    return term_input[0] * dy;
}

// (g is the engine's: TERM_G is off.)
fn term_g(x: f32, dy: f32, w: f32, ch: u32) -> f32 {
    return 0.0;
}
