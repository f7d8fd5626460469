//! Static shader validation: every specialisation the runtime can create is parsed and validated
//! by naga, its overrides resolved, and translated to SPIR-V (Vulkan), MSL (Metal) and HLSL (DX12).

use anyhow::{anyhow, Result};
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

use wgnorm::engine::shader::{F16Access, Specialization};

/// The f16 accesses a device may compose `spec`'s module with (f16 modules come in both: the
/// device picks one).
pub fn accesses(spec: &Specialization) -> &'static [F16Access] {
    if spec.io.dtype == wgnorm::DType::F16 {
        &[F16Access::Packed, F16Access::Vector]
    } else {
        &[F16Access::Packed]
    }
}

/// `kernel [io]` or `kernel [io vector]`: how failures name a module.
pub fn module_label(spec: &Specialization, access: F16Access) -> String {
    match access {
        F16Access::Vector if spec.io.dtype == wgnorm::DType::F16 => {
            format!("{} [{} vector]", spec.kernel.name(), spec.io.label())
        }
        _ => format!("{} [{}]", spec.kernel.name(), spec.io.label()),
    }
}

fn capabilities() -> Capabilities {
    // What every backend can express; SUBGROUP_BARRIER has no HLSL path and no kernel uses it.
    spv::supported_capabilities() & msl::supported_capabilities() & hlsl::supported_capabilities()
}

fn check(spec: &Specialization, access: F16Access) -> Result<()> {
    let source = spec.kernel.source_with(spec.io, access);
    let (module, info) = Parsed::new(&source)?.specialize(spec)?;
    // Re-validate with the constants in place: array sizes and workgroup sizes are now concrete.
    Validator::new(ValidationFlags::all(), capabilities())
        .validate(&module)
        .map_err(|e| anyhow!("validate after overrides: {e:?}"))?;

    let spv_opts = spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    let spv_pipe = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: "main".into(),
    };
    spv::write_vec(&module, &info, &spv_opts, Some(&spv_pipe))
        .map_err(|e| anyhow!("spir-v: {e}"))?;

    let msl_opts = msl::Options {
        lang_version: (2, 4),
        fake_missing_bindings: true,
        ..Default::default()
    };
    let msl_pipe = msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, "main".into())),
        ..Default::default()
    };
    msl::write_string(&module, &info, &msl_opts, &msl_pipe).map_err(|e| anyhow!("msl: {e}"))?;

    let hlsl_opts = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_2,
        fake_missing_bindings: true,
        ..Default::default()
    };
    let hlsl_pipe = hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, "main".into())),
    };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_opts, &hlsl_pipe)
        .write(&module, &info, None)
        .map_err(|e| anyhow!("hlsl: {e}"))?;
    Ok(())
}

/// What a pipeline needs of a device's compute limits.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// Invocations per workgroup (`max_compute_invocations_per_workgroup`, and the largest
    /// dimension against `max_compute_workgroup_size_x`).
    pub invocations: u32,
    /// Bytes of workgroup memory (`max_compute_workgroup_storage_size`).
    pub workgroup_bytes: u32,
}

impl Needs {
    /// Whether a device made with `wgpu::Limits::default()` (WebGPU's defaults) can create it.
    pub fn fits_webgpu_defaults(self) -> bool {
        let l = wgpu::Limits::default();
        self.invocations <= l.max_compute_invocations_per_workgroup
            && self.invocations <= l.max_compute_workgroup_size_x
            && self.workgroup_bytes <= l.max_compute_workgroup_storage_size
    }
}

/// A module parsed and validated once, to read the needs of its specialisations.
pub struct Parsed {
    module: naga::Module,
    info: naga::valid::ModuleInfo,
}

impl Parsed {
    /// Parses and validates `source`.
    pub fn new(source: &str) -> Result<Parsed> {
        let module = naga::front::wgsl::parse_str(source)
            .map_err(|e| anyhow!("parse: {}", e.emit_to_string(source)))?;
        let info = Validator::new(ValidationFlags::all(), capabilities())
            .validate(&module)
            .map_err(|e| anyhow!("validate: {}", e.emit_to_string(source)))?;
        Ok(Parsed { module, info })
    }

    /// The module and its info with `spec`'s override constants resolved.
    fn specialize(&self, spec: &Specialization) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
        let constants: naga::back::PipelineConstants = spec
            .constants
            .iter()
            .map(|&(k, v)| (k.to_string(), v))
            .collect();
        let ep = (naga::ShaderStage::Compute, "main");
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &self.module,
            &self.info,
            Some(ep),
            &constants,
        )
        .map_err(|e| anyhow!("overrides: {e}"))?;
        Ok((module.into_owned(), info.into_owned()))
    }

    /// The workgroup size and memory of `spec`'s pipeline (overrides resolved).
    pub fn needs(&self, spec: &Specialization) -> Result<Needs> {
        let (module, _) = self.specialize(spec)?;
        let size = module.entry_points[0].workgroup_size;
        let mut layouter = naga::proc::Layouter::default();
        layouter
            .update(module.to_ctx())
            .map_err(|e| anyhow!("layout: {e}"))?;
        let workgroup_bytes = module
            .global_variables
            .iter()
            .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
            .map(|(_, v)| layouter[v.ty].size)
            .sum();
        Ok(Needs {
            invocations: size.iter().product(),
            workgroup_bytes,
        })
    }
}

/// Validates every specialisation; prints one line per kernel and I/O type. Returns success.
pub fn validate_all() -> Result<bool> {
    let specs = wgnorm::specializations();
    let mut failures = 0;
    let mut per_kernel: std::collections::BTreeMap<String, usize> = Default::default();
    let mut checked = 0;
    for spec in &specs {
        for &access in accesses(spec) {
            let label = module_label(spec, access);
            checked += 1;
            match check(spec, access) {
                Ok(()) => *per_kernel.entry(label).or_default() += 1,
                Err(e) => {
                    failures += 1;
                    println!("FAIL {label} {:?}: {e}", spec.constants);
                }
            }
        }
    }
    println!("## Shader validation (naga parse + validate, SPIR-V, MSL 2.4, HLSL SM 6.2)\n");
    println!("| kernel [io] | specialisations |\n|---|---|");
    for (k, n) in &per_kernel {
        println!("| {k} | {n} |");
    }
    println!(
        "\n{checked} modules ({} specialisations), {failures} failed\n",
        specs.len()
    );
    Ok(failures == 0)
}
