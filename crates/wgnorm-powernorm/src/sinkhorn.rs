//! Sinkhorn normalization (SinkGD, docs/methods.md B4): `2L` alternating L2 normalizations of
//! rows and columns on the channel engine, and their backward in reverse on the batch-statistics
//! backward engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgnorm_core::chgrad::{ChannelGrad, ChannelGradArgs, GradNorm, GradStats};
use wgnorm_core::chnorm::{ChannelNorm, ChannelNormArgs, ChannelView, Reduction};
use wgnorm_core::{Activation, Context, DType, Error, Result, Tensor};

/// One L2-normalization pass of SinkGD from `src` into `dst`.
fn l2_args<'a>(view: ChannelView, src: &'a Tensor, dst: &'a Tensor) -> ChannelNormArgs<'a> {
    ChannelNormArgs::new(src, dst, view)
}

/// SinkGD's row/column normalization (docs/methods.md B4; third-party ports only, so the conventions
/// follow the spec): `iterations` times, scale every row of `x[m, n]` to L2 norm `sqrt(n)`, then
/// every column to `sqrt(m)`, each norm clamped below at `eps`. Two ping-pong scratch tensors per
/// shape; `2 * iterations` normalization passes recorded into one encoder.
pub struct SinkhornNormalize {
    ctx: Context,
    iterations: usize,
    eps: f32,
    dtype: DType,
    shapes: Mutex<HashMap<(usize, usize), Arc<SinkhornState>>>,
    grads: Mutex<HashMap<(usize, usize), Arc<SinkhornGradState>>>,
}

/// The backward's engines and scratch of one shape: the input of every forward pass but the
/// first (x), and two gradient ping-pong tensors.
struct SinkhornGradState {
    rows: ChannelGrad,
    cols: ChannelGrad,
    inputs: Vec<Tensor>,
    grads: [Tensor; 2],
}

struct SinkhornState {
    rows: ChannelNorm,
    cols: ChannelNorm,
    a: Tensor,
    b: Tensor,
}

/// What [`SinkhornNormalize::new`] takes; `Default` gives the paper's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkhornConfig {
    /// Alternating row/column normalizations L.
    pub iterations: usize,
    /// Lower clamp of the row and column norms.
    pub eps: f32,
    /// Storage type of x and y.
    pub dtype: DType,
}

impl Default for SinkhornConfig {
    fn default() -> Self {
        SinkhornConfig {
            iterations: 5,
            eps: 1e-8,
            dtype: DType::F32,
        }
    }
}

impl SinkhornNormalize {
    /// `iterations` >= 1 (default 5 in the spec), `eps` > 0 (default 1e-8).
    pub fn new(ctx: &Context, cfg: SinkhornConfig) -> Result<SinkhornNormalize> {
        let SinkhornConfig {
            iterations,
            eps,
            dtype,
        } = cfg;
        if iterations == 0 {
            return Err(Error::InvalidParameter {
                name: "iterations",
                value: "0".into(),
                why: "must be >= 1",
            });
        }
        if !eps.is_finite() || eps <= 0.0 {
            return Err(Error::InvalidParameter {
                name: "eps",
                value: eps.to_string(),
                why: "must be finite and > 0",
            });
        }
        Ok(SinkhornNormalize {
            ctx: ctx.clone(),
            iterations,
            eps,
            dtype,
            shapes: Mutex::default(),
            grads: Mutex::default(),
        })
    }

    fn state(&self, m: usize, n: usize) -> Result<Arc<SinkhornState>> {
        if let Some(s) = wgnorm_core::locked(&self.shapes).get(&(m, n)) {
            return Ok(s.clone());
        }
        let engine = |target: usize| -> Result<ChannelNorm> {
            Ok(
                ChannelNorm::new(&self.ctx, self.eps, self.dtype, Default::default())?
                    .with_reduction(Reduction::L2)
                    .with_norm_target((target as f32).sqrt()),
            )
        };
        let s = Arc::new(SinkhornState {
            rows: engine(n)?,
            cols: engine(m)?,
            a: self.ctx.empty(&[m, n], self.dtype)?,
            b: self.ctx.empty(&[m, n], self.dtype)?,
        });
        wgnorm_core::locked(&self.shapes).insert((m, n), s.clone());
        Ok(s)
    }

    /// Records the iterations from `x[m, n]` into `y` (same shape and dtype).
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, x: &Tensor, y: &Tensor) -> Result<()> {
        let shape = x.shape();
        if shape.len() != 2 {
            return Err(Error::ShapeMismatch {
                what: "sinkhorn_normalize x [m, n]".into(),
                expected: vec![0, 0],
                got: shape.to_vec(),
            });
        }
        wgnorm_core::binding::check_output_distinct(("y", y), &[("x", x)])?;
        let (m, n) = (shape[0], shape[1]);
        let st = self.state(m, n)?;
        let rows_view = ChannelView::along_axis(shape, 1)?;
        let cols_view = ChannelView::along_axis(shape, 0)?;
        // Every pass's arguments are checked before anything is recorded.
        st.rows.check_args(&l2_args(rows_view, x, &st.a))?;
        st.cols.check_args(&l2_args(cols_view, &st.a, y))?;
        st.rows.check_args(&l2_args(rows_view, &st.b, &st.a))?;
        st.cols.check_args(&l2_args(cols_view, &st.a, &st.b))?;
        let mut src = x;
        for i in 0..self.iterations {
            st.rows.encode(encoder, &l2_args(rows_view, src, &st.a))?;
            let dst = if i + 1 == self.iterations { y } else { &st.b };
            st.cols.encode(encoder, &l2_args(cols_view, &st.a, dst))?;
            src = &st.b;
        }
        Ok(())
    }

    /// Allocates y, encodes and submits (does not wait).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.ctx.empty(x.shape(), self.dtype)?;
        self.ctx.record_and_submit(|enc| self.encode(enc, x, &y))?;
        Ok(y)
    }
}

impl SinkhornNormalize {
    fn grad_state(&self, m: usize, n: usize) -> Result<Arc<SinkhornGradState>> {
        if let Some(s) = wgnorm_core::locked(&self.grads).get(&(m, n)) {
            return Ok(s.clone());
        }
        let engine = |target: usize| -> Result<ChannelGrad> {
            ChannelGrad::new(&self.ctx, self.eps, self.dtype, Activation::None)?
                .with_norm(GradNorm::L2)?
                .with_norm_target((target as f32).sqrt())
        };
        let empty = || self.ctx.empty(&[m, n], self.dtype);
        let s = Arc::new(SinkhornGradState {
            rows: engine(n)?,
            cols: engine(m)?,
            inputs: (1..2 * self.iterations)
                .map(|_| empty())
                .collect::<Result<_>>()?,
            grads: [empty()?, empty()?],
        });
        wgnorm_core::locked(&self.grads).insert((m, n), s.clone());
        Ok(s)
    }

    /// Records the gradient `dx` of `sum(y * dy)` into the caller's encoder: the forward's
    /// `2L` passes again, keeping each pass's input (`2L - 1` scratch matrices per shape, the
    /// memory of the reverse mode), then each pass's L2 backward in reverse order, the row and
    /// column norms recomputed in a fixed order (bitwise reproducible). Where a norm is clamped
    /// at eps the denominator is a constant. Every pass is checked before the first is recorded.
    pub fn encode_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
    ) -> Result<()> {
        let shape = x.shape();
        if shape.len() != 2 || dy.shape() != shape || dx.shape() != shape {
            return Err(Error::ShapeMismatch {
                what: "sinkhorn_normalize backward: x, dy and dx [m, n]".into(),
                expected: shape.to_vec(),
                got: if dy.shape() != shape {
                    dy.shape()
                } else {
                    dx.shape()
                }
                .to_vec(),
            });
        }
        wgnorm_core::binding::check_output_distinct(("dx", dx), &[("x", x), ("dy", dy)])?;
        let (m, n) = (shape[0], shape[1]);
        let (st, gs) = (self.state(m, n)?, self.grad_state(m, n)?);
        let views = [
            ChannelView::along_axis(shape, 1)?,
            ChannelView::along_axis(shape, 0)?,
        ];
        // Pass k reads inputs[k] (x for k = 0) and writes inputs[k + 1].
        let input = |k: usize| if k == 0 { x } else { &gs.inputs[k - 1] };
        let passes = 2 * self.iterations;
        let forward = |k: usize| {
            let out = if k + 1 == passes {
                &st.a
            } else {
                &gs.inputs[k]
            };
            (
                if k.is_multiple_of(2) {
                    &st.rows
                } else {
                    &st.cols
                },
                l2_args(views[k % 2], input(k), out),
            )
        };
        // Backward pass k: from the gradient of its output to that of its input.
        let backward = |k: usize| {
            let upstream = if k + 1 == passes {
                dy
            } else {
                &gs.grads[(k + 1) % 2]
            };
            let out = if k == 0 { dx } else { &gs.grads[k % 2] };
            (
                if k.is_multiple_of(2) {
                    &gs.rows
                } else {
                    &gs.cols
                },
                ChannelGradArgs {
                    x: input(k),
                    dy: upstream,
                    view: views[k % 2],
                    stats: GradStats::Batch,
                    weight: None,
                    bias: None,
                    saved: None,
                    running_mean: None,
                    running_var: None,
                    dx: out,
                    dweight: None,
                    dbias: None,
                    term: None,
                },
            )
        };
        for k in 0..passes {
            let (engine, args) = forward(k);
            engine.check_args(&args)?;
            let (engine, args) = backward(k);
            engine.check_args(&args)?;
        }
        // The last pass's output (y) is not needed: only its input is.
        for k in 0..passes - 1 {
            let (engine, args) = forward(k);
            engine.encode(encoder, &args)?;
        }
        for k in (0..passes).rev() {
            let (engine, args) = backward(k);
            engine.encode(encoder, &args)?;
        }
        Ok(())
    }

    /// Allocates dx, encodes the backward and submits (does not wait).
    pub fn backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dx = self.ctx.empty(x.shape(), self.dtype)?;
        self.ctx
            .record_and_submit(|enc| self.encode_backward(enc, x, dy, &dx))?;
        Ok(dx)
    }
}
