// Sum over a team of TEAM lanes (TEAM: an override of the including kernel) inside one
// subgroup: subgroupAdd when the team is the whole subgroup, a butterfly of shuffles otherwise.

fn team_sum(v: f32, sg_size: u32) -> f32 {
    if (TEAM == sg_size) {
        return subgroupAdd(v);
    }
    var s = v;
    for (var o = TEAM / 2u; o > 0u; o = o >> 1u) {
        s = s + subgroupShuffleXor(s, o);
    }
    return s;
}

// Moments merged over a team (Chan's merge along a butterfly), then lane `first`'s result for
// every lane: merge order differs per lane, and all must normalize with the same statistics.
fn team_moments(m: Moments, first: u32) -> Moments {
    var r = m;
    for (var o = TEAM / 2u; o > 0u; o = o >> 1u) {
        let other = Moments(
            subgroupShuffleXor(r.n, o),
            subgroupShuffleXor(r.mean, o),
            subgroupShuffleXor(r.m2, o),
        );
        r = moments_merge(r, other);
    }
    return Moments(
        subgroupShuffle(r.n, first),
        subgroupShuffle(r.mean, first),
        subgroupShuffle(r.m2, first),
    );
}
