//! [`KvStateMachine`]: the replicated store. Byte keys and values in a sorted map, and for each
//! client session the last sequence number applied and its response, so that a retried write
//! (same client id and sequence number, after an unknown outcome) is answered again instead of
//! applied twice. Deterministic: the same requests in the same order give the same state and
//! the same answers on every node. Snapshots hold both the data and the sessions.

use std::collections::BTreeMap;
use std::error::Error;

use raft_consensus::{LogIndex, StateMachine};

use crate::command::{Command, CommandError, Reader, Request, Response};

/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

/// Most client sessions kept. When a new client would exceed it, the session used least
/// recently (by log index, so every node evicts the same one) is forgotten; a retry from that
/// client is then treated as new.
pub const MAX_SESSIONS: usize = 100_000;

/// The replicated key-value store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Client id -> (last applied sequence number, its response).
    sessions: BTreeMap<u64, (u64, Response)>,
    /// (log index of a session's last request, client id), to evict the least recent.
    session_ages: std::collections::BTreeSet<(u64, u64)>,
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
    pub fn execute(&mut self, index: LogIndex, request: Request) -> Response {
        if let Some((client, sequence)) = request.session
            && let Some((last_sequence, last_response)) = self.sessions.get(&client)
        {
            if sequence == *last_sequence {
                return last_response.clone();
            }
            if sequence < *last_sequence {
                return Response::StaleRequest { last_sequence: *last_sequence };
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
        if let Some((client, sequence)) = request.session {
            self.remember(client, sequence, index.0, response.clone());
        }
        response
    }

    /// Records `client`'s latest request, evicting the least recent session when full.
    fn remember(&mut self, client: u64, sequence: u64, index: u64, response: Response) {
        if let Some(previous) = self.session_last_index.insert(client, index) {
            self.session_ages.remove(&(previous, client));
        }
        self.session_ages.insert((index, client));
        self.sessions.insert(client, (sequence, response));
        while self.sessions.len() > MAX_SESSIONS {
            let Some((_, oldest)) = self.session_ages.pop_first() else { break };
            self.sessions.remove(&oldest);
            self.session_last_index.remove(&oldest);
        }
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
        for (client, (sequence, response)) in &self.sessions {
            bytes.extend_from_slice(&client.to_le_bytes());
            bytes.extend_from_slice(&sequence.to_le_bytes());
            let last_index = self.session_last_index.get(client).copied().unwrap_or(0);
            bytes.extend_from_slice(&last_index.to_le_bytes());
            put(&mut bytes, &response.encode());
        }
        Ok(bytes)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        let mut reader = Reader { bytes: snapshot, offset: 0 };
        let version = reader.u8()?;
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(Box::new(CommandError(format!("unknown snapshot version {version}"))));
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
            let response = Response::decode(&reader.bytes()?)?;
            restored.remember(client, sequence, last_index, response);
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
