//! Membership changes (Raft thesis chapter 4) and leadership transfer (§3.10).
//!
//! A configuration is an entry in the log, and every node uses the latest configuration in
//! its log from the moment the entry is appended, committed or not (§4.1).
//! [`ConfigurationHistory`] keeps the configuration entries the log holds (and the one its
//! base had), so that a truncated configuration entry is undone and a snapshot records the
//! configuration at its last index; [`RaftCore::refresh_configuration`] is the one place the
//! node's current configuration changes.
//!
//! Changes, each started by the leader, one at a time:
//! - a learner is added or removed with one entry (the voters do not change);
//! - the voters change through joint consensus: the leader appends C_old,new, under which
//!   every decision needs a majority of both the old and the new voters; once that entry
//!   commits, the leader appends C_new by itself ([`RaftCore::advance_membership`]); a leader
//!   that is not among the new voters steps down once C_new commits (§4.2.2);
//! - a learner becomes a voter only once its log is within
//!   [`Config::promotion_max_lag`](crate::Config::promotion_max_lag) of the leader's.
//!
//! A leadership transfer brings the target's log up to date, then sends it `TimeoutNow`; the
//! target stands at once, and voters answer it even inside their leader lease. The leader
//! takes no proposals meanwhile, and gives up after an election timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::configuration::{Configuration, MemberAddress};
use super::progress::{Progress, ReplicationMode};
use super::{LOG_TARGET, RaftCore, Role};
use crate::config::MAX_MEMBERS;
use crate::error::MembershipError;
use crate::message::{Entry, EntryPayload, MessageBody};
use crate::types::{LogIndex, NodeId};

/// The configuration entries of a node's log, by index, with the configuration in force at
/// the log's base. Never empty: its first key is at or below the log's base.
#[derive(Clone, Debug)]
pub(super) struct ConfigurationHistory {
    by_index: BTreeMap<LogIndex, Configuration>,
}

impl ConfigurationHistory {
    /// The history of a log that continues after `base_index` under `base`, holding
    /// `entries`.
    pub(super) fn new(base_index: LogIndex, base: Configuration, entries: &[Entry]) -> Self {
        let mut history = ConfigurationHistory { by_index: BTreeMap::from([(base_index, base)]) };
        for entry in entries {
            history.on_append(entry);
        }
        history
    }

    /// The latest configuration and the index of the entry that set it (the base index when
    /// the log holds none).
    pub(super) fn latest(&self) -> (LogIndex, &Configuration) {
        let (index, configuration) = self
            .by_index
            .last_key_value()
            .expect("the history always holds the base configuration");
        (*index, configuration)
    }

    /// The configuration in force at `index` (the latest entry at or before it).
    pub(super) fn at(&self, index: LogIndex) -> &Configuration {
        self.by_index
            .range(..=index)
            .next_back()
            .or_else(|| self.by_index.first_key_value())
            .map(|(_, configuration)| configuration)
            .expect("the history always holds the base configuration")
    }

    /// Records `entry`, just appended to the log. Returns whether it was a configuration.
    pub(super) fn on_append(&mut self, entry: &Entry) -> bool {
        if let EntryPayload::Configuration(configuration) = &entry.payload {
            self.by_index.insert(entry.index, configuration.clone());
            return true;
        }
        false
    }

    /// Forgets the configuration entries at `index` and after (the log dropped them). The
    /// base configuration stays: callers never truncate at or below the base. Returns whether
    /// any was dropped.
    pub(super) fn truncate_from(&mut self, index: LogIndex) -> bool {
        let first = *self.by_index.first_key_value().expect("never empty").0;
        !self.by_index.split_off(&index.max(first.next())).is_empty()
    }

    /// The log was compacted through `index`: the configuration in force there becomes the
    /// base.
    pub(super) fn compact_through(&mut self, index: LogIndex) {
        let base = self.at(index).clone();
        let rest = self.by_index.split_off(&index.next());
        self.by_index = rest;
        self.by_index.insert(index, base);
    }

    /// Fills in missing member addresses from `known` in every configuration.
    fn fill_in_addresses(&mut self, known: &BTreeMap<NodeId, MemberAddress>) {
        for configuration in self.by_index.values_mut() {
            *configuration = configuration.with_missing_addresses(known);
        }
    }

    /// The log was emptied to continue after `index` under `base` (a received snapshot).
    pub(super) fn reset_to(&mut self, index: LogIndex, base: Configuration) {
        self.by_index = BTreeMap::from([(index, base)]);
    }
}

/// A leadership transfer under way on a leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LeadershipTransfer {
    /// The voter leadership goes to.
    pub(super) target: NodeId,
    /// When the leader gives up and takes proposals again.
    pub(super) deadline_ms: u64,
    /// Whether `TimeoutNow` has been sent.
    pub(super) timeout_now_sent: bool,
}

impl RaftCore {
    /// The configuration the node uses now: the latest in its log.
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// The same, shared (cloning it is cheap: for status reports).
    pub fn shared_configuration(&self) -> Arc<Configuration> {
        Arc::clone(&self.configuration)
    }

    /// The index of the entry that set the current configuration (the log's base when no
    /// entry in the log did).
    pub fn configuration_index(&self) -> LogIndex {
        self.configurations.latest().0
    }

    /// Whether a membership change is under way: the latest configuration is not committed
    /// yet, or it is joint (C_new still to come).
    pub fn membership_change_in_progress(&self) -> bool {
        self.configuration_index() > self.commit_index || self.configuration.is_joint()
    }

    /// The leadership transfer under way, if any: its target.
    pub fn leadership_transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|transfer| transfer.target)
    }

    /// The one place the current configuration changes: re-reads it from the history after
    /// the log changed, and brings a leader's replication progress in line with it (new
    /// members are probed from the last entry; removed ones are forgotten).
    pub(super) fn refresh_configuration(&mut self) {
        let latest = self.configurations.latest().1;
        if *latest == *self.configuration {
            return;
        }
        self.configuration = Arc::new(latest.clone());
        tracing::info!(target: LOG_TARGET, node = %self.id, "Configuration is now {}", self.configuration);
        if self.role == Role::Leader {
            // From the last entry, which (for a change this leader made) is the configuration
            // entry that added them: they receive it at once.
            let next_index = self.log.last_index().max(self.log.base().index.next());
            let members: Vec<NodeId> = self.peers().collect();
            self.progress.retain(|id, _| members.contains(id));
            for member in members {
                self.progress.entry(member).or_insert_with(|| Progress::new(next_index));
            }
            if self.transfer.is_some_and(|transfer| !self.configuration.is_voter(transfer.target)) {
                self.transfer = None;
            }
            self.recount_reads_for_new_configuration();
        }
    }

    /// Fills in the addresses in `known` for members of every configuration this node holds
    /// that have none (the addresses a node was started with: they are not in the members
    /// record).
    pub(crate) fn learn_addresses(&mut self, known: &BTreeMap<NodeId, MemberAddress>) {
        if known.values().all(|address| *address == MemberAddress::default()) {
            return;
        }
        self.configurations.fill_in_addresses(known);
        self.refresh_configuration();
    }

    /// Leader: appends `configuration` as an entry, and uses it at once.
    fn append_configuration(&mut self, configuration: Configuration) -> LogIndex {
        tracing::info!(target: LOG_TARGET, node = %self.id, "Proposing configuration {configuration}");
        self.append_own_entry(EntryPayload::Configuration(configuration))
    }

    /// The checks every change starts with: this node leads, and no other change (or
    /// transfer) runs.
    fn check_change_allowed(&self) -> Result<(), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader { leader_hint: self.leader_id });
        }
        if self.membership_change_in_progress() || self.transfer.is_some() {
            return Err(MembershipError::ChangeInProgress);
        }
        if self.no_entry_committed_this_term() {
            // Until an entry of its term commits, a new leader may not know the latest
            // committed configuration (the thesis's fix to single-server changes, §4.1).
            return Err(MembershipError::ChangeInProgress);
        }
        Ok(())
    }

    /// Whether the commit index has not reached an entry of the current term yet.
    fn no_entry_committed_this_term(&self) -> bool {
        self.log.term_at(self.commit_index) != Some(self.term)
    }

    /// Leader: adds `id` as a learner reachable at `address` (it receives the log and
    /// snapshots but does not vote). An existing learner's address is replaced. Returns the
    /// index of the configuration entry.
    pub fn add_learner(
        &mut self,
        id: NodeId,
        address: MemberAddress,
    ) -> Result<LogIndex, MembershipError> {
        self.check_change_allowed()?;
        if self.configuration.is_voter(id) {
            return Err(invalid(format!("{id} is already a voter")));
        }
        check_address(&address)?;
        if let Some((other, _)) = self.configuration.addresses().iter().find(|(other, known)| {
            **other != id
                && ((!address.raft_addr.is_empty() && known.raft_addr == address.raft_addr)
                    || (!address.client_addr.is_empty()
                        && known.client_addr == address.client_addr))
        }) {
            return Err(invalid(format!("an address of {id} is already used by {other}")));
        }
        if self.configuration.members().len() >= MAX_MEMBERS && !self.configuration.is_member(id) {
            return Err(invalid(format!("a cluster has at most {MAX_MEMBERS} members")));
        }
        let configuration = self.configuration.with_learner(id, address);
        Ok(self.append_configuration(configuration))
    }

    /// Leader: changes the voters to `voters` through joint consensus. Every new voter must
    /// be a learner that holds the current configuration and whose log is within
    /// `promotion_max_lag` of the leader's; learners not
    /// named stay learners. Returns the index of the joint configuration entry; the change is
    /// complete once the configuration is no longer joint and is committed.
    pub fn change_voters(
        &mut self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<LogIndex, MembershipError> {
        self.check_change_allowed()?;
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        if voters.is_empty() {
            return Err(invalid(String::from("a configuration needs at least one voter")));
        }
        if voters.len() > MAX_MEMBERS {
            return Err(invalid(format!("a cluster has at most {MAX_MEMBERS} voters")));
        }
        if voters.iter().eq(self.configuration.voters().iter()) {
            return Err(invalid(String::from("the voters are already those")));
        }
        let last_index = self.log.last_index();
        for &id in voters.iter().filter(|id| !self.configuration.is_voter(**id)) {
            if !self.configuration.learners().contains(&id) {
                return Err(invalid(format!("{id} is not a member; add it as a learner first")));
            }
            let match_index = self.progress.get(&id).map_or(LogIndex(0), |p| p.match_index);
            // It must hold the current configuration (the one naming it a learner), so that
            // it knows it votes once promoted, and be within the allowed lag.
            if match_index < self.configuration_index()
                || match_index.0.saturating_add(self.config.promotion_max_lag) < last_index.0
            {
                return Err(MembershipError::NotCaughtUp {
                    id,
                    match_index,
                    leader_last_index: last_index,
                });
            }
        }
        let joint = self.configuration.enter_joint(voters);
        #[cfg(feature = "sim")]
        if self.planted_change_without_joint {
            // Planted bug: straight to C_new.
            return Ok(self.append_configuration(joint.leave_joint()));
        }
        Ok(self.append_configuration(joint))
    }

    /// Leader: removes member `id`: a learner with one entry, a voter through joint
    /// consensus (the leader itself too: it steps down once the change commits). Returns the
    /// index of the first configuration entry.
    pub fn remove_member(&mut self, id: NodeId) -> Result<LogIndex, MembershipError> {
        self.check_change_allowed()?;
        if self.configuration.learners().contains(&id) {
            let configuration = self.configuration.without_learner(id);
            return Ok(self.append_configuration(configuration));
        }
        if !self.configuration.is_voter(id) {
            return Err(invalid(format!("{id} is not a member")));
        }
        let voters: Vec<NodeId> =
            self.configuration.voters().iter().copied().filter(|voter| *voter != id).collect();
        if voters.is_empty() {
            return Err(invalid(format!("{id} is the last voter")));
        }
        let joint = self.configuration.enter_joint(voters);
        Ok(self.append_configuration(joint))
    }

    /// Leader, after its commit index moved: leaves a committed joint configuration (appends
    /// C_new), and steps down once a committed configuration no longer counts it as a voter.
    pub(super) fn advance_membership(&mut self) {
        if self.role != Role::Leader || self.configuration_index() > self.commit_index {
            return;
        }
        if self.configuration.is_joint() {
            let simple = self.configuration.leave_joint();
            self.append_configuration(simple);
        } else if !self.configuration.is_voter(self.id) {
            tracing::info!(target: LOG_TARGET, node = %self.id, "Stepping down: the committed configuration {} does not include this node as a voter", self.configuration);
            // Hand over to a voter that holds the whole log, so that the cluster does not
            // wait an election timeout for a new leader.
            let last_index = self.log.last_index();
            let successor = self.configuration.voters().iter().copied().find(|voter| {
                self.progress.get(voter).is_some_and(|progress| progress.match_index >= last_index)
            });
            if let Some(successor) = successor {
                tracing::info!(target: LOG_TARGET, node = %self.id, "Handing leadership to {successor}");
                self.forfeit_lease();
                self.send(successor, MessageBody::TimeoutNow);
            }
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// Leader: hands leadership to the voter `target` (§3.10): brings its log up to date,
    /// then tells it to stand at once. Proposals are refused until the transfer ends (the
    /// target leads, or an election timeout passes).
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader { leader_hint: self.leader_id });
        }
        if target == self.id {
            return Ok(());
        }
        if self.transfer.is_some() {
            return Err(MembershipError::ChangeInProgress);
        }
        if !self.configuration.is_voter(target) {
            return Err(invalid(format!("{target} is not a voter")));
        }
        tracing::info!(target: LOG_TARGET, node = %self.id, "Transferring leadership to {target}");
        self.transfer = Some(LeadershipTransfer {
            target,
            deadline_ms: self.now_ms + self.config.election_timeout_max_ms,
            timeout_now_sent: false,
        });
        self.maybe_send_timeout_now();
        if let Some(progress) = self.progress.get_mut(&target)
            && self.transfer.is_some_and(|transfer| !transfer.timeout_now_sent)
            && progress.mode != ReplicationMode::Snapshot
        {
            // Catch the target up now rather than wait for lost appends to time out: resend
            // everything after what it is known to hold.
            let next_index = progress.match_index.next();
            progress.probe_from(next_index);
            self.replicate_to(target);
        }
        Ok(())
    }

    /// Leader: sends `TimeoutNow` to the transfer's target once its log matches the leader's.
    pub(super) fn maybe_send_timeout_now(&mut self) {
        let Some(transfer) = self.transfer else { return };
        if transfer.timeout_now_sent {
            return;
        }
        let caught_up = self
            .progress
            .get(&transfer.target)
            .is_some_and(|progress| progress.match_index >= self.log.last_index());
        if caught_up {
            tracing::info!(target: LOG_TARGET, node = %self.id, "{} has caught up; sending TimeoutNow", transfer.target);
            self.forfeit_lease();
            self.send(transfer.target, MessageBody::TimeoutNow);
            self.transfer = Some(LeadershipTransfer { timeout_now_sent: true, ..transfer });
        }
    }

    /// Leader, at each tick: gives up a transfer that has not completed in an election
    /// timeout.
    pub(super) fn expire_leadership_transfer(&mut self) {
        if self.transfer.is_some_and(|transfer| self.now_ms >= transfer.deadline_ms) {
            tracing::warn!(target: LOG_TARGET, node = %self.id, "Leadership transfer to {} timed out; taking proposals again", self.leadership_transfer_target().map_or(0, |id| id.0));
            self.transfer = None;
        }
    }

    /// Follower: the leader of the current term hands leadership to this node. Only the
    /// leader it follows may: anyone else's TimeoutNow is ignored.
    pub(super) fn handle_timeout_now(&mut self, leader: NodeId) {
        if self.role == Role::Leader
            || self.leader_id != Some(leader)
            || !self.configuration.is_voter(self.id)
        {
            tracing::debug!(target: LOG_TARGET, node = %self.id, "Ignoring TimeoutNow from {leader}");
            return;
        }
        tracing::info!(target: LOG_TARGET, node = %self.id, "{leader} hands leadership over; standing for election now");
        self.start_election_for_transfer();
    }
}

/// A [`MembershipError::Invalid`].
fn invalid(reason: String) -> MembershipError {
    MembershipError::Invalid { reason }
}

/// Checks an address's lengths against what the encoding carries.
fn check_address(address: &MemberAddress) -> Result<(), MembershipError> {
    let limit = super::MAX_ADDRESS_BYTES;
    if address.raft_addr.len() > limit || address.client_addr.len() > limit {
        return Err(invalid(format!("an address is longer than {limit} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::InitialState;
    use super::*;
    use crate::config::Config;

    fn address(raft: &str, client: &str) -> MemberAddress {
        MemberAddress { raft_addr: raft.into(), client_addr: client.into() }
    }

    /// The single voter of a one-node cluster, leading with its no-op committed.
    fn single_leader() -> RaftCore {
        let mut core =
            RaftCore::new(NodeId(1), [NodeId(1)], Config::default(), InitialState::default(), 1)
                .expect("a valid start");
        core.tick(0);
        core.tick(10_000);
        assert_eq!(core.role(), Role::Leader);
        settle(&mut core);
        assert_eq!(core.commit_index(), core.last_log_id().index);
        core
    }

    /// Carries out every Ready (storage and state machine being no-ops).
    fn settle(core: &mut RaftCore) {
        while core.has_ready() {
            let ready = core.ready();
            core.advance(ready.ack);
        }
    }

    #[test]
    fn an_address_in_use_by_another_member_is_refused_and_empty_ones_are_not() {
        let mut core = single_leader();
        core.add_learner(NodeId(2), address("10.0.0.2:7000", "10.0.0.2:8000")).expect("new");
        settle(&mut core);
        let same_raft = core.add_learner(NodeId(3), address("10.0.0.2:7000", "10.0.0.3:8000"));
        assert!(matches!(same_raft, Err(MembershipError::Invalid { .. })), "{same_raft:?}");
        let same_client = core.add_learner(NodeId(3), address("10.0.0.3:7000", "10.0.0.2:8000"));
        assert!(matches!(same_client, Err(MembershipError::Invalid { .. })), "{same_client:?}");
        // Node 2 may keep its own addresses; empty addresses are shared by no one.
        core.add_learner(NodeId(2), address("10.0.0.2:7000", "10.0.0.2:8000")).expect("same");
        settle(&mut core);
        core.add_learner(NodeId(3), address("", "")).expect("empty addresses");
        settle(&mut core);
        core.add_learner(NodeId(4), address("", "")).expect("empty addresses again");
        settle(&mut core);
        assert_eq!(core.configuration().learners().len(), 3);
        let voter = core.add_learner(NodeId(1), address("", ""));
        assert!(matches!(voter, Err(MembershipError::Invalid { .. })), "{voter:?}");
    }

    #[test]
    fn addresses_longer_than_the_encoding_carries_are_refused() {
        let mut core = single_leader();
        let limit = super::super::MAX_ADDRESS_BYTES;
        let at_limit = "a".repeat(limit);
        core.add_learner(NodeId(2), address(&at_limit, &at_limit)).expect("at the limit");
        settle(&mut core);
        for long in [address(&"a".repeat(limit + 1), ""), address("", &"b".repeat(limit + 1))] {
            let refused = core.add_learner(NodeId(3), long);
            assert!(matches!(refused, Err(MembershipError::Invalid { .. })), "{refused:?}");
        }
    }

    #[test]
    fn a_voter_set_must_be_non_empty_new_and_within_the_limit() {
        let mut core = single_leader();
        let empty = core.change_voters([]);
        assert!(matches!(empty, Err(MembershipError::Invalid { .. })), "{empty:?}");
        let same = core.change_voters([NodeId(1)]);
        assert!(matches!(same, Err(MembershipError::Invalid { .. })), "{same:?}");
        let too_many = core.change_voters((1..=MAX_MEMBERS as u64 + 1).map(NodeId));
        assert!(
            matches!(&too_many, Err(MembershipError::Invalid { reason }) if reason.contains("at most")),
            "{too_many:?}"
        );
        let stranger = core.change_voters([NodeId(1), NodeId(9)]);
        assert!(
            matches!(&stranger, Err(MembershipError::Invalid { reason }) if reason.contains("learner first")),
            "{stranger:?}"
        );
    }

    #[test]
    fn a_learner_behind_the_lag_or_without_the_configuration_is_not_promoted() {
        let mut core = single_leader();
        core.add_learner(NodeId(2), address("", "")).expect("new");
        settle(&mut core);
        let index = core.configuration_index();
        // Node 2 holds nothing yet: it lacks the configuration that makes it a learner.
        let refused = core.change_voters([NodeId(1), NodeId(2)]);
        assert!(matches!(refused, Err(MembershipError::NotCaughtUp { id: NodeId(2), .. })));
        // It holds the configuration but is beyond the lag.
        core.config.promotion_max_lag = 0;
        for _ in 0..3 {
            core.propose(bytes::Bytes::from_static(b"x")).expect("it leads");
        }
        settle(&mut core);
        if let Some(progress) = core.progress.get_mut(&NodeId(2)) {
            progress.match_index = index;
            progress.next_index = index.next();
        }
        let behind = core.change_voters([NodeId(1), NodeId(2)]);
        assert!(matches!(behind, Err(MembershipError::NotCaughtUp { id: NodeId(2), .. })));
        // Within the lag, it is.
        core.config.promotion_max_lag = 3;
        core.change_voters([NodeId(1), NodeId(2)]).expect("within the lag");
        assert!(core.configuration().is_joint());
    }

    #[test]
    fn a_cluster_holds_at_most_max_members() {
        let mut core = single_leader();
        for id in 2..=MAX_MEMBERS as u64 {
            core.add_learner(NodeId(id), address("", "")).expect("below the limit");
            settle(&mut core);
        }
        assert_eq!(core.configuration().members().len(), MAX_MEMBERS);
        let one_more = core.add_learner(NodeId(MAX_MEMBERS as u64 + 1), address("", ""));
        assert!(matches!(one_more, Err(MembershipError::Invalid { .. })), "{one_more:?}");
        // A member already in may change its address at the limit.
        core.add_learner(NodeId(2), address("10.0.0.2:7000", "")).expect("an existing member");
        settle(&mut core);
        // Exactly the limit of voters passes the size check (and stops at the catch-up one).
        let all = core.change_voters((1..=MAX_MEMBERS as u64).map(NodeId));
        assert!(matches!(all, Err(MembershipError::NotCaughtUp { .. })), "{all:?}");
    }

    #[test]
    fn the_history_answers_the_configuration_at_any_index_through_compaction_and_reset() {
        let one = Configuration::of_voters([NodeId(1)]);
        let two = Configuration::of_voters([NodeId(1), NodeId(2)]);
        let three = Configuration::of_voters([NodeId(1), NodeId(2), NodeId(3)]);
        let entry = |index: u64, configuration: &Configuration| Entry {
            term: crate::types::Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Configuration(configuration.clone()),
        };
        let mut history = ConfigurationHistory::new(LogIndex(0), one.clone(), &[]);
        history.on_append(&entry(3, &two));
        history.on_append(&entry(6, &three));
        assert_eq!(history.at(LogIndex(2)), &one);
        assert_eq!(history.at(LogIndex(3)), &two);
        assert_eq!(history.at(LogIndex(5)), &two);
        assert_eq!(history.latest(), (LogIndex(6), &three));
        history.truncate_from(LogIndex(6));
        assert_eq!(history.latest(), (LogIndex(3), &two));
        history.compact_through(LogIndex(4));
        assert_eq!(history.latest(), (LogIndex(4), &two), "the base moved to the compaction");
        history.truncate_from(LogIndex(1));
        assert_eq!(history.latest(), (LogIndex(4), &two), "the base is never truncated");
        history.reset_to(LogIndex(9), three.clone());
        assert_eq!(history.latest(), (LogIndex(9), &three));
        assert_eq!(history.at(LogIndex(20)), &three);
    }

    #[test]
    fn addresses_given_at_start_fill_in_those_the_configuration_lacks() {
        let mut core = single_leader();
        let mut known = BTreeMap::new();
        known.insert(NodeId(1), MemberAddress::default());
        core.learn_addresses(&known);
        assert_eq!(core.configuration().address(NodeId(1)), None, "nothing to learn");
        known.insert(NodeId(1), address("10.0.0.1:7000", "10.0.0.1:8000"));
        core.learn_addresses(&known);
        assert_eq!(
            core.configuration().address(NodeId(1)),
            Some(&address("10.0.0.1:7000", "10.0.0.1:8000"))
        );
        assert_eq!(
            core.shared_configuration().address(NodeId(1)),
            core.configuration().address(NodeId(1))
        );
    }

    #[test]
    fn a_transfer_to_a_node_that_stops_voting_is_given_up() {
        // Three voters; a transfer to node 3 starts while node 3 is being removed.
        let config = Config { pre_vote: false, ..Config::default() };
        let mut core = RaftCore::new(
            NodeId(1),
            [NodeId(1), NodeId(2), NodeId(3)],
            config,
            InitialState::default(),
            1,
        )
        .expect("a valid start");
        core.tick(0);
        core.tick(10_000);
        for voter in [NodeId(2), NodeId(3)] {
            core.step(crate::message::Message {
                from: voter,
                to: NodeId(1),
                term: core.term(),
                body: MessageBody::RequestVoteResponse { granted: true },
            });
        }
        settle(&mut core);
        assert_eq!(core.role(), Role::Leader);
        let accept = |core: &mut RaftCore, from: u64| {
            let match_index = core.last_log_id().index;
            core.step(crate::message::Message {
                from: NodeId(from),
                to: NodeId(1),
                term: core.term(),
                body: MessageBody::AppendEntriesResponse {
                    result: crate::message::AppendResponse::Accepted { match_index },
                    round: crate::types::HeartbeatRound(0),
                },
            });
            settle(core);
        };
        accept(&mut core, 2);
        core.remove_member(NodeId(3)).expect("no change runs");
        settle(&mut core);
        core.transfer_leadership(NodeId(3)).expect("node 3 still votes (outgoing half)");
        assert_eq!(core.leadership_transfer_target(), Some(NodeId(3)));
        // Node 2 acknowledges C_old,new: it commits, the leader appends C_new without node 3.
        accept(&mut core, 2);
        assert!(!core.configuration().is_voter(NodeId(3)));
        assert_eq!(core.leadership_transfer_target(), None, "node 3 no longer votes");
    }
}
