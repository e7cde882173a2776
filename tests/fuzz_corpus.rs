//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) of the library's targets on
//! stable Rust, through the same functions the fuzz targets run (`fuzz/src/`, included here by
//! path): every input must pass. A missing or empty corpus directory fails the test.
//! See FUZZING.md.

#[path = "../fuzz/src/codec.rs"]
mod codec;
#[path = "../fuzz/src/corpus.rs"]
mod corpus;
#[path = "../fuzz/src/handshake.rs"]
mod handshake;
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
fn handshake_corpus_replays() {
    corpus::replay(&corpus_dir("handshake"), handshake::check_handshake);
}

#[test]
fn wal_recovery_corpus_replays() {
    corpus::replay(&corpus_dir("wal_recovery"), wal_recovery::recover_wal);
}

#[test]
fn snapshot_file_corpus_replays() {
    corpus::replay(&corpus_dir("snapshot_file"), snapshot_file::open_snapshot_file);
}

/// Seed inputs: valid encodings, so that fuzzing starts past the checksums and version checks.
/// Run by hand (`cargo test --test fuzz_corpus -- --ignored`) to write them again; the
/// replay tests above check them like every other corpus input.
mod seeds {
    use raft_consensus::message::{AppendResponse, ConflictHint};
    use raft_consensus::storage::{SnapshotStore, Storage, WalStorage};
    use raft_consensus::transport::codec::encode_message;
    use raft_consensus::types::HeartbeatRound;
    use raft_consensus::{
        Configuration, Entry, EntryPayload, HardState, LogId, LogIndex, Message, MessageBody,
        NodeId, Snapshot, SnapshotMeta, Term,
    };

    use super::corpus_dir;
    use crate::memory_fs::MemoryFs;
    use crate::wal_recovery::{DIR, IDENTITY, options, segment_path};

    fn write(target: &str, name: &str, bytes: &[u8]) {
        let path = corpus_dir(target).join(format!("seed-{name}"));
        std::fs::write(&path, bytes).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    }

    fn voters() -> Configuration {
        Configuration::of_voters([NodeId(1), NodeId(2), NodeId(3)])
    }

    fn entries() -> Vec<Entry> {
        let entry = |index, payload| Entry { term: Term(2), index: LogIndex(index), payload };
        vec![
            entry(1, EntryPayload::Blank),
            entry(2, EntryPayload::Command(b"set x=1".to_vec().into())),
            entry(3, EntryPayload::Configuration(voters())),
        ]
    }

    #[test]
    #[ignore = "writes seed inputs into fuzz/corpus: run by hand"]
    fn write_codec_seeds() {
        let log_id = LogId::new(Term(2), LogIndex(3));
        let bodies = [
            MessageBody::RequestVote { last_log_id: log_id, leadership_transfer: true },
            MessageBody::AppendEntries {
                prev_log_id: LogId::default(),
                entries: entries(),
                leader_commit: LogIndex(1),
                round: HeartbeatRound(4),
            },
            MessageBody::AppendEntriesResponse {
                result: AppendResponse::Rejected {
                    rejected_prev_index: LogIndex(3),
                    hint: ConflictHint { conflict_term: Some(Term(1)), first_index: LogIndex(2) },
                },
                round: HeartbeatRound(4),
            },
            MessageBody::InstallSnapshot {
                snapshot: Snapshot::of_bytes(
                    SnapshotMeta { last_included: log_id, configuration: voters() },
                    b"state",
                ),
                offset: 0,
                data: b"state".to_vec().into(),
            },
        ];
        for (number, body) in bodies.into_iter().enumerate() {
            let mut bytes = Vec::new();
            let message = Message { from: NodeId(1), to: NodeId(2), term: Term(2), body };
            encode_message(&message, &mut bytes);
            write("codec", &format!("message-{number}"), &bytes);
        }
    }

    /// The files of a small log: two segments, a snapshot, and what the log wrote.
    fn small_log() -> MemoryFs {
        let fs = MemoryFs::default();
        let mut storage = WalStorage::open_on(fs.clone(), DIR, IDENTITY, options()).unwrap();
        storage.save_members(&[NodeId(1), NodeId(2), NodeId(3)]).unwrap();
        storage.append(&entries()).unwrap();
        let hard_state =
            HardState { term: Term(2), voted_for: Some(NodeId(1)), commit_index: LogIndex(2) };
        storage.save_hard_state(&hard_state).unwrap();
        storage.sync().unwrap();
        let big = Entry {
            term: Term(2),
            index: LogIndex(4),
            payload: EntryPayload::Command(vec![7; 200].into()),
        };
        for index in 4..10 {
            storage.append(&[Entry { index: LogIndex(index), ..big.clone() }]).unwrap();
            storage.sync().unwrap();
        }
        let meta =
            SnapshotMeta { last_included: LogId::new(Term(2), LogIndex(2)), ..Default::default() };
        let meta = SnapshotMeta { configuration: voters(), ..meta };
        let mut sink = storage.snapshot_store().create(&meta).unwrap();
        std::io::Write::write_all(&mut sink, b"state").unwrap();
        sink.finish().unwrap();
        fs
    }

    #[test]
    #[ignore = "writes seed inputs into fuzz/corpus: run by hand"]
    fn write_storage_seeds() {
        let files = small_log().files();
        let first = &files[&segment_path(1)];
        let second = &files[&segment_path(2)];
        write("wal_recovery", "segment", &[[0].as_slice(), first].concat());
        let first_len = u16::try_from(first.len()).unwrap().to_le_bytes();
        write(
            "wal_recovery",
            "two-segments",
            &[[1].as_slice(), &first_len, first, second].concat(),
        );
        let snapshot = files.iter().find(|(path, _)| path.extension() == Some("snap".as_ref()));
        let snapshot = snapshot.expect("the log holds a snapshot").1;
        write("snapshot_file", "snapshot", snapshot);
        let snapshot_len = u16::try_from(snapshot.len()).unwrap().to_le_bytes();
        let behind_snapshot = [[4, 2].as_slice(), &snapshot_len, snapshot, second].concat();
        write("wal_recovery", "segment-2-behind-a-snapshot", &behind_snapshot);
    }
}
