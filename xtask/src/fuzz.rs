//! `cargo xtask fuzz [--iterations N] [--seed S]`: random calls of the public ops — shapes with
//! 0- and 1-sized dims and odd sizes, both dtypes, any axis, parameters that are NaN, negative
//! or huge, outputs that alias inputs, buffers that are too small, lack a usage or sit at a
//! misaligned offset. Every call must either return `Ok` and match the f64 reference, or return
//! a typed error having written nothing (its output keeps a sentinel); no call may panic and the
//! device may report no uncaptured error. Prints `N calls, N ok, N typed errors, N panics`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use wgnorm::engine::rownorm::{RowKernel, SPLIT_MAX_CHUNKS};
use wgnorm::prelude::*;
use wgnorm::Mode;
use wgnorm_reference::{chnorm as rc, rownorm as rr};

use crate::fuzz_grad::GradOp;
use crate::fuzz_inputs::InputsOp;
use crate::fuzz_qk::QkOp;
use crate::fuzz_research::ResearchOp;

/// xorshift64*: a fixed seed gives the same calls on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn values(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| (self.below(2001) as f32 - 1000.0) * 2e-3)
            .collect()
    }
}

/// What went wrong with a call, if anything.
enum Verdict {
    /// A call that matched the reference, with its op's name.
    Ok(String),
    Typed,
}

/// The op's name for the tally: the variant, or the research method's.
fn op_name(op: &Op) -> String {
    let s = match op {
        Op::Research(r) => format!("{r:?}"),
        Op::Inputs(r) => format!("{r:?}"),
        Op::Grad(g) => format!("Backward{g:?}"),
        Op::Qk(q) => format!("QkNormRope{}", if q.backward() { "Backward" } else { "" }),
        _ => format!("{op:?}"),
    };
    s.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

/// The op a call exercises, with the parameters the reference needs.
#[derive(Clone, Copy, Debug)]
#[allow(clippy::enum_variant_names)] // the ops' own names
enum Op {
    LayerNorm {
        axis: isize,
        eps: f32,
        /// The split row kernel forced with this many chunks (the default choice otherwise).
        split: Option<u32>,
    },
    RmsNorm {
        axis: isize,
        eps: f32,
    },
    BatchNorm {
        layout: Layout,
        eps: f32,
        momentum: f32,
        train: bool,
    },
    GroupNorm {
        layout: Layout,
        groups: usize,
        eps: f32,
    },
    InstanceNorm {
        layout: Layout,
        eps: f32,
    },
    LpNorm {
        axis: isize,
        p: u32,
    },
    /// LayerNorm of `x + residual` with `residual = x` (a read-only input bound twice).
    AddLayerNorm {
        axis: isize,
        eps: f32,
    },
    /// A standalone activation.
    Activation {
        act: Activation,
    },
    /// One of the research methods.
    Research(ResearchOp),
    /// A research method with specialised inputs or outputs.
    Inputs(InputsOp),
    /// A backward op (the output is dx).
    Grad(GradOp),
    /// QK-norm + RoPE, forward or backward.
    Qk(QkOp),
}

pub fn random_eps(rng: &mut Rng) -> f32 {
    rng.pick(&[
        1e-5,
        1e-5,
        1e-3,
        1e-2,
        0.0,
        -1e-5,
        f32::NAN,
        f32::INFINITY,
        1e30,
    ])
}

fn random_op(rng: &mut Rng, rank: usize) -> Op {
    let axis = rng.below(rank as u64 + 3) as isize - rank as isize - 1;
    let layout = rng.pick(&[Layout::Nchw, Layout::Nhwc]);
    // About one call in three exercises a research method.
    if rng.chance(3) {
        return Op::Research(ResearchOp::random(rng, rank));
    }
    if rng.chance(8) {
        return Op::Inputs(InputsOp::random(rng));
    }
    if rng.chance(6) {
        return Op::Grad(GradOp::random(rng, rank));
    }
    if rng.chance(8) {
        return Op::Qk(QkOp::random(rng));
    }
    match rng.below(8) {
        0 => Op::LayerNorm {
            axis,
            eps: random_eps(rng),
            split: rng
                .chance(3)
                .then(|| rng.pick(&[1, 2, 3, 7, 64, SPLIT_MAX_CHUNKS])),
        },
        1 => Op::RmsNorm {
            axis,
            eps: random_eps(rng),
        },
        2 => Op::BatchNorm {
            layout,
            eps: random_eps(rng),
            momentum: rng.pick(&[0.1, 0.5, 1.0, -0.1, 2.0, f32::NAN]),
            train: rng.chance(2),
        },
        3 => Op::GroupNorm {
            layout,
            groups: rng.below(5) as usize,
            eps: random_eps(rng),
        },
        4 => Op::InstanceNorm {
            layout,
            eps: random_eps(rng),
        },
        5 => Op::LpNorm {
            axis,
            p: rng.below(4) as u32,
        },
        6 => Op::AddLayerNorm {
            axis,
            eps: random_eps(rng),
        },
        _ => Op::Activation {
            act: rng.pick(&[
                Activation::None,
                Activation::Silu,
                Activation::GeluTanh,
                Activation::GeluErf,
                Activation::Relu,
                Activation::SELU,
                Activation::Selu {
                    alpha: 1.0,
                    lambda: 2.0,
                },
                Activation::Selu {
                    alpha: f32::NAN,
                    lambda: 1.0,
                },
            ]),
        },
    }
}

/// `(N, C, spatial)` of an NCHW/NHWC shape.
pub fn nc_hw(shape: &[usize], layout: Layout) -> (usize, usize, usize) {
    let c = match layout {
        Layout::Nchw => shape[1],
        Layout::Nhwc => shape[shape.len() - 1],
    };
    (
        shape[0],
        c,
        shape.iter().product::<usize>() / (shape[0] * c).max(1),
    )
}

/// NCHW data to the layout's order (and back with `inverse`).
pub fn relayout(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    layout: Layout,
    inverse: bool,
) -> Vec<f64> {
    if layout == Layout::Nchw || x.is_empty() {
        return x.to_vec();
    }
    let mut out = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for s in 0..hw {
                let (a, b) = ((i * c + ch) * hw + s, (i * hw + s) * c + ch);
                if inverse {
                    out[a] = x[b];
                } else {
                    out[b] = x[a];
                }
            }
        }
    }
    out
}

/// The f64 reference of `op` on `x` (in the tensor's own order), or `None` when the call is not
/// one the reference defines (then an `Ok` from wgnorm is itself a failure).
fn reference(op: Op, x: &[f64], shape: &[usize], dtype: DType) -> Option<Vec<f64>> {
    let rank = shape.len() as isize;
    let norm_axis = |a: isize| if a < 0 { a + rank } else { a };
    match op {
        Op::LayerNorm { axis, eps, .. } | Op::RmsNorm { axis, eps } => {
            let a = norm_axis(axis);
            if !((0..rank).contains(&a) && eps.is_finite() && eps >= 0.0) {
                return None;
            }
            let n: usize = shape[a as usize..].iter().product();
            if n == 0 || x.is_empty() {
                return Some(vec![]);
            }
            Some(match op {
                Op::LayerNorm { .. } => rr::layer_norm(x, n, None, None, eps as f64).y,
                _ => rr::rms_norm(x, n, None, 0.0, eps as f64).y,
            })
        }
        Op::BatchNorm {
            layout,
            eps,
            momentum,
            train,
        } => {
            if shape.len() < 2 || !(eps.is_finite() && eps >= 0.0) {
                return None;
            }
            if train && !(0.0..=1.0).contains(&momentum) {
                return None;
            }
            let (n, c, hw) = nc_hw(shape, layout);
            if x.is_empty() {
                return Some(vec![]);
            }
            if train && n * hw < 2 {
                return None;
            }
            let xd = relayout(x, n, c, hw, layout, true);
            let (rm, rv) = (vec![0.1; c], vec![0.9; c]);
            let m = momentum as f64;
            let y = rc::batch_norm(
                &xd, n, c, hw, None, None, &rm, &rv, train, m, true, eps as f64,
            )
            .y;
            Some(relayout(&y, n, c, hw, layout, false))
        }
        Op::GroupNorm {
            layout,
            groups,
            eps,
        } => {
            if shape.len() < 2 || !(eps.is_finite() && eps >= 0.0) {
                return None;
            }
            let (n, c, hw) = nc_hw(shape, layout);
            if groups == 0 || c % groups != 0 {
                return None;
            }
            if x.is_empty() {
                return Some(vec![]);
            }
            let xd = relayout(x, n, c, hw, layout, true);
            let y = rc::group_norm(&xd, n, c, hw, groups, None, None, eps as f64, false);
            Some(relayout(&y, n, c, hw, layout, false))
        }
        Op::InstanceNorm { layout, eps } => {
            if shape.len() < 2 || !(eps.is_finite() && eps >= 0.0) {
                return None;
            }
            let (n, c, hw) = nc_hw(shape, layout);
            if x.is_empty() {
                return Some(vec![]);
            }
            let xd = relayout(x, n, c, hw, layout, true);
            let y = rc::instance_norm(&xd, n, c, hw, None, None, eps as f64);
            Some(relayout(&y, n, c, hw, layout, false))
        }
        Op::LpNorm { axis, p } => {
            let a = norm_axis(axis);
            if !(0..rank).contains(&a) || !(1..=2).contains(&p) {
                return None;
            }
            if x.is_empty() {
                return Some(vec![]);
            }
            Some(rc::lp_norm(x, shape, axis, p))
        }
        Op::AddLayerNorm { axis, eps } => {
            let doubled: Vec<f64> = x.iter().map(|v| v + v).collect();
            let ln = Op::LayerNorm {
                axis,
                eps,
                split: None,
            };
            reference(ln, &doubled, shape, dtype)
        }
        Op::Activation { act } => {
            use wgnorm_reference::activation as ra;
            let f = |v: f64| match act {
                Activation::None => v,
                Activation::Silu => ra::silu(v),
                Activation::GeluTanh => ra::gelu_tanh(v),
                Activation::GeluErf => ra::gelu_erf(v),
                Activation::Relu => ra::relu(v),
                Activation::Selu { alpha, lambda } => ra::selu(v, alpha as f64, lambda as f64),
            };
            if let Activation::Selu { alpha, lambda } = act {
                if !(alpha.is_finite() && lambda.is_finite()) {
                    return None;
                }
            }
            Some(x.iter().map(|&v| f(v)).collect())
        }
        Op::Research(r) => r.reference(x, shape),
        Op::Inputs(r) => r.reference(x, shape),
        Op::Grad(g) => g.reference(x, shape, dtype),
        Op::Qk(q) => q.reference(x, shape, dtype),
    }
}

/// Records `op` from `x` into `y`.
fn encode(
    ctx: &Context,
    op: Op,
    dtype: DType,
    x: &Tensor,
    y: &Tensor,
    enc: &mut wgpu::CommandEncoder,
) -> wgnorm::Result<()> {
    match op {
        Op::LayerNorm { axis, eps, split } => {
            let ln = LayerNorm::new(ctx, LayerNormConfig { axis, eps, dtype })?;
            let ln = match split {
                Some(chunks) => ln.with_kernel(RowKernel::Split { wg: 64, chunks }),
                None => ln,
            };
            ln.encode(
                enc,
                &LayerNormInputs {
                    x,
                    weight: None,
                    bias: None,
                },
                &LayerNormOutputs {
                    y,
                    mean: None,
                    rstd: None,
                },
            )
        }
        Op::RmsNorm { axis, eps } => {
            let rms = RmsNorm::new(
                ctx,
                RmsNormConfig {
                    axis,
                    eps,
                    dtype,
                    ..Default::default()
                },
            )?;
            rms.encode(
                enc,
                &RmsNormInputs { x, weight: None },
                &RmsNormOutputs { y, rstd: None },
            )
        }
        Op::BatchNorm {
            layout,
            eps,
            momentum,
            train,
        } => {
            let bn = BatchNorm::new(
                ctx,
                BatchNormConfig {
                    eps,
                    momentum: Some(momentum),
                    layout,
                    dtype,
                    ..Default::default()
                },
            )?;
            let c = match layout {
                Layout::Nchw => x.shape().get(1),
                Layout::Nhwc => x.shape().last(),
            }
            .copied()
            .unwrap_or(0);
            let rm = ctx.upload_f32(&vec![0.1; c], &[c])?;
            let rv = ctx.upload_f32(&vec![0.9; c], &[c])?;
            let inputs = BatchNormInputs {
                x,
                weight: None,
                bias: None,
                running_mean: Some(&rm),
                running_var: Some(&rv),
            };
            bn.encode(
                enc,
                &inputs,
                &BatchNormOutputs { y, saved: None },
                Mode::training(train),
            )
        }
        Op::GroupNorm {
            layout,
            groups,
            eps,
        } => {
            let gn = GroupNorm::new(
                ctx,
                GroupNormConfig {
                    eps,
                    layout,
                    dtype,
                    ..GroupNormConfig::new(groups)
                },
            )?;
            gn.encode(
                enc,
                &NormInputs {
                    x,
                    weight: None,
                    bias: None,
                },
                &NormOutputs { y, saved: None },
            )
        }
        Op::InstanceNorm { layout, eps } => {
            let inorm = InstanceNorm::new(
                ctx,
                InstanceNormConfig {
                    eps,
                    layout,
                    dtype,
                    ..Default::default()
                },
            )?;
            inorm.encode(
                enc,
                &NormInputs {
                    x,
                    weight: None,
                    bias: None,
                },
                &NormOutputs { y, saved: None },
            )
        }
        Op::LpNorm { axis, p } => {
            let lp = LpNorm::new(ctx, wgnorm::LpNormConfig { axis, p, dtype })?;
            lp.encode(enc, x, y)
        }
        Op::AddLayerNorm { axis, eps } => {
            let ln = LayerNorm::new(ctx, LayerNormConfig { axis, eps, dtype })?;
            ln.encode_add(
                enc,
                &wgnorm::AddLayerNormInputs {
                    x,
                    residual: x,
                    weight: None,
                    bias: None,
                },
                &wgnorm::AddLayerNormOutputs {
                    y,
                    sum: None,
                    mean: None,
                    rstd: None,
                },
            )
        }
        Op::Activation { act } => {
            let ew = wgnorm::Elementwise::new(
                ctx,
                wgnorm::ElementwiseConfig {
                    activation: act,
                    dtype,
                },
            )?;
            ew.encode(enc, x, y)
        }
        Op::Research(r) => r.encode(ctx, dtype, x, y, enc),
        Op::Inputs(r) => r.encode(ctx, dtype, x, y, enc),
        Op::Grad(g) => g.encode(ctx, dtype, x, y, enc),
        Op::Qk(q) => q.encode(ctx, dtype, x, y, enc),
    }
}

/// Whether a valid call's result is rounding noise in any implementation (see
/// [`ResearchOp::ill_conditioned`]): it is counted under its own name, not compared.
fn ill_conditioned(op: Op, data: &[f32], shape: &[usize], dtype: DType) -> bool {
    match op {
        Op::Research(r) => r.ill_conditioned(&x_values(data, dtype), shape),
        _ => false,
    }
}

/// A buffer fault injected into a call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    Aliased,
    ShortOutput,
    NoStorage,
    Misaligned,
}

/// One random call; `Err` describes a wrong result or a write by a failed call.
fn one_call(ctx: &Context, rng: &mut Rng) -> Result<Verdict> {
    let rank = rng.below(5) as usize;
    let shape: Vec<usize> = (0..rank)
        .map(|_| {
            if rng.chance(12) {
                0
            } else {
                rng.pick(&[1, 1, 2, 3, 4, 5, 7, 8, 12, 16, 33])
            }
        })
        .collect();
    let numel: usize = shape.iter().product();
    let dtype = rng.pick(&[DType::F32, DType::F32, DType::F16]);
    let op = random_op(rng, rank);
    // An empty tensor is a no-op (as in PyTorch) before any binding: no fault applies to it.
    let yshape = match op {
        Op::Inputs(r) => r.out_shape(&shape),
        _ => shape.clone(),
    };
    let ynumel: usize = yshape.iter().product();
    let fault = if rng.chance(4) && numel > 0 && ynumel > 0 {
        rng.pick(&[
            Fault::Aliased,
            Fault::ShortOutput,
            Fault::NoStorage,
            Fault::Misaligned,
        ])
    } else {
        Fault::None
    };
    let data = rng.values(numel);
    let x = ctx.upload(&data, &shape, dtype)?;
    let bytes = (ynumel as u64 * dtype.size()).max(4).div_ceil(16) * 16 + 256;
    let usage = match fault {
        Fault::NoStorage => wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        _ => Context::TENSOR_USAGE,
    };
    let out = ctx.create_buffer("fuzz output", bytes, usage, false)?;
    let sentinel = vec![0x5Au8; bytes as usize];
    ctx.queue().write_buffer(&out, 0, &sentinel);
    let y = match fault {
        Fault::Aliased => x.clone(),
        Fault::ShortOutput if ynumel > 0 => {
            Tensor::from_buffer(out.clone(), 0, &[ynumel - 1], dtype)?.reshape(&[ynumel - 1])?
        }
        Fault::Misaligned => Tensor::from_buffer(out.clone(), 4, &yshape, dtype)?,
        _ => Tensor::from_buffer(out.clone(), 0, &yshape, dtype)?,
    };
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let r = encode(ctx, op, dtype, &x, &y, &mut enc);
    ctx.queue().submit([enc.finish()]);
    let want = reference(op, &x_values(&data, dtype), &shape, dtype);
    match (r, want) {
        (Ok(()), Some(_)) if fault == Fault::None && ill_conditioned(op, &data, &shape, dtype) => {
            Ok(Verdict::Ok(format!(
                "{}IllConditionedNotCompared",
                op_name(&op)
            )))
        }
        (Ok(()), Some(want)) if fault == Fault::None => {
            let got = ctx.download(&y)?;
            let tol = if dtype == DType::F16 { 2e-2 } else { 2e-4 };
            let scale = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let ok = (w.is_nan() && g.is_nan())
                    || (w.is_infinite() && *g as f64 == *w)
                    || ((*g as f64) - w).abs() <= tol * scale;
                if !ok {
                    bail!("{op:?} {dtype} {shape:?}: y[{i}] = {g}, reference {w}");
                }
            }
            Ok(Verdict::Ok(op_name(&op)))
        }
        (Ok(()), want) => bail!(
            "{op:?} {dtype} {shape:?} with {fault:?}: Ok, but the reference says {}",
            if want.is_some() {
                "the fault must be refused"
            } else {
                "invalid"
            }
        ),
        (Err(e), Some(_)) if fault == Fault::None => {
            bail!("{op:?} {dtype} {shape:?}: a valid call was refused: {e}")
        }
        (Err(e), _) => {
            if fault != Fault::NoStorage {
                let after = read_bytes(ctx, &out)?;
                if after != sentinel {
                    bail!("{op:?} {dtype} {shape:?} with {fault:?}: failed ({e}) but wrote its output");
                }
            }
            Ok(Verdict::Typed)
        }
    }
}

/// The values the device sees (f16 rounds).
pub fn x_values(data: &[f32], dtype: DType) -> Vec<f64> {
    data.iter()
        .map(|&v| match dtype {
            DType::F32 => v as f64,
            DType::F16 => half::f16::from_f32(v).to_f64(),
            DType::BF16 => half::bf16::from_f32(v).to_f64(),
        })
        .collect()
}

fn read_bytes(ctx: &Context, buf: &wgpu::Buffer) -> Result<Vec<u8>> {
    let words = (buf.size() / 4) as usize;
    let t = Tensor::from_buffer(buf.clone(), 0, &[words], DType::F32)?;
    Ok(ctx
        .download(&t)?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect())
}

/// Runs the fuzzer; returns success.
/// `cargo xtask fuzz` options.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Calls to make.
    #[arg(long, default_value_t = 2000)]
    iterations: u64,
    /// The generator's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(o: &Options) -> Result<bool> {
    let (iterations, seed) = (o.iterations, o.seed);
    let ctx = crate::context()?;
    let uncaptured = Arc::new(AtomicUsize::new(0));
    let counter = uncaptured.clone();
    ctx.device().on_uncaptured_error(Arc::new(move |e| {
        eprintln!("uncaptured wgpu error: {e}");
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (mut ok, mut typed, mut panics, mut wrong) = (0u64, 0u64, 0u64, 0u64);
    let mut ok_by_op = std::collections::BTreeMap::new();
    for i in 0..iterations {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one_call(&ctx, &mut rng))) {
            Ok(Ok(Verdict::Ok(name))) => {
                ok += 1;
                *ok_by_op.entry(name).or_insert(0u64) += 1;
            }
            Ok(Ok(Verdict::Typed)) => typed += 1,
            Ok(Err(e)) => {
                wrong += 1;
                println!("FAIL call {i}: {e}");
            }
            Err(_) => {
                panics += 1;
                println!("FAIL call {i}: panicked");
            }
        }
    }
    let tally: Vec<String> = ok_by_op.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("matched the reference, by op: {}", tally.join(", "));
    let uncaptured = uncaptured.load(Ordering::SeqCst);
    println!(
        "{iterations} calls, {ok} ok, {typed} typed errors, {panics} panics, {wrong} wrong, {uncaptured} uncaptured device errors (seed {seed})"
    );
    Ok(panics == 0 && wrong == 0 && uncaptured == 0)
}
