// The gyromidpoint's backward through its weighted mean (docs/methods.md C1), shared by the
// midpoint's backward and the batch norm's; one workgroup, after the forward's WEIGHTS, COLSUM and
// MEAN stages in `scratch`, whose sums it reads: S = sum lambda_i x_i (the first coordinate tile
// after MEAN's pairwise sums) and the tile sums of lambda_i - 1 (T). With z = S / T,
// r = sqrt(1 - c|z|^2), h = z / (1 + r), m = project(h) and dm the incoming gradient of m:
// dh = dm through the projection of h, dz = dh / (1 + r) + c (z . dh) z / (r (1 + r)^2),
// dS = dz / T, dT = -(dz . z) / T (0 where T was clamped). The including kernel provides
// `dm_in(k)`, the storage of dS (`ds_load`, `ds_store`; each invocation rereads only what it
// wrote) and `dt_store`.
fn mean_grad(lid: u32) {
    let d = params.d;
    let c = params.c;
    var den_part = 0.0;
    for (var t = lid; t < params.tiles; t += WG) {
        den_part += scratch[off_den() + t];
    }
    let den_raw = wg_sum(lid, den_part);
    let den = max(den_raw, MIN_NORM);
    var zz_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        let z = scratch[off_zsum() + k] / den;
        zz_part += z * z;
    }
    let zz = wg_sum(lid, zz_part);
    let r = sqrt(max(1.0 - c * zz, 0.0));
    let phi = 1.0 / (1.0 + r);
    // Through m = project(h), h = phi z: |h|^2 = phi^2 |z|^2.
    let hh = phi * phi * zz;
    let hn = max(sqrt(hh), MIN_NORM);
    let pm = proj_scale(hn, params.max_norm);
    var hd_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        hd_part += phi * scratch[off_zsum() + k] / den * dm_in(k);
    }
    let hd = wg_sum(lid, hd_part) / (hn * hn);
    // dh = pm (dm - h (h . dm) / |h|^2) when projected (pm < 1), dm otherwise; kept in grad.
    var zdh_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        let z = scratch[off_zsum() + k] / den;
        var dh = dm_in(k);
        if pm < 1.0 {
            dh = pm * (dh - phi * z * hd);
        }
        ds_store(k, dh);
        zdh_part += z * dh;
    }
    let zdh = wg_sum(lid, zdh_part);
    let kz = c * phi * phi / max(r, MIN_NORM) * zdh;
    var dzz_part = 0.0;
    for (var k = lid; k < d; k += WG) {
        let z = scratch[off_zsum() + k] / den;
        let dz = phi * ds_load(k) + kz * z;
        ds_store(k, dz / den);
        dzz_part += dz * z;
    }
    let dzz = wg_sum(lid, dzz_part);
    if lid == 0u {
        dt_store(select(0.0, -dzz / den, den_raw > MIN_NORM));
    }
}
