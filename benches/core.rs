//! Criterion micro-benchmarks of the protocol core alone: no runtime, no storage, no network
//! (run with `cargo bench --bench core`; figures in BENCHMARKS.md).
//!
//! - `core/new`: creating a node of a 3-member cluster;
//! - `core/election_3_nodes`: a whole election round in a 3-member cluster (pre-vote, vote,
//!   the new leader's no-op replicated and committed), messages handed between cores by hand;
//!   `core/election_3_nodes_fresh`: the same on a cluster built just before each election;
//! - `core/propose/N`: a leader of 3 appending one N-byte command (the command is built
//!   outside the timing, as raft-rs's `propose` benchmark does);
//! - `core/ready_100_entries`: a leader of 3 producing one Ready holding 100 new entries (to
//!   persist, and in one AppendEntries to each follower) and acknowledging it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use raft_consensus::core::{InitialState, RaftCore, Role};
use raft_consensus::{Config, Message, NodeId};

const MEMBERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

fn config() -> Config {
    Config { snapshot_after_entries: 0, snapshot_after_bytes: 0, ..Config::default() }
}

fn new_core(id: NodeId) -> RaftCore {
    match RaftCore::new(id, MEMBERS, config(), InitialState::default(), id.0) {
        Ok(core) => core,
        Err(error) => panic!("the default configuration is valid: {error}"),
    }
}

/// Three cores with their clocks started.
fn cluster() -> Vec<RaftCore> {
    MEMBERS
        .iter()
        .map(|&id| {
            let mut core = new_core(id);
            core.tick(0);
            core
        })
        .collect()
}

/// Carries out every Ready of every core (as the driver does, storage and state machine
/// being no-ops) and delivers the messages, until no core has anything left to do.
fn settle(cores: &mut [RaftCore]) {
    let mut in_flight: Vec<Message> = Vec::new();
    loop {
        for core in cores.iter_mut() {
            while core.has_ready() {
                let ready = core.ready();
                in_flight.extend(ready.messages);
                in_flight.extend(ready.persisted_messages);
                core.advance(ready.ack);
            }
        }
        if in_flight.is_empty() {
            return;
        }
        for message in in_flight.drain(..) {
            let to = message.to.0 as usize - 1;
            cores[to].step(message);
        }
    }
}

/// Elects node 1 by firing its election timer, then settles the cluster.
fn elect_first(cores: &mut [RaftCore]) {
    cores[0].tick(10_000);
    settle(cores);
    debug_assert_eq!(cores[0].role(), Role::Leader);
}

fn leader_cluster() -> Vec<RaftCore> {
    let mut cores = cluster();
    elect_first(&mut cores);
    if cores[0].role() != Role::Leader {
        panic!("node 1 fired its election timer first and must have won");
    }
    cores
}

fn bench_new(c: &mut Criterion) {
    c.bench_function("core/new", |b| b.iter(|| black_box(new_core(black_box(NodeId(1))))));
}

fn bench_election(c: &mut Criterion) {
    c.bench_function("core/election_3_nodes", |b| {
        b.iter_batched(
            cluster,
            |mut cores| {
                elect_first(&mut cores);
                cores
            },
            BatchSize::SmallInput,
        )
    });
    // The same election on a cluster built just before it (still in cache, as a running
    // node's state is); the clusters of the batched form above are built ahead in batches.
    c.bench_function("core/election_3_nodes_fresh", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut cores = cluster();
                let started = Instant::now();
                elect_first(&mut cores);
                total += started.elapsed();
                black_box(&cores);
            }
            total
        })
    });
}

/// Proposals per fresh leader: the log grows with every proposal, so a new cluster is
/// elected (outside the timing) after this many. Kept small so that the log's vector stays
/// on the heap's small-allocation path: with 10,000 its reallocations (moved by the kernel
/// or not, depending on the heap's state) made the figure jump between 15 and 50 ns from
/// run to run.
const PROPOSALS_PER_LEADER: u64 = 1_000;

fn bench_propose(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/propose");
    for size in [0usize, 32, 128, 512, 1024, 4096] {
        group.bench_function(size.to_string(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let round = (iters - done).min(PROPOSALS_PER_LEADER);
                    let mut cores = leader_cluster();
                    let commands: Vec<Bytes> =
                        (0..round).map(|_| Bytes::from(vec![0u8; size])).collect();
                    let leader = &mut cores[0];
                    let started = Instant::now();
                    for command in commands {
                        let _ = black_box(leader.propose(command));
                    }
                    total += started.elapsed();
                    done += round;
                }
                total
            })
        });
    }
    group.finish();
}

fn bench_ready(c: &mut Criterion) {
    c.bench_function("core/ready_100_entries", |b| {
        b.iter_custom(|iters| {
            let mut cores = leader_cluster();
            let mut total = Duration::ZERO;
            for iteration in 0..iters {
                if iteration % 1000 == 999 {
                    // Bound the logs' growth.
                    cores = leader_cluster();
                }
                for _ in 0..100 {
                    let _ = cores[0].propose(Bytes::from_static(&[0u8; 64]));
                }
                let started = Instant::now();
                let ready = cores[0].ready();
                let messages = black_box(ready.messages);
                cores[0].advance(ready.ack);
                total += started.elapsed();
                // Outside the timing: the followers store and acknowledge, the leader commits.
                for message in messages {
                    let to = message.to.0 as usize - 1;
                    cores[to].step(message);
                }
                settle(&mut cores);
            }
            total
        })
    });
}

criterion_group!(benches, bench_new, bench_election, bench_propose, bench_ready);
criterion_main!(benches);
