//! `raft-sim`: runs the deterministic simulator over many seeds on every core (`soak`), or
//! replays one seed with every event logged (`replay`).
//!
//! ```bash
//! cargo run --profile sim --features sim --bin raft-sim -- soak --seeds 10000
//! cargo run --profile sim --features sim --bin raft-sim -- soak --seeds 10000 --membership always
//! RUST_LOG=debug cargo run --profile sim --features sim --bin raft-sim -- replay --seed 42
//! ```
//!
//! About two seeds in five change the cluster's membership while the faults run (`--membership
//! per-seed`, the default; `always` or `never` to choose): see `raft_consensus::sim`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, Subcommand};
use raft_consensus::sim::{
    self, FaultConfig, FaultCounts, MembershipCounts, MembershipMode, OperationCounts, PlantedBug,
    SimConfig, SimReport, SnapshotCounts,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "raft-sim",
    about = "Deterministic simulation of raft_consensus clusters under faults"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run many seeds on all cores and summarise what they found.
    Soak {
        /// How many seeds to run.
        #[arg(long, default_value_t = 10_000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        start_seed: u64,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        run: RunOptions,
    },
    /// Run one seed with every simulated event logged (set RUST_LOG=debug).
    Replay {
        /// The seed to replay.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        run: RunOptions,
    },
}

#[derive(clap::Args, Clone)]
struct RunOptions {
    /// Plant a protocol bug: commit-previous-term, forget-vote, ack-before-sync,
    /// snapshot-skips-entry, install-keeps-conflicting-log, change-without-joint,
    /// learners-count-for-commit (these two change membership on every seed) or
    /// read-without-round.
    #[arg(long)]
    planted_bug: Option<String>,
    /// Cluster size at the start (default: 3 or 5, chosen by the seed; 3 to 5 on seeds
    /// that change membership, which grow and shrink between 3 and 7).
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// Virtual milliseconds of client traffic per seed.
    #[arg(long, default_value_t = SimConfig::default().workload_ms)]
    workload_ms: u64,
    /// Fault rates: mixed (every kind of fault), crash-storm (frequent crashes and failed
    /// syncs) or light (message faults, rare crashes and partitions).
    #[arg(long, default_value = "mixed")]
    faults: String,
    /// Run the nodes without pre-vote (the classic election).
    #[arg(long)]
    no_pre_vote: bool,
    /// Run the nodes without snapshots or log compaction.
    #[arg(long)]
    no_snapshots: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = SimConfig::default().clients)]
    clients: usize,
    /// A long outage: a follower goes down early for this many virtual milliseconds while the
    /// others write and compact, and catches up by snapshot (0: none). With
    /// `--faults light --workload-ms 20000 --clients 8 --outage-ms 15000` this is
    /// `SimConfig::snapshot_catch_up`.
    #[arg(long, default_value_t = 0)]
    outage_ms: u64,
    /// Which seeds change membership while the faults run: per-seed (about two in five:
    /// nodes start empty and join as learners, then voters; voters and learners are removed,
    /// the leader too; one voter or a majority of them are replaced through one joint change;
    /// leadership is transferred; clusters of 3 to 7 nodes, removed nodes keep running with
    /// pre-vote and are shut down without it), always, or never.
    #[arg(long, default_value = "per-seed")]
    membership: String,
}

impl RunOptions {
    fn config(&self, trace: bool) -> anyhow::Result<SimConfig> {
        let planted_bug = match &self.planted_bug {
            None => None,
            Some(name) => match PlantedBug::from_name(name) {
                Some(bug) => Some(bug),
                None => {
                    let known: Vec<&str> = PlantedBug::ALL.iter().map(|bug| bug.name()).collect();
                    bail!("unknown planted bug {name:?}; known: {}", known.join(", "))
                }
            },
        };
        let Some(faults) = FaultConfig::preset(&self.faults) else {
            bail!("unknown fault preset {:?}; known: mixed, crash-storm, light", self.faults)
        };
        let Some(membership) = MembershipMode::from_name(&self.membership) else {
            bail!("unknown membership mode {:?}; known: per-seed, always, never", self.membership)
        };
        Ok(SimConfig {
            faults,
            pre_vote: !self.no_pre_vote,
            snapshots: !self.no_snapshots,
            node_count: self.nodes,
            workload_ms: self.workload_ms,
            clients: self.clients,
            outage_ms: self.outage_ms,
            membership,
            planted_bug,
            trace,
            ..SimConfig::default()
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Soak { seeds, start_seed, threads, run } => soak(seeds, start_seed, threads, &run),
        Command::Replay { seed, run } => replay(seed, &run),
    }
}

fn replay(seed: u64, options: &RunOptions) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .without_time()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let report = sim::run(seed, &options.config(true)?);
    print_report(&report);
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn print_report(report: &SimReport) {
    println!(
        "seed {}: {} nodes, {} events, {} virtual ms, commit index {}, trace hash {:016x}",
        report.seed,
        report.node_count,
        report.events,
        report.virtual_ms,
        report.commit_index,
        report.trace_hash
    );
    println!("operations: {}", describe_operations(&report.operations));
    println!("faults: {}", report.faults);
    println!("snapshots: {}", report.snapshots);
    if let Some(outage) = &report.outage {
        println!(
            "outage: {} down for {} ms, came back {} entries behind and installed {} snapshots",
            outage.node, outage.down_ms, outage.entries_behind, outage.snapshots_installed
        );
    }
    if let Some(membership) = &report.membership {
        println!("membership: {membership}");
    }
    if let Some(freeze) = &report.disk_freeze {
        let after = |ms: Option<u64>| ms.map_or(String::from("never"), |ms| format!("{ms} ms"));
        println!(
            "disk freeze: {} (leading term {}) froze at {} ms for {} ms; it stepped down for it after {}, another leader committed after {}",
            freeze.node,
            freeze.term,
            freeze.frozen_at_ms,
            freeze.frozen_ms,
            after(freeze.stepped_down_after_ms),
            after(freeze.new_leader_commit_after_ms)
        );
    }
    println!("stall step-downs: {}", report.stall_step_downs);
    if report.violations.is_empty() {
        println!("no violations");
    }
    for violation in &report.violations {
        println!("VIOLATION: {violation}");
    }
}

fn describe_operations(operations: &OperationCounts) -> String {
    format!(
        "{} ({} ok, {} failed, {} unknown)",
        operations.total(),
        operations.ok,
        operations.failed,
        operations.unknown
    )
}

fn soak(
    seeds: u64,
    start_seed: u64,
    threads: Option<usize>,
    options: &RunOptions,
) -> anyhow::Result<()> {
    let config = options.config(false)?;
    let threads = threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map(|count| count.get()).unwrap_or(1)
        })
        .max(1);
    let next_seed = AtomicU64::new(start_seed);
    let end_seed = start_seed.saturating_add(seeds);
    let started = Instant::now();
    let (reports, finished) = mpsc::channel::<SimReport>();
    let mut operations = OperationCounts::default();
    let mut faults = FaultCounts::default();
    let mut snapshots = SnapshotCounts::default();
    // Seeds that changed membership, and what they did.
    let mut membership = (0u64, MembershipCounts::default());
    let mut events = 0u64;
    let mut stall_step_downs = 0u64;
    let mut inconclusive = 0u64;
    // Long outages: how many, how far behind in all, how many caught up by snapshot.
    let mut outages = (0u64, 0u64, 0u64);
    let mut failing: Vec<SimReport> = Vec::new();
    let mut done = 0u64;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let reports = reports.clone();
            let next_seed = &next_seed;
            let config = &config;
            scope.spawn(move || {
                loop {
                    let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                    if seed >= end_seed {
                        break;
                    }
                    if reports.send(sim::run(seed, config)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(reports);
        let mut last_progress = Instant::now();
        for report in finished {
            done += 1;
            events += report.events;
            stall_step_downs += report.stall_step_downs;
            operations.ok += report.operations.ok;
            operations.failed += report.operations.failed;
            operations.unknown += report.operations.unknown;
            faults.add(&report.faults);
            snapshots.add(&report.snapshots);
            if let Some(counts) = &report.membership {
                membership.0 += 1;
                membership.1.add(counts);
            }
            inconclusive += u64::from(report.linearizability_inconclusive);
            if let Some(outage) = &report.outage {
                outages.0 += 1;
                outages.1 += outage.entries_behind;
                outages.2 += u64::from(outage.snapshots_installed > 0);
            }
            if !report.violations.is_empty() {
                eprintln!();
                eprintln!("seed {} violated an invariant: {}", report.seed, report.violations[0]);
                eprintln!("replay: {}", sim::replay_command(report.seed, &config));
                failing.push(report);
            }
            if last_progress.elapsed() >= Duration::from_millis(250) || done == seeds {
                last_progress = Instant::now();
                print_progress(done, seeds, started.elapsed(), failing.len());
            }
        }
    });
    eprintln!();
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "seeds:        {done} in {elapsed:.1} s on {threads} threads ({:.1} seeds/s)",
        done as f64 / elapsed
    );
    println!(
        "operations:   {} simulated client operations ({:.0} ops/s); {}",
        operations.total(),
        operations.total() as f64 / elapsed,
        describe_operations(&operations)
    );
    println!("events:       {events}");
    println!("faults:       {faults}");
    println!("snapshots:    {snapshots}");
    println!("stalls:       {stall_step_downs} leaders stepped down for a stalled disk");
    println!("membership:   {} seeds changed membership: {}", membership.0, membership.1);
    if outages.0 > 0 {
        println!(
            "outages:      {} followers down long, {:.0} entries behind on average, {} caught up by snapshot",
            outages.0,
            outages.1 as f64 / outages.0 as f64,
            outages.2
        );
    }
    println!("inconclusive: {inconclusive} seeds (linearizability search over budget)");
    println!("violations:   {} seeds", failing.len());
    failing.sort_by_key(|report| report.seed);
    for report in &failing {
        for violation in &report.violations {
            println!("  seed {}: {violation}", report.seed);
        }
        println!("  replay: {}", sim::replay_command(report.seed, &config));
    }
    if !failing.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn print_progress(done: u64, total: u64, elapsed: Duration, violations: usize) {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let bar: String =
        (0..WIDTH).map(|position| if position < filled { '#' } else { '.' }).collect();
    let mut stderr = std::io::stderr();
    let _ =
        write!(stderr, "\r[{bar}] {done}/{total} seeds, {rate:.0} seeds/s, {violations} violating");
    let _ = stderr.flush();
}
