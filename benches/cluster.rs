//! In-process cluster benchmark (run with `cargo bench --bench cluster`; figures in
//! BENCHMARKS.md).
//!
//! The workload of openraft's minimal benchmark, so the two compare: three members in one
//! process on a multi-threaded tokio runtime, storage that keeps nothing and reports every
//! write durable at once (no fsync), the in-process [`ChannelNetwork`] (no serialisation), a
//! state machine that does nothing, and empty commands. N client tasks each propose to the
//! leader in a closed loop, waiting for each result before the next proposal.
//!
//! For each N it prints ops/s, ns/op (wall time over operations), the proposal-to-result
//! latency p50/p99 (from `propose` being called to its result, which the leader gives after
//! applying the entry), and the CPU time the process used (user + system, all threads).
//!
//! `--mode kv` runs the same with a real state machine: a key-value map, each command a
//! write of a 256-byte value to one of 10,000 keys, with snapshots at the default settings.
//!
//! Options (after `--`): `--mode noop|kv` (default noop), `--clients 1,64,256,1024,4096`,
//! `--secs 5` (measured time per N, after a 1 s warm-up), `--workers 2` (runtime threads),
//! `--storage none|memory` (`memory`: the library's `MemoryStorage` instead of the bench's
//! storage that keeps nothing).

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_consensus::core::InitialState;
use raft_consensus::storage::{MemoryStorage, Storage};
use raft_consensus::transport::ChannelNetwork;
use raft_consensus::{
    Config, Entry, HardState, LogId, LogIndex, NodeId, RaftNode, StateMachine, StorageError,
};

const MEMBERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
const KV_KEYS: u64 = 10_000;
const KV_VALUE_BYTES: usize = 256;

/// Storage that keeps nothing: every write is "durable" at once. A node starts empty, which
/// is all the benchmark asks of `load`; nothing is read back.
struct NullStorage;

impl Storage for NullStorage {
    /// Snapshots (which these state machines never take) would stay in memory.
    type Snapshots = MemoryStorage;

    fn load(&mut self) -> Result<InitialState, StorageError> {
        Ok(InitialState::default())
    }

    fn append(&mut self, _entries: &[Entry]) -> Result<(), StorageError> {
        Ok(())
    }

    fn reset_log(&mut self, _base: LogId) -> Result<(), StorageError> {
        Ok(())
    }

    fn compact(&mut self, _through: LogIndex) -> Result<(), StorageError> {
        Ok(())
    }

    fn snapshot_store(&self) -> MemoryStorage {
        MemoryStorage::new()
    }

    fn save_hard_state(&mut self, _hard_state: &HardState) -> Result<(), StorageError> {
        Ok(())
    }

    fn save_members(&mut self, _members: &[NodeId]) -> Result<(), StorageError> {
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A state machine that does nothing.
struct Noop;

impl StateMachine for Noop {
    fn apply(&mut self, _command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        Ok(Vec::new())
    }
}

/// A key-value map: a command is a key (u64, little-endian) and the value to store.
#[derive(Default)]
struct Kv {
    map: HashMap<u64, Vec<u8>>,
}

impl StateMachine for Kv {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let (key, value) = command.split_at_checked(8).ok_or("a command shorter than its key")?;
        let key = u64::from_le_bytes(key.try_into()?);
        let previous = self.map.insert(key, value.to_vec());
        Ok(if previous.is_some() { vec![1] } else { vec![0] })
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let mut data = Vec::with_capacity(self.map.len() * (12 + KV_VALUE_BYTES));
        for (key, value) in &self.map {
            data.extend_from_slice(&key.to_le_bytes());
            data.extend_from_slice(&(value.len() as u32).to_le_bytes());
            data.extend_from_slice(value);
        }
        Ok(data)
    }

    fn restore(&mut self, mut snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.map.clear();
        while !snapshot.is_empty() {
            let (key, rest) = snapshot.split_at_checked(8).ok_or("a truncated key")?;
            let (len, rest) = rest.split_at_checked(4).ok_or("a truncated length")?;
            let len = u32::from_le_bytes(len.try_into()?) as usize;
            let (value, rest) = rest.split_at_checked(len).ok_or("a truncated value")?;
            self.map.insert(u64::from_le_bytes(key.try_into()?), value.to_vec());
            snapshot = rest;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Noop,
    Kv,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StorageKind {
    Null,
    Memory,
}

struct Options {
    mode: Mode,
    clients: Vec<usize>,
    secs: f64,
    workers: usize,
    storage: StorageKind,
}

fn parse_options() -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        mode: Mode::Noop,
        clients: vec![1, 64, 256, 1024, 4096],
        secs: 5.0,
        workers: 2,
        storage: StorageKind::Null,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--mode" => {
                options.mode = match value()?.as_str() {
                    "noop" => Mode::Noop,
                    "kv" => Mode::Kv,
                    other => return Err(format!("unknown mode {other}").into()),
                }
            }
            "--clients" => {
                options.clients =
                    value()?.split(',').map(str::parse).collect::<Result<Vec<_>, _>>()?
            }
            "--secs" => options.secs = value()?.parse()?,
            "--workers" => options.workers = value()?.parse()?,
            "--storage" => {
                options.storage = match value()?.as_str() {
                    "none" => StorageKind::Null,
                    "memory" => StorageKind::Memory,
                    other => return Err(format!("unknown storage {other}").into()),
                }
            }
            // `cargo bench` passes `--bench`; criterion-style filters are not used here.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(options)
}

/// User plus system CPU time of the whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given, which is plain data.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

struct RunResult {
    ops: u64,
    wall: Duration,
    cpu: Duration,
    p50: Duration,
    p99: Duration,
}

fn start_node(
    id: NodeId,
    config: &Config,
    network: &ChannelNetwork,
    options: &Options,
) -> Result<RaftNode, Box<dyn Error>> {
    let transport = network.join(id);
    let node = match (options.storage, options.mode) {
        (StorageKind::Null, Mode::Noop) => {
            RaftNode::start(id, MEMBERS, config.clone(), NullStorage, transport, Noop)?
        }
        (StorageKind::Null, Mode::Kv) => {
            RaftNode::start(id, MEMBERS, config.clone(), NullStorage, transport, Kv::default())?
        }
        (StorageKind::Memory, Mode::Noop) => {
            RaftNode::start(id, MEMBERS, config.clone(), MemoryStorage::new(), transport, Noop)?
        }
        (StorageKind::Memory, Mode::Kv) => RaftNode::start(
            id,
            MEMBERS,
            config.clone(),
            MemoryStorage::new(),
            transport,
            Kv::default(),
        )?,
    };
    Ok(node)
}

fn command(mode: Mode, client: usize, sequence: u64) -> Bytes {
    match mode {
        Mode::Noop => Bytes::new(),
        Mode::Kv => {
            let key = (client as u64).wrapping_mul(7919).wrapping_add(sequence) % KV_KEYS;
            let mut command = Vec::with_capacity(8 + KV_VALUE_BYTES);
            command.extend_from_slice(&key.to_le_bytes());
            command.resize(8 + KV_VALUE_BYTES, (sequence % 251) as u8);
            Bytes::from(command)
        }
    }
}

/// One client: proposes in a closed loop until `stop`, recording each latency (in ns) while
/// `measuring`.
async fn client(
    leader: RaftNode,
    mode: Mode,
    id: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<u32>, raft_consensus::ProposeError> {
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let command = command(mode, id, sequence);
        sequence += 1;
        let started = Instant::now();
        leader.propose(command).await?;
        if measuring.load(Ordering::Relaxed) {
            latencies.push(u32::try_from(started.elapsed().as_nanos()).unwrap_or(u32::MAX));
        }
    }
    Ok(latencies)
}

async fn run_once(options: &Options, clients: usize) -> Result<RunResult, Box<dyn Error>> {
    let config = match options.mode {
        Mode::Noop => {
            Config { snapshot_after_entries: 0, snapshot_after_bytes: 0, ..Config::default() }
        }
        Mode::Kv => Config::default(),
    };
    let network = ChannelNetwork::new();
    let mut nodes = Vec::new();
    for id in MEMBERS {
        nodes.push(start_node(id, &config, &network, options)?);
    }
    let status =
        nodes[0].wait_for(Duration::from_secs(10), |status| status.leader_id.is_some()).await?;
    let leader_id = status.leader_id.ok_or("no leader")?;
    let leader = nodes.iter().find(|node| node.id() == leader_id).ok_or("unknown leader")?.clone();
    leader.wait_for(Duration::from_secs(10), |status| status.is_leader()).await?;

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            tokio::spawn(client(
                leader.clone(),
                options.mode,
                id,
                Arc::clone(&measuring),
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = cpu_time();
    let started = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(options.secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    for node in &nodes {
        node.shutdown().await?;
    }
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let rank = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
        Duration::from_nanos(latencies.get(rank - 1).copied().unwrap_or(0) as u64)
    };
    Ok(RunResult {
        ops: latencies.len() as u64,
        wall,
        cpu,
        p50: percentile(0.50),
        p99: percentile(0.99),
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = parse_options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .enable_all()
        .build()?;
    let mode = match options.mode {
        Mode::Noop => "noop state machine, empty commands",
        Mode::Kv => "key-value state machine, 256-byte values",
    };
    let storage = match options.storage {
        StorageKind::Null => "storage that keeps nothing",
        StorageKind::Memory => "MemoryStorage",
    };
    println!(
        "3 members in one process, {mode}, {storage}, {} runtime threads, {} s per N",
        options.workers, options.secs
    );
    println!(
        "| clients | ops/s | ns/op | p50 µs | p99 µs | CPU s | CPU µs/op |\n|---|---|---|---|---|---|---|"
    );
    for &clients in &options.clients {
        let result = runtime.block_on(run_once(&options, clients))?;
        let ops_per_sec = result.ops as f64 / result.wall.as_secs_f64();
        println!(
            "| {clients} | {:.0} | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} |",
            ops_per_sec,
            result.wall.as_nanos() as f64 / result.ops.max(1) as f64,
            result.p50.as_nanos() as f64 / 1000.0,
            result.p99.as_nanos() as f64 / 1000.0,
            result.cpu.as_secs_f64(),
            result.cpu.as_nanos() as f64 / 1000.0 / result.ops.max(1) as f64,
        );
    }
    Ok(())
}
