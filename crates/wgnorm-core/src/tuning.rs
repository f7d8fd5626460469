//! Kernel choices measured on one adapter, which the runtime prefers to its built-in defaults.
//!
//! `cargo xtask bench --autotune --json FILE` times every kernel shape that can serve each bench
//! row and writes the fastest under `"autotune"`; an app ships that file and hands it to
//! [`crate::Context::set_tuning`] (or sets `WGNORM_TUNING=FILE` for contexts wgnorm creates).
//! A table applies only on the adapter it was measured on; an entry whose kernel cannot serve
//! a call (the row does not fit its cache, say) is passed over for the built-in choice.
//!
//! Row-norm entries are keyed by op (LayerNorm or RMSNorm), dtype and the row length rounded up
//! to a power of two: the lengths between two measured ones take the next one's choice.

use crate::rownorm::{RowKernel, RowMode};
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
    /// The fastest kernel.
    pub kernel: RowKernel,
}

/// A table of measured kernel choices for one adapter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tuning {
    adapter: String,
    rows: Vec<RowEntry>,
}

impl Tuning {
    /// An empty table for the adapter named `adapter` (`wgpu::AdapterInfo::name`).
    pub fn new(adapter: impl Into<String>) -> Tuning {
        Tuning {
            adapter: adapter.into(),
            rows: Vec::new(),
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

    /// Adds `e`, replacing an entry of the same op, dtype and length bucket.
    pub fn insert_row(&mut self, e: RowEntry) {
        self.rows
            .retain(|r| !(r.mode == e.mode && r.dtype == e.dtype && bucket(r.n) == bucket(e.n)));
        self.rows.push(e);
    }

    /// The measured kernel for rows of `n` elements, if the table has one for their bucket.
    pub fn row_kernel(&self, mode: RowMode, dtype: DType, n: u64) -> Option<RowKernel> {
        self.rows
            .iter()
            .find(|r| r.mode == mode && r.dtype == dtype && bucket(r.n) == bucket(n))
            .map(|r| r.kernel)
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
            let mode = match e["op"].as_str().map(RowMode::from_name) {
                Some(Some(mode)) => mode,
                Some(None) => continue,
                None => return Err(bad(format!("autotune[{i}] has no op"))),
            };
            let dtype = match e["dtype"].as_str() {
                Some("f32") => DType::F32,
                Some("f16") => DType::F16,
                other => return Err(bad(format!("autotune[{i}]: dtype {other:?}"))),
            };
            let n = e["shape"]
                .as_array()
                .and_then(|s| s.last())
                .and_then(|v| v.as_u64())
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(format!("autotune[{i}]: no row length in shape")))?;
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
                kernel,
            });
        }
        Ok(t)
    }
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
            {"op": "batch_norm_train", "shape": [8, 64, 28, 28], "dtype": "f32", "best": "x"}
        ]
    }"#;

    #[test]
    fn reads_the_bench_document_and_skips_ops_it_does_not_tune() {
        let t = Tuning::from_json(DOC).unwrap();
        assert_eq!(t.adapter(), "Some GPU");
        assert_eq!(t.rows().len(), 2);
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
    }

    #[test]
    fn a_malformed_entry_is_an_error_naming_it() {
        let doc = DOC.replace("team8x8", "team8by8");
        let e = Tuning::from_json(&doc).unwrap_err().to_string();
        assert!(e.contains("autotune[0]") && e.contains("team8by8"), "{e}");
        assert!(Tuning::from_json("{}").is_err());
    }

    #[test]
    fn insert_replaces_the_entry_of_the_same_bucket() {
        let mut t = Tuning::new("a");
        for (n, wg) in [(1000, 64), (1024, 128)] {
            t.insert_row(RowEntry {
                mode: RowMode::RmsNorm,
                dtype: DType::F32,
                n,
                kernel: RowKernel::Workgroup { wg },
            });
        }
        assert_eq!(
            t.rows().len(),
            1,
            "1000 and 1024 share a bucket: the later replaces"
        );
        assert_eq!(
            t.row_kernel(RowMode::RmsNorm, DType::F32, 600),
            Some(RowKernel::Workgroup { wg: 128 })
        );
    }
}
