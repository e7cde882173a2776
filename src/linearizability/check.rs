//! The public entry points, [`check`] and [`check_with_limit`], and their answer,
//! [`CheckResult`]: validate the history, let the model split it into partitions, drop failed
//! operations, and search each partition for a linearization.

use super::history::{HistoryError, Operation, Outcome, validate_partitions, validate_times};
use super::model::Model;
use super::search::{SearchOutcome, search};

/// The answer to whether a history is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every partition has a linearization.
    Linearizable,
    /// A partition has no linearization, so neither does the history.
    NotLinearizable {
        /// The failing partition's position in the model's
        /// [`partition`](Model::partition) list.
        partition: usize,
        /// The indexes into the history of the partition's operations that were checked
        /// (failed operations are left out), in ascending order. Never empty: a partition
        /// without an answered operation is always linearizable. With [`KvModel`] its key is
        /// that of any of these operations.
        ///
        /// [`KvModel`]: super::KvModel
        operations: Vec<usize>,
        /// The longest sequence of the partition's operations (indexes into the history)
        /// that the search could linearize, in its order. The operation that should come
        /// next, and cannot, is usually where to start looking.
        longest_linearization: Vec<usize>,
    },
    /// A partition needed more configurations than the limit allowed, and no other partition
    /// was found not linearizable.
    GaveUp {
        /// The first partition, by position, that exhausted the limit.
        partition: usize,
        /// The number of configurations it explored.
        explored: u64,
    },
}

impl CheckResult {
    /// Whether the history was found linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

/// Checks whether `history` is linearizable with respect to `model`, however long that takes.
///
/// Prefer [`check_with_limit`] where a pathological history must not hang the caller.
///
/// # Errors
///
/// A [`HistoryError`] if an answered operation returned before it was called, or if the
/// model's [`partition`](Model::partition) is not a partition of the history.
///
/// # Example
///
/// ```
/// use raft_consensus::linearizability::{CheckResult, KvInput, KvModel, KvOutput, Operation, check};
///
/// let history = vec![
///     Operation::ok(1, KvInput::Put { key: "x", value: 1 }, 0, 10, KvOutput::Done),
///     // Called after the put returned, yet it misses the value: a stale read.
///     Operation::ok(2, KvInput::Get { key: "x" }, 20, 30, KvOutput::Value(None)),
/// ];
/// let result = check(&KvModel::new(), &history)?;
/// assert!(matches!(result, CheckResult::NotLinearizable { operations, .. } if operations == [0, 1]));
/// # Ok::<(), raft_consensus::linearizability::HistoryError>(())
/// ```
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
) -> Result<CheckResult, HistoryError> {
    check_with_limit(model, history, u64::MAX)
}

/// Checks whether `history` is linearizable with respect to `model`, exploring at most
/// `max_configurations` distinct configurations (set of linearized operations, model state)
/// in each partition.
///
/// Every partition is checked even after one gives up, so a partition that is definitely not
/// linearizable is reported as [`CheckResult::NotLinearizable`] in preference to
/// [`CheckResult::GaveUp`].
///
/// # Errors
///
/// As for [`check`].
///
/// # Example
///
/// ```
/// use raft_consensus::linearizability::{KvInput, KvModel, KvOutput, Operation, check_with_limit};
///
/// let history = vec![
///     Operation::ok(1, KvInput::Put { key: 'a', value: 1 }, 0, 10, KvOutput::Done),
///     Operation::ok(2, KvInput::Get { key: 'a' }, 5, 15, KvOutput::Value(Some(1))),
/// ];
/// let result = check_with_limit(&KvModel::new(), &history, 10_000)?;
/// assert!(result.is_linearizable());
/// # Ok::<(), raft_consensus::linearizability::HistoryError>(())
/// ```
pub fn check_with_limit<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    max_configurations: u64,
) -> Result<CheckResult, HistoryError> {
    validate_times(history)?;
    let partitions = model.partition(history);
    validate_partitions(history, &partitions)?;

    let mut first_to_give_up = None;
    for (position, partition) in partitions.iter().enumerate() {
        let mut indexes: Vec<usize> = partition
            .iter()
            .copied()
            .filter(|&index| {
                history
                    .get(index)
                    .is_some_and(|operation| !matches!(operation.outcome, Outcome::Failed))
            })
            .collect();
        indexes.sort_unstable();
        let operations: Vec<&Operation<M::Input, M::Output>> =
            indexes.iter().filter_map(|&index| history.get(index)).collect();

        match search(model, &operations, max_configurations) {
            SearchOutcome::Linearizable => {}
            SearchOutcome::NotLinearizable { longest_linearization } => {
                let longest_linearization = longest_linearization
                    .iter()
                    .filter_map(|&operation| indexes.get(operation).copied())
                    .collect();
                return Ok(CheckResult::NotLinearizable {
                    partition: position,
                    operations: indexes,
                    longest_linearization,
                });
            }
            SearchOutcome::GaveUp { explored } => {
                first_to_give_up
                    .get_or_insert(CheckResult::GaveUp { partition: position, explored });
            }
        }
    }
    Ok(first_to_give_up.unwrap_or(CheckResult::Linearizable))
}
