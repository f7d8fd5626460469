//! Bench rows of the research methods' backward passes (issue: every backward a bench row):
//! Batch-Channel Norm, EvoNorm-S0 and -B0, IBN, Region Norm-B, the Poincaré midpoint and batch
//! norm (points = pixels) and Unified Norm (tokens = pixels) on one NCHW shape, Sinkhorn on one
//! matrix, each checked against its f64 reference gradient after the timed runs. Bytes are a
//! copy's: x and dy read, dx written once.

use anyhow::Result;
use wgnorm::prelude::*;
use wgnorm::{Context, Mode};
use wgnorm_reference::grad as rg;

use crate::bench::{pattern, Case, Check, Record};

/// The backward rows for an NCHW `shape` (the channel methods) and an `[m, m]` matrix.
pub fn method_grad_cases(
    ctx: &Context,
    shape: [usize; 4],
    m: usize,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Case>> {
    let mut out = Vec::new();
    let rows: [(&str, CaseFn); 8] = [
        ("batch_channel_norm_backward", batch_channel),
        ("unified_norm_backward", unified),
        ("poincare_midpoint_backward", poincare_midpoint),
        ("poincare_batch_norm_backward", poincare_batch_norm),
        ("evonorm_s0_backward", evonorm_s0),
        ("evonorm_b0_backward", evonorm_b0),
        ("ibn_backward", ibn),
        ("region_norm_b_backward", region),
    ];
    for (op, f) in rows {
        if wanted(op) {
            out.push(f(ctx, shape)?);
        }
    }
    if wanted("sinkhorn_backward") {
        out.push(sinkhorn(ctx, m)?);
    }
    Ok(out)
}

type CaseFn = fn(&Context, [usize; 4]) -> Result<Case>;

/// x (offset 2, spread 1), dy and the row's tensors.
struct Data {
    x: Vec<f32>,
    dy: Vec<f32>,
    xt: Tensor,
    dyt: Tensor,
    dx: Tensor,
}

fn data(ctx: &Context, shape: &[usize]) -> Result<Data> {
    let numel = shape.iter().product();
    let (x, dy) = (pattern(11, numel, 2.0, 1.0), pattern(12, numel, 0.0, 1.0));
    Ok(Data {
        xt: ctx.upload_f32(&x, shape)?,
        dyt: ctx.upload_f32(&dy, shape)?,
        dx: ctx.empty(shape, DType::F32)?,
        x,
        dy,
    })
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| a as f64).collect()
}

/// A row from its recording closure (validated once here) and the f64 dx.
fn case(
    ctx: &Context,
    (op, kernel): (&'static str, &str),
    shape: Vec<usize>,
    d: &Data,
    rec: impl Fn(&mut wgpu::CommandEncoder) -> wgnorm::Result<()> + 'static,
    want: Vec<f64>,
) -> Result<Case> {
    ctx.record_and_submit(&rec)?;
    let numel = d.x.len() as u64;
    let run: Record = Box::new(move |enc| rec(enc).expect("validated above"));
    Ok(Case {
        op,
        shape,
        dtype: DType::F32,
        layout: "NCHW",
        bytes: 3 * numel * 4,
        kernel: kernel.into(),
        run,
        naive: None,
        check: Some(Check::Reference(d.dx.clone(), want)),
    })
}

fn batch_channel(ctx: &Context, [n, c, h, w]: [usize; 4]) -> Result<Case> {
    let d = data(ctx, &[n, c, h, w])?;
    let groups = 32;
    let (bw, gw) = (pattern(13, c, 1.0, 0.5), pattern(14, groups, 1.0, 0.5));
    let op = wgnorm::BatchChannelNorm::new(
        ctx,
        wgnorm::BatchChannelNormConfig {
            groups,
            ..Default::default()
        },
    )?;
    let (bwt, gwt) = (ctx.upload_f32(&bw, &[c])?, ctx.upload_f32(&gw, &[groups])?);
    let (xt, dyt, dx) = (d.xt.clone(), d.dyt.clone(), d.dx.clone());
    let rec = move |enc: &mut wgpu::CommandEncoder| {
        let inputs = wgnorm::BatchChannelNormGradInputs {
            x: &xt,
            bn_weight: Some(&bwt),
            bn_bias: None,
            running_mean: None,
            running_var: None,
            weight: Some(&gwt),
            bias: None,
            dy: &dyt,
        };
        let outputs = wgnorm::BatchChannelNormGradOutputs {
            dx: &dx,
            dbn_weight: None,
            dbn_bias: None,
            dweight: None,
            dbias: None,
        };
        op.encode_backward(enc, &inputs, &outputs, Mode::Train)
    };
    let (bwf, gwf, zeros) = (f64s(&bw), f64s(&gw), vec![0.0; groups]);
    let r = rg::BatchChannel {
        n,
        c,
        hw: h * w,
        groups,
        bn_weight: Some(&bwf),
        bn_bias: None,
        weight: &gwf,
        bias: &zeros,
        eps: 1e-5,
    };
    let want = r.grad(&f64s(&d.x), &f64s(&d.dy), None).dx;
    let kernel = (
        "batch_channel_norm_backward",
        "BN + group backward + BN backward f32",
    );
    case(ctx, kernel, vec![n, c, h, w], &d, rec, want)
}

fn evonorm_s0(ctx: &Context, [n, c, h, w]: [usize; 4]) -> Result<Case> {
    let d = data(ctx, &[n, c, h, w])?;
    let groups = 32;
    let (v, wv) = (pattern(15, c, 0.5, 1.0), pattern(16, c, 1.0, 0.5));
    let op = wgnorm::EvoNormS0::new(
        ctx,
        wgnorm::EvoNormS0Config {
            groups,
            ..Default::default()
        },
    )?;
    let (vt, wt) = (ctx.upload_f32(&v, &[c])?, ctx.upload_f32(&wv, &[c])?);
    let (xt, dyt, dx) = (d.xt.clone(), d.dyt.clone(), d.dx.clone());
    let rec = move |enc: &mut wgpu::CommandEncoder| {
        let inputs = wgnorm::NormGradInputs {
            x: &xt,
            weight: Some(&wt),
            bias: None,
            dy: &dyt,
            saved: None,
        };
        let outputs = wgnorm::EvoNormS0GradOutputs {
            dx: &dx,
            dv: None,
            dweight: None,
            dbias: None,
        };
        op.encode_backward(enc, &inputs, &vt, &outputs)
    };
    let dims = (n, c, h * w, groups);
    let want = rg::evonorm_s0_grad(
        &f64s(&d.x),
        dims,
        (&f64s(&v), &f64s(&wv)),
        &f64s(&d.dy),
        1e-5,
    )
    .dx;
    let kernel = (
        "evonorm_s0_backward",
        "channel_grad + sigmoid-gate term f32",
    );
    case(ctx, kernel, vec![n, c, h, w], &d, rec, want)
}

/// Training; v keeps every element on the instance branch of the max (v x >= 0.37 next to
/// denominators 0.01 apart), so the f32 kernel and the f64 check take the same branch.
fn evonorm_b0(ctx: &Context, [n, c, h, w]: [usize; 4]) -> Result<Case> {
    let d = data(ctx, &[n, c, h, w])?;
    let (v, wv) = (pattern(18, c, 0.5, 0.5), pattern(19, c, 1.0, 0.5));
    let op = wgnorm::EvoNormB0::new(ctx, Default::default())?;
    let p = |e: &[f32]| ctx.upload_f32(e, &[c]);
    let (vt, wt, bt, rvt) = (p(&v)?, p(&wv)?, p(&vec![0.0; c])?, p(&vec![1.0; c])?);
    let (xt, dyt, dx) = (d.xt.clone(), d.dyt.clone(), d.dx.clone());
    let rec = move |enc: &mut wgpu::CommandEncoder| {
        let inputs = wgnorm::EvoNormB0Inputs {
            x: &xt,
            weight: &wt,
            bias: &bt,
            v: &vt,
            running_var: &rvt,
        };
        let outputs = wgnorm::EvoNormB0GradOutputs {
            dx: &dx,
            dweight: None,
            dbias: None,
            dv: None,
        };
        op.encode_backward(enc, &inputs, &dyt, &outputs, Mode::Train)
    };
    let want = rg::evonorm_b0_grad(
        &f64s(&d.x),
        (n, c, h * w),
        (&f64s(&v), &f64s(&wv)),
        rg::EvoB0Variance::Batch,
        &f64s(&d.dy),
        1e-5,
    )
    .dx;
    let kernel = ("evonorm_b0_backward", "staged max-denominator backward f32");
    case(ctx, kernel, vec![n, c, h, w], &d, rec, want)
}

/// The gyromidpoint's backward with points = pixels (dim C, c = 0.1, all inside the ball):
/// x read twice (the forward's sums, then each point), dx written; bytes are x and dx once.
fn poincare_midpoint(ctx: &Context, nchw: [usize; 4]) -> Result<Case> {
    let [n, c, h, w] = nchw;
    let numel = n * c * h * w;
    let x: Vec<f32> = (0..numel)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let dm = pattern(20, c, 0.0, 1.0);
    let cfg = wgnorm::BallConfig {
        c: 0.1,
        feature_axis: 1,
        dtype: DType::F32,
    };
    let op = wgnorm::PoincareMidpoint::new(ctx, cfg)?;
    let (xt, dmt) = (ctx.upload_f32(&x, &nchw)?, ctx.upload_f32(&dm, &[c])?);
    let dx = ctx.empty(&nchw, DType::F32)?;
    let (xr, dxr) = (xt.clone(), dx.clone());
    let rec = move |enc: &mut wgpu::CommandEncoder| op.encode_backward(enc, &xr, &dmt, &dxr);
    ctx.record_and_submit(&rec)?;
    let ball = wgnorm_reference::poincare::Ball::new(0.1, wgnorm::poincare::PROJ_EPS as f64);
    let (points, _, s) = wgnorm_reference::poincare::points_along(&f64s(&x), &nchw, 1);
    let g = rg::poincare_midpoint_grad(&ball, &points, &f64s(&dm));
    let want = wgnorm_reference::poincare::scatter_points(&g, c, s);
    Ok(Case {
        op: "poincare_midpoint_backward",
        shape: nchw.to_vec(),
        dtype: DType::F32,
        layout: "NCHW",
        bytes: 2 * numel as u64 * 4,
        kernel: "forward sums + mean grad + per-point grad f32".into(),
        run: Box::new(move |enc| rec(enc).expect("validated above")),
        naive: None,
        check: Some(Check::Reference(dx, want)),
    })
}

/// Poincaré batch norm's backward with batch statistics (points = pixels, c = 0.1, bias 0.1,
/// weight 1): the forward's statistics stages, then the dual-number pass, the tile sums, the
/// parameters and dx.
fn poincare_batch_norm(ctx: &Context, nchw: [usize; 4]) -> Result<Case> {
    let c = nchw[1];
    let d = data(ctx, &nchw)?;
    // Tangent vectors around 0 (x's offset would put every point near one boundary direction).
    let x: Vec<f32> = d.x.iter().map(|v| v - 2.0).collect();
    let xt = ctx.upload_f32(&x, &nchw)?;
    let (bias, weight) = (vec![0.1f32; c], 1.0f32);
    let bt = ctx.upload_f32(&bias, &[c])?;
    let wt = ctx.upload_f32(&[weight], &[1])?;
    let op = wgnorm::PoincareBatchNorm::new(ctx, Default::default())?;
    let (dyt, dx) = (d.dyt.clone(), d.dx.clone());
    let rec = move |enc: &mut wgpu::CommandEncoder| {
        let inputs = wgnorm::PoincareBatchNormInputs {
            x: &xt,
            bias: &bt,
            weight: &wt,
            running_mean: None,
            running_var: None,
        };
        let outputs = wgnorm::PoincareBatchNormGradOutputs {
            dx: &dx,
            dbias: None,
            dweight: None,
        };
        op.encode_backward(
            enc,
            &inputs,
            &dyt,
            &outputs,
            wgnorm::PoincareStatistics::Batch,
        )
    };
    let ball = wgnorm_reference::poincare::Ball::new(0.1, wgnorm::poincare::PROJ_EPS as f64);
    let (points, _, s) = wgnorm_reference::poincare::points_along(&f64s(&x), &nchw, 1);
    let (dyp, _, _) = wgnorm_reference::poincare::points_along(&f64s(&d.dy), &nchw, 1);
    let g = rg::poincare_batch_norm_grad(&ball, &points, (&f64s(&bias), weight as f64), &dyp);
    let want = wgnorm_reference::poincare::scatter_points(&g.dx, c, s);
    let kernel = (
        "poincare_batch_norm_backward",
        "statistics + dual points + sums + dx f32",
    );
    case(ctx, kernel, nchw.to_vec(), &d, rec, want)
}

/// Unified Norm's training backward (the gradient compensation) on tokens `[n, h*w, c]`, step 2
/// of a fresh state; the forward that saves its statistics runs once before.
fn unified(ctx: &Context, [n, c, h, w]: [usize; 4]) -> Result<Case> {
    use wgnorm_reference::powernorm as rp;
    let shape = [n, h * w, c];
    let d = data(ctx, &shape)?;
    let wv = pattern(21, c, 1.0, 0.5);
    let op = wgnorm::UnifiedNorm::new(ctx, Default::default())?;
    let p = |v: &[f32], s: &[usize]| ctx.upload_f32(v, s);
    let (wt, bt, rv) = (
        p(&wv, &[c])?,
        p(&vec![0.0; c], &[c])?,
        p(&vec![1.0; c], &[c])?,
    );
    let window = p(&vec![0.0; 4 * c], &[4, c])?;
    let (ema, buf) = (p(&vec![0.0; c], &[c])?, p(&vec![0.0; 4 * c], &[4, c])?);
    let saved = ctx.empty(&[c, 2], DType::F32)?;
    let y = ctx.empty(&shape, DType::F32)?;
    let inputs = wgnorm::UnifiedNormInputs {
        x: &d.xt,
        pad_mask: None,
        weight: Some(&wt),
        bias: Some(&bt),
        running_var: &rv,
        window: Some(&window),
    };
    ctx.record_and_submit(|enc| op.encode_train_saving(enc, &inputs, &y, 2, &saved))?;
    let mut st = rp::UnifiedState {
        window: vec![0.0; 4 * c],
        running_var: vec![1.0; c],
    };
    let (xd, wd) = (f64s(&d.x), f64s(&wv));
    let (_, sv) = rp::unified_norm_train(
        &xd,
        n * h * w,
        c,
        None,
        &wd,
        &vec![0.0; c],
        &mut st,
        2,
        4,
        4000,
        false,
        0.1,
        1e-5,
    );
    // Step 2 is inside the first window, so mean_gz is this call's gz; with momentum 1 the
    // backward's K is that gz too: dx does not depend on the state the timed calls move.
    let mut gs = rp::UnifiedGradState {
        ema_gz: vec![0.0; c],
        buffer_gz: vec![0.0; 4 * c],
    };
    let want = rp::unified_norm_grad(&xd, c, &wd, &f64s(&d.dy), &sv, &mut gs, (2, 4, 4000), 1.0).dx;
    let op = op.with_training(wgnorm::powernorm::UnifiedTraining {
        momentum: 1.0,
        ..Default::default()
    });
    let (xt, dyt, dx) = (d.xt.clone(), d.dyt.clone(), d.dx.clone());
    let rec = move |enc: &mut wgpu::CommandEncoder| {
        let inputs = wgnorm::UnifiedNormGradInputs {
            x: &xt,
            weight: &wt,
            dy: &dyt,
            saved: &saved,
            ema_gz: &ema,
            buffer_gz: &buf,
        };
        let outputs = wgnorm::UnifiedNormGradOutputs {
            dx: &dx,
            dweight: None,
            dbias: None,
        };
        op.encode_backward(enc, &inputs, &outputs, 2)
    };
    let kernel = (
        "unified_norm_backward",
        "power partials + compensation + dx f32",
    );
    case(ctx, kernel, shape.to_vec(), &d, rec, want)
}

fn ibn(ctx: &Context, [n, c, h, w]: [usize; 4]) -> Result<Case> {
    let d = data(ctx, &[n, c, h, w])?;
    let half = c / 2;
    let wv = pattern(17, c, 1.0, 0.5);
    let op = wgnorm::IbnNorm::new(ctx, Default::default())?;
    let wt = ctx.upload_f32(&wv, &[c])?;
    let rm = ctx.upload_f32(&vec![2.0; c - half], &[c - half])?;
    let rv = ctx.upload_f32(&vec![0.1; c - half], &[c - half])?;
    let (xt, dyt, dx) = (d.xt.clone(), d.dyt.clone(), d.dx.clone());
    let rec = move |enc: &mut wgpu::CommandEncoder| {
        let inputs = wgnorm::IbnGradInputs {
            x: &xt,
            weight: &wt,
            running_mean: &rm,
            running_var: &rv,
            dy: &dyt,
        };
        let outputs = wgnorm::IbnGradOutputs {
            dx: &dx,
            dweight: None,
            dbias: None,
        };
        op.encode_backward(enc, &inputs, &outputs, Mode::Train)
    };
    let dims = (n, c, h * w, half);
    let want = rg::ibn_grad(&f64s(&d.x), dims, &f64s(&wv), &f64s(&d.dy), None, 1e-5).dx;
    let kernel = (
        "ibn_backward",
        "reduce + IBN statistics + channel_grad + IBN term f32",
    );
    case(ctx, kernel, vec![n, c, h, w], &d, rec, want)
}

fn region(ctx: &Context, [n, c, h, w]: [usize; 4]) -> Result<Case> {
    let d = data(ctx, &[n, c, h, w])?;
    let hw = h * w;
    let mask: Vec<f32> = (0..n * hw)
        .map(|p| ((p / w + p % w) % 3 == 0) as u8 as f32)
        .collect();
    let (gf, gb) = (pattern(18, c, 0.0, 0.5), pattern(19, c, 0.0, 0.5));
    let op = wgnorm::RegionNormB::new(ctx, Default::default())?;
    let mt = ctx.upload_f32(&mask, &[n, 1, h, w])?;
    let (gft, gbt) = (ctx.upload_f32(&gf, &[c])?, ctx.upload_f32(&gb, &[c])?);
    let beta = ctx.upload_f32(&vec![0.0; c], &[c])?;
    let (xt, dyt, dx) = (d.xt.clone(), d.dyt.clone(), d.dx.clone());
    let rec = move |enc: &mut wgpu::CommandEncoder| {
        let inputs = wgnorm::RegionNormInputs {
            x: &xt,
            mask: &mt,
            gamma_f: &gft,
            gamma_b: &gbt,
            beta_f: &beta,
            beta_b: &beta,
        };
        let outputs = wgnorm::RegionNormGradOutputs {
            dx: &dx,
            dgamma_f: None,
            dgamma_b: None,
            dbeta_f: None,
            dbeta_b: None,
        };
        op.encode_backward(enc, &inputs, &dyt, &outputs)
    };
    let (x, dy, mf) = (f64s(&d.x), f64s(&d.dy), f64s(&mask));
    let want = rg::region_norm_b_grad(&x, (n, c, hw), &mf, (&f64s(&gf), &f64s(&gb)), &dy, 1e-5).dx;
    let kernel = (
        "region_norm_b_backward",
        "region statistics + region_grad f32",
    );
    case(ctx, kernel, vec![n, c, h, w], &d, rec, want)
}

fn sinkhorn(ctx: &Context, m: usize) -> Result<Case> {
    let d = data(ctx, &[m, m])?;
    let op = wgnorm::SinkhornNormalize::new(ctx, Default::default())?;
    let (xt, dyt, dx) = (d.xt.clone(), d.dyt.clone(), d.dx.clone());
    let rec = move |enc: &mut wgpu::CommandEncoder| op.encode_backward(enc, &xt, &dyt, &dx);
    let want = rg::sinkhorn_grad(&f64s(&d.x), (m, m), 5, 1e-8, &f64s(&d.dy));
    let kernel = (
        "sinkhorn_backward",
        "10 L2 passes + 10 L2 backward passes f32",
    );
    let mut row = case(ctx, kernel, vec![m, m], &d, rec, want)?;
    row.layout = "row-major";
    Ok(row)
}
