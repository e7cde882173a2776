//! Write-ahead log benchmark: what [`WalStorage`] gets out of this machine's disk.
//!
//! ```bash
//! cargo bench --bench wal_append
//! ```
//!
//! Everything runs in fresh temporary directories under cargo's `target/tmp` (the project's
//! disk; `/tmp` may be a tmpfs elsewhere), removed at the end. It measures, in order:
//!
//! 1. Raw `write_all` of 4 KiB + `sync_data` (`fdatasync`) on a file opened for appending, as
//!    the WAL's first segment grows: every sync also makes the file's new length durable. The
//!    same again overwriting a preallocated, already synced file, as the WAL's later
//!    (zero-filled) segments are written, where `fdatasync` has no metadata to write.
//! 2. The disk's sequential write bandwidth: 256 MiB appended to a new file in 1 MiB writes,
//!    `fdatasync` every 16 MiB; three times, the median taken.
//! 3. `WalStorage` with 256-byte entries, in sync batches of 1, 16 and 256 entries: each batch
//!    is one `append`, one `save_hard_state` (the commit index advancing, as a node's does)
//!    and one `sync`. After each case, raw appends and raw preallocated overwrites of the same
//!    number of bytes per `fdatasync`, to tell the WAL's own cost from the disk's. Each WAL
//!    case starts a fresh log with the default 64 MiB segments: the first segment grows as it
//!    is written, the later ones are zero-filled by the WAL's background preparer (whose
//!    writes share the disk with the measured syncs).
//! 4. Batches of 256 again in the steady state of a running node: a snapshot (as a node takes
//!    one with the default `Config`, every 16,384 entries, keeping 1,024) and compaction
//!    behind it, so that roll-overs reuse compacted segments instead of zero-filled ones. The
//!    warm-up writes four segments first, so that spares exist when the measurement starts.
//! 5. Batches of 256, fresh and steady, pipelined as a `RaftNode` runs its log: each batch is
//!    written with `flush`, and its sync completed on a second thread while the next batch is
//!    written, at most sixteen syncs in flight (the writer waits for the oldest before
//!    flushing a seventeenth), as `RaftNode` allows. One `fdatasync` then often covers several batches (the
//!    output counts them). A sample is then the writer's time per batch (encoding, the write,
//!    and waiting for a sync slot); throughput counts every batch, all synced by the end.
//!
//! It prints the figures as Markdown tables (for `BENCHMARKS.md`) and checks them against the
//! targets: batch 256 at 70% or more of the sequential bandwidth, and a batch of 1 within
//! 1.3 times the raw 4 KiB write + `fdatasync` latency. Nothing fails when a target is
//! missed; the figures are for reading.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_consensus::storage::{
    PendingSync, SnapshotStore, Storage, WalIdentity, WalOptions, WalStorage,
};
use raft_consensus::{
    Configuration, Entry, EntryPayload, HardState, LogId, LogIndex, NodeId, SnapshotMeta,
    StorageError, Term,
};

/// Time spent before each measured run, not counted.
const WARM_UP: Duration = Duration::from_millis(500);
/// Length of each measured run: the raw 4 KiB baseline, the WAL cases, and the raw writes of
/// the WAL's bytes per sync that put each WAL case in context.
const RAW_RUN: Duration = Duration::from_secs(3);
const WAL_RUN: Duration = Duration::from_secs(3);
const SAME_BYTES_RUN: Duration = Duration::from_secs(2);
/// The raw 4 KiB block.
const BLOCK_BYTES: usize = 4096;
/// Size of the preallocated file the overwrite run cycles through.
const PREALLOCATED_BYTES: u64 = 64 * 1024 * 1024;
/// Sequential bandwidth run: total, write size and bytes between `fdatasync`s.
const SEQUENTIAL_TOTAL: usize = 256 * 1024 * 1024;
const SEQUENTIAL_WRITE: usize = 1024 * 1024;
const SEQUENTIAL_SYNC_EVERY: usize = 16 * 1024 * 1024;
const SEQUENTIAL_REPEATS: usize = 3;
/// WAL entry payload size and the sync batch sizes measured.
const ENTRY_BYTES: usize = 256;
const BATCHES: [usize; 3] = [1, 16, 256];
/// Steady state: a snapshot every this many entries, keeping this many below it (the
/// `Config` defaults), and the bytes written before measuring (four default segments).
const SNAPSHOT_EVERY_ENTRIES: u64 = 16_384;
const SNAPSHOT_KEEP_ENTRIES: u64 = 1_024;
const STEADY_WARM_UP_BYTES: u64 = 4 * 64 * 1024 * 1024;
/// Pipelined runs: syncs in flight at most (as `RaftNode` allows).
const SYNCS_IN_FLIGHT: usize = 16;
/// The issue's targets.
const BANDWIDTH_TARGET: f64 = 0.70;
const LATENCY_TARGET: f64 = 1.3;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Latency samples summarised, in microseconds.
#[derive(Clone, Copy, Debug)]
struct Latency {
    count: usize,
    mean: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn from_nanos(samples: &mut [u64]) -> Latency {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let micros = |nanos: u64| nanos as f64 / 1_000.0;
        // Nearest rank.
        let percentile = |p: f64| {
            let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            micros(samples[rank - 1])
        };
        let total: u64 = samples.iter().sum();
        Latency {
            count: samples.len(),
            mean: total as f64 / samples.len() as f64 / 1_000.0,
            p50: percentile(0.50),
            p99: percentile(0.99),
            max: micros(samples[samples.len() - 1]),
        }
    }

    fn ops_per_second(&self) -> f64 {
        1_000_000.0 / self.mean
    }

    /// MB/s (10^6 bytes) when every operation writes `bytes`.
    fn mb_per_second(&self, bytes: usize) -> f64 {
        bytes as f64 / self.mean
    }
}

/// One WAL case's results.
struct WalResult {
    batch: usize,
    /// Whether the log ran in the steady state (snapshots, compaction, recycled segments).
    steady: bool,
    /// Whether syncs ran on a second thread while the next batch was written.
    pipelined: bool,
    syncs: usize,
    entries: usize,
    elapsed: Duration,
    /// `append` + `save_hard_state` + `sync`, per batch.
    latency: Latency,
    /// `append` + `save_hard_state` only (encoding and checksums, no I/O), mean µs.
    encode_mean: f64,
    /// `fdatasync` calls the log made during the measured run.
    fdatasyncs: u64,
    /// Bytes of records written per sync.
    disk_bytes_per_sync: f64,
}

impl WalResult {
    /// How the case ran, after its batch size.
    fn label(&self) -> &'static str {
        match (self.steady, self.pipelined) {
            (false, false) => "",
            (true, false) => " (steady state)",
            (false, true) => " (pipelined)",
            (true, true) => " (steady state, pipelined)",
        }
    }

    fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }

    /// Payload (command bytes) written per second, in MB/s (10^6 bytes).
    fn payload_mb_per_second(&self) -> f64 {
        (self.entries * ENTRY_BYTES) as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Bytes reaching the segment files per second, in MB/s.
    fn disk_mb_per_second(&self) -> f64 {
        self.disk_bytes_per_sync * self.syncs as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Runs `op` for `WARM_UP`, then for `run`, and returns each measured call's time in nanoseconds.
fn time_repeatedly(run: Duration, mut op: impl FnMut() -> Result<()>) -> Result<Vec<u64>> {
    let warm_up_end = Instant::now() + WARM_UP;
    while Instant::now() < warm_up_end {
        op()?;
    }
    let mut samples = Vec::with_capacity(1 << 16);
    let end = Instant::now() + run;
    loop {
        let start = Instant::now();
        op()?;
        let finish = Instant::now();
        samples.push(u64::try_from((finish - start).as_nanos())?);
        if finish >= end {
            break;
        }
    }
    Ok(samples)
}

/// `bytes`-byte `write_all` + `sync_data` on a new file opened for appending, as the WAL's first
/// segment is written: every write grows the file, so every `fdatasync` also writes its new
/// length.
fn raw_append_sync(root: &Path, bytes: usize, run: Duration) -> Result<Latency> {
    let dir = tempfile::tempdir_in(root)?;
    let mut file = OpenOptions::new().create(true).append(true).open(dir.path().join("raw"))?;
    let block = vec![0xA5u8; bytes];
    let mut samples = time_repeatedly(run, || {
        file.write_all(&block)?;
        file.sync_data()?;
        Ok(())
    })?;
    Ok(Latency::from_nanos(&mut samples))
}

/// A file written in full and synced, for overwriting in place.
struct Preallocated {
    file: File,
    _dir: tempfile::TempDir,
}

fn preallocate(root: &Path) -> Result<Preallocated> {
    let dir = tempfile::tempdir_in(root)?;
    let mut file = File::create(dir.path().join("preallocated"))?;
    let chunk = vec![0u8; SEQUENTIAL_WRITE];
    for _ in 0..PREALLOCATED_BYTES / SEQUENTIAL_WRITE as u64 {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    Ok(Preallocated { file, _dir: dir })
}

/// `bytes`-byte positioned write + `sync_data`, moving forward through a preallocated file (and
/// wrapping), so that no write changes the file's size or allocates blocks: `fdatasync` has
/// only the data to write.
fn raw_overwrite_sync(preallocated: &Preallocated, bytes: usize, run: Duration) -> Result<Latency> {
    let block = vec![0xA5u8; bytes];
    let mut offset = 0u64;
    let mut samples = time_repeatedly(run, || {
        if offset + bytes as u64 > PREALLOCATED_BYTES {
            offset = 0;
        }
        preallocated.file.write_all_at(&block, offset)?;
        preallocated.file.sync_data()?;
        offset += bytes as u64;
        Ok(())
    })?;
    Ok(Latency::from_nanos(&mut samples))
}

/// Sequential write bandwidth in MB/s: `SEQUENTIAL_TOTAL` bytes appended to a new file in
/// `SEQUENTIAL_WRITE` writes, with an `fdatasync` every `SEQUENTIAL_SYNC_EVERY` bytes.
fn sequential_bandwidth(root: &Path) -> Result<f64> {
    let dir = tempfile::tempdir_in(root)?;
    let mut file = OpenOptions::new().create(true).append(true).open(dir.path().join("seq"))?;
    let chunk = vec![0x5Au8; SEQUENTIAL_WRITE];
    let start = Instant::now();
    let mut written = 0;
    while written < SEQUENTIAL_TOTAL {
        file.write_all(&chunk)?;
        written += chunk.len();
        if written % SEQUENTIAL_SYNC_EVERY == 0 {
            file.sync_data()?;
        }
    }
    file.sync_data()?;
    Ok(written as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// Bytes of log records one batch of `batch` entries writes (`docs/wal-format.md`): each
/// entry record is a 16-byte prefix, an 18-byte entry header and the command; the batch's
/// hard-state record is 42 bytes. (Segments are preallocated, so file sizes do not tell.)
fn bytes_per_batch(batch: usize) -> usize {
    const RECORD_PREFIX: usize = 16;
    const ENTRY_HEADER: usize = 18;
    const HARD_STATE_RECORD: usize = RECORD_PREFIX + 26;
    batch * (RECORD_PREFIX + ENTRY_HEADER + ENTRY_BYTES) + HARD_STATE_RECORD
}

/// `WalStorage` in a fresh directory, `batch` entries of `ENTRY_BYTES` per sync.
fn wal_append(root: &Path, batch: usize, steady: bool, pipelined: bool) -> Result<WalResult> {
    let dir = tempfile::tempdir_in(root)?;
    let wal_dir = dir.path().join("wal");
    let identity = WalIdentity { node_id: NodeId(1), cluster_id: 7 };
    let mut wal = WalStorage::open(&wal_dir, identity, WalOptions::default())?;
    let fdatasync_latency = wal.sync_latency();
    wal.load()?;

    let payload = Bytes::from(vec![0x42u8; ENTRY_BYTES]);
    let mut hard_state =
        HardState { term: Term(1), voted_for: Some(NodeId(1)), commit_index: LogIndex(0) };
    let mut entries: Vec<Entry> = Vec::with_capacity(batch);
    let mut next_index = 1u64;
    let mut snapshot_index = 0u64;
    let mut encode_nanos = Vec::with_capacity(1 << 16);
    // The sync thread of a pipelined run: completes syncs in order, reports each.
    let (jobs, job_receiver) = std::sync::mpsc::channel::<Box<dyn PendingSync>>();
    let (done_sender, done) = std::sync::mpsc::channel::<std::result::Result<(), StorageError>>();
    let syncer = std::thread::spawn(move || {
        for sync in job_receiver {
            if done_sender.send(sync.complete()).is_err() {
                break;
            }
        }
    });
    let mut in_flight = 0usize;
    let wait_for_one = |in_flight: &mut usize| -> Result<()> {
        done.recv()??;
        *in_flight -= 1;
        Ok(())
    };

    let mut write_batch = |encode_nanos: &mut Vec<u64>| -> Result<()> {
        if steady && next_index > snapshot_index + SNAPSHOT_EVERY_ENTRIES {
            // What a node does after applying that many entries: store a snapshot (a small
            // one: the state machine's size is not what is measured), then compact.
            snapshot_index = next_index - 1;
            let meta = SnapshotMeta {
                last_included: LogId::new(Term(1), LogIndex(snapshot_index)),
                configuration: Configuration::of_voters([NodeId(1)]),
            };
            let mut sink = wal.snapshot_store().create(&meta)?;
            sink.write_all(b"state")?;
            sink.finish()?;
            wal.compact(LogIndex(snapshot_index - SNAPSHOT_KEEP_ENTRIES))?;
        }
        entries.clear();
        entries.extend((0..batch as u64).map(|offset| Entry {
            term: Term(1),
            index: LogIndex(next_index + offset),
            payload: EntryPayload::Command(payload.clone()),
        }));
        let start = Instant::now();
        wal.append(&entries)?;
        // The commit index follows one batch behind, as a leader's does once a majority has
        // the previous batch.
        hard_state.commit_index = LogIndex(next_index - 1);
        wal.save_hard_state(&hard_state)?;
        encode_nanos.push(u64::try_from(start.elapsed().as_nanos())?);
        if pipelined {
            while in_flight >= SYNCS_IN_FLIGHT {
                wait_for_one(&mut in_flight)?;
            }
            let sync = wal.flush()?;
            if !sync.is_durable() {
                jobs.send(sync)?;
                in_flight += 1;
            }
        } else {
            wal.sync()?;
        }
        next_index += batch as u64;
        Ok(())
    };

    // Warm up, then measure. A sample is the whole batch, entry building included (a few
    // reference-count increments); throughput is over the whole measured run.
    let mut warm_up_encodes = Vec::new();
    let warm_up_end = Instant::now() + WARM_UP;
    let warm_up_batches = STEADY_WARM_UP_BYTES / bytes_per_batch(batch) as u64;
    let mut warmed = 0;
    while Instant::now() < warm_up_end || (steady && warmed < warm_up_batches) {
        write_batch(&mut warm_up_encodes)?;
        warmed += 1;
    }
    let fdatasyncs_before = fdatasync_latency.snapshot().count;
    let start = Instant::now();
    let end = start + WAL_RUN;
    let mut samples = Vec::with_capacity(1 << 16);
    loop {
        let batch_start = Instant::now();
        write_batch(&mut encode_nanos)?;
        let finish = Instant::now();
        samples.push(u64::try_from((finish - batch_start).as_nanos())?);
        if finish >= end {
            break;
        }
    }
    // Every batch counted is synced by the end.
    while in_flight > 0 {
        wait_for_one(&mut in_flight)?;
    }
    let elapsed = start.elapsed();
    let fdatasyncs = fdatasync_latency.snapshot().count - fdatasyncs_before;
    drop(wal);
    drop(jobs);
    syncer.join().map_err(|_| "the sync thread panicked")?;

    let syncs = samples.len();
    let encode_mean = encode_nanos.iter().sum::<u64>() as f64 / encode_nanos.len() as f64 / 1e3;
    Ok(WalResult {
        batch,
        steady,
        pipelined,
        syncs,
        entries: syncs * batch,
        elapsed,
        latency: Latency::from_nanos(&mut samples),
        encode_mean,
        disk_bytes_per_sync: bytes_per_batch(batch) as f64,
        fdatasyncs,
    })
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root)?;
    println!("wal_append: working in fresh directories under {}", root.display());
    println!(
        "warm-up {} ms; runs: raw 4 KiB {} s, WAL {} s, raw same bytes {} s; {}-byte entries",
        WARM_UP.as_millis(),
        RAW_RUN.as_secs(),
        WAL_RUN.as_secs(),
        SAME_BYTES_RUN.as_secs(),
        ENTRY_BYTES
    );
    println!();

    let raw_append = raw_append_sync(root, BLOCK_BYTES, RAW_RUN)?;
    let preallocated = preallocate(root)?;
    let raw_overwrite = raw_overwrite_sync(&preallocated, BLOCK_BYTES, RAW_RUN)?;
    let mut sequential_runs = Vec::with_capacity(SEQUENTIAL_REPEATS);
    for _ in 0..SEQUENTIAL_REPEATS {
        sequential_runs.push(sequential_bandwidth(root)?);
    }
    sequential_runs.sort_by(f64::total_cmp);
    let sequential = sequential_runs[sequential_runs.len() / 2];

    // Each WAL case, then raw writes of the same bytes per sync, close together in time.
    let mut results = Vec::new();
    let cases = BATCHES.iter().map(|batch| (*batch, false, false)).chain([
        (256, true, false),
        (256, false, true),
        (256, true, true),
    ]);
    for (batch, steady, pipelined) in cases {
        let wal = wal_append(root, batch, steady, pipelined)?;
        let bytes = wal.disk_bytes_per_sync.round() as usize;
        let append = raw_append_sync(root, bytes, SAME_BYTES_RUN)?;
        let overwrite = raw_overwrite_sync(&preallocated, bytes, SAME_BYTES_RUN)?;
        results.push((wal, bytes, append, overwrite));
    }
    drop(preallocated);

    println!("| raw 4 KiB write + fdatasync | ops | mean µs | p50 µs | p99 µs | max µs | ops/s |");
    println!("|---|---|---|---|---|---|---|");
    for (name, latency) in
        [("append (file grows)", raw_append), ("overwrite (preallocated)", raw_overwrite)]
    {
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            latency.count,
            latency.mean,
            latency.p50,
            latency.p99,
            latency.max,
            latency.ops_per_second()
        );
    }
    println!();
    println!(
        "Sequential write bandwidth: {sequential:.0} MB/s, median of {:.0?} ({} MiB in {} KiB \
         writes, fdatasync every {} MiB)",
        sequential_runs,
        SEQUENTIAL_TOTAL >> 20,
        SEQUENTIAL_WRITE >> 10,
        SEQUENTIAL_SYNC_EVERY >> 20
    );
    println!();

    println!(
        "| entries/sync | syncs | entries/s | payload MB/s | disk MB/s | disk bytes/sync \
         | sync mean µs | p50 µs | p99 µs | max µs | encode mean µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (result, _, _, _) in &results {
        println!(
            "| {}{} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
            result.batch,
            result.label(),
            result.syncs,
            result.entries_per_second(),
            result.payload_mb_per_second(),
            result.disk_mb_per_second(),
            result.disk_bytes_per_sync,
            result.latency.mean,
            result.latency.p50,
            result.latency.p99,
            result.latency.max,
            result.encode_mean
        );
    }
    println!();

    println!("The WAL against raw writes of its bytes per sync (write + fdatasync):");
    println!();
    println!(
        "| entries/sync | bytes/sync | WAL mean / p50 µs | raw append mean / p50 µs \
         | raw overwrite mean / p50 µs | WAL disk MB/s | raw append MB/s | raw overwrite MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (result, bytes, append, overwrite) in &results {
        println!(
            "| {}{} | {bytes} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} | {:.2} | {:.2} |",
            result.batch,
            result.label(),
            result.latency.mean,
            result.latency.p50,
            append.mean,
            append.p50,
            overwrite.mean,
            overwrite.p50,
            result.disk_mb_per_second(),
            append.mb_per_second(*bytes),
            overwrite.mb_per_second(*bytes)
        );
    }
    println!();

    for (largest, largest_bytes, largest_append, largest_overwrite) in
        results.iter().filter(|(result, ..)| result.batch == 256)
    {
        let bandwidth_ratio = largest.payload_mb_per_second() / sequential;
        println!(
            "Batch {}{}: WAL payload {:.2} MB/s / sequential {:.0} MB/s = {:.1}% \
             (disk bytes: {:.1}%); target >= {:.0}%: {}",
            largest.batch,
            if largest.label().is_empty() { " (fresh log)" } else { largest.label() },
            largest.payload_mb_per_second(),
            sequential,
            bandwidth_ratio * 100.0,
            largest.disk_mb_per_second() / sequential * 100.0,
            BANDWIDTH_TARGET * 100.0,
            verdict(bandwidth_ratio >= BANDWIDTH_TARGET)
        );
        println!(
            "  {} batches, {} fdatasyncs ({:.2} per batch)",
            largest.syncs,
            largest.fdatasyncs,
            largest.fdatasyncs as f64 / largest.syncs as f64
        );
        println!(
            "  raw writes of the same {largest_bytes} bytes per sync reach {:.1}% (append) and \
             {:.1}% (overwrite) of the sequential bandwidth",
            largest_append.mb_per_second(*largest_bytes) / sequential * 100.0,
            largest_overwrite.mb_per_second(*largest_bytes) / sequential * 100.0
        );
    }
    let (single, single_bytes, single_append, single_overwrite) =
        results.iter().min_by_key(|(result, ..)| result.batch).ok_or("no WAL results")?;
    let latency_ratio = single.latency.mean / raw_append.mean;
    println!(
        "Batch {}: WAL sync mean {:.0} µs / raw 4 KiB append+fdatasync mean {:.0} µs = {:.2}x \
         (p50 {:.2}x, p99 {:.2}x); target <= {:.1}x: {}",
        single.batch,
        single.latency.mean,
        raw_append.mean,
        latency_ratio,
        single.latency.p50 / raw_append.p50,
        single.latency.p99 / raw_append.p99,
        LATENCY_TARGET,
        verdict(latency_ratio <= LATENCY_TARGET)
    );
    println!(
        "  against 4 KiB overwrite+fdatasync (preallocated): {:.2}x mean, {:.2}x p50; \
         against raw append of the same {single_bytes} bytes: {:.2}x mean, {:.2}x p50; \
         against overwrite of them: {:.2}x mean, {:.2}x p50",
        single.latency.mean / raw_overwrite.mean,
        single.latency.p50 / raw_overwrite.p50,
        single.latency.mean / single_append.mean,
        single.latency.p50 / single_append.p50,
        single.latency.mean / single_overwrite.mean,
        single.latency.p50 / single_overwrite.p50
    );
    Ok(())
}
