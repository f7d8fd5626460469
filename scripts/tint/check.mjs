// Compiles WGSL modules with Dawn's WGSL compiler (Tint), as Chrome and Edge do, and creates
// their compute pipelines with explicit bind-group layouts. Driven by `cargo xtask validate
// --tint`, which composes the sources exactly as the runtime does for a browser device.
//
// Usage: node check.mjs JOBS.jsonl FIRST
//   JOBS.jsonl: one job per line: {"label", "source",
//               "slots": ["uniform"|"read"|"read_write"|"unused", by binding number],
//               "pipelines": [{"key", "constants": {NAME: number}}]}
//   FIRST: the index of the first job to run (the driver restarts after a crash of dawn.node).
// Prints one JSON line per job: {"job": i, "errors": [{"key"?, "message"}]} (empty: passed).
// The device has WebGPU's default limits except those raised to the adapter's maximum that a
// kernel variant may be chosen for (workgroup size and memory, storage buffers per stage):
// the limits themselves are the runtime's business (`cargo xtask conformance --limits webgpu`);
// this checks what the compiler accepts.
import { readFileSync } from 'node:fs';
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);

const [jobsPath, firstArg] = process.argv.slice(2);
const first = Number(firstArg ?? 0);
const jobs = readFileSync(jobsPath, 'utf8').split('\n').filter((l) => l.length > 0);

const gpu = create(['backend=null']);
const adapter = await gpu.requestAdapter();
const wanted = ['shader-f16', 'subgroups'].filter((f) => adapter.features.has(f));
const raise = [
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
];
const requiredLimits = Object.fromEntries(raise.map((k) => [k, adapter.limits[k]]));
const device = await adapter.requestDevice({ requiredFeatures: wanted, requiredLimits });

const kinds = {
  uniform: { type: 'uniform' },
  read: { type: 'read-only-storage' },
  read_write: { type: 'storage' },
};

// The source's own line for a compiler message, so a failure reads without the module at hand.
function withLine(source, msg) {
  const line = source.split('\n')[msg.lineNum - 1] ?? '';
  return `line ${msg.lineNum}: ${msg.message.trim()}\n    ${line.trim()}`;
}

async function scoped(f) {
  device.pushErrorScope('validation');
  device.pushErrorScope('internal');
  const value = f();
  const internal = await device.popErrorScope();
  const validation = await device.popErrorScope();
  return { value, error: validation ?? internal };
}

async function check(job) {
  const errors = [];
  const { value: module, error } = await scoped(() => device.createShaderModule({ code: job.source }));
  const info = await module.getCompilationInfo();
  const messages = info.messages.filter((m) => m.type === 'error');
  if (messages.length > 0 || error) {
    for (const m of messages) errors.push({ message: withLine(job.source, m) });
    if (messages.length === 0) errors.push({ message: error.message });
    return errors;
  }
  const entries = job.slots
    .map((s, i) => ({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: kinds[s] }))
    .filter((e) => e.buffer !== undefined);
  const { value: layout, error: layoutError } = await scoped(() => {
    const bgl = device.createBindGroupLayout({ entries });
    return device.createPipelineLayout({ bindGroupLayouts: [bgl] });
  });
  if (layoutError) return [{ message: `bind group layout: ${layoutError.message}` }];
  for (const p of job.pipelines) {
    const { error: e } = await scoped(() =>
      device.createComputePipeline({ layout, compute: { module, entryPoint: 'main', constants: p.constants } }),
    );
    if (e) errors.push({ key: p.key, message: e.message });
  }
  return errors;
}

for (let i = first; i < jobs.length; i++) {
  const errors = await check(JSON.parse(jobs[i]));
  process.stdout.write(`${JSON.stringify({ job: i, errors })}\n`);
}
device.destroy();
process.exit(0);
