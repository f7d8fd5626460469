//! Pipelines cached across runs: a context caching its pipelines hands back data that a second
//! context loads, and the ops compute the same bits with the loaded cache; a device without
//! `PIPELINE_CACHE` reports that no cache is in use.

use wgnorm::prelude::*;
use wgnorm_tests::noise;

fn layer_norm_bits(ctx: &Context) -> Vec<u32> {
    let (rows, n) = (8, 1000);
    let x = ctx.upload_f32(&noise(3, rows * n), &[rows, n]).unwrap();
    let ln = LayerNorm::new(ctx, LayerNormConfig::default()).unwrap();
    let y = ln
        .forward(&LayerNormInputs {
            x: &x,
            weight: None,
            bias: None,
        })
        .unwrap();
    ctx.download(&y.y)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn a_saved_pipeline_cache_is_loaded_by_the_next_context() {
    let first = wgnorm_tests::context(None);
    if !first
        .features()
        .contains(wgnorm::wgpu::Features::PIPELINE_CACHE)
    {
        // The browser and non-Vulkan backends: no cache, reported as such.
        assert!(!first.enable_pipeline_cache().unwrap());
        assert!(first.pipeline_cache_data().is_none());
        return;
    }
    assert!(first.enable_pipeline_cache().unwrap());
    let want = layer_norm_bits(&first);
    let data = first.pipeline_cache_data().expect("a cache with data");
    assert!(!data.is_empty());
    assert!(first.pipeline_cache_key().is_some());
    let second = wgnorm_tests::context(None);
    // SAFETY: the bytes come from pipeline_cache_data on this machine, this run.
    assert!(unsafe { second.load_pipeline_cache(&data) }.unwrap());
    assert_eq!(layer_norm_bits(&second), want);
    eprintln!("pipeline cache: {} bytes after one LayerNorm", data.len());
}
