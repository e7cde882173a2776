//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) of raft-kv's targets on stable
//! Rust, through the same functions the fuzz targets run (`fuzz/src/`, included here by path):
//! every input must pass. A missing or empty corpus directory fails the test. See FUZZING.md.

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../../fuzz/src/kv_request.rs"]
mod kv_request;
#[path = "../../fuzz/src/kv_snapshot.rs"]
mod kv_snapshot;

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

#[test]
fn kv_request_corpus_replays() {
    corpus::replay(&corpus_dir("kv_request"), kv_request::decode_request);
}

#[test]
fn kv_snapshot_corpus_replays() {
    corpus::replay(&corpus_dir("kv_snapshot"), kv_snapshot::restore_snapshot);
}
