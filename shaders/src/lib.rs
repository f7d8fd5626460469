//! The WGSL sources of wgnorm's kernels, embedded at compile time.
//!
//! Kernels are short files per op (`row_norm/`, `channel_norm/`, `batch_norm/`, ...) composed
//! with shared snippets (`common/`: I/O per dtype and vector width, mergeable moments,
//! reductions). `wgnorm-core` specialises and composes them; this crate only carries the text
//! so every crate of wgnorm builds from its own package.
//!
//! ```
//! let apply = wgnorm_shaders::wgsl!("channel_norm/apply.wgsl");
//! assert!(apply.contains("@compute"));
//! assert!(wgnorm_shaders::ALL.iter().any(|(path, _)| *path == "common/moments.wgsl"));
//! ```

include!(concat!(env!("OUT_DIR"), "/sources.rs"));

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_is_listed_once_and_is_not_empty() {
        let mut paths: Vec<&str> = super::ALL.iter().map(|(p, _)| *p).collect();
        assert!(paths.len() > 40, "{} files", paths.len());
        assert!(super::ALL.iter().all(|(_, s)| !s.trim().is_empty()));
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), super::ALL.len());
    }
}
