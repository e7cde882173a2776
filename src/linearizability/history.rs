//! What a history is made of: [`Operation`]s with their [`Outcome`]s, and the
//! [`HistoryError`]s that make a history (or a model's split of it) impossible to check.
//!
//! Times are plain `u64` instants on one clock shared by every client, in whatever unit the
//! recorder uses. An operation's interval is closed: two operations whose intervals share an
//! instant (one returns at `t`, the other is called at `t`) count as concurrent, so a coarse
//! clock can never make the checker reject a correct history.

use std::error::Error;
use std::fmt;

/// How an operation ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome<O> {
    /// The operation returned this output at its [`Operation::return_time`].
    Ok(O),
    /// The operation definitely did not take effect (for example, it was rejected before being
    /// proposed). The checker drops it from the history.
    Failed,
    /// The client does not know whether the operation took effect (for example, it timed out).
    /// The checker treats it as returning at +infinity with an output it never looks at: the
    /// operation may take effect at any point after its call, or never.
    Unknown,
}

/// One operation of a history: a client's call of the system with an input, and how it ended.
///
/// # Example
///
/// ```
/// use raft_consensus::linearizability::{Operation, Outcome};
///
/// // Client 7 called at instant 10 and got the answer 3 at instant 25.
/// let answered = Operation::ok(7, "read", 10, 25, 3);
/// assert_eq!(answered.outcome, Outcome::Ok(3));
///
/// // Client 8 gave up waiting; the write may or may not have happened.
/// let timed_out: Operation<&str, i32> = Operation::unknown(8, "write 4", 12);
/// assert_eq!(timed_out.outcome, Outcome::Unknown);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation<I, O> {
    /// The client that called the operation. The checker only carries it for diagnostics; it
    /// does not require a client's operations to be sequential.
    pub client_id: u64,
    /// What the client asked the system to do.
    pub input: I,
    /// The instant the client called the system.
    pub call_time: u64,
    /// The instant the client received the answer. Only read when the outcome is
    /// [`Outcome::Ok`], and then must not be before [`call_time`](Self::call_time).
    pub return_time: u64,
    /// How the operation ended.
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// An operation that returned `output` at `return_time`.
    pub fn ok(client_id: u64, input: I, call_time: u64, return_time: u64, output: O) -> Self {
        Operation { client_id, input, call_time, return_time, outcome: Outcome::Ok(output) }
    }

    /// An operation that definitely did not take effect. Its return time is set to its call
    /// time and is never read.
    pub fn failed(client_id: u64, input: I, call_time: u64) -> Self {
        Operation { client_id, input, call_time, return_time: call_time, outcome: Outcome::Failed }
    }

    /// An operation whose effect is unknown. Its return time is set to its call time and is
    /// never read: the checker treats it as +infinity.
    pub fn unknown(client_id: u64, input: I, call_time: u64) -> Self {
        Operation { client_id, input, call_time, return_time: call_time, outcome: Outcome::Unknown }
    }
}

/// Why a history cannot be checked: the history itself is malformed, or the model's
/// [`partition`](super::Model::partition) is not a partition of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryError {
    /// An operation with outcome [`Outcome::Ok`] returned before it was called.
    ReturnBeforeCall {
        /// The operation's index in the history.
        operation: usize,
        /// Its call time.
        call_time: u64,
        /// Its return time, earlier than the call time.
        return_time: u64,
    },
    /// The model's partition names an index past the end of the history.
    PartitionIndexOutOfRange {
        /// The partition's position in the model's list.
        partition: usize,
        /// The offending index.
        index: usize,
        /// The number of operations in the history.
        history_length: usize,
    },
    /// The model's partition names one operation more than once.
    OperationInSeveralPartitions {
        /// The operation's index in the history.
        operation: usize,
    },
    /// The model's partition leaves out an operation that did not fail, which would then go
    /// unchecked.
    OperationInNoPartition {
        /// The operation's index in the history.
        operation: usize,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::ReturnBeforeCall { operation, call_time, return_time } => write!(
                formatter,
                "operation {operation} returned at {return_time}, before it was called at {call_time}"
            ),
            HistoryError::PartitionIndexOutOfRange { partition, index, history_length } => write!(
                formatter,
                "partition {partition} names operation {index}, but the history has only {history_length} operations"
            ),
            HistoryError::OperationInSeveralPartitions { operation } => write!(
                formatter,
                "the model's partition names operation {operation} more than once"
            ),
            HistoryError::OperationInNoPartition { operation } => write!(
                formatter,
                "the model's partition leaves out operation {operation}, which did not fail"
            ),
        }
    }
}

impl Error for HistoryError {}

/// Checks that every answered operation returned no earlier than it was called.
pub(crate) fn validate_times<I, O>(history: &[Operation<I, O>]) -> Result<(), HistoryError> {
    for (index, operation) in history.iter().enumerate() {
        if matches!(operation.outcome, Outcome::Ok(_))
            && operation.return_time < operation.call_time
        {
            return Err(HistoryError::ReturnBeforeCall {
                operation: index,
                call_time: operation.call_time,
                return_time: operation.return_time,
            });
        }
    }
    Ok(())
}

/// Checks that `partitions` name every operation that did not fail exactly once, and nothing
/// outside the history. Failed operations may be named once or left out.
pub(crate) fn validate_partitions<I, O>(
    history: &[Operation<I, O>],
    partitions: &[Vec<usize>],
) -> Result<(), HistoryError> {
    let mut named = vec![false; history.len()];
    for (partition_position, partition) in partitions.iter().enumerate() {
        for &index in partition {
            let Some(already_named) = named.get_mut(index) else {
                return Err(HistoryError::PartitionIndexOutOfRange {
                    partition: partition_position,
                    index,
                    history_length: history.len(),
                });
            };
            if *already_named {
                return Err(HistoryError::OperationInSeveralPartitions { operation: index });
            }
            *already_named = true;
        }
    }
    for (index, (operation, was_named)) in history.iter().zip(named).enumerate() {
        if !was_named && !matches!(operation.outcome, Outcome::Failed) {
            return Err(HistoryError::OperationInNoPartition { operation: index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(call_time: u64, return_time: u64) -> Operation<(), ()> {
        Operation::ok(1, (), call_time, return_time, ())
    }

    #[test]
    fn return_before_call_is_rejected_with_the_operation_index() {
        let history = vec![answered(0, 5), answered(10, 9)];
        assert_eq!(
            validate_times(&history),
            Err(HistoryError::ReturnBeforeCall { operation: 1, call_time: 10, return_time: 9 })
        );
    }

    #[test]
    fn instantaneous_operations_are_accepted() {
        assert_eq!(validate_times(&[answered(4, 4)]), Ok(()));
    }

    #[test]
    fn return_time_of_unanswered_operations_is_not_read() {
        let mut unknown: Operation<(), ()> = Operation::unknown(1, (), 10);
        unknown.return_time = 0;
        let mut failed: Operation<(), ()> = Operation::failed(1, (), 10);
        failed.return_time = 0;
        assert_eq!(validate_times(&[unknown, failed]), Ok(()));
    }

    #[test]
    fn partition_must_stay_inside_the_history() {
        let history = vec![answered(0, 1)];
        assert_eq!(
            validate_partitions(&history, &[vec![0], vec![3]]),
            Err(HistoryError::PartitionIndexOutOfRange {
                partition: 1,
                index: 3,
                history_length: 1,
            })
        );
    }

    #[test]
    fn partition_must_not_repeat_an_operation() {
        let history = vec![answered(0, 1), answered(2, 3)];
        assert_eq!(
            validate_partitions(&history, &[vec![0, 1], vec![1]]),
            Err(HistoryError::OperationInSeveralPartitions { operation: 1 })
        );
        assert_eq!(
            validate_partitions(&history, &[vec![0, 0, 1]]),
            Err(HistoryError::OperationInSeveralPartitions { operation: 0 })
        );
    }

    #[test]
    fn partition_may_leave_out_failed_operations_only() {
        let history = vec![answered(0, 1), Operation::failed(1, (), 2), answered(3, 4)];
        assert_eq!(validate_partitions(&history, &[vec![0], vec![2]]), Ok(()));
        assert_eq!(
            validate_partitions(&history, &[vec![0, 1]]),
            Err(HistoryError::OperationInNoPartition { operation: 2 })
        );
    }

    #[test]
    fn errors_explain_themselves() {
        let error = HistoryError::ReturnBeforeCall { operation: 2, call_time: 10, return_time: 9 };
        assert_eq!(error.to_string(), "operation 2 returned at 9, before it was called at 10");
    }
}
