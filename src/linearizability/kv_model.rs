//! [`KvModel`]: a ready-made [`Model`] of a map of independent registers, one per key, with
//! get, put, compare-and-set and delete, partitioned per key.

use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::hash::Hash;
use std::marker::PhantomData;

use super::history::Operation;
use super::model::Model;

/// A request to a key-value store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput<K, V> {
    /// Reads the value under `key`. Answered with [`KvOutput::Value`].
    Get {
        /// The key to read.
        key: K,
    },
    /// Stores `value` under `key`, replacing any value there. Answered with [`KvOutput::Done`].
    Put {
        /// The key to write.
        key: K,
        /// The value to store.
        value: V,
    },
    /// Stores `new` under `key` if the key currently holds `expected` (`None`: if the key is
    /// absent). Answered with [`KvOutput::Cas`].
    Cas {
        /// The key to compare and write.
        key: K,
        /// The value the key must hold, or `None` if it must be absent.
        expected: Option<V>,
        /// The value to store if the comparison holds.
        new: V,
    },
    /// Removes `key` and its value, if any. Answered with [`KvOutput::Done`].
    Delete {
        /// The key to remove.
        key: K,
    },
}

impl<K, V> KvInput<K, V> {
    /// The key the request concerns.
    pub fn key(&self) -> &K {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Cas { key, .. }
            | KvInput::Delete { key } => key,
        }
    }
}

/// A key-value store's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput<V> {
    /// The answer to [`KvInput::Get`]: the value under the key, or `None` if it is absent.
    Value(Option<V>),
    /// The answer to [`KvInput::Put`] and [`KvInput::Delete`]. They do not report the value
    /// they replaced or removed, so stores that do and stores that do not can both be checked
    /// (drop the previous value when recording the history).
    Done,
    /// The answer to [`KvInput::Cas`]: whether the comparison held and the value was stored.
    Cas(bool),
}

/// A map of independent registers: operations on different keys never affect each other, so
/// [`partition`](Model::partition) puts each key in its own partition (ordered by key), and the
/// [`State`](Model::State) of a partition is its one key's value (`None` while absent).
///
/// Because a state holds one key's value, [`step`](Model::step) ignores the key of its input:
/// it is meant to see only the inputs of one partition, as the checker guarantees.
///
/// # Example
///
/// ```
/// use raft_consensus::linearizability::{CheckResult, KvInput, KvModel, KvOutput, Operation, check};
///
/// let history = vec![
///     // Two clients race to create "leader"; both claim they won.
///     Operation::ok(1, KvInput::Cas { key: "leader", expected: None, new: 1 }, 0, 10, KvOutput::Cas(true)),
///     Operation::ok(2, KvInput::Cas { key: "leader", expected: None, new: 2 }, 2, 12, KvOutput::Cas(true)),
///     // An unrelated key, fine on its own.
///     Operation::ok(3, KvInput::Put { key: "term", value: 7 }, 0, 5, KvOutput::Done),
/// ];
/// let result = check(&KvModel::new(), &history)?;
/// // Partitions are ordered by key: "leader" is partition 0, "term" partition 1.
/// assert!(matches!(result, CheckResult::NotLinearizable { partition: 0, .. }));
/// # Ok::<(), raft_consensus::linearizability::HistoryError>(())
/// ```
pub struct KvModel<K, V> {
    /// The model holds no data; this only fixes the key and value types.
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> KvModel<K, V> {
    /// The model; it has no configuration.
    pub fn new() -> Self {
        KvModel { types: PhantomData }
    }
}

impl<K, V> Default for KvModel<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Clone for KvModel<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for KvModel<K, V> {}

impl<K, V> Debug for KvModel<K, V> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("KvModel")
    }
}

impl<K, V> Model for KvModel<K, V>
where
    K: Clone + Ord + Debug,
    V: Clone + Eq + Hash + Debug,
{
    type Input = KvInput<K, V>;
    type Output = KvOutput<V>;
    type State = Option<V>;

    fn initial_state(&self) -> Option<V> {
        None
    }

    fn step(&self, state: &Option<V>, input: &KvInput<K, V>) -> (Option<V>, KvOutput<V>) {
        match input {
            KvInput::Get { .. } => (state.clone(), KvOutput::Value(state.clone())),
            KvInput::Put { value, .. } => (Some(value.clone()), KvOutput::Done),
            KvInput::Cas { expected, new, .. } => {
                if state == expected {
                    (Some(new.clone()), KvOutput::Cas(true))
                } else {
                    (state.clone(), KvOutput::Cas(false))
                }
            }
            KvInput::Delete { .. } => (None, KvOutput::Done),
        }
    }

    fn partition(&self, history: &[Operation<KvInput<K, V>, KvOutput<V>>]) -> Vec<Vec<usize>> {
        let mut by_key: BTreeMap<&K, Vec<usize>> = BTreeMap::new();
        for (index, operation) in history.iter().enumerate() {
            by_key.entry(operation.input.key()).or_default().push(index);
        }
        by_key.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Input = KvInput<&'static str, u32>;

    fn step(state: Option<u32>, input: Input) -> (Option<u32>, KvOutput<u32>) {
        KvModel::new().step(&state, &input)
    }

    #[test]
    fn get_reads_without_changing() {
        assert_eq!(step(None, KvInput::Get { key: "k" }), (None, KvOutput::Value(None)));
        assert_eq!(step(Some(3), KvInput::Get { key: "k" }), (Some(3), KvOutput::Value(Some(3))));
    }

    #[test]
    fn put_and_delete_replace_and_answer_done() {
        assert_eq!(step(Some(1), KvInput::Put { key: "k", value: 2 }), (Some(2), KvOutput::Done));
        assert_eq!(step(Some(1), KvInput::Delete { key: "k" }), (None, KvOutput::Done));
        assert_eq!(step(None, KvInput::Delete { key: "k" }), (None, KvOutput::Done));
    }

    #[test]
    fn cas_stores_only_when_the_expectation_holds() {
        let cas = |expected, new| KvInput::Cas { key: "k", expected, new };
        assert_eq!(step(None, cas(None, 5)), (Some(5), KvOutput::Cas(true)));
        assert_eq!(step(Some(1), cas(None, 5)), (Some(1), KvOutput::Cas(false)));
        assert_eq!(step(Some(1), cas(Some(1), 5)), (Some(5), KvOutput::Cas(true)));
        assert_eq!(step(Some(1), cas(Some(2), 5)), (Some(1), KvOutput::Cas(false)));
        assert_eq!(step(None, cas(Some(2), 5)), (None, KvOutput::Cas(false)));
    }

    #[test]
    fn partitions_group_by_key_in_key_order_and_keep_failed_operations() {
        let history: Vec<Operation<Input, KvOutput<u32>>> = vec![
            Operation::ok(1, KvInput::Put { key: "b", value: 1 }, 0, 1, KvOutput::Done),
            Operation::ok(1, KvInput::Get { key: "a" }, 2, 3, KvOutput::Value(None)),
            Operation::failed(2, KvInput::Delete { key: "b" }, 4),
            Operation::unknown(3, KvInput::Put { key: "c", value: 2 }, 5),
        ];
        assert_eq!(KvModel::new().partition(&history), vec![vec![1], vec![0, 2], vec![3]]);
    }

    #[test]
    fn input_names_its_key() {
        let cas: Input = KvInput::Cas { key: "c", expected: None, new: 1 };
        assert_eq!(cas.key(), &"c");
        assert_eq!(KvInput::<_, u32>::Delete { key: "d" }.key(), &"d");
    }
}
