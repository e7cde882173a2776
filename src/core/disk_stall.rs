//! A stalled disk (hashicorp/raft#503, consul#22064): a leader whose syncs hang cannot make
//! its log durable, yet its heartbeats (which need no disk) would keep its followers from
//! electing anyone else, so the cluster could stop committing for as long as the disk hangs.
//!
//! The core hands its writes out in a [`Ready`](super::Ready) and learns they are durable
//! when the Ready's acknowledgment comes back through [`RaftCore::advance`]; in between, the
//! writes are outstanding. Each Ready with writes is numbered and its hand-out time kept,
//! oldest first, so the core knows how long its oldest outstanding write has waited. Once
//! that reaches [`Config::max_sync_stall_ms`](crate::Config::max_sync_stall_ms), the disk
//! counts as stalled ([`RaftCore::disk_stalled_for_ms`]):
//!
//! - a leader steps down, in the same term, logging why: it hands leadership to a voter that
//!   holds its whole log (`TimeoutNow`, as a leader leaving the configuration does), if there
//!   is one, and stops sending heartbeats, so that a healthy node takes over within an
//!   election timeout at most;
//! - a node stands for no election (neither pre-vote nor vote) and takes no leadership
//!   handed to it: its vote for itself could not become durable, so its vote requests would
//!   never leave, and the terms it raised would only disrupt the next leader once the disk
//!   came back. It still answers pre-votes and votes (a vote leaves only once durable).
//!
//! A follower needs no rule of its own: its acknowledgments promise durability, so they wait
//! for the sync and the leader counts it as behind. A node with no other voter keeps
//! leading and standing (nobody else could lead); [`RaftCore::disk_stalled_for_ms`] still
//! reports the stall.

use std::collections::VecDeque;

use super::{LOG_TARGET, RaftCore, Role};
use crate::message::MessageBody;

/// The writes a core handed out for persistence and has not yet seen acknowledged durable.
#[derive(Debug, Default)]
pub(super) struct UnsyncedWrites {
    /// The number the next Ready with writes gets.
    next: u64,
    /// Each Ready with writes not yet acknowledged: its number, and the core's clock when it
    /// was handed out. Oldest first (acknowledgments come back in order).
    outstanding: VecDeque<(u64, u64)>,
    /// When the oldest write of the stall being reported was handed out: a stall is logged
    /// once, and its end once.
    stall_logged_from_ms: Option<u64>,
    /// Times this node stepped down as leader because its disk stalled.
    step_downs: u64,
}

impl RaftCore {
    /// A Ready with writes is being handed out: returns its number, for its acknowledgment.
    pub(super) fn writes_handed_out(&mut self) -> u64 {
        let unsynced = &mut self.unsynced;
        let number = unsynced.next;
        unsynced.next += 1;
        unsynced.outstanding.push_back((number, self.now_ms));
        number
    }

    /// The writes of Ready `number`, and of every Ready before it, are durable.
    pub(super) fn writes_synced(&mut self, number: u64) {
        while self.unsynced.outstanding.front().is_some_and(|(oldest, _)| *oldest <= number) {
            self.unsynced.outstanding.pop_front();
        }
        if let Some(from_ms) = self.unsynced.stall_logged_from_ms
            && self.disk_stalled_for_ms().is_none()
        {
            self.unsynced.stall_logged_from_ms = None;
            tracing::info!(target: LOG_TARGET, node = %self.id, "The disk synced again: the stall's first write waited about {} ms", self.now_ms.saturating_sub(from_ms));
        }
    }

    /// Records that the current stall is being logged; returns whether it was not yet.
    fn log_stall_once(&mut self) -> bool {
        let oldest_ms = self.unsynced.outstanding.front().map_or(self.now_ms, |(_, at)| *at);
        self.unsynced.stall_logged_from_ms.replace(oldest_ms).is_none()
    }

    /// The first tick set the clock: writes handed out before it were handed out now (their
    /// times were taken on a clock that had not started).
    pub(super) fn start_stall_clock(&mut self) {
        let now_ms = self.now_ms;
        for (_, handed_at_ms) in &mut self.unsynced.outstanding {
            *handed_at_ms = now_ms;
        }
    }

    /// How long the oldest write this node handed to storage has waited for its sync, once
    /// that is [`Config::max_sync_stall_ms`](crate::Config::max_sync_stall_ms) or more:
    /// the disk is stalled. `None` while storage keeps up (or with the limit at 0).
    pub fn disk_stalled_for_ms(&self) -> Option<u64> {
        let limit = self.config.max_sync_stall_ms;
        if limit == 0 {
            return None;
        }
        let (_, handed_at_ms) = self.unsynced.outstanding.front()?;
        let waited_ms = self.now_ms.saturating_sub(*handed_at_ms);
        (waited_ms >= limit).then_some(waited_ms)
    }

    /// How many times this node stepped down as leader because its disk stalled.
    pub fn disk_stall_step_downs(&self) -> u64 {
        self.unsynced.step_downs
    }

    /// Leader: when its oldest outstanding write reaches the stall limit (it must tick then),
    /// if that is still ahead and another voter could take over.
    pub(super) fn stall_deadline_ms(&self) -> Option<u64> {
        let limit = self.config.max_sync_stall_ms;
        if limit == 0 || !self.configuration.has_other_voters(self.id) {
            return None;
        }
        let (_, handed_at_ms) = self.unsynced.outstanding.front()?;
        Some(handed_at_ms.saturating_add(limit)).filter(|deadline| *deadline > self.now_ms)
    }

    /// Leader, at each tick: steps down if its disk is stalled and another voter could lead.
    pub(super) fn step_down_if_disk_stalled(&mut self) {
        debug_assert_eq!(self.role, Role::Leader);
        let Some(stalled_ms) = self.disk_stalled_for_ms() else { return };
        let limit = self.config.max_sync_stall_ms;
        if !self.configuration.has_other_voters(self.id) {
            if self.log_stall_once() {
                tracing::warn!(target: LOG_TARGET, node = %self.id, "The disk has not synced a write for {stalled_ms} ms (max_sync_stall_ms {limit}); leading on, as no other voter could");
            }
            return;
        }
        self.log_stall_once();
        self.unsynced.step_downs += 1;
        tracing::warn!(target: LOG_TARGET, node = %self.id, "Stepping down: the disk has not synced a write for {stalled_ms} ms (max_sync_stall_ms {limit}), so this leader cannot make its log durable; standing for no election until it does");
        // Hand over to a voter that holds the whole log, so that the cluster does not wait an
        // election timeout for a new leader (as a leader leaving the configuration does).
        let last_index = self.log.last_index();
        let own_id = self.id;
        let successor = self.configuration.voters().iter().copied().find(|voter| {
            *voter != own_id
                && self
                    .progress
                    .get(voter)
                    .is_some_and(|progress| progress.match_index >= last_index)
        });
        if let Some(successor) = successor {
            tracing::info!(target: LOG_TARGET, node = %self.id, "Handing leadership to {successor}");
            self.forfeit_lease();
            self.send(successor, MessageBody::TimeoutNow);
        }
        let term = self.term;
        self.become_follower(term, None);
    }

    /// Whether this node may stand for election now: not while its disk is stalled (when
    /// another voter could lead). Logs the first refusal of a stall.
    pub(super) fn may_stand_for_election(&mut self) -> bool {
        let Some(stalled_ms) = self.disk_stalled_for_ms() else { return true };
        if !self.configuration.has_other_voters(self.id) {
            return true;
        }
        if !self.log_stall_once() {
            tracing::debug!(target: LOG_TARGET, node = %self.id, "Not standing for election: the disk has not synced a write for {stalled_ms} ms");
        } else {
            tracing::warn!(target: LOG_TARGET, node = %self.id, "Not standing for election: the disk has not synced a write for {stalled_ms} ms (max_sync_stall_ms {}), so this node's vote for itself could not become durable", self.config.max_sync_stall_ms);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::{InitialState, ReadyAck};
    use super::*;
    use crate::config::Config;
    use crate::message::{AppendResponse, Entry, EntryPayload, Message};
    use crate::status::Status;
    use crate::types::{LogId, LogIndex, NodeId, Term};

    /// Readys carried out but not synced: their persisted halves and the messages that wait
    /// for them.
    type Held = Vec<(ReadyAck, Vec<Message>)>;

    fn node(id: u64, voters: &[u64], config: Config) -> RaftCore {
        let voters = voters.iter().copied().map(NodeId);
        let mut core = RaftCore::new(NodeId(id), voters, config, InitialState::default(), id)
            .expect("a valid configuration");
        core.tick(0);
        core
    }

    /// Carries out every Ready with a disk that syncs at once; returns what was sent.
    fn sync_all(core: &mut RaftCore) -> Vec<Message> {
        let mut sent = Vec::new();
        while core.has_ready() {
            let ready = core.ready();
            sent.extend(ready.messages);
            sent.extend(ready.persisted_messages);
            core.advance(ready.ack);
        }
        sent
    }

    /// Carries out every Ready with a disk that never completes a sync: the applied halves
    /// are acknowledged, the persisted halves kept in `held`. Returns what was sent.
    fn hold_syncs(core: &mut RaftCore, held: &mut Held) -> Vec<Message> {
        let mut sent = Vec::new();
        while core.has_ready() {
            let ready = core.ready();
            sent.extend(ready.messages);
            let (applied, persisted) = ready.ack.split();
            core.advance(applied);
            held.push((persisted, ready.persisted_messages));
        }
        sent
    }

    /// The disk completes every sync held; returns the messages that waited for them.
    fn release(core: &mut RaftCore, held: &mut Held) -> Vec<Message> {
        let mut sent = Vec::new();
        for (ack, messages) in held.drain(..) {
            core.advance(ack);
            sent.extend(messages);
        }
        sent
    }

    /// Fires the node's election timer and grants every pre-vote and vote it asks for.
    fn elect(core: &mut RaftCore) {
        core.tick(core.next_deadline_ms());
        for _ in 0..2 {
            for request in sync_all(core) {
                let answer = match request.body {
                    MessageBody::PreVote { .. } => MessageBody::PreVoteResponse { granted: true },
                    MessageBody::RequestVote { .. } => {
                        MessageBody::RequestVoteResponse { granted: true }
                    }
                    _ => continue,
                };
                core.step(Message {
                    from: request.to,
                    to: core.id(),
                    term: request.term,
                    body: answer,
                });
            }
            if core.role() == Role::Leader {
                return;
            }
        }
        panic!("{} did not become leader", core.id());
    }

    /// `follower`'s acknowledgment of everything through `match_index`.
    fn accepted(leader: &RaftCore, follower: u64, match_index: u64) -> Message {
        Message {
            from: NodeId(follower),
            to: leader.id(),
            term: leader.term(),
            body: MessageBody::AppendEntriesResponse {
                result: AppendResponse::Accepted { match_index: LogIndex(match_index) },
                round: leader.heartbeat_round,
            },
        }
    }

    /// Followers acknowledge every AppendEntries in `sent` (their disks keep up).
    fn acknowledge(leader: &mut RaftCore, sent: &[Message]) {
        for message in sent {
            if let MessageBody::AppendEntries { prev_log_id, entries, round, .. } = &message.body {
                let match_index = prev_log_id.index.0 + entries.len() as u64;
                let mut answer = accepted(leader, message.to.0, match_index);
                if let MessageBody::AppendEntriesResponse { round: answered, .. } = &mut answer.body
                {
                    *answered = *round;
                }
                leader.step(answer);
            }
        }
    }

    fn kinds(sent: &[Message]) -> Vec<(u64, &'static str)> {
        sent.iter()
            .map(|message| {
                let kind = match message.body {
                    MessageBody::AppendEntries { .. } => "AppendEntries",
                    MessageBody::TimeoutNow => "TimeoutNow",
                    MessageBody::PreVote { .. } => "PreVote",
                    MessageBody::RequestVote { .. } => "RequestVote",
                    _ => "other",
                };
                (message.to.0, kind)
            })
            .collect()
    }

    /// The rule itself: a leader whose oldest write has waited `max_sync_stall_ms` for its
    /// sync steps down in its term (not a moment before), hands leadership to a follower
    /// that holds its whole log, sends no more heartbeats and stands for no election until
    /// the sync completes, though its followers' durable copies committed its entries.
    #[test]
    fn a_leader_whose_oldest_write_waits_max_sync_stall_ms_steps_down_and_hands_over() {
        let limit = 250;
        let mut leader =
            node(1, &[1, 2, 3], Config { max_sync_stall_ms: limit, ..Config::default() });
        elect(&mut leader);
        let (term, elected_at) = (leader.term(), leader.now_ms);
        let elections = leader.elections_started();
        let mut held = Held::new();
        let sent = hold_syncs(&mut leader, &mut held);
        assert_eq!(kinds(&sent), [(2, "AppendEntries"), (3, "AppendEntries")], "the no-op");
        acknowledge(&mut leader, &sent);
        hold_syncs(&mut leader, &mut held);
        assert_eq!(leader.commit_index(), LogIndex(1), "two durable followers commit it");

        leader.tick(elected_at + limit - 1);
        assert_eq!(leader.role(), Role::Leader, "stepped down before the limit");
        assert_eq!(leader.disk_stalled_for_ms(), None);
        let sent = hold_syncs(&mut leader, &mut held);
        assert!(kinds(&sent).contains(&(2, "AppendEntries")), "heartbeats go on until then");
        acknowledge(&mut leader, &sent);
        assert_eq!(leader.next_deadline_ms(), elected_at + limit, "the leader ticks at the limit");

        leader.tick(elected_at + limit);
        assert_eq!(
            (leader.role(), leader.term(), leader.leader_id()),
            (Role::Follower, term, None)
        );
        assert_eq!(leader.disk_stalled_for_ms(), Some(limit));
        assert_eq!(Status::of(&leader).disk_stalled_for_ms, Some(limit));
        assert_eq!(leader.disk_stall_step_downs(), 1);
        let sent = hold_syncs(&mut leader, &mut held);
        assert_eq!(kinds(&sent), [(2, "TimeoutNow")], "handed to the first caught-up voter");

        // Election timeouts pass: no heartbeat, no pre-vote, no election.
        let stalled_until = elected_at + 10 * limit;
        while leader.now_ms < stalled_until {
            leader.tick(leader.next_deadline_ms().min(stalled_until));
            let sent = hold_syncs(&mut leader, &mut held);
            assert!(sent.is_empty(), "a node on a stalled disk sent {:?}", kinds(&sent));
        }
        assert_eq!((leader.role(), leader.term()), (Role::Follower, term));
        assert_eq!(leader.elections_started(), elections);

        // The disk syncs again: the stall is over, and the node stands at its next timeout.
        release(&mut leader, &mut held);
        assert_eq!(leader.disk_stalled_for_ms(), None);
        assert_eq!(Status::of(&leader).disk_stalled_for_ms, None);
        leader.tick(leader.next_deadline_ms());
        let sent = sync_all(&mut leader);
        assert_eq!(kinds(&sent), [(2, "PreVote"), (3, "PreVote")]);
    }

    /// A leader none of whose followers holds its whole log steps down all the same, and
    /// hands leadership to nobody (the followers' election timers will fire).
    #[test]
    fn a_stalled_leader_with_no_caught_up_follower_steps_down_without_handing_over() {
        let mut leader = node(1, &[1, 2, 3], Config::default());
        elect(&mut leader);
        let mut held = Held::new();
        let elected_at = leader.now_ms;
        hold_syncs(&mut leader, &mut held);
        leader.tick(elected_at + Config::default().max_sync_stall_ms);
        assert_eq!(leader.role(), Role::Follower);
        let sent = hold_syncs(&mut leader, &mut held);
        assert!(sent.is_empty(), "sent {:?}", kinds(&sent));
    }

    /// Only writes still waiting for their sync count: a leader whose syncs complete, each
    /// within the limit, leads on however long it runs, and the age of a stall is that of
    /// the oldest write still waiting.
    #[test]
    fn only_writes_still_waiting_for_their_sync_count() {
        let limit = Config::default().max_sync_stall_ms;
        let mut leader = node(1, &[1, 2, 3], Config::default());
        elect(&mut leader);
        let start = leader.now_ms;
        let mut held = Held::new();
        let sent = hold_syncs(&mut leader, &mut held);
        acknowledge(&mut leader, &sent);
        hold_syncs(&mut leader, &mut held);
        // Every 50 ms a proposal; each sync completes 200 ms after its write.
        let mut handed_at: Vec<(u64, Held)> = vec![(start, std::mem::take(&mut held))];
        for step in 1..100 {
            let now = start + step * 50;
            leader.tick(now);
            while handed_at.first().is_some_and(|(at, _)| at + 200 <= now) {
                let (_, mut synced) = handed_at.remove(0);
                release(&mut leader, &mut synced);
            }
            leader.propose(Bytes::from_static(b"x")).expect("still the leader");
            let mut writes = Held::new();
            let sent = hold_syncs(&mut leader, &mut writes);
            acknowledge(&mut leader, &sent);
            hold_syncs(&mut leader, &mut writes);
            handed_at.push((now, writes));
            assert_eq!(leader.role(), Role::Leader, "stepped down at {now}");
            assert_eq!(leader.disk_stalled_for_ms(), None);
        }
        // Now the disk stops: the stall is timed from the oldest write it has not synced.
        let now = leader.now_ms;
        let oldest = handed_at.first().map(|(at, _)| *at).expect("writes wait");
        leader.tick(oldest + limit - 1);
        assert_eq!(leader.role(), Role::Leader);
        leader.tick(oldest + limit);
        assert!(oldest + limit < now + limit, "timed from an older write than the last");
        assert_eq!(leader.disk_stalled_for_ms(), Some(limit));
        assert_eq!(leader.role(), Role::Follower);
    }

    /// A follower whose disk stalls neither stands for election when its timer fires nor
    /// takes the leadership its leader hands it, nor turns a pre-vote it won before the
    /// stall into an election; it reports the stall, and stands again once its disk syncs.
    #[test]
    fn a_node_on_a_stalled_disk_stands_for_no_election() {
        let limit = Config::default().max_sync_stall_ms;
        let mut follower = node(2, &[1, 2, 3], Config::default());
        let append = |term: u64, index: u64| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(term),
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::new(
                    Term(if index > 1 { term } else { 0 }),
                    LogIndex(index - 1),
                ),
                entries: vec![Entry {
                    term: Term(term),
                    index: LogIndex(index),
                    payload: EntryPayload::Blank,
                }],
                leader_commit: LogIndex(0),
                round: crate::types::HeartbeatRound(0),
            },
        };
        follower.step(append(1, 1));
        let mut held = Held::new();
        let sent = hold_syncs(&mut follower, &mut held);
        assert!(sent.is_empty(), "acknowledged before its sync: {:?}", kinds(&sent));
        assert_eq!(
            held.last().map(|(_, waiting)| waiting.len()),
            Some(1),
            "the acknowledgment waits"
        );

        // Its timer fires before the limit: a pre-vote round starts (the disk is not stalled
        // yet); the answers come after the limit, and no election follows.
        let fired_at = follower.next_deadline_ms();
        assert!(fired_at < limit);
        follower.tick(fired_at);
        assert_eq!(kinds(&hold_syncs(&mut follower, &mut held)), [(1, "PreVote"), (3, "PreVote")]);
        follower.tick(limit);
        assert_eq!(follower.disk_stalled_for_ms(), Some(limit));
        follower.step(Message {
            from: NodeId(3),
            to: NodeId(2),
            term: Term(2),
            body: MessageBody::PreVoteResponse { granted: true },
        });
        assert_eq!(
            (follower.term(), follower.role()),
            (Term(1), Role::Follower),
            "stood after the stall"
        );

        // Its timer fires again: no pre-vote.
        follower.tick(follower.next_deadline_ms());
        assert!(hold_syncs(&mut follower, &mut held).is_empty());
        assert_eq!(follower.elections_started(), 0);

        // Its leader hands it leadership: refused while the disk is stalled.
        follower.step(append(1, 2));
        hold_syncs(&mut follower, &mut held);
        let timeout_now = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::TimeoutNow,
        };
        follower.step(timeout_now.clone());
        assert_eq!((follower.term(), follower.role()), (Term(1), Role::Follower));
        assert!(hold_syncs(&mut follower, &mut held).is_empty());

        // Synced: it takes leadership when handed it.
        let acknowledgments = release(&mut follower, &mut held);
        assert_eq!(acknowledgments.len(), 2, "both acknowledgments leave once synced");
        assert_eq!(follower.disk_stalled_for_ms(), None);
        follower.step(timeout_now);
        assert_eq!((follower.term(), follower.role()), (Term(2), Role::Candidate));
    }

    /// A leader with no other voter leads on through a stall (nobody else could lead), and
    /// its next deadline does not fall behind its clock (a runtime would spin).
    #[test]
    fn a_single_voter_leads_on_through_a_stall() {
        let mut leader = node(1, &[1], Config::default());
        elect(&mut leader);
        leader.propose(Bytes::from_static(b"x")).expect("the leader");
        let mut held = Held::new();
        hold_syncs(&mut leader, &mut held);
        assert!(!held.is_empty());
        let stalled_at = leader.now_ms + 10 * Config::default().max_sync_stall_ms;
        leader.tick(stalled_at);
        assert_eq!(leader.role(), Role::Leader);
        assert!(leader.disk_stalled_for_ms().is_some(), "the stall is still reported");
        assert!(leader.next_deadline_ms() > stalled_at, "a deadline in the past");
        assert_eq!(leader.disk_stall_step_downs(), 0);
    }

    /// With `max_sync_stall_ms` at 0 no stall is ever counted.
    #[test]
    fn a_zero_limit_counts_no_stall() {
        let mut leader = node(1, &[1, 2, 3], Config { max_sync_stall_ms: 0, ..Config::default() });
        elect(&mut leader);
        let mut held = Held::new();
        let start = leader.now_ms;
        for step in 1..=200 {
            let sent = hold_syncs(&mut leader, &mut held);
            acknowledge(&mut leader, &sent);
            leader.tick(start + step * 50);
        }
        assert_eq!(leader.role(), Role::Leader);
        assert_eq!(leader.disk_stalled_for_ms(), None);
    }

    /// Writes handed out before the first tick (a log reset a node starts with) are timed
    /// from that tick, not from a clock that had not started.
    #[test]
    fn writes_handed_out_before_the_first_tick_are_timed_from_it() {
        let snapshot = crate::snapshot::Snapshot::of_bytes(
            crate::snapshot::SnapshotMeta {
                last_included: LogId::new(Term(2), LogIndex(7)),
                configuration: super::super::Configuration::of_voters([NodeId(1), NodeId(2)]),
            },
            b"",
        );
        let initial = InitialState {
            hard_state: crate::hard_state::HardState {
                term: Term(2),
                voted_for: None,
                commit_index: LogIndex(7),
            },
            snapshot: Some(snapshot),
            ..InitialState::default()
        };
        let mut core =
            RaftCore::new(NodeId(1), [NodeId(1), NodeId(2)], Config::default(), initial, 1)
                .expect("a valid start");
        let mut held = Held::new();
        hold_syncs(&mut core, &mut held);
        assert_eq!(held.len(), 1, "the log reset");
        let started = 1_000_000;
        core.tick(started);
        assert_eq!(core.disk_stalled_for_ms(), None, "timed from before the clock started");
        core.tick(started + Config::default().max_sync_stall_ms);
        assert_eq!(core.disk_stalled_for_ms(), Some(Config::default().max_sync_stall_ms));
    }
}
