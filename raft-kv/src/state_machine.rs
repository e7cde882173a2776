//! [`KvStateMachine`]: the replicated store. Byte keys and values in a sorted map, and for each
//! client session the last sequence number applied, a digest of that request's command and
//! its response, so that a retried write (same client id and sequence number, after an
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

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;

use raft_consensus::{LogIndex, StateMachine};

use crate::command::{Command, CommandError, Reader, Request, Response};

/// The snapshot format version this build writes (it also reads version 1).
pub const SNAPSHOT_FORMAT_VERSION: u8 = 2;

/// The oldest snapshot format version this build reads.
pub const OLDEST_SNAPSHOT_FORMAT_VERSION: u8 = 1;

/// Most client sessions kept. When a new client would exceed it, the session used least
/// recently (by log index, so every node evicts the same one) is forgotten; a retry from that
/// client is then treated as new.
pub const MAX_SESSIONS: usize = 100_000;

/// Largest response kept in a session, in encoded bytes (the encoding in [`crate::command`]).
/// Every write's own answer is far smaller (at most 10 bytes); only a not-swapped
/// compare-and-swap (which carries the current value) or a get can be larger, and a retry of
/// one of those is answered [`Response::NotKept`] with the log index at which it was applied.
/// Sessions thus hold at most about `MAX_SESSIONS * (MAX_KEPT_RESPONSE_BYTES + 100)` bytes.
pub const MAX_KEPT_RESPONSE_BYTES: usize = 256;

/// What the store remembers of a client's last applied request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    /// Its sequence number.
    sequence: u64,
    /// [`Command::digest`] of its command; `None` for a session restored from a version 1
    /// snapshot.
    digest: Option<u64>,
    /// Its response, or [`Response::NotKept`] when that was above [`MAX_KEPT_RESPONSE_BYTES`].
    response: Response,
}

/// The replicated key-value store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Client id -> its last applied request.
    sessions: BTreeMap<u64, Session>,
    /// (log index of a session's last request, client id), to evict the least recent.
    session_ages: BTreeSet<(u64, u64)>,
    /// Client id -> log index of its last request.
    session_last_index: BTreeMap<u64, u64>,
}

impl KvStateMachine {
    /// An empty store.
    pub fn new() -> Self {
        KvStateMachine::default()
    }

    /// The value of `key`, read locally (not linearizable on its own: reads go through the
    /// log or ReadIndex).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
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
        let session =
            request.session.map(|(client, sequence)| (client, sequence, request.command.digest()));
        if let Some((client, sequence, digest)) = session
            && let Some(last) = self.sessions.get(&client)
        {
            if sequence == last.sequence {
                if last.digest.is_some_and(|last_digest| last_digest != digest) {
                    return Response::SessionConflict;
                }
                return last.response.clone();
            }
            if sequence < last.sequence {
                return Response::StaleRequest { last_sequence: last.sequence };
            }
        }
        let response = match request.command {
            Command::Get { key } => Response::Value(self.data.get(&key).cloned()),
            Command::Put { key, value } => {
                self.data.insert(key, value);
                Response::Written { index: index.0 }
            }
            Command::Delete { key } => {
                Response::Deleted { existed: self.data.remove(&key).is_some(), index: index.0 }
            }
            Command::CompareAndSwap { key, expected, new } => {
                let current = self.data.get(&key);
                if current == expected.as_ref() {
                    self.data.insert(key, new);
                    Response::Swapped { index: index.0 }
                } else {
                    Response::NotSwapped { current: current.cloned() }
                }
            }
        };
        if let Some((client, sequence, digest)) = session {
            let kept =
                Session { sequence, digest: Some(digest), response: bounded(&response, index.0) };
            self.remember(client, index.0, kept);
        }
        response
    }

    /// Records `client`'s latest request, evicting the least recent session when full.
    fn remember(&mut self, client: u64, index: u64, session: Session) {
        if let Some(previous) = self.session_last_index.insert(client, index) {
            self.session_ages.remove(&(previous, client));
        }
        self.session_ages.insert((index, client));
        self.sessions.insert(client, session);
        while self.sessions.len() > MAX_SESSIONS {
            let Some((_, oldest)) = self.session_ages.pop_first() else { break };
            self.sessions.remove(&oldest);
            self.session_last_index.remove(&oldest);
        }
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
        let request = Request::decode(command)?;
        Ok(self.execute(index, request).encode())
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let mut bytes = vec![SNAPSHOT_FORMAT_VERSION];
        bytes.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        for (key, value) in &self.data {
            put(&mut bytes, key);
            put(&mut bytes, value);
        }
        bytes.extend_from_slice(&(self.sessions.len() as u64).to_le_bytes());
        for (client, session) in &self.sessions {
            bytes.extend_from_slice(&client.to_le_bytes());
            bytes.extend_from_slice(&session.sequence.to_le_bytes());
            let last_index = self.session_last_index.get(client).copied().unwrap_or(0);
            bytes.extend_from_slice(&last_index.to_le_bytes());
            bytes.push(u8::from(session.digest.is_some()));
            bytes.extend_from_slice(&session.digest.unwrap_or(0).to_le_bytes());
            put(&mut bytes, &session.response.encode());
        }
        Ok(bytes)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        let mut reader = Reader { bytes: snapshot, offset: 0 };
        let version = reader.u8()?;
        if !(OLDEST_SNAPSHOT_FORMAT_VERSION..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(Box::new(CommandError(format!(
                "unknown snapshot format version {version} (this build reads versions \
                 {OLDEST_SNAPSHOT_FORMAT_VERSION} to {SNAPSHOT_FORMAT_VERSION})"
            ))));
        }
        let mut data = BTreeMap::new();
        for _ in 0..reader.u64()? {
            let key = reader.bytes()?;
            let value = reader.bytes()?;
            data.insert(key, value);
        }
        let mut restored = KvStateMachine { data, ..KvStateMachine::default() };
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
            let response = bounded(&Response::decode(&reader.bytes()?)?, last_index);
            restored.remember(client, last_index, Session { sequence, digest, response });
        }
        reader.finish()?;
        // Only a snapshot that decoded completely replaces the state.
        *self = restored;
        Ok(())
    }
}

fn put(bytes: &mut Vec<u8>, value: &[u8]) {
    bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    bytes.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!store.sessions.contains_key(&0), "the least recent session is forgotten");
        assert!(store.sessions.contains_key(&1));
        // Client 0's retry is applied again (its session is gone), client 1's is answered.
        assert_eq!(store.execute(LogIndex(200_000), request(1)), Response::Written { index: 2 });
    }
}

#[cfg(test)]
mod session_digest_tests {
    use super::*;

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
        assert_eq!(store.sessions[&5].response, Response::NotKept { applied_at: 3 });
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
            super::put(&mut bytes, key);
            super::put(&mut bytes, value);
        }
        bytes.extend_from_slice(&(sessions.len() as u64).to_le_bytes());
        for (client, sequence, last_index, response) in sessions {
            bytes.extend_from_slice(&client.to_le_bytes());
            bytes.extend_from_slice(&sequence.to_le_bytes());
            bytes.extend_from_slice(&last_index.to_le_bytes());
            super::put(&mut bytes, &response.encode());
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
