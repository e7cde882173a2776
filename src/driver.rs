//! [`Driver`]: the one piece of code that carries out a core's [`Ready`] against storage, the
//! network and the state machine, in the order Raft's safety depends on.
//!
//! [`Node`](crate::node::Node) runs it for both of its pumps, the tokio runtime
//! ([`RaftNode`](crate::RaftNode)) and the deterministic simulator, so what the simulator
//! tests is the very ordering a real node uses:
//!
//! 1. send the messages that need nothing durable (a leader's AppendEntries),
//! 2. read the snapshot chunks a leader sends from storage and send them, write the chunks a
//!    follower receives to storage, store a completed one and reset the log behind it, write entries
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
//! limits of the config): it freezes a [`SnapshotView`] of the state machine, which the
//! caller writes into storage ([`write_snapshot`], on another thread if it likes), and once
//! it is stored compacts the log behind it.

use std::collections::VecDeque;
use std::error::Error;

use bytes::Bytes;

use crate::core::{LOG_TARGET, RaftCore, Ready, ReadyAck};
use crate::core::{ReceivedSnapshotChunk, SnapshotChunkToSend};
use crate::error::{StartError, StorageError};
use crate::message::{EntryPayload, Message, MessageBody};
use crate::snapshot::{Snapshot, SnapshotId, SnapshotMeta};
use crate::state_machine::{SnapshotMode, SnapshotView, SnapshotsUnsupported, StateMachine};
use crate::storage::{
    PendingSync, SnapshotReader, SnapshotSink, SnapshotSource, SnapshotStore, Storage,
};
use crate::types::{LogIndex, Term};

/// Stored snapshots a leader keeps open to read the chunks it sends: the latest few, so
/// that a transfer under way can finish after a newer snapshot replaced its file.
const OPEN_SNAPSHOTS: usize = 3;

/// A snapshot of the state machine, frozen on the node's task by
/// [`Node::take_snapshot`](crate::node::Node::take_snapshot), to be written into storage with
/// [`write_into`](Self::write_into), on another thread if the caller likes.
pub struct TakenSnapshot {
    meta: SnapshotMeta,
    view: Box<dyn SnapshotView>,
}

impl TakenSnapshot {
    /// What the snapshot covers.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Streams the frozen state into a new snapshot in `store` and returns its description,
    /// for [`Node::snapshot_stored`](crate::node::Node::snapshot_stored).
    pub fn write_into(self, store: &mut impl SnapshotStore) -> Result<Snapshot, StorageError> {
        write_snapshot(store, self)
    }
}

impl std::fmt::Debug for TakenSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TakenSnapshot").field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// Writes `taken` into `store`: the state machine's view streams into a new stored snapshot.
fn write_snapshot(
    store: &mut impl SnapshotStore,
    taken: TakenSnapshot,
) -> Result<Snapshot, StorageError> {
    let TakenSnapshot { meta, view } = taken;
    let mut sink = store.create(&meta)?;
    let index = meta.last_included.index;
    view.write_to(&mut sink).map_err(|error| match error.downcast::<std::io::Error>() {
        Ok(error) => StorageError::io(format!("writing the snapshot through {index}"), *error),
        Err(error) => StorageError::Snapshot { index, reason: error.to_string() },
    })?;
    sink.finish()
}

/// Restores `state_machine` from the stored `snapshot`, reading it from `store` and checking
/// its bytes against its checksum.
pub(crate) fn restore_snapshot(
    state_machine: &mut impl StateMachine,
    store: &impl SnapshotStore,
    snapshot: &Snapshot,
) -> Result<(), StorageError> {
    let index = snapshot.meta.last_included.index;
    let restore_error = |reason: String| StorageError::Restore { index, reason };
    let mut reader = SnapshotReader::new(store.open(snapshot)?);
    state_machine.restore_from(&mut reader).map_err(|error| restore_error(error.to_string()))?;
    reader.finish().map_err(|error| restore_error(error.to_string()))
}

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
pub(crate) struct Driver<S: Storage, M> {
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
    /// Where snapshots are stored and read.
    snapshot_store: S::Snapshots,
    /// Follower: the snapshot being received, written as its chunks arrive.
    incoming_snapshot: Option<(SnapshotId, Box<dyn SnapshotSink>)>,
    /// Leader: stored snapshots open for reading chunks, newest last.
    open_snapshots: VecDeque<Box<dyn SnapshotSource>>,
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
        let snapshot_store = storage.snapshot_store();
        Driver {
            core,
            storage,
            snapshot_store,
            incoming_snapshot: None,
            open_snapshots: VecDeque::new(),
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
                must_sync,
                received_chunks,
                snapshot,
                log_reset,
                entries,
                messages,
                snapshot_chunks,
                persisted_messages,
                committed_entries,
                ack,
            } = self.core.ready();
            for message in messages {
                sink.send(message);
            }
            for chunk in snapshot_chunks {
                self.send_snapshot_chunk(chunk, sink);
            }
            for chunk in received_chunks {
                self.write_received_chunk(chunk)?;
            }
            // The snapshot is durable before the log drops what it covers.
            if let Some(snapshot) = &snapshot {
                self.store_received_snapshot(snapshot)?;
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
                restore_snapshot(&mut self.state_machine, &self.snapshot_store, &snapshot)?;
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

    /// Leader: reads `chunk` of a stored snapshot and sends it. A snapshot that can no longer
    /// be opened (a newer one replaced it first) makes the core send the newer one instead.
    fn send_snapshot_chunk(&mut self, chunk: SnapshotChunkToSend, sink: &mut impl ReadySink) {
        let SnapshotChunkToSend { mut message, len } = chunk;
        let MessageBody::InstallSnapshot { snapshot, offset, data } = &mut message.body else {
            debug_assert!(false, "a snapshot chunk to send is an InstallSnapshot");
            return;
        };
        let read = self.open_snapshot(snapshot).and_then(|source| {
            let bytes = source.read_at(*offset, len)?;
            if bytes.len() != len {
                return Err(StorageError::Corrupt {
                    detail: format!("{} ends before byte {}", snapshot.id, *offset + len as u64),
                });
            }
            Ok(bytes)
        });
        match read {
            Ok(bytes) => {
                *data = bytes;
                sink.send(message);
            }
            Err(error) => {
                let (to, id) = (message.to, snapshot.id);
                tracing::warn!(target: LOG_TARGET, node = %self.core.id(), "Could not read {id} to send to {to}: {error}");
                self.open_snapshots.retain(|source| source.snapshot().id != id);
                self.core.snapshot_unreadable(to, id);
            }
        }
    }

    /// The open source of the stored `snapshot`, opening it if needed.
    fn open_snapshot(&mut self, snapshot: &Snapshot) -> Result<&dyn SnapshotSource, StorageError> {
        let position =
            self.open_snapshots.iter().position(|source| source.snapshot().id == snapshot.id);
        let position = match position {
            Some(position) => position,
            None => {
                let source = self.snapshot_store.open(snapshot)?;
                self.keep_open(source);
                self.open_snapshots.len() - 1
            }
        };
        Ok(self.open_snapshots[position].as_ref())
    }

    /// Keeps `source` open for sending, closing the oldest beyond [`OPEN_SNAPSHOTS`].
    fn keep_open(&mut self, source: Box<dyn SnapshotSource>) {
        self.open_snapshots.push_back(source);
        while self.open_snapshots.len() > OPEN_SNAPSHOTS {
            self.open_snapshots.pop_front();
        }
    }

    /// Follower: writes a received chunk into the snapshot being received (the chunk at
    /// offset 0 starts it, dropping an unfinished one).
    fn write_received_chunk(&mut self, chunk: ReceivedSnapshotChunk) -> Result<(), StorageError> {
        let ReceivedSnapshotChunk { snapshot, offset, data } = chunk;
        if offset == 0 {
            self.incoming_snapshot = None;
            let sink = self.snapshot_store.create(&snapshot.meta)?;
            self.incoming_snapshot = Some((snapshot.id, sink));
        }
        let node = self.core.id();
        // The core hands out the chunks of one transfer in order, the first at offset 0: a
        // chunk of another snapshot would splice two snapshots' bytes into one that no node
        // ever had.
        let (id, sink) = match self.incoming_snapshot.as_mut() {
            Some((id, sink)) if *id == snapshot.id => (*id, sink),
            other => panic!(
                "Raft safety rule violated: a snapshot is installed from its own bytes only ({node} was handed bytes {offset}.. of {} while receiving {:?})",
                snapshot.id,
                other.map(|(id, _)| *id)
            ),
        };
        sink.write_all(&data)
            .map_err(|error| StorageError::io(format!("writing the received {id}"), error))
    }

    /// Follower: makes the snapshot whose chunks were all written durable as the stored one.
    fn store_received_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let node = self.core.id();
        let Some((id, sink)) = self.incoming_snapshot.take() else {
            panic!(
                "Raft safety rule violated: a snapshot is installed from its own bytes only ({node} was to install {} with none of its bytes written)",
                snapshot.id
            );
        };
        let stored = sink.finish()?;
        assert!(
            id == snapshot.id && stored == *snapshot,
            "Raft safety rule violated: a snapshot is installed from its own bytes only ({node} was to install {} and wrote {} ({} bytes, checksum {:08x}))",
            snapshot.id,
            stored.id,
            stored.size,
            stored.checksum
        );
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

    /// Freezes a snapshot of the state machine when enough was applied since the last one
    /// and none is being stored. The caller writes it with [`write_snapshot`] into
    /// [`snapshot_store`](Self::snapshot_store) (on another thread if it likes) and reports
    /// with [`snapshot_stored`](Self::snapshot_stored).
    pub(crate) fn take_snapshot_if_due(&mut self) -> Option<TakenSnapshot> {
        if !self.snapshot_due() {
            return None;
        }
        let meta = self.core.snapshot_meta_for_applied()?;
        self.applied_since_snapshot = (0, 0);
        match self.state_machine.snapshot_view() {
            Ok(view) => {
                tracing::debug!(target: LOG_TARGET, node = %self.core.id(), "Took a snapshot through {}", meta.last_included);
                self.snapshot_in_flight = true;
                Some(TakenSnapshot { meta, view })
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
        let threshold = (config.snapshot_after_entries > 0
            && entries >= config.snapshot_after_entries)
            || (config.snapshot_after_bytes > 0 && bytes >= config.snapshot_after_bytes);
        // The log must have outgrown a multiple of the state: a large state is rewritten only
        // after as many bytes of log, which bounds the bytes written per byte of command.
        let last_size = self.core.snapshot().map_or(0, |snapshot| snapshot.size);
        let outgrown = bytes >= last_size.saturating_mul(config.snapshot_log_multiple);
        threshold && outgrown && self.snapshots_supported && !self.snapshot_in_flight
    }

    /// A handle that stores and reads snapshots, for the caller of
    /// [`take_snapshot_if_due`](Self::take_snapshot_if_due).
    /// Makes every write so far durable, the ones written without a sync of their own (a
    /// hard state that changed only its commit index) included.
    pub(crate) fn sync_storage(&mut self) -> Result<(), StorageError> {
        self.storage.sync()
    }

    pub(crate) fn snapshot_store(&self) -> S::Snapshots {
        self.storage.snapshot_store()
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
                // Opened now, while it is the newest: a transfer of it can finish after a
                // newer one replaces its file.
                match self.snapshot_store.open(&snapshot) {
                    Ok(source) => self.keep_open(source),
                    Err(error) => {
                        tracing::warn!(target: LOG_TARGET, node = %self.core.id(), "Could not open the snapshot just stored: {error}");
                    }
                }
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

/// Whether the node takes snapshots of `state_machine`, as `mode` asks: whether the state
/// machine implements them is asked once before a node starts (while it is still empty, so
/// the question is cheap). With [`SnapshotMode::IfSupported`], a state machine without them
/// is run without, with a warning; with [`SnapshotMode::Required`] the node refuses to start.
pub(crate) fn probe_snapshot_support<M: StateMachine>(
    state_machine: &M,
    mode: SnapshotMode,
    node: crate::NodeId,
) -> Result<bool, StartError> {
    if mode == SnapshotMode::Off {
        tracing::info!(target: LOG_TARGET, %node, "Snapshots are off (Config::snapshot_mode): the log is never compacted and a restart replays it all");
        return Ok(false);
    }
    let unsupported = matches!(
        state_machine.snapshot_view(),
        Err(error) if error.downcast_ref::<SnapshotsUnsupported>().is_some()
    );
    if !unsupported {
        return Ok(true);
    }
    let state_machine = std::any::type_name::<M>();
    if mode == SnapshotMode::Required {
        return Err(StartError::SnapshotsUnsupported { state_machine });
    }
    tracing::warn!(target: LOG_TARGET, %node, "The state machine does not implement snapshots: the log is never compacted and a restart replays it all (state machine {state_machine}; set Config::snapshot_mode to SnapshotMode::Off to run without them on purpose, or to SnapshotMode::Required to refuse to start)");
    Ok(false)
}
