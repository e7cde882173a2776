//! [`Workload`]: what the simulated clients ask of the cluster, and the model their history
//! is checked against. The simulator is generic over it, so it tests your own
//! [`StateMachine`] under the same faults and checks as the built-in key-value store
//! ([`KvWorkload`]): run one seed with [`run_workload`](super::run_workload).
//!
//! # Example
//!
//! A counter that adds and reads, checked as a linearizable register:
//!
//! ```
//! use std::error::Error;
//!
//! use raft_consensus::linearizability::Model;
//! use raft_consensus::sim::{self, SimConfig, SimRng, Workload};
//! use raft_consensus::StateMachine;
//!
//! /// The replicated state machine: command `[0]` reads, `[1, n]` adds `n`.
//! #[derive(Debug, Default, PartialEq)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
//!         match command {
//!             [0] => {}
//!             [1, amount] => self.0 += u64::from(*amount),
//!             _ => return Err("unknown command".into()),
//!         }
//!         Ok(self.0.to_le_bytes().to_vec())
//!     }
//!     fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
//!         Ok(self.0.to_le_bytes().to_vec())
//!     }
//!     fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
//!         self.0 = u64::from_le_bytes(snapshot.try_into()?);
//!         Ok(())
//!     }
//! }
//!
//! /// The sequential specification: every operation answers the total after it.
//! struct CounterModel;
//!
//! impl Model for CounterModel {
//!     type Input = Option<u8>; // None reads, Some(n) adds n
//!     type Output = u64;
//!     type State = u64;
//!     fn initial_state(&self) -> u64 {
//!         0
//!     }
//!     fn step(&self, total: &u64, input: &Option<u8>) -> (u64, u64) {
//!         let total = total + input.map_or(0, u64::from);
//!         (total, total)
//!     }
//! }
//!
//! struct CounterWorkload;
//!
//! impl Workload for CounterWorkload {
//!     type Machine = Counter;
//!     type Model = CounterModel;
//!     fn new_machine(&self) -> Counter {
//!         Counter::default()
//!     }
//!     fn model(&self) -> CounterModel {
//!         CounterModel
//!     }
//!     fn next_operation(&mut self, _client: usize, random: &mut SimRng) -> (Vec<u8>, Option<u8>) {
//!         if random.chance(0.5) {
//!             (vec![0], None)
//!         } else {
//!             let amount = random.between(1, 10) as u8;
//!             (vec![1, amount], Some(amount))
//!         }
//!     }
//!     fn output(&mut self, _client: usize, _input: &Option<u8>, result: &[u8]) -> Option<u64> {
//!         Some(u64::from_le_bytes(result.try_into().ok()?))
//!     }
//! }
//!
//! let config = SimConfig { workload_ms: 2_000, ..SimConfig::default() };
//! let mut answered = 0;
//! for seed in 0..3 {
//!     let report = sim::run_workload(seed, &config, CounterWorkload);
//!     assert!(report.violations.is_empty(), "seed {seed}: {:?}", report.violations);
//!     answered += report.operations.ok;
//! }
//! assert!(answered > 0, "some operations were answered");
//! ```

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::linearizability::{KvInput, KvModel, KvOutput, Model};
use crate::state_machine::StateMachine;

use super::kv::{KvAnswer, KvOperation, SimKv};
use super::rng::SimRng;

/// What the simulated clients do and how their history is judged.
///
/// Each client has at most one operation outstanding. The simulator proposes the command of
/// [`next_operation`](Self::next_operation) to the node the client believes leads, retries
/// elsewhere on `NotLeader`, and records each operation as answered (with the
/// [`output`](Self::output) of the state machine's result), failed (never applied) or unknown
/// (timed out, answer lost, or leadership lost: maybe applied). After the run the history
/// must be linearizable with respect to [`model`](Self::model), and every node's state
/// machine must equal every other's.
///
/// An operation that [`is_read`](Self::is_read) may instead be served as a linearizable read
/// without a log entry (ReadIndex on the leader, a follower read on another node, or a lease
/// read when the seed runs with leases): once the node says it may be served, the simulator
/// passes its command to the state machine's [`query`](StateMachine::query), and the answer
/// to [`output`](Self::output) as a command's result would be. Such reads are checked by the
/// same linearizability search.
pub trait Workload {
    /// The replicated state machine. Nodes' machines are compared at the end of a run, so
    /// equality must mean "applied the same commands" (compare the state, or a hash of the
    /// commands applied). Implement snapshots to have the simulator exercise them.
    type Machine: StateMachine + PartialEq + Debug;
    /// The sequential specification of the clients' operations.
    type Model: Model;

    /// A new, empty state machine (a node starting or restarting).
    fn new_machine(&self) -> Self::Machine;

    /// The model the history is checked against.
    fn model(&self) -> Self::Model;

    /// The next operation of `client`: the command to propose, and the model's input for it.
    /// Draw every random choice from `random`, so a seed replays exactly.
    fn next_operation(
        &mut self,
        client: usize,
        random: &mut SimRng,
    ) -> (Vec<u8>, <Self::Model as Model>::Input);

    /// Whether the operation for `input` only reads, so that its command may be served by the
    /// state machine's [`query`](StateMachine::query) after a linearizable read instead of
    /// being proposed. The default (`false`) proposes every operation.
    fn is_read(&self, input: &<Self::Model as Model>::Input) -> bool {
        let _ = input;
        false
    }

    /// The model's output for `result`, what the state machine returned for `input` of
    /// `client`; `None` if it cannot be read (the operation is then recorded as unknown).
    fn output(
        &mut self,
        client: usize,
        input: &<Self::Model as Model>::Input,
        result: &[u8],
    ) -> Option<<Self::Model as Model>::Output>;
}

/// The built-in workload: gets, puts and compare-and-swaps on a few one-byte keys with
/// unique 64-bit values, on [`SimKv`], checked per key against [`KvModel`].
#[derive(Clone, Debug)]
pub struct KvWorkload {
    keys: u8,
    clients: BTreeMap<usize, KvClient>,
}

/// What one key-value client remembers.
#[derive(Clone, Debug, Default)]
struct KvClient {
    sequence: u64,
    /// The last value this client saw for each key (to make compare-and-swaps that can win).
    observed: BTreeMap<u8, u64>,
}

impl KvWorkload {
    /// Clients use keys `0..keys` (at least one).
    pub fn new(keys: u8) -> Self {
        KvWorkload { keys: keys.max(1), clients: BTreeMap::new() }
    }
}

impl Workload for KvWorkload {
    type Machine = SimKv;
    type Model = KvModel<u8, u64>;

    fn new_machine(&self) -> SimKv {
        SimKv::default()
    }

    fn model(&self) -> KvModel<u8, u64> {
        KvModel::new()
    }

    fn next_operation(
        &mut self,
        client: usize,
        random: &mut SimRng,
    ) -> (Vec<u8>, KvInput<u8, u64>) {
        let key = random.below(u64::from(self.keys)) as u8;
        let state = self.clients.entry(client).or_default();
        state.sequence += 1;
        let unique_value = ((client as u64 + 1) << 32) | state.sequence;
        let roll = random.below(100);
        let operation = if roll < 40 {
            KvOperation::Get { key }
        } else if roll < 75 {
            KvOperation::Put { key, value: unique_value }
        } else {
            let expected =
                if random.chance(0.8) { state.observed.get(&key).copied() } else { None };
            KvOperation::Cas { key, expected, new: unique_value }
        };
        let input = match operation {
            KvOperation::Get { key } => KvInput::Get { key },
            KvOperation::Put { key, value } => KvInput::Put { key, value },
            KvOperation::Cas { key, expected, new } => KvInput::Cas { key, expected, new },
        };
        (operation.encode(), input)
    }

    fn is_read(&self, input: &KvInput<u8, u64>) -> bool {
        matches!(input, KvInput::Get { .. })
    }

    fn output(
        &mut self,
        client: usize,
        input: &KvInput<u8, u64>,
        result: &[u8],
    ) -> Option<KvOutput<u64>> {
        let answer = KvAnswer::decode(result)?;
        let observed = &mut self.clients.entry(client).or_default().observed;
        match (input.clone(), answer) {
            (KvInput::Get { key }, KvAnswer::Value(Some(value)))
            | (KvInput::Put { key, value }, _)
            | (KvInput::Cas { key, new: value, .. }, KvAnswer::Swapped(true)) => {
                observed.insert(key, value);
            }
            _ => {}
        }
        Some(match answer {
            KvAnswer::Value(value) => KvOutput::Value(value),
            KvAnswer::Written => KvOutput::Done,
            KvAnswer::Swapped(swapped) => KvOutput::Cas(swapped),
        })
    }
}
