//! The core crate is the engines, not the methods: no source of `wgnorm-core` and no shader it
//! composes names a research method. A method reaches the engines through their extension points
//! (forward epilogues and mixers, the backward's gradient terms and denominators) from its own
//! crate; a name found here means a method's rule moved into an engine.

use std::path::{Path, PathBuf};

/// Research methods and the spellings their code goes by (matched case-insensitively). The
/// standard layers the engines exist for (BatchNorm, GroupNorm, InstanceNorm, LayerNorm,
/// RMSNorm) and activations are not methods in this sense.
const METHODS: &[&str] = &[
    "repbn",
    "rep_batch",
    "repbatch",
    "powernorm",
    "power_norm",
    "evonorm",
    "poincar",
    "ghost",
    "sinkhorn",
    "region norm",
    "region_norm",
    "unified",
    "ibn",
    "batch-channel",
    "batch_channel",
    "adab2n",
    "estbn",
    "unmix",
    "test-time",
    "test_time",
    "weight standardization",
    "weight_standardization",
    "progressive",
    "switchable",
    "mvn",
    "mean_variance",
    "lpnorm",
    "lp_norm",
    "qk_norm",
    "alpha_dropout",
    "alphadropout",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The shader files the core composes: every `shader_file!("...")` in its sources.
fn core_shaders(sources: &[(PathBuf, String)]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (_, text) in sources {
        for part in text.split("shader_file!(\"").skip(1) {
            let name = part.split('"').next().unwrap();
            out.push(root().join("shaders").join(name));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `(file, line number, method)` of every mention, word-boundary aware for short names.
fn mentions(path: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lower = line.to_lowercase();
        for m in METHODS {
            let hit = lower.match_indices(m).any(|(at, _)| {
                let before = lower[..at].chars().next_back();
                let after = lower[at + m.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
                // Short names (ibn, mvn) only as words; longer ones anywhere.
                m.len() > 4 || !(word(before) || word(after))
            });
            if hit {
                found.push(format!(
                    "{}:{}: {m}: {}",
                    path.display(),
                    i + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

#[test]
fn core_sources_and_shaders_name_no_research_method() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/wgnorm-core/src"), &mut files);
    assert!(files.len() > 20, "core sources not found: {files:?}");
    let sources: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect();
    let shaders = core_shaders(&sources);
    assert!(
        shaders.iter().any(|p| p.ends_with("channel_grad/dx.wgsl")),
        "the core's shaders were not found: {shaders:?}"
    );
    let mut found = Vec::new();
    for (p, t) in &sources {
        found.extend(mentions(p, t));
    }
    for p in &shaders {
        let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        found.extend(mentions(p, &t));
    }
    assert!(
        found.is_empty(),
        "wgnorm-core names methods (move the rule to the method's crate through an extension point):\n{}",
        found.join("\n")
    );
}

/// The scan finds what it looks for: a line naming a method is reported, a standard layer's is
/// not.
#[test]
fn the_scan_reports_a_method_and_not_a_standard_layer() {
    let p = Path::new("x.rs");
    assert_eq!(mentions(p, "// RepBN's alpha term").len(), 1);
    assert_eq!(mentions(p, "let e = EvoNorm::new();").len(), 1);
    assert_eq!(mentions(p, "// the IBN split").len(), 1);
    assert!(mentions(p, "// BatchNorm, GroupNorm and InstanceNorm").is_empty());
    assert!(mentions(p, "let ibnd = 1; // mvnx").is_empty());
}
