//! The op registry (`wgnorm::registry::OPS`) against the tree: every public op of a family
//! crate is registered (and so exported at the facade's root: an entry for a type that is not
//! does not compile), every case signature of `tests/conformance/FORMAT.md` belongs to a
//! registered op and every registered signature is documented there, no signature is
//! registered twice, and an op registered as fuzzed is called by `cargo xtask fuzz`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use wgnorm::registry::{signatures, OPS};

const FAMILIES: &[&str] = &[
    "wgnorm-layernorm",
    "wgnorm-rmsnorm",
    "wgnorm-batchnorm",
    "wgnorm-groupnorm",
    "wgnorm-powernorm",
    "wgnorm-poincare",
    "wgnorm-selfnorm",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn sources(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(&p).unwrap());
        }
    }
}

/// The types of `text` with an inherent `impl` block holding a public fn that records into an
/// encoder (`&mut wgpu::CommandEncoder`): the crate's ops.
fn ops_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("\nimpl ") {
        rest = &rest[at + 6..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let header_end = rest.find('\n').unwrap_or(rest.len());
        // Inherent impls only (`impl Name {`), not `impl Trait for Name`.
        if name.is_empty() || rest[..header_end].trim_end() != format!("{name} {{") {
            continue;
        }
        let body = &rest[..rest.find("\n}\n").unwrap_or(rest.len())];
        let records = body
            .split("pub fn ")
            .skip(1)
            .any(|f| f[..f.find('{').unwrap_or(f.len())].contains("&mut wgpu::CommandEncoder"));
        if records {
            out.insert(name);
        }
    }
    out
}

fn public_ops() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for family in FAMILIES {
        let mut texts = Vec::new();
        sources(&root().join("crates").join(family).join("src"), &mut texts);
        for t in &texts {
            all.extend(ops_in(t));
        }
    }
    all
}

#[test]
fn every_public_op_is_registered_and_every_entry_is_an_op() {
    let found = public_ops();
    assert!(found.len() > 20, "the scan found too few ops: {found:?}");
    let registered: BTreeSet<String> = OPS.iter().map(|e| e.name.to_string()).collect();
    let missing: Vec<_> = found.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "public ops not in wgnorm::registry::OPS: {missing:?}"
    );
    // The core's one op (the elementwise activations) is registered by hand.
    let stale: Vec<_> = registered
        .difference(&found)
        .filter(|n| *n != "Elementwise")
        .collect();
    assert!(
        stale.is_empty(),
        "registry entries that are no op: {stale:?}"
    );
}

/// The op names of FORMAT.md's signature tables: a row's first cell's backticked name.
fn documented_signatures() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("tests/conformance/FORMAT.md")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_documented_signature_is_registered_once_and_the_reverse() {
    let documented = documented_signatures();
    assert!(documented.contains("layer_norm") && documented.contains("evonorm_s0_grad"));
    let registered: Vec<&str> = signatures().map(|(n, _)| n).collect();
    let unique: BTreeSet<String> = registered.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        unique.len(),
        registered.len(),
        "a signature is registered twice"
    );
    let undocumented: Vec<_> = unique.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "registered but not in FORMAT.md: {undocumented:?}"
    );
    let unregistered: Vec<_> = documented.difference(&unique).collect();
    assert!(
        unregistered.is_empty(),
        "in FORMAT.md but not registered: {unregistered:?}"
    );
}

#[test]
fn every_op_registered_as_fuzzed_is_called_by_the_fuzzer() {
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(root().join("xtask/src")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("fuzz") && name.ends_with(".rs") {
            texts.push(std::fs::read_to_string(&p).unwrap());
        }
    }
    let fuzz = texts.join("\n");
    for e in OPS {
        // The fuzzer creates the op: `Name::new(` (possibly path-qualified).
        let created = fuzz.contains(&format!("{}::new(", e.name));
        match e.fuzzed {
            Ok(()) => assert!(
                created,
                "{} is registered as fuzzed, the fuzzer never creates it",
                e.name
            ),
            Err(why) => {
                assert!(!why.is_empty(), "{}: say why it is not fuzzed", e.name);
                assert!(!created, "{} is fuzzed: register it so", e.name);
            }
        }
    }
}

/// The scan sees an op and not a helper.
#[test]
fn the_scan_finds_encoding_types_only() {
    let src = "\nimpl Op {\n    pub fn encode(\n        &self,\n        enc: &mut wgpu::CommandEncoder,\n    ) -> Result<()> {\n        todo!()\n    }\n}\n\nimpl Helper {\n    pub fn size(&self) -> usize {\n        1\n    }\n}\n\nimpl Default for Op {\n    fn default() -> Op {\n        todo!()\n    }\n}\n";
    assert_eq!(ops_in(src), BTreeSet::from(["Op".to_string()]));
}
