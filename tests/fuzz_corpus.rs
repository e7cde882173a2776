//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) of the library's targets on
//! stable Rust, through the same functions the fuzz targets run (`fuzz/src/`, included here by
//! path): every input must pass. A missing or empty corpus directory fails the test.
//! See FUZZING.md.

#[path = "../fuzz/src/codec.rs"]
mod codec;
#[path = "../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../fuzz/src/input.rs"]
mod input;
#[path = "../fuzz/src/memory_fs.rs"]
mod memory_fs;
#[path = "../fuzz/src/snapshot_file.rs"]
mod snapshot_file;
#[path = "../fuzz/src/wal_recovery.rs"]
mod wal_recovery;

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

#[test]
fn codec_corpus_replays() {
    corpus::replay(&corpus_dir("codec"), codec::decode_frame);
}

#[test]
fn wal_recovery_corpus_replays() {
    corpus::replay(&corpus_dir("wal_recovery"), wal_recovery::recover_wal);
}

#[test]
fn snapshot_file_corpus_replays() {
    corpus::replay(&corpus_dir("snapshot_file"), snapshot_file::open_snapshot_file);
}
