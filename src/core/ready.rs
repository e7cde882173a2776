//! [`Ready`]: the batch of work the core hands its caller, and [`ReadyAck`], the receipt the
//! caller hands back once the work is done. (This module is private: the order to do the work
//! in, the safety argument of the whole library, is documented on [`Ready`] itself, where
//! rustdoc shows it.)

use super::snapshot::{ReceivedSnapshotChunk, SnapshotChunkToSend};
use super::{LOG_TARGET, RaftCore, Role};
use crate::hard_state::HardState;
use crate::message::{Entry, Message};
use crate::snapshot::Snapshot;
use crate::types::{LogId, LogIndex};

/// Work produced by the core, to be done in this order (see also the
/// [`core` module documentation](crate::core)).
///
/// The order is the safety argument of the whole library, so it is spelled out once here and
/// enforced by the runtime's shared driver: send `messages` and `snapshot_chunks` (they
/// promise nothing durable), write `received_chunks`, store `snapshot` and reset the log to
/// `log_reset`, persist `entries` and `hard_state` and sync (when `must_sync`), send `persisted_messages`,
/// restore the state machine from `snapshot`, apply `committed_entries` in order, then
/// [`RaftCore::advance`] with `ack`. The leader counts its own log towards a commit only
/// after that acknowledgment.
#[derive(Debug)]
#[must_use = "a Ready must be carried out and acknowledged with RaftCore::advance"]
pub struct Ready {
    /// The hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Whether this Ready's writes must be synced before `persisted_messages` go out and the
    /// ack comes back: true when it has `entries`, a `log_reset`, or a hard state whose term
    /// or vote changed. A hard state that changed only its commit index is written without a
    /// sync of its own; the next sync makes it durable with whatever follows it.
    pub must_sync: bool,
    /// Chunks of a snapshot being received from the leader, in order, to write to storage
    /// before `snapshot` is stored (the chunk at offset 0 starts a new snapshot).
    pub received_chunks: Vec<ReceivedSnapshotChunk>,
    /// A snapshot received from the leader, whose bytes are the received chunks: make it
    /// durable as the stored snapshot before anything else of this Ready, and restore the
    /// state machine from it before applying `committed_entries`.
    pub snapshot: Option<Snapshot>,
    /// The stored log must be emptied, to continue after this entry (a received snapshot that
    /// the log did not match). Done after storing `snapshot`, before appending `entries`.
    pub log_reset: Option<LogId>,
    /// Entries to persist, contiguous. If the first one's index is at or below the last stored
    /// index, the stored entries from that index on are replaced.
    pub entries: Vec<Entry>,
    /// Messages that may be sent at once, before or while persisting.
    pub messages: Vec<Message>,
    /// Snapshot chunks to read from storage and send like `messages`, after them.
    pub snapshot_chunks: Vec<SnapshotChunkToSend>,
    /// Messages that may be sent only after `hard_state` and `entries` are durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in index order, after persisting.
    pub committed_entries: Vec<Entry>,
    /// The receipt to hand back to [`RaftCore::advance`] once all of the above is done.
    pub ack: ReadyAck,
}

/// The receipt for a [`Ready`]: proof that its entries are durable and its committed entries
/// applied. It can only come from [`RaftCore::ready`] and is consumed by [`RaftCore::advance`].
#[derive(Debug)]
#[must_use = "hand the ack back to RaftCore::advance once the Ready is carried out"]
pub struct ReadyAck {
    persisted_through: Option<LogId>,
    applied_through: Option<LogIndex>,
    snapshot_through: Option<LogId>,
    /// The number of the Ready's writes (entries, hard state, log reset) among those the
    /// core handed out, when it had any: their sync is outstanding until this comes back.
    writes: Option<u64>,
}

impl ReadyAck {
    /// Splits the receipt in two, for a caller that applies committed entries before the
    /// Ready's writes are durable (it syncs them in the background): the first half records
    /// the applied entries and the stored snapshot, to hand back at once; the second records
    /// the persisted entries, to hand back once their sync completes. Applying before the
    /// local sync is safe: an entry is committed only once a majority holds it durably, and
    /// a leader counts its own log only after the second half.
    pub fn split(self) -> (ReadyAck, ReadyAck) {
        let ReadyAck { persisted_through, applied_through, snapshot_through, writes } = self;
        (
            ReadyAck { persisted_through: None, applied_through, snapshot_through, writes: None },
            ReadyAck { persisted_through, applied_through: None, snapshot_through: None, writes },
        )
    }
}

impl RaftCore {
    /// Whether [`ready`](Self::ready) has any work to hand out.
    pub fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || self.unpersisted_from <= self.log.last_index()
            || self.hard_state() != self.handed_hard_state
            || self.apply_handed_index < self.commit_index
            || self.pending_snapshot.is_some()
            || !self.snapshot_chunks_out.is_empty()
            || !self.snapshot_chunks_in.is_empty()
            || self.pending_log_reset.is_some()
            || (self.role == Role::Leader && self.leader_has_entries_to_send())
            || self.read_round_unsent()
            || self.reads_to_forward()
    }

    /// Takes the work accumulated since the last call. Carry it out in the documented order,
    /// then pass `ready.ack` to [`advance`](Self::advance).
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.replicate_to_all();
            if self.read_round_unsent() {
                self.send_read_round();
            }
        } else {
            self.forward_reads();
        }
        let hard_state = self.hard_state();
        let handed_before = self.handed_hard_state;
        let changed_hard_state = (hard_state != self.handed_hard_state).then(|| {
            self.handed_hard_state = hard_state;
            hard_state
        });

        let last_index = self.log.last_index();
        let entries = if self.unpersisted_from <= last_index {
            self.log.entries_between(self.unpersisted_from, last_index, usize::MAX, usize::MAX)
        } else {
            Vec::new()
        };
        self.unpersisted_from = last_index.next();
        let persisted_through = entries.last().map(Entry::log_id);

        // Everything in the log is durable once this Ready is persisted, so every committed
        // entry may be applied after the persist.
        let committed_entries = if self.apply_handed_index < self.commit_index {
            let from = self.apply_handed_index.next();
            self.log.entries_between(from, self.commit_index, usize::MAX, usize::MAX)
        } else {
            Vec::new()
        };
        let applied_through = committed_entries.last().map(|entry| entry.index);
        if let Some(index) = applied_through {
            self.apply_handed_index = index;
        }

        let snapshot = self.pending_snapshot.take();
        let snapshot_through = snapshot.as_ref().map(|snapshot| snapshot.meta.last_included);
        let log_reset = self.pending_log_reset.take();
        // A hard state whose only change is the commit index is written but need not be
        // synced (etcd-raft's `MustSync` rule): a commit index lost in a crash is learned again
        // from the leader, and a leader commits again through an entry of its own term before
        // it serves. Syncing it would put a whole sync in front of the next write's.
        let term_or_vote_changed = changed_hard_state.is_some_and(|changed| {
            changed.term != handed_before.term || changed.voted_for != handed_before.voted_for
        });
        let must_sync = term_or_vote_changed || !entries.is_empty() || log_reset.is_some();
        // What the caller must sync: from now until the ack comes back, it is outstanding.
        let writes = must_sync.then(|| self.writes_handed_out());
        Ready {
            hard_state: changed_hard_state,
            must_sync,
            received_chunks: std::mem::take(&mut self.snapshot_chunks_in),
            snapshot,
            log_reset,
            entries,
            messages: std::mem::take(&mut self.messages),
            snapshot_chunks: std::mem::take(&mut self.snapshot_chunks_out),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries,
            ack: ReadyAck { persisted_through, applied_through, snapshot_through, writes },
        }
    }

    /// Records that a [`Ready`] was carried out: its entries are durable and its committed
    /// entries applied. The leader may now count its own log towards commits.
    pub fn advance(&mut self, ack: ReadyAck) {
        if let Some(writes) = ack.writes {
            self.writes_synced(writes);
        }
        if let Some(snapshot) = ack.snapshot_through {
            // Stored, and the state machine restored from it.
            self.applied_index = self.applied_index.max(snapshot.index);
            if snapshot.index <= self.log.last_index() {
                self.persisted_index = self.persisted_index.max(snapshot.index);
            }
        }
        if let Some(persisted) = ack.persisted_through {
            // The entries may have been replaced since (a conflicting leader); only an entry
            // still in the log counts.
            if self.log.term_at(persisted.index) == Some(persisted.term) {
                self.persisted_index = self.persisted_index.max(persisted.index);
            }
            assert!(
                self.persisted_index <= self.log.last_index(),
                "invariant violated: {} counts entries through {} as persisted, past its log's end {}",
                self.id,
                self.persisted_index,
                self.log.last_index()
            );
        }
        if let Some(applied) = ack.applied_through {
            assert!(
                applied <= self.commit_index,
                "Raft safety rule violated: only committed entries are applied ({} applied through {applied} with its commit index at {})",
                self.id,
                self.commit_index
            );
            self.applied_index = self.applied_index.max(applied);
            tracing::trace!(target: LOG_TARGET, node = %self.id, "Applied through {applied}");
        }
        self.maybe_commit();
    }

    fn leader_has_entries_to_send(&self) -> bool {
        let last_index = self.log.last_index();
        let window_bytes = (self.config.snapshot_chunk_bytes as u64)
            .saturating_mul(self.config.max_inflight_snapshot_chunks as u64);
        self.progress.values().any(|progress| {
            let sends_entries = progress.next_index <= last_index && !self.is_paused(progress);
            let sends_chunks = progress
                .snapshot_transfer
                .as_ref()
                .is_some_and(|transfer| transfer.can_send(window_bytes));
            sends_entries || sends_chunks
        })
    }
}

#[cfg(test)]
mod snapshot_order_tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::Config;
    use crate::core::{Configuration, InitialState, log};
    use crate::message::MessageBody;
    use crate::snapshot::SnapshotMeta;
    use crate::types::{NodeId, Term};

    fn snapshot_through(index: u64, data: &[u8]) -> Snapshot {
        let last_included = LogId::new(Term(1), LogIndex(index));
        let configuration = Configuration::of_voters([NodeId(1), NodeId(2), NodeId(3)]);
        Snapshot::of_bytes(SnapshotMeta { last_included, configuration }, data)
    }

    fn chunk(snapshot: &Snapshot, offset: u64, data: &'static [u8]) -> Message {
        Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(1),
            body: MessageBody::InstallSnapshot {
                snapshot: snapshot.clone(),
                offset,
                data: Bytes::from_static(data),
            },
        }
    }

    /// A snapshot received whole stays the one the next Ready stores: the first chunk of a
    /// newer transfer that arrives before that Ready is taken (its caller held up by syncs)
    /// is refused, not handed out in the same Ready, where it would replace the stored
    /// snapshot's bytes. Once the Ready is taken, the newer transfer starts.
    #[test]
    fn a_new_transfer_waits_until_the_received_snapshot_is_handed_out() {
        let hard_state = HardState { term: Term(1), voted_for: None, commit_index: LogIndex(0) };
        let initial = InitialState {
            hard_state,
            entries: log::blank_entries_with_terms(&[1]),
            ..InitialState::default()
        };
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let mut core =
            RaftCore::new(NodeId(1), members, Config::default(), initial, 5).expect("valid");
        core.tick(0);
        let older = snapshot_through(10, b"older state");
        core.step(chunk(&older, 0, b"older state"));
        let newer = snapshot_through(20, b"newer state");
        core.step(chunk(&newer, 0, b"newer"));
        let ready = core.ready();
        assert_eq!(ready.snapshot.as_ref().map(|snapshot| snapshot.id), Some(older.id));
        assert!(
            ready.received_chunks.iter().all(|chunk| chunk.snapshot.id == older.id),
            "a chunk of the newer snapshot in the Ready that stores the older one"
        );
        let refused = ready.messages.iter().any(|message| {
            matches!(&message.body, MessageBody::InstallSnapshotResponse { snapshot, received: 0, installed: false, .. } if *snapshot == newer.id)
        });
        assert!(refused, "the newer transfer's first chunk is answered with received=0");
        core.advance(ready.ack);

        core.step(chunk(&newer, 0, b"newer"));
        let ready = core.ready();
        assert_eq!(ready.received_chunks.len(), 1);
        assert_eq!(ready.received_chunks[0].snapshot.id, newer.id);
        core.advance(ready.ack);
    }
}

#[cfg(test)]
mod must_sync_tests {
    use super::*;
    use crate::config::Config;
    use crate::core::{InitialState, log};
    use crate::message::MessageBody;
    use crate::types::{HeartbeatRound, NodeId, Term};

    /// A follower of node 2 in term 1 whose log holds two entries of term 1, none committed.
    fn follower() -> RaftCore {
        let hard_state = HardState { term: Term(1), voted_for: None, commit_index: LogIndex(0) };
        let entries = log::blank_entries_with_terms(&[1, 1]);
        let initial = InitialState { hard_state, entries, ..InitialState::default() };
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let mut core =
            RaftCore::new(NodeId(1), members, Config::default(), initial, 7).expect("a valid log");
        core.tick(0);
        core
    }

    fn step(core: &mut RaftCore, from: u64, term: u64, body: MessageBody) -> Ready {
        core.step(Message { from: NodeId(from), to: NodeId(1), term: Term(term), body });
        core.ready()
    }

    fn append(entries: Vec<Entry>, leader_commit: u64) -> MessageBody {
        MessageBody::AppendEntries {
            prev_log_id: LogId::new(Term(1), LogIndex(2)),
            entries,
            leader_commit: LogIndex(leader_commit),
            round: HeartbeatRound(1),
        }
    }

    /// A hard state that changed only its commit index is written without a sync of its
    /// own; a new term or a vote (in the same term) must be synced before the node answers.
    #[test]
    fn only_a_new_term_or_vote_makes_a_hard_state_need_a_sync() {
        let mut core = follower();
        let ready = step(&mut core, 2, 1, append(Vec::new(), 2));
        let written = ready.hard_state.expect("the commit index moved");
        assert_eq!((written.term, written.commit_index), (Term(1), LogIndex(2)));
        assert!(ready.entries.is_empty());
        assert!(!ready.must_sync, "a commit index alone needs no sync");
        core.advance(ready.ack);

        let ready = step(&mut core, 2, 2, append(Vec::new(), 2));
        assert_eq!(ready.hard_state.map(|state| state.term), Some(Term(2)));
        assert!(ready.must_sync, "a new term must be durable before the answer");
        core.advance(ready.ack);

        let last_log_id = LogId::new(Term(1), LogIndex(2));
        let request = MessageBody::RequestVote { last_log_id, leadership_transfer: true };
        let ready = step(&mut core, 3, 2, request);
        let written = ready.hard_state.expect("a vote");
        assert_eq!((written.term, written.voted_for), (Term(2), Some(NodeId(3))));
        assert!(ready.must_sync, "a vote must be durable before it is sent");
        core.advance(ready.ack);
    }

    /// Entries always need a sync.
    #[test]
    fn entries_need_a_sync() {
        let mut core = follower();
        let entry = log::blank_entries_with_terms(&[1, 1, 1]).pop().expect("three entries");
        let ready = step(&mut core, 2, 1, append(vec![entry], 0));
        assert_eq!(ready.entries.len(), 1);
        assert!(ready.hard_state.is_none());
        assert!(ready.must_sync);
        core.advance(ready.ack);
    }
}
