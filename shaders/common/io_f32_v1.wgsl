// I/O snippet: f32 storage, one element per access.
// Every kernel is composed as: io snippet + shared snippets + kernel body. The io snippet fixes
// the storage element type (`Elem`), the arithmetic type (`V`, always f32-based) and the vector
// width `VW`, so one kernel body serves f32/f16 storage and scalar/vec4 access.
alias Elem = f32;
alias V = f32;
const VW: u32 = 1u;
fn to_v(e: Elem) -> V { return e; }
fn from_v(v: V) -> Elem { return v; }
fn hsum(v: V) -> f32 { return v; }
fn set_lane(v: V, k: u32, val: f32) -> V { return val; }
fn get_lane(v: V, k: u32) -> f32 { return v; }
fn v_from4(v: vec4<f32>) -> V { return v.x; }
fn first_lanes(a: V, b: V, n: u32) -> V { return select(b, a, 0u < n); }
