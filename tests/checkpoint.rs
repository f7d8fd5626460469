//! Loading norm parameters by name from safetensors files: dtype conversion on load, and errors
//! that name the tensor.

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use wgnorm::checkpoint::Checkpoint;
use wgnorm::rmsnorm::QkNormRopeConfig;
use wgnorm::{
    BatchNormConfig, DType, Error, GroupNormConfig, InstanceNormConfig, LayerNormConfig,
    RmsNormConfig,
};
use wgnorm_tests::ctx;

fn bytes(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::I64 => v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
        _ => unreachable!(),
    }
}

/// A safetensors file of `(name, dtype, shape, values)` written under the temp directory.
fn file(tag: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<f32>)]) -> std::path::PathBuf {
    let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, d, s, v)| (n.to_string(), *d, s.clone(), bytes(*d, v)))
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let path = std::env::temp_dir().join(format!(
        "wgnorm-ckpt-{}-{tag}.safetensors",
        std::process::id()
    ));
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn checkpoint_error(e: Error) -> (String, String) {
    match e {
        Error::Checkpoint { name, why } => (name, why),
        other => panic!("expected a checkpoint error, got {other}"),
    }
}

#[test]
fn hf_names_in_f32_f16_and_bf16_load_converted_to_the_layer_dtype() {
    let c = ctx();
    let w = vec![1.0, -2.5, 0.375, 1024.0];
    let path = file(
        "dtypes",
        &[
            (
                "model.layers.3.input_layernorm.weight",
                Dtype::BF16,
                vec![4],
                w.clone(),
            ),
            (
                "model.layers.3.post_attention_layernorm.weight",
                Dtype::F16,
                vec![4],
                w.clone(),
            ),
            ("encoder.ln.weight", Dtype::F32, vec![4], w.clone()),
            ("encoder.ln.bias", Dtype::BF16, vec![4], vec![0.5; 4]),
        ],
    );
    let ck = Checkpoint::open(&path).unwrap();
    assert_eq!(ck.names().unwrap().len(), 4);
    for (prefix, dtype) in [
        ("model.layers.3.input_layernorm", DType::F16),
        ("model.layers.3.post_attention_layernorm", DType::F32),
    ] {
        let cfg = RmsNormConfig {
            dtype,
            ..Default::default()
        };
        let (_, p) = ck.rms_norm(c, prefix, cfg).unwrap();
        let weight = p.weight.unwrap();
        assert_eq!(weight.dtype(), dtype);
        assert_eq!(
            c.download(&weight).unwrap(),
            w,
            "{prefix}: exact in bf16, f16 and f32"
        );
    }
    let qk = QkNormRopeConfig {
        dtype: DType::BF16,
        ..Default::default()
    };
    let (_, p) = ck
        .qk_norm_rope(c, "model.layers.3.input_layernorm", qk)
        .unwrap();
    assert_eq!(
        c.download(&p.weight.unwrap()).unwrap(),
        w,
        "bf16 kept as bf16"
    );
    let (_, p) = ck
        .instance_norm(c, "encoder.ln", InstanceNormConfig::default())
        .unwrap();
    assert_eq!(p.bias.unwrap().dtype(), DType::F32);
    let (_, p) = ck
        .layer_norm(c, "encoder.ln", LayerNormConfig::default())
        .unwrap();
    assert_eq!(c.download(&p.bias.unwrap()).unwrap(), vec![0.5; 4]);
    assert_eq!(p.channels, 4);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn batch_norm_statistics_and_the_batch_counter_load() {
    let c = ctx();
    let path = file(
        "bn",
        &[
            (
                "layer1.0.bn1.weight",
                Dtype::F32,
                vec![3],
                vec![1.0, 2.0, 3.0],
            ),
            (
                "layer1.0.bn1.bias",
                Dtype::F32,
                vec![3],
                vec![0.0, 0.1, 0.2],
            ),
            (
                "layer1.0.bn1.running_mean",
                Dtype::F16,
                vec![3],
                vec![0.5, -0.5, 2.0],
            ),
            (
                "layer1.0.bn1.running_var",
                Dtype::F32,
                vec![3],
                vec![1.5, 2.0, 0.25],
            ),
            (
                "layer1.0.bn1.num_batches_tracked",
                Dtype::I64,
                vec![],
                vec![1200.0],
            ),
            (
                "layer1.0.bn2.running_mean",
                Dtype::F32,
                vec![3],
                vec![0.0; 3],
            ),
        ],
    );
    let ck = Checkpoint::open(&path).unwrap();
    let (_, p) = ck
        .batch_norm(c, "layer1.0.bn1", BatchNormConfig::default())
        .unwrap();
    assert_eq!(p.num_batches_tracked, Some(1200));
    assert_eq!(
        c.download(p.running_mean.as_ref().unwrap()).unwrap(),
        vec![0.5, -0.5, 2.0]
    );
    assert_eq!(p.running_var.as_ref().unwrap().dtype(), DType::F32);
    let e = ck
        .batch_norm(c, "layer1.0.bn2", BatchNormConfig::default())
        .err()
        .unwrap();
    let (name, why) = checkpoint_error(e);
    assert_eq!(name, "layer1.0.bn2.running_var");
    assert!(why.contains("missing"), "{why}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn every_mismatch_is_an_error_naming_the_tensor() {
    let c = ctx();
    let path = file(
        "bad",
        &[
            ("a.weight", Dtype::F32, vec![2, 2], vec![1.0; 4]),
            ("b.weight", Dtype::F32, vec![4], vec![1.0; 4]),
            ("b.bias", Dtype::F32, vec![3], vec![0.0; 3]),
            ("c.weight", Dtype::I64, vec![2], vec![1.0; 2]),
            ("d.weight", Dtype::F32, vec![6], vec![1.0; 6]),
            ("d.bias", Dtype::F32, vec![6], vec![0.0; 6]),
        ],
    );
    let ck = Checkpoint::open(&path).unwrap();
    let ln = LayerNormConfig::default();
    let cases: Vec<(Error, &str, &str)> = vec![
        (ck.layer_norm(c, "a", ln).err().unwrap(), "a.weight", "1-D"),
        (
            ck.layer_norm(c, "b", ln).err().unwrap(),
            "b.bias",
            "3 values",
        ),
        (ck.layer_norm(c, "c", ln).err().unwrap(), "c.weight", "I64"),
        (
            ck.layer_norm(c, "zz", ln).err().unwrap(),
            "zz.weight",
            "none of",
        ),
        (
            ck.rms_norm(c, "d", RmsNormConfig::default()).err().unwrap(),
            "d.bias",
            "no bias",
        ),
        (
            ck.group_norm(c, "d", GroupNormConfig::new(4))
                .err()
                .unwrap(),
            "d.weight",
            "6 channels in 4 groups",
        ),
    ];
    for (e, want_name, want_why) in cases {
        let (name, why) = checkpoint_error(e);
        assert_eq!(name, want_name);
        assert!(why.contains(want_why), "{name}: {why}");
    }
    // The batch-statistics family takes f32 affine parameters for f16 activations too.
    let gn = GroupNormConfig {
        dtype: DType::F16,
        ..GroupNormConfig::new(3)
    };
    let (_, p) = ck.group_norm(c, "d", gn).unwrap();
    assert_eq!(p.weight.unwrap().dtype(), DType::F32);
    std::fs::remove_file(&path).unwrap();
    let not_st = std::env::temp_dir().join(format!("wgnorm-ckpt-{}-junk", std::process::id()));
    std::fs::write(&not_st, b"not a checkpoint").unwrap();
    assert!(matches!(
        Checkpoint::open(&not_st),
        Err(Error::Checkpoint { .. })
    ));
    std::fs::remove_file(not_st).unwrap();
}
