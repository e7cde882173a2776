//! [`Driver`]: the one piece of code that carries out a core's [`Ready`] against storage, the
//! network and the state machine, in the order Raft's safety depends on.
//!
//! [`Node`](crate::node::Node) runs it for both of its pumps, the tokio runtime
//! ([`RaftNode`](crate::RaftNode)) and the deterministic simulator, so what the simulator
//! tests is the very ordering a real node uses:
//!
//! 1. send the messages that need nothing durable (a leader's AppendEntries),
//! 2. store a snapshot received from the leader and reset the log behind it, write entries
//!    and hard state, and flush them ([`Storage::flush`]): the sync that makes them durable
//!    is handed to the caller to run in the background,
//! 3. restore the state machine from a received snapshot, apply committed entries in order
//!    (committed entries are durable on a majority already), and acknowledge that half of
//!    the Ready to the core,
//! 4. once the sync completes ([`Driver::sync_done`]), send the messages that promise
//!    durability (votes, acknowledgments) and acknowledge the persisted half.
//!
//! Syncs complete in the order they were flushed, and the messages of a Ready wait for every
//! sync before it, even when it wrote nothing itself: they may vouch for earlier writes. At
//! most [`MAX_SYNCS_IN_FLIGHT`] syncs run at once; past that, the next Ready waits (and grows:
//! group commit). A storage error stops at step 2, or at step 4 for a failed sync: nothing
//! that depends on the failed write leaves the node.
//!
//! It also decides when to take a snapshot of the state machine (the `snapshot_after_*`
//! limits of the config) and, once the caller has stored it, compacts the log behind it.

use std::collections::VecDeque;
use std::error::Error;

use bytes::Bytes;

use crate::core::{LOG_TARGET, RaftCore, Ready, ReadyAck};
use crate::error::StorageError;
use crate::message::{EntryPayload, Message};
use crate::snapshot::Snapshot;
use crate::state_machine::{SnapshotsUnsupported, StateMachine};
use crate::storage::{PendingSync, SnapshotWriter, Storage};
use crate::types::{LogIndex, Term};

/// Syncs that may run at once: while one batch syncs, the next is written.
pub(crate) const MAX_SYNCS_IN_FLIGHT: usize = 16;

/// A Ready whose writes are not yet known durable: what waits for that.
struct Persisting {
    /// Whether the Ready flushed writes of its own (its sync is one of those in flight);
    /// otherwise it waits only for the syncs before it.
    has_sync: bool,
    persisted_messages: Vec<Message>,
    ack: ReadyAck,
}

/// The result of applying one committed command.
pub(crate) struct Applied {
    /// The entry's index.
    pub(crate) index: LogIndex,
    /// The entry's term (a proposal matches only if both agree).
    pub(crate) term: Term,
    /// The command that was applied (the simulator checks that every node applied the same).
    pub(crate) command: Bytes,
    /// What the state machine returned.
    pub(crate) result: Result<Vec<u8>, Box<dyn Error + Send + Sync>>,
}

/// Where [`Driver::process_ready`] hands out a Ready's work.
pub(crate) trait ReadySink {
    /// Sends a message.
    fn send(&mut self, message: Message);
    /// Runs a sync (completing syncs in order, each reported with [`Driver::sync_done`]).
    fn start_sync(&mut self, sync: Box<dyn PendingSync>);
    /// Takes the result of one applied command.
    fn applied(&mut self, applied: Applied);
}

/// A protocol core with its storage and state machine.
pub(crate) struct Driver<S, M> {
    pub(crate) core: RaftCore,
    storage: S,
    state_machine: M,
    /// Whether the state machine implements `snapshot` (false: the log is never compacted).
    snapshots_supported: bool,
    /// Entries and command bytes applied since the last snapshot was taken.
    applied_since_snapshot: (u64, u64),
    /// A snapshot taken and handed out to be stored, not yet reported stored.
    snapshot_in_flight: bool,
    /// Snapshots received from a leader and restored (for metrics).
    pub(crate) snapshots_installed: u64,
    /// Snapshots this node took and stored (for metrics).
    pub(crate) snapshots_stored: u64,
    /// Readys waiting for their syncs (or those before them), oldest first.
    persisting: VecDeque<Persisting>,
    /// How many of them have a sync in flight.
    syncs_in_flight: usize,
}

impl<S: Storage, M: StateMachine> Driver<S, M> {
    /// A driver for `core`. `snapshots_supported` comes from [`probe_snapshot_support`].
    pub(crate) fn new(
        core: RaftCore,
        storage: S,
        state_machine: M,
        snapshots_supported: bool,
    ) -> Self {
        Driver {
            core,
            storage,
            state_machine,
            snapshots_supported,
            applied_since_snapshot: (0, 0),
            snapshot_in_flight: false,
            snapshots_installed: 0,
            snapshots_stored: 0,
            persisting: VecDeque::new(),
            syncs_in_flight: 0,
        }
    }

    /// Carries out every pending [`Ready`] of the core (while fewer than
    /// [`MAX_SYNCS_IN_FLIGHT`] syncs run), handing messages, syncs and apply results to
    /// `sink`; the sink must complete the syncs in order and report each with
    /// [`sync_done`](Self::sync_done). Returns an error, having sent nothing that depends on
    /// it, when storage fails; the node must then stop.
    pub(crate) fn process_ready(&mut self, sink: &mut impl ReadySink) -> Result<(), StorageError> {
        while self.syncs_in_flight < MAX_SYNCS_IN_FLIGHT && self.core.has_ready() {
            let Ready {
                hard_state,
                snapshot,
                log_reset,
                entries,
                messages,
                persisted_messages,
                committed_entries,
                ack,
            } = self.core.ready();
            for message in messages {
                sink.send(message);
            }
            let must_sync = hard_state.is_some() || !entries.is_empty() || log_reset.is_some();
            // The snapshot is durable before the log drops what it covers.
            if let Some(snapshot) = &snapshot {
                self.storage.snapshot_writer().write(snapshot)?;
            }
            if let Some(base) = log_reset {
                self.storage.reset_log(base)?;
            }
            // Entries go before the hard state: whatever prefix of these writes survives a
            // crash, a stored commit index never points at an entry of this batch that was
            // lost.
            if !entries.is_empty() {
                self.storage.append(&entries)?;
            }
            if let Some(hard_state) = hard_state {
                self.storage.save_hard_state(&hard_state)?;
            }
            let sync = if must_sync { Some(self.storage.flush()?) } else { None };
            let sync = sync.filter(|sync| !sync.is_durable());
            let (applied_ack, persisted_ack) = ack.split();
            let has_sync = sync.is_some();
            if has_sync || !self.persisting.is_empty() {
                self.persisting.push_back(Persisting {
                    has_sync,
                    persisted_messages,
                    ack: persisted_ack,
                });
            } else {
                for message in persisted_messages {
                    sink.send(message);
                }
                self.core.advance(persisted_ack);
            }
            if let Some(sync) = sync {
                self.syncs_in_flight += 1;
                sink.start_sync(sync);
            }
            if let Some(snapshot) = snapshot {
                let index = snapshot.meta.last_included.index;
                self.state_machine
                    .restore(&snapshot.data)
                    .map_err(|error| StorageError::Restore { index, reason: error.to_string() })?;
                self.applied_since_snapshot = (0, 0);
                self.snapshots_installed += 1;
            }
            for entry in committed_entries {
                if let EntryPayload::Command(command) = entry.payload {
                    self.applied_since_snapshot.0 += 1;
                    self.applied_since_snapshot.1 += command.len() as u64;
                    let result = self.state_machine.apply_at(entry.index, &command);
                    sink.applied(Applied { index: entry.index, term: entry.term, command, result });
                }
            }
            self.core.advance(applied_ack);
        }
        Ok(())
    }

    /// Reports that the oldest sync handed to `start_sync` completed: the Ready that flushed
    /// it, and those after it that wrote nothing of their own, send their messages that
    /// promise durability and are acknowledged to the core. Call
    /// [`process_ready`](Self::process_ready) after it.
    pub(crate) fn sync_done(&mut self, mut send: impl FnMut(Message)) {
        debug_assert!(self.syncs_in_flight > 0, "a sync completed that was never started");
        debug_assert!(self.persisting.front().is_some_and(|persisting| persisting.has_sync));
        self.syncs_in_flight = self.syncs_in_flight.saturating_sub(1);
        let mut first = true;
        while let Some(persisting) = self.persisting.front() {
            if persisting.has_sync && !first {
                break;
            }
            first = false;
            let Some(persisting) = self.persisting.pop_front() else { break };
            for message in persisting.persisted_messages {
                send(message);
            }
            self.core.advance(persisting.ack);
        }
    }

    /// How many syncs handed out are not reported done.
    pub(crate) fn syncs_in_flight(&self) -> usize {
        self.syncs_in_flight
    }

    /// Takes a snapshot of the state machine when enough was applied since the last one and
    /// none is being stored. The caller stores it with [`snapshot_writer`](Self::snapshot_writer)
    /// (on another thread if it likes) and reports with [`snapshot_stored`](Self::snapshot_stored).
    pub(crate) fn take_snapshot_if_due(&mut self) -> Option<Snapshot> {
        if !self.snapshot_due() {
            return None;
        }
        let meta = self.core.snapshot_meta_for_applied()?;
        self.applied_since_snapshot = (0, 0);
        match self.state_machine.snapshot() {
            Ok(data) => {
                tracing::debug!(target: LOG_TARGET, node = %self.core.id(), "Took a snapshot through {} ({} bytes)", meta.last_included, data.len());
                self.snapshot_in_flight = true;
                Some(Snapshot { meta, data: data.into() })
            }
            Err(error) => {
                tracing::warn!(target: LOG_TARGET, node = %self.core.id(), "The state machine could not take a snapshot through {}: {error}", meta.last_included);
                None
            }
        }
    }

    /// The state machine.
    pub(crate) fn state_machine(&self) -> &M {
        &self.state_machine
    }

    /// Whether [`take_snapshot_if_due`](Self::take_snapshot_if_due) would take one now.
    pub(crate) fn snapshot_due(&self) -> bool {
        let config = self.core.config();
        let (entries, bytes) = self.applied_since_snapshot;
        let due = (config.snapshot_after_entries > 0 && entries >= config.snapshot_after_entries)
            || (config.snapshot_after_bytes > 0 && bytes >= config.snapshot_after_bytes);
        due && self.snapshots_supported && !self.snapshot_in_flight
    }

    /// A handle that stores snapshots, for the caller of
    /// [`take_snapshot_if_due`](Self::take_snapshot_if_due).
    pub(crate) fn snapshot_writer(&self) -> S::SnapshotWriter {
        self.storage.snapshot_writer()
    }

    /// Reports how storing the snapshot from [`take_snapshot_if_due`](Self::take_snapshot_if_due)
    /// went: once stored, the log is compacted behind it.
    pub(crate) fn snapshot_stored(
        &mut self,
        outcome: Result<Snapshot, StorageError>,
    ) -> Result<(), StorageError> {
        self.snapshot_in_flight = false;
        match outcome {
            Ok(snapshot) => {
                self.snapshots_stored += 1;
                if let Some(through) = self.core.snapshot_stored(snapshot) {
                    self.storage.compact(through)?;
                }
                Ok(())
            }
            Err(error) => {
                // The log stays as it is; the next snapshot tries again.
                tracing::warn!(target: LOG_TARGET, node = %self.core.id(), "Could not store a snapshot: {error}");
                Ok(())
            }
        }
    }
}

/// Whether `state_machine` implements snapshots, asked once before a node starts (while the
/// state machine is still empty, so the question is cheap). Logs once when it does not.
pub(crate) fn probe_snapshot_support<M: StateMachine>(
    state_machine: &M,
    node: crate::NodeId,
) -> bool {
    match state_machine.snapshot() {
        Err(error) if error.downcast_ref::<SnapshotsUnsupported>().is_some() => {
            tracing::info!(target: LOG_TARGET, %node, "The state machine does not implement snapshots: the log is never compacted and a restart replays it all");
            false
        }
        _ => true,
    }
}
