//! A linearizability checker: given a [`Model`] (a sequential specification) and a history of
//! [`Operation`]s that concurrent clients ran against a system, decide whether the system
//! behaved as if each operation took effect atomically at some instant between its call and
//! its return.
//!
//! The deterministic Raft simulator checks every run with it; use it just as well to check
//! histories recorded against your own state machine, with your own [`Model`] or the
//! ready-made [`KvModel`].
//!
//! # Outcomes
//!
//! Each operation has a call time and an [`Outcome`]:
//!
//! - [`Outcome::Ok`]: the client received an output at the return time. The operation must
//!   take effect within `[call_time, return_time]` and produce exactly that output.
//! - [`Outcome::Failed`]: the operation definitely did not take effect. It is dropped before
//!   checking.
//! - [`Outcome::Unknown`]: the client cannot tell (a timeout, a lost connection). The
//!   operation may take effect at any instant after its call, or never; its output is not
//!   compared.
//!
//! Intervals are closed: operations whose intervals share an instant are concurrent.
//!
//! # How the check works
//!
//! First, [`Model::partition`] may split the history into parts that cannot affect each other
//! (the [`KvModel`] uses one per key). A history is linearizable exactly when each part is
//! (Horn and Kroening call this P-compositionality), and several small searches are far
//! cheaper than one large one.
//!
//! Each part is then searched depth first, after Wing and Gong, with the improvements Lowe
//! describes in "Testing for linearizability" (2017). The calls and returns form one list in
//! time order. The search repeatedly takes the earliest call that is still pending and could
//! take effect now (the model accepts it and produces the output the client saw), removes the
//! operation's events from the list, and records how to undo that. Meeting a return first
//! means the returning operation should already have taken effect, so the search undoes its
//! latest choice and tries the next candidate instead. Every configuration reached, the set
//! of operations taken so far together with the model's state, is remembered, and one seen
//! before is not explored again, since its future is the same. The search finds a
//! linearization if one exists, and otherwise runs out of choices.
//!
//! Memoization bounds the work by the number of reachable configurations rather than the
//! number of orders, but that can still be large for wide windows of concurrency;
//! [`check_with_limit`] bounds it and answers [`CheckResult::GaveUp`] when the bound is hit.
//!
//! # Example
//!
//! A register holding one integer, and a history in which a read concurrent with a write
//! sees the old value (fine), then a later read sees the old value again after the write has
//! returned (a stale read):
//!
//! ```
//! use raft_consensus::linearizability::{CheckResult, Model, Operation, check};
//!
//! #[derive(Clone, Debug)]
//! enum Register {
//!     Read,
//!     Write(u8),
//! }
//!
//! /// The register's sequential behaviour: a read answers the value, a write answers 0.
//! struct RegisterModel;
//!
//! impl Model for RegisterModel {
//!     type Input = Register;
//!     type Output = u8;
//!     type State = u8;
//!
//!     fn initial_state(&self) -> u8 {
//!         0
//!     }
//!
//!     fn step(&self, state: &u8, input: &Register) -> (u8, u8) {
//!         match input {
//!             Register::Read => (*state, *state),
//!             Register::Write(value) => (*value, 0),
//!         }
//!     }
//! }
//!
//! //            0    5    10   15   20   25
//! // client 1:  [-- write 1 --]
//! // client 2:     [- read 0 -]
//! // client 3:                     [read 0]
//! let mut history = vec![
//!     Operation::ok(1, Register::Write(1), 0, 10, 0),
//!     Operation::ok(2, Register::Read, 3, 9, 0),
//! ];
//! assert_eq!(check(&RegisterModel, &history)?, CheckResult::Linearizable);
//!
//! history.push(Operation::ok(3, Register::Read, 20, 25, 0));
//! let result = check(&RegisterModel, &history)?;
//! assert!(!result.is_linearizable());
//! # Ok::<(), raft_consensus::linearizability::HistoryError>(())
//! ```

mod check;
mod event_list;
mod history;
mod kv_model;
mod model;
mod operation_set;
mod search;

#[cfg(test)]
mod randomized_tests;
#[cfg(test)]
mod tests;

pub use self::check::{CheckResult, check, check_with_limit};
pub use self::history::{HistoryError, Operation, Outcome};
pub use self::kv_model::{KvInput, KvModel, KvOutput};
pub use self::model::Model;
