// EvoNorm-S0's backward, finalize part: dv per channel = w * sum over samples and tiles of the
// partials' .w (dy rstd x^2 s (1 - s)), in a fixed order; written in dweight's place.

fn term_grad(item: u32) {
    let c = channels();
    var acc = 0.0;
    for (var pp = 0u; pp < params.p; pp++) {
        for (var t = 0u; t < params.tiles; t++) {
            acc += partials[(pp * c + item) * params.tiles + t].w;
        }
    }
    dweight[item] = acc * weight_at(item);
}

// (The engine's slot sums: TERM_SLOT_SUMS is off.)
fn term_slot_sums(pp: u32, rr: u32) -> vec4<f32> {
    return slot_sums(pp, rr);
}
