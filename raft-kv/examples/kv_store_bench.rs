//! Measures raft-kv's store (`KvStateMachine`) on its own, in one process, without Raft:
//!
//! - `apply [COUNT] [VALUE_BYTES]`: apply throughput, `COUNT` encoded puts (default 1,000,000
//!   of 256-byte values, 16-byte keys in random order, sessions of 128 clients) through
//!   `StateMachine::apply_at` into an empty store, then `COUNT` overwrites of the same keys;
//!   five rounds, rates per second of the thread's CPU time.
//! - `snapshot [KEYS] [VALUE_BYTES] [DIR]`: builds a store of `KEYS` keys (default 4,000,000 of
//!   256-byte values, about 1 GiB of snapshot), then times `snapshot_view` (the node's pause),
//!   streams a view into `io::sink()` and into a file in `DIR` (default the temporary
//!   directory) measuring time and peak resident memory above the store's, streams a view
//!   while the store takes overwrites, and restores the file with `restore_from`.
//!
//! Run in release mode (BENCHMARKS.md, "raft-kv snapshot view (issue #16)"):
//! `cargo run --release -p raft-kv --example kv_store_bench -- apply` and `-- snapshot`.

use std::io::{self, BufReader, Write};
use std::time::{Duration, Instant};

use raft_consensus::{LogIndex, StateMachine};
use raft_kv::{Command, KvStateMachine, Request};

const CLIENTS: u64 = 128;

/// A 16-byte key for `i`, in an order unrelated to `i` (distinct for distinct `i`).
fn key(i: u64) -> Vec<u8> {
    // An odd multiplier is a bijection on u64.
    format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes()
}

fn value(i: u64, bytes: usize) -> Vec<u8> {
    let mut value = vec![b'v'; bytes];
    let stamp = i.to_le_bytes();
    let n = stamp.len().min(bytes);
    value[..n].copy_from_slice(&stamp[..n]);
    value
}

fn put(i: u64, sequence: u64, value_bytes: usize) -> Request {
    Request {
        session: Some((i % CLIENTS, sequence)),
        command: Command::Put { key: key(i), value: value(i, value_bytes) },
    }
}

/// `(resident, peak resident)` of this process in bytes, from `/proc/self/status`.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident size to the current one (Linux: `5` into `clear_refs`).
fn reset_peak() {
    if let Err(error) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("cannot reset the peak resident size: {error}");
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `work`, returning its result, its time and the peak resident memory above the
/// resident size when it started.
fn measured<T>(work: impl FnOnce() -> T) -> (T, Duration, u64) {
    reset_peak();
    let (before, _) = memory();
    let start = Instant::now();
    let result = work();
    let elapsed = start.elapsed();
    let (_, peak) = memory();
    (result, elapsed, peak.saturating_sub(before))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn apply(count: u64, value_bytes: usize) {
    println!("apply: {count} puts of {value_bytes}-byte values, 16-byte keys, {CLIENTS} clients");
    let inserts: Vec<Vec<u8>> =
        (0..count).map(|i| put(i, i / CLIENTS + 1, value_bytes).encode()).collect();
    let overwrites: Vec<Vec<u8>> = (0..count)
        .map(|i| put(i, count / CLIENTS + 1 + i / CLIENTS + 1, value_bytes).encode())
        .collect();
    // Rates by this thread's CPU time, which other processes on the machine disturb less
    // than they disturb the elapsed time.
    let (mut insert_rates, mut overwrite_rates) = (Vec::new(), Vec::new());
    for round in 1..=5 {
        let mut store = KvStateMachine::new();
        let start = thread_cpu_time();
        for (index, command) in (1..).zip(&inserts) {
            store.apply_at(LogIndex(index), command).expect("a put applies");
        }
        let insert = count as f64 / (thread_cpu_time() - start).as_secs_f64();
        let start = thread_cpu_time();
        for (index, command) in (count + 1..).zip(&overwrites) {
            store.apply_at(LogIndex(index), command).expect("a put applies");
        }
        let overwrite = count as f64 / (thread_cpu_time() - start).as_secs_f64();
        assert_eq!(store.len() as u64, count);
        println!("  round {round}: new keys {insert:.0} puts/s, overwrites {overwrite:.0} puts/s");
        insert_rates.push(insert);
        overwrite_rates.push(overwrite);
        // Dropping a large store takes a while: not part of the rounds' times.
        drop(store);
    }
    let best = |rates: &[f64]| rates.iter().copied().fold(0.0, f64::max);
    println!(
        "  per CPU second, median of 5 (best): new keys {:.0} ({:.0}) puts/s, overwrites {:.0} \
         ({:.0}) puts/s",
        median(insert_rates.clone()),
        best(&insert_rates),
        median(overwrite_rates.clone()),
        best(&overwrite_rates)
    );
}

/// The CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `time` is a valid timespec for the call to fill.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

fn snapshot(keys: u64, value_bytes: usize, dir: &std::path::Path) {
    println!("snapshot: {keys} keys of 16 bytes with {value_bytes}-byte values");
    let (_, base_peak) = memory();
    let start = Instant::now();
    let mut store = KvStateMachine::new();
    for i in 0..keys {
        store.execute(LogIndex(i + 1), put(i, i / CLIENTS + 1, value_bytes));
    }
    let (resident, _) = memory();
    println!(
        "  built in {:.1} s; resident {:.0} MiB (was {:.0} MiB)",
        start.elapsed().as_secs_f64(),
        mib(resident),
        mib(base_peak)
    );

    let mut pauses = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let view = store.snapshot_view().expect("a store snapshots");
        pauses.push(start.elapsed().as_secs_f64() * 1e6);
        drop(view);
    }
    println!(
        "  snapshot_view: median {:.1} µs, max {:.1} µs (5 views)",
        median(pauses.clone()),
        pauses.iter().copied().fold(0.0, f64::max)
    );

    // Each measurement below takes the view too, so that it counts whatever the view holds.
    let (written, elapsed, extra) = measured(|| {
        let view = store.snapshot_view().expect("a store snapshots");
        let mut sink = CountingWriter { inner: io::sink(), bytes: 0 };
        view.write_to(&mut sink).expect("writes into a sink");
        sink.bytes
    });
    println!(
        "  snapshot_view + write_to(io::sink()): {:.0} MiB in {:.2} s ({:.0} MiB/s), peak \
         resident +{:.1} MiB",
        mib(written),
        elapsed.as_secs_f64(),
        mib(written) / elapsed.as_secs_f64(),
        mib(extra)
    );

    let path = dir.join("kv_store_bench.snapshot");
    let ((), elapsed, extra) = measured(|| {
        let view = store.snapshot_view().expect("a store snapshots");
        let mut file = std::fs::File::create(&path).expect("creates the snapshot file");
        view.write_to(&mut file).expect("writes the snapshot file");
        file.flush().expect("flushes");
    });
    println!(
        "  snapshot_view + write_to(file): {:.2} s (not synced), peak resident +{:.1} MiB",
        elapsed.as_secs_f64(),
        mib(extra)
    );

    // A view streamed on another thread while the store takes overwrites of random keys, as
    // a node goes on applying while its snapshot is written: the memory the view then keeps
    // is what the overwrites copied.
    let view = store.snapshot_view().expect("a store snapshots");
    let overwrites = keys.min(1_000_000);
    let (applied, elapsed, extra) = measured(|| {
        let writer = std::thread::spawn(move || {
            let mut sink = CountingWriter { inner: io::sink(), bytes: 0 };
            view.write_to(&mut sink).expect("writes into a sink");
        });
        let mut applied = 0;
        let mut index = keys + 1;
        while !writer.is_finished() && applied < overwrites {
            let i = applied.wrapping_mul(0x2545_f491_4f6c_dd1d) % keys;
            store.execute(LogIndex(index), put(i, u64::MAX / 2 + index, value_bytes));
            index += 1;
            applied += 1;
        }
        writer.join().expect("the writer thread");
        applied
    });
    println!(
        "  write_to(io::sink()) on another thread during {applied} overwrites: {:.2} s, peak \
         resident +{:.0} MiB",
        elapsed.as_secs_f64(),
        mib(extra)
    );
    let (restored, elapsed, extra) = measured(|| {
        let file = std::fs::File::open(&path).expect("opens the snapshot file");
        let mut restored = KvStateMachine::new();
        restored.restore_from(&mut BufReader::new(file)).expect("restores");
        restored
    });
    assert_eq!(restored.len() as u64, keys);
    let (resident, _) = memory();
    println!(
        "  restore_from(file): {:.2} s, peak resident +{:.0} MiB (the restored store itself \
         is most of it; resident now {:.0} MiB)",
        elapsed.as_secs_f64(),
        mib(extra),
        mib(resident)
    );
    drop(restored);
    let _ = std::fs::remove_file(&path);

    std::mem::forget(store);
}

/// Counts the bytes written through it.
struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |at: usize, default: u64| {
        args.get(at).map_or(default, |arg| arg.parse().expect("a number argument"))
    };
    match args.first().map(String::as_str) {
        Some("apply") => apply(number(1, 1_000_000), number(2, 256) as usize),
        Some("snapshot") => {
            let dir = args.get(3).map_or_else(std::env::temp_dir, std::path::PathBuf::from);
            snapshot(number(1, 4_000_000), number(2, 256) as usize, &dir);
        }
        _ => {
            eprintln!("usage: kv_store_bench apply [COUNT] [VALUE_BYTES]");
            eprintln!("       kv_store_bench snapshot [KEYS] [VALUE_BYTES] [DIR]");
            std::process::exit(2);
        }
    }
}
