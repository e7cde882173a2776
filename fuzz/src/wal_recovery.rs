//! The `wal_recovery` target: a write-ahead log directory built from the fuzzer's bytes, then
//! opened. Opening must recover or return an error, never panic; a failed open must change no
//! file; a log that opened must open again to the same state, and take a new record after
//! what recovery kept.
//!
//! The first byte (modulo 5) chooses how the directory is built: raw bytes as segment 1 (mode
//! 0), as segments 1 and 2 (mode 1), or as a snapshot file and a segment of any number (mode
//! 4); or (modes 2 and 3) a script run on the real log (so that records carry valid checksums
//! and reach the replay logic), followed by damage to the files it left (bits flipped, bytes
//! zeroed, files cut or extended).

use std::path::{Path, PathBuf};

use std::io::{Read, Write};

use raft_consensus::storage::{
    SnapshotReader, SnapshotStore, Storage, WalIdentity, WalOptions, WalSnapshotStore, WalStorage,
};
use raft_consensus::{
    Configuration, Entry, EntryPayload, HardState, LogId, LogIndex, NodeId, SnapshotMeta, Term,
};

use crate::input::Input;
use crate::memory_fs::MemoryFs;

/// The log's directory in the in-memory file system.
pub const DIR: &str = "/wal";
/// The log's owner.
pub const IDENTITY: WalIdentity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
/// Most script steps run for one input.
const MAX_STEPS: usize = 64;

/// Small segments, so that scripts roll over, compact and recycle them.
pub fn options() -> WalOptions {
    WalOptions { segment_max_bytes: 1024, max_entry_bytes: 256 }
}

/// The path of segment `sequence` (the log's own naming).
pub fn segment_path(sequence: u64) -> PathBuf {
    Path::new(DIR).join(format!("wal-{sequence:020}.log"))
}

/// Puts `bytes` into the log's directory as a snapshot file, named after the index its own
/// header gives (bytes 32..40), so that a mutated index still passes the name check.
pub fn put_snapshot_file(fs: &MemoryFs, bytes: &[u8]) {
    let index =
        bytes.get(32..40).and_then(|bytes| bytes.try_into().ok()).map_or(0, u64::from_le_bytes);
    fs.put(&Path::new(DIR).join(format!("snapshot-{index:020}.snap")), bytes);
}

/// The target.
pub fn recover_wal(data: &[u8]) {
    let mut input = Input::new(data);
    let fs = MemoryFs::default();
    match input.u8() % 5 {
        0 => fs.put(&segment_path(1), input.rest()),
        1 => {
            let first_len = usize::from(input.u16());
            fs.put(&segment_path(1), input.take(first_len));
            fs.put(&segment_path(2), input.rest());
        }
        4 => {
            // A segment of any number, behind a snapshot (as compaction leaves a log).
            let sequence = input.number();
            let snapshot_len = usize::from(input.u16());
            put_snapshot_file(&fs, input.take(snapshot_len));
            fs.put(&segment_path(sequence), input.rest());
        }
        _ => {
            run_script(&fs, &mut input);
            damage(&fs, &mut input);
        }
    }
    check_recovery(&fs);
}

/// Opens the log in `fs` and checks what the target promises.
pub fn check_recovery(fs: &MemoryFs) {
    let before = fs.files();
    let mut storage = match WalStorage::open_on(fs.clone(), DIR, IDENTITY, options()) {
        Ok(storage) => storage,
        Err(_) => {
            assert!(fs.files() == before, "a log that failed to open was changed");
            return;
        }
    };
    let state = storage.load().expect("the first load after opening returns what was recovered");
    if let Some(snapshot) = &state.snapshot {
        // Its data is checked as it is read (a node reads it whole as it starts): damage is
        // an error, never a panic or an allocation the header's length alone decided.
        if let Ok(source) = storage.snapshot_store().open(snapshot) {
            let _ = SnapshotReader::new(source).read_to_end(&mut Vec::new());
        }
    }
    let hard_state = HardState { voted_for: Some(NodeId(99)), ..state.hard_state };
    storage.save_hard_state(&hard_state).expect("a recovered log takes a new record");
    storage.sync().expect("the in-memory file system never fails");
    drop(storage);
    let mut reopened = WalStorage::open_on(fs.clone(), DIR, IDENTITY, options())
        .unwrap_or_else(|error| panic!("a recovered log fails to open again: {error}"));
    let again = reopened.load().expect("the first load after opening returns what was recovered");
    assert_eq!(again.hard_state, hard_state, "the record written after recovery is lost");
    assert_eq!(again.entries, state.entries, "reopening a recovered log changed its entries");
    assert_eq!(again.snapshot, state.snapshot, "reopening a recovered log changed its snapshot");
    assert_eq!(again.members, state.members, "reopening a recovered log changed its members");
}

/// Runs script steps read from `input` on a log in `fs`, until a step fails or the steps end.
fn run_script(fs: &MemoryFs, input: &mut Input<'_>) {
    let Ok(mut storage) = WalStorage::open_on(fs.clone(), DIR, IDENTITY, options()) else {
        return;
    };
    let mut snapshots = storage.snapshot_store();
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let done = match input.u8() % 10 {
            0 | 1 => storage.append(&entries(input)).is_err(),
            2 => storage.save_hard_state(&hard_state(input)).is_err(),
            3 => storage.reset_log(log_id(input)).is_err(),
            4 => storage.sync().is_err(),
            5 => storage.flush().and_then(|sync| sync.complete()).is_err(),
            6 => storage.compact(LogIndex(input.number())).is_err(),
            7 => storage.save_members(&members(input)).is_err(),
            8 => write_snapshot(&mut snapshots, input),
            _ => {
                drop(storage);
                let Ok(reopened) = WalStorage::open_on(fs.clone(), DIR, IDENTITY, options()) else {
                    return;
                };
                storage = reopened;
                if storage.load().is_err() {
                    return;
                }
                snapshots = storage.snapshot_store();
                false
            }
        };
        if done {
            return;
        }
    }
    // Whatever the script left buffered is written, as a crash after a flush would leave it.
    let _ = storage.flush();
}

/// One to four entries from consecutive indexes.
fn entries(input: &mut Input<'_>) -> Vec<Entry> {
    let count = 1 + input.u8() % 4;
    let first = input.number();
    let term = Term(input.number());
    (0..u64::from(count))
        .map_while(|offset| {
            let index = LogIndex(first.checked_add(offset)?);
            Some(Entry { term, index, payload: payload(input) })
        })
        .collect()
}

fn payload(input: &mut Input<'_>) -> EntryPayload {
    match input.u8() % 3 {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Command(input.short_bytes().to_vec().into()),
        _ => EntryPayload::Configuration(configuration(input)),
    }
}

fn configuration(input: &mut Input<'_>) -> Configuration {
    Configuration::of_voters(members(input))
}

/// One to four distinct node ids, sorted.
fn members(input: &mut Input<'_>) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = (0..1 + input.u8() % 4).map(|_| NodeId(input.number())).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn log_id(input: &mut Input<'_>) -> LogId {
    LogId::new(Term(input.number()), LogIndex(input.number()))
}

fn hard_state(input: &mut Input<'_>) -> HardState {
    let term = Term(input.number());
    let voted_for = (input.u8() % 2 == 1).then(|| NodeId(input.number()));
    HardState { term, voted_for, commit_index: LogIndex(input.number()) }
}

/// Writes a snapshot; returns whether the write failed.
fn write_snapshot(store: &mut WalSnapshotStore<MemoryFs>, input: &mut Input<'_>) -> bool {
    let meta = SnapshotMeta { last_included: log_id(input), configuration: configuration(input) };
    let data = input.short_bytes().to_vec();
    let Ok(mut sink) = store.create(&meta) else {
        return true;
    };
    sink.write_all(&data).is_err() || sink.finish().is_err()
}

/// Damages the files the script left, as the rest of `input` says.
fn damage(fs: &MemoryFs, input: &mut Input<'_>) {
    let paths: Vec<PathBuf> = fs.files().into_keys().collect();
    while !input.is_empty() && !paths.is_empty() {
        let path = &paths[usize::from(input.u8()) % paths.len()];
        let kind = input.u8() % 4;
        let at = usize::from(input.u16());
        let value = input.u8();
        fs.modify(path, |bytes| {
            if bytes.is_empty() {
                return;
            }
            let at = at % bytes.len();
            match kind {
                0 => bytes[at] ^= value.max(1),
                1 => bytes.truncate(at),
                2 => bytes[at..].iter_mut().take(usize::from(value)).for_each(|byte| *byte = 0),
                _ => bytes.extend(std::iter::repeat_n(value, at % 64 + 1)),
            }
        });
    }
}
