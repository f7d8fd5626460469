use wgnorm_tests::*;
use wgnorm_core::rownorm::*;
use wgnorm_core::DType;
#[test]
fn smoke() {
    let c = ctx();
    eprintln!("{:?} {:?} {:?}", c.adapter_info(), c.features(), c.limits().max_compute_workgroup_storage_size);
    for &(rows, n) in &[(3usize, 5usize), (4, 8), (2, 4097), (5, 768)] {
        let x = noise(1, rows * n);
        let t = c.upload_f32(&x, &[rows, n]).unwrap();
        let ln = RowNorm::new(c, RowNormConfig { mode: RowMode::LayerNorm, axis: -1, eps: 1e-5, weight_offset: 0.0, dtype: DType::F32 }).unwrap();
        eprintln!("{:?}", ln.kernel_for(&t));
        let (y, m, r) = ln.forward(&t, None, None, true).unwrap();
        let got = c.download(&y).unwrap();
        let want = wgnorm_reference::rownorm::layer_norm(&round_to(DType::F32, &x), n, None, None, 1e-5);
        assert_close("y", &got, &want.y, 1e-5, 1e-5);
        assert_close("mean", &c.download(&m.unwrap()).unwrap(), &want.mean, 1e-6, 1e-5);
        assert_close("rstd", &c.download(&r.unwrap()).unwrap(), &want.rstd, 1e-6, 1e-5);
    }
}
