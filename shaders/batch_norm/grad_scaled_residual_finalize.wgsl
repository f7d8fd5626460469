// RepBN's gradient term, finalize part (a BatchNorm view: slot = channel, one sample row p, no
// activation, so the partials' dz is dy): dalpha = sum(dy * x) = sum over channels of
// sum(dy * xhat') / rstd + (shift + delta) * sum(dy), written in dweight's place.

fn term_grad(item: u32) {
    var acc = 0.0;
    // No samples (p = 0): the sum over nothing.
    for (var ch = 0u; ch < channels() && params.p > 0u; ch++) {
        let st = slot_stats(ch);
        var a = 0.0;
        var b = 0.0;
        for (var t = 0u; t < params.tiles; t++) {
            let v = partials[ch * params.tiles + t];
            a += v.x;
            b += v.y;
        }
        acc += b / st.z + (st.x + st.y) * a;
    }
    dweight[0] = acc;
}

// (The engine's slot sums: TERM_SLOT_SUMS is off.)
fn term_slot_sums(pp: u32, rr: u32) -> vec4<f32> {
    return slot_sums(pp, rr);
}
