// I/O snippet: f32 storage, four consecutive elements per access (16-byte loads/stores).
// Used when the reduced length is a multiple of 4 and every binding offset is 16-byte aligned.
alias Elem = vec4<f32>;
alias V = vec4<f32>;
const VW: u32 = 4u;
fn to_v(e: Elem) -> V { return e; }
fn from_v(v: V) -> Elem { return v; }
