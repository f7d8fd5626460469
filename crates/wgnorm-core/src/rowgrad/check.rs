//! Every check of a row-norm backward call, before anything is recorded.

use super::{Ranges, RowGrad, RowGradArgs};
use crate::binding;
use crate::rownorm::RowMode;
use crate::{DType, Error, Result, Tensor};

/// `t` has `shape` and `dtype`.
fn expect(what: &str, t: &Tensor, shape: &[usize], dtype: DType) -> Result<()> {
    t.expect_shape(what, shape)?;
    t.expect_dtype(what, dtype)
}

impl RowGrad {
    /// `(rows, n)` of x's shape split at the configured axis.
    fn split(&self, shape: &[usize]) -> Result<(usize, usize, usize)> {
        let rank = shape.len() as isize;
        let a = self.cfg.axis;
        let ax = if a < 0 { a + rank } else { a };
        if !(0..rank).contains(&ax) {
            return Err(Error::AxisOutOfRange {
                what: "row norm backward",
                axis: a,
                rank: shape.len(),
            });
        }
        let ax = ax as usize;
        let rows = shape[..ax].iter().product();
        let n = shape[ax..].iter().product();
        Ok((rows, n, ax))
    }

    /// Shapes, dtypes, saved statistics, bindings and aliasing; `(rows, n, ranges)`, or `None`
    /// when there is nothing to record.
    pub(super) fn check(&self, a: &RowGradArgs) -> Result<Option<(usize, usize, Ranges)>> {
        let dtype = self.cfg.dtype;
        let shape = a.x.shape();
        let (rows, n, ax) = self.split(shape)?;
        let reduced = &shape[ax..];
        expect("x", a.x, shape, dtype)?;
        expect("dy", a.dy, shape, dtype)?;
        expect("dx", a.dx, shape, dtype)?;
        for (what, t) in [("residual", a.residual), ("dsum", a.dsum)] {
            if let Some(t) = t {
                expect(what, t, shape, dtype)?;
            }
        }
        for (what, t) in [
            ("weight", a.weight),
            ("bias", a.bias),
            ("dweight", a.dweight),
            ("dbias", a.dbias),
        ] {
            if let Some(t) = t {
                expect(what, t, reduced, dtype)?;
            }
        }
        if self.cfg.mode == RowMode::RmsNorm && a.bias.is_some() {
            return Err(Error::InvalidParameter {
                name: "bias",
                value: "given".into(),
                why: "RMSNorm has no bias",
            });
        }
        if self.cfg.mode == RowMode::RmsNorm && a.dbias.is_some() {
            return Err(Error::InvalidParameter {
                name: "dbias",
                value: "given".into(),
                why: "RMSNorm has no bias",
            });
        }
        self.check_saved(a, rows)?;
        let params = a.dweight.is_some() || a.dbias.is_some();
        if n == 0 || (rows == 0 && !params) {
            return Ok(None);
        }
        for (what, v) in [("rows", rows), ("row length", n)] {
            if v > u32::MAX as usize / 2 {
                return Err(Error::TooLarge {
                    what: what.into(),
                    value: v as u64,
                    limit: u32::MAX as u64 / 2,
                });
            }
        }
        let ctx = &self.ctx;
        let r = |what, t: &Tensor| binding::storage_range(ctx, what, t);
        let opt = |what, t: Option<&Tensor>| t.map(|t| r(what, t)).transpose();
        // Tensors shaped like x may be bound in windows of rows (`RowGrad::windows`).
        let rows_of = |what, t: &Tensor| binding::storage_range_unbounded(ctx, what, t);
        let rows_opt = |what, t: Option<&Tensor>| t.map(|t| rows_of(what, t)).transpose();
        let ranges = Ranges {
            x: rows_of("x", a.x)?,
            residual: rows_opt("residual", a.residual)?,
            weight: opt("weight", a.weight)?,
            bias: opt("bias", a.bias)?,
            dy: rows_of("dy", a.dy)?,
            dsum: rows_opt("dsum", a.dsum)?,
            mean: opt("mean", a.mean)?,
            rstd: opt("rstd", a.rstd)?,
            dx: rows_of("dx", a.dx)?,
            dweight: opt("dweight", a.dweight)?,
            dbias: opt("dbias", a.dbias)?,
        };
        binding::check_no_alias(&[
            ("x", Some(&ranges.x), false),
            ("residual", ranges.residual.as_ref(), false),
            ("weight", ranges.weight.as_ref(), false),
            ("bias", ranges.bias.as_ref(), false),
            ("dy", Some(&ranges.dy), false),
            ("dsum", ranges.dsum.as_ref(), false),
            ("mean", ranges.mean.as_ref(), false),
            ("rstd", ranges.rstd.as_ref(), false),
            ("dx", Some(&ranges.dx), true),
            ("dweight", ranges.dweight.as_ref(), true),
            ("dbias", ranges.dbias.as_ref(), true),
        ])?;
        Ok(Some((rows, n, ranges)))
    }

    /// The forward's saved statistics: f32, one per row; LayerNorm needs mean and rstd together,
    /// RMSNorm only rstd.
    fn check_saved(&self, a: &RowGradArgs, rows: usize) -> Result<()> {
        for (what, t) in [("mean", a.mean), ("rstd", a.rstd)] {
            if let Some(t) = t {
                if t.numel() != rows || t.dtype() != DType::F32 {
                    return Err(Error::ShapeMismatch {
                        what: format!("{what} (f32, one per row)"),
                        expected: vec![rows],
                        got: t.shape().to_vec(),
                    });
                }
            }
        }
        let ok = match self.cfg.mode {
            RowMode::LayerNorm => a.mean.is_some() == a.rstd.is_some(),
            RowMode::RmsNorm => a.mean.is_none(),
        };
        if !ok {
            return Err(Error::InvalidParameter {
                name: "saved statistics",
                value: format!(
                    "mean {}, rstd {}",
                    if a.mean.is_some() { "given" } else { "absent" },
                    if a.rstd.is_some() { "given" } else { "absent" }
                ),
                why: "LayerNorm reuses mean and rstd together, RMSNorm rstd alone (or pass none to recompute them)",
            });
        }
        Ok(())
    }
}
