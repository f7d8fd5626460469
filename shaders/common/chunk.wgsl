// Chunked moment accumulation for reductions with a REDUCE override (see channel_norm/moments).
// Folds `k` (1..4) accesses v0..v(k-1) into running moments (unused ones must be 0): the chunk's
// mean and centred M2 by two exact passes over registers, then one Chan merge. REDUCE (an
// override of the including kernel) 1 and 2 sum squares / absolute values into m2 instead.
fn push4(acc: Moments, v0: V, v1: V, v2: V, v3: V, k: u32) -> Moments {
    let cnt = f32(k * VW);
    if (REDUCE == 1u) {
        return Moments(acc.n + cnt, 0.0, acc.m2 + hsum(v0 * v0 + v1 * v1 + v2 * v2 + v3 * v3));
    }
    if (REDUCE == 2u) {
        return Moments(acc.n + cnt, 0.0, acc.m2 + hsum(abs(v0) + abs(v1) + abs(v2) + abs(v3)));
    }
    let m = hsum(v0 + v1 + v2 + v3) / cnt;
    let d0 = v0 - m;
    let d1 = select(V(0.0), v1 - m, k > 1u);
    let d2 = select(V(0.0), v2 - m, k > 2u);
    let d3 = select(V(0.0), v3 - m, k > 3u);
    return moments_merge(acc, Moments(cnt, m, hsum(d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3)));
}
