//! The QK-norm row of `cargo xtask bench`: per-head RMSNorm + RoPE in one pass against the
//! unfused sequence (a norm-only pass writing a temporary, then a rotation-only pass), checked
//! against the f64 reference. The angles come from cos/sin tables computed in f64 on the host,
//! as inference engines cache them (angles computed in f32 from positions lose ~pos * 6e-8 rad,
//! 1e-4 at 2k tokens). Bytes counted: x read once, y written once.

use anyhow::Result;
use wgnorm::engine::binding::{self, BindCache};
use wgnorm::engine::shader::Io;
use wgnorm::rmsnorm::qk_rope::{self, QkRopeParams};
use wgnorm::rmsnorm::{QkNormRope, QkNormRopeConfig, QkNormRopeInputs, RopeAngles, RopeLayout};
use wgnorm::{Context, DType, Tensor};

use crate::bench::{pattern, Case, Check, Record};

/// `x[tokens, heads, d]`, NeoX rotation of the whole head from cos/sin tables, with a weight.
pub fn qk_rope_case(ctx: &Context, [tokens, heads, d]: [usize; 3]) -> Result<Case> {
    let numel = tokens * heads * d;
    let x = pattern(11, numel, 0.0, 4.0);
    let w = pattern(12, d, 1.0, 0.5);
    // Angles of token t, pair p: t * 10000^(-2p / d), in f64.
    let half = d / 2;
    let angle = |i: usize| (i / half) as f64 * 10_000f64.powf(-2.0 * (i % half) as f64 / d as f64);
    let cos: Vec<f32> = (0..tokens * half).map(|i| angle(i).cos() as f32).collect();
    let sin: Vec<f32> = (0..tokens * half).map(|i| angle(i).sin() as f32).collect();
    let xt = ctx.upload_f32(&x, &[tokens, heads, d])?;
    let wt = ctx.upload_f32(&w, &[d])?;
    let ct = ctx.upload_f32(&cos, &[tokens, half])?;
    let st = ctx.upload_f32(&sin, &[tokens, half])?;
    let y = ctx.empty(&[tokens, heads, d], DType::F32)?;
    let op = QkNormRope::new(ctx, QkNormRopeConfig::default())?;
    let run: Record = {
        let (xt, wt, ct, st, y) = (xt.clone(), wt.clone(), ct.clone(), st.clone(), y.clone());
        let rec = move |enc: &mut wgpu::CommandEncoder| {
            op.encode(
                enc,
                &QkNormRopeInputs {
                    x: &xt,
                    weight: Some(&wt),
                    angles: RopeAngles::Table { cos: &ct, sin: &st },
                },
                &y,
            )
        };
        ctx.record_and_submit(&rec)?;
        Box::new(move |enc| rec(enc).expect("validated above"))
    };
    let naive = unfused(ctx, [tokens, heads, d], [&xt, &wt, &ct, &st])?;
    let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let want = wgnorm_reference::rownorm::qk_norm_rope(
        &f(&x),
        heads,
        d,
        Some(&f(&w)),
        0.0,
        1e-6,
        d,
        true,
        wgnorm_reference::rownorm::RopeRef::Table {
            cos: &f(&cos),
            sin: &f(&sin),
        },
    );
    Ok(Case {
        op: "qk_norm_rope",
        shape: vec![tokens, heads, d],
        dtype: DType::F32,
        layout: "row-major",
        bytes: 2 * numel as u64 * 4,
        kernel: qk_kernel_name(ctx, d),
        run,
        naive: Some(naive),
        check: Some(Check::Reference(y, want)),
    })
}

/// The forward's kernel for head dim `d` (full NeoX rotation, f32) on this adapter.
fn qk_kernel_name(ctx: &Context, d: usize) -> String {
    let class = wgnorm::engine::rownorm::AdapterClass::of(ctx);
    match qk_rope::TeamPlan::of(&class, d, d, RopeLayout::NeoX, DType::F32) {
        Some(p) => format!(
            "regs team{}x{}x{} f32x4 (norm + rotation in registers)",
            p.team, p.rows_per_group, p.rows_per_team
        ),
        None => "workgroup per row (norm + rotation in one pass)".into(),
    }
}

/// The unfused baseline: the norm alone into a temporary, then the rotation alone.
fn unfused(
    ctx: &Context,
    [tokens, heads, d]: [usize; 3],
    [xt, wt, ct, st]: [&Tensor; 4],
) -> Result<Record> {
    let tmp = ctx.empty(&[tokens, heads, d], DType::F32)?;
    let y2 = ctx.empty(&[tokens, heads, d], DType::F32)?;
    let params = QkRopeParams {
        rows: (tokens * heads) as u32,
        heads: heads as u32,
        d: d as u32,
        rot: d as u32,
        eps: 1e-6,
        weight_offset: 0.0,
        _pad0: 0,
        _pad1: 0,
    };
    let r = |t: &Tensor, what| binding::storage_range(ctx, what, t);
    let dr = binding::dummy_range(ctx.dummy_read());
    let binds = BindCache::default();
    let (xr, wr, cr, sr, tr, yr) = (
        r(xt, "x")?,
        r(wt, "w")?,
        r(ct, "cos")?,
        r(st, "sin")?,
        r(&tmp, "tmp")?,
        r(&y2, "y")?,
    );
    let norm_params = QkRopeParams { rot: 0, ..params };
    let slots = qk_rope::QK_ROPE_SLOTS;
    let b_norm = binds.get(ctx, slots, &norm_params, &[&xr, &wr, &dr, &dr, &dr, &tr])?;
    let b_rot = binds.get(ctx, slots, &params, &[&tr, &dr, &dr, &cr, &sr, &yr])?;
    // The same lanes per row as the fused op on this adapter.
    let (io, wg) = (Io::F32, qk_rope::qk_rope_wg(ctx.is_cpu()));
    let norm_spec = qk_rope::qk_rope_spec(io, d, true, RopeLayout::NeoX, 2);
    let rot_spec = qk_rope::qk_rope_spec_with(io, d, false, RopeLayout::NeoX, 1, false);
    let p_norm = ctx.pipeline(&qk_rope::with_wg(norm_spec, wg))?;
    let p_rot = ctx.pipeline(&qk_rope::with_wg(rot_spec, wg))?;
    let groups = binding::grid(ctx, (tokens * heads) as u64);
    let keep = (tmp, y2);
    Ok(Box::new(move |enc: &mut wgpu::CommandEncoder| {
        let _keep = &keep;
        let mut pass = enc.begin_compute_pass(&Default::default());
        for (pipe, bind) in [(&p_norm, &b_norm), (&p_rot, &b_rot)] {
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        }
    }))
}

/// QK-norm + RoPE's backward: dy rotated back, then the per-head RMSNorm backward (dx and the
/// shared dweight), against the f64 reference gradients. Bytes: x and dy read, dx written.
pub fn qk_rope_grad_case(ctx: &Context, [tokens, heads, d]: [usize; 3]) -> Result<Case> {
    use wgnorm::rmsnorm::{QkNormRopeGradInputs, QkNormRopeGradOutputs};
    let numel = tokens * heads * d;
    let (x, dyv, w) = (
        pattern(21, numel, 0.0, 4.0),
        pattern(22, numel, 0.0, 1.0),
        pattern(23, d, 1.0, 0.5),
    );
    let half = d / 2;
    let angle = |i: usize| (i / half) as f64 * 10_000f64.powf(-2.0 * (i % half) as f64 / d as f64);
    let cos: Vec<f32> = (0..tokens * half).map(|i| angle(i).cos() as f32).collect();
    let sin: Vec<f32> = (0..tokens * half).map(|i| angle(i).sin() as f32).collect();
    let shape = [tokens, heads, d];
    let (xt, dy, wt) = (
        ctx.upload_f32(&x, &shape)?,
        ctx.upload_f32(&dyv, &shape)?,
        ctx.upload_f32(&w, &[d])?,
    );
    let (ct, st) = (
        ctx.upload_f32(&cos, &[tokens, half])?,
        ctx.upload_f32(&sin, &[tokens, half])?,
    );
    let (dx, dw) = (ctx.empty(&shape, DType::F32)?, ctx.empty(&[d], DType::F32)?);
    let op = QkNormRope::new(ctx, QkNormRopeConfig::default())?;
    let run: Record = {
        let (xt, dy, wt, ct, st, dx, dw) = (
            xt.clone(),
            dy.clone(),
            wt.clone(),
            ct.clone(),
            st.clone(),
            dx.clone(),
            dw.clone(),
        );
        let rec = move |enc: &mut wgpu::CommandEncoder| {
            let inputs = QkNormRopeGradInputs {
                x: &xt,
                weight: Some(&wt),
                angles: RopeAngles::Table { cos: &ct, sin: &st },
                dy: &dy,
            };
            let outputs = QkNormRopeGradOutputs {
                dx: &dx,
                dweight: Some(&dw),
            };
            op.encode_backward(enc, &inputs, &outputs)
        };
        ctx.record_and_submit(&rec)?;
        Box::new(move |enc| rec(enc).expect("validated above"))
    };
    let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let (cd, sd) = (f(&cos), f(&sin));
    let want = wgnorm_reference::grad::qk_norm_rope_grad(
        &f(&x),
        (heads, d),
        (Some(&f(&w)), 0.0),
        1e-6,
        (
            d,
            true,
            wgnorm_reference::rownorm::RopeRef::Table { cos: &cd, sin: &sd },
        ),
        &f(&dyv),
    );
    Ok(Case {
        op: "qk_norm_rope_backward",
        shape: shape.to_vec(),
        dtype: DType::F32,
        layout: "row-major",
        bytes: 3 * numel as u64 * 4,
        kernel: "rotation back + row_grad (rms)".into(),
        run,
        naive: None,
        check: Some(Check::Reference(dx, want.dx)),
    })
}
