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
