//! Regression tests for what fuzzing the write-ahead log's recovery found (`fuzz/`, see
//! FUZZING.md): each input that made opening a log panic, written through the public API and
//! opened again, now refused with an error that changes nothing.

use std::collections::BTreeMap;
use std::path::Path;

use raft_consensus::storage::{SnapshotStore, Storage, WalIdentity, WalOptions, WalStorage};
use raft_consensus::{
    Configuration, Entry, EntryPayload, LogId, LogIndex, NodeId, SnapshotMeta, StorageError, Term,
};

const IDENTITY: WalIdentity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("the test's directory lists")
        .map(|entry| entry.expect("a directory entry reads"))
        .map(|entry| {
            let bytes = std::fs::read(entry.path()).expect("the log's files read");
            (entry.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

fn blank(term: u64, index: u64) -> Entry {
    Entry { term: Term(term), index: LogIndex(index), payload: EntryPayload::Blank }
}

/// Writes a log reset to `base` followed by `entries`, and opens the log again.
fn reopen_after_reset(base: u64, entries: &[Entry]) -> (StorageError, bool) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut storage =
        WalStorage::open(dir.path(), IDENTITY, WalOptions::default()).expect("a new log opens");
    storage.reset_log(LogId::new(Term(1), LogIndex(base))).expect("the reset is written");
    storage.append(entries).expect("the entries are written");
    storage.sync().expect("the log syncs");
    drop(storage);
    let before = files(dir.path());
    let error = WalStorage::open(dir.path(), IDENTITY, WalOptions::default())
        .expect_err("a log past the largest index is refused");
    (error, files(dir.path()) == before)
}

#[test]
fn a_log_reset_to_the_largest_u64_is_refused_not_an_overflow() {
    // Found by the wal_recovery target: replaying an entry after this reset computed
    // `u64::MAX + 1` and panicked.
    let (error, unchanged) = reopen_after_reset(u64::MAX, &[blank(1, 5)]);
    assert!(matches!(error, StorageError::CorruptRecord { .. }), "{error}");
    assert!(unchanged, "a refused log was changed");
}

#[test]
fn entries_above_the_largest_log_index_are_refused() {
    // Accepted before, they would start a node whose log could not grow by one entry.
    let (error, unchanged) = reopen_after_reset(u64::MAX - 1, &[blank(1, u64::MAX)]);
    assert!(matches!(error, StorageError::CorruptRecord { .. }), "{error}");
    assert!(unchanged, "a refused log was changed");
}

#[test]
fn a_segment_numbered_at_the_largest_u64_is_refused_not_an_overflow() {
    // A log whose last segment is numbered u64::MAX (header and name agreeing, behind a
    // snapshot, so nothing else is wrong with it) panicked computing the next segment's number
    // when it opened.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = WalOptions { segment_max_bytes: 64, ..WalOptions::default() };
    let storage = WalStorage::open(dir.path(), IDENTITY, options.clone()).expect("a new log opens");
    let meta = SnapshotMeta {
        last_included: LogId::new(Term(1), LogIndex(1)),
        configuration: Configuration::of_voters([NodeId(1)]),
    };
    let sink = storage.snapshot_store().create(&meta).expect("a snapshot is created");
    sink.finish().expect("the snapshot is written");
    drop(storage);
    std::fs::remove_file(dir.path().join(format!("wal-{:020}.log", 1))).expect("segment 1 goes");
    let mut header = b"RAFTWAL\0".to_vec();
    header.extend_from_slice(&2u32.to_le_bytes()); // format version
    header.extend_from_slice(&0u32.to_le_bytes()); // flags
    header.extend_from_slice(&IDENTITY.node_id.0.to_le_bytes());
    header.extend_from_slice(&IDENTITY.cluster_id.to_le_bytes());
    header.extend_from_slice(&u64::MAX.to_le_bytes()); // sequence
    header.extend_from_slice(&crc32c::crc32c(&header).to_le_bytes());
    let last = dir.path().join(format!("wal-{:020}.log", u64::MAX));
    std::fs::write(&last, &header).expect("the segment is written");
    let before = files(dir.path());
    let error = WalStorage::open(dir.path(), IDENTITY, options).expect_err("the log is refused");
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert_eq!(files(dir.path()), before, "a refused log was changed");
}
