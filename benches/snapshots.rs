//! Snapshot benchmarks (run with `cargo bench --bench snapshots`; figures in BENCHMARKS.md).
//!
//! Three measurements, each on real nodes (`RaftNode` with the write-ahead log on disk and
//! TCP on loopback):
//!
//! 1. **Catch-up from a snapshot.** Three nodes; one is down while the other two build about
//!    100 MB of state and compact their logs. The third then starts with an empty data
//!    directory: the leader streams it the snapshot in 1 MiB chunks. Reported: the time until
//!    it has applied everything, and the snapshot's size over that time (MB/s).
//! 2. **Restart from a local snapshot.** That node is stopped and started again from its data
//!    directory: it reads the 100 MB snapshot, restores its state machine from it and applies
//!    the log after it. Reported: the time until it has applied everything again.
//! 3. **Bounded disk use.** One node, 1,000,000 overwrites of 10,000 keys with 256-byte values
//!    (about 2.7 MB of live data), a snapshot after every 4 MB of applied commands and 4 MiB
//!    log segments. Reported: the data directory's size as the writes go on, against the live
//!    data size. What bounds it: the current and the prepared next segment, the segments not
//!    yet compacted (up to the 4 MB between snapshots), and the snapshot itself.
//!
//! `SNAPSHOT_BENCH_MB` sets the state size of 1 and 2 (default 100); `SNAPSHOT_BENCH_WRITES`
//! the writes of 3 (default 1,000,000).

use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use raft_consensus::storage::{WalIdentity, WalOptions, WalStorage};
use raft_consensus::transport::{TcpConfig, TcpTransport};
use raft_consensus::{Config, NodeId, RaftNode, StateMachine};
use tokio::net::TcpListener;

const CLUSTER_ID: u64 = 0x5A_B3;
const KEYS_PER_COMMAND: usize = 1_000;
const VALUE_BYTES: usize = 1_000;

/// A store of fixed-size values. A command is a batch of writes: count u32, then for each a
/// key u64 and a value u32-length-prefixed. Its snapshot is every key and value.
#[derive(Default)]
struct BlobStore {
    values: BTreeMap<u64, Vec<u8>>,
}

fn encode_writes(writes: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = (writes.len() as u32).to_le_bytes().to_vec();
    for (key, value) in writes {
        bytes.extend_from_slice(&key.to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
        bytes.extend_from_slice(value);
    }
    bytes
}

/// Keys and their values.
type Pairs = Vec<(u64, Vec<u8>)>;

/// Reads `count` records of key u64 + length-prefixed value from `bytes`.
fn decode_pairs(mut bytes: &[u8], count: usize) -> Result<Pairs, Box<dyn Error + Send + Sync>> {
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let (key, rest) = bytes.split_at_checked(8).ok_or("truncated key")?;
        let (length, rest) = rest.split_at_checked(4).ok_or("truncated length")?;
        let length = u32::from_le_bytes(length.try_into()?) as usize;
        let (value, rest) = rest.split_at_checked(length).ok_or("truncated value")?;
        pairs.push((u64::from_le_bytes(key.try_into()?), value.to_vec()));
        bytes = rest;
    }
    if !bytes.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(pairs)
}

impl StateMachine for BlobStore {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let (count, rest) = command.split_at_checked(4).ok_or("empty command")?;
        let count = u32::from_le_bytes(count.try_into()?) as usize;
        for (key, value) in decode_pairs(rest, count)? {
            self.values.insert(key, value);
        }
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let size: usize = self.values.values().map(|value| 12 + value.len()).sum();
        let mut bytes = Vec::with_capacity(4 + size);
        bytes.extend_from_slice(&(self.values.len() as u32).to_le_bytes());
        for (key, value) in &self.values {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
            bytes.extend_from_slice(value);
        }
        Ok(bytes)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        let (count, rest) = snapshot.split_at_checked(4).ok_or("empty snapshot")?;
        let count = u32::from_le_bytes(count.try_into()?) as usize;
        self.values = decode_pairs(rest, count)?.into_iter().collect();
        Ok(())
    }
}

fn free_addresses(count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let listeners: Vec<std::net::TcpListener> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    listeners.iter().map(|listener| Ok(listener.local_addr()?)).collect()
}

/// Starts node `id` of the cluster at `addresses` (node n at `addresses[n - 1]`).
async fn start_node(
    id: NodeId,
    addresses: &[SocketAddr],
    root: &Path,
    config: Config,
    wal: WalOptions,
) -> anyhow::Result<RaftNode> {
    let identity = WalIdentity { node_id: id, cluster_id: CLUSTER_ID };
    let storage = WalStorage::open(root.join(id.to_string()), identity, wal)?;
    let listener = TcpListener::bind(addresses[(id.0 - 1) as usize]).await?;
    let peers: Vec<(NodeId, SocketAddr)> =
        addresses.iter().enumerate().map(|(n, address)| (NodeId(n as u64 + 1), *address)).collect();
    let transport = TcpTransport::start(id, listener, peers, TcpConfig::new(CLUSTER_ID))?;
    let members = (1..=addresses.len() as u64).map(NodeId);
    Ok(RaftNode::start(id, members, config, storage, transport, BlobStore::default())?)
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += if metadata.is_dir() { dir_bytes(&entry.path())? } else { metadata.len() };
    }
    Ok(total)
}

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(text) => text.parse().with_context(|| format!("{name}={text:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Proposes through whichever of `nodes` leads.
async fn propose(nodes: &[&RaftNode], command: Vec<u8>) -> anyhow::Result<()> {
    for _ in 0..50 {
        for node in nodes {
            if node.status().is_leader() {
                node.propose(command.clone()).await?;
                return Ok(());
            }
        }
        nodes[0].wait_for(Duration::from_secs(5), |status| status.leader_id.is_some()).await?;
    }
    bail!("no leader")
}

async fn catch_up_and_restart(state_mb: u64) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let addresses = free_addresses(3)?;
    let config = Config {
        // One snapshot per ~quarter of the state, and a short log tail.
        snapshot_after_entries: 0,
        snapshot_after_bytes: state_mb * 1_000_000 / 4,
        snapshot_keep_entries: 10,
        ..Config::default()
    };
    let wal = WalOptions::default();
    let first = start_node(NodeId(1), &addresses, root.path(), config.clone(), wal.clone()).await?;
    let second =
        start_node(NodeId(2), &addresses, root.path(), config.clone(), wal.clone()).await?;
    first.wait_for(Duration::from_secs(10), |status| status.leader_id.is_some()).await?;

    let commands = (state_mb * 1_000_000) as usize / (KEYS_PER_COMMAND * VALUE_BYTES);
    let started = Instant::now();
    for command in 0..commands {
        let writes: Vec<(u64, Vec<u8>)> = (0..KEYS_PER_COMMAND)
            .map(|key| {
                ((command * KEYS_PER_COMMAND + key) as u64, vec![command as u8; VALUE_BYTES])
            })
            .collect();
        propose(&[&first, &second], encode_writes(&writes)).await?;
        eprint!("\rbuilding state: {}/{commands} MB-sized commands", command + 1);
    }
    eprintln!();
    let leader = if first.status().is_leader() { &first } else { &second };
    // Wait for the snapshot that covers everything, and compaction behind it.
    let status = leader
        .wait_for(Duration::from_secs(120), |status| status.snapshot_index == status.commit_index)
        .await?;
    println!(
        "state: {} keys x {VALUE_BYTES} B in {:.1} s; leader snapshot through {}, log from {}",
        commands * KEYS_PER_COMMAND,
        started.elapsed().as_secs_f64(),
        status.snapshot_index,
        status.first_log_index
    );
    let leader_dir = root.path().join(leader.id().to_string());
    let leader_dir_bytes = dir_bytes(&leader_dir)?;
    let snapshot_file = std::fs::read_dir(&leader_dir)?
        .filter_map(Result::ok)
        .find(|entry| entry.file_name().to_string_lossy().ends_with(".snap"))
        .map(|entry| entry.metadata().map(|metadata| metadata.len()))
        .transpose()?
        .context("the leader stored a snapshot")?;

    let term_before = leader.status().term;
    let started = Instant::now();
    let third = start_node(NodeId(3), &addresses, root.path(), config.clone(), wal.clone()).await?;
    let commit = leader.status().commit_index;
    let caught_up =
        third.wait_for(Duration::from_secs(300), |status| status.applied_index >= commit).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let term_after = leader.status().term;
    println!(
        "catch-up from a snapshot: {:.1} MB snapshot, node3 current in {elapsed:.2} s \
         ({:.0} MB/s, snapshot index {}, leader's data dir {:.1} MB, term {term_before} before \
         and {term_after} after: {} election(s) during the transfer)",
        snapshot_file as f64 / 1e6,
        snapshot_file as f64 / 1e6 / elapsed,
        caught_up.snapshot_index,
        leader_dir_bytes as f64 / 1e6,
        term_after.0 - term_before.0
    );

    third.shutdown().await?;
    let started = Instant::now();
    let third = start_node(NodeId(3), &addresses, root.path(), config, wal).await?;
    let restored =
        third.wait_for(Duration::from_secs(300), |status| status.applied_index >= commit).await?;
    println!(
        "restart from the local snapshot: node3 current again in {:.2} s (applied index {})",
        started.elapsed().as_secs_f64(),
        restored.applied_index
    );
    for node in [first, second, third] {
        node.shutdown().await?;
    }
    Ok(())
}

async fn bounded_disk(writes: u64) -> anyhow::Result<()> {
    const KEYS: u64 = 10_000;
    const VALUE: usize = 256;
    const BATCH: u64 = 100;
    let root = tempfile::tempdir()?;
    let addresses = free_addresses(1)?;
    let config = Config {
        snapshot_after_entries: 0,
        snapshot_after_bytes: 4_000_000,
        snapshot_keep_entries: 10,
        ..Config::default()
    };
    let wal = WalOptions { segment_max_bytes: 4 * 1024 * 1024, ..WalOptions::default() };
    let node = Arc::new(start_node(NodeId(1), &addresses, root.path(), config, wal).await?);
    node.wait_for(Duration::from_secs(10), |status| status.is_leader()).await?;
    let live_bytes = KEYS * (8 + 4 + VALUE as u64);
    let data_dir = root.path().join("node1");
    println!(
        "bounded disk: {writes} overwrites of {KEYS} keys ({VALUE}-byte values, {BATCH} per \
         command), live data {:.1} MB, 4 MiB segments, a snapshot every 4 MB of commands",
        live_bytes as f64 / 1e6
    );
    let started = Instant::now();
    let mut largest = 0u64;
    let mut written = 0u64;
    while written < writes {
        // 64 commands in flight.
        let mut batch = Vec::new();
        for _ in 0..64 {
            if written >= writes {
                break;
            }
            let pairs: Vec<(u64, Vec<u8>)> = (0..BATCH)
                .map(|offset| ((written + offset) % KEYS, vec![(written % 251) as u8; VALUE]))
                .collect();
            written += BATCH;
            let node = Arc::clone(&node);
            batch.push(tokio::spawn(async move { node.propose(encode_writes(&pairs)).await }));
        }
        for proposal in batch {
            proposal.await??;
        }
        let size = dir_bytes(&data_dir)?;
        largest = largest.max(size);
        if written / 100_000 > (written - BATCH * 64) / 100_000 || written >= writes {
            println!(
                "  after {written:>9} writes ({:.1} s): data dir {:.1} MB ({:.1}x live data), \
                 largest so far {:.1} MB",
                started.elapsed().as_secs_f64(),
                size as f64 / 1e6,
                size as f64 / live_bytes as f64,
                largest as f64 / 1e6
            );
        }
    }
    let node = Arc::try_unwrap(node).map_err(|_| anyhow::anyhow!("the node is still shared"))?;
    node.shutdown().await?;
    println!(
        "bounded disk: largest data dir {:.1} MB = {:.1}x the live data, final {:.1} MB",
        largest as f64 / 1e6,
        largest as f64 / live_bytes as f64,
        dir_bytes(&data_dir)? as f64 / 1e6
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let state_mb = env_number("SNAPSHOT_BENCH_MB", 100)?;
    let writes = env_number("SNAPSHOT_BENCH_WRITES", 1_000_000)?;
    catch_up_and_restart(state_mb).await?;
    bounded_disk(writes).await?;
    Ok(())
}
