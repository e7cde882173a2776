//! Replaying a committed corpus directory (`fuzz/corpus/<target>/`) through a target's
//! function, for the stable tests. A missing or empty directory fails: a replay that reads
//! nothing would pass without checking anything.

use std::path::{Path, PathBuf};

/// Runs `target` on every file in `dir`, naming the file if it panics. Returns how many ran.
pub fn replay(dir: &Path, target: fn(&[u8])) -> usize {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("the corpus {} cannot be read: {error}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("listing {}: {error}", dir.display()));
    files.retain(|path| path.is_file());
    files.sort();
    assert!(!files.is_empty(), "the corpus {} holds no input", dir.display());
    for path in &files {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        if std::panic::catch_unwind(|| target(&bytes)).is_err() {
            panic!("the corpus input {} makes the target panic", path.display());
        }
    }
    println!("replayed {} inputs from {}", files.len(), dir.display());
    files.len()
}
