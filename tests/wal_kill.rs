//! A real-process crash test of [`WalStorage`]: a child process appends entries through the
//! real write-ahead log and acknowledges them, and is killed with `SIGKILL` at random moments,
//! many times over. After every kill the parent checks that every acknowledged entry is still
//! there, intact, and that whatever else survived is a consistent log.
//!
//! The child is this test binary itself, re-run with `--ignored --exact wal_kill_child`: the
//! ignored test [`wal_kill_child`] does nothing unless `WAL_KILL_CHILD_DIR` is set. Generation
//! `g` (the `g`-th child) opens the log, saves a hard state of term `g`, and then appends
//! batches of 1..=64 entries of term `g` from the recovered last index + 1, each payload a
//! function of its (index, term). Only after `sync` returns does it print `WALKILL ACK <last
//! index> <term> <commit>`; the parent counts every such line it reads, including those still
//! in the pipe when the child dies.
//!
//! The parent verifies on a copy of the data directory (the last segment copied, the others
//! hard-linked: recovery changes only the last one), so the next child meets the log
//! exactly as the kill left it (torn tail included) and recovers it itself; the child reports
//! what it recovered, and that must match what the parent's recovery of the copy found.
//!
//! What this can catch: an acknowledgement made before the data reached the kernel (the log
//! buffers records in memory until `sync`), records lost or damaged by recovery, a torn tail
//! or an interrupted segment creation that recovery cannot cope with, a hard state that goes
//! backwards. What it cannot catch: a missing or misplaced `fdatasync`. `SIGKILL` ends the
//! process, not the machine: everything written to the page cache survives, so only a power
//! loss (or a simulated disk, see `src/sim`) can show that a "synced" write was not durable.
//!
//! Rounds: `WAL_KILL_ROUNDS` (default 25); seed: `WAL_KILL_SEED`. For a long run:
//! `WAL_KILL_ROUNDS=200 cargo test --release --test wal_kill -- --nocapture`.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_consensus::storage::{Storage, WalIdentity, WalOptions, WalStorage};
use raft_consensus::{Entry, EntryPayload, HardState, LogIndex, NodeId, Term};

const CHILD_DIR_VAR: &str = "WAL_KILL_CHILD_DIR";
const CHILD_TERM_VAR: &str = "WAL_KILL_CHILD_TERM";
const CHILD_SEED_VAR: &str = "WAL_KILL_CHILD_SEED";
const ROUNDS_VAR: &str = "WAL_KILL_ROUNDS";
const SEED_VAR: &str = "WAL_KILL_SEED";
const DEFAULT_ROUNDS: u64 = 25;
const DEFAULT_SEED: u64 = 0x5741_4c4b_494c_4c21;

/// Marks the child's protocol lines on stdout (libtest prints its own lines there too).
const MARKER: &str = "WALKILL ";
const IDENTITY: WalIdentity = WalIdentity { node_id: NodeId(1), cluster_id: 42 };
/// Bytes in a segment header (`docs/wal-format.md`): a last segment shorter than this is one
/// whose creation a kill interrupted.
const SEGMENT_HEADER_LEN: u64 = 44;
/// How long the parent waits for a child's first acknowledgement.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Safety bounds: a child that nobody kills stops by itself.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);
const CHILD_MAX_INDEX: u64 = 50_000_000;
/// A log that grows past this is set aside and the next child starts a fresh one, so that
/// verifying (which rereads the whole log every round) stays linear in the number of rounds.
const LOG_RESET_BYTES: u64 = 16 * 1024 * 1024;

fn options() -> WalOptions {
    WalOptions { segment_max_bytes: 64 * 1024, max_entry_bytes: 4096 }
}

/// SplitMix64: a small deterministic generator, enough for timings and sizes.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The payload of the entry at `index` written in `term`: 16..=512 bytes, starting with the
/// index and term, the rest pseudo-random from both.
fn payload(index: u64, term: u64) -> Vec<u8> {
    let mut rng =
        Rng(index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ term.wrapping_mul(0xd1b5_4a32_d192_ed03));
    let len = 16 + rng.below(497) as usize;
    let mut bytes = Vec::with_capacity(len + 8);
    bytes.extend_from_slice(&index.to_le_bytes());
    bytes.extend_from_slice(&term.to_le_bytes());
    while bytes.len() < len {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(payload(index, term))),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

// ---------------------------------------------------------------------------------------------
// The child.

/// One line on the child's stdout, written and flushed whole.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARKER}{line}").expect("child: writing stdout");
    out.flush().expect("child: flushing stdout");
}

/// The child process of [`wal_survives_sigkill`]; a no-op unless `WAL_KILL_CHILD_DIR` is set.
#[test]
#[ignore = "the child process of wal_survives_sigkill; does nothing when run by itself"]
fn wal_kill_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else {
        return;
    };
    let term = env_u64(CHILD_TERM_VAR).expect("child: no term given");
    let seed = env_u64(CHILD_SEED_VAR).unwrap_or(1);
    run_child(Path::new(&dir), term, seed);
}

fn run_child(dir: &Path, term: u64, seed: u64) {
    let mut storage = WalStorage::open(dir, IDENTITY, options()).expect("child: opening the log");
    let state = storage.load().expect("child: loading the log");
    let last_index = state.entries.last().map_or(0, |entry| entry.index.0);
    let last_term = state.entries.last().map_or(0, |entry| entry.term.0);
    let hard_state = state.hard_state;
    emit(&format!(
        "RECOVERED {last_index} {last_term} {} {}",
        hard_state.term.0, hard_state.commit_index.0
    ));
    assert!(
        term >= last_term && term >= hard_state.term.0,
        "child: term {term} is behind the log (last term {last_term}, hard state {hard_state:?})"
    );

    let mut commit = hard_state.commit_index.0;
    let hard_state_at =
        |commit| HardState { term: Term(term), voted_for: None, commit_index: LogIndex(commit) };
    storage.save_hard_state(&hard_state_at(commit)).expect("child: saving the hard state");
    storage.sync().expect("child: syncing the hard state");
    emit(&format!("READY {term}"));

    let mut rng = Rng(seed);
    let mut next = last_index + 1;
    let deadline = Instant::now() + CHILD_LIFETIME;
    while Instant::now() < deadline && next < CHILD_MAX_INDEX {
        let count = 1 + rng.below(64);
        let entries: Vec<Entry> = (next..next + count).map(|index| entry(index, term)).collect();
        storage.append(&entries).expect("child: appending");
        if rng.below(4) == 0 {
            // Everything before this batch is acknowledged, so it may be marked committed.
            commit = next - 1;
            storage.save_hard_state(&hard_state_at(commit)).expect("child: saving the hard state");
        }
        storage.sync().expect("child: syncing");
        next += count;
        emit(&format!("ACK {} {term} {commit}", next - 1));
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// What a child said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// What it recovered: last index and term, hard-state term and commit.
    Recovered { last_index: u64, last_term: u64, hs_term: u64, hs_commit: u64 },
    /// Its hard state of `term` is synced.
    Ready { term: u64 },
    /// Everything up to `last_index` is synced, and a hard state with `commit`.
    Ack { last_index: u64, term: u64, commit: u64 },
}

fn parse(line: &str) -> Option<Result<Event, String>> {
    let at = line.find(MARKER)?;
    let text = &line[at + MARKER.len()..];
    let mut words = text.split_whitespace();
    let kind = words.next().unwrap_or("");
    let numbers: Result<Vec<u64>, _> = words.map(str::parse::<u64>).collect();
    let event = match (kind, numbers.as_deref()) {
        ("RECOVERED", Ok(&[last_index, last_term, hs_term, hs_commit])) => {
            Event::Recovered { last_index, last_term, hs_term, hs_commit }
        }
        ("READY", Ok(&[term])) => Event::Ready { term },
        ("ACK", Ok(&[last_index, term, commit])) => Event::Ack { last_index, term, commit },
        _ => return Some(Err(format!("unreadable line from the child: {line:?}"))),
    };
    Some(Ok(event))
}

/// Kills the child if the parent panics, so no child outlives a failed test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How one child lived and died.
struct Round {
    events: Vec<Event>,
    /// Killed at a random moment after spawning, without waiting for an acknowledgement.
    early: bool,
    elapsed: Duration,
}

fn read_stderr(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs generation `term` of the child and kills it.
fn run_round(exe: &Path, wal_dir: &Path, stderr_path: &Path, term: u64, rng: &mut Rng) -> Round {
    let started = Instant::now();
    let stderr = File::create(stderr_path).expect("creating the child's stderr file");
    let child = Command::new(exe)
        .args(["--ignored", "--exact", "wal_kill_child", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR_VAR, wal_dir)
        .env(CHILD_TERM_VAR, term.to_string())
        .env(CHILD_SEED_VAR, rng.next_u64().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawning the child");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("the child's stdout");
    let (sender, receiver) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(event) = parse(&line) {
                if sender.send(event).is_err() {
                    break;
                }
            }
        }
    });

    let mut events = Vec::new();
    let early = rng.below(6) == 0;
    if early {
        thread::sleep(Duration::from_micros(rng.below(20_000)));
    } else {
        let deadline = Instant::now() + FIRST_ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(Ok(event)) => {
                    events.push(event);
                    if matches!(event, Event::Ack { .. }) {
                        break;
                    }
                }
                Ok(Err(problem)) => panic!("generation {term}: {problem}"),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "generation {term}: no acknowledgement within {FIRST_ACK_TIMEOUT:?}; \
                     child stderr:\n{}",
                    read_stderr(stderr_path)
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.0.wait().expect("waiting for the child");
                    panic!(
                        "generation {term}: the child ended by itself ({status}) before \
                         acknowledging anything; stderr:\n{}",
                        read_stderr(stderr_path)
                    );
                }
            }
        }
        thread::sleep(Duration::from_micros(rng.below(50_000)));
    }

    child.0.kill().expect("killing the child");
    let status: ExitStatus = child.0.wait().expect("waiting for the child");
    if status.signal() != Some(9) {
        panic!(
            "generation {term}: the child ended by itself ({status}) instead of by SIGKILL; \
             stderr:\n{}",
            read_stderr(stderr_path)
        );
    }
    reader.join().expect("the stdout reader thread");
    for event in receiver.try_iter() {
        match event {
            Ok(event) => events.push(event),
            Err(problem) => panic!("generation {term}: {problem}"),
        }
    }
    Round { events, early, elapsed: started.elapsed() }
}

/// What the parent knows of the log.
#[derive(Default)]
struct Model {
    /// The term of each entry of the log as last verified (index `i` at position `i - 1`).
    terms: Vec<u64>,
    hard_state: HardState,
    /// The highest index any child acknowledged.
    acked: u64,
}

#[derive(Default)]
struct Stats {
    kills: u64,
    early_kills: u64,
    /// Kills before the child reported its recovery / its first acknowledgement.
    before_recovered: u64,
    before_ack: u64,
    /// Acknowledged entries compared with what the acknowledging generation wrote, summed
    /// over rounds (every round re-checks the whole acknowledged prefix).
    acked_checks: u64,
    /// Rounds whose log held entries past the last acknowledgement (written, not yet synced
    /// or not yet acknowledged when the kill came).
    unacked_tails: u64,
    unacked_entries: u64,
    torn_tails: u64,
    torn_bytes: u64,
    torn_creations: u64,
    child_time: Duration,
    verify_time: Duration,
    /// Logs filled to `LOG_RESET_BYTES` and replaced by a fresh one, and what they held.
    logs: u64,
    acked_entries: u64,
    entries: u64,
    segments: u64,
    bytes: u64,
}

impl Stats {
    /// Counts a finished log (the one in `wal_dir`, last verified as `model`).
    fn add_log(&mut self, wal_dir: &Path, model: &Model) {
        let segments = segment_sizes(wal_dir);
        self.logs += 1;
        self.acked_entries += model.acked;
        self.entries += model.terms.len() as u64;
        self.segments += segments.len() as u64;
        self.bytes += segments.values().sum::<u64>();
    }
}

fn segment_sizes(dir: &Path) -> BTreeMap<String, u64> {
    let mut sizes = BTreeMap::new();
    let Ok(listing) = fs::read_dir(dir) else {
        return sizes;
    };
    for item in listing {
        let item = item.expect("listing the log directory");
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with("wal-") && name.ends_with(".log") {
            sizes.insert(name, item.metadata().expect("segment metadata").len());
        }
    }
    sizes
}

/// Copies the log to `verify_dir`, recovers the copy, and checks it against `model` and what
/// generation `term` acknowledged. Updates `model` and `stats`.
fn verify(
    wal_dir: &Path,
    verify_dir: &Path,
    term: u64,
    round: &Round,
    model: &mut Model,
    stats: &mut Stats,
) -> Result<(), String> {
    if verify_dir.exists() {
        fs::remove_dir_all(verify_dir).map_err(|error| format!("clearing the copy: {error}"))?;
    }
    fs::create_dir_all(verify_dir).map_err(|error| format!("creating the copy: {error}"))?;
    let before = segment_sizes(wal_dir);
    let last = before.keys().next_back().cloned();
    for name in before.keys() {
        let (from, to) = (wal_dir.join(name), verify_dir.join(name));
        // Recovery changes only the last segment (cuts its torn tail, or rewrites it when even
        // its header is torn), so the others are shared rather than copied.
        let result = if Some(name) == last.as_ref() {
            fs::copy(&from, &to).map(drop)
        } else {
            fs::hard_link(&from, &to)
        };
        result.map_err(|error| format!("copying {name}: {error}"))?;
    }

    // The last segment as the kill left it, to tell what recovery changed (segments are
    // preallocated, so a cut tail is zeroed rather than truncated: compare contents).
    let last_before = match &last {
        Some(name) => {
            fs::read(verify_dir.join(name)).map_err(|error| format!("reading {name}: {error}"))?
        }
        None => Vec::new(),
    };
    let state = {
        let mut storage = WalStorage::open(verify_dir, IDENTITY, options())
            .map_err(|error| format!("recovery refused the log: {error}"))?;
        storage.load().map_err(|error| format!("loading the recovered log: {error}"))?
    };
    if let Some(name) = &last {
        let written_end = last_before.iter().rposition(|byte| *byte != 0).map_or(0, |at| at + 1);
        if (written_end as u64) < SEGMENT_HEADER_LEN {
            stats.torn_creations += 1;
        } else {
            let after = fs::read(verify_dir.join(name))
                .map_err(|error| format!("rereading {name}: {error}"))?;
            let changed = last_before.len().abs_diff(after.len())
                + last_before.iter().zip(&after).filter(|(a, b)| a != b).count();
            if changed > 0 {
                stats.torn_tails += 1;
                stats.torn_bytes += changed as u64;
            }
        }
    }

    let prev_len = model.terms.len() as u64;
    let mut hs_synced = false;
    let mut acked = 0;
    let mut acked_commit = 0;
    for event in &round.events {
        match *event {
            Event::Recovered { last_index, last_term, hs_term, hs_commit } => {
                let expected_term = model.terms.last().copied().unwrap_or(0);
                if (last_index, last_term) != (prev_len, expected_term)
                    || (hs_term, hs_commit)
                        != (model.hard_state.term.0, model.hard_state.commit_index.0)
                {
                    return Err(format!(
                        "the child recovered last entry {last_index}/term {last_term}, hard \
                         state term {hs_term} commit {hs_commit}; the parent's recovery of the \
                         same bytes found {prev_len}/term {expected_term}, {:?}",
                        model.hard_state
                    ));
                }
            }
            Event::Ready { term: ready_term } => {
                if ready_term != term {
                    return Err(format!("READY for term {ready_term} from generation {term}"));
                }
                hs_synced = true;
            }
            Event::Ack { last_index, term: ack_term, commit } => {
                if ack_term != term || last_index <= acked.max(prev_len) || commit > last_index {
                    return Err(format!(
                        "out-of-order acknowledgement {event:?} (generation {term}, previous \
                         log length {prev_len}, previous ack {acked})"
                    ));
                }
                hs_synced = true;
                acked = last_index;
                acked_commit = commit;
            }
        }
    }
    if !round.events.iter().any(|event| matches!(event, Event::Recovered { .. })) {
        stats.before_recovered += 1;
    }
    if acked == 0 {
        stats.before_ack += 1;
    }

    // Every entry: contiguous from 1 and intact by its own (index, term).
    let entries = &state.entries;
    for (position, entry) in entries.iter().enumerate() {
        let index = position as u64 + 1;
        if entry.index.0 != index {
            return Err(format!("entry at position {position} has index {}", entry.index.0));
        }
        let intact = match &entry.payload {
            EntryPayload::Command(bytes) => bytes[..] == payload(index, entry.term.0)[..],
            EntryPayload::Blank | EntryPayload::Configuration(_) => false,
        };
        if !intact {
            return Err(format!(
                "entry {index} (term {}) has a payload that is not the one written for it \
                 ({} bytes)",
                entry.term.0,
                entry.payload_len()
            ));
        }
    }
    // Nothing acknowledged is lost.
    let len = entries.len() as u64;
    let must_have = model.acked.max(acked);
    if len < must_have {
        return Err(format!(
            "the log ends at {len} but entries up to {must_have} were acknowledged (this \
             generation acknowledged up to {acked}, earlier ones up to {})",
            model.acked
        ));
    }
    // What the previous round found is unchanged: nothing rewrites it, and a process kill
    // loses nothing that reached the kernel. This covers every earlier acknowledgement.
    if len < prev_len {
        return Err(format!(
            "the log shrank from {prev_len} to {len} entries: entries that earlier recoveries \
             found (the last {} acknowledged) are gone",
            model.acked
        ));
    }
    for (position, &expected) in model.terms.iter().enumerate() {
        let found = entries[position].term.0;
        if found != expected {
            return Err(format!(
                "entry {} changed from term {expected} to term {found} (acknowledged: {})",
                position + 1,
                (position as u64) < model.acked
            ));
        }
    }
    // Everything after is this generation's.
    for entry in &entries[prev_len as usize..] {
        if entry.term.0 != term {
            return Err(format!(
                "entry {} has term {} but only generation {term} wrote past index {prev_len}",
                entry.index.0, entry.term.0
            ));
        }
    }

    // The hard state.
    let hs = state.hard_state;
    let term_ok = if hs_synced {
        hs.term.0 == term
    } else {
        hs.term.0 == term || hs.term == model.hard_state.term
    };
    if !term_ok
        || hs.voted_for.is_some()
        || hs.commit_index < model.hard_state.commit_index
        || hs.commit_index.0 < acked_commit
        || hs.commit_index.0 > len
    {
        return Err(format!(
            "recovered hard state {hs:?} does not fit: generation {term} (hard state synced: \
             {hs_synced}, last acknowledged commit {acked_commit}), previous {:?}, log length \
             {len}",
            model.hard_state
        ));
    }

    model.terms = entries.iter().map(|entry| entry.term.0).collect();
    model.hard_state = hs;
    model.acked = must_have;
    stats.acked_checks += must_have;
    if len > must_have {
        stats.unacked_tails += 1;
        stats.unacked_entries += len - must_have;
    }
    Ok(())
}

#[test]
fn wal_survives_sigkill() {
    let rounds = env_u64(ROUNDS_VAR).unwrap_or(DEFAULT_ROUNDS);
    let seed = env_u64(SEED_VAR).unwrap_or(DEFAULT_SEED);
    let exe = std::env::current_exe().expect("the test binary's path");
    let root = tempfile::tempdir().expect("a temporary directory");
    let wal_dir = root.path().join("wal");
    let verify_dir = root.path().join("verify");
    let stderr_path = root.path().join("child-stderr.txt");

    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut model = Model::default();
    let mut stats = Stats::default();
    for term in 1..=rounds {
        let round = run_round(&exe, &wal_dir, &stderr_path, term, &mut rng);
        stats.kills += 1;
        stats.early_kills += u64::from(round.early);
        stats.child_time += round.elapsed;
        let verify_started = Instant::now();
        if let Err(problem) = verify(&wal_dir, &verify_dir, term, &round, &mut model, &mut stats) {
            let kept: PathBuf = root.keep();
            panic!(
                "after kill {term} of {rounds} (seed {seed}): {problem}\nthe child said: {:?}\n\
                 the data is kept in {}",
                round.events.iter().rev().take(5).collect::<Vec<_>>(),
                kept.display()
            );
        }
        stats.verify_time += verify_started.elapsed();
        if segment_sizes(&wal_dir).values().sum::<u64>() > LOG_RESET_BYTES && term < rounds {
            stats.add_log(&wal_dir, &model);
            fs::remove_dir_all(&wal_dir).expect("removing a full log");
            model = Model::default();
        }
    }
    stats.add_log(&wal_dir, &model);

    println!(
        "wal_kill: {} kills ({} early, {} before recovery finished, {} before any ack), seed \
         {seed}; {} entries acknowledged and verified ({} acked-entry checks over all rounds); \
         {} entries written in {} logs, {} segments, {} KiB; unacknowledged tails survived {} times \
         ({} entries); torn tails cut {} times ({} bytes); interrupted segment creations {}; \
         {:.1} s (children {:.1} s, verification {:.1} s)",
        stats.kills,
        stats.early_kills,
        stats.before_recovered,
        stats.before_ack,
        stats.acked_entries,
        stats.acked_checks,
        stats.entries,
        stats.logs,
        stats.segments,
        stats.bytes / 1024,
        stats.unacked_tails,
        stats.unacked_entries,
        stats.torn_tails,
        stats.torn_bytes,
        stats.torn_creations,
        started.elapsed().as_secs_f64(),
        stats.child_time.as_secs_f64(),
        stats.verify_time.as_secs_f64(),
    );
    assert!(stats.acked_entries > 0, "no child acknowledged anything in {rounds} rounds");
}
