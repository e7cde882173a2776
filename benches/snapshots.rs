//! Snapshot benchmarks (run with `cargo bench --bench snapshots`; figures in BENCHMARKS.md).
//!
//! Measurements on real nodes (`RaftNode` with the write-ahead log on disk and TCP on
//! loopback):
//!
//! 0. **Taking a snapshot.** The store below freezes a point-in-time view of itself in
//!    `snapshot_view` (a copy-on-write map in 4,096 shards: one `Arc` clone per shard), which
//!    the node writes out on another thread. Reported: how long that holds the node up at
//!    the benchmark's state size (alone, and in the nodes below), and what the first write
//!    after it costs (the shards it touches are copied, their values shared).
//! 1. **Catch-up from a snapshot.** Three nodes; node 3 is down while nodes 1 and 2 build
//!    `SNAPSHOT_BENCH_MB` of state, take one snapshot covering all of it and compact their
//!    logs. Node 3 then starts with an empty data directory **in a process of its own** (this
//!    benchmark runs itself again with `SNAPSHOT_BENCH_FOLLOWER` set), so that the memory of
//!    each side is measured alone: the leader streams it the snapshot in chunks, it writes
//!    them to a file, restores its state machine from the file and applies the log after it.
//!    Reported: the time until it has applied everything, the snapshot's size over that time
//!    (MB/s), where the time went (from the nodes' log events and the state machine's own
//!    timing), and memory: the leader's process (nodes 1 and 2) before the transfer against
//!    its peak during it, the follower's peak against its resident size once caught up
//!    (after `malloc_trim`). `/proc/<pid>/status` is sampled every 10 ms, and each process's
//!    high-water mark (`VmHWM`, reset at the start for the leader's) catches what falls
//!    between samples.
//! 2. **Restart from a local snapshot.** Node 3 is stopped and started again (another process)
//!    from its data directory: it reads the snapshot, restores its state machine from it and
//!    applies the log after it. Reported: the time until it has applied everything again, and
//!    its peak memory against its final.
//! 3. **Bounded disk use.** One node, 1,000,000 overwrites of 10,000 keys with 256-byte values
//!    (about 2.7 MB of live data), a snapshot after every 4 MB of applied commands and 4 MiB
//!    log segments. Reported: the data directory's size as the writes go on, against the live
//!    data size. What bounds it: the current and the prepared next segment, the segments not
//!    yet compacted (up to the 4 MB between snapshots), and the snapshot itself.
//!
//! Also reported for the catch-up: the memory the allocator has handed out (`mallinfo2`),
//! sampled the same way, because RSS also counts free memory the allocator touches again.
//!
//! Settings, all optional: `SNAPSHOT_BENCH_MB` sets the state size of 0 to 2 (default 100;
//! 1000 needs about 4 GB of memory and 6 GB of disk); `SNAPSHOT_BENCH_WRITES` the writes of 3
//! (default 1,000,000); `SNAPSHOT_BENCH_CHUNK_KB` and `SNAPSHOT_BENCH_INFLIGHT` override
//! `snapshot_chunk_bytes` and `max_inflight_snapshot_chunks`; `SNAPSHOT_BENCH_SHARD_BITS` the
//! store's shard count (log2, default 12); `SNAPSHOT_BENCH_DOWN_SECS` keeps node 3 down that
//! much longer once the snapshot is taken (what the leader holds for a follower that is
//! down); `SNAPSHOT_BENCH_VERBOSE` prints the events behind "where the time went";
//! `SNAPSHOT_BENCH_PERF=<dir>` records both sides with `perf record` into `<dir>` (the
//! follower then runs under perf: ignore its memory figures).

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use raft_consensus::state_machine::SnapshotView;
use raft_consensus::storage::{WalIdentity, WalOptions, WalStorage};
use raft_consensus::transport::{TcpConfig, TcpTransport};
use raft_consensus::{Config, LogIndex, NodeId, RaftNode, StateMachine};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, filter::LevelFilter};

const CLUSTER_ID: u64 = 0x5A_B3;
const KEYS_PER_COMMAND: usize = 1_000;
const VALUE_BYTES: usize = 1_000;
/// Set (to anything) in the process that runs node 3 alone.
const FOLLOWER_ENV: &str = "SNAPSHOT_BENCH_FOLLOWER";

/// The store's shards: a view of the store clones this many `Arc`s.
/// log2 of the store's shard count (`SNAPSHOT_BENCH_SHARD_BITS`, default 12).
fn shard_bits() -> u32 {
    static BITS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *BITS.get_or_init(|| {
        std::env::var("SNAPSHOT_BENCH_SHARD_BITS")
            .ok()
            .and_then(|bits| bits.parse().ok())
            .unwrap_or(12)
            .clamp(1, 20)
    })
}

fn shards() -> usize {
    1 << shard_bits()
}

type Shard = BTreeMap<u64, Bytes>;

/// Copies values into blocks of [`ARENA_BLOCK`] bytes, each value a `Bytes` slice of its
/// block: one allocation per block rather than per value (a restore of 1 GB of 1,000-byte
/// values otherwise spends most of its time in the allocator growing the heap). A block is
/// freed once none of its values is left.
struct Arena {
    block: BytesMut,
}

const ARENA_BLOCK: usize = 1 << 20;

impl Arena {
    fn new() -> Self {
        Arena { block: BytesMut::new() }
    }

    fn copy(&mut self, value: &[u8]) -> Bytes {
        if self.block.capacity() - self.block.len() < value.len() {
            self.block = BytesMut::with_capacity(ARENA_BLOCK.max(value.len()));
        }
        self.block.extend_from_slice(value);
        self.block.split().freeze()
    }
}

/// A store of byte values by key, in shards of copy-on-write maps, so that a point-in-time
/// view of it costs one `Arc` clone per shard and a write after it copies only the shards it
/// touches (the values stay shared: `Bytes`, in blocks of [`ARENA_BLOCK`]). A command is a batch of writes: count u32, then for
/// each a key u64 and a value u32-length-prefixed. Its snapshot is a count u32 and every
/// key and value in the same encoding, shard after shard, in key order within a shard.
struct BlobStore {
    shards: Vec<Arc<Shard>>,
    /// Which node's (for the timing events).
    node: u64,
}

impl BlobStore {
    fn new(node: u64) -> Self {
        BlobStore { shards: (0..shards()).map(|_| Arc::default()).collect(), node }
    }

    fn shard_of(key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - shard_bits())) as usize
    }

    fn insert(&mut self, key: u64, value: Bytes) {
        Arc::make_mut(&mut self.shards[Self::shard_of(key)]).insert(key, value);
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len()).sum()
    }
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

/// Splits one record (key u64, value length u32, value) off the front of `bytes`: `None`
/// if `bytes` holds less than a whole one (then the second value is how many bytes it needs).
fn split_record(bytes: &[u8]) -> Result<(u64, &[u8], usize), usize> {
    let Some((head, rest)) = bytes.split_first_chunk::<12>() else { return Err(12) };
    let key = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
    let length = u32::from_le_bytes(head[8..].try_into().unwrap_or_default()) as usize;
    match rest.get(..length) {
        Some(value) => Ok((key, value, 12 + length)),
        None => Err(12 + length),
    }
}

/// Reads a count u32 and that many records from `reader` through a buffer of its own,
/// calling `record` with each: the input is never held whole.
fn decode_records(
    reader: &mut dyn Read,
    mut record: impl FnMut(u64, &[u8]),
) -> Result<(), Box<dyn Error + Send + Sync>> {
    const BUFFER: usize = 256 * 1024;
    let mut buffer = vec![0u8; BUFFER];
    // Bytes of `buffer` read and not yet decoded: `start..end`.
    let (mut start, mut end) = (0, 0);
    let mut fill = |buffer: &mut Vec<u8>, start: &mut usize, end: &mut usize, need: usize| {
        // Moves what is left to the front and reads until `need` bytes are there.
        buffer.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
        if buffer.len() < need {
            buffer.resize(need, 0);
        }
        while *end < need {
            let read = reader.read(&mut buffer[*end..])?;
            if read == 0 {
                return Err::<(), Box<dyn Error + Send + Sync>>("truncated snapshot".into());
            }
            *end += read;
        }
        Ok(())
    };
    fill(&mut buffer, &mut start, &mut end, 4)?;
    let count = u32::from_le_bytes(buffer[..4].try_into()?) as usize;
    start = 4;
    let mut decoded = 0;
    while decoded < count {
        match split_record(&buffer[start..end]) {
            Ok((key, value, used)) => {
                record(key, value);
                start += used;
                decoded += 1;
            }
            Err(need) => fill(&mut buffer, &mut start, &mut end, need)?,
        }
    }
    if start < end || reader.read(&mut [0u8; 1])? != 0 {
        return Err("trailing bytes after the snapshot's records".into());
    }
    Ok(())
}

/// The store's state frozen at one point: its shards, shared with the store.
struct BlobView {
    shards: Vec<Arc<Shard>>,
}

impl BlobView {
    fn write_into(&self, out: &mut dyn Write) -> io::Result<()> {
        const BUFFER: usize = 256 * 1024;
        let count: usize = self.shards.iter().map(|shard| shard.len()).sum();
        let mut buffer = Vec::with_capacity(BUFFER + 12 + VALUE_BYTES);
        buffer.extend_from_slice(&u32::try_from(count).map_err(io::Error::other)?.to_le_bytes());
        for shard in &self.shards {
            for (key, value) in shard.iter() {
                if buffer.len() + 12 + value.len() > BUFFER && !buffer.is_empty() {
                    out.write_all(&buffer)?;
                    buffer.clear();
                }
                buffer.extend_from_slice(&key.to_le_bytes());
                buffer.extend_from_slice(&(value.len() as u32).to_le_bytes());
                buffer.extend_from_slice(value);
            }
        }
        out.write_all(&buffer)
    }
}

impl SnapshotView for BlobView {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> Result<(), Box<dyn Error + Send + Sync>> {
        let started = mono_ns();
        self.write_into(out)?;
        record_event("view written", started);
        Ok(())
    }
}

impl StateMachine for BlobStore {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let (count, mut rest) = command.split_at_checked(4).ok_or("empty command")?;
        let count = u32::from_le_bytes(count.try_into()?) as usize;
        // Decoded whole before anything is written: a bad command changes nothing.
        let mut writes = Vec::with_capacity(count);
        let mut arena = Arena::new();
        for _ in 0..count {
            let (key, value, used) = split_record(rest).map_err(|_| "truncated command")?;
            writes.push((key, arena.copy(value)));
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return Err("trailing bytes after the command's writes".into());
        }
        for (key, value) in writes {
            self.insert(key, value);
        }
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        let mut bytes = Vec::new();
        BlobView { shards: self.shards.clone() }.write_into(&mut bytes)?;
        Ok(bytes)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.restore_from(&mut &snapshot[..])
    }

    fn snapshot_view(&self) -> Result<Box<dyn SnapshotView>, Box<dyn Error + Send + Sync>> {
        let started = mono_ns();
        let view = BlobView { shards: self.shards.clone() };
        record_event(&format!("view taken by node{}", self.node), started);
        Ok(Box::new(view))
    }

    fn restore_from(
        &mut self,
        snapshot: &mut dyn Read,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let started = mono_ns();
        let mut shards: Vec<Shard> = (0..shards()).map(|_| Shard::new()).collect();
        let mut arena = Arena::new();
        decode_records(snapshot, |key, value| {
            shards[Self::shard_of(key)].insert(key, arena.copy(value));
        })?;
        self.shards = shards.into_iter().map(Arc::new).collect();
        record_event("restore", started);
        Ok(())
    }
}

/// Nanoseconds on the monotonic clock, which every process of the machine shares.
fn mono_ns() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// Things that happened, with when they started and ended (monotonic ns): the nodes' log
/// events of interest (start = end) and the state machine's own timing.
static EVENTS: Mutex<Vec<(String, u64, u64)>> = Mutex::new(Vec::new());

fn record_event(name: &str, started: u64) {
    let ended = mono_ns();
    EVENTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((
        name.to_owned(),
        started,
        ended,
    ));
}

/// The first recorded event whose name starts with `prefix`: its start and end.
fn event(prefix: &str) -> Option<(u64, u64)> {
    let events = EVENTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    events.iter().find(|(name, ..)| name.starts_with(prefix)).map(|(_, start, end)| (*start, *end))
}

fn events_named(prefix: &str) -> Vec<(u64, u64)> {
    let events = EVENTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    events
        .iter()
        .filter(|(name, ..)| name.starts_with(prefix))
        .map(|(_, start, end)| (*start, *end))
        .collect()
}

/// Prints the events recorded from the `skip`th on, with their times from `origin`.
fn print_events(process: &str, origin: u64, skip: usize) {
    let events = EVENTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for (name, start, end) in events.iter().skip(skip) {
        let from = |at: u64| (at as f64 - origin as f64) / 1e6;
        eprintln!("  {process}: {:>9.1} .. {:>9.1} ms  {name}", from(*start), from(*end));
    }
}

/// Records the time of the nodes' log lines about snapshot transfers.
struct SnapshotEvents;

impl<S: tracing::Subscriber> Layer<S> for SnapshotEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(Option<String>, String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.0 = Some(format!("{value:?}")),
                    "node" => self.1 = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        let now = mono_ns();
        let mut message = Message(None, String::new());
        event.record(&mut message);
        let Message(Some(message), node) = message else { return };
        let interesting = ["Sending snapshot", "Receiving snapshot", "Installed snapshot"]
            .iter()
            .any(|prefix| message.starts_with(prefix))
            || message.contains("installed the snapshot");
        let election = message.starts_with("Starting election") || message.starts_with("Becoming");
        if interesting || election {
            let name = if election { format!("{node}: {message}") } else { message };
            EVENTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((name, now, now));
        } else if *event.metadata().level() <= tracing::Level::WARN {
            eprintln!("[{}] {node}: {message}", event.metadata().level());
        }
    }
}

fn install_event_recorder() {
    tracing_subscriber::registry().with(SnapshotEvents.with_filter(LevelFilter::INFO)).init();
}

/// `VmRSS` and `VmHWM` of process `pid` ("self" for this one), in bytes.
fn memory_of(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let kb = line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim();
            kb.parse::<u64>().ok().map(|kb| kb * 1024)
        })
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user and system, all threads) this process has used, in nanoseconds.
fn cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct it is given; all-zero is a valid one.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let ns = |time: libc::timeval| time.tv_sec as u64 * 1_000_000_000 + time.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Bytes the allocator has handed out and not had back (`mallinfo2`: in use in the arenas
/// and in mmapped chunks): what the process holds, without the free memory the allocator
/// keeps (which RSS counts once touched).
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

/// Samples this process's heap in use every 10 ms until `stop`; returns its peak.
fn sample_heap(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = u64::max(peak, heap_in_use());
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

/// Resets this process's `VmHWM` to its current RSS.
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Gives the allocator's free memory back to the system, so that RSS measures what is live.
fn trim_memory() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
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
    let peers = peers.into_iter().filter(|(peer, _)| *peer != id);
    let mut tcp = TcpConfig::new(CLUSTER_ID);
    tcp.max_frame_bytes = tcp.max_frame_bytes.max(2 * config.snapshot_chunk_bytes);
    let transport = TcpTransport::start(id, listener, peers, tcp)?;
    let members = (1..=addresses.len() as u64).map(NodeId);
    Ok(RaftNode::start(id, members, config, storage, transport, BlobStore::new(id.0))?)
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

fn env_text(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

/// Proposes through whichever of `nodes` leads, again if leadership changes before the
/// outcome is known (the build's commands write fixed values: applying one twice is harmless).
async fn propose(nodes: &[&RaftNode], command: Vec<u8>) -> anyhow::Result<()> {
    let mut last_error = None;
    for _ in 0..50 {
        for node in nodes {
            if node.status().is_leader() {
                match node.propose(command.clone()).await {
                    Ok(_) => return Ok(()),
                    Err(error) => last_error = Some(error),
                }
            }
        }
        nodes[0].wait_for(Duration::from_secs(5), |status| status.leader_id.is_some()).await?;
    }
    bail!("no leader took the command (last error: {last_error:?})")
}

/// The size of one command of the state build.
const COMMAND_BYTES: u64 = 4 + (KEYS_PER_COMMAND * (8 + 4 + VALUE_BYTES)) as u64;

/// The catch-up benchmark's config: one snapshot, when the last command of the build is
/// applied, and a short log tail behind it.
fn catch_up_config(state_mb: u64) -> anyhow::Result<Config> {
    let commands = commands_for(state_mb);
    let defaults = Config::default();
    Ok(Config {
        snapshot_after_entries: 0,
        snapshot_after_bytes: commands * COMMAND_BYTES,
        snapshot_keep_entries: 10,
        snapshot_chunk_bytes: env_number(
            "SNAPSHOT_BENCH_CHUNK_KB",
            defaults.snapshot_chunk_bytes as u64 / 1024,
        )? as usize
            * 1024,
        max_inflight_snapshot_chunks: env_number(
            "SNAPSHOT_BENCH_INFLIGHT",
            defaults.max_inflight_snapshot_chunks as u64,
        )? as usize,
        ..defaults
    })
}

fn commands_for(state_mb: u64) -> u64 {
    state_mb * 1_000_000 / (KEYS_PER_COMMAND * VALUE_BYTES) as u64
}

/// The writes of command `command` of the build.
fn build_command(command: u64) -> Vec<u8> {
    let writes: Vec<(u64, Vec<u8>)> = (0..KEYS_PER_COMMAND as u64)
        .map(|key| (command * KEYS_PER_COMMAND as u64 + key, vec![command as u8; VALUE_BYTES]))
        .collect();
    encode_writes(&writes)
}

/// Measurement 0: the pause of `snapshot_view` on a store of `state_mb`, and the cost of the
/// first write after it (each shard it touches is copied).
fn view_pause(state_mb: u64) -> anyhow::Result<()> {
    let mut store = BlobStore::new(0);
    let commands = commands_for(state_mb);
    for command in 0..commands {
        store.apply(&build_command(command)).map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    let mut pauses = Vec::new();
    let mut first_writes = Vec::new();
    let mut plain_writes = Vec::new();
    for round in 0..5 {
        // One command of 1,000 writes, to keys spread over every shard.
        let command = build_command(commands + round);
        let started = Instant::now();
        store.apply(&command).map_err(|error| anyhow::anyhow!("{error}"))?;
        plain_writes.push(started.elapsed());
        let started = Instant::now();
        let view = store.snapshot_view().map_err(|error| anyhow::anyhow!("{error}"))?;
        pauses.push(started.elapsed());
        let started = Instant::now();
        store.apply(&command).map_err(|error| anyhow::anyhow!("{error}"))?;
        first_writes.push(started.elapsed());
        drop(view);
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    println!(
        "snapshot_view on {} keys ({state_mb} MB, {} shards): pause {:.1} us (median of \
         5, max {:.1} us); a 1,000-key write right after it {:.1} ms (it copies the shards it \
         touches), without a view {:.2} ms",
        store.len(),
        shards(),
        median(&mut pauses).as_secs_f64() * 1e6,
        pauses.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e6,
        median(&mut first_writes).as_secs_f64() * 1e3,
        median(&mut plain_writes).as_secs_f64() * 1e3,
    );
    Ok(())
}

/// What a follower process reported, and the memory its parent sampled.
struct FollowerRun {
    results: HashMap<String, u64>,
    /// Largest VmRSS sampled, and the last VmHWM read.
    peak_rss: u64,
    hwm: u64,
    /// The parent's own largest VmRSS sampled while the follower ran.
    parent_peak_rss: u64,
}

/// Runs node 3 in a child process (this binary again) until it has applied `commit`,
/// sampling its memory and this process's. `mode` is "catch-up" or "restart".
async fn run_follower(
    mode: &str,
    addresses: &[SocketAddr],
    root: &Path,
    commit: LogIndex,
) -> anyhow::Result<FollowerRun> {
    let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    // SNAPSHOT_BENCH_PERF=<dir>: both sides are profiled with `perf record` (the follower
    // runs under it, so its memory figures are perf's process's, not to be reported).
    let perf_dir = std::env::var_os("SNAPSHOT_BENCH_PERF").map(PathBuf::from);
    let mut command = match &perf_dir {
        Some(dir) => {
            let mut command = tokio::process::Command::new("perf");
            command
                .args(["record", "-F", "2999", "--call-graph", "dwarf,16384", "-o"])
                .arg(dir.join(format!("{mode}-follower.data")))
                .arg("--")
                .arg(std::env::current_exe()?);
            command
        }
        None => tokio::process::Command::new(std::env::current_exe()?),
    };
    let leader_perf = match &perf_dir {
        Some(dir) => Some(
            std::process::Command::new("perf")
                .args(["record", "-F", "2999", "--call-graph", "dwarf,16384", "-p"])
                .arg(std::process::id().to_string())
                .arg("-o")
                .arg(dir.join(format!("{mode}-leader.data")))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?,
        ),
        None => None,
    };
    let mut child = command
        .args(std::env::args().skip(1))
        .env(FOLLOWER_ENV, mode)
        .env("SNAPSHOT_BENCH_ADDRESSES", addresses.join(","))
        .env("SNAPSHOT_BENCH_ROOT", root)
        .env("SNAPSHOT_BENCH_COMMIT", commit.0.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("the follower process has a pid")?.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut peak, mut hwm, mut parent_peak) = (0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, high)) = memory_of(&pid) {
                    peak = u64::max(peak, rss);
                    hwm = u64::max(hwm, high);
                }
                if let Some((rss, _)) = memory_of("self") {
                    parent_peak = u64::max(parent_peak, rss);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (peak, hwm, parent_peak)
        })
    };
    let stdout = child.stdout.take().context("the follower's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut results = HashMap::new();
    while let Some(line) = lines.next_line().await? {
        if line == "done" {
            break;
        }
        if let Some((key, value)) = line.split_once('=') {
            results.insert(key.to_owned(), value.parse::<u64>().unwrap_or_default());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (peak_rss, hwm, parent_peak_rss) =
        sampler.join().map_err(|_| anyhow::anyhow!("the memory sampler panicked"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A follower that failed is gone already.
        let _ = stdin.write_all(b"stop\n").await;
    }
    let status = child.wait().await?;
    if let Some(mut perf) = leader_perf {
        // SAFETY: signals the perf process this function started.
        unsafe { libc::kill(perf.id() as libc::pid_t, libc::SIGINT) };
        perf.wait()?;
    }
    if !status.success() || !results.contains_key("caught_up_ns") {
        bail!("the follower process failed ({status}); it reported {results:?}");
    }
    Ok(FollowerRun { results, peak_rss, hwm, parent_peak_rss })
}

/// The child process: runs node 3 until it has applied the commit index it was given,
/// prints what it measured as `key=value` lines and `done`, then waits for `stop`.
async fn follower_process() -> anyhow::Result<()> {
    install_event_recorder();
    let state_mb = env_number("SNAPSHOT_BENCH_MB", 100)?;
    let addresses = env_text("SNAPSHOT_BENCH_ADDRESSES")?
        .split(',')
        .map(|address| address.parse().context("an address"))
        .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
    let root = PathBuf::from(env_text("SNAPSHOT_BENCH_ROOT")?);
    let commit = LogIndex(env_number("SNAPSHOT_BENCH_COMMIT", 0)?);
    let config = catch_up_config(state_mb)?;
    let (start_rss, _) = memory_of("self").unwrap_or_default();
    let start_heap = heap_in_use();
    let stop_heap = Arc::new(AtomicBool::new(false));
    let heap_sampler = sample_heap(Arc::clone(&stop_heap));
    let started = mono_ns();
    let node = start_node(NodeId(3), &addresses, &root, config, WalOptions::default()).await?;
    let status =
        node.wait_for(Duration::from_secs(600), |status| status.applied_index >= commit).await?;
    let caught_up = mono_ns();
    let cpu = cpu_ns();
    stop_heap.store(true, Ordering::Relaxed);
    let heap_peak = heap_sampler.join().unwrap_or_default().max(heap_in_use());
    let final_heap = heap_in_use();
    let (peak_before_trim_rss, hwm) = memory_of("self").unwrap_or_default();
    trim_memory();
    let (final_rss, _) = memory_of("self").unwrap_or_default();
    let mut out = io::stdout().lock();
    let mut report = |key: &str, value: u64| writeln!(out, "{key}={value}");
    report("started_ns", started)?;
    report("caught_up_ns", caught_up)?;
    report("cpu_ns", cpu)?;
    report("applied_index", status.applied_index.0)?;
    report("snapshot_index", status.snapshot_index.0)?;
    report("start_rss", start_rss)?;
    report("rss_before_trim", peak_before_trim_rss)?;
    report("final_rss", final_rss)?;
    report("hwm", hwm)?;
    report("start_heap", start_heap)?;
    report("heap_peak", heap_peak)?;
    report("final_heap", final_heap)?;
    for (key, prefix) in [
        ("first_chunk", "Receiving snapshot"),
        ("all_received", "Installed snapshot"),
        ("restore", "restore"),
    ] {
        if let Some((start, end)) = event(prefix) {
            report(&format!("{key}_start_ns"), start)?;
            report(&format!("{key}_end_ns"), end)?;
        }
    }
    if std::env::var_os("SNAPSHOT_BENCH_VERBOSE").is_some() {
        print_events("node3's process", started, 0);
    }
    writeln!(out, "done")?;
    out.flush()?;
    drop(out);
    let mut line = String::new();
    let _ = io::stdin().read_line(&mut line);
    node.shutdown().await?;
    Ok(())
}

async fn catch_up_and_restart(state_mb: u64) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let addresses = free_addresses(3)?;
    let config = catch_up_config(state_mb)?;
    let wal = WalOptions::default();
    let first = start_node(NodeId(1), &addresses, root.path(), config.clone(), wal.clone()).await?;
    let second =
        start_node(NodeId(2), &addresses, root.path(), config.clone(), wal.clone()).await?;
    first.wait_for(Duration::from_secs(10), |status| status.leader_id.is_some()).await?;

    let commands = commands_for(state_mb);
    let started = Instant::now();
    for command in 0..commands {
        propose(&[&first, &second], build_command(command)).await?;
        if command % 10 == 9 || command + 1 == commands {
            eprint!("\rbuilding state: {}/{commands} MB-sized commands", command + 1);
        }
    }
    eprintln!();
    let leader = if first.status().is_leader() { &first } else { &second };
    // Wait for the snapshot, and compaction behind it. It covers everything, or all but the
    // last few commands if one was applied twice (proposed again after an election).
    let status = leader
        .wait_for(Duration::from_secs(600), |status| {
            status.snapshot_index.0 > 0 && status.snapshot_index.0 + 10 >= status.commit_index.0
        })
        .await?;
    let built = started.elapsed().as_secs_f64();
    let leader_dir = root.path().join(leader.id().to_string());
    let leader_dir_bytes = dir_bytes(&leader_dir)?;
    let snapshot_file = std::fs::read_dir(&leader_dir)?
        .filter_map(Result::ok)
        .find(|entry| entry.file_name().to_string_lossy().ends_with(".snap"))
        .map(|entry| entry.metadata().map(|metadata| metadata.len()))
        .transpose()?
        .context("the leader stored a snapshot")?;
    // Each node's last view is the snapshot of the whole state (its first, of the empty
    // state, is the node asking at start whether snapshots are supported).
    let pauses: Vec<String> = [1, 2]
        .iter()
        .filter_map(|node| events_named(&format!("view taken by node{node}")).last().copied())
        .map(|(start, end)| format!("{:.1} us", (end - start) as f64 / 1e3))
        .collect();
    let writes: Vec<String> = events_named("view written")
        .iter()
        .map(|(start, end)| format!("{:.2} s", (end - start) as f64 / 1e9))
        .collect();
    println!(
        "state: {} keys x {VALUE_BYTES} B in {built:.1} s; leader snapshot through {}, log from \
         {}; snapshot_view held the nodes up {} and was written in {}",
        commands * KEYS_PER_COMMAND as u64,
        status.snapshot_index,
        status.first_log_index,
        pauses.join(", "),
        writes.join(", "),
    );

    // SNAPSHOT_BENCH_DOWN_SECS: node 3 stays down this much longer, the leader's snapshot
    // ready for it (what a leader holds for a follower that is down).
    trim_memory();
    let (leader_at_snapshot, _) = memory_of("self").context("reading /proc/self/status")?;
    let down = env_number("SNAPSHOT_BENCH_DOWN_SECS", 0)?;
    if down > 0 {
        tokio::time::sleep(Duration::from_secs(down)).await;
        trim_memory();
        let (after, _) = memory_of("self").context("reading /proc/self/status")?;
        println!(
            "leader's process with node 3 down for {down} s more: {:.0} MB -> {:.0} MB",
            mb(leader_at_snapshot),
            mb(after)
        );
    }
    // Memory of the leader's process (nodes 1 and 2) from here: what is live now (free memory
    // given back first), and its peak from now on. malloc_trim holds each allocator arena
    // while it works, which can hold a node up longer than an election timeout (at 1 GB the
    // leader then stepped down): the cluster settles before node 3 starts.
    trim_memory();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..100 {
        if first.status().is_leader() || second.status().is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader_before, _) = memory_of("self").context("reading /proc/self/status")?;
    reset_peak_memory();
    let leader = if first.status().is_leader() { &first } else { &second };
    let term_before = leader.status().term;
    let commit = leader.status().commit_index;
    let events_before = EVENTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len();
    let leader_cpu = cpu_ns();
    let leader_heap = heap_in_use();
    let stop_heap = Arc::new(AtomicBool::new(false));
    let heap_sampler = sample_heap(Arc::clone(&stop_heap));
    let run = run_follower("catch-up", &addresses, root.path(), commit).await?;
    stop_heap.store(true, Ordering::Relaxed);
    let leader_heap_peak = heap_sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the heap sampler panicked"))?
        .max(heap_in_use());
    let leader_cpu = cpu_ns() - leader_cpu;
    let (_, leader_hwm) = memory_of("self").unwrap_or_default();
    let leader_peak = run.parent_peak_rss.max(leader_hwm);
    let term_after = leader.status().term;
    if std::env::var_os("SNAPSHOT_BENCH_VERBOSE").is_some() {
        print_events("leader's process", run.results["started_ns"], 0);
    }
    let result = |key: &str| run.results.get(key).copied();
    let ns = |key: &str| result(key).unwrap_or_default();
    let elapsed = (ns("caught_up_ns") - ns("started_ns")) as f64 / 1e9;
    println!(
        "catch-up from a snapshot: {:.1} MB snapshot, node3 (its own process) current in \
         {elapsed:.2} s ({:.0} MB/s, snapshot index {}, leader's data dir {:.1} MB, term \
         {term_before} before and {term_after} after: {} election(s) during the transfer)",
        mb(snapshot_file),
        mb(snapshot_file) / elapsed,
        ns("snapshot_index"),
        mb(leader_dir_bytes),
        term_after.0 - term_before.0
    );
    // Where the time went.
    let leader_heard = {
        let events = EVENTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        events[events_before..]
            .iter()
            .find(|(name, ..)| name.contains("installed the snapshot"))
            .map(|(_, at, _)| *at)
    };
    let phase = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(from), Some(to)) => format!("{:.0} ms", (to as f64 - from as f64) / 1e6),
        _ => "?".to_owned(),
    };
    let transfer_ms = match (result("first_chunk_start_ns"), result("all_received_start_ns")) {
        (Some(from), Some(to)) => (to - from) as f64 / 1e6,
        _ => f64::NAN,
    };
    println!(
        "  where the time went: node start to the first chunk received {} (connection, the \
         leader resuming its transfer); transfer (first chunk received to last) {transfer_ms:.0} ms ({:.0} MB/s); storing \
         the file (last chunk written, fdatasync, rename) {}; restore (decode into the state \
         machine) {}; log tail and status {}; the leader heard of the install {} after the \
         follower caught up",
        phase(result("started_ns"), result("first_chunk_start_ns")),
        mb(snapshot_file) / (transfer_ms / 1e3),
        phase(result("all_received_start_ns"), result("restore_start_ns")),
        phase(result("restore_start_ns"), result("restore_end_ns")),
        phase(result("restore_end_ns"), result("caught_up_ns")),
        phase(result("caught_up_ns"), leader_heard),
    );
    println!(
        "  CPU time: leader's process {:.2} s, follower's process {:.2} s",
        leader_cpu as f64 / 1e9,
        ns("cpu_ns") as f64 / 1e9
    );
    println!(
        "  heap in use (mallinfo2): leader's process {:.0} MB before, peak {:.0} MB: {:.1} MB \
         extra; follower's process peak {:.0} MB, {:.0} MB once caught up: {:.1} MB extra",
        mb(leader_heap),
        mb(leader_heap_peak),
        mb(leader_heap_peak.saturating_sub(leader_heap)),
        mb(ns("heap_peak")),
        mb(ns("final_heap")),
        mb(ns("heap_peak").saturating_sub(ns("final_heap"))),
    );
    let follower_peak = run.peak_rss.max(run.hwm).max(ns("hwm"));
    println!(
        "  memory: leader's process (nodes 1 and 2) {:.0} MB before the transfer, peak {:.0} \
         MB during it: {:.1} MB extra; follower's process {:.0} MB at start, peak {:.0} MB, \
         {:.0} MB once caught up ({:.0} MB before malloc_trim): {:.1} MB above the state it \
         holds ({:.0} MB over its start)",
        mb(leader_before),
        mb(leader_peak),
        mb(leader_peak.saturating_sub(leader_before)),
        mb(ns("start_rss")),
        mb(follower_peak),
        mb(ns("final_rss")),
        mb(ns("rss_before_trim")),
        mb(follower_peak.saturating_sub(ns("final_rss"))),
        mb(ns("final_rss").saturating_sub(ns("start_rss"))),
    );

    let run = run_follower("restart", &addresses, root.path(), commit).await?;
    let ns = |key: &str| run.results.get(key).copied().unwrap_or_default();
    let restore = match (run.results.get("restore_start_ns"), run.results.get("restore_end_ns")) {
        (Some(start), Some(end)) => format!("{:.2} s", (end - start) as f64 / 1e9),
        _ => "?".to_owned(),
    };
    let follower_peak = run.peak_rss.max(run.hwm).max(ns("hwm"));
    println!(
        "restart from the local snapshot: node3 current again in {:.2} s (applied index {}, \
         restore {restore}); memory: peak {:.0} MB, {:.0} MB once current: {:.1} MB extra",
        (ns("caught_up_ns") - ns("started_ns")) as f64 / 1e9,
        ns("applied_index"),
        mb(follower_peak),
        mb(ns("final_rss")),
        mb(follower_peak.saturating_sub(ns("final_rss"))),
    );
    for node in [first, second] {
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

/// The store's snapshot round-trips, streamed or not, and a damaged one changes nothing.
fn self_check() -> anyhow::Result<()> {
    let error = |error: Box<dyn Error + Send + Sync>| anyhow::anyhow!("{error}");
    let mut store = BlobStore::new(1);
    for command in 0..3 {
        store.apply(&build_command(command)).map_err(error)?;
    }
    let bytes = store.snapshot().map_err(error)?;
    let mut streamed = Vec::new();
    store.snapshot_view().map_err(error)?.write_to(&mut streamed).map_err(error)?;
    let mut restored = BlobStore::new(2);
    restored.restore_from(&mut &bytes[..]).map_err(error)?;
    let truncated = restored.restore(&bytes[..bytes.len() - 1]).is_err();
    let trailing = restored.restore(&[&bytes[..], b"x"].concat()).is_err();
    if bytes != streamed || restored.shards != store.shards || !truncated || !trailing {
        bail!("the store's snapshots do not round-trip");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    if std::env::var_os(FOLLOWER_ENV).is_some() {
        return follower_process().await;
    }
    install_event_recorder();
    self_check()?;
    EVENTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    let state_mb = env_number("SNAPSHOT_BENCH_MB", 100)?;
    let writes = env_number("SNAPSHOT_BENCH_WRITES", 1_000_000)?;
    view_pause(state_mb)?;
    trim_memory();
    catch_up_and_restart(state_mb).await?;
    bounded_disk(writes).await?;
    Ok(())
}
