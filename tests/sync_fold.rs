//! Synchronised BatchNorm through the Moments seam (several devices in one process) and
//! BatchNorm folding (host and GPU).

use wgnorm::batchnorm::{fold_batch_norm, FoldArgs, Moments};
use wgnorm::prelude::*;
use wgnorm_reference::chnorm as reference;
use wgnorm_tests::{assert_close, ctx, noise, round_to};

#[test]
fn batch_split_across_devices_matches_one_device() {
    let (n, c, hw) = (8, 6, 25);
    let x: Vec<f32> = noise(31, n * c * hw)
        .iter()
        .map(|v| v * 2.0 + 3.0)
        .collect();
    let (w, b) = (noise(32, c), noise(33, c));
    let want = reference::batch_norm(
        &round_to(DType::F32, &x),
        n,
        c,
        hw,
        Some(&round_to(DType::F32, &w)),
        Some(&round_to(DType::F32, &b)),
        &[0.0; 6],
        &[1.0; 6],
        true,
        0.1,
        true,
        1e-5,
    );
    // Three devices with uneven shares of the batch (3 + 3 + 2 samples), each its own Context.
    let shares = [3usize, 3, 2];
    let devices: Vec<Context> = (0..shares.len())
        .map(|_| Context::new().expect("a device per share"))
        .collect();
    let mut start = 0;
    let mut parts = Vec::new();
    for (dev, &k) in devices.iter().zip(&shares) {
        let slice = &x[start * c * hw..(start + k) * c * hw];
        parts.push((dev, dev.upload_f32(slice, &[k, c, 5, 5]).unwrap()));
        start += k;
    }
    // Step 1: moments on every device; the "all-reduce" is a download and a host merge here.
    let mut merged: Option<Moments> = None;
    let mut bns = Vec::new();
    for (dev, xt) in &parts {
        let bn = BatchNorm::new(dev, BatchNormConfig::default()).unwrap();
        let m = dev.empty(&[c, 3], DType::F32).unwrap();
        let mut enc = dev.device().create_command_encoder(&Default::default());
        bn.encode_reduce(&mut enc, xt, &m).unwrap();
        dev.queue().submit([enc.finish()]);
        let local = Moments::from_f32(&dev.download(&m).unwrap());
        merged = Some(match merged {
            None => local,
            Some(acc) => acc.merge(&local),
        });
        bns.push(bn);
    }
    let merged = merged.unwrap();
    assert_close(
        "merged mean",
        &merged.mean.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &want.mean,
        1e-5,
        1e-5,
    );
    assert_close(
        "merged var",
        &merged
            .variance()
            .iter()
            .map(|&v| v as f32)
            .collect::<Vec<_>>(),
        &want.var,
        1e-5,
        1e-4,
    );
    // Step 2: every device normalizes its share with the merged moments and updates its own
    // copy of the running statistics identically.
    let mut y_all = Vec::new();
    for ((dev, xt), bn) in parts.iter().zip(&bns) {
        let mm = dev.upload_f32(&merged.to_f32(), &[c, 3]).unwrap();
        let (wt, bt) = (
            dev.upload_f32(&w, &[c]).unwrap(),
            dev.upload_f32(&b, &[c]).unwrap(),
        );
        let (rm, rv) = (
            dev.upload_f32(&[0.0; 6], &[c]).unwrap(),
            dev.upload_f32(&[1.0; 6], &[c]).unwrap(),
        );
        let y = dev.empty(xt.shape(), DType::F32).unwrap();
        let mut enc = dev.device().create_command_encoder(&Default::default());
        bn.encode_synced(
            &mut enc,
            &BatchNormInputs {
                x: xt,
                weight: Some(&wt),
                bias: Some(&bt),
                running_mean: Some(&rm),
                running_var: Some(&rv),
            },
            &BatchNormOutputs { y: &y, saved: None },
            &mm,
        )
        .unwrap();
        dev.queue().submit([enc.finish()]);
        y_all.extend(dev.download(&y).unwrap());
        assert_close(
            "device running_mean",
            &dev.download(&rm).unwrap(),
            &want.running_mean,
            1e-6,
            1e-5,
        );
        assert_close(
            "device running_var",
            &dev.download(&rv).unwrap(),
            &want.running_var,
            1e-6,
            1e-5,
        );
    }
    assert_close("synced y", &y_all, &want.y, 2e-5, 1e-4);
}

#[test]
fn moments_merge_is_chan_not_a_naive_average() {
    // Two sets with different means: the merged M2 includes the between-set term.
    let a = Moments {
        count: vec![2.0],
        mean: vec![0.0],
        m2: vec![2.0],
    }; // {-1, 1}
    let b = Moments {
        count: vec![2.0],
        mean: vec![10.0],
        m2: vec![2.0],
    }; // {9, 11}
    let m = a.merge(&b);
    assert_eq!(m.count, vec![4.0]);
    assert!((m.mean[0] - 5.0).abs() < 1e-12);
    // {-1, 1, 9, 11}: squared deviations from 5 = 36 + 16 + 16 + 36 = 104.
    assert!((m.m2[0] - 104.0).abs() < 1e-9, "{m:?}");
    let empty = Moments {
        count: vec![0.0],
        mean: vec![0.0],
        m2: vec![0.0],
    };
    assert_eq!(empty.merge(&a), a);
}

#[test]
fn folded_linear_layer_equals_linear_then_batch_norm() {
    let c_ = ctx();
    let (o, k, batch) = (5, 7, 4);
    let w = noise(41, o * k);
    let b = noise(42, o);
    let (gamma, beta) = (noise(43, o), noise(44, o));
    let rm = noise(45, o);
    let rv: Vec<f32> = noise(46, o).iter().map(|v| v.abs() + 0.2).collect();
    let x = noise(47, batch * k);
    let eps = 1e-5f32;
    // linear then BN, in f64.
    let lin = |wt: &[f32], bt: &[f32]| -> Vec<f64> {
        (0..batch)
            .flat_map(|i| (0..o).map(move |j| (i, j)))
            .map(|(i, j)| {
                (0..k)
                    .map(|t| x[i * k + t] as f64 * wt[j * k + t] as f64)
                    .sum::<f64>()
                    + bt[j] as f64
            })
            .collect()
    };
    let h = lin(&w, &b);
    let bn_out = reference::batch_norm(
        &h,
        batch,
        o,
        1,
        Some(&round_to(DType::F32, &gamma)),
        Some(&round_to(DType::F32, &beta)),
        &round_to(DType::F32, &rm),
        &round_to(DType::F32, &rv),
        false,
        0.1,
        true,
        eps as f64,
    );
    let (wf, bf) = fold_batch_norm(&w, Some(&b), Some(&gamma), Some(&beta), &rm, &rv, eps).unwrap();
    let folded: Vec<f32> = lin(&wf, &bf).iter().map(|&v| v as f32).collect();
    assert_close("host fold", &folded, &bn_out.y, 1e-5, 1e-5);

    // The same on the GPU.
    let bn = BatchNorm::new(
        c_,
        BatchNormConfig {
            eps,
            ..Default::default()
        },
    )
    .unwrap();
    let up = |v: &[f32], s: &[usize]| c_.upload_f32(v, s).unwrap();
    let (wt, bt, gt, bet, rmt, rvt) = (
        up(&w, &[o, k]),
        up(&b, &[o]),
        up(&gamma, &[o]),
        up(&beta, &[o]),
        up(&rm, &[o]),
        up(&rv, &[o]),
    );
    let (wo, bo) = (
        c_.empty(&[o, k], DType::F32).unwrap(),
        c_.empty(&[o], DType::F32).unwrap(),
    );
    let mut enc = c_.device().create_command_encoder(&Default::default());
    bn.encode_fold(
        &mut enc,
        &FoldArgs {
            weight: &wt,
            bias: Some(&bt),
            gamma: Some(&gt),
            beta: Some(&bet),
            running_mean: &rmt,
            running_var: &rvt,
            weight_out: &wo,
            bias_out: &bo,
        },
    )
    .unwrap();
    c_.queue().submit([enc.finish()]);
    let to64 = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<_>>();
    assert_close(
        "gpu fold weight",
        &c_.download(&wo).unwrap(),
        &to64(&wf),
        1e-6,
        1e-5,
    );
    assert_close(
        "gpu fold bias",
        &c_.download(&bo).unwrap(),
        &to64(&bf),
        1e-6,
        1e-5,
    );
    // Without bias/gamma/beta: W' = W / sqrt(rv + eps), b' = -rm / sqrt(rv + eps).
    let (wf2, bf2) = fold_batch_norm(&w, None, None, None, &rm, &rv, eps).unwrap();
    let mut enc = c_.device().create_command_encoder(&Default::default());
    bn.encode_fold(
        &mut enc,
        &FoldArgs {
            weight: &wt,
            bias: None,
            gamma: None,
            beta: None,
            running_mean: &rmt,
            running_var: &rvt,
            weight_out: &wo,
            bias_out: &bo,
        },
    )
    .unwrap();
    c_.queue().submit([enc.finish()]);
    assert_close(
        "gpu fold plain bias",
        &c_.download(&bo).unwrap(),
        &to64(&bf2),
        1e-6,
        1e-5,
    );
    assert_close(
        "gpu fold plain weight",
        &c_.download(&wo).unwrap(),
        &to64(&wf2),
        1e-6,
        1e-5,
    );
    assert!(fold_batch_norm(&w, Some(&b[..3]), None, None, &rm, &rv, eps).is_err());
}
