//! Snapshots in the core (Raft §7): compacting the log behind a snapshot the node took,
//! sending a snapshot in chunks to a follower that needs compacted entries, and receiving and
//! installing one.
//!
//! The core holds the latest snapshot's bytes (a shared [`Bytes`](bytes::Bytes)), so sending
//! one needs no storage read. A received snapshot is handed out in the [`Ready`](super::Ready)
//! to be stored and restored into the state machine before anything after it is applied; the
//! follower acknowledges it only after that Ready is persisted.

use super::{LOG_TARGET, RaftCore, Role};
use crate::message::MessageBody;
use crate::snapshot::{Snapshot, SnapshotMeta};
use crate::types::{LogId, LogIndex, NodeId, Term};

/// A snapshot being received from the leader, chunk by chunk.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    /// The leader sending it, and its term: another leader's snapshot of the same entry holds
    /// the same state but not necessarily the same bytes, so chunks of two transfers are
    /// never spliced together.
    leader: NodeId,
    term: Term,
    meta: SnapshotMeta,
    total_len: u64,
    received: Vec<u8>,
}

impl RaftCore {
    /// What a snapshot of the state machine taken now would cover: the last applied entry and
    /// the current members. `None` before anything is applied.
    pub fn snapshot_meta_for_applied(&self) -> Option<SnapshotMeta> {
        let index = self.applied_index;
        if index.0 == 0 {
            return None;
        }
        let term = self.log.term_at(index)?;
        Some(SnapshotMeta {
            last_included: LogId::new(term, index),
            configuration: self.configurations.at(index).clone(),
        })
    }

    /// The latest snapshot this node holds (taken or received), if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The index of the first entry the in-memory log still holds.
    pub fn first_log_index(&self) -> LogIndex {
        self.log.base().index.next()
    }

    /// Records that `snapshot`, taken from this node's state machine, is durably stored, and
    /// compacts the in-memory log behind it, keeping `snapshot_keep_entries` entries below it
    /// for followers that are only slightly behind. Returns the index through which storage
    /// may now drop entries, if any. A snapshot older than the one held is ignored.
    pub fn snapshot_stored(&mut self, snapshot: Snapshot) -> Option<LogIndex> {
        let last = snapshot.meta.last_included;
        // The snapshot was taken from the state machine at `snapshot_meta_for_applied`, and the
        // applied index never decreases: one past it would hold unapplied (maybe uncommitted)
        // state, and compacting behind it could drop entries nobody applied.
        assert!(
            last.index <= self.applied_index,
            "Raft safety rule violated: a snapshot covers only applied entries ({} was given a snapshot through {last} with entries applied through {})",
            self.id,
            self.applied_index
        );
        if self.snapshot.as_ref().is_some_and(|held| held.meta.last_included.index >= last.index) {
            return None;
        }
        tracing::info!(target: LOG_TARGET, node = %self.id, "Stored snapshot through {last} ({} bytes)", snapshot.data.len());
        self.snapshot = Some(snapshot);
        let compact_through =
            LogIndex(last.index.0.saturating_sub(self.config.snapshot_keep_entries));
        if compact_through <= self.log.base().index {
            return None;
        }
        self.log.compact_through(compact_through);
        self.configurations.compact_through(compact_through);
        Some(compact_through)
    }

    /// Leader: starts sending its snapshot to `peer`, which needs entries it has compacted.
    pub(super) fn start_snapshot_transfer(&mut self, peer: NodeId) {
        let Some(snapshot) = self.snapshot.clone() else {
            debug_assert!(false, "the log is compacted but no snapshot is held");
            tracing::error!(target: LOG_TARGET, node = %self.id, "{peer} needs compacted entries and this node holds no snapshot");
            return;
        };
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        tracing::info!(target: LOG_TARGET, node = %self.id, "Sending snapshot through {} to {peer} ({} bytes): it needs entries before {}", snapshot.meta.last_included, snapshot.data.len(), self.log.base().index.next());
        progress.start_snapshot(snapshot, self.now_ms);
        self.send_snapshot_chunks(peer);
    }

    /// Leader: sends `peer` the chunks its transfer window allows.
    pub(super) fn send_snapshot_chunks(&mut self, peer: NodeId) {
        let chunk_bytes = self.config.snapshot_chunk_bytes as u64;
        let window_bytes =
            chunk_bytes.saturating_mul(self.config.max_inflight_snapshot_chunks as u64);
        loop {
            let Some(transfer) = self
                .progress
                .get_mut(&peer)
                .and_then(|progress| progress.snapshot_transfer.as_mut())
            else {
                return;
            };
            if !transfer.can_send(window_bytes) {
                return;
            }
            let total_len = transfer.total_len();
            let offset = transfer.next_offset;
            let end = offset.saturating_add(chunk_bytes).min(total_len);
            // Offsets stay within the snapshot, whose length fits in memory (a usize).
            let data = transfer.snapshot.data.slice(offset as usize..end as usize);
            let meta = transfer.snapshot.meta.clone();
            transfer.next_offset = end;
            transfer.chunk_sent = true;
            self.send(peer, MessageBody::InstallSnapshot { meta, offset, total_len, data });
        }
    }

    /// Leader, on the heartbeat timer: restarts a transfer to `peer` that made no progress for
    /// a heartbeat interval (a chunk or its answer was lost, or the follower restarted).
    pub(super) fn retry_stalled_snapshot(&mut self, peer: NodeId) {
        let now_ms = self.now_ms;
        let stalled_before_ms = now_ms.saturating_sub(self.config.heartbeat_interval_ms);
        let newest = self.snapshot.as_ref().map(|snapshot| snapshot.meta.last_included.index);
        let Some(transfer) =
            self.progress.get_mut(&peer).and_then(|progress| progress.snapshot_transfer.as_mut())
        else {
            return;
        };
        let stalled = transfer.last_progress_ms <= stalled_before_ms;
        if stalled && newest > Some(transfer.snapshot.meta.last_included.index) {
            // A newer snapshot was taken while this transfer got nowhere: send that instead.
            self.start_snapshot_transfer(peer);
            return;
        }
        if stalled {
            // Everything confirmed but no installation reported: the follower may have lost
            // what it received; send it all again.
            let from = if transfer.acked >= transfer.total_len() { 0 } else { transfer.acked };
            tracing::debug!(target: LOG_TARGET, node = %self.id, "Snapshot transfer to {peer} stalled; resending from byte {from}");
            transfer.rewind_to(from, now_ms);
        }
        self.send_snapshot_chunks(peer);
    }

    /// Leader: handles a follower's answer to an InstallSnapshot chunk.
    pub(super) fn handle_install_snapshot_response(
        &mut self,
        follower: NodeId,
        last_included: LogId,
        received: u64,
        installed: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let now_ms = self.now_ms;
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&follower) else {
            return;
        };
        progress.recently_active = true;
        if installed {
            if last_included.index > last_index {
                tracing::warn!(target: LOG_TARGET, node = %self.id, "Ignoring snapshot installation from {follower} beyond the log end ({last_included})");
                return;
            }
            // News only if it raises what the follower holds. That covers the transfer under
            // way, whose snapshot ends past the match index (a snapshot is sent only to a
            // follower whose next index is compacted); a duplicated answer about an earlier
            // snapshot must not end this transfer and start it over.
            if last_included.index > progress.match_index {
                tracing::info!(target: LOG_TARGET, node = %self.id, "{follower} installed the snapshot through {last_included}; replicating the log after it");
                progress.on_snapshot_installed(last_included.index);
                self.maybe_commit();
                self.replicate_to(follower);
            }
            return;
        }
        let Some(transfer) = progress.snapshot_transfer.as_mut() else {
            return;
        };
        if transfer.snapshot.meta.last_included != last_included {
            return;
        }
        let received = received.min(transfer.total_len());
        if received < transfer.acked {
            // The follower holds less than it said before: it restarted or started over.
            transfer.rewind_to(received, now_ms);
        } else if received > transfer.acked {
            transfer.acked = received;
            transfer.next_offset = transfer.next_offset.max(received);
            transfer.last_progress_ms = now_ms;
        }
        self.send_snapshot_chunks(follower);
    }

    /// Follower: handles one InstallSnapshot chunk from `leader` of the current term.
    pub(super) fn handle_install_snapshot(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total_len: u64,
        data: bytes::Bytes,
    ) {
        self.hear_from_leader(leader);
        let last = meta.last_included;
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > total_len) {
            tracing::warn!(target: LOG_TARGET, node = %self.id, from = %leader, "Dropping malformed InstallSnapshot: bytes {offset}+{} of {total_len}", data.len());
            return;
        }
        if total_len > self.config.max_snapshot_bytes {
            tracing::warn!(target: LOG_TARGET, node = %self.id, from = %leader, "Refusing a snapshot of {total_len} bytes, above max_snapshot_bytes ({})", self.config.max_snapshot_bytes);
            return;
        }
        if last.index <= self.commit_index || self.log.term_at(last.index) == Some(last.term) {
            // Everything the snapshot covers is already here (committed entries are the same
            // on every node, and the Log Matching Property covers a matching entry).
            self.incoming_snapshot = None;
            self.send_after_persist(
                leader,
                MessageBody::InstallSnapshotResponse {
                    last_included: last,
                    received: total_len,
                    installed: true,
                },
            );
            return;
        }
        let same_transfer = self.incoming_snapshot.as_ref().is_some_and(|incoming| {
            incoming.leader == leader
                && incoming.term == self.term
                && incoming.meta == meta
                && incoming.total_len == total_len
        });
        if !same_transfer {
            if offset != 0 {
                // A chunk from the middle of a transfer this node has not seen begin.
                self.send(
                    leader,
                    MessageBody::InstallSnapshotResponse {
                        last_included: last,
                        received: 0,
                        installed: false,
                    },
                );
                return;
            }
            tracing::info!(target: LOG_TARGET, node = %self.id, "Receiving snapshot through {last} from {leader} ({total_len} bytes)");
            self.incoming_snapshot = Some(IncomingSnapshot {
                leader,
                term: self.term,
                meta: meta.clone(),
                total_len,
                received: Vec::new(),
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return;
        };
        if offset == incoming.received.len() as u64 {
            incoming.received.extend_from_slice(&data);
        }
        let received = incoming.received.len() as u64;
        if received < total_len {
            // Duplicates and chunks after a gap are dropped; the answer says where to go on.
            self.send(
                leader,
                MessageBody::InstallSnapshotResponse {
                    last_included: last,
                    received,
                    installed: false,
                },
            );
            return;
        }
        let Some(incoming) = self.incoming_snapshot.take() else {
            return;
        };
        self.install_snapshot(Snapshot { meta: incoming.meta, data: incoming.received.into() });
        // Acknowledged only once the snapshot is stored (the Ready that carries it).
        self.send_after_persist(
            leader,
            MessageBody::InstallSnapshotResponse { last_included: last, received, installed: true },
        );
    }

    /// Follower: makes a complete snapshot from the leader this node's state: the log keeps
    /// the entries after it if it holds the snapshot's last entry, and is emptied otherwise
    /// (Raft §7); the commit index moves to the snapshot's end.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let last = snapshot.meta.last_included;
        // The caller answers at once a snapshot that ends at or before the commit index:
        // installing one would reset a log holding committed entries.
        assert!(
            last.index > self.commit_index,
            "Raft safety rule violated: a committed entry is never truncated ({} was about to install a snapshot through {last} behind its commit index {})",
            self.id,
            self.commit_index
        );
        if self.log.term_at(last.index) == Some(last.term) {
            self.log.compact_through(last.index);
            self.configurations.compact_through(last.index);
            if self.pending_log_reset.is_some() {
                // Nothing after the earlier reset is durable yet: reset to the newer base.
                self.pending_log_reset = Some(last);
            }
        } else {
            self.log.reset_to(last);
            self.configurations.reset_to(last.index, snapshot.meta.configuration.clone());
            self.pending_log_reset = Some(last);
        }
        self.refresh_configuration();
        tracing::info!(target: LOG_TARGET, node = %self.id, "Installed snapshot through {last} ({} bytes); the log continues from {}", snapshot.data.len(), last.index.next());
        self.commit_to(last.index);
        self.apply_handed_index = self.apply_handed_index.max(last.index);
        self.unpersisted_from = self.unpersisted_from.max(last.index.next());
        self.persisted_index = self.persisted_index.min(self.log.last_index());
        self.snapshot = Some(snapshot.clone());
        self.pending_snapshot = Some(snapshot);
        // Storing and restoring the snapshot may take a while: the election timer starts
        // again from the next tick, as if the leader had just been heard.
        self.restart_election_timer_at_next_tick = true;
    }
}
