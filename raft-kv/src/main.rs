//! The `raft-kv` command: `raft-kv serve` runs one node of a replicated key-value service;
//! `put`, `get`, `del`, `cas` and `status` are its client.
//!
//! ```bash
//! raft-kv serve                     # a single-node cluster, data in ./raft-kv-data
//! raft-kv certs init certs --nodes 4  # a CA, node and client certificates to try TLS
//! raft-kv serve --id 1 --data-dir DIR --raft-addr 127.0.0.1:7001 --http-addr 127.0.0.1:8001 \
//!     --peer 2=127.0.0.1:7002,127.0.0.1:8002 --peer 3=127.0.0.1:7003,127.0.0.1:8003 \
//!     --peer-cert certs/node1.pem --peer-key certs/node1-key.pem --peer-ca certs/ca.pem \
//!     --http-cert certs/node1.pem --http-key certs/node1-key.pem --http-ca certs/ca.pem
//! raft-kv put greeting hello --endpoints https://127.0.0.1:8001,https://127.0.0.1:8002 \
//!     --cacert certs/ca.pem --cert certs/client.pem --key certs/client-key.pem
//! raft-kv get greeting --endpoints https://127.0.0.1:8001 --cacert certs/ca.pem ...
//! raft-kv serve --id 4 --data-dir DIR4 --raft-addr 127.0.0.1:7004 --http-addr 127.0.0.1:8004 --join ...
//! raft-kv member add 4 127.0.0.1:7004 127.0.0.1:8004 --endpoints https://127.0.0.1:8001 ...
//! raft-kv member list
//! raft-kv transfer-leader 4
//! raft-kv member remove 1
//! ```

mod bench;
mod cli;
#[cfg(feature = "disk-freeze")]
mod disk_freeze;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use raft_consensus::NodeId;
use raft_consensus::transport::PeerTls;
use raft_kv::client::ClientTls;
use raft_kv::http_server::HttpLimits;
use raft_kv::server::{Limits, Peer, ServerConfig, SnapshotPolicy, run};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "raft-kv", about = "A replicated key-value service on raft_consensus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of the cluster.
    Serve(Box<ServeArgs>),
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Read a key (linearizable).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Write NEW only if the key holds --expected (or, without it, only if the key is absent).
    Cas {
        /// The key.
        key: String,
        /// The value to write.
        new: String,
        /// The value the key must hold.
        #[arg(long)]
        expected: Option<String>,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Show a node's status.
    Status {
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// List, add or remove the cluster's members.
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
    /// Hand leadership to the voter ID (it must have caught up with the leader's log).
    TransferLeader {
        /// The node to lead.
        id: u64,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Certificates for trying TLS locally.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Load the cluster with concurrent clients and report throughput and latency.
    Bench {
        /// Concurrent clients (each waits for its answer before the next request).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds to measure (after a one-second warm-up).
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Stop after this many requests instead, if reached first.
        #[arg(long)]
        requests: Option<u64>,
        /// Distinct keys.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// Bytes per written value.
        #[arg(long, default_value_t = 256)]
        value_size: usize,
        /// Fraction of requests that are linearizable reads (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        read_ratio: f64,
        /// The system to load: raft-kv, or etcd through its gRPC API (--endpoints then lists
        /// etcd's client URLs; needs a build with `--features etcd`).
        #[arg(long, value_enum, default_value_t = BenchTarget::RaftKv)]
        target: BenchTarget,
        /// HTTP/2 connections the clients share per node (default: one per client): etcd's
        /// gRPC connections, or raft-kv's with --http2 (HTTP/1.1 cannot share).
        #[arg(long)]
        connections: Option<usize>,
        /// How reads are served: linearizable (ReadIndex), lease (the leader's lease; start
        /// the nodes with --lease-reads) or local (possibly stale). etcd: linearizable only.
        #[arg(long, value_enum, default_value_t = bench::Consistency::Linearizable)]
        consistency: bench::Consistency,
        /// Where the reads go: the leader; all (client i reads from endpoint i modulo their
        /// count, on a connection of its own; writes still go to the leader); or followers
        /// (client i reads from the i-th endpoint that is not the leader).
        #[arg(long, value_enum, default_value_t = bench::ReadFrom::Leader)]
        read_from: bench::ReadFrom,
        /// Write every key once (keys 0 to --keys - 1, in order, shared by the clients), then
        /// stop: loads a store before a measurement. No warm-up; --duration-secs, --requests
        /// and --read-ratio are ignored; a failed write is retried.
        #[arg(long)]
        fill: bool,
        #[command(flatten)]
        endpoints: Endpoints,
    },
}

/// The systems `raft-kv bench` can load.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BenchTarget {
    /// A raft-kv cluster.
    RaftKv,
    /// An etcd v3 cluster.
    Etcd,
}

#[derive(clap::Args)]
struct Endpoints {
    /// The cluster's HTTP endpoints, comma-separated (requests follow redirects to the
    /// leader): http://HOST:PORT, or https://HOST:PORT with --cacert (a bare HOST:PORT is
    /// https with --cacert, http without).
    #[arg(long, default_value = "127.0.0.1:8001")]
    endpoints: String,
    /// The CA certificate (PEM) that signs the nodes' HTTP certificates: talk HTTPS.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// This client's certificate (PEM), for nodes started with --http-ca.
    #[arg(long = "cert", id = "client_cert", requires_all = ["client_key", "cacert"])]
    client_cert: Option<PathBuf>,
    /// This client's private key (PEM), with --cert.
    #[arg(long = "key", id = "client_key", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Speak HTTP/2 (prior knowledge on http://, ALPN on https://) rather than HTTP/1.1.
    #[arg(long)]
    http2: bool,
}

impl Endpoints {
    fn parse(&self) -> anyhow::Result<cli::Cluster> {
        let tls = match &self.cacert {
            Some(ca) => Some(ClientTls::from_pem_files(
                ca,
                self.client_cert.as_deref(),
                self.client_key.as_deref(),
            )?),
            None => None,
        };
        let mut cluster = cli::parse_cluster(&self.endpoints, tls)?;
        cluster.http2 = self.http2;
        Ok(cluster)
    }
}

#[derive(Subcommand)]
enum MemberAction {
    /// List the members as one node sees them (JSON: leader, and each member's id,
    /// addresses and whether it votes).
    List {
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Add node ID as a voter: the leader adds it as a learner, waits until it has caught up,
    /// then promotes it. Start the node first with `raft-kv serve --join`.
    Add {
        /// The new node's id.
        id: u64,
        /// Where it accepts Raft traffic.
        raft_addr: String,
        /// Where it serves HTTP.
        http_addr: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Remove node ID (the leader too: leadership moves to another voter).
    Remove {
        /// The node to remove.
        id: u64,
        #[command(flatten)]
        endpoints: Endpoints,
    },
}

#[derive(Subcommand)]
enum CertsAction {
    /// Write a CA (ca.pem, ca-key.pem), a certificate per node (node<ID>.pem and
    /// node<ID>-key.pem, naming node<ID>, localhost, 127.0.0.1 and --hosts) and a client
    /// certificate (client.pem, client-key.pem) into DIR. For trying TLS: a real deployment's
    /// certificates come from its own CA.
    Init {
        /// Where the files go (created if missing; an existing ca.pem is never overwritten).
        dir: PathBuf,
        /// Node certificates to write, for ids 1 to N.
        #[arg(long)]
        nodes: u64,
        /// More names for every node certificate, comma-separated (host names or IPs).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// This node's id (unique in the cluster, above zero).
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// The cluster's id; a data directory or peer of another cluster is refused.
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
    /// Where this node keeps its write-ahead log.
    #[arg(long, default_value = "./raft-kv-data")]
    data_dir: PathBuf,
    /// Where this node accepts Raft traffic from its peers.
    #[arg(long, default_value = "127.0.0.1:7001")]
    raft_addr: SocketAddr,
    /// Where this node serves the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8001")]
    http_addr: SocketAddr,
    /// Another member, as ID=RAFT_ADDR,HTTP_ADDR (repeat for each). Only bootstraps a new
    /// cluster: a node with data keeps its stored configuration.
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<Peer>,
    /// Join a running cluster: start with an empty log and wait for the leader to add this
    /// node (`raft-kv member add`); the members are learned from the leader.
    #[arg(long, conflicts_with = "peers")]
    join: bool,
    /// Largest key, in bytes.
    #[arg(long, default_value_t = Limits::default().max_key_bytes)]
    max_key_bytes: usize,
    /// Largest value, in bytes.
    #[arg(long, default_value_t = Limits::default().max_value_bytes)]
    max_value_bytes: usize,
    /// Milliseconds a request waits for its command to apply before answering 504.
    #[arg(long, default_value_t = 5_000)]
    request_timeout_ms: u64,
    /// Snapshot the store after this many applied requests, then compact the log (0: never).
    #[arg(long, default_value_t = SnapshotPolicy::default().after_entries)]
    snapshot_after_entries: u64,
    /// Log entries kept below a snapshot, for followers slightly behind.
    #[arg(long, default_value_t = SnapshotPolicy::default().keep_entries)]
    snapshot_keep_entries: u64,
    /// Take a snapshot only once the requests applied since the last one add up to this
    /// multiple of its size in bytes, so a large store is rewritten at most once per that many
    /// times its size of log (0: by --snapshot-after-entries alone).
    #[arg(long, default_value_t = SnapshotPolicy::default().log_multiple)]
    snapshot_log_multiple: u64,
    /// Serve `GET /v1/kv/{key}?consistency=lease` from the leader's lease, without a round
    /// trip to a majority. Safe only if no node's clock runs more than 30 ms fast over an
    /// election timeout (150 ms); start every node of the cluster with it.
    #[arg(long)]
    lease_reads: bool,
    /// This node's certificate (PEM) for mutual TLS with its peers; it must name node<ID>.
    #[arg(long, requires_all = ["peer_key", "peer_ca"])]
    peer_cert: Option<PathBuf>,
    /// The private key (PEM) of --peer-cert.
    #[arg(long, requires_all = ["peer_cert", "peer_ca"])]
    peer_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers must present a certificate it signed.
    #[arg(long, requires_all = ["peer_cert", "peer_key"])]
    peer_ca: Option<PathBuf>,
    /// Serve HTTPS with this certificate (PEM).
    #[arg(long, requires = "http_key")]
    http_cert: Option<PathBuf>,
    /// The private key (PEM) of --http-cert.
    #[arg(long, requires = "http_cert")]
    http_key: Option<PathBuf>,
    /// Require HTTPS clients to present a certificate signed by this CA (PEM).
    #[arg(long, requires = "http_cert")]
    http_ca: Option<PathBuf>,
    /// Allow peers over plain TCP (anyone who reaches the Raft port can act as a member) and
    /// plain HTTP. For tests and trusted networks only.
    #[arg(long)]
    insecure: bool,
    /// Most HTTP connections held at once (lowered to fit the open-file limit).
    #[arg(long, default_value_t = HttpLimits::default().max_connections)]
    http_max_connections: usize,
    /// Milliseconds a client has for a TLS handshake and for a request's headers.
    #[arg(long, default_value_t = HttpLimits::default().header_timeout.as_millis() as u64)]
    http_header_timeout_ms: u64,
    /// Milliseconds a client has to send a request's body.
    #[arg(long, default_value_t = HttpLimits::default().body_timeout.as_millis() as u64)]
    http_body_timeout_ms: u64,
    /// Milliseconds an HTTP connection may stay without traffic before it is closed.
    #[arg(long, default_value_t = HttpLimits::default().idle_timeout.as_millis() as u64)]
    http_idle_timeout_ms: u64,
    /// Most requests one HTTP/2 connection may have in flight at once.
    #[arg(long, default_value_t = HttpLimits::default().max_streams_per_connection)]
    http2_max_streams: u32,
    /// Most HTTP requests served at once over all connections (more wait, then 503).
    #[arg(long, default_value_t = HttpLimits::default().max_requests_in_flight)]
    http_max_requests: usize,
    /// Tests only (built with the `disk-freeze` feature, which raft-kv's tests turn on):
    /// while this file exists, every sync of the data directory waits, as on a frozen disk.
    #[cfg(feature = "disk-freeze")]
    #[arg(long, hide = true)]
    freeze_syncs_while: Option<PathBuf>,
}

fn parse_peer(text: &str) -> Result<Peer, String> {
    let usage = || format!("expected ID=RAFT_ADDR,HTTP_ADDR, got {text:?}");
    let (id, addresses) = text.split_once('=').ok_or_else(usage)?;
    let (raft, http) = addresses.split_once(',').ok_or_else(usage)?;
    let id: u64 = id.trim().parse().map_err(|_| format!("{}: the id must be a number", usage()))?;
    let raft_addr = raft.trim().parse().map_err(|error| format!("{}: {error}", usage()))?;
    let http_addr = http.trim().parse().map_err(|error| format!("{}: {error}", usage()))?;
    Ok(Peer { id: NodeId(id), raft_addr, http_addr })
}

/// mimalloc rather than the system's malloc: fewer cycles per request (see `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let command = Cli::parse().command;
    // A clear one-line message and a non-zero status, whatever RUST_BACKTRACE says. The
    // process exits from inside the runtime, as `#[tokio::main]` would: dropping a runtime
    // waits for its blocking tasks (a snapshot being written to a stalled disk), and a
    // supervisor should see a failed node end at once.
    let fail = |error: anyhow::Error| -> ! {
        eprintln!("raft-kv: {error:#}");
        std::process::exit(1);
    };
    let runtime = runtime_for(&command)
        .context("starting the async runtime")
        .unwrap_or_else(|error| fail(error));
    runtime.block_on(async {
        if let Err(error) = execute(command).await {
            fail(error);
        }
    });
}

/// The async runtime for `command`: a worker thread per core (or `TOKIO_WORKER_THREADS`),
/// except for a load whose clients share `--connections N` connections per node, which runs
/// on N threads at most. Clients that share an HTTP/2 (or gRPC) connection all work on that
/// connection's state; spread over more threads than connections, they contend for it, and
/// the load generator takes CPU from the servers it measures on the same machine. (One
/// shared HTTP/2 connection: 72 thousand reads a second on one thread against 66 thousand on
/// two, BENCHMARKS.md.)
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Command::Bench { connections: Some(shared), .. } = command {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        builder.worker_threads((*shared).clamp(1, cores));
    }
    builder.build()
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Put { key, value, endpoints } => cli::put(&endpoints.parse()?, &key, &value).await,
        Command::Get { key, endpoints } => cli::get(&endpoints.parse()?, &key).await,
        Command::Del { key, endpoints } => cli::delete(&endpoints.parse()?, &key).await,
        Command::Cas { key, new, expected, endpoints } => {
            cli::compare_and_swap(&endpoints.parse()?, &key, expected.as_deref(), &new).await
        }
        Command::Status { endpoints } => cli::status(&endpoints.parse()?).await,
        Command::Certs { action: CertsAction::Init { dir, nodes, hosts } } => {
            let plan = raft_kv::tls::CertsPlan { directory: dir, nodes, hosts };
            for path in raft_kv::tls::init_certs(&plan)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Member { action } => match action {
            MemberAction::List { endpoints } => cli::member_list(&endpoints.parse()?).await,
            MemberAction::Add { id, raft_addr, http_addr, endpoints } => {
                cli::member_add(&endpoints.parse()?, id, &raft_addr, &http_addr).await
            }
            MemberAction::Remove { id, endpoints } => {
                cli::member_remove(&endpoints.parse()?, id).await
            }
        },
        Command::TransferLeader { id, endpoints } => {
            cli::transfer_leader(&endpoints.parse()?, id).await
        }
        Command::Bench {
            concurrency,
            duration_secs,
            requests,
            keys,
            value_size,
            read_ratio,
            target,
            connections,
            consistency,
            read_from,
            fill,
            endpoints,
        } => {
            let options = bench::BenchOptions {
                concurrency: concurrency.max(1),
                duration: Duration::from_secs(duration_secs),
                requests,
                keys,
                value_size,
                read_ratio,
                connections,
                consistency,
                read_from,
                fill,
            };
            let target = match target {
                BenchTarget::RaftKv => bench::Target::RaftKv(endpoints.parse()?),
                #[cfg(feature = "etcd")]
                BenchTarget::Etcd => bench::Target::Etcd(cli::endpoint_urls(&endpoints.endpoints)),
                #[cfg(not(feature = "etcd"))]
                BenchTarget::Etcd => bail!(
                    "this raft-kv was built without etcd support; build it with \
                     `cargo build --release -p raft-kv --features etcd` (needs protoc)"
                ),
            };
            bench::run(&target, options).await
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.id == 0 {
        bail!("--id must be above zero");
    }
    if args.peers.iter().any(|peer| peer.id.0 == args.id) {
        bail!("--peer lists this node's own id {}", args.id);
    }
    let clustered = !args.peers.is_empty() || args.join;
    let peer_tls = match (&args.peer_cert, &args.peer_key, &args.peer_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(
            PeerTls::from_pem_files(cert, key, ca)
                .context("the peer TLS files (--peer-cert, --peer-key, --peer-ca)")?,
        ),
        _ => None,
    };
    if peer_tls.is_none() && clustered && !args.insecure {
        bail!(
            "refusing to run with peers over plain TCP: give --peer-cert, --peer-key and \
             --peer-ca (`raft-kv certs init` writes some to try), or --insecure to accept \
             unauthenticated peers"
        );
    }
    let http_tls = match (&args.http_cert, &args.http_key) {
        (Some(cert), Some(key)) => Some(
            raft_kv::tls::server_config(cert, key, args.http_ca.as_deref())
                .context("the HTTP TLS files (--http-cert, --http-key, --http-ca)")?,
        ),
        _ => None,
    };
    if peer_tls.is_none() {
        if args.insecure {
            eprintln!(
                "raft-kv: --insecure: Raft traffic is plain TCP and unauthenticated: any host that reaches {} can act as a member",
                args.raft_addr
            );
        } else {
            eprintln!(
                "raft-kv: Raft traffic is plain TCP (a single node; add --peer-cert, --peer-key and --peer-ca before adding members)"
            );
        }
    }
    if http_tls.is_none() {
        eprintln!(
            "raft-kv: HTTP is plain and unauthenticated (--http-cert and --http-key serve HTTPS; --http-ca requires client certificates)"
        );
    }
    let http = http_limits(&args)?;
    let config = ServerConfig {
        id: NodeId(args.id),
        cluster_id: args.cluster_id,
        data_dir: args.data_dir,
        raft_addr: args.raft_addr,
        http_addr: args.http_addr,
        peers: args.peers,
        join: args.join,
        limits: Limits {
            max_key_bytes: args.max_key_bytes,
            max_value_bytes: args.max_value_bytes,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
        },
        snapshots: SnapshotPolicy {
            after_entries: args.snapshot_after_entries,
            keep_entries: args.snapshot_keep_entries,
            log_multiple: args.snapshot_log_multiple,
        },
        lease_reads: args.lease_reads,
        peer_tls,
        http_tls,
        http,
        allow_plain_peers: args.insecure,
    };
    #[cfg(feature = "disk-freeze")]
    if let Some(signal) = args.freeze_syncs_while {
        let fs = disk_freeze::FreezableFileSystem::new(signal);
        return raft_kv::server::run_on(fs, config, shutdown_signal())
            .await
            .context("raft-kv serve");
    }
    run(config, shutdown_signal()).await.context("raft-kv serve")
}

/// The HTTP limits the flags give, with the connection cap lowered to fit the open-file
/// limit (raised to its hard maximum first).
fn http_limits(args: &ServeArgs) -> anyhow::Result<HttpLimits> {
    let millis = |value: u64, flag: &str| {
        if value == 0 {
            bail!("--{flag} must be above zero");
        }
        Ok(Duration::from_millis(value))
    };
    let defaults = HttpLimits::default();
    let mut limits = HttpLimits {
        max_connections: args.http_max_connections.max(1),
        header_timeout: millis(args.http_header_timeout_ms, "http-header-timeout-ms")?,
        body_timeout: millis(args.http_body_timeout_ms, "http-body-timeout-ms")?,
        idle_timeout: millis(args.http_idle_timeout_ms, "http-idle-timeout-ms")?,
        // A CAS body carries two values, possibly base64 (4/3 of their size), and JSON.
        max_body_bytes: 3 * args.max_value_bytes + 2 * args.max_key_bytes + 64 * 1024,
        drain_timeout: defaults.drain_timeout,
        evict_idle_after: defaults.evict_idle_after,
        max_streams_per_connection: match args.http2_max_streams {
            0 => bail!("--http2-max-streams must be above zero"),
            streams => streams,
        },
        max_requests_in_flight: match args.http_max_requests {
            0 => bail!("--http-max-requests must be above zero"),
            requests => requests,
        },
    };
    let open_files = raise_open_file_limit();
    // Kept for the log's segments, snapshots, peers and the listener.
    const RESERVED_FILES: u64 = 256;
    let fitting =
        usize::try_from(open_files.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX);
    if limits.max_connections > fitting {
        eprintln!(
            "raft-kv: at most {fitting} HTTP connections (the open-file limit is {open_files}; {RESERVED_FILES} are kept for the log and peers)"
        );
        limits.max_connections = fitting;
    }
    Ok(limits)
}

/// Raises this process's open-file limit to its hard maximum; returns the limit in force.
fn raise_open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return 1024;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
        }
        #[allow(clippy::unnecessary_cast, reason = "rlim_t is not u64 on every platform")]
        let open_files = limit.rlim_cur as u64;
        open_files
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    eprintln!("raft-kv: shutting down");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks a command's definition (unique names, valid references) only when it
    /// parses that subcommand: check every one here rather than in a user's hands.
    #[test]
    fn every_command_definition_is_valid() {
        super::Cli::command().debug_assert();
    }

    fn workers_for(arguments: &[&str]) -> usize {
        let cli = <super::Cli as clap::Parser>::try_parse_from(arguments).expect("valid");
        super::runtime_for(&cli.command).expect("a runtime").metrics().num_workers()
    }

    /// A load whose clients share N connections runs on at most N worker threads; anything
    /// else on one per core.
    #[test]
    fn clients_sharing_connections_run_on_as_many_threads_at_most() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let shared_one = ["raft-kv", "bench", "--http2", "--connections", "1"];
        assert_eq!(workers_for(&shared_one), 1);
        let shared_many = ["raft-kv", "bench", "--http2", "--connections", "64"];
        assert_eq!(workers_for(&shared_many), cores);
        let default = std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|threads| threads.parse().ok())
            .unwrap_or(cores);
        assert_eq!(workers_for(&["raft-kv", "bench"]), default);
        assert_eq!(workers_for(&["raft-kv", "status"]), default);
    }
}
