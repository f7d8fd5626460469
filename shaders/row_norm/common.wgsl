// Row normalization (LayerNorm / RMSNorm): bindings and epilogue shared by both kernel shapes.
//
// Layout: `x` and `y` are row-major [rows, n]; one row is one reduced slice (every dim from
// `axis` to the last). `w` and `b` have n elements. `mean_out` / `rstd_out` hold one f32 per row.
// Indices into x/y/w/b count accesses of VW elements (see the io snippet).

// 0: LayerNorm (centred: mean and biased variance). 1: RMSNorm (quadratic mean, no centring).
override MODE: u32 = 0u;
override HAS_WEIGHT: bool = false;
override HAS_BIAS: bool = false;
// Fused residual add (add_layer_norm / add_rms_norm): the row normalized is x + residual, and
// WRITE_SUM also stores that sum (pre-LN transformers carry it to the next residual).
override HAS_RESIDUAL: bool = false;
override WRITE_SUM: bool = false;

struct RowParams {
    rows: u32,
    // Row length in accesses of VW elements.
    n_vec: u32,
    // Row length in elements.
    n: u32,
    // Bit 0: write the row means; bit 1: write the row rstd.
    write_stats: u32,
    eps: f32,
    // Added to the weight before it multiplies (Gemma's RMSNorm stores weight - 1).
    weight_offset: f32,
    // SELU epilogue constants (the activation snippet reads them).
    selu_alpha: f32,
    selu_lambda: f32,
    // This window's first row in mean_out / rstd_out (bound whole: a window of 4-byte
    // statistics would need a start aligned to 64 rows).
    stat_base: u32,
    // Split kernel only: chunks per row, and accesses per chunk (the last may be shorter).
    chunks: u32,
    chunk_vec: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: RowParams;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read> weight: array<Elem>;
@group(0) @binding(3) var<storage, read> bias: array<Elem>;
@group(0) @binding(4) var<storage, read_write> y: array<Elem>;
@group(0) @binding(5) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd_out: array<f32>;
@group(0) @binding(7) var<storage, read> residual: array<Elem>;
@group(0) @binding(8) var<storage, read_write> sum_out: array<Elem>;

// The value normalized at access i of x: x, or x + residual for the fused add.
fn load_x(i: u32) -> V {
    if (HAS_RESIDUAL) {
        return x_load(i) + residual_load(i);
    }
    return x_load(i);
}

// First read of access i: also stores the sum when asked (the one rounding to the I/O type).
fn load_x_first(i: u32) -> V {
    let v = load_x(i);
    if (WRITE_SUM) {
        sum_out_store(i, v);
    }
    return v;
}

// Workgroup index over a 2D grid: more rows than one dispatch dimension allows (65535) spill
// into y.
fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Folds access `v` into a lane's running row statistics: Welford moments (LayerNorm), or the
// sum of squares in m2 with mean 0 (RMSNorm), which the same Chan merge combines exactly.
fn row_moments_push(acc: Moments, v: V) -> Moments {
    if (MODE == 0u) {
        return moments_push(acc, v);
    }
    return Moments(acc.n + f32(VW), 0.0, acc.m2 + hsum(v * v));
}

// Split kernel: the accesses [start, end) of chunk `chunk` of a row (the last chunk may be
// shorter, trailing ones empty; empty too for a group past the last row).
fn chunk_range(chunk: u32, live: bool) -> vec2<u32> {
    let start = min(chunk * params.chunk_vec, params.n_vec);
    let end = select(start, min(start + params.chunk_vec, params.n_vec), live);
    return vec2<u32>(start, end);
}

// (v - mean) * rstd, then the optional affine. `i` indexes the row's accesses.
fn normalize_affine(v: V, i: u32, mean: f32, rstd: f32) -> V {
    var o = (v - mean) * rstd;
    if (HAS_WEIGHT) {
        o = o * (weight_load(i) + params.weight_offset);
    }
    if (HAS_BIAS) {
        o = o + bias_load(i);
    }
    return activate(o);
}

// Saved statistics: WRITE_STATS (a pipeline constant) says whether any are written, so calls
// without them pay nothing per row; which ones is a uniform (`params.write_stats`: bit 0 mean,
// bit 1 rstd), so the two outputs do not multiply the pipelines.
override WRITE_STATS: bool = false;

fn write_stats(row: u32, mean: f32, rstd: f32) {
    if (!WRITE_STATS) {
        return;
    }
    if ((params.write_stats & 1u) != 0u) {
        mean_out[params.stat_base + row] = mean;
    }
    if ((params.write_stats & 2u) != 0u) {
        rstd_out[params.stat_base + row] = rstd;
    }
}
