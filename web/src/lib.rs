//! wgnorm's conformance cases in a browser: the page fetches a manifest of case files, and
//! [`run_cases`] runs each through the same runner as `cargo xtask conformance`
//! (`wgnorm::conformance`), on the page's WebGPU device, logging every failure and a closing
//! `N passed, N failed` line to the console, where `scripts/browser-conformance.sh` reads them.

use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wgnorm::conformance::{self, Outcome};

/// Every line the harness prints starts with this, so the script can find it in the browser's
/// log.
const TAG: &str = "WGNORM";

fn log(line: &str) {
    web_sys::console::log_1(&format!("{TAG} {line}").into());
}

/// The bytes at `url`, fetched relative to the page.
async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("fetch {url}: {e:?}"))?;
    let response: web_sys::Response = response.dyn_into().map_err(|_| "not a Response")?;
    if !response.ok() {
        return Err(format!("fetch {url}: HTTP {}", response.status()));
    }
    let buffer = response
        .array_buffer()
        .map_err(|e| format!("fetch {url}: {e:?}"))?;
    let buffer = JsFuture::from(buffer)
        .await
        .map_err(|e| format!("fetch {url}: {e:?}"))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Runs the cases listed in the JSON array at `manifest` (paths relative to the page) on a
/// device with `limits` (`webgpu`: WebGPU's defaults, `adapter`, `downlevel`); returns the
/// closing line. A case that cannot be fetched or parsed fails; an op the runner lacks fails
/// (skipped cases are failures here, as in CI).
#[wasm_bindgen]
pub async fn run_cases(manifest: String, limits: String) -> Result<String, JsValue> {
    let err = |e: wgnorm::Error| JsValue::from_str(&e.to_string());
    let options = wgnorm::DeviceOptions {
        limits: limits.parse().map_err(err)?,
        ..Default::default()
    };
    let ctx = wgnorm::Context::new_async_with(options)
        .await
        .map_err(err)?;
    let info = ctx.adapter_info();
    let l = ctx.limits();
    log(&format!(
        "adapter: {} ({:?}), features {:?}, f16 access {:?}, limits {limits}: {} storage buffers per stage, {} B workgroup memory, {} invocations",
        info.name,
        info.backend,
        ctx.features(),
        ctx.f16_access(),
        l.max_storage_buffers_per_shader_stage,
        l.max_compute_workgroup_storage_size,
        l.max_compute_invocations_per_workgroup,
    ));
    let list = fetch(&manifest).await.map_err(|e| JsValue::from_str(&e))?;
    let files: Vec<String> =
        json_strings(&list).map_err(|e| JsValue::from_str(&format!("{manifest}: {e}")))?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        let outcome = match fetch(file).await {
            Ok(bytes) => {
                let name = file.rsplit('/').next().unwrap_or(file);
                match conformance::parse(name, &bytes) {
                    Ok(case) => conformance::run_async(&ctx, &case).await,
                    Err(e) => Outcome::Failed(e),
                }
            }
            Err(e) => Outcome::Failed(e),
        };
        match outcome {
            Outcome::Passed => passed += 1,
            Outcome::Failed(why) => {
                failed += 1;
                log(&format!("FAIL {file}: {why}"));
            }
            Outcome::Skipped => {
                failed += 1;
                log(&format!("FAIL {file}: op not implemented (skipped)"));
            }
        }
    }
    let line = format!("{passed} passed, {failed} failed");
    log(&format!("DONE {line}"));
    Ok(line)
}

/// A JSON array of strings.
fn json_strings(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let parsed = js_sys::JSON::parse(text).map_err(|e| format!("{e:?}"))?;
    let array: js_sys::Array = parsed.dyn_into().map_err(|_| "not a JSON array")?;
    array
        .iter()
        .map(|v| v.as_string().ok_or_else(|| "not a string".to_string()))
        .collect()
}
