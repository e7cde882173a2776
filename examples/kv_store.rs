//! The example key-value store: a small in-memory [`StateMachine`] that the other examples
//! replicate with Raft.
//!
//! This file owns the store's whole contract:
//!
//! - [`KvCommand`], the commands a client proposes, and [`KvResponse`], the typed result
//!   `apply` returns for each; both travel as bincode (`bincode::config::standard()`).
//! - [`KvStore`], the state machine itself, which keeps its data in a `BTreeMap` so that a
//!   snapshot of the same state is the same bytes on every node.
//! - [`encode_command`] and [`decode_response`], so callers can propose commands and read
//!   results without repeating the bincode configuration.
//! - The snapshot format: one [`SNAPSHOT_FORMAT_VERSION`] byte followed by the bincode-encoded
//!   map, so a future format change is detected instead of misread.
//!
//! The other examples share it by including it as a module:
//!
//! ```ignore
//! #[allow(dead_code)]
//! #[path = "kv_store.rs"]
//! mod kv_store;
//! ```
//!
//! Run on its own (`cargo run --example kv_store`), it applies a few commands directly,
//! without Raft, and checks that a snapshot restores to an equal store.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;

use raft_consensus::state_machine::StateMachine;

/// A command a client proposes to the key-value store.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum KvCommand {
    /// Stores `value` under `key`, replacing any value already there.
    Set { key: String, value: String },
    /// Reads the value stored under `key`.
    Get { key: String },
    /// Removes `key` and its value.
    Delete { key: String },
}

/// The result of applying one [`KvCommand`], as [`KvStore::apply`] returns it (bincode-encoded).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum KvResponse {
    /// The answer to [`KvCommand::Set`]: the value now replaced, or `None` if the key was new.
    Set { previous: Option<String> },
    /// The answer to [`KvCommand::Get`]: the stored value, or `None` if the key is absent.
    Get { value: Option<String> },
    /// The answer to [`KvCommand::Delete`]: the value removed, or `None` if the key was absent.
    Delete { removed: Option<String> },
}

/// The first byte of every snapshot [`KvStore::snapshot`] makes; [`KvStore::restore`] rejects
/// any other value, so a snapshot in a future format is detected rather than misread.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

/// The bincode configuration used for commands, responses and snapshots.
fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Why the store rejected a command or a snapshot, beyond bincode's own decoding errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvStoreError {
    /// The bytes held a valid value followed by extra bytes that belong to nothing.
    TrailingBytes {
        /// How many bytes the decoded value used.
        consumed: usize,
        /// How many bytes there were in all.
        total: usize,
    },
    /// The snapshot was empty, so it had not even a format version byte.
    EmptySnapshot,
    /// The snapshot's first byte was not [`SNAPSHOT_FORMAT_VERSION`].
    UnsupportedSnapshotVersion {
        /// The version byte the snapshot carried.
        found: u8,
    },
}

impl fmt::Display for KvStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TrailingBytes { consumed, total } => write!(
                f,
                "{} trailing byte(s) after a valid value ({consumed} of {total} bytes used)",
                total - consumed
            ),
            Self::EmptySnapshot => f.write_str("the snapshot is empty (no format version byte)"),
            Self::UnsupportedSnapshotVersion { found } => write!(
                f,
                "unsupported snapshot format version {found} (expected {SNAPSHOT_FORMAT_VERSION})"
            ),
        }
    }
}

impl Error for KvStoreError {}

/// Decodes exactly one `T` from `bytes`, rejecting trailing bytes.
fn decode_exact<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, Box<dyn Error + Send + Sync>> {
    let (value, consumed): (T, usize) = bincode::decode_from_slice(bytes, bincode_config())?;
    if consumed != bytes.len() {
        return Err(Box::new(KvStoreError::TrailingBytes { consumed, total: bytes.len() }));
    }
    Ok(value)
}

/// Encodes a command into the bytes [`KvStore::apply`] expects, ready to propose.
pub fn encode_command(command: &KvCommand) -> Vec<u8> {
    bincode::encode_to_vec(command, bincode_config())
        .expect("encoding a KvCommand into a Vec cannot fail: the Vec writer never errors and every field is a String")
}

/// Decodes the bytes [`KvStore::apply`] returned into a [`KvResponse`].
///
/// Fails if the bytes are not exactly one encoded response (including if bytes trail it).
pub fn decode_response(bytes: &[u8]) -> Result<KvResponse, bincode::error::DecodeError> {
    let (response, consumed): (KvResponse, usize) =
        bincode::decode_from_slice(bytes, bincode_config())?;
    if consumed != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(
            KvStoreError::TrailingBytes { consumed, total: bytes.len() }.to_string(),
        ));
    }
    Ok(response)
}

/// An in-memory key-value store of strings, replicated as a Raft [`StateMachine`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KvStore {
    /// The stored pairs; a `BTreeMap` so iteration, and hence snapshots, are deterministic.
    data: BTreeMap<String, String>,
}

impl KvStore {
    /// Creates an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the value stored under `key`, or `None` if the key is absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// Returns how many keys the store holds.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Returns whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Executes a decoded command and returns its typed result.
    fn execute(&mut self, command: KvCommand) -> KvResponse {
        match command {
            KvCommand::Set { key, value } => {
                KvResponse::Set { previous: self.data.insert(key, value) }
            }
            KvCommand::Get { key } => KvResponse::Get { value: self.data.get(&key).cloned() },
            KvCommand::Delete { key } => KvResponse::Delete { removed: self.data.remove(&key) },
        }
    }
}

impl StateMachine for KvStore {
    /// Decodes one [`KvCommand`], executes it, and returns the encoded [`KvResponse`].
    ///
    /// Bytes that are not exactly one encoded command (undecodable, or followed by trailing
    /// bytes) give an `Err` and leave the store unchanged.
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let command: KvCommand = decode_exact(command)?;
        let response = self.execute(command);
        Ok(bincode::encode_to_vec(&response, bincode_config())?)
    }

    /// Encodes the whole store: [`SNAPSHOT_FORMAT_VERSION`], then the bincode-encoded map.
    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let mut snapshot = vec![SNAPSHOT_FORMAT_VERSION];
        bincode::encode_into_std_write(&self.data, &mut snapshot, bincode_config())?;
        Ok(snapshot)
    }

    /// Replaces the whole store with a snapshot made by [`snapshot`](Self::snapshot).
    ///
    /// The state is replaced only if the snapshot decodes fully; otherwise this returns `Err`
    /// and the store is unchanged.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        let (&version, encoded_data) = snapshot.split_first().ok_or(KvStoreError::EmptySnapshot)?;
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(Box::new(KvStoreError::UnsupportedSnapshotVersion { found: version }));
        }
        self.data = decode_exact(encoded_data)?;
        Ok(())
    }
}

/// Applies a few commands directly (no Raft), then checks a snapshot round trip.
fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut store = KvStore::new();
    let commands = [
        KvCommand::Set { key: "language".to_string(), value: "Rust".to_string() },
        KvCommand::Set { key: "protocol".to_string(), value: "Paxos".to_string() },
        KvCommand::Set { key: "protocol".to_string(), value: "Raft".to_string() },
        KvCommand::Get { key: "protocol".to_string() },
        KvCommand::Get { key: "missing".to_string() },
        KvCommand::Set { key: "scratch".to_string(), value: "temporary".to_string() },
        KvCommand::Delete { key: "scratch".to_string() },
    ];
    for command in &commands {
        let response = decode_response(&store.apply(&encode_command(command))?)?;
        println!("{command:?} -> {response:?}");
    }

    match store.apply(b"not a command") {
        Ok(_) => return Err("junk bytes were accepted as a command".into()),
        Err(error) => println!("junk bytes rejected: {error}"),
    }

    let snapshot = store.snapshot()?;
    println!(
        "snapshot of {} key(s): {} bytes (format version {SNAPSHOT_FORMAT_VERSION})",
        store.len(),
        snapshot.len()
    );

    let mut restored = KvStore::new();
    restored.restore(&snapshot)?;
    let equal = restored == store;
    println!("restored store equals the original: {equal}");
    if !equal {
        return Err("the restored store differs from the original".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> KvCommand {
        KvCommand::Set { key: key.to_string(), value: value.to_string() }
    }

    fn get(key: &str) -> KvCommand {
        KvCommand::Get { key: key.to_string() }
    }

    fn delete(key: &str) -> KvCommand {
        KvCommand::Delete { key: key.to_string() }
    }

    /// Applies `command` through the `StateMachine` interface and decodes the response.
    fn apply(store: &mut KvStore, command: &KvCommand) -> KvResponse {
        let response_bytes =
            store.apply(&encode_command(command)).expect("a valid command applies");
        decode_response(&response_bytes).expect("apply returns a valid response")
    }

    fn populated_store() -> KvStore {
        let mut store = KvStore::new();
        apply(&mut store, &set("alpha", "1"));
        apply(&mut store, &set("beta", "2"));
        apply(&mut store, &set("gamma", "three"));
        store
    }

    #[test]
    fn set_get_delete_give_typed_responses() {
        let mut store = KvStore::new();
        assert!(store.is_empty());

        assert_eq!(apply(&mut store, &set("k", "v1")), KvResponse::Set { previous: None });
        assert_eq!(store.get("k"), Some("v1"));
        assert_eq!(
            apply(&mut store, &set("k", "v2")),
            KvResponse::Set { previous: Some("v1".to_string()) }
        );
        assert_eq!(apply(&mut store, &get("k")), KvResponse::Get { value: Some("v2".to_string()) });
        assert_eq!(store.len(), 1);

        assert_eq!(
            apply(&mut store, &delete("k")),
            KvResponse::Delete { removed: Some("v2".to_string()) }
        );
        assert_eq!(store.get("k"), None);
        assert!(store.is_empty());
        assert_eq!(apply(&mut store, &delete("k")), KvResponse::Delete { removed: None });
        assert_eq!(apply(&mut store, &get("k")), KvResponse::Get { value: None });
    }

    #[test]
    fn get_of_missing_key_is_none() {
        let mut store = populated_store();
        assert_eq!(store.get("missing"), None);
        assert_eq!(apply(&mut store, &get("missing")), KvResponse::Get { value: None });
        assert_eq!(store, populated_store(), "a Get must not change the store");
    }

    #[test]
    fn every_command_variant_round_trips() {
        let commands = [
            set("key", "value"),
            set("", ""),
            set("unicode ключ", "値 ✓"),
            get("key"),
            get(""),
            delete("key"),
            delete(""),
        ];
        for command in commands {
            let bytes = encode_command(&command);
            let (decoded, consumed): (KvCommand, usize) =
                bincode::decode_from_slice(&bytes, bincode_config()).expect("decodes");
            assert_eq!(decoded, command);
            assert_eq!(consumed, bytes.len());
        }
    }

    #[test]
    fn every_response_variant_round_trips() {
        let responses = [
            KvResponse::Set { previous: None },
            KvResponse::Set { previous: Some("old".to_string()) },
            KvResponse::Get { value: None },
            KvResponse::Get { value: Some("v".to_string()) },
            KvResponse::Delete { removed: None },
            KvResponse::Delete { removed: Some("gone".to_string()) },
        ];
        for response in responses {
            let bytes = bincode::encode_to_vec(&response, bincode_config()).expect("encodes");
            assert_eq!(decode_response(&bytes).expect("decodes"), response);
            let mut with_trailing_byte = bytes.clone();
            with_trailing_byte.push(0);
            assert!(decode_response(&with_trailing_byte).is_err());
        }
    }

    #[test]
    fn snapshot_restores_into_an_equal_store() {
        let store = populated_store();
        let snapshot = store.snapshot().expect("snapshot");
        assert_eq!(snapshot[0], SNAPSHOT_FORMAT_VERSION);

        let mut restored = KvStore::new();
        restored.restore(&snapshot).expect("restore");
        assert_eq!(restored, store);
        assert_eq!(restored.get("gamma"), Some("three"));
        assert_eq!(restored.snapshot().expect("snapshot"), snapshot);
    }

    #[test]
    fn restore_replaces_rather_than_merges() {
        let snapshot = populated_store().snapshot().expect("snapshot");
        let mut store = KvStore::new();
        apply(&mut store, &set("stale", "x"));
        store.restore(&snapshot).expect("restore");
        assert_eq!(store, populated_store());
        assert_eq!(store.get("stale"), None);
    }

    #[test]
    fn empty_store_snapshot_round_trips() {
        let snapshot = KvStore::new().snapshot().expect("snapshot");
        let mut store = populated_store();
        store.restore(&snapshot).expect("restore");
        assert!(store.is_empty());
    }

    #[test]
    fn restore_of_bad_bytes_fails_and_leaves_state_unchanged() {
        let good = populated_store().snapshot().expect("snapshot");
        let mut truncated = good.clone();
        truncated.pop();
        let mut with_trailing_byte = good.clone();
        with_trailing_byte.push(0);
        let mut wrong_version = good.clone();
        wrong_version[0] = SNAPSHOT_FORMAT_VERSION + 1;

        let bad_snapshots: [(&str, Vec<u8>); 6] = [
            ("empty", Vec::new()),
            ("version byte only", vec![SNAPSHOT_FORMAT_VERSION]),
            ("truncated", truncated),
            ("trailing byte", with_trailing_byte),
            ("wrong version", wrong_version),
            ("junk", vec![SNAPSHOT_FORMAT_VERSION, 0xFF, 0x13, 0x37, 0xAB]),
        ];
        for (description, bad) in bad_snapshots {
            let mut store = KvStore::new();
            apply(&mut store, &set("keep", "me"));
            let before = store.clone();
            assert!(store.restore(&bad).is_err(), "{description} was accepted");
            assert_eq!(store, before, "{description} changed the store");
        }
    }

    #[test]
    fn apply_of_bad_bytes_fails_and_leaves_store_unchanged() {
        let mut valid_with_trailing_byte = encode_command(&set("k", "v"));
        valid_with_trailing_byte.push(0);
        let mut truncated = encode_command(&set("key", "value"));
        truncated.pop();

        let bad_commands: [(&str, Vec<u8>); 7] = [
            ("empty", Vec::new()),
            ("text junk", b"not a command".to_vec()),
            ("0xFF junk", vec![0xFF; 16]),
            ("unknown variant", vec![7, 1, b'k']),
            ("invalid UTF-8 key", vec![1, 2, 0xC3, 0x28]),
            ("truncated", truncated),
            ("valid command + trailing byte", valid_with_trailing_byte),
        ];
        for (description, bad) in bad_commands {
            let mut store = populated_store();
            assert!(store.apply(&bad).is_err(), "{description} was accepted");
            assert_eq!(store, populated_store(), "{description} changed the store");
        }
    }

    #[test]
    fn main_demonstration_succeeds() {
        main().expect("the demonstration runs");
    }

    /// The store's clients under the deterministic simulator: random sets, gets and deletes
    /// on three keys, proposed through a simulated cluster under message loss, partitions,
    /// crashes and disk faults, with every answer checked for linearizability and every
    /// node's store compared at the end.
    mod simulated {
        use raft_consensus::linearizability::{KvInput, KvModel, KvOutput};
        use raft_consensus::sim::{self, FaultConfig, SimConfig, SimRng, Workload};

        use super::*;

        const KEYS: [&str; 3] = ["apple", "banana", "cherry"];

        /// Random commands on [`KEYS`]; every set writes a value no one wrote before.
        #[derive(Default)]
        struct StoreClients {
            values_written: u64,
        }

        impl Workload for StoreClients {
            type Machine = KvStore;
            type Model = KvModel<String, String>;

            fn new_machine(&self) -> KvStore {
                KvStore::new()
            }

            fn model(&self) -> KvModel<String, String> {
                KvModel::new()
            }

            fn next_operation(
                &mut self,
                client: usize,
                random: &mut SimRng,
            ) -> (Vec<u8>, KvInput<String, String>) {
                let key = KEYS[random.below(KEYS.len() as u64) as usize].to_string();
                let roll = random.below(10);
                let (command, input) = if roll < 4 {
                    (KvCommand::Get { key: key.clone() }, KvInput::Get { key })
                } else if roll < 8 {
                    self.values_written += 1;
                    let value = format!("client {client} value {}", self.values_written);
                    (
                        KvCommand::Set { key: key.clone(), value: value.clone() },
                        KvInput::Put { key, value },
                    )
                } else {
                    (KvCommand::Delete { key: key.clone() }, KvInput::Delete { key })
                };
                (encode_command(&command), input)
            }

            fn output(
                &mut self,
                _client: usize,
                _input: &KvInput<String, String>,
                result: &[u8],
            ) -> Option<KvOutput<String>> {
                Some(match decode_response(result).ok()? {
                    KvResponse::Get { value } => KvOutput::Value(value),
                    KvResponse::Set { .. } | KvResponse::Delete { .. } => KvOutput::Done,
                })
            }
        }

        #[test]
        fn the_store_stays_linearizable_under_simulated_faults() {
            for (faults, seeds) in
                [(FaultConfig::default(), 0..6), (FaultConfig::crash_storm(), 100..104)]
            {
                let config = SimConfig { faults, ..SimConfig::default() };
                let mut answered = 0;
                for seed in seeds {
                    let report = sim::run_workload(seed, &config, StoreClients::default());
                    assert!(
                        report.violations.is_empty(),
                        "seed {seed} (replay it with `trace: true` and RUST_LOG=debug): {:?}",
                        report.violations
                    );
                    answered += report.operations.ok;
                }
                assert!(answered > 0, "the clients got answers");
            }
        }
    }
}
