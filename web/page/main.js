// Loads the wasm harness and runs the cases listed in cases/manifest.json; every line it logs
// starts with WGNORM (scripts/browser-conformance.sh reads them from the browser's log).
import init, { run_cases } from './pkg/wgnorm_web.js';

try {
  if (!navigator.gpu) {
    throw new Error('no navigator.gpu: this browser has no WebGPU (Chromium: --enable-unsafe-webgpu)');
  }
  await init();
  // ?limits=webgpu|adapter|downlevel (the script passes one; WebGPU's defaults otherwise).
  const limits = new URLSearchParams(location.search).get('limits') ?? 'webgpu';
  await run_cases('cases/manifest.json', limits);
} catch (e) {
  console.log(`WGNORM ERROR ${e && e.stack ? e.stack : e}`);
}
