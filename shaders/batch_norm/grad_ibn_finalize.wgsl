// IBN's gradient term (docs/methods.md A8) on the InstanceNorm view, finalize part: the first
// params.term_a channels are InstanceNorm's (each (sample, channel) slot its own sums); the
// others are BatchNorm's: in training every sample's slot of the channel takes the channel's
// sums over the batch (its statistics are the batch's), at inference none (the running
// statistics are constants: dx = rstd g).

fn term_slot_sums(pp: u32, rr: u32) -> vec4<f32> {
    if (rr < params.term_a) {
        return slot_sums(pp, rr);
    }
    if (params.term_b == 0u) {
        return vec4<f32>(0.0, 0.0, 0.0, 1.0);
    }
    var acc = vec4<f32>(0.0);
    for (var q = 0u; q < params.p; q++) {
        acc += slot_sums(q, rr);
    }
    return acc;
}

fn term_grad(item: u32) {}
