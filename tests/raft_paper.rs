//! The Raft paper's rules, one test (or a few) beside each row of ARCHITECTURE.md's "Where
//! each Raft rule lives" table, in the style of etcd-raft's `raft_paper_test.go`.
//!
//! This file owns the rule-by-rule checks of the sans-I/O core: each test's doc comment quotes
//! (or closely paraphrases) the sentence of the Raft paper (Ongaro & Ousterhout, extended
//! version) or of Ongaro's thesis that it checks, with its section, and the test drives one
//! [`RaftCore`] (sometimes two or three, wired by hand) through its public API only: `new`,
//! `tick`, `step`, `propose`, `ready` / `advance`, and the accessors. Time is virtual, seeds are
//! fixed, and every message is delivered by the test, so each test is deterministic. Whole-
//! cluster scenarios (partitions, crashes, many rounds) belong to `core_scenarios.rs` and the
//! simulator, not here.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use raft_consensus::core::{InitialState, RaftCore, Role};
use raft_consensus::message::{AppendResponse, ConflictHint};
use raft_consensus::snapshot::SnapshotId;
use raft_consensus::{
    Config, Configuration, Entry, EntryPayload, HardState, LogId, LogIndex, Message, MessageBody,
    NodeId, Snapshot, SnapshotMeta, Term,
};

thread_local! {
    /// The test's snapshot storage ("the test is the disk"): each snapshot's bytes by node
    /// and id, as stored by `stored` (node 0: any node may read them) or assembled from the
    /// chunks a follower received.
    static SNAPSHOT_BYTES: RefCell<HashMap<(u64, SnapshotId), Vec<u8>>> =
        RefCell::new(HashMap::new());
}

/// Stores `data` as a snapshot covering `meta` and returns its description, for
/// `RaftCore::snapshot_stored`.
fn stored(meta: SnapshotMeta, data: &[u8]) -> Snapshot {
    let snapshot = Snapshot::of_bytes(meta, data);
    SNAPSHOT_BYTES.with(|bytes| bytes.borrow_mut().insert((0, snapshot.id), data.to_vec()));
    snapshot
}

/// The stored bytes of `snapshot` (on whichever node holds it).
fn bytes_of(snapshot: &Snapshot) -> Bytes {
    SNAPSHOT_BYTES.with(|bytes| {
        let bytes = bytes.borrow();
        let held = bytes.iter().find(|((_, id), _)| *id == snapshot.id).expect("stored");
        Bytes::from(held.1.clone())
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The members of the three-node cluster most tests use.
const MEMBERS: [u64; 3] = [1, 2, 3];

/// The default configuration without pre-vote, so that a node whose timer fires stands at once.
fn config() -> Config {
    Config { pre_vote: false, ..Config::default() }
}

/// The default configuration with pre-vote (thesis §9.6) on.
fn pre_vote_config() -> Config {
    Config { pre_vote: true, ..Config::default() }
}

/// A command entry at `index` of `term`, whose bytes name both (so two equal entries are
/// equal in every field, as the Log Matching Property expects).
fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(format!("{index}@{term}"))),
    }
}

/// A log from index 1 whose entries have the given terms.
fn log_of_terms(terms: &[u64]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(position, term)| entry(*term, position as u64 + 1)).collect()
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(Term(term), LogIndex(index))
}

/// A node `id` of `members` that starts in `term` with no vote, the log `log_terms` and
/// `commit` entries committed; its clock is started at time 0.
fn node(
    id: u64,
    members: &[u64],
    config: Config,
    term: u64,
    log_terms: &[u64],
    commit: u64,
) -> RaftCore {
    let hard_state =
        HardState { term: Term(term), voted_for: None, commit_index: LogIndex(commit) };
    let initial = InitialState {
        hard_state,
        snapshot: None,
        entries: log_of_terms(log_terms),
        members: None,
    };
    start(id, members, config, initial)
}

/// A node `id` of `members` starting from `initial`, its clock started at time 0.
fn start(id: u64, members: &[u64], config: Config, initial: InitialState) -> RaftCore {
    let mut core = RaftCore::new(
        NodeId(id),
        members.iter().map(|member| NodeId(*member)),
        config,
        initial,
        id,
    )
    .expect("a valid start");
    core.tick(0);
    core
}

fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message { from: NodeId(from), to: NodeId(to), term: Term(term), body }
}

fn append_entries(
    from: u64,
    to: u64,
    term: u64,
    prev: LogId,
    entries: Vec<Entry>,
    leader_commit: u64,
) -> Message {
    message(
        from,
        to,
        term,
        MessageBody::AppendEntries {
            prev_log_id: prev,
            entries,
            leader_commit: LogIndex(leader_commit),
            round: raft_consensus::types::HeartbeatRound(0),
        },
    )
}

fn request_vote(from: u64, to: u64, term: u64, last: LogId) -> Message {
    message(
        from,
        to,
        term,
        MessageBody::RequestVote { last_log_id: last, leadership_transfer: false },
    )
}

fn accepted(from: u64, to: u64, term: u64, match_index: u64) -> Message {
    message(
        from,
        to,
        term,
        MessageBody::AppendEntriesResponse {
            result: AppendResponse::Accepted { match_index: LogIndex(match_index) },
            round: raft_consensus::types::HeartbeatRound(0),
        },
    )
}

fn install_snapshot(from: u64, to: u64, term: u64, last: LogId, data: &'static [u8]) -> Message {
    snapshot_chunk(from, to, term, last, data, 0, data.len())
}

/// An InstallSnapshot with bytes `offset..offset + len` of a snapshot through `last` whose
/// bytes are `whole`.
fn snapshot_chunk(
    from: u64,
    to: u64,
    term: u64,
    last: LogId,
    whole: &'static [u8],
    offset: usize,
    len: usize,
) -> Message {
    let meta = SnapshotMeta {
        last_included: last,
        configuration: Configuration::of_voters(MEMBERS.map(NodeId)),
    };
    let end = (offset + len).min(whole.len());
    message(
        from,
        to,
        term,
        MessageBody::InstallSnapshot {
            snapshot: Snapshot::of_bytes(meta, whole),
            offset: offset as u64,
            data: Bytes::from_static(&whole[offset..end]),
        },
    )
}

/// What one Ready handed out, with its ack already handed back in full.
struct Carried {
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    log_reset: Option<LogId>,
    entries: Vec<Entry>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    committed_entries: Vec<Entry>,
}

impl Carried {
    /// Every message, sendable at once or after the persist.
    fn all_messages(&self) -> Vec<Message> {
        self.messages.iter().chain(&self.persisted_messages).cloned().collect()
    }
}

/// Takes one Ready, carries it out (the test is the disk) and acknowledges it in full.
fn carry_out(core: &mut RaftCore) -> Carried {
    let ready = core.ready();
    let mut messages = ready.messages;
    let node = core.id().0;
    SNAPSHOT_BYTES.with(|bytes| {
        let mut bytes = bytes.borrow_mut();
        for chunk in ready.received_chunks {
            let held = bytes.entry((node, chunk.snapshot.id)).or_default();
            if chunk.offset == 0 {
                held.clear();
            }
            assert_eq!(held.len() as u64, chunk.offset, "received chunks come in order");
            held.extend_from_slice(&chunk.data);
        }
        for chunk in ready.snapshot_chunks {
            let mut message = chunk.message;
            if let MessageBody::InstallSnapshot { snapshot, offset, data } = &mut message.body {
                let held = bytes
                    .get(&(node, snapshot.id))
                    .or_else(|| bytes.get(&(0, snapshot.id)))
                    .expect("a leader sends a snapshot it stored");
                let start = *offset as usize;
                *data = Bytes::copy_from_slice(&held[start..start + chunk.len]);
            }
            messages.push(message);
        }
    });
    let carried = Carried {
        hard_state: ready.hard_state,
        snapshot: ready.snapshot,
        log_reset: ready.log_reset,
        entries: ready.entries,
        messages,
        persisted_messages: ready.persisted_messages,
        committed_entries: ready.committed_entries,
    };
    core.advance(ready.ack);
    carried
}

/// Steps `message` into `core`, then carries out one Ready in full.
fn step_and_carry_out(core: &mut RaftCore, message: Message) -> Carried {
    core.step(message);
    carry_out(core)
}

/// Carries out every Ready `core` has; returns all the messages they held.
fn settle(core: &mut RaftCore) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut readies = 0;
    while core.has_ready() {
        readies += 1;
        assert!(readies <= 1_000, "node{} never runs out of work", core.id().0);
        messages.extend(carry_out(core).all_messages());
    }
    messages
}

/// Steps `message` into `core` and settles it; returns the messages it caused.
fn deliver(core: &mut RaftCore, message: Message) -> Vec<Message> {
    core.step(message);
    settle(core)
}

/// Delivers `messages`, and every message they cause, among `nodes` until none is left;
/// returns every message sent, in order. Messages to a node not in `nodes` are lost.
fn exchange(nodes: &mut [&mut RaftCore], messages: Vec<Message>) -> Vec<Message> {
    let mut queue: VecDeque<Message> = messages.into();
    let mut sent = Vec::new();
    while let Some(message) = queue.pop_front() {
        assert!(sent.len() < 10_000, "the nodes keep talking forever");
        sent.push(message.clone());
        if let Some(node) = nodes.iter_mut().find(|node| node.id() == message.to) {
            queue.extend(deliver(node, message));
        }
    }
    sent
}

/// The only message of `messages` to `to`, expected to be a `RequestVoteResponse`: its term
/// and whether the vote was granted.
fn vote_answer(messages: &[Message], to: u64) -> (Term, bool) {
    let answers: Vec<(Term, bool)> = messages
        .iter()
        .filter(|message| message.to == NodeId(to))
        .filter_map(|message| match message.body {
            MessageBody::RequestVoteResponse { granted } => Some((message.term, granted)),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "expected one vote answer to node{to}: {messages:?}");
    answers[0]
}

/// The only `AppendEntriesResponse` of `messages`, with the term it carries.
fn append_answer(messages: &[Message]) -> (Term, AppendResponse) {
    let answers: Vec<(Term, AppendResponse)> = messages
        .iter()
        .filter_map(|message| match message.body {
            MessageBody::AppendEntriesResponse { result: response, .. } => {
                Some((message.term, response))
            }
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "expected one AppendEntries answer: {messages:?}");
    answers[0]
}

/// Fires `core`'s election timer and grants it every vote (and pre-vote) it asks for, so it
/// becomes leader. The Ready that holds its no-op is left for the caller; returns the term.
fn elect(core: &mut RaftCore) -> Term {
    let deadline = core.next_deadline_ms();
    core.tick(deadline);
    for _ in 0..2 {
        // A pre-vote round first (if configured), then the election; a single node wins at
        // once.
        if core.role() == Role::Leader {
            return core.term();
        }
        let requests = settle(core);
        let id = core.id().0;
        for request in requests {
            let answer = match request.body {
                MessageBody::PreVote { .. } => MessageBody::PreVoteResponse { granted: true },
                MessageBody::RequestVote { .. } => {
                    MessageBody::RequestVoteResponse { granted: true }
                }
                _ => continue,
            };
            core.step(message(request.to.0, id, request.term.0, answer));
            if core.role() == Role::Leader {
                return core.term();
            }
        }
    }
    panic!("node{} did not become leader", core.id().0);
}

/// The InstallSnapshot chunks among `messages` to node `to`: each one's snapshot (its last
/// entry) and offset, in order.
fn snapshot_chunks_to(to: u64, messages: &[Message]) -> Vec<(LogId, u64)> {
    messages
        .iter()
        .filter(|message| message.to == NodeId(to))
        .filter_map(|message| match &message.body {
            MessageBody::InstallSnapshot { snapshot, offset, .. } => {
                Some((snapshot.meta.last_included, *offset))
            }
            _ => None,
        })
        .collect()
}

/// `elect`, then settles the Ready of taking office; returns the term and the messages sent.
fn elect_and_settle(core: &mut RaftCore) -> (Term, Vec<Message>) {
    let term = elect(core);
    (term, settle(core))
}

// ---------------------------------------------------------------------------------------------
// Leader election (§5.2) and the election restriction (§5.4.1): core/election.rs
// ---------------------------------------------------------------------------------------------

/// §5.2: "Raft uses randomized election timeouts to ensure that split votes are rare and that
/// they are resolved quickly. To prevent split votes in the first place, election timeouts are
/// chosen randomly from a fixed interval (e.g., 150–300ms)." The timeout is drawn from
/// [`election_timeout_min_ms`, `election_timeout_max_ms`): a follower does not stand one
/// millisecond before its deadline and stands at it; every deadline, first and after an
/// election, lies in that range; and the draws differ from node to node.
#[test]
fn election_timeout_is_randomized_in_the_configured_range() {
    let config = config();
    let (min, max) = (config.election_timeout_min_ms, config.election_timeout_max_ms);
    let start_ms = 1_000;
    let mut timeouts = BTreeSet::new();
    for seed in 1..=1_000 {
        let mut core = RaftCore::new(
            NodeId(1),
            MEMBERS.map(NodeId),
            config.clone(),
            InitialState::default(),
            seed,
        )
        .expect("a valid start");
        core.tick(start_ms);
        let deadline = core.next_deadline_ms();
        let timeout = deadline - start_ms;
        assert!((min..max).contains(&timeout), "seed {seed}: first timeout {timeout} ms");
        timeouts.insert(timeout);

        core.tick(deadline - 1);
        assert_eq!(core.term(), Term(0), "seed {seed}: stood before its timeout");
        assert_eq!(core.role(), Role::Follower);
        core.tick(deadline);
        assert_eq!(core.role(), Role::Candidate, "seed {seed}: did not stand at its timeout");
        assert_eq!(core.term(), Term(1));

        // The candidate's next election starts after a fresh draw from the same range.
        let retimeout = core.next_deadline_ms() - deadline;
        assert!((min..max).contains(&retimeout), "seed {seed}: candidate timeout {retimeout} ms");
        timeouts.insert(retimeout);
    }
    // 2000 draws from 150 values: a fixed or narrow timeout would show here.
    assert!(
        timeouts.len() > (max - min) as usize * 9 / 10,
        "only {} distinct timeouts",
        timeouts.len()
    );
    assert_eq!(timeouts.first(), Some(&min), "the lower bound is never drawn");
    assert_eq!(timeouts.last(), Some(&(max - 1)), "the upper bound minus one is never drawn");
}

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
/// candidate. ... If the logs have last entries with different terms, then the log with the
/// later term is more up-to-date. If the logs end with the same term, then whichever log is
/// longer is more up-to-date." A voter whose log ends at 3@2 denies candidates ending at 5@1
/// (longer, but older last term) and 2@2 (same term, shorter), and grants candidates ending at
/// 3@2 (equal), 4@2 (longer) and 1@3 (shorter, later last term).
#[test]
fn election_restriction_voter_denies_a_less_up_to_date_candidate() {
    let cases = [
        (log_id(1, 5), false, "an older last term, however long"),
        (log_id(2, 2), false, "the same last term, shorter"),
        (log_id(2, 3), true, "an equal log"),
        (log_id(2, 4), true, "the same last term, longer"),
        (log_id(3, 1), true, "a later last term, however short"),
    ];
    for (candidate_last, expected, case) in cases {
        let mut voter = node(1, &MEMBERS, config(), 2, &[1, 1, 2], 0);
        let carried = step_and_carry_out(&mut voter, request_vote(2, 1, 3, candidate_last));
        assert_eq!(vote_answer(&carried.persisted_messages, 2), (Term(3), expected), "{case}");
        let expected_vote = expected.then_some(NodeId(2));
        assert_eq!(voter.voted_for(), expected_vote, "{case}");
        assert_eq!(voter.term(), Term(3), "{case}: a newer term is adopted whatever the answer");
    }
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis." Figure 2 (RequestVote receiver): "If votedFor is null or
/// candidateId, and candidate's log is at least as up-to-date as receiver's log, grant vote."
/// After granting node 2 in term 2, the voter refuses node 3 in term 2 (though node 3's log is
/// as good), grants node 2's repeated request again (its answer may have been lost), and a
/// restarted voter remembers the vote. The grant goes out only after the vote is persisted.
#[test]
fn one_vote_per_term_first_come_first_served() {
    let mut voter = node(1, &MEMBERS, config(), 1, &[1], 0);
    let last = log_id(1, 1);

    let first = step_and_carry_out(&mut voter, request_vote(2, 1, 2, last));
    assert_eq!(vote_answer(&first.persisted_messages, 2), (Term(2), true));
    assert!(first.messages.is_empty(), "a grant must wait for the vote to be durable");
    let persisted = first.hard_state.expect("the vote is persisted");
    assert_eq!((persisted.term, persisted.voted_for), (Term(2), Some(NodeId(2))));

    let other = step_and_carry_out(&mut voter, request_vote(3, 1, 2, last));
    assert_eq!(vote_answer(&other.persisted_messages, 3), (Term(2), false));
    assert_eq!(voter.voted_for(), Some(NodeId(2)));

    let repeat = step_and_carry_out(&mut voter, request_vote(2, 1, 2, last));
    assert_eq!(vote_answer(&repeat.persisted_messages, 2), (Term(2), true), "not idempotent");

    // The vote survives a restart: it was in the persisted hard state.
    let initial = InitialState {
        hard_state: persisted,
        snapshot: None,
        entries: log_of_terms(&[1]),
        members: None,
    };
    let mut restarted = start(1, &MEMBERS, config(), initial);
    let after_restart = step_and_carry_out(&mut restarted, request_vote(3, 1, 2, last));
    assert_eq!(vote_answer(&after_restart.persisted_messages, 3), (Term(2), false));
}

/// §5.2: "Each server will vote for at most one candidate in a given term" and a candidate
/// "votes for itself": a candidate refuses another candidate of its own term.
#[test]
fn a_candidate_refuses_other_candidates_of_its_term() {
    let mut candidate = node(1, &MEMBERS, config(), 1, &[1], 0);
    let deadline = candidate.next_deadline_ms();
    candidate.tick(deadline);
    assert_eq!((candidate.role(), candidate.term()), (Role::Candidate, Term(2)));
    assert_eq!(candidate.voted_for(), Some(NodeId(1)));
    settle(&mut candidate);
    let answer = deliver(&mut candidate, request_vote(3, 1, 2, log_id(1, 1)));
    assert_eq!(vote_answer(&answer, 3), (Term(2), false));
    assert_eq!(candidate.voted_for(), Some(NodeId(1)));
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of the servers in
/// the full cluster for the same term." A candidate of five with its own vote and one grant
/// stays a candidate (a refusal, a duplicate grant and a grant from an earlier term's election
/// change nothing); a second grant of its term makes three of five, and it leads.
#[test]
fn a_candidate_wins_with_votes_from_a_majority_of_the_full_cluster() {
    let members = [1, 2, 3, 4, 5];
    let mut candidate = node(1, &members, config(), 1, &[1], 1);
    let deadline = candidate.next_deadline_ms();
    candidate.tick(deadline);
    settle(&mut candidate);
    assert_eq!((candidate.role(), candidate.term()), (Role::Candidate, Term(2)));
    let answer =
        |from, term, granted| message(from, 1, term, MessageBody::RequestVoteResponse { granted });
    candidate.step(answer(2, 2, true));
    candidate.step(answer(3, 2, false));
    candidate.step(answer(2, 2, true));
    candidate.step(answer(4, 1, true));
    assert_eq!(candidate.role(), Role::Candidate, "won without a majority of five");
    candidate.step(answer(5, 2, true));
    assert_eq!(candidate.role(), Role::Leader);
    assert_eq!(candidate.leader_id(), Some(NodeId(1)));
}

/// §5.4.2 and §8: "Raft handles this by having each leader commit a blank no-op entry into
/// the log at the start of its term." On winning, the leader appends a blank entry of its new
/// term at once, hands it out to persist and sends it to every follower.
#[test]
fn a_new_leader_appends_a_no_op_entry_of_its_term_at_once() {
    let mut leader = node(1, &MEMBERS, config(), 2, &[1, 1, 2], 0);
    let term = elect(&mut leader);
    assert_eq!(term, Term(3));
    let no_op = Entry { term, index: LogIndex(4), payload: EntryPayload::Blank };
    assert_eq!(leader.last_log_id(), no_op.log_id());
    assert_eq!(leader.entry(LogIndex(4)), Some(&no_op));

    let carried = carry_out(&mut leader);
    assert_eq!(carried.entries, vec![no_op.clone()], "the no-op is persisted at once");
    for follower in [2, 3] {
        let carries_no_op = carried.messages.iter().any(|message| {
            message.to == NodeId(follower)
                && matches!(&message.body, MessageBody::AppendEntries { entries, .. } if entries.contains(&no_op))
        });
        assert!(carries_no_op, "node{follower} is not sent the no-op: {:?}", carried.messages);
    }
}

/// §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to
/// all followers in order to maintain their authority." Once both followers hold its log, the
/// leader sends nothing until its heartbeat interval has passed, then each follower an
/// AppendEntries without entries that passes the consistency check and carries the commit
/// index.
#[test]
fn a_leader_sends_heartbeats_every_heartbeat_interval() {
    let mut leader = node(1, &MEMBERS, config(), 1, &[1], 1);
    // `elect` fires the election timer at its deadline and wins at that instant.
    let elected_at = leader.next_deadline_ms();
    let (term, taking_office) = elect_and_settle(&mut leader);
    let mut follower_two = node(2, &MEMBERS, config(), 1, &[1], 1);
    let mut follower_three = node(3, &MEMBERS, config(), 1, &[1], 1);
    exchange(&mut [&mut leader, &mut follower_two, &mut follower_three], taking_office);
    assert_eq!(leader.commit_index(), LogIndex(2), "the no-op is committed");
    settle(&mut leader);

    leader.tick(elected_at + config().heartbeat_interval_ms - 1);
    assert!(settle(&mut leader).is_empty(), "sent before the heartbeat interval");

    leader.tick(elected_at + config().heartbeat_interval_ms);
    let heartbeats = settle(&mut leader);
    for follower in [2, 3] {
        let to_follower: Vec<&Message> =
            heartbeats.iter().filter(|message| message.to == NodeId(follower)).collect();
        assert_eq!(to_follower.len(), 1, "{heartbeats:?}");
        assert_eq!(to_follower[0].term, term);
        assert!(
            matches!(
                &to_follower[0].body,
                MessageBody::AppendEntries { prev_log_id, entries, leader_commit: LogIndex(2), .. }
                    if *prev_log_id == log_id(2, 2) && entries.is_empty()
            ),
            "{:?}",
            to_follower[0].body
        );
    }
    exchange(&mut [&mut leader, &mut follower_two, &mut follower_three], heartbeats);
    assert_eq!(follower_two.commit_index(), LogIndex(2), "the heartbeat carries the commit index");
}

// ---------------------------------------------------------------------------------------------
// Terms (§5.1): core/mod.rs (`step`)
// ---------------------------------------------------------------------------------------------

/// §5.1: "If a server receives a request with a stale term number, it rejects the request."
/// and "Current terms are exchanged whenever servers communicate": a follower of term 3
/// rejects an AppendEntries of term 2 (appending nothing, following no one) and refuses a
/// RequestVote of term 2 (keeping its vote), answering both with term 3.
#[test]
fn a_request_with_a_stale_term_is_rejected_with_the_current_term() {
    let mut follower = node(2, &MEMBERS, config(), 3, &[1, 1, 2], 0);
    let stale_append = append_entries(1, 2, 2, log_id(2, 3), vec![entry(2, 4)], 4);
    let answer = deliver(&mut follower, stale_append);
    let (term, response) = append_answer(&answer);
    assert_eq!(term, Term(3), "the answer carries the current term");
    assert!(matches!(response, AppendResponse::Rejected { .. }), "{response:?}");
    assert_eq!(follower.last_log_id(), log_id(2, 3), "a stale leader's entry was appended");
    assert_eq!(follower.commit_index(), LogIndex(0));
    assert_eq!(follower.leader_id(), None, "a stale leader was followed");
    assert_eq!(follower.term(), Term(3));

    let answer = deliver(&mut follower, request_vote(3, 2, 2, log_id(5, 9)));
    assert_eq!(vote_answer(&answer, 3), (Term(3), false));
    assert_eq!(follower.voted_for(), None);
    assert_eq!(follower.term(), Term(3));
}

/// §5.1: "If one server's current term is smaller than the other's, then it updates its
/// current term to the larger value. If a candidate or leader discovers that its term is out
/// of date, it immediately reverts to follower state." A leader that receives an answer of a
/// later term, and a candidate refused by a voter of a later term, become followers in that
/// term with no vote, and persist it.
#[test]
fn a_message_with_a_higher_term_makes_leader_and_candidate_step_down() {
    let mut leader = node(1, &MEMBERS, config(), 1, &[1], 1);
    let (term, _) = elect_and_settle(&mut leader);
    assert_eq!(term, Term(2));
    let rejection = message(
        2,
        1,
        5,
        MessageBody::AppendEntriesResponse {
            result: AppendResponse::Rejected {
                rejected_prev_index: LogIndex(1),
                hint: ConflictHint { conflict_term: None, first_index: LogIndex(2) },
            },
            round: raft_consensus::types::HeartbeatRound(0),
        },
    );
    let carried = step_and_carry_out(&mut leader, rejection);
    assert_eq!((leader.role(), leader.term(), leader.voted_for()), (Role::Follower, Term(5), None));
    assert_eq!(carried.hard_state.map(|state| state.term), Some(Term(5)), "the term is persisted");
    assert!(
        leader.propose(Bytes::from_static(b"late")).is_err(),
        "a deposed leader accepts proposals"
    );

    let mut candidate = node(1, &MEMBERS, config(), 1, &[1], 1);
    let deadline = candidate.next_deadline_ms();
    candidate.tick(deadline);
    settle(&mut candidate);
    assert_eq!((candidate.role(), candidate.term()), (Role::Candidate, Term(2)));
    let refusal = message(3, 1, 4, MessageBody::RequestVoteResponse { granted: false });
    let carried = step_and_carry_out(&mut candidate, refusal);
    assert_eq!(
        (candidate.role(), candidate.term(), candidate.voted_for()),
        (Role::Follower, Term(4), None)
    );
    assert_eq!(carried.hard_state.map(|state| state.term), Some(Term(4)), "the term is persisted");
}

/// §5.2: "If the leader's term (included in its RPC) is at least as large as the candidate's
/// current term, then the candidate recognizes the leader as legitimate and returns to
/// follower state." A candidate of term 2 that hears AppendEntries from a leader of term 2
/// follows it (and accepts the entries); one from term 3 makes it adopt term 3 too.
#[test]
fn a_candidate_hearing_a_leader_of_its_term_or_later_becomes_its_follower() {
    for leader_term in [2, 3] {
        let mut candidate = node(1, &MEMBERS, config(), 1, &[1], 1);
        let deadline = candidate.next_deadline_ms();
        candidate.tick(deadline);
        settle(&mut candidate);
        assert_eq!(candidate.term(), Term(2));
        let heartbeat = append_entries(2, 1, leader_term, log_id(1, 1), vec![entry(2, 2)], 1);
        let answer = deliver(&mut candidate, heartbeat);
        assert_eq!(candidate.role(), Role::Follower, "leader term {leader_term}");
        assert_eq!(candidate.term(), Term(leader_term));
        assert_eq!(candidate.leader_id(), Some(NodeId(2)));
        let (_, response) = append_answer(&answer);
        assert_eq!(response, AppendResponse::Accepted { match_index: LogIndex(2) });
    }
}

// ---------------------------------------------------------------------------------------------
// Log replication (§5.3): core/replication.rs
// ---------------------------------------------------------------------------------------------

/// §5.3: "When sending an AppendEntries RPC, the leader includes the index and term of the
/// entry in its log that immediately precedes the new entries. If the follower does not find
/// an entry in its log with the same index and term, then it refuses the new entries."
/// (Figure 2: "Reply false if log doesn't contain an entry at prevLogIndex whose term matches
/// prevLogTerm.") A follower whose log is 1@1 2@1 3@2 rejects prev 3@3 (a different term at
/// that index) and prev 4@3 (no entry there), changing nothing, and accepts prev 3@2.
#[test]
fn append_entries_consistency_check() {
    let mismatches = [
        (log_id(3, 3), Some(Term(2)), "a different term at prevLogIndex"),
        (log_id(3, 4), None, "no entry at prevLogIndex"),
    ];
    for (prev, conflict_term, case) in mismatches {
        let mut follower = node(2, &MEMBERS, config(), 3, &[1, 1, 2], 0);
        let answer = deliver(
            &mut follower,
            append_entries(1, 2, 3, prev, vec![entry(3, prev.index.0 + 1)], 0),
        );
        let (term, response) = append_answer(&answer);
        assert_eq!(term, Term(3));
        match response {
            AppendResponse::Rejected { rejected_prev_index, hint } => {
                assert_eq!(rejected_prev_index, prev.index, "{case}");
                assert_eq!(hint.conflict_term, conflict_term, "{case}");
            }
            other => panic!("{case}: accepted: {other:?}"),
        }
        assert_eq!(follower.last_log_id(), log_id(2, 3), "{case}: the log changed");
    }

    let mut follower = node(2, &MEMBERS, config(), 3, &[1, 1, 2], 0);
    let answer =
        deliver(&mut follower, append_entries(1, 2, 3, log_id(2, 3), vec![entry(3, 4)], 0));
    assert_eq!(append_answer(&answer).1, AppendResponse::Accepted { match_index: LogIndex(4) });
    assert_eq!(follower.last_log_id(), log_id(3, 4));
}

/// §5.3: "If an existing entry conflicts with a new one (same index but different terms),
/// delete the existing entry and all that follow it (§5.3)" (Figure 2, AppendEntries receiver
/// step 3). A follower holding 3@2 4@2 that receives 3@3 after a matching 2@1 keeps 1 and 2,
/// replaces 3 and drops 4, and hands out the replacement to be written over the stored suffix.
#[test]
fn conflicting_entries_are_deleted_with_all_that_follow() {
    let mut follower = node(2, &MEMBERS, config(), 2, &[1, 1, 2, 2], 1);
    follower.step(append_entries(1, 2, 3, log_id(1, 2), vec![entry(3, 3)], 1));
    let carried = carry_out(&mut follower);
    assert_eq!(follower.last_log_id(), log_id(3, 3), "index 4 of the old term must go");
    assert_eq!(follower.entry(LogIndex(3)), Some(&entry(3, 3)));
    assert_eq!(follower.entry(LogIndex(4)), None);
    assert_eq!(follower.entry(LogIndex(2)), Some(&entry(1, 2)), "a matching entry was lost");
    assert_eq!(carried.entries, vec![entry(3, 3)], "the replacement is written from index 3");
    assert_eq!(
        append_answer(&carried.persisted_messages).1,
        AppendResponse::Accepted { match_index: LogIndex(3) }
    );
}

/// §5.3, Figure 2 (AppendEntries receiver step 3) deletes only entries that *conflict*: "If an
/// existing entry conflicts with a new one ... delete the existing entry and all that follow
/// it." Entries already present and matching stay, so a delayed, shorter AppendEntries (sent
/// before the later entries) does not truncate the later entries the follower holds; the
/// answer vouches only for what the message proves (its last entry), and with a conflict
/// further on only the suffix from the conflict goes.
#[test]
fn matching_entries_are_not_truncated_by_a_stale_shorter_append() {
    let mut follower = node(2, &MEMBERS, config(), 2, &[1, 1, 2, 2, 2], 1);
    let stale = append_entries(1, 2, 2, log_id(1, 2), vec![entry(2, 3)], 1);
    let carried = step_and_carry_out(&mut follower, stale);
    assert_eq!(follower.last_log_id(), log_id(2, 5), "matching entries 4 and 5 were truncated");
    assert!(carried.entries.is_empty(), "nothing new to persist: {:?}", carried.entries);
    assert_eq!(
        append_answer(&carried.persisted_messages).1,
        AppendResponse::Accepted { match_index: LogIndex(3) }
    );

    // Matching 3@2, conflicting 4@3: the log is cut at 4, not at 3.
    let mut follower = node(2, &MEMBERS, config(), 2, &[1, 1, 2, 2, 2], 1);
    let partly_new = append_entries(1, 2, 3, log_id(1, 2), vec![entry(2, 3), entry(3, 4)], 1);
    let carried = step_and_carry_out(&mut follower, partly_new);
    assert_eq!(follower.last_log_id(), log_id(3, 4));
    assert_eq!(follower.entry(LogIndex(3)), Some(&entry(2, 3)));
    assert_eq!(carried.entries, vec![entry(3, 4)], "only the conflicting suffix is rewritten");
}

/// §5.3, Figure 2 (AppendEntries receiver step 5): "If leaderCommit > commitIndex, set
/// commitIndex = min(leaderCommit, index of last new entry)." A follower whose log goes past
/// what a message proves (entries 2 and 3 may not be the leader's) commits only up to the
/// message's last entry; a rejected message moves nothing; the commit index never goes back.
#[test]
fn follower_commits_min_of_leader_commit_and_last_new_entry() {
    let mut follower = node(2, &MEMBERS, config(), 1, &[1, 1, 1], 0);

    // A heartbeat anchored at 1@1 proves entries up to 1 only.
    deliver(&mut follower, append_entries(1, 2, 1, log_id(1, 1), vec![], 3));
    assert_eq!(follower.commit_index(), LogIndex(1), "committed past the matching prefix");

    // One new entry after 1@1 proves up to 2.
    deliver(&mut follower, append_entries(1, 2, 1, log_id(1, 1), vec![entry(1, 2)], 3));
    assert_eq!(follower.commit_index(), LogIndex(2));

    // A mismatching message proves nothing.
    deliver(&mut follower, append_entries(1, 2, 1, log_id(1, 4), vec![], 3));
    assert_eq!(follower.commit_index(), LogIndex(2));

    // The leader's commit index bounds it when it is the smaller.
    deliver(&mut follower, append_entries(1, 2, 1, log_id(1, 3), vec![], 3));
    assert_eq!(follower.commit_index(), LogIndex(3));

    // A delayed message with an older leaderCommit does not move it back.
    let carried =
        step_and_carry_out(&mut follower, append_entries(1, 2, 1, log_id(1, 1), vec![], 1));
    assert_eq!(follower.commit_index(), LogIndex(3));
    assert!(carried.hard_state.is_none_or(|state| state.commit_index == LogIndex(3)));
}

/// §5.3: "when rejecting an AppendEntries request, the follower can include the term of the
/// conflicting entry and the first index it stores for that term. With this information, the
/// leader can decrement nextIndex to bypass all of the conflicting entries in that term".
/// Follower side: a log 3@2 4@2 5@2 rejecting prev 5@3 names term 2 from index 3; a log
/// ending at 2 names no term and its end plus one. Leader side: a leader without term 2
/// retries below the whole term-2 run at once (prev 2@1), and after a "too short" hint it
/// retries from the follower's end (prev 1@1).
#[test]
fn a_rejection_hints_where_the_logs_diverge_and_the_leader_skips_the_whole_term() {
    let mut follower = node(2, &MEMBERS, config(), 3, &[1, 1, 2, 2, 2], 1);
    let answer = deliver(&mut follower, append_entries(1, 2, 3, log_id(3, 5), vec![], 1));
    let hint = ConflictHint { conflict_term: Some(Term(2)), first_index: LogIndex(3) };
    assert_eq!(
        append_answer(&answer).1,
        AppendResponse::Rejected { rejected_prev_index: LogIndex(5), hint }
    );
    let mut short = node(2, &MEMBERS, config(), 3, &[1, 1], 1);
    let answer = deliver(&mut short, append_entries(1, 2, 3, log_id(3, 5), vec![], 1));
    let hint = ConflictHint { conflict_term: None, first_index: LogIndex(3) };
    assert_eq!(
        append_answer(&answer).1,
        AppendResponse::Rejected { rejected_prev_index: LogIndex(5), hint }
    );

    // The leader's log is 1@1 2@1 3@3 4@3 and, once elected in term 4, its no-op 5@4.
    let mut leader = node(1, &MEMBERS, config(), 3, &[1, 1, 3, 3], 1);
    let (term, _) = elect_and_settle(&mut leader);
    assert_eq!(term, Term(4));
    let rejection = |from, conflict_term, first_index| {
        let hint = ConflictHint { conflict_term, first_index: LogIndex(first_index) };
        let response = AppendResponse::Rejected { rejected_prev_index: LogIndex(4), hint };
        message(
            from,
            1,
            4,
            MessageBody::AppendEntriesResponse {
                result: response,
                round: raft_consensus::types::HeartbeatRound(0),
            },
        )
    };
    let retry_prev = |messages: &[Message], to: u64| {
        let prevs: Vec<LogId> = messages
            .iter()
            .filter(|message| message.to == NodeId(to))
            .filter_map(|message| match message.body {
                MessageBody::AppendEntries { prev_log_id, .. } => Some(prev_log_id),
                _ => None,
            })
            .collect();
        assert_eq!(prevs.len(), 1, "one retry to node{to}: {messages:?}");
        prevs[0]
    };
    let retry = deliver(&mut leader, rejection(2, Some(Term(2)), 3));
    assert_eq!(retry_prev(&retry, 2), log_id(1, 2), "the term-2 run was not skipped");
    let retry = deliver(&mut leader, rejection(3, None, 2));
    assert_eq!(retry_prev(&retry, 3), log_id(1, 1), "the follower's end was not used");
}

/// §5.3: "After a rejection, the leader decrements nextIndex and retries the AppendEntries
/// RPC." Only a rejection of what the leader sent moves nextIndex: every AppendEntries it sent
/// had its prevLogIndex below nextIndex, so a rejection whose prev index is at or past
/// nextIndex (a late answer from before the follower caught up, or a malformed one) is stale.
/// A leader streaming to a follower (match 2, next 3) that receives a rejection of prev 3
/// ignores it: it sends nothing and keeps streaming.
#[test]
fn a_rejection_at_or_past_next_index_is_stale_and_ignored() {
    let mut leader = node(1, &MEMBERS, config(), 1, &[1], 1);
    let (term, _) = elect_and_settle(&mut leader);
    assert_eq!(leader.last_log_id(), log_id(2, 2));
    deliver(&mut leader, accepted(2, 1, term.0, 2));
    assert!(leader.follower_match_indexes().contains(&(NodeId(2), LogIndex(2))));

    let hint = ConflictHint { conflict_term: None, first_index: LogIndex(3) };
    let response = AppendResponse::Rejected { rejected_prev_index: LogIndex(3), hint };
    let stale = message(
        2,
        1,
        term.0,
        MessageBody::AppendEntriesResponse {
            result: response,
            round: raft_consensus::types::HeartbeatRound(0),
        },
    );
    let sent = deliver(&mut leader, stale);
    assert!(sent.is_empty(), "a stale rejection made the leader probe again: {sent:?}");

    // Still streaming: a new entry goes at once, after the matching 2@2.
    leader.propose(Bytes::from_static(b"x")).expect("the leader accepts a proposal");
    let sent = settle(&mut leader);
    let prevs: Vec<LogId> = sent
        .iter()
        .filter(|message| message.to == NodeId(2))
        .filter_map(|message| match message.body {
            MessageBody::AppendEntries { prev_log_id, .. } => Some(prev_log_id),
            _ => None,
        })
        .collect();
    assert_eq!(prevs, vec![log_id(2, 2)]);
}

/// Figure 2, "Persistent state on all servers: (Updated on stable storage before responding
/// to RPCs)", and §5.3's "apply the entry to its state machine (in log order)": a follower's
/// acceptance of new entries leaves only after the Ready that persists them (it is among the
/// Ready's `persisted_messages`, with the entries and the new hard state), and committed
/// entries are handed out to apply in index order, each exactly once.
#[test]
fn a_follower_answers_after_persisting_and_applies_in_order_once() {
    let mut follower = node(2, &MEMBERS, config(), 1, &[], 0);
    let entries = vec![entry(1, 1), entry(1, 2), entry(1, 3)];
    follower.step(append_entries(1, 2, 1, LogId::default(), entries.clone(), 2));
    let carried = carry_out(&mut follower);
    assert_eq!(carried.entries, entries);
    assert!(carried.messages.is_empty(), "answered before persisting: {:?}", carried.messages);
    assert_eq!(
        append_answer(&carried.persisted_messages).1,
        AppendResponse::Accepted { match_index: LogIndex(3) }
    );
    assert_eq!(carried.committed_entries, entries[..2].to_vec());

    let repeat = append_entries(1, 2, 1, LogId::default(), entries.clone(), 3);
    let carried = step_and_carry_out(&mut follower, repeat);
    assert_eq!(carried.committed_entries, entries[2..].to_vec(), "applied out of order or twice");
    let carried =
        step_and_carry_out(&mut follower, append_entries(1, 2, 1, log_id(1, 3), vec![], 3));
    assert!(carried.committed_entries.is_empty(), "applied twice: {:?}", carried.committed_entries);
}

// ---------------------------------------------------------------------------------------------
// The commit rule (§5.4.2 / Figure 8) and the leader's own sync: core/replication.rs,
// core/quorum.rs, core/ready.rs
// ---------------------------------------------------------------------------------------------

/// §5.4.2 / Figure 8: "Raft never commits log entries from previous terms by counting
/// replicas. Only log entries from the leader's current term are committed by counting
/// replicas; once an entry from the current term has been committed in this way, then all
/// prior entries are committed indirectly because of the Log Matching Property." A leader of
/// term 3 whose entry 2@2 (of term 2) is on every server does not commit it; once its no-op
/// 3@3 is on a majority, it commits both.
#[test]
fn leader_does_not_commit_an_entry_of_a_previous_term_by_counting_replicas() {
    let mut leader = node(1, &MEMBERS, config(), 2, &[1, 2], 1);
    let (term, _) = elect_and_settle(&mut leader);
    assert_eq!(term, Term(3));
    assert_eq!(leader.last_log_id(), log_id(3, 3));

    for follower in [2, 3] {
        deliver(&mut leader, accepted(follower, 1, 3, 2));
    }
    assert_eq!(
        leader.commit_index(),
        LogIndex(1),
        "2@2 committed by counting replicas of a previous term (Figure 8)"
    );

    leader.step(accepted(2, 1, 3, 3));
    assert_eq!(leader.commit_index(), LogIndex(3), "the current-term no-op on a majority commits");
    let carried = carry_out(&mut leader);
    let committed: Vec<LogIndex> =
        carried.committed_entries.iter().map(|entry| entry.index).collect();
    assert_eq!(committed, vec![LogIndex(2), LogIndex(3)], "2@2 commits indirectly, with 3@3");
}

/// Figure 2 and §5.3: an entry is committed once "the leader that created the entry has
/// replicated it on a majority of the servers", and "replicated" means stored durably (Figure
/// 2: persistent state is "updated on stable storage before responding to RPCs"). The leader
/// writes its log in parallel with sending it (thesis §10.2.1), so it counts its own copy only
/// once the Ready's persisted half is handed back. In a two-node cluster the follower's
/// acknowledgment alone is not a majority: the no-op commits only when the leader's own write
/// is acknowledged as synced.
#[test]
fn leader_counts_itself_toward_a_commit_only_after_its_own_sync() {
    let members = [1, 2];
    let mut leader = node(1, &members, config(), 1, &[], 0);
    let term = elect(&mut leader);
    let ready = leader.ready();
    assert_eq!(ready.entries.len(), 1, "the no-op");
    let no_op_index = ready.entries[0].index;
    let (applied_half, persisted_half) = ready.ack.split();
    leader.advance(applied_half);

    // The follower (every follower) has the no-op durably.
    leader.step(accepted(2, 1, term.0, no_op_index.0));
    assert_eq!(leader.commit_index(), LogIndex(0), "committed before the leader's own sync");
    settle(&mut leader);
    assert_eq!(leader.commit_index(), LogIndex(0), "a later Ready counted the unsynced write");

    leader.advance(persisted_half);
    assert_eq!(leader.commit_index(), no_op_index, "the sync completes the majority");
}

/// The same rule in a cluster of one (the leader is the whole majority) and of three (a
/// majority of followers is enough without the leader's copy: a durable majority is what
/// counts).
#[test]
fn a_single_leader_commits_on_its_sync_and_two_followers_commit_without_it() {
    let mut single = node(1, &[1], config(), 1, &[], 0);
    elect(&mut single);
    let ready = single.ready();
    let (applied_half, persisted_half) = ready.ack.split();
    single.advance(applied_half);
    assert_eq!(single.commit_index(), LogIndex(0), "committed before its only copy was synced");
    single.advance(persisted_half);
    assert_eq!(single.commit_index(), LogIndex(1));

    let mut leader = node(1, &MEMBERS, config(), 1, &[], 0);
    let term = elect(&mut leader).0;
    let ready = leader.ready();
    let (applied_half, _unsynced) = ready.ack.split();
    leader.advance(applied_half);
    leader.step(accepted(2, 1, term, 1));
    assert_eq!(leader.commit_index(), LogIndex(0), "one follower and an unsynced leader");
    leader.step(accepted(3, 1, term, 1));
    assert_eq!(leader.commit_index(), LogIndex(1), "two durable followers are a majority");
}

// ---------------------------------------------------------------------------------------------
// Snapshots (§7): core/snapshot.rs, core/log.rs
// ---------------------------------------------------------------------------------------------

/// §7: "Usually the snapshot will contain new information not already in the recipient's log.
/// In this case, the follower discards its entire log; it is all superseded by the snapshot
/// and may possibly have uncommitted entries that conflict with the snapshot." (Figure 13,
/// receiver steps 7-8: "Discard the entire log", "Reset state machine using snapshot
/// contents".) A follower whose log ends at 3@1 installs a snapshot through 5@2: it hands out
/// the snapshot and a log reset, commits through 5, continues its log from 6, and acknowledges
/// only once the snapshot is stored. Entries past the snapshot that conflict with it go too.
#[test]
fn a_follower_installs_a_snapshot_beyond_its_log_and_discards_the_log() {
    let mut follower = node(2, &MEMBERS, config(), 1, &[1, 1, 1], 1);
    let carried =
        step_and_carry_out(&mut follower, install_snapshot(1, 2, 2, log_id(2, 5), b"through 5"));
    let snapshot = carried.snapshot.expect("the snapshot is handed out to store and restore");
    assert_eq!(snapshot.meta.last_included, log_id(2, 5));
    assert_eq!(bytes_of(&snapshot), Bytes::from_static(b"through 5"));
    assert_eq!(carried.log_reset, Some(log_id(2, 5)));
    assert_eq!(follower.last_log_id(), log_id(2, 5));
    assert_eq!(follower.commit_index(), LogIndex(5));
    assert_eq!(follower.entry(LogIndex(3)), None, "the old log is discarded");
    let installed = |messages: &[Message]| {
        messages.iter().any(|message| {
            matches!(message.body, MessageBody::InstallSnapshotResponse { installed: true, last_included, .. } if last_included == log_id(2, 5))
        })
    };
    assert!(installed(&carried.persisted_messages), "{:?}", carried.persisted_messages);
    assert!(!installed(&carried.messages), "acknowledged before the snapshot is stored");

    let answer =
        deliver(&mut follower, append_entries(1, 2, 2, log_id(2, 5), vec![entry(2, 6)], 5));
    assert_eq!(append_answer(&answer).1, AppendResponse::Accepted { match_index: LogIndex(6) });

    // A longer log that does not hold the snapshot's last entry is discarded whole.
    let mut follower = node(2, &MEMBERS, config(), 1, &[1, 1, 1, 1, 1, 1], 1);
    let carried =
        step_and_carry_out(&mut follower, install_snapshot(1, 2, 2, log_id(2, 4), b"through 4"));
    assert!(carried.snapshot.is_some());
    assert_eq!(carried.log_reset, Some(log_id(2, 4)));
    assert_eq!(follower.last_log_id(), log_id(2, 4), "entries 5 and 6 of term 1 must go");
    assert_eq!(follower.entry(LogIndex(5)), None);
}

/// §7: "If instead the follower receives a snapshot that describes a prefix of its log (due to
/// retransmission or by mistake), then log entries covered by the snapshot are deleted but
/// entries following the snapshot are still valid and must be retained." (Figure 13, receiver
/// step 6: "If existing log entry has same index and term as snapshot's last included entry,
/// retain log entries following it and reply".) A follower holding 3@2 4@2 5@2 receives a
/// snapshot through 3@2: it keeps 4 and 5, resets nothing, and acknowledges the snapshot.
#[test]
fn a_follower_keeps_the_log_after_a_snapshot_that_matches_it() {
    let mut follower = node(2, &MEMBERS, config(), 2, &[1, 1, 2, 2, 2], 1);
    let carried =
        step_and_carry_out(&mut follower, install_snapshot(1, 2, 2, log_id(2, 3), b"through 3"));
    assert_eq!(carried.log_reset, None, "a matching log was reset");
    assert_eq!(follower.last_log_id(), log_id(2, 5), "the entries after the snapshot were lost");
    assert_eq!(follower.entry(LogIndex(4)), Some(&entry(2, 4)));
    assert_eq!(follower.entry(LogIndex(5)), Some(&entry(2, 5)));
    let acknowledged = carried.all_messages().iter().any(|message| {
        matches!(message.body, MessageBody::InstallSnapshotResponse { installed: true, last_included, .. } if last_included == log_id(2, 3))
    });
    assert!(acknowledged, "{:?}", carried.all_messages());
}

/// §7 (Figure 13, receiver step 6, and ARCHITECTURE.md): a snapshot covers only committed
/// entries, and committed entries are the same on every server, so a snapshot whose last
/// entry is already committed here tells the follower nothing: it is acknowledged at once,
/// without being installed (no state-machine reset, no log reset). Here the follower's own
/// snapshot (through 5) has compacted the snapshot's last entry (3) away, so only the commit
/// index can tell.
#[test]
fn a_snapshot_whose_end_is_already_committed_is_acknowledged_without_installing() {
    let own_snapshot = stored(
        SnapshotMeta {
            last_included: log_id(1, 5),
            configuration: Configuration::of_voters(MEMBERS.map(NodeId)),
        },
        b"own through 5",
    );
    let initial = InitialState {
        hard_state: HardState { term: Term(1), voted_for: None, commit_index: LogIndex(7) },
        snapshot: Some(own_snapshot),
        entries: vec![entry(1, 6), entry(1, 7)],
        members: None,
    };
    let mut follower = start(2, &MEMBERS, config(), initial);
    settle(&mut follower);
    let carried =
        step_and_carry_out(&mut follower, install_snapshot(1, 2, 2, log_id(1, 3), b"old"));
    assert!(carried.snapshot.is_none(), "an already committed snapshot was installed");
    assert_eq!(carried.log_reset, None);
    assert_eq!(follower.last_log_id(), log_id(1, 7));
    assert_eq!(follower.commit_index(), LogIndex(7));
    let acknowledged = carried.persisted_messages.iter().any(|message| {
        matches!(message.body, MessageBody::InstallSnapshotResponse { installed: true, last_included, .. } if last_included == log_id(1, 3))
    });
    assert!(acknowledged, "{:?}", carried.all_messages());
}

/// §7: "the leader must occasionally send snapshots to followers that lag behind. This
/// happens when the leader has already discarded the next log entry that it needs to send to
/// a follower." A leader that compacted its log behind a stored snapshot (keeping
/// `snapshot_keep_entries` = 0 entries below it) sends an empty follower that snapshot in
/// chunks of at most `snapshot_chunk_bytes`, with at most `max_inflight_snapshot_chunks`
/// unconfirmed; once the follower has installed it, the log after it follows and the
/// follower's copy completes a majority for the leader's no-op.
#[test]
fn a_leader_sends_its_snapshot_to_a_follower_that_needs_compacted_entries() {
    let config = Config {
        snapshot_keep_entries: 0,
        snapshot_chunk_bytes: 4,
        max_inflight_snapshot_chunks: 2,
        ..config()
    };
    let mut leader = node(1, &MEMBERS, config.clone(), 1, &[1, 1, 1, 1], 4);
    let (term, _) = elect_and_settle(&mut leader);
    assert_eq!(leader.applied_index(), LogIndex(4));
    let meta = leader.snapshot_meta_for_applied().expect("entries 1-4 are applied");
    assert_eq!(meta.last_included, log_id(1, 4));
    let data = Bytes::from_static(b"state through 4");
    let compacted = leader.snapshot_stored(stored(meta, &data));
    assert_eq!(compacted, Some(LogIndex(4)));
    assert_eq!(leader.first_log_index(), LogIndex(5));

    // An empty follower says its log ends before index 1; the leader no longer holds 1-4.
    let mut follower = node(2, &MEMBERS, config, 1, &[], 0);
    let hint = ConflictHint { conflict_term: None, first_index: LogIndex(1) };
    let response = AppendResponse::Rejected { rejected_prev_index: LogIndex(4), hint };
    let rejection = message(
        2,
        1,
        term.0,
        MessageBody::AppendEntriesResponse {
            result: response,
            round: raft_consensus::types::HeartbeatRound(0),
        },
    );
    let first_chunks = deliver(&mut leader, rejection);
    let offsets: Vec<u64> = first_chunks
        .iter()
        .filter_map(|message| match &message.body {
            MessageBody::InstallSnapshot { offset, data, snapshot } => {
                assert!(data.len() <= 4, "a chunk of {} bytes", data.len());
                assert_eq!(snapshot.size, 15);
                Some(*offset)
            }
            _ => None,
        })
        .collect();
    assert_eq!(offsets, vec![0, 4], "two chunks in flight, from the start");

    let sent = exchange(&mut [&mut leader, &mut follower], first_chunks);
    let chunk_bytes: usize = sent
        .iter()
        .map(|message| match &message.body {
            MessageBody::InstallSnapshot { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert!(chunk_bytes >= 15, "the whole snapshot went");
    assert_eq!(follower.snapshot().map(bytes_of), Some(data));
    assert_eq!(follower.last_log_id(), log_id(term.0, 5), "the log after the snapshot followed");
    assert_eq!(leader.commit_index(), LogIndex(5), "the follower's copy completes a majority");
}

/// §7: "the leader must occasionally send snapshots to followers that lag behind", and while
/// it does, the follower's log cannot answer for anything before the snapshot's end: a
/// rejection that reaches the leader during a transfer (a late answer to an AppendEntries sent
/// before the transfer started, or to a transfer's heartbeat) does not restart the transfer.
/// Here follower 2 (match 2, entry 3 in flight) rejects the heartbeat anchored at entry 3
/// after the leader compacts through 3: it needs entry 3, whose predecessor is compacted, so
/// a snapshot transfer starts; the same rejection arriving again, late, leaves the transfer as
/// it is: nothing is sent again.
#[test]
fn a_rejection_during_a_snapshot_transfer_does_not_restart_it() {
    let config = Config { snapshot_keep_entries: 0, ..config() };
    let mut leader = node(1, &MEMBERS, config, 1, &[1], 1);
    let (term, _) = elect_and_settle(&mut leader);
    for follower in [2, 3] {
        deliver(&mut leader, accepted(follower, 1, term.0, 2));
    }
    leader.propose(Bytes::from_static(b"x")).expect("the leader accepts a proposal");
    settle(&mut leader);
    deliver(&mut leader, accepted(3, 1, term.0, 3));
    assert_eq!(leader.applied_index(), LogIndex(3));
    let meta = leader.snapshot_meta_for_applied().expect("entries 1-3 are applied");
    let snapshot = stored(meta, b"state through 3");
    assert_eq!(leader.snapshot_stored(snapshot), Some(LogIndex(3)));

    leader.heartbeat_now();
    let heartbeat_to_2 = settle(&mut leader).into_iter().find(|message| message.to == NodeId(2));
    assert!(
        matches!(
            heartbeat_to_2.map(|message| message.body),
            Some(MessageBody::AppendEntries { prev_log_id, .. }) if prev_log_id.index == LogIndex(3)
        ),
        "the heartbeat is anchored at the last entry sent to node2"
    );
    let chunks_to_2 = |messages: &[Message]| {
        messages
            .iter()
            .filter(|message| message.to == NodeId(2))
            .filter(|message| matches!(message.body, MessageBody::InstallSnapshot { .. }))
            .count()
    };
    let hint = ConflictHint { conflict_term: None, first_index: LogIndex(3) };
    let response = AppendResponse::Rejected { rejected_prev_index: LogIndex(3), hint };
    let rejection = message(
        2,
        1,
        term.0,
        MessageBody::AppendEntriesResponse {
            result: response,
            round: raft_consensus::types::HeartbeatRound(0),
        },
    );
    let sent = deliver(&mut leader, rejection.clone());
    assert!(chunks_to_2(&sent) > 0, "node2 needs entry 3, after a compacted one: a snapshot goes");

    let late = rejection;
    let sent = deliver(&mut leader, late);
    assert_eq!(chunks_to_2(&sent), 0, "the transfer restarted: {sent:?}");
    assert!(sent.is_empty(), "a rejection during a transfer sent {sent:?}");
}

/// §5.3: "If followers crash or run slowly, or if network packets are lost, the leader retries
/// AppendEntries RPCs indefinitely", and so it does with InstallSnapshot's chunks (§7): a
/// transfer that the follower confirms nothing of for an election timeout starts again from
/// the last byte the follower confirmed. An answer never moves the transfer back (a late or
/// duplicated one says nothing new), and a shorter wait (a slow link) resends nothing. Here
/// the first two chunks (bytes 0-7) are lost: a heartbeat later nothing is resent; an
/// election timeout later bytes 0-7 are.
#[test]
fn a_stalled_snapshot_transfer_is_resent_from_the_last_confirmed_byte() {
    let config = Config {
        snapshot_keep_entries: 0,
        snapshot_chunk_bytes: 4,
        max_inflight_snapshot_chunks: 2,
        ..config()
    };
    let heartbeat = config.heartbeat_interval_ms;
    let patience = config.election_timeout_max_ms;
    let mut leader = node(1, &MEMBERS, config.clone(), 1, &[1, 1, 1, 1], 4);
    let elected_at = leader.next_deadline_ms();
    let (term, _) = elect_and_settle(&mut leader);
    let meta = leader.snapshot_meta_for_applied().expect("entries 1-4 are applied");
    let snapshot = stored(meta, b"state through 4");
    assert_eq!(leader.snapshot_stored(snapshot.clone()), Some(LogIndex(4)));

    // A heartbeat at `now`, and node3's answer to it (which keeps the leader's quorum: this
    // test waits for several election timeouts).
    let beat = |leader: &mut RaftCore, now: u64| {
        leader.tick(now);
        let mut sent = settle(leader);
        sent.extend(deliver(leader, accepted(3, 1, leader.term().0, 4)));
        sent
    };
    let chunk_offsets = |messages: &[Message]| -> Vec<u64> {
        snapshot_chunks_to(2, messages).into_iter().map(|(_, offset)| offset).collect()
    };
    let hint = ConflictHint { conflict_term: None, first_index: LogIndex(1) };
    let response = AppendResponse::Rejected { rejected_prev_index: LogIndex(4), hint };
    let rejection = message(
        2,
        1,
        term.0,
        MessageBody::AppendEntriesResponse {
            result: response,
            round: raft_consensus::types::HeartbeatRound(0),
        },
    );
    let lost = deliver(&mut leader, rejection);
    assert_eq!(chunk_offsets(&lost), vec![0, 4], "two chunks in flight, from the start");

    // Heartbeats go out on time; chunks wait for the follower (a slow link is not a loss).
    let mut now = elected_at;
    while now + heartbeat <= elected_at + patience {
        now += heartbeat;
        let sent = beat(&mut leader, now);
        assert!(chunk_offsets(&sent).is_empty(), "resent after {} ms: {sent:?}", now - elected_at);
    }
    now += heartbeat;
    let resent = beat(&mut leader, now);
    assert_eq!(chunk_offsets(&resent), vec![0, 4], "the lost chunks were not sent again");

    // The follower confirms bytes 0-3; the leader sends bytes 8-11 (the window is 8 bytes).
    let answer = |received| MessageBody::InstallSnapshotResponse {
        snapshot: snapshot.id,
        last_included: log_id(1, 4),
        received,
        installed: false,
        gap: false,
    };
    let window = deliver(&mut leader, message(2, 1, term.0, answer(4)));
    assert_eq!(chunk_offsets(&window), vec![8]);
    // A duplicated answer, and a late one saying less, send nothing and move nothing back.
    let duplicate = deliver(&mut leader, message(2, 1, term.0, answer(4)));
    assert!(duplicate.is_empty(), "a duplicated answer resent {duplicate:?}");
    let late = deliver(&mut leader, message(2, 1, term.0, answer(0)));
    assert!(late.is_empty(), "a late answer resent {late:?}");
    // An answer about another snapshot through the same entry is not about this transfer.
    let other = MessageBody::InstallSnapshotResponse {
        snapshot: SnapshotId(snapshot.id.0 ^ 1),
        last_included: log_id(1, 4),
        received: 15,
        installed: false,
        gap: false,
    };
    assert!(deliver(&mut leader, message(2, 1, term.0, other)).is_empty());
    // Bytes 4-11 are lost: an election timeout later the leader resends from byte 4, not 0.
    let confirmed_at = now;
    while now + heartbeat <= confirmed_at + patience {
        now += heartbeat;
        assert!(chunk_offsets(&beat(&mut leader, now)).is_empty());
    }
    now += heartbeat;
    let resent = beat(&mut leader, now);
    assert_eq!(chunk_offsets(&resent), vec![0, 4], "the follower said it lost bytes: from 0");

    // The follower holds 0-7 this time: the rest goes (8-11, 12-14), and is lost again. An
    // election timeout later it is resent from byte 8, once.
    let window = deliver(&mut leader, message(2, 1, term.0, answer(8)));
    assert_eq!(chunk_offsets(&window), vec![8, 12]);
    let confirmed_at = now;
    let mut resent = Vec::new();
    while now <= confirmed_at + patience {
        now += heartbeat;
        resent.extend(chunk_offsets(&beat(&mut leader, now)));
    }
    assert_eq!(resent, vec![8, 12], "not resent once from the confirmed byte 8");

    // Meanwhile the no-op 5@2 commits and the leader snapshots through it: when the transfer
    // stalls again, the leader sends the newer snapshot, from its start.
    deliver(&mut leader, accepted(3, 1, term.0, 5));
    assert_eq!(leader.applied_index(), LogIndex(5));
    let meta = leader.snapshot_meta_for_applied().expect("entries 1-5 are applied");
    let newer = stored(meta, b"state through 5");
    assert_eq!(leader.snapshot_stored(newer), Some(LogIndex(5)));
    let mut restarted = Vec::new();
    for _ in 0..(3 * patience / heartbeat + 2) {
        now += heartbeat;
        restarted.extend(snapshot_chunks_to(2, &beat(&mut leader, now)));
        if !restarted.is_empty() {
            break;
        }
    }
    assert_eq!(restarted, vec![(log_id(2, 5), 0), (log_id(2, 5), 4)], "not the newer snapshot");
}

/// §7: the leader sends a snapshot only to "a follower that has fallen too far behind"; a
/// follower that turns out to hold everything the snapshot covers (it installed it and its
/// answer was lost) accepts the transfer's heartbeat, anchored at the snapshot's last entry,
/// and the leader goes back to sending it the log after that entry, with no more chunks.
#[test]
fn a_follower_that_already_holds_the_snapshot_gets_the_log_after_it() {
    let config = Config {
        snapshot_keep_entries: 0,
        snapshot_chunk_bytes: 4,
        max_inflight_snapshot_chunks: 2,
        ..config()
    };
    let mut leader = node(1, &MEMBERS, config, 1, &[1, 1, 1, 1], 4);
    let (term, _) = elect_and_settle(&mut leader);
    let meta = leader.snapshot_meta_for_applied().expect("entries 1-4 are applied");
    let snapshot = stored(meta, b"state through 4");
    let id = snapshot.id;
    assert_eq!(leader.snapshot_stored(snapshot), Some(LogIndex(4)));
    let hint = ConflictHint { conflict_term: None, first_index: LogIndex(1) };
    let response = AppendResponse::Rejected { rejected_prev_index: LogIndex(4), hint };
    let rejection = message(
        2,
        1,
        term.0,
        MessageBody::AppendEntriesResponse {
            result: response,
            round: raft_consensus::types::HeartbeatRound(0),
        },
    );
    let chunks = deliver(&mut leader, rejection);
    assert!(
        chunks.iter().any(|message| matches!(message.body, MessageBody::InstallSnapshot { .. }))
    );

    let sent = deliver(&mut leader, accepted(2, 1, term.0, 4));
    let to_2: Vec<&MessageBody> = sent
        .iter()
        .filter(|message| message.to == NodeId(2))
        .map(|message| &message.body)
        .collect();
    assert!(
        !to_2.iter().any(|body| matches!(body, MessageBody::InstallSnapshot { .. })),
        "more chunks to a follower that holds the snapshot: {to_2:?}"
    );
    let prevs: Vec<LogId> = to_2
        .iter()
        .filter_map(|body| match body {
            MessageBody::AppendEntries { prev_log_id, .. } => Some(*prev_log_id),
            _ => None,
        })
        .collect();
    assert_eq!(prevs, vec![log_id(1, 4)], "the log after the snapshot: {to_2:?}");

    // The follower's late answer that it installed the snapshot changes nothing: the leader
    // already streams it the log after the snapshot.
    let body = MessageBody::InstallSnapshotResponse {
        snapshot: id,
        last_included: log_id(1, 4),
        received: 15,
        installed: true,
        gap: false,
    };
    let sent = deliver(&mut leader, message(2, 1, term.0, body));
    assert!(sent.is_empty(), "a late installation answer restarted replication: {sent:?}");
    let older = MessageBody::InstallSnapshotResponse {
        snapshot: SnapshotId(7),
        last_included: log_id(1, 3),
        received: 15,
        installed: true,
        gap: false,
    };
    let sent = deliver(&mut leader, message(2, 1, term.0, older));
    assert!(sent.is_empty(), "an answer about an older snapshot restarted replication: {sent:?}");
}

/// §7 (retries, §5.3): a leader "retries ... indefinitely" until the follower has what it
/// needs, and an answer about an earlier snapshot says nothing about the one being sent now.
/// Follower 2 holds entries through 5; the leader compacts through 7 and sends it the
/// snapshot through 7. A duplicated answer from an earlier transfer, "installed the snapshot
/// through 5", arrives in the middle: the transfer goes on where it was, instead of being
/// dropped and started again from byte 0.
#[test]
fn an_answer_about_an_older_snapshot_leaves_the_transfer_in_progress() {
    let config = Config {
        snapshot_keep_entries: 0,
        snapshot_chunk_bytes: 4,
        max_inflight_snapshot_chunks: 2,
        ..config()
    };
    let mut leader = node(1, &MEMBERS, config, 1, &[1, 1, 1, 1], 4);
    let (term, _) = elect_and_settle(&mut leader);
    // Follower 2 stores the no-op 5@2, which commits; the leader appends 6 and 7, which
    // follower 3 stores, and takes a snapshot through 7.
    deliver(&mut leader, accepted(2, 1, term.0, 5));
    for command in [b"six".as_slice(), b"seven".as_slice()] {
        leader.propose(Bytes::copy_from_slice(command)).expect("the leader takes proposals");
    }
    settle(&mut leader);
    deliver(&mut leader, accepted(3, 1, term.0, 7));
    assert_eq!(leader.applied_index(), LogIndex(7));
    let meta = leader.snapshot_meta_for_applied().expect("entries 1-7 are applied");
    let snapshot = stored(meta, b"state through 7");
    let id = snapshot.id;
    assert_eq!(leader.snapshot_stored(snapshot), Some(LogIndex(7)));

    // Follower 2 never got 6 and 7: it rejects, and needs the snapshot (6 is compacted).
    let hint = ConflictHint { conflict_term: None, first_index: LogIndex(6) };
    let response = AppendResponse::Rejected { rejected_prev_index: LogIndex(7), hint };
    let rejection = message(
        2,
        1,
        term.0,
        MessageBody::AppendEntriesResponse {
            result: response,
            round: raft_consensus::types::HeartbeatRound(0),
        },
    );
    let offsets = |messages: &[Message]| snapshot_chunks_to(2, messages);
    let started = deliver(&mut leader, rejection);
    assert_eq!(offsets(&started), vec![(log_id(2, 7), 0), (log_id(2, 7), 4)]);

    let stale = MessageBody::InstallSnapshotResponse {
        snapshot: SnapshotId(5),
        last_included: log_id(2, 5),
        received: 12,
        installed: true,
        gap: false,
    };
    let sent = deliver(&mut leader, message(2, 1, term.0, stale));
    assert!(offsets(&sent).is_empty(), "the transfer started over: {sent:?}");

    // The transfer goes on from where the follower is: bytes 0-3 confirmed, 8-11 next.
    let progress = MessageBody::InstallSnapshotResponse {
        snapshot: id,
        last_included: log_id(2, 7),
        received: 4,
        installed: false,
        gap: false,
    };
    let sent = deliver(&mut leader, message(2, 1, term.0, progress));
    assert_eq!(offsets(&sent), vec![(log_id(2, 7), 8)]);
}

/// §7: "Each server takes snapshots independently, covering just the committed entries in its
/// log", and a newer snapshot supersedes the older ones. A node that stores snapshots through
/// 2 and then 4 holds the one through 4 and compacts behind each; one through 3 that arrives
/// after it (taken earlier, stored late) is ignored: the node keeps the newer snapshot.
#[test]
fn a_stored_snapshot_replaces_only_an_older_one() {
    let config = Config { snapshot_keep_entries: 0, ..config() };
    let mut follower = node(2, &MEMBERS, config, 1, &[1, 1, 1, 1], 4);
    settle(&mut follower);
    assert_eq!(follower.applied_index(), LogIndex(4));
    let snapshot_through = |index| {
        let meta = SnapshotMeta {
            last_included: log_id(1, index),
            configuration: Configuration::of_voters(MEMBERS.map(NodeId)),
        };
        stored(meta, format!("state through {index}").as_bytes())
    };
    let held =
        |follower: &RaftCore| follower.snapshot().map(|snapshot| snapshot.meta.last_included);

    assert_eq!(follower.snapshot_stored(snapshot_through(2)), Some(LogIndex(2)));
    assert_eq!(follower.snapshot_stored(snapshot_through(4)), Some(LogIndex(4)));
    assert_eq!(held(&follower), Some(log_id(1, 4)));
    assert_eq!(follower.snapshot_stored(snapshot_through(3)), None);
    assert_eq!(held(&follower), Some(log_id(1, 4)), "an older snapshot replaced a newer one");
}

/// §7, Figure 13 (InstallSnapshot receiver): "2. Create new snapshot file if first chunk
/// (offset is 0)", "3. Write data into snapshot file at given offset". A transfer that a new
/// leader starts from offset 0 must not be spliced onto the bytes an earlier leader sent: two
/// leaders' snapshots through the same entry hold the same state, but not necessarily the
/// same bytes (a state machine may serialize a hash map in any order). Here node1 (term 2)
/// sends the first half of its encoding, then node3 (term 3) sends a whole snapshot with the
/// same metadata and length but other bytes: the follower must install node3's bytes. (Found
/// by this test: the core once matched transfers by metadata and length only, kept the
/// partial transfer across the change of leader, and installed `b"AAAAbbbb"`.)
#[test]
fn a_new_leaders_snapshot_transfer_is_not_spliced_onto_an_earlier_leaders() {
    let chunk = |from, term, whole: &'static [u8], offset: u64, len| {
        snapshot_chunk(from, 2, term, log_id(1, 5), whole, offset as usize, len)
    };
    let mut follower = node(2, &MEMBERS, config(), 1, &[1], 1);
    deliver(&mut follower, chunk(1, 2, b"AAAAaaaa", 0, 4));

    // Node3 leads term 3 and sends its own encoding from the start, in one chunk.
    let answer = deliver(&mut follower, chunk(3, 3, b"bbbbbbbb", 0, 8));
    if follower.snapshot().is_none() {
        // Node3 continues from where the follower says it stands, as a leader does.
        let received = answer
            .iter()
            .find_map(|message| match message.body {
                MessageBody::InstallSnapshotResponse { received, .. } => Some(received),
                _ => None,
            })
            .expect("an answer to node3's chunk");
        deliver(&mut follower, chunk(3, 3, b"bbbbbbbb", received, 8));
    }
    let installed = follower.snapshot().map(bytes_of);
    assert_eq!(installed, Some(Bytes::from_static(b"bbbbbbbb")));
}

/// §7, Figure 13 again ("Create new snapshot file if first chunk (offset is 0)"), for one
/// leader: a leader that starts a transfer of a newer snapshot (here through 6, after a
/// partial one through 5) starts a new file; the follower installs the newer snapshot's bytes,
/// not the older one's prefix spliced onto them.
#[test]
fn a_leaders_newer_snapshot_transfer_is_not_spliced_onto_its_older_one() {
    let chunk = |through, whole: &'static [u8], offset: u64, len| {
        snapshot_chunk(1, 2, 2, log_id(1, through), whole, offset as usize, len)
    };
    let mut follower = node(2, &MEMBERS, config(), 1, &[1], 1);
    deliver(&mut follower, chunk(5, b"AAAAaaaa", 0, 4));

    let answer = deliver(&mut follower, chunk(6, b"bbbbbbbb", 0, 8));
    if follower.snapshot().is_none() {
        // The leader continues from where the follower says it stands.
        let received = answer
            .iter()
            .find_map(|message| match message.body {
                MessageBody::InstallSnapshotResponse { received, .. } => Some(received),
                _ => None,
            })
            .expect("an answer to the newer snapshot's chunk");
        deliver(&mut follower, chunk(6, b"bbbbbbbb", received, 8));
    }
    let installed =
        follower.snapshot().map(|snapshot| (snapshot.meta.last_included, bytes_of(snapshot)));
    assert_eq!(installed, Some((log_id(1, 6), Bytes::from_static(b"bbbbbbbb"))));
}

// ---------------------------------------------------------------------------------------------
// PreVote (thesis §9.6) and the leader lease (thesis §4.2.3): core/election.rs
// ---------------------------------------------------------------------------------------------

/// Thesis §9.6: a pre-vote asks whether the voter "would be willing to grant the candidate
/// their votes" in the candidate's next term, and Figure 2's RequestVote receiver votes only in
/// a term it has not voted in yet. So a pre-vote is granted only for a term beyond the
/// voter's own: a voter in term 2 (its vote cast for node3) refuses a pre-vote for term 2,
/// answering with its own term, even from a candidate whose log is as up to date as its own
/// and with no leader heard from; it grants one for term 3.
#[test]
fn a_pre_vote_is_granted_only_for_a_term_beyond_the_voters() {
    let hard_state =
        HardState { term: Term(2), voted_for: Some(NodeId(3)), commit_index: LogIndex(1) };
    let initial =
        InitialState { hard_state, snapshot: None, entries: log_of_terms(&[1]), members: None };
    let mut voter = start(2, &MEMBERS, pre_vote_config(), initial);
    let pre_vote = |term| message(1, 2, term, MessageBody::PreVote { last_log_id: log_id(1, 1) });
    let answer = |messages: &[Message]| {
        let answers: Vec<(Term, bool)> = messages
            .iter()
            .filter_map(|message| match message.body {
                MessageBody::PreVoteResponse { granted } => Some((message.term, granted)),
                _ => None,
            })
            .collect();
        assert_eq!(answers.len(), 1, "one pre-vote answer: {messages:?}");
        answers[0]
    };
    let same_term = deliver(&mut voter, pre_vote(2));
    assert_eq!(answer(&same_term), (Term(2), false), "a pre-vote for the voter's own term");
    let next_term = deliver(&mut voter, pre_vote(3));
    assert_eq!(answer(&next_term), (Term(3), true));
    assert_eq!(voter.term(), Term(2), "a pre-vote changes no term");
}

/// Figure 2, "Rules for Servers, All Servers": "If RPC request or response contains term T >
/// currentTerm: set currentTerm = T, convert to follower (§5.1)". A pre-vote refusal carries
/// the voter's own term: a node in term 1 whose pre-vote is refused by a voter in term 5
/// moves to term 5 (without a vote); a refusal from its own term changes nothing.
#[test]
fn a_pre_vote_refusal_from_a_newer_term_raises_the_term() {
    let mut asking = node(1, &MEMBERS, pre_vote_config(), 1, &[1], 1);
    let deadline = asking.next_deadline_ms();
    asking.tick(deadline);
    settle(&mut asking);
    let refusal = |term| message(2, 1, term, MessageBody::PreVoteResponse { granted: false });
    deliver(&mut asking, refusal(1));
    assert_eq!((asking.term(), asking.role()), (Term(1), Role::Follower));
    deliver(&mut asking, refusal(5));
    assert_eq!((asking.term(), asking.voted_for(), asking.role()), (Term(5), None, Role::Follower));
}

/// Thesis §9.6: "In the Pre-Vote algorithm, a candidate only increments its term if it first
/// learns from a majority of the cluster that they would be willing to grant the candidate
/// their votes". The pre-vote round raises no one's term and casts no vote (nothing to
/// persist); only when a majority says yes does the node start the real election.
#[test]
fn a_pre_vote_round_raises_no_term() {
    let mut asking = node(1, &MEMBERS, pre_vote_config(), 1, &[1], 1);
    let mut voter = node(2, &MEMBERS, pre_vote_config(), 1, &[1], 1);
    let deadline = asking.next_deadline_ms();
    asking.tick(deadline);
    let carried = carry_out(&mut asking);
    assert_eq!((asking.term(), asking.voted_for(), asking.role()), (Term(1), None, Role::Follower));
    assert!(carried.hard_state.is_none(), "a pre-vote round persisted {:?}", carried.hard_state);
    assert_eq!(asking.elections_started(), 0, "a pre-vote round is not an election");
    let pre_vote = carried
        .messages
        .into_iter()
        .find(|message| message.to == NodeId(2))
        .expect("a pre-vote request to node2");
    assert!(matches!(pre_vote.body, MessageBody::PreVote { .. }), "{pre_vote:?}");
    assert_eq!(pre_vote.term, Term(2), "it asks about the next term");

    voter.step(pre_vote);
    let answered = carry_out(&mut voter);
    assert!(answered.hard_state.is_none());
    assert_eq!((voter.term(), voter.voted_for()), (Term(1), None), "a pre-vote changed the voter");
    let grant = answered.messages.into_iter().next().expect("an answer");
    assert_eq!(grant.body, MessageBody::PreVoteResponse { granted: true });

    // With a majority (itself and node2) it stands for real.
    asking.step(grant);
    assert_eq!((asking.role(), asking.term()), (Role::Candidate, Term(2)));
    assert_eq!(asking.elections_started(), 1, "the real election is counted once");
}

/// Thesis §4.2.3: "if a server receives a RequestVote request within the minimum election
/// timeout of hearing from a current leader, it does not update its term or grant its vote".
/// The lease guards against a *later* term disrupting the leader; a vote request of the
/// voter's own term raises no term and is decided as usual (Figure 2): a follower in a lease
/// that voted for its leader answers another candidate of that term with a refusal.
#[test]
fn a_same_term_vote_request_in_a_leader_lease_is_answered() {
    let hard_state =
        HardState { term: Term(2), voted_for: Some(NodeId(1)), commit_index: LogIndex(1) };
    let initial =
        InitialState { hard_state, snapshot: None, entries: log_of_terms(&[1]), members: None };
    let mut follower = start(2, &MEMBERS, pre_vote_config(), initial);
    deliver(&mut follower, append_entries(1, 2, 2, log_id(1, 1), vec![], 1));
    assert_eq!(follower.leader_id(), Some(NodeId(1)));
    let answer = deliver(&mut follower, request_vote(3, 2, 2, log_id(1, 1)));
    assert_eq!(vote_answer(&answer, 3), (Term(2), false));
}

/// Thesis §9.6: voters grant a pre-vote only if they "have not received heartbeats from a
/// valid leader for at least a baseline election timeout"; §4.2.3: "if a server receives a
/// RequestVote request within the minimum election timeout of hearing from a current leader,
/// it does not update its term or grant its vote." A follower that heard its leader 50 ms ago
/// refuses a pre-vote (with its own term) and ignores a RequestVote of a later term; once the
/// minimum election timeout has passed without the leader, it grants the pre-vote.
#[test]
fn a_node_in_a_leader_lease_refuses_pre_votes() {
    let mut follower = node(2, &MEMBERS, pre_vote_config(), 2, &[1, 2], 1);
    follower.tick(100);
    deliver(&mut follower, append_entries(3, 2, 2, log_id(2, 2), vec![], 2));
    assert_eq!(follower.leader_id(), Some(NodeId(3)));
    follower.tick(150);

    let pre_vote = message(1, 2, 3, MessageBody::PreVote { last_log_id: log_id(2, 2) });
    let answer = deliver(&mut follower, pre_vote.clone());
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(
        answer[0].body,
        MessageBody::PreVoteResponse { granted: false },
        "granted in the lease"
    );
    assert_eq!(answer[0].term, Term(2));

    let answer = deliver(&mut follower, request_vote(1, 2, 3, log_id(2, 2)));
    assert!(answer.is_empty(), "a vote request in the lease was answered: {answer:?}");
    assert_eq!((follower.term(), follower.voted_for()), (Term(2), None));
    assert_eq!(follower.leader_id(), Some(NodeId(3)));

    // The lease ends a minimum election timeout after the leader was last heard.
    follower.tick(100 + config().election_timeout_min_ms);
    let answer = deliver(&mut follower, pre_vote);
    let granted = answer.iter().any(|message| {
        message.to == NodeId(1) && message.body == MessageBody::PreVoteResponse { granted: true }
    });
    assert!(granted, "the pre-vote was refused after the lease: {answer:?}");
    assert_eq!(follower.term(), Term(2));
}

/// Thesis §9.6: "This prevents a partitioned server from disrupting the cluster when it rejoins
/// ... the server will not be able to increment its term, since it could not get a majority
/// to grant it pre-votes" (closely paraphrased). Node1 was cut off from the leader (node3 of
/// term 2, followed by node2) and its timer fires: the leader and node2 refuse its pre-vote,
/// node1 stays in term 2 without a vote request, and the leader's next heartbeat reaches node1
/// without anyone stepping down. (Without pre-vote, node1 would answer that heartbeat with
/// term 3 and depose the leader.)
#[test]
fn a_node_whose_pre_vote_fails_does_not_disrupt_the_leader() {
    let mut leader = node(3, &MEMBERS, pre_vote_config(), 1, &[1], 1);
    let (term, taking_office) = elect_and_settle(&mut leader);
    assert_eq!(term, Term(2));
    let mut follower = node(2, &MEMBERS, pre_vote_config(), 2, &[1], 1);
    let mut rejoining = node(1, &MEMBERS, pre_vote_config(), 2, &[1], 1);
    // Node1 is cut off: only node2 hears the leader (and holds its no-op 2@2).
    let to_follower = taking_office.into_iter().filter(|message| message.to == NodeId(2)).collect();
    exchange(&mut [&mut leader, &mut follower], to_follower);
    assert_eq!(follower.leader_id(), Some(NodeId(3)));
    // Node1 holds the no-op too (its answer was lost): its log is as up to date as theirs.
    deliver(
        &mut rejoining,
        append_entries(
            3,
            1,
            2,
            log_id(1, 1),
            vec![Entry { term: Term(2), index: LogIndex(2), payload: EntryPayload::Blank }],
            1,
        ),
    );

    // Node1's timer fires while it hears nothing (time in node1's own clock).
    let deadline = rejoining.next_deadline_ms();
    rejoining.tick(deadline);
    let requests = settle(&mut rejoining);
    assert!(
        requests.iter().all(|message| matches!(message.body, MessageBody::PreVote { .. })),
        "{requests:?}"
    );
    assert_eq!(requests.len(), 2);
    exchange(&mut [&mut leader, &mut follower, &mut rejoining], requests);
    assert_eq!((rejoining.term(), rejoining.role()), (Term(2), Role::Follower));
    assert_eq!(rejoining.elections_started(), 0, "it stood without a pre-vote majority");
    assert_eq!((leader.role(), leader.term()), (Role::Leader, Term(2)));
    assert_eq!(follower.term(), Term(2));

    // The partition heals: the leader's heartbeat reaches node1 and the leader stays.
    let heartbeat_at = leader.next_deadline_ms();
    leader.tick(heartbeat_at);
    let heartbeats = settle(&mut leader);
    exchange(&mut [&mut leader, &mut follower, &mut rejoining], heartbeats);
    assert_eq!((leader.role(), leader.term()), (Role::Leader, Term(2)), "the leader was disrupted");
    assert_eq!(rejoining.leader_id(), Some(NodeId(3)));
    assert_eq!(rejoining.term(), Term(2));
}

// ---------------------------------------------------------------------------------------------
// CheckQuorum (thesis §6.2): core/election.rs
// ---------------------------------------------------------------------------------------------

/// Runs `leader` (and `followers`, which answer it) in 10 ms steps from `from_ms` to `to_ms`;
/// messages to nodes not in `followers` are lost.
fn run_leader(leader: &mut RaftCore, followers: &mut [RaftCore], from_ms: u64, to_ms: u64) {
    let mut now = from_ms;
    while now <= to_ms {
        leader.tick(now);
        let messages = settle(leader);
        let mut nodes: Vec<&mut RaftCore> = vec![&mut *leader];
        nodes.extend(followers.iter_mut());
        exchange(&mut nodes, messages);
        now += 10;
    }
}

/// Thesis §6.2: "a leader in Raft steps down if an election timeout elapses without a
/// successful round of heartbeats to a majority of its cluster; this allows clients to retry
/// their requests with another server." A leader of three that hears from no one stays leader
/// through the first election timeout (the maximum, here 300 ms) and steps down at its end,
/// staying in its term; one that hears from one follower (a majority with itself) stays leader
/// for many timeouts.
#[test]
fn check_quorum_leader_without_a_majority_steps_down() {
    let mut leader = node(1, &MEMBERS, config(), 1, &[1], 1);
    // `elect` fires the election timer at its deadline and wins at that instant.
    let elected_at = leader.next_deadline_ms();
    let (term, _) = elect_and_settle(&mut leader);
    let timeout = config().election_timeout_max_ms;

    run_leader(&mut leader, &mut [], elected_at, elected_at + timeout - 10);
    assert_eq!(leader.role(), Role::Leader, "stepped down before an election timeout");
    run_leader(&mut leader, &mut [], elected_at + timeout, elected_at + timeout);
    assert_eq!(leader.role(), Role::Follower, "no majority for an election timeout");
    assert_eq!(leader.term(), term, "stepping down does not change the term");
    assert_eq!(leader.leader_id(), None);
}

/// Thesis §6.2, the other half: a leader that does hear from a majority (itself and one of
/// two followers) each election timeout stays leader.
#[test]
fn check_quorum_leader_with_a_majority_stays_leader() {
    let mut leader = node(1, &MEMBERS, config(), 1, &[1], 1);
    // `elect` fires the election timer at its deadline and wins at that instant.
    let elected_at = leader.next_deadline_ms();
    let (term, taking_office) = elect_and_settle(&mut leader);
    let mut followers = [node(2, &MEMBERS, config(), 1, &[1], 1)];
    {
        let [follower] = &mut followers;
        exchange(&mut [&mut leader, follower], taking_office);
    }
    let timeout = config().election_timeout_max_ms;
    run_leader(&mut leader, &mut followers, elected_at, elected_at + 4 * timeout);
    assert_eq!(
        (leader.role(), leader.term()),
        (Role::Leader, term),
        "stepped down with a majority"
    );
    assert_eq!(followers[0].leader_id(), Some(NodeId(1)));
}

/// Thesis §6.2 again: the check repeats every election timeout, for as long as the node
/// leads. A leader that hears from a majority for several timeouts and then loses its
/// follower steps down within two more: the period under way when the follower went silent,
/// and the next, in which no majority answered.
#[test]
fn check_quorum_repeats_every_election_timeout() {
    let mut leader = node(1, &MEMBERS, config(), 1, &[1], 1);
    let elected_at = leader.next_deadline_ms();
    let (term, taking_office) = elect_and_settle(&mut leader);
    let mut followers = [node(2, &MEMBERS, config(), 1, &[1], 1)];
    {
        let [follower] = &mut followers;
        exchange(&mut [&mut leader, follower], taking_office);
    }
    let timeout = config().election_timeout_max_ms;
    let silent_from = elected_at + 3 * timeout;
    run_leader(&mut leader, &mut followers, elected_at, silent_from);
    assert_eq!(leader.role(), Role::Leader, "stepped down with a majority");

    run_leader(&mut leader, &mut [], silent_from + 10, silent_from + 2 * timeout + 10);
    assert_eq!(leader.role(), Role::Follower, "led on without a majority for two timeouts");
    assert_eq!(leader.term(), term);
}
