// RepBN's gradient term, dx part: y = BN(x) + alpha * x, so dx gains alpha * dy (alpha: the
// term input, one f32).

fn term_dx(x: f32, dy: f32, ch: u32) -> f32 {
    return term_input[0] * dy;
}
