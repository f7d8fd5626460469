//! The backward rows of `cargo xtask bench`: LayerNorm / RMSNorm backward (dx, dweight, dbias)
//! against a naive one-invocation-per-row dx kernel plus the column passes in one block, and the
//! batch-statistics backward (BatchNorm training, GroupNorm + SiLU) checked against the f64
//! reference. Bytes counted: x and dy read once, dx written once (the parameter gradients are
//! per channel or per column: small).

use anyhow::Result;
use wgnorm::engine::binding::{self, BindCache};
use wgnorm::engine::rowgrad::{self, RowGrad, RowGradArgs, RowGradConfig};
use wgnorm::engine::rownorm::RowMode;
use wgnorm::engine::shader::Io;
use wgnorm::engine::uniform::RowGradParams;
use wgnorm::{Context, DType, Mode, Tensor};

use crate::bench::{pattern, Case, Check, Record};

/// Row-norm backward over `[rows, n]` with a weight (LayerNorm: also dbias).
pub fn row_grad_case(ctx: &Context, mode: RowMode, rows: usize, n: usize) -> Result<Case> {
    row_grad_case_with(ctx, mode, (rows, n, DType::F32), wgnorm::Activation::None)
}

/// [`row_grad_case`] in `dtype`, through a fused activation (LayerNorm then binds a bias).
pub fn row_grad_case_with(
    ctx: &Context,
    mode: RowMode,
    (rows, n, dtype): (usize, usize, DType),
    act: wgnorm::Activation,
) -> Result<Case> {
    let op = RowGrad::new(
        ctx,
        RowGradConfig {
            mode,
            axis: -1,
            eps: 1e-5,
            weight_offset: 0.0,
            dtype,
            unbiased: false,
            eps_outside: false,
        },
    )?
    .with_activation(act);
    let x = pattern(3, rows * n, 0.2, 2.0);
    let dyv = pattern(4, rows * n, 0.0, 1.0);
    let wv = pattern(5, n, 1.0, 1.0);
    let bv = pattern(6, n, 0.0, 0.5);
    let (xt, dy, w, b) = (
        ctx.upload(&x, &[rows, n], dtype)?,
        ctx.upload(&dyv, &[rows, n], dtype)?,
        ctx.upload(&wv, &[n], dtype)?,
        ctx.upload(&bv, &[n], dtype)?,
    );
    let lnorm = mode == RowMode::LayerNorm;
    let bias = (lnorm && act != wgnorm::Activation::None).then_some(b);
    let dx = ctx.empty(&[rows, n], dtype)?;
    let dw = ctx.empty(&[n], dtype)?;
    let db = ctx.empty(&[n], dtype)?;
    let run = {
        let (xt, dy, w, dx, dw, db, bias) = (
            xt.clone(),
            dy.clone(),
            w.clone(),
            dx.clone(),
            dw.clone(),
            db.clone(),
            bias.clone(),
        );
        let args = move |op: &RowGrad, enc: &mut wgpu::CommandEncoder| {
            op.encode(
                enc,
                &RowGradArgs {
                    x: &xt,
                    residual: None,
                    weight: Some(&w),
                    bias: bias.as_ref(),
                    dy: &dy,
                    dsum: None,
                    mean: None,
                    rstd: None,
                    dx: &dx,
                    dweight: Some(&dw),
                    dbias: lnorm.then_some(&db),
                },
            )
        };
        // Validate once up front so the timed closure cannot fail.
        ctx.record_and_submit(|enc| args(&op, enc))?;
        Box::new(move |enc: &mut wgpu::CommandEncoder| {
            args(&op, enc).expect("validated above");
        }) as Record
    };
    // The naive baseline differentiates the plain f32 norm only.
    let plain = act == wgnorm::Activation::None && dtype == DType::F32;
    let naive = if plain {
        naive_row_grad(ctx, mode, rows, n, [&xt, &w, &dy])?
    } else {
        None
    };
    let f = |v: &[f32]| crate::bench::f64s(v, dtype);
    let r = crate::fuzz_grad::act_ref(act);
    let want = match mode {
        RowMode::LayerNorm => {
            let affine = (Some(f(&wv)), bias.as_ref().map(|_| f(&bv)));
            let affine = (affine.0.as_deref(), affine.1.as_deref());
            wgnorm_reference::grad::layer_norm_act_grad(&f(&x), n, affine, &f(&dyv), 1e-5, r)
        }
        RowMode::RmsNorm => {
            let affine = (Some(f(&wv)), 0.0);
            let affine = (affine.0.as_deref(), affine.1);
            wgnorm_reference::grad::rms_norm_act_grad(&f(&x), n, affine, &f(&dyv), 1e-5, r)
        }
    };
    let op = match (lnorm, act == wgnorm::Activation::None) {
        (true, true) => "layer_norm_backward",
        (false, true) => "rms_norm_backward",
        (true, false) => "layer_norm_act_backward",
        (false, false) => "rms_norm_act_backward",
    };
    Ok(Case {
        op,
        shape: vec![rows, n],
        dtype,
        layout: "row-major",
        bytes: (3 * rows * n) as u64 * dtype.size(),
        kernel: format!("row_grad dx + params + reduce {dtype} act {act:?}"),
        run,
        naive,
        check: Some(Check::Reference(dx, want.dx)),
    })
}

/// The naive backward: one invocation per row for dx, then the column sums of dweight/dbias in
/// one block of all rows (one invocation per column walks every row).
fn naive_row_grad(
    ctx: &Context,
    mode: RowMode,
    rows: usize,
    n: usize,
    [xt, w, dy]: [&Tensor; 3],
) -> Result<Option<Record>> {
    // lavapipe's loop budget caps a single invocation's passes.
    if ctx.is_cpu()
        && (3 * n as u64 + 8 > wgnorm::engine::rownorm::CPU_LOOP_BUDGET
            || rows as u64 > wgnorm::engine::rownorm::CPU_LOOP_BUDGET)
    {
        return Ok(None);
    }
    let io = Io::F32;
    let params = RowGradParams {
        rows: rows as u32,
        n_vec: n as u32,
        n: n as u32,
        eps: 1e-5,
        weight_offset: 0.0,
        row_block: rows as u32,
        blocks: 1,
        row_base: 0,
        selu_alpha: 0.0,
        selu_lambda: 0.0,
        _pad0: 0,
        _pad1: 0,
    };
    let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
    let dx = ctx.empty(&[rows, n], DType::F32)?;
    let stats = ctx.empty(&[rows, 4], DType::F32)?;
    let partials = ctx.empty(&[2 * n], DType::F32)?;
    let (dw, db) = (ctx.empty(&[n], DType::F32)?, ctx.empty(&[n], DType::F32)?);
    let dr = binding::dummy_range(ctx.dummy_read());
    let binds = BindCache::default();
    let (xr, wr, dyr) = (r(xt, "x")?, r(w, "w")?, r(dy, "dy")?);
    let (dxr, sr, pr) = (
        r(&dx, "dx")?,
        r(&stats, "stats")?,
        r(&partials, "partials")?,
    );
    let b_dx = binds.get(
        ctx,
        rowgrad::DX_SLOTS,
        &params,
        &[&xr, &dr, &wr, &dyr, &dr, &dxr, &sr, &dr],
    )?;
    let b_params = binds.get(
        ctx,
        rowgrad::PARAMS_SLOTS,
        &params,
        &[&xr, &dr, &dyr, &sr, &pr, &dr, &dr],
    )?;
    let b_reduce = binds.get(
        ctx,
        rowgrad::REDUCE_SLOTS,
        &params,
        &[&pr, &r(&dw, "dw")?, &r(&db, "db")?],
    )?;
    let flags = rowgrad::GradFlags {
        weight: true,
        dweight: true,
        dbias: mode == RowMode::LayerNorm,
        ..Default::default()
    };
    let cols = (n as u64).div_ceil(64) as u32;
    let passes = vec![
        (
            ctx.pipeline(&rowgrad::naive_dx_spec(mode, io, true))?,
            b_dx,
            binding::grid(ctx, (rows as u64).div_ceil(64)),
        ),
        (
            ctx.pipeline(&rowgrad::params_spec(mode, io, flags))?,
            b_params,
            (cols, 1),
        ),
        (
            ctx.pipeline(&rowgrad::reduce_spec(mode, io, flags))?,
            b_reduce,
            (cols, 1),
        ),
    ];
    let keep = (dx, stats, partials, dw, db);
    Ok(Some(Box::new(move |enc: &mut wgpu::CommandEncoder| {
        let _keep = &keep;
        let mut pass = enc.begin_compute_pass(&Default::default());
        for (pipeline, bind, (gx, gy)) in &passes {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind, &[]);
            pass.dispatch_workgroups(*gx, *gy, 1);
        }
    })))
}

/// Batch-statistics backward: `batch_norm_backward` (training) or `group_norm_silu_backward`
/// (32 groups) on an NCHW shape, checked against the f64 reference; no naive baseline.
pub fn channel_grad_case(
    ctx: &Context,
    op: &'static str,
    [n, c, h, w]: [usize; 4],
) -> Result<Case> {
    let hw = h * w;
    let numel = n * c * hw;
    let x = pattern(6, numel, 0.5, 2.0);
    let dyv = pattern(7, numel, 0.0, 1.0);
    let (wv, bv) = (pattern(8, c, 1.0, 1.0), pattern(9, c, 0.0, 0.5));
    let xt = ctx.upload_f32(&x, &[n, c, h, w])?;
    let dy = ctx.upload_f32(&dyv, &[n, c, h, w])?;
    let (wt, bt) = (ctx.upload_f32(&wv, &[c])?, ctx.upload_f32(&bv, &[c])?);
    let dx = ctx.empty(&[n, c, h, w], DType::F32)?;
    let (dw, db) = (ctx.empty(&[c], DType::F32)?, ctx.empty(&[c], DType::F32)?);
    let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let group = op.starts_with("group_norm");
    let run: Record = if group {
        let gn = wgnorm::GroupNorm::new(
            ctx,
            wgnorm::GroupNormConfig {
                activation: wgnorm::Activation::Silu,
                ..wgnorm::GroupNormConfig::new(32)
            },
        )?;
        let (xt, dy, wt, bt, dx, dw, db) = (
            xt.clone(),
            dy.clone(),
            wt.clone(),
            bt.clone(),
            dx.clone(),
            dw.clone(),
            db.clone(),
        );
        let rec = move |enc: &mut wgpu::CommandEncoder| {
            gn.encode_backward(
                enc,
                &wgnorm::NormGradInputs {
                    x: &xt,
                    weight: Some(&wt),
                    bias: Some(&bt),
                    dy: &dy,
                    saved: None,
                },
                &wgnorm::NormGradOutputs {
                    dx: &dx,
                    dweight: Some(&dw),
                    dbias: Some(&db),
                },
            )
        };
        ctx.record_and_submit(&rec)?;
        Box::new(move |enc| rec(enc).expect("validated above"))
    } else {
        let bn = wgnorm::BatchNorm::new(ctx, Default::default())?;
        let (xt, dy, wt, dx, dw, db) = (
            xt.clone(),
            dy.clone(),
            wt.clone(),
            dx.clone(),
            dw.clone(),
            db.clone(),
        );
        let rec = move |enc: &mut wgpu::CommandEncoder| {
            bn.encode_backward(
                enc,
                &wgnorm::BatchNormGradInputs {
                    x: &xt,
                    weight: Some(&wt),
                    dy: &dy,
                    saved: None,
                    running_mean: None,
                    running_var: None,
                },
                &wgnorm::BatchNormGradOutputs {
                    dx: &dx,
                    dweight: Some(&dw),
                    dbias: Some(&db),
                },
                Mode::Train,
            )
        };
        ctx.record_and_submit(&rec)?;
        Box::new(move |enc| rec(enc).expect("validated above"))
    };
    let want = if group {
        wgnorm_reference::grad::group_norm_grad(
            &f(&x),
            n,
            c,
            hw,
            32,
            &f(&wv),
            &f(&bv),
            &f(&dyv),
            1e-5,
            true,
        )
    } else {
        wgnorm_reference::grad::batch_norm_grad(
            &f(&x),
            n,
            c,
            hw,
            Some(&f(&wv)),
            &f(&dyv),
            None,
            1e-5,
        )
    };
    Ok(Case {
        op,
        shape: vec![n, c, h, w],
        dtype: DType::F32,
        layout: "NCHW",
        bytes: 3 * numel as u64 * 4,
        kernel: "channel_grad reduce + partials + finalize + dx f32".into(),
        run,
        naive: None,
        check: Some(Check::Reference(dx, want.dx)),
    })
}
