//! [`KvStateMachine`]: the replicated store. Byte keys and values in a sorted map, and for each
//! client session (in the library's [`SessionTable`], whose rules these are) the last sequence
//! number applied, a digest of that request's command and its response, so that a retried write (same client id and sequence number, after an
//! unknown outcome) is answered again instead of applied twice, and a different request under
//! the same id and number is refused ([`Response::SessionConflict`]). A kept response is
//! bounded ([`MAX_KEPT_RESPONSE_BYTES`]): a larger one is replaced by
//! [`Response::NotKept`] with its log index. Deterministic: the same requests in the same order
//! give the same state and the same answers on every node. Snapshots hold both the data and
//! the sessions.
//!
//! ```text
//! snapshot (version 2): version u8 (2) | key count u64 | (key length u32 | key
//!                       | value length u32 | value)* | session count u64 | (client id u64
//!                       | sequence u64 | last log index u64 | has digest u8 | digest u64
//!                       | response length u32 | response)*
//! version 1:            the same without `has digest` and `digest`
//! ```
//!
//! A version 1 snapshot (written before sessions had digests) still loads: its sessions have
//! no digest, so a retry under them is answered from the stored response without the check
//! (as version 1 did), and their responses are bounded as they load.
//!
//! # Snapshots without a pause
//!
//! The keys live in a persistent ordered map ([`imbl::OrdMap`]: a B+ tree of 16-entry nodes
//! behind reference counts, copied on write), with keys and values as `Arc<[u8]>`, and the
//! [`SessionTable`] keeps the sessions in the same kind of map.
//! [`StateMachine::snapshot_view`] clones the map and the table, which takes constant time
//! whatever the store holds (under a microsecond for 1 GiB: BENCHMARKS.md, "raft-kv snapshot
//! view"), and the node goes on applying while the view is written on another thread: the
//! first write to a tree node the view still shares copies that node (its 16 entries'
//! reference counts, never a key's or a value's bytes), so the view keeps the state as it
//! was. The view writes the format above record by record through a 64 KiB buffer, and
//! [`StateMachine::restore_from`] reads it the same way into a new store that replaces this
//! one only once the whole snapshot decoded: neither side holds a whole snapshot in memory.
//!
//! Why a persistent map: `std`'s `BTreeMap` clones in time and memory proportional to its
//! size (for 1 GiB, one to two seconds and a second copy of the data), and serializing under
//! the node's task pauses it as long. The sessions are in one too (the library's table uses
//! `imbl` for this reason): up to [`MAX_SESSIONS`] of them, some 30 MB, would take
//! milliseconds to copy. `imbl` (MPL-2.0, the maintained fork of
//! `im`) is widely used and property-tested; a persistent B-tree with deletion and rebalancing
//! written here would be several hundred lines of delicate code to test from scratch. The
//! price is on each write: about 0.35 µs more per put than with `BTreeMap`, half of it copying
//! the key and value into their `Arc`s (BENCHMARKS.md).

use std::error::Error;
use std::io::{self, BufRead, Write};
use std::sync::Arc;

use imbl::OrdMap;
use raft_consensus::client::{ClientId, SessionCheck, SessionRecord, SessionStamp, SessionTable};
use raft_consensus::state_machine::SnapshotView;
use raft_consensus::{LogIndex, StateMachine};

use crate::command::{CommandError, CommandView, Request, RequestView, Response};

/// The snapshot format version this build writes (it also reads version 1).
pub const SNAPSHOT_FORMAT_VERSION: u8 = 2;

/// The oldest snapshot format version this build reads.
pub const OLDEST_SNAPSHOT_FORMAT_VERSION: u8 = 1;

/// Most client sessions kept. When a new client would exceed it, the session used least
/// recently (by log index, so every node evicts the same one) is forgotten; a retry from that
/// client is then treated as new (the [`SessionTable`]'s eviction rule).
pub const MAX_SESSIONS: usize = 100_000;

/// Largest response kept in a session, in encoded bytes (the encoding in [`crate::command`]).
/// Every write's own answer is far smaller (at most 10 bytes); only a not-swapped
/// compare-and-swap (which carries the current value) or a get can be larger, and a retry of
/// one of those is answered [`Response::NotKept`] with the log index at which it was applied.
/// Sessions thus hold at most about `MAX_SESSIONS * (MAX_KEPT_RESPONSE_BYTES + 100)` bytes.
pub const MAX_KEPT_RESPONSE_BYTES: usize = 256;

/// The buffer between a snapshot view and the writer it writes into, and between a snapshot
/// being restored and the reader it comes from.
const STREAM_BUFFER_BYTES: usize = 64 * 1024;

/// Most bytes a restore reserves for a key, value or response before reading them: a longer
/// one grows as its bytes arrive, so a declared length beyond the data present never
/// allocates more than the data (and this much).
const MAX_RESERVED_BYTES: usize = 64 * 1024;

/// Keys and values: shared, so that copying a tree node copies no bytes.
type Bytes = Arc<[u8]>;

/// The replicated key-value store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStateMachine {
    data: OrdMap<Bytes, Bytes>,
    /// Client id -> its last applied request: its sequence number, the log index at which it
    /// was applied (its age, for eviction), [`crate::Command::digest`] of its command (`None` for a
    /// session restored from a version 1 snapshot) and its response, or
    /// [`Response::NotKept`] when that was above [`MAX_KEPT_RESPONSE_BYTES`].
    sessions: SessionTable<Response>,
}

impl Default for KvStateMachine {
    fn default() -> Self {
        KvStateMachine { data: OrdMap::new(), sessions: SessionTable::new(MAX_SESSIONS) }
    }
}

impl KvStateMachine {
    /// An empty store.
    pub fn new() -> Self {
        KvStateMachine::default()
    }

    /// The value of `key`, read locally (not linearizable on its own: reads go through the
    /// log or ReadIndex).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(|value| &**value)
    }

    /// The value at `key`, shared with the store (no copy): it stays valid however the store
    /// changes afterwards.
    pub fn get_shared(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.data.get(key).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Applies `request`, committed at `index`.
    ///
    /// With a session `(client, sequence)`: a `sequence` equal to the client's last applied
    /// one is a retry, answered with the stored response if its command has the same digest
    /// and [`Response::SessionConflict`] otherwise (nothing is applied either way); an older
    /// `sequence` is [`Response::StaleRequest`]; a newer one is applied and remembered.
    pub fn execute(&mut self, index: LogIndex, request: Request) -> Response {
        self.execute_view(index, request.view())
    }

    /// [`execute`](Self::execute) for a request decoded in place: each key and value it
    /// writes is copied once, into the store.
    fn execute_view(&mut self, index: LogIndex, request: RequestView<'_>) -> Response {
        let session = request.session.map(|(client, sequence)| {
            (SessionStamp { client: ClientId(client), sequence }, request.command.digest())
        });
        if let Some((stamp, digest)) = session {
            match self.sessions.check(stamp, digest) {
                SessionCheck::Duplicate(response) => return response.clone(),
                SessionCheck::Conflict => return Response::SessionConflict,
                SessionCheck::Stale { last_sequence } => {
                    return Response::StaleRequest { last_sequence };
                }
                SessionCheck::New => {}
            }
        }
        let response = match request.command {
            CommandView::Get { key } => Response::Value(self.get(key).map(<[u8]>::to_vec)),
            CommandView::Put { key, value } => {
                self.data.insert(key.into(), value.into());
                Response::Written { index: index.0 }
            }
            CommandView::Delete { key } => {
                Response::Deleted { existed: self.data.remove(key).is_some(), index: index.0 }
            }
            CommandView::CompareAndSwap { key, expected, new } => {
                let current = self.get(key);
                if current == expected {
                    self.data.insert(key.into(), new.into());
                    Response::Swapped { index: index.0 }
                } else {
                    Response::NotSwapped { current: current.map(<[u8]>::to_vec) }
                }
            }
        };
        if let Some((stamp, digest)) = session {
            self.sessions.record(stamp, Some(digest), index, bounded(&response, index.0));
        }
        response
    }
}

/// What a session keeps of `response`, applied at log index `applied_at`: the response itself
/// when it encodes to at most [`MAX_KEPT_RESPONSE_BYTES`], else [`Response::NotKept`].
fn bounded(response: &Response, applied_at: u64) -> Response {
    if response.encoded_len() <= MAX_KEPT_RESPONSE_BYTES {
        response.clone()
    } else {
        Response::NotKept { applied_at }
    }
}

impl StateMachine for KvStateMachine {
    /// Applies a request without knowing its log index (indexes in answers are 0); a node
    /// always calls [`apply_at`](StateMachine::apply_at).
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.apply_at(LogIndex(0), command)
    }

    fn apply_at(
        &mut self,
        index: LogIndex,
        command: &[u8],
    ) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let request = RequestView::decode(command)?;
        Ok(self.execute_view(index, request).encode())
    }

    /// The whole snapshot in memory: what [`snapshot_view`](StateMachine::snapshot_view)'s
    /// view writes, byte for byte.
    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let mut bytes = Vec::new();
        write_snapshot(&mut bytes, &self.data, &self.sessions)?;
        Ok(bytes)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        // Only a snapshot that decoded completely replaces the state.
        *self = read_snapshot(snapshot)?;
        Ok(())
    }

    /// Clones the maps and the session table (constant time): the view shares their nodes
    /// until the store writes.
    fn snapshot_view(&self) -> Result<Box<dyn SnapshotView>, Box<dyn Error + Send + Sync>> {
        Ok(Box::new(KvSnapshotView { data: self.data.clone(), sessions: self.sessions.clone() }))
    }

    fn restore_from(
        &mut self,
        snapshot: &mut dyn io::Read,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let restored = read_snapshot(io::BufReader::with_capacity(STREAM_BUFFER_BYTES, snapshot))?;
        *self = restored;
        Ok(())
    }
}

/// The store as [`StateMachine::snapshot_view`] froze it.
struct KvSnapshotView {
    data: OrdMap<Bytes, Bytes>,
    sessions: SessionTable<Response>,
}

impl SnapshotView for KvSnapshotView {
    fn write_to(
        self: Box<Self>,
        out: &mut dyn io::Write,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let mut out = io::BufWriter::with_capacity(STREAM_BUFFER_BYTES, out);
        write_snapshot(&mut out, &self.data, &self.sessions)?;
        out.flush()?;
        Ok(())
    }
}

/// Writes a snapshot (the current format) of `data` and `sessions` into `out`, record by
/// record.
fn write_snapshot(
    out: &mut impl Write,
    data: &OrdMap<Bytes, Bytes>,
    sessions: &SessionTable<Response>,
) -> io::Result<()> {
    out.write_all(&[SNAPSHOT_FORMAT_VERSION])?;
    out.write_all(&(data.len() as u64).to_le_bytes())?;
    for (key, value) in data {
        write_record(out, key)?;
        write_record(out, value)?;
    }
    out.write_all(&(sessions.len() as u64).to_le_bytes())?;
    for (client, session) in sessions.iter() {
        out.write_all(&client.0.to_le_bytes())?;
        out.write_all(&session.sequence.to_le_bytes())?;
        out.write_all(&session.last_index.0.to_le_bytes())?;
        out.write_all(&[u8::from(session.digest.is_some())])?;
        out.write_all(&session.digest.unwrap_or(0).to_le_bytes())?;
        write_record(out, &session.result.encode())?;
    }
    Ok(())
}

/// A length (u32) and the bytes. Keys and values come from commands, whose lengths are u32.
fn write_record(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(bytes)
}

/// Decodes a whole snapshot (either version) from `input` into a new store.
fn read_snapshot(input: impl BufRead) -> Result<KvStateMachine, Box<dyn Error + Send + Sync>> {
    let mut reader = SnapshotReader { input, offset: 0, record: Vec::new() };
    let version = reader.u8()?;
    if !(OLDEST_SNAPSHOT_FORMAT_VERSION..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err(Box::new(CommandError(format!(
            "unknown snapshot format version {version} (this build reads versions \
             {OLDEST_SNAPSHOT_FORMAT_VERSION} to {SNAPSHOT_FORMAT_VERSION})"
        ))));
    }
    let mut restored = KvStateMachine::default();
    // Counts only bound the loops: nothing is reserved for them.
    for _ in 0..reader.u64()? {
        let key = Bytes::from(reader.record()?);
        let value = Bytes::from(reader.record()?);
        restored.data.insert(key, value);
    }
    for _ in 0..reader.u64()? {
        let client = reader.u64()?;
        let sequence = reader.u64()?;
        let last_index = reader.u64()?;
        let digest = if version >= 2 {
            let has_digest = reader.flag()?;
            let digest = reader.u64()?;
            has_digest.then_some(digest)
        } else {
            None
        };
        let response = bounded(&Response::decode(reader.record()?)?, last_index);
        let record =
            SessionRecord { sequence, last_index: LogIndex(last_index), digest, result: response };
        restored.sessions.restore_record(ClientId(client), record);
    }
    reader.finish()?;
    Ok(restored)
}

/// Reads a snapshot's fields from a stream, tracking the offset for error messages.
struct SnapshotReader<R> {
    input: R,
    offset: u64,
    /// The last record read (reused: it holds the largest record read so far).
    record: Vec<u8>,
}

impl<R: BufRead> SnapshotReader<R> {
    fn exact(&mut self, buffer: &mut [u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        match self.input.read_exact(buffer) {
            Ok(()) => {
                self.offset += buffer.len() as u64;
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                Err(Box::new(CommandError(format!(
                    "the snapshot ends within the {} bytes needed at offset {}",
                    buffer.len(),
                    self.offset
                ))))
            }
            Err(error) => Err(Box::new(error)),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Box<dyn Error + Send + Sync>> {
        let mut bytes = [0; N];
        self.exact(&mut bytes)?;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, Box<dyn Error + Send + Sync>> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, Box<dyn Error + Send + Sync>> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, Box<dyn Error + Send + Sync>> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(Box::new(CommandError(format!("invalid flag byte {other}")))),
        }
    }

    /// A length (u32) and that many bytes. At most [`MAX_RESERVED_BYTES`] are reserved ahead
    /// of the bytes read, so a length beyond the data allocates no more than the data.
    fn record(&mut self) -> Result<&[u8], Box<dyn Error + Send + Sync>> {
        let length = u32::from_le_bytes(self.array()?) as usize;
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        while record.len() < length {
            let start = record.len();
            record.resize(start + (length - start).min(MAX_RESERVED_BYTES), 0);
            if let Err(error) = self.exact(&mut record[start..]) {
                self.record = record;
                return Err(error);
            }
        }
        self.record = record;
        Ok(&self.record)
    }

    /// Fails unless the snapshot ends here.
    fn finish(&mut self) -> Result<(), Box<dyn Error + Send + Sync>> {
        if !self.input.fill_buf()?.is_empty() {
            return Err(Box::new(CommandError(format!(
                "trailing bytes after the snapshot's end at offset {}",
                self.offset
            ))));
        }
        Ok(())
    }
}
/// A length (u32) and the bytes, as the snapshot format has them (for tests that write
/// snapshots by hand).
#[cfg(test)]
fn record(bytes: &mut Vec<u8>, value: &[u8]) {
    bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    bytes.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn put_request(session: Option<(u64, u64)>, key: &str, value: &str) -> Request {
        Request {
            session,
            command: Command::Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            },
        }
    }

    #[test]
    fn operations_answer_as_documented() {
        let mut store = KvStateMachine::new();
        let get = |key: &str| Request { session: None, command: Command::Get { key: key.into() } };
        assert_eq!(store.execute(LogIndex(1), get("a")), Response::Value(None));
        assert_eq!(
            store.execute(LogIndex(2), put_request(None, "a", "1")),
            Response::Written { index: 2 }
        );
        assert_eq!(store.execute(LogIndex(3), get("a")), Response::Value(Some(b"1".to_vec())));
        let cas = |expected: Option<&str>, new: &str| Request {
            session: None,
            command: Command::CompareAndSwap {
                key: b"a".to_vec(),
                expected: expected.map(|value| value.as_bytes().to_vec()),
                new: new.as_bytes().to_vec(),
            },
        };
        assert_eq!(
            store.execute(LogIndex(4), cas(None, "2")),
            Response::NotSwapped { current: Some(b"1".to_vec()) }
        );
        assert_eq!(store.execute(LogIndex(5), cas(Some("1"), "2")), Response::Swapped { index: 5 });
        let delete = Request { session: None, command: Command::Delete { key: b"a".to_vec() } };
        assert_eq!(
            store.execute(LogIndex(6), delete.clone()),
            Response::Deleted { existed: true, index: 6 }
        );
        assert_eq!(
            store.execute(LogIndex(7), delete),
            Response::Deleted { existed: false, index: 7 }
        );
        assert_eq!(store.execute(LogIndex(8), cas(None, "3")), Response::Swapped { index: 8 });
    }

    #[test]
    fn a_retried_write_is_applied_once() {
        let mut store = KvStateMachine::new();
        let first = store.execute(LogIndex(1), put_request(Some((9, 1)), "k", "v1"));
        store.execute(LogIndex(2), put_request(None, "k", "other writer"));
        // The retry of sequence 1 (after an unknown outcome) is answered, not applied again.
        let retry = store.execute(LogIndex(3), put_request(Some((9, 1)), "k", "v1"));
        assert_eq!(retry, first);
        assert_eq!(store.get(b"k"), Some(b"other writer".as_slice()));
        let next = store.execute(LogIndex(4), put_request(Some((9, 2)), "k", "v2"));
        assert_eq!(next, Response::Written { index: 4 });
        let stale = store.execute(LogIndex(5), put_request(Some((9, 1)), "k", "v1"));
        assert_eq!(stale, Response::StaleRequest { last_sequence: 2 });
        assert_eq!(store.get(b"k"), Some(b"v2".as_slice()));
    }

    #[test]
    fn snapshot_restores_data_and_sessions_and_bad_snapshots_change_nothing() {
        let mut store = KvStateMachine::new();
        store.execute(LogIndex(1), put_request(Some((4, 1)), "x", "1"));
        store.execute(LogIndex(2), put_request(None, "y", "2"));
        let snapshot = store.snapshot().unwrap();
        let mut restored = KvStateMachine::new();
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored, store);
        // The session came along: the retry is still deduplicated after a restore.
        let retry = restored.execute(LogIndex(9), put_request(Some((4, 1)), "x", "1"));
        assert_eq!(retry, Response::Written { index: 1 });

        let before = restored.clone();
        for cut in 0..snapshot.len() {
            assert!(restored.restore(&snapshot[..cut]).is_err());
            assert_eq!(restored, before);
        }
        assert!(restored.apply_at(LogIndex(10), b"junk").is_err());
        assert_eq!(restored, before);
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;
    use crate::command::Command;

    #[test]
    fn sessions_are_bounded_and_the_least_recent_is_forgotten() {
        let mut store = KvStateMachine::new();
        let request = |client: u64| Request {
            session: Some((client, 1)),
            command: Command::Put { key: b"k".to_vec(), value: client.to_le_bytes().to_vec() },
        };
        for client in 0..=MAX_SESSIONS as u64 {
            store.execute(LogIndex(client + 1), request(client));
        }
        assert_eq!(store.sessions.len(), MAX_SESSIONS);
        assert!(store.sessions.get(ClientId(0)).is_none(), "the least recent session is forgotten");
        assert!(store.sessions.get(ClientId(1)).is_some());
        // Client 0's retry is applied again (its session is gone), client 1's is answered.
        assert_eq!(store.execute(LogIndex(200_000), request(1)), Response::Written { index: 2 });
    }
}

#[cfg(test)]
mod session_digest_tests {
    use super::*;
    use crate::command::Command;

    fn with_session(client: u64, sequence: u64, command: Command) -> Request {
        Request { session: Some((client, sequence)), command }
    }

    fn put(key: &str, value: &str) -> Command {
        Command::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() }
    }

    fn cas(key: &str, expected: Option<&[u8]>, new: &[u8]) -> Command {
        Command::CompareAndSwap {
            key: key.as_bytes().to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        }
    }

    #[test]
    fn a_different_command_under_a_used_sequence_is_a_conflict_and_changes_nothing() {
        let mut store = KvStateMachine::new();
        let first = store.execute(LogIndex(1), with_session(3, 1, put("k", "v")));
        assert_eq!(first, Response::Written { index: 1 });
        let others = [
            put("k", "other value"),
            put("other key", "v"),
            Command::Delete { key: b"k".to_vec() },
            Command::Get { key: b"k".to_vec() },
            cas("k", Some(b"v"), b"v"),
            cas("k", None, b"v"),
        ];
        for (offset, other) in (2..).zip(others) {
            let before = store.clone();
            let answer = store.execute(LogIndex(offset), with_session(3, 1, other.clone()));
            assert_eq!(answer, Response::SessionConflict, "{other:?}");
            assert_eq!(store, before, "{other:?} changed the store");
        }
        // The true retry is still answered from the session, and applied once.
        assert_eq!(store.execute(LogIndex(20), with_session(3, 1, put("k", "v"))), first);
        assert_eq!(store.get(b"k"), Some(b"v".as_slice()));
        // A conflicting compare-and-swap retry is refused too.
        let swap = cas("k", Some(b"v"), b"w");
        assert_eq!(
            store.execute(LogIndex(21), with_session(3, 2, swap.clone())),
            Response::Swapped { index: 21 }
        );
        assert_eq!(
            store.execute(LogIndex(22), with_session(3, 2, cas("k", Some(b"v"), b"x"))),
            Response::SessionConflict
        );
        assert_eq!(
            store.execute(LogIndex(23), with_session(3, 2, swap)),
            Response::Swapped { index: 21 }
        );
        assert_eq!(store.get(b"k"), Some(b"w".as_slice()));
    }

    #[test]
    fn only_small_responses_are_kept_and_a_large_one_replays_as_not_kept() {
        let mut store = KvStateMachine::new();
        let large = vec![b'x'; MAX_KEPT_RESPONSE_BYTES];
        store.execute(LogIndex(1), Request { session: None, command: put("big", "") });
        store.execute(
            LogIndex(2),
            Request {
                session: None,
                command: Command::Put { key: b"big".to_vec(), value: large.clone() },
            },
        );
        let refused = cas("big", Some(b"something else"), b"new");
        // The first answer carries the whole current value.
        assert_eq!(
            store.execute(LogIndex(3), with_session(5, 1, refused.clone())),
            Response::NotSwapped { current: Some(large.clone()) }
        );
        let kept = store.sessions.get(ClientId(5)).map(|session| &session.result);
        assert_eq!(kept, Some(&Response::NotKept { applied_at: 3 }));
        // The retry says where it was applied, without the value.
        assert_eq!(
            store.execute(LogIndex(4), with_session(5, 1, refused)),
            Response::NotKept { applied_at: 3 }
        );
        // A small not-swapped answer is kept whole.
        let largest_kept = vec![b'y'; MAX_KEPT_RESPONSE_BYTES - 6];
        let small = Command::Put { key: b"small".to_vec(), value: largest_kept.clone() };
        store.execute(LogIndex(5), Request { session: None, command: small });
        let refused = cas("small", None, b"new");
        let first = store.execute(LogIndex(6), with_session(6, 1, refused.clone()));
        assert_eq!(first, Response::NotSwapped { current: Some(largest_kept) });
        assert_eq!(first.encoded_len(), MAX_KEPT_RESPONSE_BYTES);
        assert_eq!(store.execute(LogIndex(7), with_session(6, 1, refused)), first);
        // Every write's own answer is small whatever its size.
        for response in [
            Response::Written { index: u64::MAX },
            Response::Deleted { existed: true, index: u64::MAX },
            Response::Swapped { index: u64::MAX },
            Response::StaleRequest { last_sequence: u64::MAX },
            Response::SessionConflict,
            Response::NotKept { applied_at: u64::MAX },
        ] {
            assert!(response.encoded_len() <= MAX_KEPT_RESPONSE_BYTES);
            assert_eq!(bounded(&response, 1), response);
        }
    }

    #[test]
    fn snapshots_carry_the_digest() {
        let mut store = KvStateMachine::new();
        store.execute(LogIndex(1), with_session(8, 1, put("k", "v")));
        let mut restored = KvStateMachine::new();
        restored.restore(&store.snapshot().unwrap()).unwrap();
        assert_eq!(restored, store);
        assert_eq!(
            restored.execute(LogIndex(2), with_session(8, 1, put("k", "changed"))),
            Response::SessionConflict
        );
        assert_eq!(
            restored.execute(LogIndex(3), with_session(8, 1, put("k", "v"))),
            Response::Written { index: 1 }
        );
    }

    /// A snapshot in the version 1 format, as builds before session digests wrote it.
    fn version_1_snapshot(
        data: &[(&[u8], &[u8])],
        sessions: &[(u64, u64, u64, Response)],
    ) -> Vec<u8> {
        let mut bytes = vec![1];
        bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
        for (key, value) in data {
            record(&mut bytes, key);
            record(&mut bytes, value);
        }
        bytes.extend_from_slice(&(sessions.len() as u64).to_le_bytes());
        for (client, sequence, last_index, response) in sessions {
            bytes.extend_from_slice(&client.to_le_bytes());
            bytes.extend_from_slice(&sequence.to_le_bytes());
            bytes.extend_from_slice(&last_index.to_le_bytes());
            record(&mut bytes, &response.encode());
        }
        bytes
    }

    #[test]
    fn a_version_1_snapshot_loads_and_an_unknown_version_is_refused() {
        let large = vec![b'z'; 4 * MAX_KEPT_RESPONSE_BYTES];
        let snapshot = version_1_snapshot(
            &[(b"k", b"v"), (b"big", &large)],
            &[
                (1, 4, 10, Response::Written { index: 10 }),
                (2, 7, 11, Response::NotSwapped { current: Some(large.clone()) }),
            ],
        );
        let mut store = KvStateMachine::new();
        store.restore(&snapshot).unwrap();
        assert_eq!(store.get(b"k"), Some(b"v".as_slice()));
        assert_eq!(store.get(b"big"), Some(large.as_slice()));
        // Without a digest the retry is answered from the session, as version 1 did.
        assert_eq!(
            store.execute(LogIndex(20), with_session(1, 4, put("k", "v"))),
            Response::Written { index: 10 }
        );
        // The old large response was bounded as it loaded.
        assert_eq!(
            store.execute(LogIndex(21), with_session(2, 7, cas("big", None, b"n"))),
            Response::NotKept { applied_at: 11 }
        );
        // It snapshots again as version 2 and comes back the same.
        let again = store.snapshot().unwrap();
        assert_eq!(again[0], SNAPSHOT_FORMAT_VERSION);
        let mut reloaded = KvStateMachine::new();
        reloaded.restore(&again).unwrap();
        assert_eq!(reloaded, store);

        let mut unknown = again.clone();
        unknown[0] = SNAPSHOT_FORMAT_VERSION + 1;
        let refused = reloaded.restore(&unknown).unwrap_err().to_string();
        assert!(refused.contains("unknown snapshot format version 3"), "{refused}");
        assert_eq!(reloaded, store, "a refused snapshot changes nothing");
    }
}

#[cfg(test)]
mod streaming_tests {
    use std::io::{self, Read, Write};

    use super::*;
    use crate::command::Command;

    fn request(session: Option<(u64, u64)>, command: Command) -> Request {
        Request { session, command }
    }

    fn put(key: &[u8], value: &[u8]) -> Command {
        Command::Put { key: key.to_vec(), value: value.to_vec() }
    }

    /// A store with keys, a deleted key, sessions of every kind of kept response, and enough
    /// keys for a tree of three levels (of 16-entry nodes).
    fn sample_store() -> KvStateMachine {
        let mut store = KvStateMachine::new();
        let mut index = 0;
        let mut next = || {
            index += 1;
            LogIndex(index)
        };
        for i in 0u32..400 {
            store.execute(next(), request(None, put(&i.to_be_bytes(), &i.to_le_bytes())));
        }
        store.execute(next(), request(Some((1, 1)), put(b"k", b"v")));
        store.execute(next(), request(Some((2, 5)), Command::Delete { key: b"k".to_vec() }));
        store.execute(next(), request(Some((3, 1)), Command::Get { key: b"x".to_vec() }));
        let large = vec![b'L'; 2 * MAX_KEPT_RESPONSE_BYTES];
        store.execute(next(), request(None, put(b"large", &large)));
        let refused =
            Command::CompareAndSwap { key: b"large".to_vec(), expected: None, new: vec![] };
        store.execute(next(), request(Some((4, 9)), refused));
        store.execute(next(), request(None, put(b"", b"")));
        store
    }

    /// The snapshot format as the module documentation gives it, written field by field.
    fn documented_encoding(store: &KvStateMachine) -> Vec<u8> {
        let mut bytes = vec![2];
        bytes.extend_from_slice(&(store.data.len() as u64).to_le_bytes());
        for (key, value) in &store.data {
            record(&mut bytes, key);
            record(&mut bytes, value);
        }
        bytes.extend_from_slice(&(store.sessions.len() as u64).to_le_bytes());
        for (client, session) in store.sessions.iter() {
            bytes.extend_from_slice(&client.0.to_le_bytes());
            bytes.extend_from_slice(&session.sequence.to_le_bytes());
            bytes.extend_from_slice(&session.last_index.0.to_le_bytes());
            bytes.push(u8::from(session.digest.is_some()));
            bytes.extend_from_slice(&session.digest.unwrap_or(0).to_le_bytes());
            record(&mut bytes, &session.result.encode());
        }
        bytes
    }

    fn view_bytes(store: &KvStateMachine) -> Vec<u8> {
        let mut bytes = Vec::new();
        store.snapshot_view().unwrap().write_to(&mut bytes).unwrap();
        bytes
    }

    /// Hands out at most `step` bytes per read (and sometimes none with `Interrupted`).
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        reads: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.reads.is_multiple_of(7) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.step).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// Accepts at most `step` bytes per write, and fails once `fail_after` bytes were written.
    struct Stingy {
        written: Vec<u8>,
        step: usize,
        fail_after: usize,
    }

    impl Write for Stingy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written.len() >= self.fail_after {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.step).min(self.fail_after - self.written.len());
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_view_writes_the_bytes_snapshot_returns_in_the_documented_format() {
        let store = sample_store();
        let snapshot = store.snapshot().unwrap();
        assert_eq!(snapshot, documented_encoding(&store));
        assert_eq!(view_bytes(&store), snapshot);
        // Through a writer that takes a few bytes at a time, too.
        let mut stingy = Stingy { written: Vec::new(), step: 3, fail_after: usize::MAX };
        store.snapshot_view().unwrap().write_to(&mut stingy).unwrap();
        assert_eq!(stingy.written, snapshot);
        // An empty store.
        let empty = KvStateMachine::new();
        assert_eq!(view_bytes(&empty), [&[2][..], &[0; 16]].concat());
    }

    #[test]
    fn a_failing_writer_fails_the_view_without_panicking() {
        let store = sample_store();
        let length = store.snapshot().unwrap().len();
        for fail_after in [0, 1, 100, length / 2, length - 1] {
            let mut stingy = Stingy { written: Vec::new(), step: 4096, fail_after };
            let error = store.snapshot_view().unwrap().write_to(&mut stingy).unwrap_err();
            assert!(error.to_string().contains("disk full"), "{error}");
        }
    }

    #[test]
    fn a_view_keeps_the_state_as_of_when_it_was_taken() {
        let mut store = sample_store();
        let frozen = store.clone();
        let expected = store.snapshot().unwrap();
        let view = store.snapshot_view().unwrap();
        // Writes to every part of the store after the view was taken: overwrites, deletes and
        // new keys across the tree, and new and changed sessions.
        let mut index = 10_000;
        for i in (0u32..400).step_by(3) {
            index += 1;
            let command = if i % 2 == 0 {
                put(&i.to_be_bytes(), b"changed")
            } else {
                Command::Delete { key: i.to_be_bytes().to_vec() }
            };
            store.execute(LogIndex(index), request(Some((u64::from(i % 50), index)), command));
        }
        store.execute(LogIndex(index + 1), request(None, put(b"new key", b"new value")));
        assert_ne!(store, frozen);
        // The view is written on another thread, as a node does.
        let written = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            view.write_to(&mut bytes).unwrap();
            bytes
        })
        .join()
        .unwrap();
        assert_eq!(written, expected);
        let mut restored = KvStateMachine::new();
        restored.restore_from(&mut written.as_slice()).unwrap();
        assert_eq!(restored, frozen);
        // The store itself kept its writes.
        assert_eq!(store.get(b"new key"), Some(b"new value".as_slice()));
        assert_eq!(store.get(&0u32.to_be_bytes()), Some(b"changed".as_slice()));
        assert_eq!(frozen.get(&0u32.to_be_bytes()), Some(0u32.to_le_bytes().as_slice()));
    }

    #[test]
    fn restore_from_a_stream_matches_restore_and_a_truncated_stream_changes_nothing() {
        let store = sample_store();
        let snapshot = store.snapshot().unwrap();
        for step in [1, 2, 7, 4096] {
            let mut restored = KvStateMachine::new();
            let mut trickle = Trickle { bytes: &snapshot, step, reads: 0 };
            restored.restore_from(&mut trickle).unwrap();
            assert_eq!(restored, store, "step {step}");
        }
        let mut target = KvStateMachine::new();
        target.execute(LogIndex(1), request(Some((7, 1)), put(b"mine", b"kept")));
        let before = target.clone();
        // Every cut: the header, inside a record's length or bytes, between sessions, ...
        let cuts = (0..64)
            .chain((64..snapshot.len()).step_by(97))
            .chain(snapshot.len() - 40..snapshot.len());
        for cut in cuts {
            let mut trickle = Trickle { bytes: &snapshot[..cut], step: 5, reads: 0 };
            assert!(target.restore_from(&mut trickle).is_err(), "cut at {cut}");
            assert_eq!(target, before, "cut at {cut}");
        }
        // A trailing byte is refused too.
        let mut longer = snapshot.clone();
        longer.push(0);
        let error = target.restore_from(&mut longer.as_slice()).unwrap_err().to_string();
        assert!(error.contains("trailing bytes"), "{error}");
        assert_eq!(target, before);
    }

    #[test]
    fn a_corrupted_stream_restores_as_the_slice_does_or_changes_nothing() {
        let store = sample_store();
        let snapshot = store.snapshot().unwrap();
        let mut target = KvStateMachine::new();
        target.execute(LogIndex(1), request(None, put(b"mine", b"kept")));
        let before = target.clone();
        // Corrupt one byte at a time over the header, the first records and the sessions.
        let positions = (0..100).chain(snapshot.len() - 500..snapshot.len());
        for position in positions {
            for value in [0x00, 0xff] {
                let mut corrupt = snapshot.clone();
                corrupt[position] = value;
                let mut from_slice = before.clone();
                let sliced = from_slice.restore(&corrupt);
                let mut trickle = Trickle { bytes: &corrupt, step: 3, reads: 0 };
                let streamed = target.restore_from(&mut trickle);
                assert_eq!(streamed.is_ok(), sliced.is_ok(), "byte {position} = {value}");
                assert_eq!(target, from_slice, "byte {position} = {value}");
                if streamed.is_err() {
                    assert_eq!(target, before);
                } else {
                    target = before.clone();
                }
            }
        }
    }

    #[test]
    fn a_failing_reader_changes_nothing() {
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("read error"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let snapshot = sample_store().snapshot().unwrap();
        let mut target = KvStateMachine::new();
        target.execute(LogIndex(1), request(None, put(b"mine", b"kept")));
        let before = target.clone();
        let error = target.restore_from(&mut Failing(&snapshot[..snapshot.len() / 2])).unwrap_err();
        assert!(error.to_string().contains("read error"), "{error}");
        assert_eq!(target, before);
    }

    #[test]
    fn declared_lengths_and_counts_beyond_the_data_allocate_no_more_than_the_data() {
        // A key declared 4 GiB long, followed by 100 bytes.
        let mut huge_key = vec![2];
        huge_key.extend_from_slice(&1u64.to_le_bytes());
        huge_key.extend_from_slice(&u32::MAX.to_le_bytes());
        huge_key.extend_from_slice(&[b'k'; 100]);
        let mut reader =
            SnapshotReader { input: huge_key.as_slice(), offset: 0, record: Vec::new() };
        reader.u8().unwrap();
        reader.u64().unwrap();
        let error = reader.record().unwrap_err().to_string();
        assert!(error.contains("the snapshot ends within"), "{error}");
        assert!(reader.record.capacity() <= MAX_RESERVED_BYTES, "{}", reader.record.capacity());
        let mut store = KvStateMachine::new();
        assert!(store.restore(&huge_key).is_err());
        assert!(store.restore_from(&mut huge_key.as_slice()).is_err());

        // A value declared just above what is reserved at once, with only part of it there.
        let mut long_value = vec![2];
        long_value.extend_from_slice(&1u64.to_le_bytes());
        record(&mut long_value, b"k");
        long_value.extend_from_slice(&(3 * MAX_RESERVED_BYTES as u32).to_le_bytes());
        long_value.extend_from_slice(&vec![b'v'; MAX_RESERVED_BYTES + 10]);
        let mut reader =
            SnapshotReader { input: long_value.as_slice(), offset: 0, record: Vec::new() };
        reader.u8().unwrap();
        reader.u64().unwrap();
        reader.record().unwrap();
        assert!(reader.record().is_err());
        assert!(reader.record.capacity() <= 4 * MAX_RESERVED_BYTES, "{}", reader.record.capacity());

        // Counts of 2^64 - 1 keys or sessions with nothing after them end at once.
        for sessions in [false, true] {
            let mut counts = vec![2];
            if sessions {
                counts.extend_from_slice(&0u64.to_le_bytes());
            }
            counts.extend_from_slice(&u64::MAX.to_le_bytes());
            let error = store.restore_from(&mut counts.as_slice()).unwrap_err().to_string();
            assert!(error.contains("the snapshot ends within"), "{error}");
        }
        assert!(store.is_empty());
    }

    #[test]
    fn a_version_1_snapshot_restores_from_a_stream() {
        let mut bytes = vec![1];
        bytes.extend_from_slice(&1u64.to_le_bytes());
        record(&mut bytes, b"k");
        record(&mut bytes, b"v");
        bytes.extend_from_slice(&1u64.to_le_bytes());
        for field in [5u64, 2, 30] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        record(&mut bytes, &Response::Written { index: 30 }.encode());
        let mut streamed = KvStateMachine::new();
        streamed.restore_from(&mut Trickle { bytes: &bytes, step: 2, reads: 0 }).unwrap();
        let mut sliced = KvStateMachine::new();
        sliced.restore(&bytes).unwrap();
        assert_eq!(streamed, sliced);
        assert_eq!(streamed.get(b"k"), Some(b"v".as_slice()));
        assert_eq!(
            streamed.execute(LogIndex(31), request(Some((5, 2)), put(b"k", b"other"))),
            Response::Written { index: 30 },
            "a version 1 session (no digest) answers its retry"
        );
        assert_eq!(view_bytes(&sliced)[0], SNAPSHOT_FORMAT_VERSION);
    }
}
