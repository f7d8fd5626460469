// The midpoint kernel's scratch layout, shared by the forward (`midpoint.wgsl`) and the
// backward that reads it after the forward's stages (`midpoint_grad.wgsl`); `crate::norm`'s
// `PS` and `N_SCALARS` are its Rust twins. [m (d) | beta (d) | scalars (N_SCALARS) | per point
// (PS each) | coordinate tile sums (ctiles d) | tile sums of lambda - 1 (tiles) | tile sums of
// d^2 (tiles)].

// Per point: s (x = s v), |v|^2, <v, b>, lambda*s then <v, m>, |(-m) (+) x|^2.
const PS: u32 = 5u;
// Scalars after m and beta.
const S_MM: u32 = 0u;
const S_BB: u32 = 1u;
const S_MB: u32 = 2u;
const S_LAM_M: u32 = 3u;
const S_LAM_B: u32 = 4u;
const S_GAIN: u32 = 5u;
const S_VAR: u32 = 6u;
const S_SB: u32 = 7u;
const N_SCALARS: u32 = 16u;

fn off_beta() -> u32 {
    return params.d;
}
fn off_scalars() -> u32 {
    return 2u * params.d;
}
fn off_points() -> u32 {
    return 2u * params.d + N_SCALARS;
}
fn off_zsum() -> u32 {
    return off_points() + PS * params.p;
}
fn off_den() -> u32 {
    return off_zsum() + params.ctiles * params.d;
}
fn off_dist() -> u32 {
    return off_den() + params.tiles;
}

// Points per scratch group (4 when the forward's per-point stages run point blocks, else 1).
override PG: u32 = 1u;

// Scratch index of field `f` of point `p`: field f of point p sits at group p / PG, slot
// f * PG + p % PG, so a block of PG points reads each field as PG consecutive floats.
fn pidx(p: u32, f: u32) -> u32 {
    let g = p / PG;
    return off_points() + g * PG * PS + f * PG + (p - g * PG);
}
