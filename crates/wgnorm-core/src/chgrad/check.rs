//! Every check of a batch-statistics backward call, before anything is recorded.

use super::{ChannelGrad, ChannelGradArgs, GradStats, Ranges};
use crate::binding;
use crate::chnorm::expect;
use crate::{DType, Error, Result, Tensor};

impl ChannelGrad {
    /// Shapes, dtypes, what the statistics' source needs, bindings, aliasing and sizes.
    pub(super) fn check(&self, a: &ChannelGradArgs) -> Result<Ranges> {
        let v = a.view;
        self.check_shapes(a)?;
        self.check_source(a)?;
        for (what, n) in [("elements", v.numel()), ("slots", v.slots())] {
            if n > u32::MAX as usize / 2 {
                return Err(Error::TooLarge {
                    what: what.into(),
                    value: n as u64,
                    limit: u32::MAX as u64 / 2,
                });
            }
        }
        self.check_loop_budget(&v, self.tiling(&v, None).0)?;
        let ctx = &self.ctx;
        let r = |what, t: &Tensor| binding::storage_range(ctx, what, t);
        let opt = |what, t: Option<&Tensor>| t.map(|t| r(what, t)).transpose();
        // x, dy and dx may be bound in windows (`ChannelGrad::partials_windows`).
        let whole = |what, t: &Tensor| binding::storage_range_unbounded(ctx, what, t);
        let ranges = Ranges {
            x: whole("x", a.x)?,
            dy: whole("dy", a.dy)?,
            weight: opt("weight", a.weight)?,
            bias: opt("bias", a.bias)?,
            saved: opt("saved", a.saved)?,
            running_mean: opt("running_mean", a.running_mean)?,
            running_var: opt("running_var", a.running_var)?,
            dx: whole("dx", a.dx)?,
            dweight: opt("dweight", a.dweight)?,
            dbias: opt("dbias", a.dbias)?,
            term_input: opt("term input", a.term.and_then(|t| t.input))?,
            term_grad: opt("term gradient", a.term.and_then(|t| t.grad))?,
        };
        binding::check_no_alias(&[
            ("x", Some(&ranges.x), false),
            ("dy", Some(&ranges.dy), false),
            ("weight", ranges.weight.as_ref(), false),
            ("bias", ranges.bias.as_ref(), false),
            ("saved", ranges.saved.as_ref(), false),
            ("running_mean", ranges.running_mean.as_ref(), false),
            ("running_var", ranges.running_var.as_ref(), false),
            ("dx", Some(&ranges.dx), true),
            ("dweight", ranges.dweight.as_ref(), true),
            ("dbias", ranges.dbias.as_ref(), true),
            ("term input", ranges.term_input.as_ref(), false),
            ("term gradient", ranges.term_grad.as_ref(), true),
        ])?;
        Ok(ranges)
    }

    /// lavapipe stops a lane's loops after 65535 iterations: refuse views whose finalize lanes
    /// would loop past that on CPU adapters.
    pub(super) fn check_loop_budget(
        &self,
        v: &crate::chnorm::ChannelView,
        tiles: u32,
    ) -> Result<()> {
        let loops = (v.p.max(v.cg) * tiles as usize) as u64;
        if self.ctx.is_cpu() && loops > crate::rownorm::CPU_LOOP_BUDGET {
            return Err(Error::InvalidParameter {
                name: "shape",
                value: format!("{v:?}"),
                why: "a lane would loop past the software rasterizer's 65535-iteration limit",
            });
        }
        Ok(())
    }

    /// Shapes and dtypes of every tensor of a call, the gradient term's included.
    fn check_shapes(&self, a: &ChannelGradArgs) -> Result<()> {
        let v = a.view;
        let (numel, c) = (v.numel(), v.channels());
        if a.x.numel() != numel {
            return Err(Error::InvalidParameter {
                name: "view",
                value: format!("{v:?}"),
                why: "the view does not cover x",
            });
        }
        expect("x", a.x, numel, self.dtype)?;
        for (what, t) in [("dy", a.dy), ("dx", a.dx)] {
            expect(what, t, numel, self.dtype)?;
            if t.shape() != a.x.shape() {
                return Err(Error::ShapeMismatch {
                    what: what.into(),
                    expected: a.x.shape().to_vec(),
                    got: t.shape().to_vec(),
                });
            }
        }
        for (what, t) in [
            ("weight", a.weight),
            ("bias", a.bias),
            ("dweight", a.dweight),
            ("dbias", a.dbias),
            ("running_mean", a.running_mean),
            ("running_var", a.running_var),
        ] {
            if let Some(t) = t {
                expect(what, t, c, DType::F32)?;
            }
        }
        if let Some(t) = a.term {
            self.check_term(&t, c)?;
        }
        Ok(())
    }

    /// A gradient term's tensors: its input whenever it reads one, its gradient only where it
    /// writes one; its own partials read the input in the bias's place (no activation).
    fn check_term(&self, t: &super::TermArgs, channels: usize) -> Result<()> {
        use super::TermLen;
        if t.term.own_partials && self.activated {
            return Err(Error::InvalidParameter {
                name: "gradient term",
                value: format!("{:?}", self.activation),
                why: "a term with its own partials composes with no activation",
            });
        }
        match (t.term.input, t.input) {
            (TermLen::None, None) => {}
            (TermLen::None, Some(_)) => {
                return Err(Error::InvalidParameter {
                    name: "term input",
                    value: "Some".into(),
                    why: "this gradient term reads no input: pass None",
                })
            }
            (len, Some(input)) => expect("term input", input, len.of(channels), DType::F32)?,
            (_, None) => {
                return Err(Error::InvalidParameter {
                    name: "term input",
                    value: "None".into(),
                    why: "this gradient term reads its forward's input: pass it",
                })
            }
        }
        match (t.term.grad, t.grad) {
            (_, None) => Ok(()),
            (TermLen::None, Some(_)) => Err(Error::InvalidParameter {
                name: "term gradient",
                value: "Some".into(),
                why: "this gradient term has no parameter: pass None",
            }),
            (len, Some(grad)) => expect("term gradient", grad, len.of(channels), DType::F32),
        }
    }

    /// What the statistics' source needs: saved pairs, or running statistics of a view with one
    /// slot per channel (BatchNorm's).
    fn check_source(&self, a: &ChannelGradArgs) -> Result<()> {
        let v = a.view;
        if self.norm != super::GradNorm::Variance && a.stats != GradStats::Batch {
            return Err(Error::InvalidParameter {
                name: "stats",
                value: format!("{:?} with {:?}", a.stats, self.norm),
                why: "a denominator other than sqrt(var + eps) is recomputed from x: use GradStats::Batch",
            });
        }
        match a.stats {
            GradStats::Batch => Ok(()),
            GradStats::Saved => match a.saved {
                Some(s) => expect("saved (mean, rstd) pairs", s, v.slots() * 2, DType::F32),
                None => Err(Error::InvalidParameter {
                    name: "saved",
                    value: "None".into(),
                    why: "GradStats::Saved reads the forward's saved statistics: pass them",
                }),
            },
            GradStats::Running => {
                if a.running_mean.is_none() || a.running_var.is_none() || v.p != 1 || v.cg != 1 {
                    return Err(Error::InvalidParameter {
                        name: "running statistics",
                        value: format!("{v:?}"),
                        why: "the inference backward reads running_mean and running_var, one per channel of a BatchNorm view",
                    });
                }
                Ok(())
            }
        }
    }
}
