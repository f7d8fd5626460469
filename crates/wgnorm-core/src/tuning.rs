//! Kernel choices measured on one adapter, which the runtime prefers to its built-in defaults.
//!
//! `cargo xtask bench --autotune --json FILE` times every kernel shape that can serve each bench
//! row and writes the fastest under `"autotune"`; an app ships that file and hands it to
//! [`crate::Context::set_tuning`] (or sets `WGNORM_TUNING=FILE` for contexts wgnorm creates).
//! A table applies only on the adapter it was measured on; an entry whose kernel cannot serve
//! a call (the row does not fit its cache, say) is passed over for the built-in choice.
//!
//! Row-norm entries are keyed by op (LayerNorm or RMSNorm), dtype and the row length rounded up
//! to a power of two: the lengths between two measured ones take the next one's choice. Entries
//! measured on fewer than [`SPLIT_MAX_ROWS`] rows (decode steps, where the split kernel
//! competes) serve only calls of few rows, keyed by the row count rounded up to a power of two
//! as well; the others serve the row length's kernel for every call.
//!
//! Batch-family entries (`batch_norm_train`, `batch_norm_infer`) carry the channel engine's lane
//! plan. They are keyed by the geometry of the channel view the shape makes (statistics slots,
//! the contiguous run, elements per slot, each rounded up to a power of two), whether the call
//! computes batch statistics, and dtype: any op whose view has that geometry (a GroupNorm or
//! InstanceNorm view too) takes the measured plan.

use crate::chnorm::{ChannelView, LanePlan, Layout};
use crate::rownorm::{RowKernel, RowMode, SPLIT_MAX_ROWS};
use crate::{DType, Error, Result};

/// One measured row-norm choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowEntry {
    /// LayerNorm or RMSNorm.
    pub mode: RowMode,
    /// Storage type of x and y.
    pub dtype: DType,
    /// The row length (elements) it was measured at.
    pub n: u64,
    /// The row count it was measured at: under [`SPLIT_MAX_ROWS`] the entry serves calls of
    /// about that many rows only (see the module docs).
    pub rows: u64,
    /// The fastest kernel.
    pub kernel: RowKernel,
}

impl RowEntry {
    /// Entries that replace each other: same op, dtype, length bucket and row-count bucket.
    fn key(&self) -> (RowMode, DType, u64, u64) {
        (
            self.mode,
            self.dtype,
            bucket(self.n),
            rows_bucket(self.rows),
        )
    }
}

/// The row-count bucket of an entry or call: the next power of two under [`SPLIT_MAX_ROWS`],
/// 0 (every call) from there on.
fn rows_bucket(rows: u64) -> u64 {
    if rows < SPLIT_MAX_ROWS {
        bucket(rows)
    } else {
        0
    }
}

/// One measured lane plan of the channel engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneEntry {
    /// Measured on calls that compute batch statistics (training), else on calls that only
    /// apply given or running statistics (inference).
    pub moments: bool,
    /// Storage type of x and y.
    pub dtype: DType,
    /// The channel view it was measured on.
    pub view: ChannelView,
    /// The fastest plan.
    pub plan: LanePlan,
}

impl LaneEntry {
    fn key(&self) -> (bool, DType, [u64; 3]) {
        (self.moments, self.dtype, view_buckets(&self.view))
    }
}

/// Statistics slots per sample, contiguous run and elements per slot of `v`, each rounded up
/// to a power of two: what the lane mapping's costs depend on. Not the number of samples: a
/// lane plan sets the moments' summation order, so one entry serves a sample whatever the
/// batch it comes in (batch invariance), at the price of tuning for the sample, not the batch.
fn view_buckets(v: &ChannelView) -> [u64; 3] {
    [
        bucket(v.r as u64),
        bucket(v.s as u64),
        bucket((v.q * v.s) as u64),
    ]
}

/// A table of measured kernel choices for one adapter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tuning {
    adapter: String,
    rows: Vec<RowEntry>,
    lanes: Vec<LaneEntry>,
}

impl Tuning {
    /// An empty table for the adapter named `adapter` (`wgpu::AdapterInfo::name`).
    pub fn new(adapter: impl Into<String>) -> Tuning {
        Tuning {
            adapter: adapter.into(),
            rows: Vec::new(),
            lanes: Vec::new(),
        }
    }

    /// The adapter the table was measured on.
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// The row-norm entries.
    pub fn rows(&self) -> &[RowEntry] {
        &self.rows
    }

    /// The lane-plan entries.
    pub fn lane_entries(&self) -> &[LaneEntry] {
        &self.lanes
    }

    /// Adds `e`, replacing an entry of the same key (see the module docs).
    pub fn insert_lanes(&mut self, e: LaneEntry) {
        self.lanes.retain(|l| l.key() != e.key());
        self.lanes.push(e);
    }

    /// The measured lane plan for a call on `view` (`moments`: it computes batch statistics).
    pub fn lane_plan(&self, moments: bool, dtype: DType, view: &ChannelView) -> Option<LanePlan> {
        let key = (moments, dtype, view_buckets(view));
        self.lanes.iter().find(|l| l.key() == key).map(|l| l.plan)
    }

    /// Adds `e`, replacing an entry of the same op, dtype, length bucket and row-count bucket.
    pub fn insert_row(&mut self, e: RowEntry) {
        self.rows.retain(|r| r.key() != e.key());
        self.rows.push(e);
    }

    /// The measured kernel for rows of `n` elements, if the table has one for their bucket.
    pub fn row_kernel(&self, mode: RowMode, dtype: DType, n: u64) -> Option<RowKernel> {
        self.lookup(mode, dtype, n, 0)
    }

    /// The measured kernel for a call of `rows` (fewer than [`SPLIT_MAX_ROWS`]) rows of `n`
    /// elements: an entry measured on a row count of the same power-of-two bucket.
    pub fn few_rows_kernel(
        &self,
        mode: RowMode,
        dtype: DType,
        rows: u64,
        n: u64,
    ) -> Option<RowKernel> {
        (rows < SPLIT_MAX_ROWS)
            .then(|| self.lookup(mode, dtype, n, rows_bucket(rows)))
            .flatten()
    }

    fn lookup(&self, mode: RowMode, dtype: DType, n: u64, rows_bucket: u64) -> Option<RowKernel> {
        let key = (mode, dtype, bucket(n), rows_bucket);
        self.rows.iter().find(|r| r.key() == key).map(|r| r.kernel)
    }

    /// Reads the document `cargo xtask bench --autotune --json` writes: `adapter.name` and the
    /// `autotune` array (`op`, `shape`, `dtype`, `best`). Entries of ops the runtime does not
    /// tune yet are skipped; a malformed entry is an error naming it.
    ///
    /// # Example
    /// ```
    /// use wgnorm_core::rownorm::{RowKernel, RowMode};
    /// use wgnorm_core::tuning::Tuning;
    /// use wgnorm_core::DType;
    ///
    /// // What `cargo xtask bench --autotune --json FILE` writes (abridged).
    /// let table = Tuning::from_json(r#"{
    ///     "adapter": {"name": "NVIDIA H200"},
    ///     "autotune": [{"op": "rms_norm", "shape": [1024, 4096], "dtype": "f16",
    ///                   "best": "team32x8-uncached", "best_ms": 0.05, "default": "workgroup256"}]
    /// }"#)?;
    /// assert_eq!(table.adapter(), "NVIDIA H200");
    /// // Rows of 2049..4096 elements share the entry (row lengths round up to a power of two).
    /// let k = table.row_kernel(RowMode::RmsNorm, DType::F16, 3000);
    /// assert_eq!(k, Some(RowKernel::Team { team: 32, rows_per_group: 8, cached: false }));
    /// // On a context of that adapter: ctx.set_tuning(table)? (another adapter's table is refused).
    /// # Ok::<(), wgnorm_core::Error>(())
    /// ```
    pub fn from_json(text: &str) -> Result<Tuning> {
        let bad = |what: String| Error::Tuning(what);
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let adapter = doc["adapter"]["name"]
            .as_str()
            .ok_or_else(|| bad("no adapter.name".into()))?;
        let entries = doc["autotune"]
            .as_array()
            .ok_or_else(|| bad("no \"autotune\" array".into()))?;
        let mut t = Tuning::new(adapter);
        for (i, e) in entries.iter().enumerate() {
            let op = e["op"]
                .as_str()
                .ok_or_else(|| bad(format!("autotune[{i}] has no op")))?;
            let dtype = match e["dtype"].as_str() {
                Some("f32") => DType::F32,
                Some("f16") => DType::F16,
                other => return Err(bad(format!("autotune[{i}]: dtype {other:?}"))),
            };
            if let Some(moments) = match op {
                "batch_norm_train" => Some(true),
                "batch_norm_infer" => Some(false),
                _ => None,
            } {
                t.insert_lanes(lane_entry(i, e, moments, dtype)?);
                continue;
            }
            let Some(mode) = RowMode::from_name(op) else {
                continue;
            };
            let [rows, n] =
                dims(e).ok_or_else(|| bad(format!("autotune[{i}]: shape is not [rows, n]")))?;
            let best = e["best"]
                .as_str()
                .ok_or_else(|| bad(format!("autotune[{i}] has no best kernel")))?;
            let kernel = best
                .parse()
                .map_err(|why| bad(format!("autotune[{i}]: {why}")))?;
            t.insert_row(RowEntry {
                mode,
                dtype,
                n,
                rows,
                kernel,
            });
        }
        Ok(t)
    }
}

/// An entry's `shape` when it has exactly `D` positive dims.
fn dims<const D: usize>(e: &serde_json::Value) -> Option<[u64; D]> {
    let dims: Option<Vec<u64>> = e["shape"]
        .as_array()?
        .iter()
        .map(|v| v.as_u64().filter(|&d| d > 0))
        .collect();
    dims?.try_into().ok()
}

/// A `batch_norm_train` / `batch_norm_infer` entry: `shape` is `[N, C, H, W]` whatever the
/// `layout` (`NCHW` or `NHWC`), `best` a lane plan's name.
fn lane_entry(i: usize, e: &serde_json::Value, moments: bool, dtype: DType) -> Result<LaneEntry> {
    let bad = |what: String| Error::Tuning(format!("autotune[{i}]: {what}"));
    let layout = match e["layout"].as_str() {
        Some("NCHW") => Layout::Nchw,
        Some("NHWC") => Layout::Nhwc,
        other => return Err(bad(format!("layout {other:?} (NCHW or NHWC)"))),
    };
    let Some([n, c, h, w]) = dims(e).map(|d| d.map(|d| d as usize)) else {
        return Err(bad("shape is not [N, C, H, W]".into()));
    };
    let shape = match layout {
        Layout::Nchw => [n, c, h, w],
        Layout::Nhwc => [n, h, w, c],
    };
    let view = ChannelView::batch_norm(&shape, layout).map_err(|e| bad(e.to_string()))?;
    let plan = e["best"]
        .as_str()
        .ok_or_else(|| bad("no best lane plan".into()))?
        .parse()
        .map_err(bad)?;
    Ok(LaneEntry {
        moments,
        dtype,
        view,
        plan,
    })
}

/// The row-length bucket of `n`: the next power of two.
fn bucket(n: u64) -> u64 {
    n.max(1).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
        "adapter": {"name": "Some GPU"},
        "autotune": [
            {"op": "layer_norm", "shape": [4096, 1024], "dtype": "f32", "layout": "row-major",
             "best": "team8x8", "best_ms": 1.0, "default": "regs8x8x8", "default_ms": 1.05},
            {"op": "rms_norm", "shape": [256, 16384], "dtype": "f16", "best": "workgroup256"},
            {"op": "rms_norm", "shape": [1, 16384], "dtype": "f16", "best": "split64x32"},
            {"op": "batch_norm_train", "shape": [8, 64, 28, 28], "dtype": "f32", "layout": "NHWC",
             "best": "blocks+slot-lanes+apply1"},
            {"op": "group_norm_silu", "shape": [1, 320, 32, 32], "dtype": "f32", "best": "x"}
        ]
    }"#;

    #[test]
    fn batch_entries_serve_views_of_their_geometry() {
        let t = Tuning::from_json(DOC).unwrap();
        assert_eq!(t.lane_entries().len(), 1);
        let plan = LanePlan {
            lane_blocks: Some(true),
            channel_lanes: Some(false),
            apply_block: Some(1),
            tile: None,
        };
        let view = |shape: &[usize]| ChannelView::batch_norm(shape, Layout::Nhwc).unwrap();
        // Measured at 8x28x28x64 NHWC, training; 7x28x28x60 rounds into the same buckets.
        assert_eq!(
            t.lane_plan(true, DType::F32, &view(&[7, 28, 28, 60])),
            Some(plan)
        );
        // Inference, f16, and twice the channels are other entries.
        assert_eq!(
            t.lane_plan(false, DType::F32, &view(&[8, 28, 28, 64])),
            None
        );
        assert_eq!(t.lane_plan(true, DType::F16, &view(&[8, 28, 28, 64])), None);
        assert_eq!(
            t.lane_plan(true, DType::F32, &view(&[8, 28, 28, 128])),
            None
        );
        // The same tensor channels-first is another geometry (a contiguous run of 784).
        let nchw = ChannelView::batch_norm(&[8, 64, 28, 28], Layout::Nchw).unwrap();
        assert_eq!(t.lane_plan(true, DType::F32, &nchw), None);
    }

    #[test]
    fn every_lane_plan_name_parses_back_and_unbuilt_blocks_are_refused() {
        for p in LanePlan::ALL_FORCED {
            assert_eq!(p.to_string().parse::<LanePlan>(), Ok(p), "{p}");
            for tile in [64, 1024, 16384] {
                let p = LanePlan {
                    tile: Some(tile),
                    ..p
                };
                assert_eq!(p.to_string().parse::<LanePlan>(), Ok(p), "{p}");
            }
        }
        for bad in [
            "blocks+slot-lanes+apply4",
            "blocks+slot-lanes",
            "strided+lanes+apply1",
            "strided+slot-lanes+apply1+tile1000",
            "strided+slot-lanes+apply1+tile32",
            "strided+slot-lanes+apply1+tile32768",
            "strided+slot-lanes+apply1+tile",
        ] {
            assert!(bad.parse::<LanePlan>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_the_bench_document_and_skips_ops_it_does_not_tune() {
        let t = Tuning::from_json(DOC).unwrap();
        assert_eq!(t.adapter(), "Some GPU");
        assert_eq!(t.rows().len(), 3);
        let team = RowKernel::Team {
            team: 8,
            rows_per_group: 8,
            cached: true,
        };
        // 1000 rounds up to the 1024 bucket; 1025 and RMSNorm do not share it.
        assert_eq!(
            t.row_kernel(RowMode::LayerNorm, DType::F32, 1000),
            Some(team)
        );
        assert_eq!(t.row_kernel(RowMode::LayerNorm, DType::F32, 1025), None);
        assert_eq!(t.row_kernel(RowMode::RmsNorm, DType::F32, 1024), None);
        assert_eq!(
            t.row_kernel(RowMode::RmsNorm, DType::F16, 16384),
            Some(RowKernel::Workgroup { wg: 256 })
        );
        // The decode entry serves one row only; 2 rows are another bucket, 64 the general one.
        let split = RowKernel::Split { wg: 64, chunks: 32 };
        let few = |rows| t.few_rows_kernel(RowMode::RmsNorm, DType::F16, rows, 16384);
        assert_eq!(few(1), Some(split));
        assert_eq!(few(2), None);
        assert_eq!(few(64), None);
    }

    #[test]
    fn a_malformed_entry_is_an_error_naming_it() {
        let doc = DOC.replace("team8x8", "team8by8");
        let e = Tuning::from_json(&doc).unwrap_err().to_string();
        assert!(e.contains("autotune[0]") && e.contains("team8by8"), "{e}");
        let doc = DOC.replace("slot-lanes+apply1", "slot-lanes+apply3");
        let e = Tuning::from_json(&doc).unwrap_err().to_string();
        assert!(e.contains("autotune[3]") && e.contains("apply3"), "{e}");
        assert!(Tuning::from_json("{}").is_err());
    }

    #[test]
    fn insert_replaces_the_entry_of_the_same_bucket() {
        let mut t = Tuning::new("a");
        for (n, rows, wg) in [(1000, 100, 64), (1024, 4096, 128), (1024, 3, 32)] {
            t.insert_row(RowEntry {
                mode: RowMode::RmsNorm,
                dtype: DType::F32,
                n,
                rows,
                kernel: RowKernel::Workgroup { wg },
            });
        }
        assert_eq!(
            t.rows().len(),
            2,
            "1000 and 1024 share a bucket, and 100 and 4096 rows: the later replaces; 3 rows do not"
        );
        assert_eq!(
            t.few_rows_kernel(RowMode::RmsNorm, DType::F32, 4, 1024),
            Some(RowKernel::Workgroup { wg: 32 })
        );
        assert_eq!(
            t.row_kernel(RowMode::RmsNorm, DType::F32, 600),
            Some(RowKernel::Workgroup { wg: 128 })
        );
    }
}
