//! Deterministic scenario tests of the sans-I/O core against the rules of the Raft paper
//! (Ongaro & Ousterhout, extended version) and the reference cases in
//! `/work/shared/scenarios.md`.
//!
//! Every test drives production [`Node`](raft_consensus::node::Node)s through the simulator's
//! [`Cluster`]: the real write-ahead log on simulated disks, virtual time, manual message
//! delivery, fixed seeds, and the simulator's safety checks after every step.

mod common;

use std::collections::BTreeMap;

use common::{between, carries_entry_of_term, is_append_rejection, is_vote_traffic};
use raft_consensus::core::Role;
use raft_consensus::sim::{Cluster, EntryFate, preset};
use raft_consensus::{Config, EntryPayload, LogIndex, MessageBody, NodeId, Term};

/// How each node answered `candidate`'s vote requests for `term`: voter id -> granted.
fn vote_answers(cluster: &Cluster, candidate: u64, term: u64) -> BTreeMap<u64, bool> {
    cluster
        .delivered()
        .iter()
        .filter(|message| message.to == NodeId(candidate) && message.term == Term(term))
        .filter_map(|message| match message.body {
            MessageBody::RequestVoteResponse { granted } => Some((message.from.0, granted)),
            _ => None,
        })
        .collect()
}

/// Runs until every running node in `ids` has applied `count` commands.
fn run_until_applied(cluster: &mut Cluster, ids: &[u64], count: usize, max_ms: u64) {
    assert!(
        cluster.run_until(max_ms, |c| ids.iter().all(|id| c.applied(*id).len() >= count)),
        "not every node of {ids:?} applied {count} commands within {max_ms} ms:\n{}",
        cluster.describe()
    );
}

/// §5.2 (leader election) and Election Safety (Figure 3): one candidate wins a majority and
/// becomes the only leader of its term; its heartbeats make every other server a follower of
/// that term, and keep it so.
fn assert_one_leader_elected(size: u64, seed: u64) {
    let mut cluster = Cluster::new(size, seed);
    let leader = cluster.elect_leader(2_000);
    let term = cluster.term(leader);
    for id in (1..=size).filter(|id| *id != leader) {
        assert_eq!(cluster.role(id), Role::Follower, "node{id}");
        assert_eq!(cluster.term(id), term, "node{id} is in another term");
        assert_eq!(cluster.core(id).leader_id(), Some(NodeId(leader)), "node{id}");
    }
    let leaders = (1..=size).filter(|id| cluster.role(*id) == Role::Leader).count();
    assert_eq!(leaders, 1);

    // Heartbeats keep the leader in office: no one times out in a quiet second.
    cluster.advance_time(1_000);
    assert_eq!(cluster.leader(), Some(NodeId(leader)));
    assert_eq!(cluster.term(leader), term);
    assert!(cluster.has_stable_leader(), "{}", cluster.describe());
    // The leader's no-op of its term committed everywhere.
    for id in 1..=size {
        assert_eq!(cluster.commit_index(id), 1, "node{id}");
    }
}

/// §5.2: a 3-node cluster elects exactly one leader that the two others follow.
#[test]
fn three_node_cluster_elects_a_single_leader() {
    assert_one_leader_elected(3, 3);
}

/// §5.2: a 5-node cluster elects exactly one leader that the four others follow.
#[test]
fn five_node_cluster_elects_a_single_leader() {
    assert_one_leader_elected(5, 5);
}

/// §5.2 and §5.3: in a one-server cluster the server is its own majority: it elects itself
/// when its timer fires and commits a proposal as soon as the proposal is durable.
#[test]
fn single_node_cluster_elects_itself_and_commits_a_proposal() {
    let mut cluster = Cluster::new(1, 1);
    assert_eq!(cluster.elect_leader(1_000), 1);
    assert_eq!(cluster.term(1), 1);
    let index = cluster.propose(1, b"hello").expect("the leader accepts");
    assert_eq!(index, LogIndex(2), "index 1 holds the leader's no-op");
    assert_eq!(cluster.commit_index(1), 2);
    assert_eq!(cluster.applied(1), [(LogIndex(2), Term(1), b"hello".to_vec())]);
}

/// §5.2: "if many followers become candidates at the same time, votes could be split so that
/// no candidate obtains a majority"; each candidate then times out and starts a new election,
/// and randomized timeouts make a later term produce a leader.
#[test]
fn split_vote_is_resolved_in_a_later_term() {
    let mut cluster = Cluster::new(4, 4);
    cluster.campaign_together(&[1, 2]);
    // node3 hears node1 first and node4 hears node2 first: two votes each, and 4 voters
    // need 3.
    cluster.deliver_matching(|m| {
        (m.from == NodeId(1) && m.to == NodeId(3))
            || (m.from == NodeId(2) && m.to == NodeId(4))
            || matches!(m.body, MessageBody::RequestVoteResponse { .. })
    });
    cluster.deliver_all();
    assert_eq!(cluster.core(3).voted_for(), Some(NodeId(1)));
    assert_eq!(cluster.core(4).voted_for(), Some(NodeId(2)));
    for candidate in [1, 2] {
        assert_eq!(cluster.role(candidate), Role::Candidate, "node{candidate}");
        assert_eq!(cluster.term(candidate), 1);
        let granted =
            vote_answers(&cluster, candidate, 1).values().filter(|granted| **granted).count();
        assert_eq!(granted, 1, "node{candidate} got one vote besides its own");
    }
    assert_eq!(cluster.leader(), None);

    let leader = cluster.elect_leader(3_000);
    assert!(cluster.term(leader) >= 2, "{}", cluster.describe());
    assert_eq!(cluster.leader_of_term(1), None, "term 1 had no leader");
}

/// §5.2 and §5.4: when the leader crashes, followers stop hearing heartbeats, time out and
/// elect a new leader in a higher term that holds every committed entry (Leader
/// Completeness); the old leader, restarted, learns the newer term and follows.
#[test]
fn leader_crash_leads_to_a_new_leader_and_the_old_one_follows_on_restart() {
    let mut cluster = Cluster::new(5, 21);
    let old_leader = cluster.elect_leader(2_000);
    let old_term = cluster.term(old_leader);
    let commands: Vec<Vec<u8>> = (0..3).map(|n| format!("before crash {n}").into()).collect();
    for command in &commands {
        cluster.propose(old_leader, command).expect("leader accepts");
    }
    run_until_applied(&mut cluster, &[1, 2, 3, 4, 5], commands.len(), 1_000);

    cluster.crash(old_leader);
    assert!(cluster.run_until(3_000, |c| c.has_stable_leader()), "{}", cluster.describe());
    let new_leader = cluster.leader().expect("stable leader").0;
    let new_term = cluster.term(new_leader);
    assert_ne!(new_leader, old_leader);
    assert!(new_term > old_term, "{new_term} > {old_term}");
    assert_eq!(cluster.applied_commands(new_leader), commands);

    cluster.restart(old_leader);
    // A restart rebuilds the state machine from the durable log up to the durable commit
    // index: a prefix of what it applied (the last commit index is synced only with the
    // next write, so a crash may lose it); the rest once it hears the commit index again.
    let restored = cluster.applied_commands(old_leader);
    assert_eq!(restored, commands[..restored.len()], "a restart applies a prefix");
    assert!(
        cluster.run_until(1_000, |c| c.role(old_leader) == Role::Follower
            && c.term(old_leader) == new_term
            && c.core(old_leader).leader_id() == Some(NodeId(new_leader))
            && c.applied_commands(old_leader) == commands),
        "{}",
        cluster.describe()
    );
    assert_eq!(cluster.leader(), Some(NodeId(new_leader)));
    assert_eq!(cluster.log(old_leader), cluster.log(new_leader));
}

/// §5.4.1 (election restriction): a voter denies its vote to a candidate whose log is less
/// up to date than its own, so a node with a stale log cannot win however often it tries,
/// while an up-to-date node can.
#[test]
fn election_restriction_a_stale_log_cannot_win() {
    let presets = vec![preset(&[1, 1, 2]), preset(&[1, 1, 2]), preset(&[1, 1])];
    let mut cluster =
        Cluster::with_presets(presets, Config { pre_vote: false, ..Config::default() }, 31);
    for _ in 0..3 {
        cluster.campaign(3);
        cluster.deliver_all();
        let term = cluster.term(3);
        assert_eq!(
            vote_answers(&cluster, 3, term),
            BTreeMap::from([(1, false), (2, false)]),
            "term {term}"
        );
        assert_eq!(cluster.role(3), Role::Candidate);
    }
    assert_eq!(cluster.leader(), None);

    cluster.campaign(1);
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(NodeId(1)), "{}", cluster.describe());
    let term = cluster.term(1);
    assert_eq!(vote_answers(&cluster, 1, term), BTreeMap::from([(2, true), (3, true)]));
    assert_eq!(cluster.log_terms(3), vec![1, 1, 2, term]);
}

/// §5.4.1: "If the logs have last entries with different terms, then the log with the later
/// term is more up-to-date. If the logs end with the same term, then whichever log is longer
/// is more up-to-date."
#[test]
fn election_restriction_compares_last_terms_before_lengths() {
    let presets = vec![preset(&[1, 1, 1, 1, 1]).term(3), preset(&[1, 3]), preset(&[1, 3, 3])];
    let mut cluster =
        Cluster::with_presets(presets, Config { pre_vote: false, ..Config::default() }, 32);

    // The longest log loses: its last term is older.
    cluster.campaign(1);
    cluster.deliver_all();
    assert_eq!(vote_answers(&cluster, 1, 4), BTreeMap::from([(2, false), (3, false)]));
    assert_eq!(cluster.role(1), Role::Candidate);

    // node2 ends with term 3 too, but is shorter than node3: node3 refuses. node1 grants (its
    // last term is older although its log is longer), and that is a majority.
    cluster.campaign(2);
    cluster.deliver_all();
    assert_eq!(vote_answers(&cluster, 2, 5), BTreeMap::from([(1, true), (3, false)]));
    assert_eq!(cluster.leader(), Some(NodeId(2)), "{}", cluster.describe());
    // The leader's log wins: node3's uncommitted third entry is replaced by its no-op.
    for id in [1, 3] {
        assert_eq!(cluster.log_terms(id), vec![1, 3, 5], "node{id}");
    }
}

/// §5.3 and Figure 7: a new leader forces followers' logs to duplicate its own. A follower
/// may miss entries, have extra uncommitted ones, or both; the leader finds the last point
/// where the logs agree, deletes the follower's entries after it and sends its own. With the
/// conflict-term hint (§5.3, "the follower can include the term of the conflicting entry and
/// the first index it stores for that term") this takes a few round trips per follower, not
/// one per entry.
#[test]
fn figure7_leader_brings_every_follower_log_in_line_with_its_own() {
    const LEADER_LOG: [u64; 10] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[u64]); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    // node1 is the leader-to-be; nodes 2..=7 are followers a..=f. All are in term 7 and
    // know that the first three entries (held by all) are committed.
    let mut presets = vec![preset(&LEADER_LOG).term(7).committed_through(3)];
    presets.extend(followers.iter().map(|(_, log)| preset(log).term(7).committed_through(3)));
    let mut cluster =
        Cluster::with_presets(presets, Config { pre_vote: false, ..Config::default() }, 7);

    cluster.campaign(1);
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(NodeId(1)), "{}", cluster.describe());
    assert_eq!(cluster.term(1), 8);
    // c and d hold more up-to-date logs and refuse; a, b, e and f make the majority.
    assert_eq!(
        vote_answers(&cluster, 1, 8),
        BTreeMap::from([(2, true), (3, true), (4, false), (5, false), (6, true), (7, true)])
    );
    let mut expected_terms = LEADER_LOG.to_vec();
    expected_terms.push(8); // the leader's no-op
    assert_eq!(cluster.log_terms(1), expected_terms);

    for (position, (name, _)) in followers.iter().enumerate() {
        let id = position as u64 + 2;
        assert_eq!(
            cluster.log(id),
            cluster.log(1),
            "follower ({name}) must hold exactly the leader's log"
        );
        let appends = cluster
            .delivered()
            .iter()
            .filter(|m| m.from == NodeId(1) && m.to == NodeId(id))
            .filter(|m| matches!(m.body, MessageBody::AppendEntries { .. }))
            .count();
        let rejections = cluster
            .delivered()
            .iter()
            .filter(|m| m.from == NodeId(id) && m.to == NodeId(1) && is_append_rejection(m))
            .count();
        assert!(
            rejections <= 4 && appends <= rejections + 2,
            "follower ({name}) took {appends} AppendEntries and {rejections} rejections"
        );
    }

    // The no-op of term 8 commits, and with it every earlier entry of the leader's log.
    assert_eq!(cluster.commit_index(1), 11);
    cluster.fire_timer(1);
    cluster.deliver_all();
    for id in 1..=7 {
        assert_eq!(cluster.commit_index(id), 11, "node{id}");
    }
}

const S1_TERM2_COMMAND: &[u8] = b"S1's term-2 command";
const S5_TERM3_COMMAND: &[u8] = b"S5's term-3 command";

/// Figure 8, steps 1 to 3, on servers S1..S5 = nodes 1..5 whose logs hold one committed entry
/// of term 1. Each new leader first appends a no-op of its term, so a leader's own entries
/// start one index after that: S1's term-2 entries are its no-op at index 2 and a command at
/// index 3, S5's term-3 entries its no-op at 2 and a command at 3. Leaders send one entry per
/// AppendEntries so that the script can deliver some entries and not others.
fn figure8_up_to_step3() -> Cluster {
    let config = Config { max_append_entries: 1, pre_vote: false, ..Config::default() };
    let presets = (0..5).map(|_| preset(&[1]).committed_through(1)).collect();
    let mut cluster = Cluster::with_presets(presets, config, 8);

    // 1. S1 is leader in term 2 and replicates its term-2 entries to S2 only.
    cluster.campaign(1);
    cluster.deliver_matching(is_vote_traffic);
    assert_eq!(cluster.leader(), Some(NodeId(1)));
    assert_eq!(cluster.term(1), 2);
    assert_eq!(cluster.propose(1, S1_TERM2_COMMAND).ok(), Some(LogIndex(3)));
    cluster.partition(&[&[1, 2], &[3, 4, 5]]);
    cluster.deliver_all();
    assert_eq!(cluster.log_terms(1), vec![1, 2, 2]);
    assert_eq!(cluster.log_terms(2), vec![1, 2, 2]);
    assert_eq!(cluster.commit_index(1), 1, "2 of 5 is no majority");

    // 2. S1 crashes. S5 is elected for term 3 with votes from S3, S4 (S2's log is more up to
    //    date than S5's), and accepts different entries at indexes 2 and 3, on S5 only.
    cluster.crash(1);
    cluster.heal();
    cluster.campaign(5);
    cluster.deliver_matching(is_vote_traffic);
    assert_eq!(vote_answers(&cluster, 5, 3), BTreeMap::from([(2, false), (3, true), (4, true)]));
    assert_eq!(cluster.leader(), Some(NodeId(5)));
    assert_eq!(cluster.propose(5, S5_TERM3_COMMAND).ok(), Some(LogIndex(3)));
    cluster.isolate(5);
    cluster.deliver_all();
    assert_eq!(cluster.log_terms(5), vec![1, 3, 3]);
    for id in [3, 4] {
        assert_eq!(cluster.log_terms(id), vec![1], "node{id}");
    }

    // 3. S5 crashes; S1 restarts. Its first election (term 3) fails: S3 and S4 already voted
    //    for S5 in term 3. Its second (term 4) succeeds.
    cluster.crash(5);
    cluster.heal();
    cluster.restart(1);
    cluster.campaign(1);
    cluster.deliver_all();
    assert_eq!(cluster.role(1), Role::Candidate, "{}", cluster.describe());
    cluster.campaign(1);
    cluster.deliver_matching(is_vote_traffic);
    assert_eq!(cluster.leader(), Some(NodeId(1)));
    assert_eq!(cluster.term(1), 4);
    assert_eq!(cluster.log_terms(1), vec![1, 2, 2, 4]);

    // S1 continues replicating. S2 takes everything, its term-4 no-op included.
    cluster.deliver_matching(|m| between(m, 1, 2));
    assert_eq!(cluster.log_terms(2), vec![1, 2, 2, 4]);
    // S3, round trip by round trip: it rejects S1's first probe (it lacks index 3), then takes
    // index 2 and index 3, but the message with the term-4 entry is lost.
    cluster.deliver_matching(|m| m.to == NodeId(3));
    cluster.deliver_matching(|m| m.from == NodeId(3));
    cluster.deliver_matching(|m| m.to == NodeId(3) && !carries_entry_of_term(m, 4));
    cluster.deliver_matching(|m| m.from == NodeId(3));
    cluster.deliver_matching(|m| m.to == NodeId(3) && !carries_entry_of_term(m, 4));
    cluster.deliver_matching(|m| m.from == NodeId(3));
    cluster.drop_in_flight();
    assert_eq!(cluster.log_terms(3), vec![1, 2, 2]);
    assert_eq!(cluster.log_terms(4), vec![1]);

    // The term-2 entries are now stored on S1, S2 and S3, a majority, and S1 knows it...
    let matches: BTreeMap<NodeId, LogIndex> =
        cluster.core(1).follower_match_indexes().into_iter().collect();
    assert_eq!(matches[&NodeId(2)], LogIndex(4));
    assert_eq!(matches[&NodeId(3)], LogIndex(3));
    // ...but they are of an earlier term, so S1 does not count them as committed (§5.4.2).
    assert_eq!(cluster.commit_index(1), 1, "{}", cluster.describe());
    assert!(!cluster.anyone_ever_applied(S1_TERM2_COMMAND));
    cluster
}

/// Figure 8 (a)-(d) and §5.4.2: "a leader cannot immediately conclude that an entry from a
/// previous term is committed once it is stored on a majority of servers": here S1 crashes
/// after storing its term-2 entries on a majority, S5 is elected and overwrites them. Since
/// S1 never counted them as committed, no server ever applied them.
#[test]
fn figure8_an_old_term_entry_on_a_majority_can_still_be_overwritten() {
    let mut cluster = figure8_up_to_step3();

    // 4. S1 crashes; S5 restarts and can be elected (term 4 is taken: S2, S3, S4 voted for S1
    //    in it; in term 5 S3 and S4 vote for S5, whose last term 3 is newer than their 2).
    cluster.crash(1);
    cluster.restart(5);
    cluster.campaign(5);
    cluster.deliver_all();
    assert_eq!(cluster.role(5), Role::Candidate);
    cluster.campaign(5);
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(NodeId(5)), "{}", cluster.describe());
    assert_eq!(cluster.term(5), 5);
    assert_eq!(vote_answers(&cluster, 5, 5), BTreeMap::from([(2, false), (3, true), (4, true)]));

    // S5 replicates and overwrites indexes 2 and 3 everywhere, S2's term-4 no-op included.
    cluster.fire_timer(5);
    cluster.deliver_all();
    for id in 2..=5 {
        assert_eq!(cluster.log_terms(id), vec![1, 3, 3, 5], "node{id}");
        assert_eq!(cluster.commit_index(id), 4, "node{id}");
        assert_eq!(
            cluster.applied(id).last(),
            Some(&(LogIndex(3), Term(3), S5_TERM3_COMMAND.to_vec())),
            "node{id}"
        );
    }
    assert!(
        !cluster.anyone_ever_applied(S1_TERM2_COMMAND),
        "an entry that was overwritten had been applied"
    );
}

/// Figure 8 (e) and §5.4.2: once S1 replicates an entry of its own term to a majority, that
/// entry commits, and with it every entry before it (Log Matching); S5 can no longer win an
/// election, because a majority now holds a log more up to date than its own.
#[test]
fn figure8_an_entry_of_the_current_term_commits_the_earlier_ones() {
    let mut cluster = figure8_up_to_step3();

    // 5. S1 gets its term-4 no-op to S3 (S4 stays cut off): heartbeats must notice that S3
    //    never acknowledged it and send it again.
    cluster.isolate(4);
    for _ in 0..5 {
        if cluster.commit_index(1) >= 4 {
            break;
        }
        cluster.fire_timer(1);
        cluster.deliver_all();
    }
    assert_eq!(cluster.log_terms(3), vec![1, 2, 2, 4], "{}", cluster.describe());
    assert_eq!(cluster.commit_index(1), 4, "{}", cluster.describe());
    assert_eq!(cluster.applied(1).last(), Some(&(LogIndex(3), Term(2), S1_TERM2_COMMAND.to_vec())));

    // S1 crashes; S5 restarts and campaigns again and again: S2 and S3 refuse, only S4 votes.
    cluster.crash(1);
    cluster.heal();
    cluster.restart(5);
    for _ in 0..4 {
        cluster.campaign(5);
        cluster.deliver_all();
        assert_ne!(cluster.role(5), Role::Leader);
        let term = cluster.term(5);
        let answers = vote_answers(&cluster, 5, term);
        assert_eq!(answers.get(&2), Some(&false), "term {term}");
        assert_eq!(answers.get(&3), Some(&false), "term {term}");
    }

    // A server holding the committed entries wins instead, and they survive everywhere.
    cluster.campaign(2);
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(NodeId(2)), "{}", cluster.describe());
    cluster.fire_timer(2);
    cluster.deliver_all();
    for id in 2..=5 {
        assert_eq!(cluster.log_terms(id)[..4], [1, 2, 2, 4], "node{id}");
        assert!(
            cluster.applied(id).contains(&(LogIndex(3), Term(2), S1_TERM2_COMMAND.to_vec())),
            "node{id}: {:?}",
            cluster.applied(id)
        );
    }
    assert!(!cluster.anyone_ever_applied(S5_TERM3_COMMAND));
}

/// State Machine Safety (Figure 3, §5.4.3) and §5.3: every server applies the same commands
/// in the same log order, each exactly once, even when the network loses and reorders
/// messages (the leader retries AppendEntries until every follower stores every entry). A
/// client proposes again only proposals that can no longer commit.
///
/// The seeds are chosen so that the run covers leader changes and proposals lost with them
/// (seed 98: five lost proposals, three leaders; 44: four lost proposals, four leaders; 218:
/// nine leaders); the test checks that it still does. (Chosen again when flow control changed
/// the traffic, issue #16: seeds 71 and 297 no longer lost proposals, 24 had one leader.)
#[test]
fn commands_are_applied_exactly_once_and_in_order_despite_loss_and_reordering() {
    let mut total_reproposed = 0;
    let mut most_leaders = 0;
    for seed in [98, 44, 218] {
        let (reproposed, leaders) = apply_exactly_once_with_loss_and_reordering(seed);
        total_reproposed += reproposed;
        most_leaders = most_leaders.max(leaders);
    }
    assert!(
        total_reproposed > 0 && most_leaders > 1,
        "the seeds no longer cover lost proposals and leader changes: choose others"
    );
}

/// Proposes 100 commands through a lossy, reordering network with `seed`, checks that every
/// node applied them all once and in order, and returns how many proposals were made again
/// and how many leaders the run had.
fn apply_exactly_once_with_loss_and_reordering(seed: u64) -> (usize, usize) {
    let mut cluster = Cluster::new(5, seed);
    cluster.drop_every_nth_message(Some(7));
    cluster.set_reordering(true);
    let commands: Vec<Vec<u8>> = (0..100).map(|n| format!("command {n:03}").into_bytes()).collect();

    // Proposed in batches; a batch is done once all of it committed, so that proposing a
    // lost command again keeps the proposal order.
    let mut reproposed = 0;
    for batch in commands.chunks(5) {
        let mut pending: Vec<&Vec<u8>> = batch.iter().collect();
        while !pending.is_empty() {
            let leader = cluster.elect_leader(5_000);
            let term = Term(cluster.term(leader));
            let proposals: Vec<(LogIndex, &Vec<u8>)> = pending
                .iter()
                .map(|command| {
                    let index = cluster.propose(leader, command).expect("leader accepts");
                    (index, *command)
                })
                .collect();
            assert!(
                cluster.run_until(5_000, |c| proposals
                    .iter()
                    .all(|(index, _)| c.entry_fate(*index, term) != EntryFate::Pending)),
                "seed {seed}: proposals undecided:\n{}",
                cluster.describe()
            );
            pending = proposals
                .iter()
                .filter(|(index, _)| cluster.entry_fate(*index, term) == EntryFate::Lost)
                .map(|(_, command)| *command)
                .collect();
            reproposed += pending.len();
        }
    }
    run_until_applied(&mut cluster, &[1, 2, 3, 4, 5], commands.len(), 5_000);

    assert!(cluster.dropped_count() > 50, "seed {seed}: the network did lose messages");
    for id in 1..=5 {
        let applied = cluster.applied(id);
        assert_eq!(
            cluster.applied_commands(id),
            commands,
            "seed {seed}: node{id} (reproposed {reproposed})"
        );
        assert!(
            applied.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "seed {seed}: node{id} applied indexes out of order"
        );
        assert_eq!(cluster.applied_ever(id), &applied[..], "node{id} never restarted");
    }
    (reproposed, cluster.terms_with_a_leader().len())
}

/// §5.3 and Leader Completeness (§5.4): a leader deletes only a follower's conflicting
/// *uncommitted* entries. The follower keeps every committed entry (and never applies one
/// twice); the entries it loses were never committed, so never applied anywhere.
#[test]
fn conflicting_follower_keeps_committed_entries_and_loses_only_uncommitted_ones() {
    // node1 led term 2 and appended four entries it never committed; nodes 2 and 3 then
    // accepted an entry of term 3. Entries 1..=3 are committed everywhere.
    let presets = vec![
        preset(&[1, 1, 1, 2, 2, 2, 2]).committed_through(3),
        preset(&[1, 1, 1, 3]).committed_through(3),
        preset(&[1, 1, 1, 3]).committed_through(3),
    ];
    let mut cluster =
        Cluster::with_presets(presets, Config { pre_vote: false, ..Config::default() }, 9);
    let committed_before = cluster.log(1)[..3].to_vec();
    assert_eq!(cluster.applied(1).len(), 3);

    cluster.campaign(2);
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(NodeId(2)));
    cluster.fire_timer(2);
    cluster.deliver_all();

    assert_eq!(cluster.log_terms(1), vec![1, 1, 1, 3, 4]);
    assert_eq!(cluster.log(1)[..3], committed_before[..]);
    assert_eq!(cluster.commit_index(1), 5);
    let applied_indexes: Vec<u64> =
        cluster.applied_ever(1).iter().map(|(index, _, _)| index.0).collect();
    assert_eq!(applied_indexes, vec![1, 2, 3, 4], "each index applied once");
    for index in 4..=7 {
        let truncated = format!("preset {index}@2");
        assert!(!cluster.anyone_ever_applied(truncated.as_bytes()), "{truncated}");
    }
    // The truncation reached the disk: a power loss and a restart recover the leader's log.
    cluster.crash(1);
    cluster.restart(1);
    assert_eq!(cluster.log(1), cluster.log(2));
}

/// §5.1, §5.3 and §5.4.2: a leader cut off in a minority keeps its old term and cannot
/// commit (it cannot reach a majority); once the partition heals, the newer term makes it
/// step down, and the newer leader replaces its uncommitted entries.
#[test]
fn stale_leader_cannot_commit_and_steps_down_after_healing() {
    let mut cluster = Cluster::new(5, 55);
    let old_leader = cluster.elect_leader(2_000);
    cluster.propose(old_leader, b"before partition").expect("leader accepts");
    run_until_applied(&mut cluster, &[1, 2, 3, 4, 5], 1, 1_000);
    let old_term = cluster.term(old_leader);
    let old_commit = cluster.commit_index(old_leader);

    let others: Vec<u64> = (1..=5).filter(|id| *id != old_leader).collect();
    let minority = [old_leader, others[0]];
    let majority = &others[1..];
    cluster.partition(&[&minority, majority]);

    let stale_commands: [&[u8]; 3] = [b"stale x", b"stale y", b"stale w"];
    for command in &stale_commands[..2] {
        cluster.propose(old_leader, command).expect("still leads");
    }
    cluster.deliver_all();
    assert_eq!(cluster.log(minority[1]), cluster.log(old_leader));
    assert_eq!(cluster.commit_index(old_leader), old_commit, "2 of 5");

    // The majority elects a leader of a newer term, which commits.
    let new_leader = majority[0];
    cluster.campaign(new_leader);
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(NodeId(new_leader)));
    let new_term = cluster.term(new_leader);
    assert!(new_term > old_term);
    cluster.propose(new_leader, b"new leader").expect("leads");
    cluster.deliver_all();
    assert!(cluster.commit_index(new_leader) > old_commit);

    // Two leaders now, of different terms: the stale one still cannot commit.
    assert_eq!(cluster.role(old_leader), Role::Leader);
    assert_eq!(cluster.term(old_leader), old_term);
    cluster.propose(old_leader, stale_commands[2]).expect("still leads");
    cluster.fire_timer(old_leader);
    cluster.deliver_all();
    assert_eq!(cluster.commit_index(old_leader), old_commit);

    cluster.heal();
    assert!(
        cluster.run_until(2_000, |c| c.has_stable_leader()
            && (1..=5).all(|id| c.log(id) == c.log(new_leader) && c.applied(id).len() == 2)),
        "{}",
        cluster.describe()
    );
    assert_eq!(cluster.role(old_leader), Role::Follower);
    assert!(cluster.term(old_leader) >= new_term);
    for command in stale_commands {
        assert!(!cluster.anyone_ever_applied(command));
        assert!(
            cluster
                .log(old_leader)
                .iter()
                .all(|entry| entry.payload != EntryPayload::Command(command.to_vec().into())),
            "the stale entry was replaced"
        );
    }
    let expected: Vec<Vec<u8>> = vec![b"before partition".to_vec(), b"new leader".to_vec()];
    for id in 1..=5 {
        assert_eq!(cluster.applied_commands(id), expected, "node{id}");
    }
}

/// §5.3: "If followers crash or run slowly, or if network packets are lost, the leader
/// retries AppendEntries RPCs indefinitely ... until all followers eventually store all log
/// entries." Here the one AppendEntries that carries a proposal to the only other live server
/// is lost; the follower keeps answering heartbeats, and the leader must still send the entry
/// again, or the proposal would never commit.
#[test]
fn lost_append_entries_is_sent_again_until_the_follower_stores_it() {
    let mut cluster = Cluster::new(3, 13);
    let leader = cluster.elect_leader(2_000);
    let follower = (1..=3).find(|id| *id != leader).expect("three nodes");
    let crashed = 6 - leader - follower;
    cluster.crash(crashed);
    // A few quiet heartbeat rounds: the follower answers each one.
    cluster.advance_time(300);

    cluster.propose(leader, b"lost once").expect("leader accepts");
    let lost = cluster.drop_matching(|m| {
        m.to == NodeId(follower)
            && matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty())
    });
    assert_eq!(lost, 1);
    assert!(
        cluster
            .run_until(1_000, |c| c.applied(leader).len() == 1 && c.applied(follower).len() == 1),
        "the lost entry was never sent again:\n{}",
        cluster.describe()
    );
    assert!(cluster.has_stable_leader());
}

/// Pre-vote on (the default configuration): a 3- and a 5-node cluster still elect a single
/// leader, and the first election is for term 1 (a pre-vote round raises no term).
#[test]
fn pre_vote_clusters_elect_a_single_leader_in_term_1() {
    for size in [3, 5] {
        let mut cluster = Cluster::with_config(size, Config::default(), 41);
        let leader = cluster.elect_leader(5_000);
        assert_eq!(cluster.term(leader), 1, "{}", cluster.describe());
        for id in 1..=size {
            assert_eq!(cluster.term(id), 1);
        }
    }
}

/// Pre-vote (Raft thesis §9.6): a follower cut off from the cluster fails its pre-votes, so its
/// term does not climb while it is away, and when it comes back the leader keeps leading in
/// the same term. Without pre-vote, its higher term would depose the leader.
#[test]
fn a_rejoining_partitioned_node_does_not_depose_the_leader() {
    let mut cluster = Cluster::with_config(3, Config::default(), 42);
    let leader = cluster.elect_leader(5_000);
    let term = cluster.term(leader);
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.isolate(follower);
    cluster.advance_time(3_000);
    assert_eq!(cluster.term(follower), term, "the isolated node raised its term");
    assert_eq!(cluster.leader(), Some(NodeId(leader)));
    cluster.heal();
    cluster.advance_time(1_000);
    assert_eq!(cluster.leader(), Some(NodeId(leader)), "{}", cluster.describe());
    assert_eq!(cluster.term(leader), term, "the leader's term changed");
    assert_eq!(cluster.term(follower), term);

    // The same without pre-vote: the rejoining node's election deposes the leader.
    let mut cluster = Cluster::with_config(3, Config { pre_vote: false, ..Config::default() }, 42);
    let leader = cluster.elect_leader(5_000);
    let term = cluster.term(leader);
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.isolate(follower);
    cluster.advance_time(3_000);
    assert!(cluster.term(follower) > term, "without pre-vote the isolated node's term climbs");
    cluster.heal();
    cluster.advance_time(1_000);
    assert!(cluster.term(leader) > term, "without pre-vote the leader is deposed");
}

/// A node that was cut off and whose log is behind cannot pass a pre-vote round when it comes
/// back after the leader is gone (the other voter's log is newer, and it heard from the leader
/// recently), so it never raises anyone's term; the up-to-date node becomes leader.
#[test]
fn a_node_with_a_stale_log_fails_its_pre_vote() {
    let mut cluster = Cluster::with_config(3, Config::default(), 43);
    let leader = cluster.elect_leader(5_000);
    let stale = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.isolate(stale);
    for command in [b"a".as_slice(), b"b", b"c"] {
        cluster.propose(leader, command).expect("the leader accepts proposals");
        cluster.advance_time(50);
    }
    let term = cluster.term(leader);
    // The leader disappears; the stale node comes back and stands first.
    cluster.crash(leader);
    cluster.heal();
    cluster.campaign(stale);
    assert_eq!(cluster.term(stale), term, "a pre-vote round raises no term");
    cluster.deliver_all();
    assert_eq!(cluster.term(stale), term, "the stale node passed its pre-vote");
    // The up-to-date node wins the next election.
    let new_leader = cluster.elect_leader(5_000);
    assert_ne!(new_leader, stale);
}
