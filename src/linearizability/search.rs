//! The search for a linearization of one partition: Wing and Gong's depth-first search with
//! Lowe's improvements (events in a linked list, an undo stack, and memoization of every
//! configuration already explored).
//!
//! The search walks the event list from its head. At a call, it tries to linearize that
//! operation now: step the model and compare the output with the one the client received
//! (any output will do for an unknown outcome). If the output matches and the resulting
//! configuration (set of linearized operations, model state) has not been explored before,
//! it lifts the operation's events out of the list, pushes an undo record and starts again
//! from the head. Otherwise it moves on to the next call. Reaching a return means that
//! operation had to take effect by now and none of the orders tried made that possible, so
//! the search pops the last linearized operation, puts its events back, restores the state,
//! and tries the next call after it. An empty stack at that point means no linearization
//! exists.
//!
//! Two configurations with the same linearized set and the same state have the same future,
//! so exploring each only once turns the search's worst case from the number of orders into
//! the number of reachable configurations.
//!
//! The search succeeds once every answered operation is linearized: what remains are calls
//! with unknown outcomes, whose returns lie at +infinity, and they can all be linearized at
//! the end in any order (or, equivalently, never).

use std::collections::HashSet;

use super::event_list::{Event, EventList};
use super::history::{Operation, Outcome};
use super::model::Model;
use super::operation_set::OperationSet;

/// How the search of one partition ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    /// A linearization exists.
    Linearizable,
    /// No linearization exists.
    NotLinearizable {
        /// The longest sequence of operations (numbers within the partition) that the search
        /// managed to linearize, in its order.
        longest_linearization: Vec<usize>,
    },
    /// The search explored `explored` configurations, its limit, without an answer.
    GaveUp {
        /// The number of configurations explored.
        explored: u64,
    },
}

/// What the search must undo when it backtracks over a linearized operation.
struct UndoRecord<State> {
    /// The node of the operation's call event.
    call_node: usize,
    /// The operation's number within the partition.
    operation: usize,
    /// The model state before the operation.
    previous_state: State,
}

/// Searches for a linearization of `operations` (none of them failed) against `model`,
/// exploring at most `max_configurations` distinct configurations.
pub(crate) fn search<M: Model>(
    model: &M,
    operations: &[&Operation<M::Input, M::Output>],
    max_configurations: u64,
) -> SearchOutcome {
    let intervals: Vec<(u64, Option<u64>)> = operations
        .iter()
        .map(|operation| match operation.outcome {
            Outcome::Ok(_) => (operation.call_time, Some(operation.return_time)),
            Outcome::Failed | Outcome::Unknown => (operation.call_time, None),
        })
        .collect();
    let mut events = EventList::new(&intervals);
    let mut unlinearized_answered =
        intervals.iter().filter(|(_, return_time)| return_time.is_some()).count();

    let mut state = model.initial_state();
    let mut linearized = OperationSet::with_capacity(operations.len());
    let mut explored_configurations: HashSet<(OperationSet, M::State)> = HashSet::new();
    let mut explored: u64 = 0;
    let mut undo_stack: Vec<UndoRecord<M::State>> = Vec::new();
    let mut longest_linearization: Vec<usize> = Vec::new();
    let mut node = events.first();

    while unlinearized_answered > 0 {
        match events.event(node) {
            Event::Call { operation, .. } => {
                let Some(recorded) = operations.get(operation) else {
                    // Unreachable: the list only holds the numbers of `operations`. Skipping
                    // the call keeps the search panic-free and can only make it stricter.
                    node = events.next(node);
                    continue;
                };
                let (next_state, output) = model.step(&state, &recorded.input);
                let output_matches = match &recorded.outcome {
                    Outcome::Ok(expected) => output == *expected,
                    Outcome::Failed | Outcome::Unknown => true,
                };
                if output_matches {
                    let mut next_linearized = linearized.clone();
                    next_linearized.insert(operation);
                    let configuration = (next_linearized, next_state);
                    if !explored_configurations.contains(&configuration) {
                        if explored >= max_configurations {
                            return SearchOutcome::GaveUp { explored };
                        }
                        explored += 1;
                        let (next_linearized, next_state) = configuration;
                        explored_configurations
                            .insert((next_linearized.clone(), next_state.clone()));
                        linearized = next_linearized;
                        undo_stack.push(UndoRecord {
                            call_node: node,
                            operation,
                            previous_state: std::mem::replace(&mut state, next_state),
                        });
                        events.lift(node);
                        if matches!(recorded.outcome, Outcome::Ok(_)) {
                            unlinearized_answered -= 1;
                        }
                        if undo_stack.len() > longest_linearization.len() {
                            longest_linearization =
                                undo_stack.iter().map(|record| record.operation).collect();
                        }
                        node = events.first();
                        continue;
                    }
                }
                node = events.next(node);
            }
            // A return (or, unreachably while an answered operation remains, the tail): the
            // operation returning here cannot be linearized after the current prefix.
            Event::Return { .. } | Event::Sentinel => {
                let Some(record) = undo_stack.pop() else {
                    return SearchOutcome::NotLinearizable { longest_linearization };
                };
                events.unlift(record.call_node);
                linearized.remove(record.operation);
                state = record.previous_state;
                if operations
                    .get(record.operation)
                    .is_some_and(|operation| matches!(operation.outcome, Outcome::Ok(_)))
                {
                    unlinearized_answered += 1;
                }
                node = events.next(record.call_node);
            }
        }
    }
    SearchOutcome::Linearizable
}
