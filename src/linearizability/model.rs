//! [`Model`]: the sequential specification a history is checked against.

use std::fmt::Debug;
use std::hash::Hash;

use super::history::Operation;

/// A sequential specification: what the system should do if its operations took effect one
/// at a time, in some order.
///
/// The checker searches for such an order that also respects real time (an operation that
/// returned before another was called comes first) and in which every answered operation's
/// output is the one [`step`](Model::step) produces.
///
/// # Example
///
/// A single integer register:
///
/// ```
/// use raft_consensus::linearizability::Model;
///
/// #[derive(Clone, Debug)]
/// enum RegisterInput {
///     Read,
///     Write(i32),
/// }
///
/// struct Register;
///
/// impl Model for Register {
///     type Input = RegisterInput;
///     /// The value read; `None` for a write.
///     type Output = Option<i32>;
///     type State = i32;
///
///     fn initial_state(&self) -> i32 {
///         0
///     }
///
///     fn step(&self, state: &i32, input: &RegisterInput) -> (i32, Option<i32>) {
///         match input {
///             RegisterInput::Read => (*state, Some(*state)),
///             RegisterInput::Write(value) => (*value, None),
///         }
///     }
/// }
///
/// assert_eq!(Register.step(&0, &RegisterInput::Write(5)), (5, None));
/// assert_eq!(Register.step(&5, &RegisterInput::Read), (5, Some(5)));
/// ```
pub trait Model {
    /// What a client asks the system to do.
    type Input: Clone + Debug;
    /// What the system answers.
    type Output: Clone + Debug + PartialEq;
    /// The state of one partition. The checker remembers every (state, set of linearized
    /// operations) pair it has explored, so a small state with a cheap hash keeps it fast.
    type State: Clone + Eq + Hash + Debug;

    /// The state of every partition before any operation.
    fn initial_state(&self) -> Self::State;

    /// Applies `input` to `state`, returning the new state and the output the system should
    /// answer. It must be deterministic; every input must be applicable in every state.
    fn step(&self, state: &Self::State, input: &Self::Input) -> (Self::State, Self::Output);

    /// Splits the history into partitions that do not affect each other (for example, one per
    /// key), as lists of indexes into `history`. The history is linearizable if and only if
    /// every partition is (P-compositionality), and checking many small partitions is far
    /// cheaper than checking one large history.
    ///
    /// Every operation that did not fail must appear in exactly one partition; failed
    /// operations may be left out. The default is a single partition holding everything.
    fn partition(&self, history: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }
}
