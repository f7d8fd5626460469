// Forward-mode derivatives in eight directions at once: a value and its partial derivatives with
// respect to eight scalar inputs (two vec4s). The batch norm's backward runs each point's ball
// algebra, a function of eight dot products, in these to get all eight partials in one pass.
struct Du {
    v: f32,
    a: vec4<f32>,
    b: vec4<f32>,
}

fn du_c(v: f32) -> Du {
    return Du(v, vec4<f32>(0.0), vec4<f32>(0.0));
}
// Input `i` (0..8) with value v.
fn du_var(v: f32, i: u32) -> Du {
    let e = vec4<u32>(0u, 1u, 2u, 3u);
    let one = vec4<f32>(1.0);
    let zero = vec4<f32>(0.0);
    return Du(v, select(zero, one, e == vec4<u32>(i)), select(zero, one, e + 4u == vec4<u32>(i)));
}
fn du_add(x: Du, y: Du) -> Du {
    return Du(x.v + y.v, x.a + y.a, x.b + y.b);
}
fn du_sub(x: Du, y: Du) -> Du {
    return Du(x.v - y.v, x.a - y.a, x.b - y.b);
}
fn du_mul(x: Du, y: Du) -> Du {
    return Du(x.v * y.v, x.a * y.v + y.a * x.v, x.b * y.v + y.b * x.v);
}
fn du_div(x: Du, y: Du) -> Du {
    let q = x.v / y.v;
    return Du(q, (x.a - q * y.a) / y.v, (x.b - q * y.b) / y.v);
}
// k x and x + k for a constant k.
fn du_k(x: Du, k: f32) -> Du {
    return Du(x.v * k, x.a * k, x.b * k);
}
fn du_addk(x: Du, k: f32) -> Du {
    return Du(x.v + k, x.a, x.b);
}
// max(x, lo): the constant below it, as the forward clamps.
fn du_max(x: Du, lo: f32) -> Du {
    if x.v < lo {
        return du_c(lo);
    }
    return x;
}
// f(x) from f's value and derivative at x.v.
fn du_chain(x: Du, f: f32, df: f32) -> Du {
    return Du(f, x.a * df, x.b * df);
}
fn du_sqrt(x: Du) -> Du {
    let r = sqrt(x.v);
    return du_chain(x, r, 0.5 / r);
}
