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

/// Seed inputs: valid encodings of every request and response kind and of a store's snapshot.
/// Run by hand (`cargo test -p raft-kv --test fuzz_corpus -- --ignored`) to write them again;
/// the replay tests above check them like every other corpus input.
mod seeds {
    use raft_consensus::{LogIndex, StateMachine};
    use raft_kv::{Command, KvStateMachine, Request, Response};

    use super::corpus_dir;

    fn write(target: &str, name: &str, bytes: &[u8]) {
        let path = corpus_dir(target).join(format!("seed-{name}"));
        std::fs::write(&path, bytes).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    }

    fn requests() -> Vec<Request> {
        let key = b"key".to_vec();
        let commands = [
            Command::Get { key: key.clone() },
            Command::Put { key: key.clone(), value: b"value".to_vec() },
            Command::Delete { key: key.clone() },
            Command::CompareAndSwap { key, expected: Some(b"value".to_vec()), new: b"v2".to_vec() },
        ];
        let sessions = [None, Some((7, 1)), Some((7, 2)), Some((8, 1))];
        sessions
            .into_iter()
            .zip(commands)
            .map(|(session, command)| Request { session, command })
            .collect()
    }

    #[test]
    #[ignore = "writes seed inputs into fuzz/corpus: run by hand"]
    fn write_kv_seeds() {
        for (number, request) in requests().iter().enumerate() {
            write("kv_request", &format!("request-{number}"), &request.encode());
        }
        let responses = [
            Response::Value(Some(b"value".to_vec())),
            Response::Written { index: 3 },
            Response::Deleted { existed: true, index: 4 },
            Response::Swapped { index: 5 },
            Response::NotSwapped { current: None },
            Response::StaleRequest { last_sequence: 9 },
        ];
        for (number, response) in responses.iter().enumerate() {
            write("kv_request", &format!("response-{number}"), &response.encode());
        }
        let mut store = KvStateMachine::new();
        for (index, request) in (1..).zip(requests()) {
            store.execute(LogIndex(index), request);
        }
        store.execute(LogIndex(9), requests().swap_remove(1));
        write("kv_snapshot", "store", &store.snapshot().expect("a store snapshots"));
    }
}
