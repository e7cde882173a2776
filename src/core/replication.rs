//! Log replication (Raft §5.3) and the commit rule (§5.4.2).
//!
//! The leader sends each follower the entries after what it believes the follower holds. A
//! follower accepts only if it holds the entry just before them (the consistency check),
//! replaces any conflicting suffix, and answers with its match index or a conflict hint that
//! lets the leader skip back a whole term per round trip. The leader commits an index once a
//! majority stores it *and* it belongs to the leader's current term; earlier entries commit
//! with it (never by counting their own replicas: Figure 8).

use super::progress::ReplicationMode;
use super::{LOG_TARGET, RaftCore, Role};
use crate::message::{AppendResponse, ConflictHint, Entry, MessageBody};
use crate::types::{HeartbeatRound, LogId, LogIndex, NodeId};

impl RaftCore {
    /// Leader: sends every follower what it lacks, within the in-flight and size limits.
    pub(super) fn replicate_to_all(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.replicate_to(peer);
        }
    }

    /// Leader: sends `peer` as many AppendEntries with new entries as its progress allows.
    pub(super) fn replicate_to(&mut self, peer: NodeId) {
        let last_index = self.log.last_index();
        loop {
            let Some(progress) = self.progress.get(&peer) else {
                return;
            };
            if progress.mode == ReplicationMode::Snapshot {
                self.send_snapshot_chunks(peer);
                return;
            }
            if progress.is_paused(self.config.max_inflight_appends)
                || progress.next_index > last_index
            {
                return;
            }
            self.send_append(peer);
        }
    }

    /// Leader: sends one AppendEntries to `peer` starting at its `next_index` (possibly empty),
    /// or starts sending a snapshot when the entries it needs are compacted.
    fn send_append(&mut self, peer: NodeId) {
        let Some(progress) = self.progress.get(&peer) else {
            return;
        };
        let next_index = progress.next_index;
        let prev_index = next_index.prev();
        if prev_index < self.log.base().index {
            self.start_snapshot_transfer(peer);
            return;
        }
        let Some(prev_term) = self.log.term_at(prev_index) else {
            debug_assert!(false, "next_index {next_index} is beyond the log end + 1");
            return;
        };
        let entries = self.log.entries_between(
            next_index,
            self.log.last_index(),
            self.config.max_append_entries,
            self.config.max_append_bytes,
        );
        let last_sent = entries.last().map(|entry| entry.index);
        if let Some(progress) = self.progress.get_mut(&peer) {
            progress.on_sent(last_sent, self.now_ms);
        }
        self.send_append_entries(peer, LogId::new(prev_term, prev_index), entries);
    }

    /// Leader: sends `peer` an AppendEntries after `prev_log_id`, stamped with the commit
    /// index and the current heartbeat round.
    fn send_append_entries(&mut self, peer: NodeId, prev_log_id: LogId, entries: Vec<Entry>) {
        let round = self.round_for_message();
        let leader_commit = self.commit_index;
        self.send(peer, MessageBody::AppendEntries { prev_log_id, entries, leader_commit, round });
    }

    /// Leader: the heartbeat timer fired. Asserts leadership to every follower, retries probes,
    /// and falls back to probing a follower with a pipelined message unanswered for a whole
    /// heartbeat interval (it, or its answer, was probably lost).
    pub(super) fn broadcast_heartbeat(&mut self) {
        self.heartbeat_deadline_ms = self.now_ms + self.config.heartbeat_interval_ms;
        tracing::trace!(target: LOG_TARGET, node = %self.id, "Sending heartbeats");
        // Each heartbeat opens a round: its answers renew the lease and confirm any read
        // waiting for a round.
        self.start_round();
        self.round_sent();
        // An append unanswered for a whole heartbeat interval was lost (or its answer was).
        let lost_if_sent_before_ms = self.now_ms.saturating_sub(self.config.heartbeat_interval_ms);
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            let Some(progress) = self.progress.get_mut(&peer) else {
                continue;
            };
            match progress.mode {
                ReplicationMode::Probe { .. } => {
                    let next_index = progress.next_index;
                    progress.probe_from(next_index);
                    self.send_append(peer);
                }
                ReplicationMode::Replicate
                    if progress.has_inflight_sent_before(lost_if_sent_before_ms) =>
                {
                    let next_index = progress.match_index.next();
                    progress.probe_from(next_index);
                    self.send_append(peer);
                }
                ReplicationMode::Snapshot => {
                    self.retry_stalled_snapshot(peer);
                    // A heartbeat too, anchored at the snapshot's end: it keeps the follower
                    // from standing while a large transfer is under way, and a follower that
                    // already installed the snapshot accepts it (its answer may have been lost).
                    let Some(anchor) = self.progress.get(&peer).and_then(|progress| {
                        Some(progress.snapshot_transfer.as_ref()?.snapshot.meta.last_included)
                    }) else {
                        continue;
                    };
                    self.send_append_entries(peer, anchor, Vec::new());
                }
                ReplicationMode::Replicate => {
                    // A bare heartbeat anchored at the match index: it always passes the
                    // consistency check and carries the commit index.
                    let match_index = progress.match_index;
                    let Some(match_term) = self.log.term_at(match_index) else {
                        // Compacted away: the follower needs a snapshot.
                        self.start_snapshot_transfer(peer);
                        continue;
                    };
                    self.send_append_entries(peer, LogId::new(match_term, match_index), Vec::new());
                }
            }
        }
    }

    /// Leader: sends the heartbeats of a round that reads wait for: to every follower, bare
    /// and anchored where its log is known to match (so it always passes the consistency
    /// check), whatever its replication mode. Unlike the heartbeat timer's round, it retries
    /// nothing: a burst of reads must not multiply probes or snapshot chunks.
    pub(super) fn send_read_round(&mut self) {
        self.round_sent();
        let anchors: Vec<(NodeId, LogId)> = self
            .progress
            .iter()
            .filter_map(|(peer, progress)| {
                let anchor = match &progress.snapshot_transfer {
                    Some(transfer) => transfer.snapshot.meta.last_included,
                    None => {
                        LogId::new(self.log.term_at(progress.match_index)?, progress.match_index)
                    }
                };
                Some((*peer, anchor))
            })
            .collect();
        for (peer, anchor) in anchors {
            self.send_append_entries(peer, anchor, Vec::new());
        }
    }

    /// Follower: handles AppendEntries from `leader` of the current term.
    pub(super) fn handle_append_entries(
        &mut self,
        leader: NodeId,
        prev_log_id: LogId,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        round: HeartbeatRound,
    ) {
        self.hear_from_leader(leader);
        if prev_log_id.index < self.log.base().index {
            // The entries start inside this node's snapshot. Everything up to the commit
            // index is committed, so equal to the leader's log: accept up to there, and the
            // leader sends what follows.
            let result = AppendResponse::Accepted { match_index: self.commit_index };
            self.send_after_persist(leader, MessageBody::AppendEntriesResponse { result, round });
            return;
        }

        let result = match self.log.term_at(prev_log_id.index) {
            None => AppendResponse::Rejected {
                rejected_prev_index: prev_log_id.index,
                hint: ConflictHint {
                    conflict_term: None,
                    first_index: self.log.last_index().next(),
                },
            },
            Some(term) if term != prev_log_id.term => AppendResponse::Rejected {
                rejected_prev_index: prev_log_id.index,
                hint: ConflictHint {
                    conflict_term: Some(term),
                    first_index: self.log.first_index_of_term_run(prev_log_id.index),
                },
            },
            Some(_) => {
                if let Some(conflict) = self.first_conflict(&entries)
                    && conflict <= self.commit_index
                {
                    // Leader completeness (§5.4): a leader holds every committed entry, so
                    // no correct one asks to overwrite one. Refused: this node's log and
                    // commit index are intact.
                    let commit_index = self.commit_index;
                    self.refuse_violation(leader, format_args!("it asks to overwrite entry {conflict}, at or below the commit index {commit_index}"));
                    return;
                }
                // The entries follow prev_log_id contiguously (checked in `step`).
                let last_new_index = entries.last().map_or(prev_log_id.index, |entry| entry.index);
                self.append_from_leader(entries);
                // The log now matches the leader's through last_new_index, so the leader's
                // commit index is committed here up to there (a lower one changes nothing).
                self.commit_to(leader_commit.min(last_new_index));
                AppendResponse::Accepted { match_index: last_new_index }
            }
        };
        // An acceptance promises the entries are durable: it waits for the persist.
        self.send_after_persist(leader, MessageBody::AppendEntriesResponse { result, round });
    }

    /// Follower: a message from `leader` of the current term arrived. Follows it and restarts
    /// the election timer. `step` has refused a second leader of the term already, so another
    /// leader known here (this node included) is this node's own bug: it stops (panics).
    pub(super) fn hear_from_leader(&mut self, leader: NodeId) {
        assert!(
            self.role != Role::Leader,
            "Raft safety rule violated: at most one leader per term ({} leads term {} and heard {leader} claim it too)",
            self.id,
            self.term
        );
        self.note_leader(leader);
        if self.role != Role::Follower || self.leader_id != Some(leader) {
            if self.leader_id != Some(leader) {
                tracing::info!(target: LOG_TARGET, node = %self.id, "Following {leader} in term {}", self.term);
            }
            let term = self.term;
            self.become_follower(term, Some(leader));
        } else {
            self.reset_election_deadline();
        }
        self.last_leader_contact_ms = Some(self.now_ms);
    }

    /// Follower: appends `entries` (which follow a matching entry), skipping those already held
    /// and replacing a conflicting suffix. Stops the node (panics) if that would remove a
    /// committed entry: the leader broke Leader Completeness (§5.4), or this node's log or
    /// commit index is corrupt; either way, going on would apply a different history.
    /// The index of the first of `entries` that disagrees with a stored entry (a different
    /// term at its index), if any.
    fn first_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries
            .iter()
            .find(|entry| {
                entry.index <= self.log.last_index()
                    && self.log.term_at(entry.index) != Some(entry.term)
            })
            .map(|entry| entry.index)
    }

    pub(super) fn append_from_leader(&mut self, entries: Vec<Entry>) {
        let first_new =
            entries.iter().position(|entry| self.log.term_at(entry.index) != Some(entry.term));
        let Some(first_new) = first_new else {
            return;
        };
        let conflict_index = entries[first_new].index;
        let mut configurations_changed = false;
        if conflict_index <= self.log.last_index() {
            assert!(
                conflict_index > self.commit_index,
                "Raft safety rule violated: a committed entry is never truncated ({} was asked by the leader of term {} to overwrite entry {conflict_index}, and its commit index is {})",
                self.id,
                self.term,
                self.commit_index
            );
            tracing::debug!(target: LOG_TARGET, node = %self.id, "Truncating conflicting entries from index {conflict_index}");
            self.log.truncate_from(conflict_index, self.commit_index);
            configurations_changed |= self.configurations.truncate_from(conflict_index);
            self.persisted_index = self.persisted_index.min(conflict_index.prev());
        }
        self.unpersisted_from = self.unpersisted_from.min(conflict_index);
        for entry in entries.into_iter().skip(first_new) {
            configurations_changed |= self.configurations.on_append(&entry);
            self.log.append(entry);
        }
        if configurations_changed {
            // A configuration takes effect when appended, and a truncated one is undone
            // (§4.1).
            self.refresh_configuration();
        }
    }

    /// Leader: handles a follower's answer to AppendEntries.
    pub(super) fn handle_append_response(&mut self, follower: NodeId, response: AppendResponse) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&follower) else {
            return;
        };
        progress.recently_active = true;
        match response {
            AppendResponse::Accepted { match_index } => {
                if match_index > self.log.last_index() {
                    tracing::warn!(target: LOG_TARGET, node = %self.id, "Ignoring acceptance from {follower} beyond the log end ({match_index})");
                    return;
                }
                if progress.on_accepted(match_index) {
                    self.maybe_commit();
                }
                self.maybe_send_timeout_now();
                self.replicate_to(follower);
            }
            AppendResponse::Rejected { .. } if progress.mode == ReplicationMode::Snapshot => {
                // The heartbeats of a snapshot transfer are rejected until it is installed.
            }
            AppendResponse::Rejected { rejected_prev_index, hint } => {
                // Every AppendEntries sent to this follower had its prev index below
                // next_index; a rejection at or past it is stale or malformed.
                let stale = rejected_prev_index <= progress.match_index
                    || rejected_prev_index >= progress.next_index
                    || match progress.mode {
                        ReplicationMode::Probe { .. } => {
                            rejected_prev_index != progress.next_index.prev()
                        }
                        ReplicationMode::Replicate | ReplicationMode::Snapshot => false,
                    };
                if stale {
                    return;
                }
                let hinted_next = match hint.conflict_term {
                    Some(term) => self
                        .log
                        .last_index_of_term(term, rejected_prev_index)
                        .map(LogIndex::next)
                        .unwrap_or(hint.first_index),
                    None => hint.first_index,
                };
                let next_index =
                    hinted_next.min(rejected_prev_index).max(progress.match_index.next());
                tracing::debug!(target: LOG_TARGET, node = %self.id, "{follower} rejected prev index {rejected_prev_index}; probing from {next_index}");
                progress.probe_from(next_index);
                self.send_append(follower);
            }
        }
    }

    /// Leader: advances the commit index to the highest index that a majority stores, if that
    /// entry is of the current term (Figure 8: earlier-term entries never commit by counting).
    pub(super) fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        // The leader counts itself only for what it has durably stored. Called for every
        // acknowledgment: the configuration counts without allocating for small clusters.
        let (own_id, own_persisted, progress) = (self.id, self.persisted_index, &self.progress);
        let match_index_of = |id| {
            if id == own_id {
                Some(own_persisted)
            } else {
                progress.get(&id).map(|progress| progress.match_index)
            }
        };
        let majority_index = self.configuration.committed_index(match_index_of);
        #[cfg(feature = "sim")]
        let majority_index = if self.planted_learners_count_for_commit {
            // Planted bug: learners counted as if they voted.
            super::Configuration::of_voters(self.configuration.members().iter().copied())
                .committed_index(match_index_of)
        } else {
            majority_index
        };
        #[cfg(feature = "sim")]
        if self.planted_commit_previous_term && majority_index > self.commit_index {
            // Planted bug (Figure 8): commit whatever a majority stores, whatever its term.
            self.commit_to(majority_index);
            return;
        }
        if majority_index > self.commit_index && self.log.term_at(majority_index) == Some(self.term)
        {
            tracing::trace!(target: LOG_TARGET, node = %self.id, "Committed up to {majority_index}");
            self.commit_to(majority_index);
            self.start_reads_awaiting_commit();
            self.advance_membership();
        }
    }
}
