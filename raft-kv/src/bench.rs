//! `raft-kv bench`: a closed-loop load generator. N clients each send writes and reads
//! (linearizable by default) on a key set and wait for each answer before the next request.
//! Prints a progress line every second and, at the end, throughput and latency percentiles
//! from an HDR histogram. With `--fill` it writes every key once instead (keys 0 to
//! `--keys` - 1, handed out in order to whichever client is free), to load a store before a
//! measurement.
//!
//! The same generator drives two systems, so both are measured the same way:
//! - raft-kv: one kept-alive HTTP/1.1 connection per client to the leader (PUT and GET);
//!   with `--http2`, HTTP/2 instead: one connection per client, or `--connections N` that
//!   the clients share, each request a stream of its own.
//!   `--consistency` picks the GET's `?consistency=` (linearizable, the default, sends none:
//!   ReadIndex; `lease`: the leader's lease, if the nodes run with `--lease-reads`; `local`:
//!   the node's own store, possibly stale).
//! - etcd v3, with the `etcd` cargo feature: its native gRPC API through `etcd-client`, one
//!   HTTP/2 connection per client to the leader (Put, and Get with etcd's default
//!   linearizable consistency). The feature needs `protoc` at build time, which is why it is
//!   off by default. Only linearizable reads are offered: etcd's serializable reads may be
//!   stale, so they are not comparable with a linearizable read.
//!
//! A request that fails (an answer other than success, or a broken connection) is counted as
//! an error; on raft-kv the client then waits [`FOLLOW_PAUSE`] and, if the leader changed,
//! sends its writes to the new one (a request to the old leader would only be redirected).
//!
//! `--read-from all` sends each client's reads to one node of `--endpoints`, client i to
//! endpoint i modulo their count, over a kept-alive connection of its own to that node
//! (follower reads); its writes still go to the leader, on another connection when the read
//! node is not the leader. On raft-kv a follower asks the leader for the read index and
//! answers from its own store; on etcd a follower does the same through etcd's own ReadIndex.
//! With `--connections` (etcd, and raft-kv with `--http2`), the clients share that many
//! connections per node, and the generator runs on that many threads at most (`main.rs`:
//! clients spread over more threads than the connections they share contend for them, and
//! take CPU from the servers measured on the same machine).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use bytes::Bytes;
use hyper::Method;
use raft_kv::client::{
    ClientStream, ClientTls, Http2Connection, connect, request_following_redirects_with,
};

/// How long a raft-kv client waits after a failed request before it looks for the leader.
const FOLLOW_PAUSE: Duration = Duration::from_millis(50);

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Concurrent clients.
    pub concurrency: usize,
    /// How long to run (after a one-second warm-up that is not measured).
    pub duration: Duration,
    /// Stop after this many requests, if set (before `duration` ends).
    pub requests: Option<u64>,
    /// Distinct keys.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Fraction of requests that are reads, in [0, 1].
    pub read_ratio: f64,
    /// HTTP/2 connections the clients share per node (None: one per client): etcd's gRPC,
    /// and raft-kv with `--http2`. HTTP/1.1 cannot multiplex requests on a connection, so
    /// raft-kv clients without `--http2` always have one each.
    pub connections: Option<usize>,
    /// How reads are served.
    pub consistency: Consistency,
    /// Which nodes serve the reads.
    pub read_from: ReadFrom,
    /// Write every key once, then stop: no warm-up, no reads, `duration` and `requests`
    /// ignored, a failed write retried.
    pub fill: bool,
}

/// How a read is served (raft-kv's `?consistency=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// Linearizable through ReadIndex (raft-kv's default; etcd's default too).
    Linearizable,
    /// Linearizable from the leader's lease (raft-kv nodes started with `--lease-reads`).
    Lease,
    /// The node's own store at once, possibly stale (raft-kv only).
    Local,
}

impl Consistency {
    /// The query string of a raft-kv GET.
    fn query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "",
            Consistency::Lease => "?consistency=lease",
            Consistency::Local => "?consistency=local",
        }
    }
}

/// Which nodes the clients send their reads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadFrom {
    /// The leader, like the writes.
    Leader,
    /// Client i reads from endpoint i modulo the number of endpoints.
    All,
    /// Client i reads from the i-th endpoint that is not the leader (modulo their number):
    /// every read is a follower read.
    Followers,
}

/// The system under load.
#[derive(Clone, Debug)]
pub enum Target {
    /// A raft-kv cluster, through any of its HTTP endpoints.
    RaftKv(crate::cli::Cluster),
    /// An etcd cluster, through its client URLs (`http://HOST:PORT`).
    #[cfg(feature = "etcd")]
    Etcd(Vec<String>),
}

/// Finds the raft-kv leader's HTTP address through any endpoint's `/v1/status`.
async fn find_raft_kv_leader(cluster: &crate::cli::Cluster) -> anyhow::Result<SocketAddr> {
    for endpoint in &cluster.endpoints {
        let Ok(reply) = request_following_redirects_with(
            cluster.tls.as_ref(),
            *endpoint,
            "GET",
            "/v1/status",
            &[],
            b"",
            Duration::from_secs(5),
        )
        .await
        else {
            continue;
        };
        if let Ok(status) = reply.json()
            && let Some(leader) = status["leader_http"].as_str()
        {
            let authority = leader.trim_start_matches("http://").trim_start_matches("https://");
            return authority.parse().with_context(|| format!("leader address {leader:?}"));
        }
    }
    bail!("no endpoint knows a leader")
}

/// One kept-alive HTTP/1.1 connection (over TLS with `--cacert`). Its buffers are reused
/// from request to request: the generator's own cost per request shares the machine with the
/// system it measures.
struct Connection {
    stream: Box<dyn ClientStream>,
    /// The request being sent.
    request: Vec<u8>,
    /// The answer being read.
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(address: SocketAddr, tls: Option<&ClientTls>) -> anyhow::Result<Connection> {
        let stream = connect(address, tls).await?;
        Ok(Connection {
            stream,
            request: Vec::with_capacity(4096),
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Sends a request and returns the status code (the body is read and dropped).
    async fn call(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        use std::io::Write as _;
        // One write: over TLS, two would be two records.
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;
        self.stream.flush().await?;
        // Read until the head is complete, then the body by Content-Length.
        self.buffer.clear();
        let (status, head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buffer).context("a malformed response head")? {
                httparse::Status::Complete(head_len) => {
                    let status = response.code.context("a response without a status code")?;
                    let length = response
                        .headers
                        .iter()
                        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|header| std::str::from_utf8(header.value).ok())
                        .and_then(|value| value.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (status, head_len, length);
                }
                httparse::Status::Partial => {}
            }
            self.buffer.reserve(4096);
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                bail!("the server closed the connection");
            }
        };
        while self.buffer.len() < head_len + body_len {
            self.buffer.reserve(head_len + body_len - self.buffer.len());
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                bail!("the server closed the connection mid-body");
            }
        }
        Ok(status)
    }
}

/// A connection to a raft-kv node, in either protocol.
enum RaftKvConnection {
    /// One kept-alive HTTP/1.1 connection: one request at a time.
    Http1(Connection),
    /// A handle on an HTTP/2 connection, possibly shared with other clients.
    Http2(Http2Connection),
}

impl RaftKvConnection {
    async fn open(
        address: SocketAddr,
        tls: Option<&ClientTls>,
        http2: bool,
    ) -> anyhow::Result<RaftKvConnection> {
        Ok(if http2 {
            RaftKvConnection::Http2(Http2Connection::open(address, tls).await?)
        } else {
            RaftKvConnection::Http1(Connection::open(address, tls).await?)
        })
    }

    /// Sends a request and returns the status code (the body is read and dropped).
    async fn call(&mut self, method: Method, path: &str, body: &Bytes) -> anyhow::Result<u16> {
        match self {
            RaftKvConnection::Http1(connection) => {
                connection.call(method.as_str(), path, body).await
            }
            RaftKvConnection::Http2(connection) => {
                Ok(connection.status_of(method, path, body.clone()).await?)
            }
        }
    }
}

/// One connection to one node of the system under load.
enum Link {
    RaftKv {
        node: SocketAddr,
        connection: RaftKvConnection,
        tls: Option<ClientTls>,
    },
    #[cfg(feature = "etcd")]
    Etcd {
        node: String,
        kv: Box<etcd_client::KvClient>,
    },
}

impl Link {
    async fn open(node: &Node, tls: Option<&ClientTls>, http2: bool) -> anyhow::Result<Link> {
        Ok(match node {
            Node::RaftKv(address) => Link::RaftKv {
                node: *address,
                connection: RaftKvConnection::open(*address, tls, http2).await?,
                tls: tls.cloned(),
            },
            #[cfg(feature = "etcd")]
            Node::Etcd(url) => {
                Link::Etcd { node: url.clone(), kv: Box::new(etcd::connect(url).await?) }
            }
        })
    }

    /// Writes `value` at `key`; `Ok(false)` is an answer that is not success.
    async fn put(&mut self, key: u64, value: &Bytes) -> anyhow::Result<bool> {
        match self {
            Link::RaftKv { connection, .. } => {
                let path = format!("/v1/kv/bench-{key}");
                Ok(connection.call(Method::PUT, &path, value).await? == 200)
            }
            #[cfg(feature = "etcd")]
            Link::Etcd { kv, .. } => {
                kv.put(format!("bench-{key}"), value.as_ref(), None).await?;
                Ok(true)
            }
        }
    }

    /// Reads `key` (a missing key is a successful read); `query` is raft-kv's query string.
    async fn get(&mut self, key: u64, query: &str) -> anyhow::Result<bool> {
        match self {
            Link::RaftKv { connection, .. } => {
                let path = format!("/v1/kv/bench-{key}{query}");
                let status = connection.call(Method::GET, &path, &Bytes::new()).await?;
                Ok(matches!(status, 200 | 404))
            }
            #[cfg(feature = "etcd")]
            Link::Etcd { kv, .. } => {
                // etcd's default Get is linearizable; `run` refuses other consistencies.
                kv.get(format!("bench-{key}"), None).await?;
                Ok(true)
            }
        }
    }

    /// Another handle on the same connection, if the protocol multiplexes (HTTP/2: raft-kv
    /// with `--http2`, etcd's gRPC).
    fn share(&self) -> Option<Link> {
        match self {
            Link::RaftKv { node, connection: RaftKvConnection::Http2(connection), tls } => {
                Some(Link::RaftKv {
                    node: *node,
                    connection: RaftKvConnection::Http2(connection.clone()),
                    tls: tls.clone(),
                })
            }
            Link::RaftKv { connection: RaftKvConnection::Http1(_), .. } => None,
            #[cfg(feature = "etcd")]
            Link::Etcd { node, kv } => Some(Link::Etcd { node: node.clone(), kv: kv.clone() }),
        }
    }

    /// A fresh connection to the same node after a transport error (an HTTP/2 connection
    /// that still works, shared with other clients, is kept).
    async fn reopen(&mut self) -> anyhow::Result<()> {
        let (node, tls, http2) = match self {
            Link::RaftKv { connection: RaftKvConnection::Http2(connection), .. }
                if connection.is_open() =>
            {
                return Ok(());
            }
            Link::RaftKv { node, tls, connection } => {
                (Node::RaftKv(*node), tls.clone(), matches!(connection, RaftKvConnection::Http2(_)))
            }
            #[cfg(feature = "etcd")]
            Link::Etcd { node, .. } => (Node::Etcd(node.clone()), None, false),
        };
        *self = Link::open(&node, tls.as_ref(), http2).await?;
        Ok(())
    }
}

/// One client's links: writes to the leader; reads there too, or to a node of their own.
struct Session {
    writes: Link,
    /// The link for reads when they go to another node than the leader.
    reads: Option<Link>,
}

impl Session {
    async fn put(&mut self, key: u64, value: &Bytes) -> anyhow::Result<bool> {
        self.writes.put(key, value).await
    }

    async fn get(&mut self, key: u64, query: &str) -> anyhow::Result<bool> {
        self.reads.as_mut().unwrap_or(&mut self.writes).get(key, query).await
    }

    /// After a failed request on raft-kv: waits [`FOLLOW_PAUSE`], then points the write link
    /// at the current leader if the leader moved (the link stays as it is while no leader is
    /// known or the new one cannot be reached).
    async fn follow_leader(&mut self, cluster: &crate::cli::Cluster) {
        tokio::time::sleep(FOLLOW_PAUSE).await;
        let Ok(leader) = find_raft_kv_leader(cluster).await else { return };
        if let Link::RaftKv { node, .. } = &self.writes
            && *node != leader
            && let Ok(link) =
                Link::open(&Node::RaftKv(leader), cluster.tls.as_ref(), cluster.http2).await
        {
            self.writes = link;
        }
    }

    /// Fresh connections after a transport error.
    async fn reopen(&mut self) -> anyhow::Result<()> {
        self.writes.reopen().await?;
        if let Some(reads) = &mut self.reads {
            reads.reopen().await?;
        }
        Ok(())
    }
}

/// A node the clients send requests to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    RaftKv(SocketAddr),
    #[cfg(feature = "etcd")]
    Etcd(String),
}

impl Node {
    /// The leader, for the header line.
    fn describe_leader(&self) -> String {
        match self {
            Node::RaftKv(address) => format!("raft-kv leader at {address}"),
            #[cfg(feature = "etcd")]
            Node::Etcd(url) => format!("etcd leader at {url}"),
        }
    }
}

/// Connections to one node that the clients share (etcd's `--connections`).
struct SharedLinks {
    node: Node,
    links: Vec<Link>,
}

/// A handle on a shared connection to `node` for client `client`, if they are shared.
fn shared_link(shared: &[SharedLinks], node: &Node, client: usize) -> Option<Link> {
    let pool = shared.iter().find(|pool| pool.node == *node)?;
    pool.links.get(client % pool.links.len().max(1)).and_then(Link::share)
}

#[cfg(feature = "etcd")]
mod etcd {
    //! The etcd side of the generator: finding the leader and opening a connection to it.

    use anyhow::{Context, bail};
    use etcd_client::{Client, KvClient};

    /// A client connected to `url` only (no load balancing across members).
    pub async fn connect(url: &str) -> anyhow::Result<KvClient> {
        let client = Client::connect([url], None)
            .await
            .with_context(|| format!("connecting to etcd at {url}"))?;
        Ok(client.kv_client())
    }

    /// The client URL of the member that leads, found by asking each member for its status.
    pub async fn find_leader(endpoints: &[String]) -> anyhow::Result<String> {
        for url in endpoints {
            let Ok(mut client) = Client::connect([url], None).await else { continue };
            let Ok(status) = client.status().await else { continue };
            let member = status.header().map(|header| header.member_id());
            if member == Some(status.leader()) {
                return Ok(url.clone());
            }
        }
        bail!("no etcd endpoint is the leader: {endpoints:?}")
    }
}

/// Runs the load against `target` and prints the results.
pub async fn run(target: &Target, options: BenchOptions) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&options.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    let (leader, endpoints) = match target {
        Target::RaftKv(cluster) => (
            Node::RaftKv(find_raft_kv_leader(cluster).await?),
            cluster.endpoints.iter().copied().map(Node::RaftKv).collect::<Vec<_>>(),
        ),
        #[cfg(feature = "etcd")]
        Target::Etcd(endpoints) => {
            if options.consistency != Consistency::Linearizable {
                bail!(
                    "etcd is measured with linearizable reads only: its serializable reads may \
                     be stale, so they are not compared"
                );
            }
            (
                Node::Etcd(etcd::find_leader(endpoints).await?),
                endpoints.iter().cloned().map(Node::Etcd).collect(),
            )
        }
    };
    let tls = match target {
        Target::RaftKv(cluster) => cluster.tls.clone(),
        #[cfg(feature = "etcd")]
        Target::Etcd(_) => None,
    };
    let raft_kv_cluster = match target {
        Target::RaftKv(cluster) => Some(cluster.clone()),
        #[cfg(feature = "etcd")]
        Target::Etcd(_) => None,
    };
    let http2 = raft_kv_cluster.as_ref().is_some_and(|cluster| cluster.http2);
    if options.connections.is_some() && raft_kv_cluster.is_some() && !http2 {
        bail!(
            "--connections shares connections between clients, which HTTP/1.1 cannot: add --http2"
        );
    }
    let followers: Vec<Node> = endpoints.iter().filter(|node| **node != leader).cloned().collect();
    if options.read_from == ReadFrom::Followers && followers.is_empty() {
        bail!("--read-from followers needs an endpoint that is not the leader");
    }
    // Where client n sends its reads.
    let read_node = |client: usize| match options.read_from {
        ReadFrom::Leader => leader.clone(),
        ReadFrom::All => endpoints[client % endpoints.len()].clone(),
        ReadFrom::Followers => followers[client % followers.len()].clone(),
    };
    // The header line names the read settings only when they are not the defaults.
    let mut read_settings = String::new();
    match options.consistency {
        Consistency::Linearizable => {}
        Consistency::Lease => read_settings.push_str(", lease reads"),
        Consistency::Local => read_settings.push_str(", local reads"),
    }
    match options.read_from {
        ReadFrom::Leader => {}
        ReadFrom::All => read_settings.push_str(", reads from all nodes"),
        ReadFrom::Followers => read_settings.push_str(", reads from followers"),
    }
    let reads = if options.fill {
        String::from("writing every key once")
    } else {
        format!("{:.0}% reads{read_settings}", options.read_ratio * 100.0)
    };
    println!(
        "bench: {} clients against the {}, {} keys, {}-byte values, {reads}",
        options.concurrency,
        leader.describe_leader(),
        options.keys,
        options.value_size,
    );
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // With --fill: the next key to write.
    let next_key = Arc::new(AtomicU64::new(0));
    // Shared connections, when asked for (etcd): client n uses connection n modulo their count
    // to each node it talks to (the leader, and its read node).
    let mut shared: Vec<SharedLinks> = Vec::new();
    if let Some(count) = options.connections.filter(|count| *count < options.concurrency) {
        let mut nodes = vec![leader.clone()];
        for client in 0..options.concurrency {
            let node = read_node(client);
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        for node in nodes {
            let mut links = Vec::new();
            for _ in 0..count.max(1) {
                links.push(Link::open(&node, tls.as_ref(), http2).await?);
            }
            shared.push(SharedLinks { node, links });
        }
    }
    let query = options.consistency.query();
    let mut workers = Vec::new();
    for client in 0..options.concurrency {
        let (measuring, stop, completed, errors, next_key) =
            (measuring.clone(), stop.clone(), completed.clone(), errors.clone(), next_key.clone());
        let options = options.clone();
        let leader = leader.clone();
        let tls = tls.clone();
        let cluster = raft_kv_cluster.clone();
        let read_node = Some(read_node(client)).filter(|node| *node != leader);
        let shared_writes = shared_link(&shared, &leader, client);
        let shared_reads = read_node.as_ref().and_then(|node| shared_link(&shared, node, client));
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let writes = match shared_writes {
                Some(link) => link,
                None => Link::open(&leader, tls.as_ref(), http2).await?,
            };
            let reads = match (shared_reads, read_node) {
                (Some(link), _) => Some(link),
                (None, Some(node)) => Some(Link::open(&node, tls.as_ref(), http2).await?),
                (None, None) => None,
            };
            let mut session = Session { writes, reads };
            let value = Bytes::from(vec![b'x'; options.value_size]);
            let mut state = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            // With --fill, a key whose write failed, to write again.
            let mut retry: Option<u64> = None;
            while !stop.load(Ordering::Relaxed) {
                let (key, read) = if options.fill {
                    match retry.take() {
                        Some(key) => (key, false),
                        None => match next_key.fetch_add(1, Ordering::Relaxed) {
                            key if key < options.keys => (key, false),
                            _ => break,
                        },
                    }
                } else {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let read = ((state >> 11) as f64 / (1u64 << 53) as f64) < options.read_ratio;
                    (state % options.keys.max(1), read)
                };
                let started = Instant::now();
                let outcome = if read {
                    session.get(key, query).await
                } else {
                    session.put(key, &value).await
                };
                let elapsed = started.elapsed();
                match outcome {
                    Ok(true) => {
                        if measuring.load(Ordering::Relaxed) {
                            histogram.record(elapsed.as_micros().max(1) as u64)?;
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(false) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        retry = options.fill.then_some(key);
                        if let Some(cluster) = &cluster {
                            session.follow_leader(cluster).await;
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        retry = options.fill.then_some(key);
                        if let Some(cluster) = &cluster {
                            session.follow_leader(cluster).await;
                        }
                        session.reopen().await?;
                    }
                }
            }
            anyhow::Ok(histogram)
        }));
    }

    if !options.fill {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut next_progress = Duration::from_secs(1);
    let going = |started: Instant| {
        if options.fill {
            // Until every client has stopped: all keys written, or a client gave up.
            !workers.iter().all(|worker| worker.is_finished())
        } else {
            started.elapsed() < options.duration
                && options.requests.is_none_or(|limit| completed.load(Ordering::Relaxed) < limit)
        }
    };
    while going(started) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() >= next_progress {
            next_progress += Duration::from_secs(1);
            let count = completed.load(Ordering::Relaxed);
            let rate = count as f64 / started.elapsed().as_secs_f64();
            let failed = errors.load(Ordering::Relaxed);
            eprint!(
                "\r[{:>4.0} s] {count} requests, {rate:.0}/s, {failed} errors   ",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    eprintln!();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for worker in workers {
        total.add(worker.await??)?;
    }
    let count = total.len();
    let micros = |quantile: f64| total.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "requests:   {count} in {:.1} s: {:.0} requests/s",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        micros(0.50),
        micros(0.90),
        micros(0.99),
        micros(0.999),
        total.max() as f64 / 1000.0
    );
    println!("errors:     {}", errors.load(Ordering::Relaxed));
    Ok(())
}
