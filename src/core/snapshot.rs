//! Snapshots in the core (Raft §7): compacting the log behind a snapshot the node took,
//! sending a snapshot in chunks to a follower that needs compacted entries, and receiving and
//! installing one.
//!
//! The core never holds a snapshot's bytes. A leader asks for each chunk it sends in the
//! [`Ready`](super::Ready) (`snapshot_chunks`: the caller reads it from storage); a follower
//! hands each chunk it accepts out in the Ready (`received_chunks`: the caller writes it to
//! storage), keeping only a running checksum, and once it holds them all and the checksum
//! matches it installs the snapshot: the Ready carries it to be made durable and restored
//! into the state machine before anything after it is applied; the follower acknowledges it
//! only after that Ready is persisted.
//!
//! A transfer is one leader's in one term, of one snapshot ([`SnapshotId`]): chunks of
//! different transfers are never put together, and a follower drops a transfer it was
//! receiving when its term changes. The leader keeps a window of chunks in flight and never
//! rewinds on an answer (a late or duplicated answer says nothing new); it resends from the
//! last confirmed byte only when the follower confirmed nothing new for a while (see
//! [`SnapshotTransfer`](super::progress::SnapshotTransfer)).

use bytes::Bytes;

use super::{LOG_TARGET, RaftCore, Role};
use crate::message::{Message, MessageBody};
use crate::snapshot::{Snapshot, SnapshotId, SnapshotMeta};
use crate::types::{LogId, LogIndex, NodeId, Term};

/// A snapshot being received from the leader, chunk by chunk.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    /// The leader sending it, and its term: another leader's snapshot of the same entry holds
    /// the same state but not necessarily the same bytes, so chunks of two transfers are
    /// never spliced together.
    leader: NodeId,
    term: Term,
    snapshot: Snapshot,
    /// Bytes received, contiguous from the start.
    received: u64,
    /// crc32c of those bytes.
    checksum: u32,
}

/// A chunk of a snapshot the leader sends: the caller reads `len` bytes of `message`'s
/// snapshot at its offset from storage into its `data`, then sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunkToSend {
    /// An `InstallSnapshot` whose `data` is still empty.
    pub message: Message,
    /// How many bytes to read into it.
    pub len: usize,
}

/// A chunk of a snapshot the follower accepted, to write to storage. Chunks come in order;
/// the one at offset 0 starts a new snapshot (dropping any unfinished one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedSnapshotChunk {
    /// The snapshot it belongs to.
    pub snapshot: Snapshot,
    /// Where `data` starts in it.
    pub offset: u64,
    /// The chunk.
    pub data: Bytes,
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
        tracing::info!(target: LOG_TARGET, node = %self.id, "Stored snapshot through {last} ({} bytes)", snapshot.size);
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
        tracing::info!(target: LOG_TARGET, node = %self.id, "Sending snapshot through {} to {peer} ({} bytes): it needs entries before {}", snapshot.meta.last_included, snapshot.size, self.log.base().index.next());
        progress.start_snapshot(snapshot, self.now_ms);
        self.send_snapshot_chunks(peer);
    }

    /// Leader: the caller could not read the snapshot a transfer to `peer` sends (storage
    /// replaced it before the caller opened it): the transfer starts over with the snapshot
    /// held now.
    pub fn snapshot_unreadable(&mut self, peer: NodeId, snapshot: SnapshotId) {
        let sending = self
            .progress
            .get(&peer)
            .and_then(|progress| progress.snapshot_transfer.as_ref())
            .is_some_and(|transfer| transfer.snapshot.id == snapshot);
        if self.role == Role::Leader && sending {
            tracing::info!(target: LOG_TARGET, node = %self.id, "{snapshot} is no longer readable; sending {peer} the latest snapshot instead");
            self.start_snapshot_transfer(peer);
        }
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
            let snapshot = transfer.snapshot.clone();
            transfer.next_offset = end;
            transfer.chunk_sent = true;
            let message = Message {
                from: self.id,
                to: peer,
                term: self.term,
                body: MessageBody::InstallSnapshot { snapshot, offset, data: Bytes::new() },
            };
            // At most `snapshot_chunk_bytes`, a usize.
            let len = usize::try_from(end - offset).unwrap_or(usize::MAX);
            tracing::trace!(target: LOG_TARGET, node = %self.id, "Sending {peer} bytes {offset}..{end} of the snapshot");
            self.snapshot_chunks_out.push(SnapshotChunkToSend { message, len });
        }
    }

    /// Leader, on the heartbeat timer: resends what `peer` has not confirmed if its transfer
    /// made no progress for a while (a chunk or its answer was lost, or the follower
    /// restarted), and sends a newer snapshot instead if one was taken meanwhile.
    pub(super) fn retry_stalled_snapshot(&mut self, peer: NodeId) {
        let now_ms = self.now_ms;
        let election_timeout_ms = self.config.election_timeout_max_ms;
        let newest = self.snapshot.as_ref().map(|snapshot| snapshot.meta.last_included.index);
        let Some(transfer) =
            self.progress.get_mut(&peer).and_then(|progress| progress.snapshot_transfer.as_mut())
        else {
            return;
        };
        if !transfer.is_stalled(now_ms, election_timeout_ms) {
            self.send_snapshot_chunks(peer);
            return;
        }
        if newest > Some(transfer.snapshot.meta.last_included.index) {
            // A newer snapshot was taken while this transfer got nowhere: send that instead.
            self.start_snapshot_transfer(peer);
            return;
        }
        let from = transfer.resume_offset();
        tracing::debug!(target: LOG_TARGET, node = %self.id, "Snapshot transfer to {peer} made no progress; resending from byte {from}");
        transfer.rewind_to(from, now_ms);
        self.send_snapshot_chunks(peer);
    }

    /// Leader: handles a follower's answer to an InstallSnapshot chunk.
    pub(super) fn handle_install_snapshot_response(
        &mut self,
        follower: NodeId,
        snapshot: SnapshotId,
        last_included: LogId,
        received: u64,
        installed: bool,
        gap: bool,
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
        if transfer.snapshot.id != snapshot {
            return;
        }
        transfer.on_answer(received, gap, now_ms);
        self.send_snapshot_chunks(follower);
    }

    /// Follower: handles one InstallSnapshot chunk from `leader` of the current term.
    pub(super) fn handle_install_snapshot(
        &mut self,
        leader: NodeId,
        snapshot: Snapshot,
        offset: u64,
        data: Bytes,
    ) {
        self.hear_from_leader(leader);
        let last = snapshot.meta.last_included;
        let total_len = snapshot.size;
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > total_len) {
            tracing::warn!(target: LOG_TARGET, node = %self.id, from = %leader, "Dropping malformed InstallSnapshot: bytes {offset}+{} of {total_len}", data.len());
            return;
        }
        if total_len > self.config.max_snapshot_bytes {
            tracing::warn!(target: LOG_TARGET, node = %self.id, from = %leader, "Refusing a snapshot of {total_len} bytes, above max_snapshot_bytes ({})", self.config.max_snapshot_bytes);
            return;
        }
        let id = snapshot.id;
        let answer = move |received: u64, installed: bool| MessageBody::InstallSnapshotResponse {
            snapshot: id,
            last_included: last,
            received,
            installed,
            gap: false,
        };
        if last.index <= self.commit_index || self.log.term_at(last.index) == Some(last.term) {
            // Everything the snapshot covers is already here (committed entries are the same
            // on every node, and the Log Matching Property covers a matching entry).
            self.incoming_snapshot = None;
            self.send_after_persist(leader, answer(total_len, true));
            return;
        }
        let same_transfer = self.incoming_snapshot.as_ref().is_some_and(|incoming| {
            incoming.leader == leader && incoming.term == self.term && incoming.snapshot == snapshot
        });
        #[cfg(feature = "sim")]
        let same_transfer = same_transfer
            || (self.planted_splice_snapshot_transfers
                && self.incoming_snapshot.as_ref().is_some_and(|incoming| {
                    incoming.snapshot.meta.last_included.index == last.index
                        && incoming.snapshot.size == total_len
                }));
        if !same_transfer {
            if offset != 0 {
                // A chunk from the middle of a transfer this node has not seen begin.
                self.send(leader, answer(0, false));
                return;
            }
            if self.pending_snapshot.is_some() {
                // A snapshot received whole is still to be stored (its caller has not taken
                // the Ready that carries it, its syncs being behind): a new transfer's first
                // chunk in that same Ready would be written over its bytes before it is
                // stored. The leader starts this one again once this node answers it.
                self.send(leader, answer(0, false));
                return;
            }
            tracing::info!(target: LOG_TARGET, node = %self.id, "Receiving snapshot through {last} from {leader} ({total_len} bytes)");
            self.incoming_snapshot = Some(IncomingSnapshot {
                leader,
                term: self.term,
                snapshot: snapshot.clone(),
                received: 0,
                checksum: 0,
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return;
        };
        if offset == incoming.received && (!data.is_empty() || offset == 0) {
            incoming.received += data.len() as u64;
            incoming.checksum = crc32c::crc32c_append(incoming.checksum, &data);
            self.snapshot_chunks_in.push(ReceivedSnapshotChunk {
                snapshot: snapshot.clone(),
                offset,
                data,
            });
        }
        let (received, checksum) = (incoming.received, incoming.checksum);
        if received < total_len {
            // Duplicates and chunks after a gap are dropped; the answer says where to go on,
            // and whether bytes before this chunk went missing.
            let gap = offset > received;
            self.send(
                leader,
                MessageBody::InstallSnapshotResponse {
                    snapshot: id,
                    last_included: last,
                    received,
                    installed: false,
                    gap,
                },
            );
            return;
        }
        self.incoming_snapshot = None;
        #[cfg(feature = "sim")]
        let checksum =
            if self.planted_splice_snapshot_transfers { snapshot.checksum } else { checksum };
        if checksum != snapshot.checksum {
            // Not the bytes the leader described (damaged on the way, or a leader's bug):
            // restoring them would give this node a state no other node has.
            tracing::warn!(target: LOG_TARGET, node = %self.id, from = %leader, "Dropping the snapshot through {last}: its bytes' checksum {checksum:08x} is not the {:08x} announced", snapshot.checksum);
            self.send(leader, answer(0, false));
            return;
        }
        self.install_snapshot(snapshot);
        // Acknowledged only once the snapshot is stored (the Ready that carries it).
        self.send_after_persist(leader, answer(received, true));
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
        tracing::info!(target: LOG_TARGET, node = %self.id, "Installed snapshot through {last} ({} bytes); the log continues from {}", snapshot.size, last.index.next());
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
