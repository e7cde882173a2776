//! Membership-change benchmark (run with `cargo bench --bench membership`; figures in
//! BENCHMARKS.md). Nodes in one process on a multi-threaded tokio runtime, each with its own
//! write-ahead log (`WalStorage`, fsync on every write) in a temporary directory, talking over
//! the in-process `ChannelNetwork`; a state machine that keeps every command's bytes (so a
//! snapshot carries them all).
//!
//! It measures:
//! - **catch-up**: the time for `add_voter` of a node started empty while the cluster holds
//!   `--catch-up-mib` MiB of state that only a snapshot can carry (the leaders' logs are
//!   compacted): learner, snapshot transfer, promotion through joint consensus;
//! - **writes during changes**: `--clients` closed-loop writers for `--secs` seconds in
//!   steady state, then as long again while a learner is added and removed over and over;
//!   ops/s and p99 latency of each;
//! - **transfer**: `--transfers` leadership transfers under a closed-loop writer; for each,
//!   the time from the transfer's start until a write is accepted again, and how long writes
//!   were refused.
//!
//! Options (after `--`): `--catch-up-mib 1024`, `--clients 16`, `--secs 3`,
//! `--transfers 10`, `--workers 2`.

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_consensus::storage::{WalIdentity, WalOptions, WalStorage};
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{
    Config, MemberAddress, MembershipError, NodeId, ProposeError, RaftNode, StateMachine,
};

const DEADLINE: Duration = Duration::from_secs(600);
const VALUE_BYTES: usize = 1024 * 1024;

/// Keeps the bytes of every command: the state a new member must receive.
#[derive(Default)]
struct Keeper {
    bytes: Vec<u8>,
}

impl StateMachine for Keeper {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.bytes.extend_from_slice(command);
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        Ok(self.bytes.clone())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.bytes = snapshot.to_vec();
        Ok(())
    }
}

struct Options {
    catch_up_mib: usize,
    clients: usize,
    secs: u64,
    transfers: usize,
    workers: usize,
}

fn options() -> Options {
    let mut options =
        Options { catch_up_mib: 1024, clients: 16, secs: 3, transfers: 10, workers: 2 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut position = 0;
    while position < args.len() {
        let value = args.get(position + 1).and_then(|value| value.parse::<usize>().ok());
        match (args[position].as_str(), value) {
            ("--catch-up-mib", Some(value)) => options.catch_up_mib = value,
            ("--clients", Some(value)) => options.clients = value.max(1),
            ("--secs", Some(value)) => options.secs = value as u64,
            ("--transfers", Some(value)) => options.transfers = value,
            ("--workers", Some(value)) => options.workers = value.max(1),
            // `cargo bench` passes `--bench`; anything else unknown is ignored likewise.
            _ => {
                position += 1;
                continue;
            }
        }
        position += 2;
    }
    options
}

/// The nodes of one cluster, their data directories kept until the end.
struct Cluster {
    network: ChannelNetwork,
    root: tempfile::TempDir,
    config: Config,
    nodes: Vec<RaftNode>,
}

impl Cluster {
    fn start(config: Config) -> Result<Cluster, Box<dyn Error>> {
        let mut cluster = Cluster {
            network: ChannelNetwork::new(),
            root: tempfile::tempdir()?,
            config,
            nodes: Vec::new(),
        };
        for id in 1..=3 {
            cluster.spawn(NodeId(id), &[NodeId(1), NodeId(2), NodeId(3)])?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, id: NodeId, members: &[NodeId]) -> Result<RaftNode, Box<dyn Error>> {
        let identity = WalIdentity { node_id: id, cluster_id: 1 };
        let storage = WalStorage::open(
            self.root.path().join(format!("node{}", id.0)),
            identity,
            WalOptions::default(),
        )?;
        let node = RaftNode::start(
            id,
            members.to_vec(),
            self.config.clone(),
            storage,
            self.network.join(id),
            Keeper::default(),
        )?;
        self.nodes.push(node.clone());
        Ok(node)
    }

    async fn leader(&self) -> RaftNode {
        let started = Instant::now();
        loop {
            for node in &self.nodes {
                if node.status().is_leader() {
                    return node.clone();
                }
            }
            assert!(started.elapsed() < DEADLINE, "no leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Proposes `command` until some node accepts it; returns how long that took.
async fn write(nodes: &[RaftNode], command: &[u8]) -> Duration {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let node = &nodes[attempt % nodes.len()];
        match node.propose(command.to_vec()).await {
            Ok(_) => return started.elapsed(),
            Err(
                ProposeError::NotLeader { .. }
                | ProposeError::LeadershipTransfer { .. }
                | ProposeError::OutcomeUnknown { .. },
            ) => {
                attempt += 1;
                if attempt % nodes.len() == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Err(error) => panic!("a write failed: {error}"),
        }
        assert!(started.elapsed() < DEADLINE, "writes stalled");
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

async fn catch_up(options: &Options) -> Result<(), Box<dyn Error>> {
    let config = Config {
        // Snapshots twice while loading, so the logs are compacted well behind.
        snapshot_after_bytes: (options.catch_up_mib as u64 * 1024 * 1024 / 2)
            .clamp(1 << 20, 1 << 30),
        snapshot_after_entries: 0,
        snapshot_keep_entries: 16,
        max_entry_bytes: 2 * VALUE_BYTES,
        ..Config::default()
    };
    let mut cluster = Cluster::start(config)?;
    let leader = cluster.leader().await;
    let value = vec![7u8; VALUE_BYTES];
    let loading = Instant::now();
    for _ in 0..options.catch_up_mib {
        write(std::slice::from_ref(&leader), &value).await;
    }
    println!(
        "catch-up: loaded {} MiB in {:.1} s",
        options.catch_up_mib,
        loading.elapsed().as_secs_f64()
    );
    let compacted = leader
        .wait_for(DEADLINE, |status| status.first_log_index.0 > 1 && status.snapshot_index.0 > 0)
        .await?;
    let joining = cluster.spawn(NodeId(4), &[])?;
    let started = Instant::now();
    let configuration = loop {
        // Leadership may move under the load: ask whoever leads now.
        let leader = cluster.leader().await;
        match leader.add_voter(NodeId(4), MemberAddress::default(), DEADLINE).await {
            Ok(configuration) => break configuration,
            Err(MembershipError::NotLeader { .. } | MembershipError::ChangeInProgress) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => return Err(format!("add_voter: {error}").into()),
        }
    };
    let took = started.elapsed();
    let joined = joining.status();
    println!(
        "catch-up: added node 4 as a voter in {:.2} s ({} MiB of state, leader's log compacted through {}, node 4 installed a snapshot through {}); configuration {configuration}",
        took.as_secs_f64(),
        options.catch_up_mib,
        compacted.first_log_index.0 - 1,
        joined.snapshot_index.0,
    );
    for node in &cluster.nodes {
        if let Err(error) = node.shutdown().await {
            println!("catch-up: node {} stopped with: {error}", node.id());
        }
    }
    Ok(())
}

/// Runs `clients` closed-loop writers for `secs`; returns the latencies.
async fn load(nodes: &[RaftNode], clients: usize, secs: u64) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (stop, latencies, nodes) = (Arc::clone(&stop), Arc::clone(&latencies), nodes.to_vec());
        tasks.push(tokio::spawn(async move {
            let command = format!("client {client}").into_bytes();
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                mine.push(write(&nodes, &command).await);
            }
            latencies.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let mut latencies =
        std::mem::take(&mut *latencies.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    latencies.sort_unstable();
    latencies
}

async fn writes_during_changes(options: &Options) -> Result<(), Box<dyn Error>> {
    let mut cluster = Cluster::start(Config::default())?;
    let leader = cluster.leader().await;
    let learner = cluster.spawn(NodeId(4), &[])?;
    let voters = cluster.nodes[..3].to_vec();
    let report = |what: &str, latencies: &[Duration], secs: u64| {
        println!(
            "writes {what}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms ({} clients)",
            latencies.len() as f64 / secs as f64,
            percentile(latencies, 0.5).as_secs_f64() * 1e3,
            percentile(latencies, 0.99).as_secs_f64() * 1e3,
            options.clients
        );
    };
    let steady = load(&voters, options.clients, options.secs).await;
    report("in steady state", &steady, options.secs);
    let changing = Arc::new(AtomicBool::new(true));
    let changes = {
        let (leader, changing) = (leader.clone(), Arc::clone(&changing));
        tokio::spawn(async move {
            let mut count = 0u64;
            while changing.load(Ordering::Relaxed) {
                let _ = leader.add_learner(NodeId(4), MemberAddress::default()).await;
                let _ = leader.remove_member(NodeId(4)).await;
                count += 2;
            }
            count
        })
    };
    let during = load(&voters, options.clients, options.secs).await;
    changing.store(false, Ordering::Relaxed);
    let count = changes.await?;
    report(&format!("during {count} membership changes"), &during, options.secs);
    learner.shutdown().await?;
    for node in &voters {
        node.shutdown().await?;
    }
    Ok(())
}

async fn transfers(options: &Options) -> Result<(), Box<dyn Error>> {
    let cluster = Cluster::start(Config::default())?;
    let nodes = cluster.nodes.clone();
    let mut refused = Vec::new();
    for round in 0..options.transfers {
        let leader = cluster.leader().await;
        let target = nodes
            .iter()
            .find(|node| node.id() != leader.id())
            .map(RaftNode::id)
            .unwrap_or(NodeId(1));
        // A writer that proposes one write after another on whoever leads.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, nodes) = (Arc::clone(&stop), nodes.clone());
            tokio::spawn(async move {
                let mut longest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    longest = longest.max(write(&nodes, b"transfer round").await);
                }
                longest
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        leader.transfer_leadership(target, Duration::from_secs(5)).await?;
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::Relaxed);
        let longest_write = writer.await?;
        println!(
            "transfer {round}: {} -> {} led in {:.1} ms; the longest write around it took {:.1} ms",
            leader.id(),
            target,
            took.as_secs_f64() * 1e3,
            longest_write.as_secs_f64() * 1e3
        );
        refused.push(longest_write);
    }
    refused.sort_unstable();
    println!(
        "transfers: the longest write around a transfer: median {:.1} ms, max {:.1} ms (heartbeat interval {} ms)",
        percentile(&refused, 0.5).as_secs_f64() * 1e3,
        percentile(&refused, 1.0).as_secs_f64() * 1e3,
        Config::default().heartbeat_interval_ms
    );
    for node in &nodes {
        node.shutdown().await?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        writes_during_changes(&options).await?;
        transfers(&options).await?;
        if options.catch_up_mib > 0 {
            catch_up(&options).await?;
        }
        Ok::<(), Box<dyn Error>>(())
    })
}
