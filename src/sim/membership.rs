//! Random membership changes for the simulator: [`MembershipPlanner`] decides, one change at
//! a time, what an operator asks the leader to do, and the world (`world.rs`) carries it out
//! under every other fault.
//!
//! A *plan* is a target configuration (voters and learners) reached through the leader's
//! membership calls, one at a time: add the nodes it needs as learners (a new node is started
//! on an empty disk with no members first), wait until each learner has caught up, change the
//! voters (joint consensus), remove what must go. The planner reads the current leader's
//! configuration at every round and asks for the next step, so a plan survives leader
//! changes, crashes and refusals (`ChangeInProgress`, `NotCaughtUp`, which are normal); a plan
//! that does not finish in time is abandoned. The kinds of plan:
//!
//! - add a voter (a new node, or a removed one rejoining): learner, then voter;
//! - add a learner (it stays one; a cluster holds up to three);
//! - promote a learner; remove a voter (the leader too) or a learner;
//! - replace a voter: the new node is added as a learner, then one joint change swaps them;
//! - replace a majority of the voters at once, through one joint change (two configurations
//!   whose majorities are disjoint: only the joint phase keeps them from deciding apart);
//! - transfer leadership to another voter.
//!
//! Clusters stay within 3 to 7 voters and 7 nodes in all.

use std::collections::BTreeSet;
use std::fmt;

use super::rng::SimRng;
use crate::core::Configuration;
use crate::types::{LogIndex, NodeId};

/// Most nodes a membership seed creates (ids 1 to 7).
pub(crate) const MAX_SIM_NODES: u64 = 7;
/// Fewest voters a plan leaves.
const MIN_VOTERS: usize = 3;
/// Most voters a plan makes.
const MAX_VOTERS: usize = 7;
/// Most learners a plan makes.
const MAX_LEARNERS: usize = 3;
/// How long a plan may take before it is abandoned (virtual milliseconds).
const PLAN_DEADLINE_MS: u64 = 4_000;

/// What a membership seed drew.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MembershipVariation {
    /// Voters the cluster starts with.
    pub(crate) initial_nodes: usize,
    /// [`Config::promotion_max_lag`](crate::Config::promotion_max_lag) for every node.
    pub(crate) promotion_max_lag: u64,
    /// Shortest and longest pause between two plans.
    pub(crate) idle_ms: (u64, u64),
    /// Which changes the seed favours.
    pub(crate) aim: Aim,
}

/// Which changes a membership seed favours: every kind, or the ones where a broken rule
/// shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aim {
    /// Every kind of plan.
    Balanced,
    /// Three voters and as many learners as fit, kept as learners: where a leader that
    /// counted learners towards its majority would commit with its learners alone.
    ManyLearners,
    /// Voters replaced, one or a majority at once: where the old and the new voters have
    /// disjoint majorities, so that only the joint phase keeps them from deciding apart.
    Replacements,
}

impl MembershipVariation {
    /// Draws a variation from the membership stream `rng`.
    pub(crate) fn draw(rng: &mut SimRng) -> MembershipVariation {
        let initial_nodes = rng.between(3, 5) as usize;
        let promotion_max_lag = [5, 50, 1_000][rng.below(3) as usize];
        let idle_ms = [(50, 300), (200, 1_000), (500, 2_000)][rng.below(3) as usize];
        let aim =
            [Aim::Balanced, Aim::Balanced, Aim::Balanced, Aim::ManyLearners, Aim::Replacements]
                [rng.below(5) as usize];
        MembershipVariation {
            initial_nodes: if aim == Aim::ManyLearners { 3 } else { initial_nodes },
            promotion_max_lag,
            idle_ms,
            aim,
        }
    }
}

/// What membership changes a run made and how the leaders answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MembershipCounts {
    /// Plans begun (each a target configuration or a transfer).
    pub plans: u64,
    /// Plans that reached their target.
    pub completed: u64,
    /// Plans abandoned after their deadline.
    pub abandoned: u64,
    /// Nodes started on an empty disk to join.
    pub nodes_started: u64,
    /// Learners added (configuration entries appended by `add_learner`).
    pub learners_added: u64,
    /// Joint changes of the voters begun (`change_voters`).
    pub voter_changes: u64,
    /// Members removed (`remove_member`), a leader removing itself included.
    pub removals: u64,
    /// Leadership transfers begun.
    pub transfers: u64,
    /// Changes refused because another was under way (normal).
    pub refused_in_progress: u64,
    /// Promotions refused because the learner had not caught up (normal).
    pub refused_not_caught_up: u64,
    /// Changes refused as invalid (the simulator asked for something the configuration
    /// does not allow: none are expected).
    pub refused_invalid: u64,
    /// Elections started by nodes after a committed configuration removed them (a stale
    /// pre-vote grant can complete a round; they must neither lead nor depose a leader).
    pub removed_elections: u64,
}

impl MembershipCounts {
    /// Adds another run's counts to these.
    pub fn add(&mut self, other: &MembershipCounts) {
        self.plans += other.plans;
        self.completed += other.completed;
        self.abandoned += other.abandoned;
        self.nodes_started += other.nodes_started;
        self.learners_added += other.learners_added;
        self.voter_changes += other.voter_changes;
        self.removals += other.removals;
        self.transfers += other.transfers;
        self.refused_in_progress += other.refused_in_progress;
        self.refused_not_caught_up += other.refused_not_caught_up;
        self.refused_invalid += other.refused_invalid;
        self.removed_elections += other.removed_elections;
    }
}

impl fmt::Display for MembershipCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} plans ({} completed, {} abandoned), {} nodes started, {} learners added, {} voter changes, {} removals, {} transfers, refused: {} in progress, {} not caught up, {} invalid; {} elections by removed nodes",
            self.plans,
            self.completed,
            self.abandoned,
            self.nodes_started,
            self.learners_added,
            self.voter_changes,
            self.removals,
            self.transfers,
            self.refused_in_progress,
            self.refused_not_caught_up,
            self.refused_invalid,
            self.removed_elections
        )
    }
}

/// The kinds of plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PlanKind {
    AddVoter,
    AddLearner,
    PromoteLearner,
    RemoveVoter,
    RemoveLearner,
    ReplaceVoter,
    ReplaceMajority,
    TransferLeadership,
}

/// A plan under way: the configuration it aims at (or the transfer's target).
#[derive(Clone, Debug)]
struct Plan {
    kind: PlanKind,
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    /// New nodes still to start before the leader is asked anything.
    to_start: Vec<NodeId>,
    /// The transfer's target.
    transfer_to: Option<NodeId>,
    deadline_ms: u64,
}

impl Plan {
    /// The next new node to start, in id order.
    fn next_to_start(&mut self) -> Option<NodeId> {
        (!self.to_start.is_empty()).then(|| self.to_start.remove(0))
    }
}

/// The current leader as the planner sees it.
#[derive(Debug)]
pub(crate) struct LeaderView {
    /// The leader.
    pub(crate) leader: NodeId,
    /// Its configuration (the latest in its log).
    pub(crate) configuration: Configuration,
    /// Whether a change or a transfer is under way there.
    pub(crate) busy: bool,
    /// Its last log index.
    pub(crate) last_index: LogIndex,
    /// The index of the entry that set its configuration.
    pub(crate) configuration_index: LogIndex,
    /// Each follower's match index.
    pub(crate) match_indexes: Vec<(NodeId, LogIndex)>,
}

/// One step of a plan for the world to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing now.
    Wait,
    /// Start node `id` on an empty disk with no members (it waits to be added).
    StartNode(NodeId),
    /// Ask the leader to add a learner.
    AddLearner(NodeId),
    /// Ask the leader to change the voters to these (joint consensus).
    ChangeVoters(Vec<NodeId>),
    /// Ask the leader to remove a member.
    RemoveMember(NodeId),
    /// Ask the leader to hand leadership over.
    Transfer(NodeId),
    /// Ask the leader for another change while one is under way (it must refuse).
    ConcurrentChange(NodeId),
}

/// Decides the membership changes of a seed: see the [module documentation](self).
#[derive(Debug)]
pub(crate) struct MembershipPlanner {
    /// The membership stream: apart from the world's, so that seeds without membership
    /// changes draw exactly what they drew before this existed.
    rng: SimRng,
    plan: Option<Plan>,
    /// The next id a new node gets, while at most [`MAX_SIM_NODES`].
    next_id: u64,
    promotion_max_lag: u64,
    aim: Aim,
    pub(crate) counts: MembershipCounts,
}

impl MembershipPlanner {
    /// A planner for a cluster of `initial_nodes` voters (ids 1 to `initial_nodes`).
    pub(crate) fn new(rng: SimRng, initial_nodes: usize, promotion_max_lag: u64, aim: Aim) -> Self {
        MembershipPlanner {
            rng,
            plan: None,
            next_id: initial_nodes as u64 + 1,
            promotion_max_lag,
            aim,
            counts: MembershipCounts::default(),
        }
    }

    /// Whether a plan is under way.
    pub(crate) fn busy(&self) -> bool {
        self.plan.is_some()
    }

    /// The plan under way, for the trace: its kind and target.
    pub(crate) fn describe_plan(&self) -> Option<String> {
        self.plan.as_ref().map(|plan| match plan.transfer_to {
            Some(target) => format!("{:?} to {target}", plan.kind),
            None => {
                format!("{:?}: voters {:?} learners {:?}", plan.kind, plan.voters, plan.learners)
            }
        })
    }

    /// The membership stream, for the world's own membership choices (pauses between plans).
    pub(crate) fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Drops the plan under way (the workload is over).
    pub(crate) fn stop(&mut self) {
        self.plan = None;
    }

    /// The next step at `now_ms`, given the leader (if any) and the nodes that are not
    /// members but may be added (`spare`: started and still waiting to be added, or removed
    /// and running, which may rejoin with what their disk holds).
    /// Begins a plan when none is under way and `may_begin`.
    pub(crate) fn next_action(
        &mut self,
        now_ms: u64,
        view: Option<&LeaderView>,
        spare: &[NodeId],
        may_begin: bool,
    ) -> Action {
        if let Some(id) = self.plan.as_mut().and_then(Plan::next_to_start) {
            return Action::StartNode(id);
        }
        let Some(view) = view else { return Action::Wait };
        let Some(plan) = self.plan.as_ref() else {
            if may_begin {
                self.begin(now_ms, view, spare);
                if let Some(id) = self.plan.as_mut().and_then(Plan::next_to_start) {
                    return Action::StartNode(id);
                }
                return self.step(view);
            }
            return Action::Wait;
        };
        if now_ms >= plan.deadline_ms {
            self.counts.abandoned += 1;
            self.plan = None;
            return Action::Wait;
        }
        self.step(view)
    }

    /// The next call of the plan under way, from the leader's configuration.
    fn step(&mut self, view: &LeaderView) -> Action {
        let Some(plan) = self.plan.as_ref() else { return Action::Wait };
        let configuration = &view.configuration;
        if view.busy {
            // Now and then, ask for another change anyway: the leader must refuse it.
            if self.rng.chance(0.05)
                && let Some(id) = configuration.learners().iter().next().copied()
            {
                return Action::ConcurrentChange(id);
            }
            return Action::Wait;
        }
        if let Some(target) = plan.transfer_to {
            self.plan = None;
            self.counts.completed += 1;
            if target == view.leader || !configuration.is_voter(target) {
                return Action::Wait;
            }
            return Action::Transfer(target);
        }
        let voters: BTreeSet<NodeId> = configuration.voters().iter().copied().collect();
        let learners = configuration.learners();
        if voters == plan.voters && *learners == plan.learners {
            self.counts.completed += 1;
            self.plan = None;
            return Action::Wait;
        }
        // Add every node the target needs as a learner first.
        if let Some(missing) =
            plan.voters.iter().chain(&plan.learners).find(|id| !configuration.is_member(**id))
        {
            return Action::AddLearner(*missing);
        }
        // Remove the learners the target does not keep.
        if let Some(extra) =
            learners.iter().find(|id| !plan.voters.contains(id) && !plan.learners.contains(id))
        {
            return Action::RemoveMember(*extra);
        }
        if voters != plan.voters {
            let match_of = |id: &NodeId| {
                view.match_indexes
                    .iter()
                    .find(|(member, _)| member == id)
                    .map_or(LogIndex(0), |(_, index)| *index)
            };
            let joining: Vec<NodeId> =
                plan.voters.iter().filter(|id| !voters.contains(id)).copied().collect();
            // Beyond the promotion lag: the leader refuses (NotCaughtUp).
            let beyond_lag = joining.iter().any(|id| {
                match_of(id).0.saturating_add(self.promotion_max_lag) < view.last_index.0
            });
            // The leader also refuses a learner that does not hold its configuration yet.
            let lacks_configuration =
                joining.iter().any(|id| match_of(id) < view.configuration_index);
            // Wait for the learners to catch up, but now and then ask early: the leader must
            // refuse with NotCaughtUp.
            if (beyond_lag || lacks_configuration) && !self.rng.chance(0.1) {
                return Action::Wait;
            }
            let leaving: Vec<NodeId> = voters.difference(&plan.voters).copied().collect();
            if leaving.len() == 1 && plan.voters.is_subset(&voters) {
                return Action::RemoveMember(leaving[0]);
            }
            return Action::ChangeVoters(plan.voters.iter().copied().collect());
        }
        // Only learners the target adds are left: they were added above; nothing else.
        Action::Wait
    }

    /// Begins a plan of a kind the leader's configuration allows.
    fn begin(&mut self, now_ms: u64, view: &LeaderView, spare: &[NodeId]) {
        if view.busy {
            return;
        }
        let configuration = &view.configuration;
        let voters: BTreeSet<NodeId> = configuration.voters().iter().copied().collect();
        let learners = configuration.learners().clone();
        let mut candidates: Vec<NodeId> = spare.to_vec();
        let fresh_left = MAX_SIM_NODES.saturating_sub(self.next_id - 1) as usize;
        let newcomers = candidates.len() + fresh_left;
        let members = voters.len() + learners.len();
        let room = MAX_SIM_NODES as usize - members.min(MAX_SIM_NODES as usize);
        let majority = voters.len() / 2 + 1;
        // Weights by aim: balanced, many learners, replacements.
        let weight = |kind: PlanKind| -> usize {
            let weights = match kind {
                PlanKind::AddVoter => [3, 0, 1],
                PlanKind::AddLearner => [2, 6, 1],
                PlanKind::PromoteLearner => [2, 0, 1],
                PlanKind::RemoveVoter => [3, 1, 2],
                PlanKind::RemoveLearner => [1, 0, 1],
                PlanKind::ReplaceVoter => [2, 0, 4],
                PlanKind::ReplaceMajority => [2, 0, 5],
                PlanKind::TransferLeadership => [3, 3, 1],
            };
            weights[match self.aim {
                Aim::Balanced => 0,
                Aim::ManyLearners => 1,
                Aim::Replacements => 2,
            }]
        };
        let mut kinds = Vec::new();
        let mut allow = |kind: PlanKind, allowed: bool| {
            if allowed {
                kinds.extend(std::iter::repeat_n(kind, weight(kind)));
            }
        };
        allow(PlanKind::AddVoter, voters.len() < MAX_VOTERS && newcomers > 0 && room > 0);
        allow(PlanKind::AddLearner, learners.len() < MAX_LEARNERS && newcomers > 0 && room > 0);
        allow(PlanKind::PromoteLearner, !learners.is_empty() && voters.len() < MAX_VOTERS);
        allow(PlanKind::RemoveVoter, voters.len() > MIN_VOTERS);
        allow(PlanKind::RemoveLearner, !learners.is_empty());
        allow(PlanKind::ReplaceVoter, (newcomers > 0 && room > 0) || !learners.is_empty());
        allow(
            PlanKind::ReplaceMajority,
            learners.len() + newcomers.min(room) >= majority && voters.len() > 1,
        );
        allow(PlanKind::TransferLeadership, voters.len() > 1);
        let Some(kind) = self.rng.pick(&kinds) else { return };
        let mut plan = Plan {
            kind,
            voters: voters.clone(),
            learners: learners.clone(),
            to_start: Vec::new(),
            transfer_to: None,
            deadline_ms: now_ms + PLAN_DEADLINE_MS,
        };
        let voter_list: Vec<NodeId> = voters.iter().copied().collect();
        let learner_list: Vec<NodeId> = learners.iter().copied().collect();
        match kind {
            PlanKind::AddVoter => {
                let Some(id) = self.newcomer(&mut candidates, &mut plan.to_start) else { return };
                plan.voters.insert(id);
            }
            PlanKind::AddLearner => {
                let Some(id) = self.newcomer(&mut candidates, &mut plan.to_start) else { return };
                plan.learners.insert(id);
            }
            PlanKind::PromoteLearner => {
                let Some(id) = self.rng.pick(&learner_list) else { return };
                plan.learners.remove(&id);
                plan.voters.insert(id);
            }
            PlanKind::RemoveVoter => {
                let Some(id) = self.rng.pick(&voter_list) else { return };
                plan.voters.remove(&id);
            }
            PlanKind::RemoveLearner => {
                let Some(id) = self.rng.pick(&learner_list) else { return };
                plan.learners.remove(&id);
            }
            PlanKind::ReplaceVoter => {
                let Some(old) = self.rng.pick(&voter_list) else { return };
                let new = if !learner_list.is_empty() && (newcomers == 0 || self.rng.chance(0.5)) {
                    self.rng.pick(&learner_list)
                } else {
                    self.newcomer(&mut candidates, &mut plan.to_start)
                };
                let Some(new) = new else { return };
                plan.voters.remove(&old);
                plan.learners.remove(&new);
                plan.voters.insert(new);
            }
            PlanKind::ReplaceMajority => {
                let mut leaving = voter_list.clone();
                self.rng.shuffle(&mut leaving);
                leaving.truncate(majority);
                let mut joining = learner_list.clone();
                self.rng.shuffle(&mut joining);
                joining.truncate(majority);
                while joining.len() < majority {
                    let Some(id) = self.newcomer(&mut candidates, &mut plan.to_start) else {
                        return;
                    };
                    joining.push(id);
                }
                for id in leaving {
                    plan.voters.remove(&id);
                }
                for id in joining {
                    plan.learners.remove(&id);
                    plan.voters.insert(id);
                }
            }
            PlanKind::TransferLeadership => {
                let others: Vec<NodeId> =
                    voter_list.iter().copied().filter(|id| *id != view.leader).collect();
                plan.transfer_to = self.rng.pick(&others);
                if plan.transfer_to.is_none() {
                    return;
                }
            }
        }
        self.counts.plans += 1;
        self.plan = Some(plan);
    }

    /// A node to add: one of `candidates` (taken out of the list), or a new id, which
    /// `to_start` records for the world to start.
    fn newcomer(
        &mut self,
        candidates: &mut Vec<NodeId>,
        to_start: &mut Vec<NodeId>,
    ) -> Option<NodeId> {
        let fresh_left = self.next_id <= MAX_SIM_NODES;
        if !candidates.is_empty() && (!fresh_left || self.rng.chance(0.5)) {
            let position = self.rng.below(candidates.len() as u64) as usize;
            return Some(candidates.remove(position));
        }
        if !fresh_left {
            return None;
        }
        let id = NodeId(self.next_id);
        self.next_id += 1;
        to_start.push(id);
        self.counts.nodes_started += 1;
        Some(id)
    }
}
