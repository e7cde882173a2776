//! Log replication (Raft §5.3) and the commit rule (§5.4.2).
//!
//! The leader sends each follower the entries after what it believes the follower holds. A
//! follower accepts only if it holds the entry just before them (the consistency check),
//! replaces any conflicting suffix, and answers with its match index or a conflict hint that
//! lets the leader skip back a whole term per round trip. The leader commits an index once a
//! majority stores it *and* it belongs to the leader's current term; earlier entries commit
//! with it (never by counting their own replicas: Figure 8).

use super::progress::{Progress, ReplicationMode};
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
            if progress.next_index > last_index || self.is_paused(progress) {
                return;
            }
            self.send_append(peer);
        }
    }

    /// Leader: whether sending `progress`'s follower more entries must wait (its in-flight
    /// message count or bytes are at their limits, or its probe is unanswered).
    pub(super) fn is_paused(&self, progress: &Progress) -> bool {
        // An entry compacted away weighs nothing: the follower needs a snapshot instead.
        let next_entry_bytes =
            self.log.entry(progress.next_index).map_or(0, |entry| entry.encoded_len() as u64);
        progress.is_paused(
            self.config.max_inflight_appends,
            self.config.max_inflight_bytes,
            next_entry_bytes,
        )
    }

    /// Leader: sends one AppendEntries to `peer` starting at its `next_index` (possibly empty),
    /// or starts sending a snapshot when the entries it needs are compacted. Its entries fit
    /// in the room left in the follower's in-flight byte budget, except that the first one
    /// is always sent.
    fn send_append(&mut self, peer: NodeId) {
        let Some(progress) = self.progress.get(&peer) else {
            return;
        };
        let next_index = progress.next_index;
        let room = progress.inflight_room(self.config.max_inflight_bytes);
        let prev_index = next_index.prev();
        if prev_index < self.log.base().index {
            self.start_snapshot_transfer(peer);
            return;
        }
        let Some(prev_term) = self.log.term_at(prev_index) else {
            debug_assert!(false, "next_index {next_index} is beyond the log end + 1");
            return;
        };
        let mut entries = self.log.entries_between(
            next_index,
            self.log.last_index(),
            self.config.max_append_entries,
            self.config.max_append_bytes,
        );
        let mut bytes = 0u64;
        let mut within_room = 0;
        for entry in &entries {
            let with_entry = bytes.saturating_add(entry.encoded_len() as u64);
            if within_room > 0 && with_entry > room {
                break;
            }
            bytes = with_entry;
            within_room += 1;
        }
        entries.truncate(within_room);
        let last_sent = entries.last().map(|entry| entry.index);
        if let Some(progress) = self.progress.get_mut(&peer) {
            progress.on_sent(last_sent, bytes, self.now_ms);
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
    /// and falls back to probing, from its match index, a follower that is lost: entries in
    /// flight and no acknowledgment advancing its match index for an election timeout (see
    /// `Progress::is_lost`; a slow follower that keeps acknowledging is not lost, and what is
    /// on its link is not sent again).
    pub(super) fn broadcast_heartbeat(&mut self) {
        self.heartbeat_deadline_ms = self.now_ms + self.config.heartbeat_interval_ms;
        tracing::trace!(target: LOG_TARGET, node = %self.id, "Sending heartbeats");
        // Each heartbeat opens a round: its answers renew the lease and confirm any read
        // waiting for a round.
        self.start_round();
        self.round_sent();
        let (now_ms, loss_timeout_ms) = (self.now_ms, self.config.election_timeout_max_ms);
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
                ReplicationMode::Replicate if progress.is_lost(now_ms, loss_timeout_ms) => {
                    let next_index = progress.match_index.next();
                    tracing::debug!(target: LOG_TARGET, node = %self.id, "{peer} acknowledged nothing new for {loss_timeout_ms} ms; probing from {next_index}");
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
                    // A bare heartbeat anchored at the last entry sent (the match index when
                    // nothing is in flight). It travels behind the entries sent before it, so
                    // a follower that accepts it holds them all, and its answer (sent once
                    // they are durable) advances the match index past them; a follower that
                    // lacks them lost some (or restarted), and its rejection has the leader
                    // probe from where its log ends, a heartbeat interval after the loss
                    // rather than a loss timeout.
                    let anchor = progress.next_index.prev();
                    let Some(anchor_term) = self.log.term_at(anchor) else {
                        // Compacted away: the follower needs a snapshot.
                        self.start_snapshot_transfer(peer);
                        continue;
                    };
                    self.send_append_entries(peer, LogId::new(anchor_term, anchor), Vec::new());
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
                if progress.on_accepted(match_index, self.now_ms) {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::{InitialState, RaftCore, Role};
    use crate::config::Config;
    use crate::message::{AppendResponse, ConflictHint, Message, MessageBody};
    use crate::types::{HeartbeatRound, LogIndex, NodeId};

    /// Node 1 leading nodes 1 to 3, both followers holding its no-op (index 1); and the time.
    fn leader(config: Config) -> (RaftCore, u64) {
        let config = Config { pre_vote: false, ..config };
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let mut core = RaftCore::new(NodeId(1), members, config, InitialState::default(), 1)
            .expect("a valid configuration");
        core.tick(0);
        let now_ms = core.next_deadline_ms();
        core.tick(now_ms);
        sent(&mut core);
        let term = core.term();
        let granted = MessageBody::RequestVoteResponse { granted: true };
        core.step(Message { from: NodeId(2), to: NodeId(1), term, body: granted });
        assert_eq!(core.role(), Role::Leader);
        sent(&mut core);
        for follower in [2, 3] {
            accept(&mut core, follower, 1);
        }
        sent(&mut core);
        (core, now_ms)
    }

    /// Carries out the core's work (its writes durable at once); returns the messages sent.
    fn sent(core: &mut RaftCore) -> Vec<Message> {
        let mut messages = Vec::new();
        while core.has_ready() {
            let ready = core.ready();
            messages.extend(ready.messages);
            messages.extend(ready.persisted_messages);
            core.advance(ready.ack);
        }
        messages
    }

    fn answer(core: &mut RaftCore, from: u64, result: AppendResponse) {
        let body = MessageBody::AppendEntriesResponse { result, round: HeartbeatRound(0) };
        let term = core.term();
        core.step(Message { from: NodeId(from), to: NodeId(1), term, body });
    }

    fn accept(core: &mut RaftCore, from: u64, match_index: u64) {
        answer(core, from, AppendResponse::Accepted { match_index: LogIndex(match_index) });
    }

    /// The AppendEntries among `messages` to `to`: each one's prev index and entries' indexes.
    fn appends_to(messages: &[Message], to: u64) -> Vec<(u64, Vec<u64>)> {
        messages
            .iter()
            .filter(|message| message.to == NodeId(to))
            .filter_map(|message| match &message.body {
                MessageBody::AppendEntries { prev_log_id, entries, .. } => {
                    Some((prev_log_id.index.0, entries.iter().map(|entry| entry.index.0).collect()))
                }
                _ => None,
            })
            .collect()
    }

    fn propose(core: &mut RaftCore, bytes: usize) {
        core.propose(Bytes::from(vec![7; bytes])).expect("the leader accepts");
    }

    /// An entry in flight to a follower that answers nothing is not sent again at each
    /// heartbeat (a slow follower is not a lost one): only once nothing has advanced the
    /// follower's match index for an election timeout (`election_timeout_max_ms`).
    #[test]
    fn entries_in_flight_are_sent_again_only_after_the_loss_timeout() {
        let (mut core, start_ms) = leader(Config::default());
        propose(&mut core, 10);
        assert_eq!(appends_to(&sent(&mut core), 2), [(1, vec![2])]);
        let sent_ms = start_ms;
        let loss_timeout_ms = core.config().election_timeout_max_ms;
        let mut heartbeats = 0;
        loop {
            let now_ms = core.next_deadline_ms();
            core.tick(now_ms);
            let to_2 = appends_to(&sent(&mut core), 2);
            accept(&mut core, 3, 2);
            sent(&mut core);
            if to_2.is_empty() {
                continue;
            }
            if now_ms < sent_ms + loss_timeout_ms {
                heartbeats += 1;
                assert_eq!(to_2, [(2, vec![])], "at {now_ms} ms: sent again before the timeout");
            } else {
                assert_eq!(to_2, [(1, vec![2])], "lost: resent from the match index");
                break;
            }
        }
        assert!(heartbeats >= 2, "{heartbeats} heartbeats before the timeout");
    }

    /// An acknowledgment that advances the match index restarts the loss timeout: a follower
    /// that keeps acknowledging, however far behind, is never resent what is in flight.
    #[test]
    fn a_follower_that_keeps_acknowledging_is_not_lost() {
        let config = Config { max_append_entries: 1, ..Config::default() };
        let (mut core, _) = leader(config);
        for _ in 0..20 {
            propose(&mut core, 10);
        }
        let first = appends_to(&sent(&mut core), 2);
        assert_eq!(first.len(), 20, "one entry per message, all in flight");
        let mut acknowledged = 1;
        for _ in 0..10 {
            let now_ms = core.next_deadline_ms();
            core.tick(now_ms);
            // Each heartbeat interval the follower acknowledges one more entry.
            acknowledged += 1;
            accept(&mut core, 2, acknowledged);
            accept(&mut core, 3, 21);
            let to_2 = appends_to(&sent(&mut core), 2);
            assert!(to_2.iter().all(|(_, entries)| entries.is_empty()), "resent {to_2:?}");
        }
    }

    /// A heartbeat to a follower with entries in flight is anchored at the last of them: a
    /// follower that lost them rejects it, and the leader sends them again at once (not a
    /// loss timeout later); one that holds them accepts it, which advances its match index
    /// (its acknowledgments may have been lost) without anything sent again.
    #[test]
    fn the_heartbeat_is_anchored_at_the_last_entry_sent() {
        let (mut core, _) = leader(Config::default());
        propose(&mut core, 10);
        propose(&mut core, 10);
        assert_eq!(appends_to(&sent(&mut core), 2), [(1, vec![2, 3])]);
        core.tick(core.next_deadline_ms());
        let heartbeats = sent(&mut core);
        assert_eq!(appends_to(&heartbeats, 2), [(3, vec![])]);
        assert_eq!(appends_to(&heartbeats, 3), [(3, vec![])]);
        // Node 2 lost the entries: its log ends at 1.
        let hint = ConflictHint { conflict_term: None, first_index: LogIndex(2) };
        answer(&mut core, 2, AppendResponse::Rejected { rejected_prev_index: LogIndex(3), hint });
        assert_eq!(appends_to(&sent(&mut core), 2), [(1, vec![2, 3])]);
        // Node 3 holds them (its answers to them were lost).
        accept(&mut core, 3, 3);
        assert!(appends_to(&sent(&mut core), 3).is_empty());
        assert!(core.follower_match_indexes().contains(&(NodeId(3), LogIndex(3))));
        assert_eq!(core.commit_index(), LogIndex(3));
    }

    /// The byte budget: a message carries only the entries that fit in what is left of it;
    /// the next waits for acknowledgments; one entry larger than the whole budget still goes,
    /// alone, once nothing else is in flight; and heartbeats go whatever the budget.
    #[test]
    fn entries_in_flight_stay_within_the_byte_budget() {
        // Each 10-byte command takes 31 bytes on the wire: three fit in 100.
        let config = Config { max_inflight_bytes: 100, ..Config::default() };
        let (mut core, _) = leader(config);
        for _ in 0..5 {
            propose(&mut core, 10);
        }
        assert_eq!(appends_to(&sent(&mut core), 2), [(1, vec![2, 3, 4])], "trimmed to the room");
        // A message's bytes count until all of it is acknowledged.
        accept(&mut core, 2, 3);
        assert_eq!(appends_to(&sent(&mut core), 2), []);
        accept(&mut core, 2, 4);
        assert_eq!(appends_to(&sent(&mut core), 2), [(4, vec![5, 6])]);
        accept(&mut core, 2, 6);
        accept(&mut core, 3, 6);
        sent(&mut core);
        // An entry larger than the budget goes alone, once nothing is in flight.
        propose(&mut core, 500);
        propose(&mut core, 10);
        assert_eq!(appends_to(&sent(&mut core), 2), [(6, vec![7])]);
        // The budget is spent: the heartbeat still goes, carrying nothing.
        core.tick(core.next_deadline_ms());
        assert_eq!(appends_to(&sent(&mut core), 2), [(7, vec![])]);
        accept(&mut core, 2, 7);
        assert_eq!(appends_to(&sent(&mut core), 2), [(7, vec![8])]);
    }
}
