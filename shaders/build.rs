//! Lists every `.wgsl` file of this package into `$OUT_DIR/sources.rs`: one constant per file,
//! the `ALL` table and the `wgsl!` macro, so a new shader needs no edit here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() && name != "src" && name != "target" && !name.starts_with('.') {
            walk(&p, out);
        } else if name.ends_with(".wgsl") {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root, &mut files);
    println!("cargo:rerun-if-changed={}", root.display());
    let mut consts = String::new();
    let mut table = String::from("/// Every shader file: its path under the shaders directory and its source.\npub const ALL: &[(&str, &str)] = &[\n");
    let mut arms = String::new();
    for (i, f) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f
            .strip_prefix(&root)
            .expect("under the package")
            .to_str()
            .expect("UTF-8 path")
            .replace('\\', "/");
        let abs = f.to_str().expect("UTF-8 path");
        writeln!(
            consts,
            "#[doc(hidden)]\npub const F{i}: &str = include_str!({abs:?});"
        )
        .unwrap();
        writeln!(table, "    ({rel:?}, F{i}),").unwrap();
        writeln!(arms, "    ({rel:?}) => {{ $crate::F{i} }};").unwrap();
    }
    table.push_str("];\n");
    let mac = format!(
        "/// The source of one shader file, by its path under the shaders directory (a constant).\n#[macro_export]\nmacro_rules! wgsl {{\n{arms}}}\n"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("sources.rs");
    std::fs::write(out, format!("{consts}\n{table}\n{mac}")).expect("write sources.rs");
}
