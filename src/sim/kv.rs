//! [`SimKv`]: the key-value state machine the simulated clients drive: get, put and
//! compare-and-swap on one-byte keys and 64-bit values, with a small explicit encoding.

use std::collections::BTreeMap;
use std::error::Error;

use crate::state_machine::StateMachine;

use super::trace::TraceHash;

/// A client operation on the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KvOperation {
    Get { key: u8 },
    Put { key: u8, value: u64 },
    Cas { key: u8, expected: Option<u64>, new: u64 },
}

/// What the store answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum KvAnswer {
    Value(Option<u64>),
    Written,
    Swapped(bool),
}

impl KvOperation {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match *self {
            KvOperation::Get { key } => vec![0, key],
            KvOperation::Put { key, value } => {
                let mut bytes = vec![1, key];
                bytes.extend_from_slice(&value.to_le_bytes());
                bytes
            }
            KvOperation::Cas { key, expected, new } => {
                let mut bytes = vec![2, key, u8::from(expected.is_some())];
                bytes.extend_from_slice(&expected.unwrap_or(0).to_le_bytes());
                bytes.extend_from_slice(&new.to_le_bytes());
                bytes
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<KvOperation> {
        let u64_at = |offset: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(offset..offset + 8)?.try_into().ok()?))
        };
        match (bytes.first()?, bytes.len()) {
            (0, 2) => Some(KvOperation::Get { key: bytes[1] }),
            (1, 10) => Some(KvOperation::Put { key: bytes[1], value: u64_at(2)? }),
            (2, 19) => {
                let expected = match bytes[2] {
                    0 => None,
                    1 => Some(u64_at(3)?),
                    _ => return None,
                };
                Some(KvOperation::Cas { key: bytes[1], expected, new: u64_at(11)? })
            }
            _ => None,
        }
    }
}

impl KvAnswer {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match *self {
            KvAnswer::Value(None) => vec![0],
            KvAnswer::Value(Some(value)) => {
                let mut bytes = vec![1];
                bytes.extend_from_slice(&value.to_le_bytes());
                bytes
            }
            KvAnswer::Written => vec![2],
            KvAnswer::Swapped(swapped) => vec![3, u8::from(swapped)],
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<KvAnswer> {
        match (bytes.first()?, bytes.len()) {
            (0, 1) => Some(KvAnswer::Value(None)),
            (1, 9) => Some(KvAnswer::Value(Some(u64::from_le_bytes(bytes[1..9].try_into().ok()?)))),
            (2, 1) => Some(KvAnswer::Written),
            (3, 2) => Some(KvAnswer::Swapped(bytes[1] == 1)),
            _ => None,
        }
    }
}

/// The replicated store. Besides the values it keeps a hash of every command it applied, so
/// that two stores are equal only if they applied the same commands: comparing stores at the
/// end of a run checks snapshots and restores as well as the values.
///
/// Its commands are the simulator's own small encoding of get, put and compare-and-swap; it
/// is the state machine of [`KvWorkload`](super::KvWorkload).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimKv {
    values: BTreeMap<u8, u64>,
    applied_hash: u64,
}

impl SimKv {
    pub(crate) fn execute(&mut self, operation: KvOperation) -> KvAnswer {
        match operation {
            KvOperation::Get { key } => KvAnswer::Value(self.values.get(&key).copied()),
            KvOperation::Put { key, value } => {
                self.values.insert(key, value);
                KvAnswer::Written
            }
            KvOperation::Cas { key, expected, new } => {
                let swapped = self.values.get(&key).copied() == expected;
                if swapped {
                    self.values.insert(key, new);
                }
                KvAnswer::Swapped(swapped)
            }
        }
    }
}

impl StateMachine for SimKv {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let operation = KvOperation::decode(command).ok_or("undecodable key-value command")?;
        let mut hash = TraceHash::default();
        hash.add_u64(self.applied_hash);
        hash.add_bytes(command);
        self.applied_hash = hash.value();
        Ok(self.execute(operation).encode())
    }

    /// Answers a get (the same bytes `apply` would) without changing anything; other
    /// operations are not queries.
    fn query(&self, query: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        match KvOperation::decode(query) {
            Some(KvOperation::Get { key }) => {
                Ok(KvAnswer::Value(self.values.get(&key).copied()).encode())
            }
            Some(_) => Err("only a get is a query".into()),
            None => Err("undecodable key-value query".into()),
        }
    }

    /// The applied-command hash, then each key and value.
    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let mut bytes = self.applied_hash.to_le_bytes().to_vec();
        for (key, value) in &self.values {
            bytes.push(*key);
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        Ok(bytes)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        let (hash, pairs) = snapshot.split_at_checked(8).ok_or("snapshot shorter than its hash")?;
        if pairs.len() % 9 != 0 {
            return Err("snapshot key-value pairs are cut short".into());
        }
        let mut values = BTreeMap::new();
        for pair in pairs.chunks_exact(9) {
            let value: [u8; 8] = pair[1..].try_into()?;
            values.insert(pair[0], u64::from_le_bytes(value));
        }
        self.values = values;
        self.applied_hash = u64::from_le_bytes(hash.try_into()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_and_answers_round_trip() {
        let operations = [
            KvOperation::Get { key: 3 },
            KvOperation::Put { key: 1, value: u64::MAX },
            KvOperation::Cas { key: 2, expected: None, new: 7 },
            KvOperation::Cas { key: 2, expected: Some(7), new: 8 },
        ];
        for operation in operations {
            assert_eq!(KvOperation::decode(&operation.encode()), Some(operation));
        }
        for answer in [
            KvAnswer::Value(None),
            KvAnswer::Value(Some(5)),
            KvAnswer::Written,
            KvAnswer::Swapped(true),
        ] {
            assert_eq!(KvAnswer::decode(&answer.encode()), Some(answer));
        }
        assert_eq!(KvOperation::decode(&[9, 9]), None);
        assert_eq!(KvOperation::decode(&[]), None);
    }

    #[test]
    fn compare_and_swap_checks_the_current_value() {
        let mut store = SimKv::default();
        assert_eq!(
            store.execute(KvOperation::Cas { key: 1, expected: Some(1), new: 2 }),
            KvAnswer::Swapped(false)
        );
        assert_eq!(
            store.execute(KvOperation::Cas { key: 1, expected: None, new: 2 }),
            KvAnswer::Swapped(true)
        );
        assert_eq!(store.execute(KvOperation::Get { key: 1 }), KvAnswer::Value(Some(2)));
        assert!(store.apply(b"junk").is_err());
        let get = KvOperation::Get { key: 1 }.encode();
        assert_eq!(store.query(&get).ok(), Some(KvAnswer::Value(Some(2)).encode()));
        let before = store.clone();
        assert!(store.query(&KvOperation::Put { key: 1, value: 3 }.encode()).is_err());
        assert!(store.query(b"junk").is_err());
        assert_eq!(store, before, "a query changes nothing");
    }

    #[test]
    fn a_snapshot_restores_an_equal_store() {
        let mut store = SimKv::default();
        for operation in [
            KvOperation::Put { key: 1, value: 10 },
            KvOperation::Put { key: 7, value: 70 },
            KvOperation::Cas { key: 1, expected: Some(10), new: 11 },
        ] {
            store.apply(&operation.encode()).expect("a valid command");
        }
        let snapshot = store.snapshot().expect("supported");
        let mut restored = SimKv::default();
        restored.restore(&snapshot).expect("a valid snapshot");
        assert_eq!(restored, store);
        assert!(restored.restore(&snapshot[..snapshot.len() - 1]).is_err());
        assert_eq!(restored, store, "a failed restore changes nothing");
    }
}
