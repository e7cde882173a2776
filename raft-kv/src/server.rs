//! The `raft-kv` server: one Raft node (write-ahead log in a data directory, TCP to its peers,
//! [`KvStateMachine`]) behind an HTTP/JSON API.
//!
//! Writes go through the Raft log. Reads are linearizable without a log entry, on any node
//! (Raft thesis §6.4): the node confirms a read index (the leader with one heartbeat round to
//! a majority, a follower by asking the leader), waits until its store has applied that far,
//! and answers from its own store. `?consistency=lease` lets a leader started with
//! `--lease-reads` skip the round within its lease; `?consistency=local` answers from this
//! node's store at once, possibly stale. A write sent to a node that is not the leader is
//! answered `307` with `Location` pointing at the leader's HTTP address (or
//! `503 {"error":"no_leader"}` when it knows none). A write whose outcome is unknown
//! (leadership lost after it was appended, or no answer within the request timeout) is
//! `504 {"error":"outcome_unknown"}`; one definitely not applied is `503`. Bad input is `400`
//! or `413` with a JSON error, and nothing is written; every error body is JSON
//! (`{"error": CODE}`), axum's own rejections included (see `router`). A write with
//! `X-Client-Id` and `X-Request-Seq` is deduplicated by the store: a retry gets the first
//! answer again, the same id and number with another request `409 {"error":"session_conflict"}`,
//! and a retry whose answer was too large to keep `409 {"error":"response_not_kept",
//! "applied_at":N}`. `HEAD` is answered by the `GET` handlers, so it only ever reads.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{delete, get, post, put};
use raft_consensus::metrics::{Histogram, HistogramSnapshot, LATENCY_BUCKETS_MICROS};
use raft_consensus::state_machine::SnapshotView;
use raft_consensus::storage::{FileSystem, StdFileSystem, WalIdentity, WalOptions, WalStorage};
use raft_consensus::transport::{PeerTls, PeerTraffic, TcpConfig, TcpTransport};

use crate::fast_lane::{KvAnswer, KvRoutes};
use crate::http_server::{self, HttpLimits};
use crate::members::{self, MembershipLock};
use crate::tls::HttpTls;
use raft_consensus::{
    Config, LogIndex, Member, MemberAddress, NodeId, ProposeError, RaftNode, ReadError, ReadPolicy,
    StateMachine,
};
use serde::Deserialize;
use serde_json::json;

use crate::base64;
use crate::command::{Command, Request, Response};
use crate::state_machine::KvStateMachine;

/// Another member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its node id.
    pub id: NodeId,
    /// Where it accepts Raft traffic.
    pub raft_addr: SocketAddr,
    /// Where it serves HTTP.
    pub http_addr: SocketAddr,
}

/// Limits on what clients may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// How long a request waits for its command to be applied before answering 504.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// When a node snapshots its store and compacts its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Take a snapshot after this many applied requests (0: never).
    pub after_entries: u64,
    /// Log entries kept below a snapshot for followers slightly behind.
    pub keep_entries: u64,
    /// Wait, too, until the command bytes applied since the last snapshot reach this multiple
    /// of its size (0: no such condition), so a large store is not rewritten every
    /// `after_entries` requests ([`Config::snapshot_log_multiple`]).
    pub log_multiple: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            after_entries: 10_000,
            keep_entries: 1_000,
            log_multiple: Config::default().snapshot_log_multiple,
        }
    }
}

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This node's id.
    pub id: NodeId,
    /// The cluster's id (checked in the log's header and in every peer handshake).
    pub cluster_id: u64,
    /// Where the write-ahead log lives.
    pub data_dir: PathBuf,
    /// Where to accept Raft traffic.
    pub raft_addr: SocketAddr,
    /// Where to serve HTTP.
    pub http_addr: SocketAddr,
    /// The other members, to bootstrap a new cluster with (ignored once the node has a stored
    /// configuration, which wins with a logged warning when they disagree).
    pub peers: Vec<Peer>,
    /// Start with an empty log and no members, and wait to be added by the leader
    /// (`POST /v1/members`), learning the members from it.
    pub join: bool,
    /// Client limits.
    pub limits: Limits,
    /// Snapshots and log compaction.
    pub snapshots: SnapshotPolicy,
    /// Serve `?consistency=lease` reads from the leader's lease (see
    /// [`Config::lease_reads`] for the clock assumption); every node of a cluster must agree.
    pub lease_reads: bool,
    /// Mutual TLS between nodes; `None`: plain TCP (`--insecure`).
    pub peer_tls: Option<PeerTls>,
    /// HTTPS (and client certificates, if the acceptor asks for them); `None`: plain HTTP.
    pub http_tls: Option<HttpTls>,
    /// The HTTP server's connection limits and timeouts.
    pub http: HttpLimits,
    /// Whether members may be added while peers are plain TCP (`--insecure`).
    pub allow_plain_peers: bool,
}

/// The store, shared between the node (which applies to it) and the HTTP handlers (which read
/// it for `?consistency=local`).
struct SharedStore(Arc<Mutex<KvStateMachine>>);

impl SharedStore {
    fn lock(&self) -> MutexGuard<'_, KvStateMachine> {
        // Every mutation of the store completes without panicking, so a poisoned lock still
        // guards a consistent store.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StateMachine for SharedStore {
    fn apply(&mut self, command: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.lock().apply(command)
    }

    fn apply_at(
        &mut self,
        index: LogIndex,
        command: &[u8],
    ) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.lock().apply_at(index, command)
    }

    fn snapshot(&self) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
        self.lock().snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.lock().restore(snapshot)
    }

    /// Clones the store's maps under the lock (constant time): the view is written out on
    /// another thread while the node goes on applying.
    fn snapshot_view(&self) -> Result<Box<dyn SnapshotView>, Box<dyn Error + Send + Sync>> {
        self.lock().snapshot_view()
    }

    /// Reads the snapshot into a new store without the lock, so that local reads go on
    /// meanwhile, then swaps it in; the old store is dropped after the lock is released.
    fn restore_from(
        &mut self,
        snapshot: &mut dyn std::io::Read,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let mut restored = KvStateMachine::new();
        restored.restore_from(snapshot)?;
        let previous = std::mem::replace(&mut *self.lock(), restored);
        drop(previous);
        Ok(())
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) node: RaftNode,
    /// The HTTP addresses of the peers given on the command line: where to redirect when
    /// the configuration has no address for the leader.
    flag_http_addrs: BTreeMap<NodeId, SocketAddr>,
    pub(crate) limits: Limits,
    /// This node's own addresses.
    pub(crate) raft_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
    /// How far behind a voter may be to take over leadership.
    pub(crate) promotion_max_lag: u64,
    /// Keeps membership changes one at a time.
    pub(crate) membership_lock: MembershipLock,
    request_latency: Arc<Histogram>,
    wal_sync_latency: Arc<Histogram>,
    traffic: Arc<PeerTraffic>,
    store: Arc<Mutex<KvStateMachine>>,
    /// `https` when HTTP is served over TLS, else `http` (for redirects and addresses).
    scheme: &'static str,
    /// Whether this node may grow its cluster: its peers are TLS, or `--insecure` allows plain.
    pub(crate) may_add_members: bool,
}

/// Runs the server until `shutdown` completes, then stops HTTP (answering requests in flight)
/// and shuts the node down (its log is synced at every write).
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_on(StdFileSystem, config, shutdown).await
}

/// Like [`run`], with the write-ahead log on the file system `fs` (raft-kv's tests freeze
/// its syncs with one).
pub async fn run_on<F: FileSystem>(
    fs: F,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let identity = WalIdentity { node_id: config.id, cluster_id: config.cluster_id };
    // A node bootstraps only on an empty data directory; restarted, it runs on its stored
    // configuration, and a joining node learns its configuration from the leader.
    let fresh = !holds_files(&config.data_dir);
    let bootstrapping = !config.join && fresh;
    let storage = WalStorage::open_on(fs, &config.data_dir, identity, WalOptions::default())
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let raft_listener = tokio::net::TcpListener::bind(config.raft_addr)
        .await
        .with_context(|| format!("listening for Raft traffic on {}", config.raft_addr))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("listening for HTTP on {}", config.http_addr))?;
    let peers = config.peers.iter().map(|peer| (peer.id, peer.raft_addr));
    if let Some(tls) = &config.peer_tls {
        tls.check_names(config.id).context("--peer-cert")?;
    }
    let tcp_config = TcpConfig {
        // Only a bootstrapping node's member list is checked against its peers'.
        members_fingerprint: if bootstrapping { None } else { Some(0) },
        tls: config.peer_tls.clone(),
        ..TcpConfig::for_identity(&identity)
    };
    let transport = TcpTransport::start(config.id, raft_listener, peers, tcp_config)
        .context("starting the Raft transport")?;
    let traffic = transport.traffic();
    let wal_sync_latency = storage.sync_latency();
    let own_http_addr = http_listener.local_addr()?;
    let member = |id: NodeId, raft_addr: SocketAddr, http_addr: SocketAddr| Member {
        id,
        address: MemberAddress {
            raft_addr: raft_addr.to_string(),
            client_addr: http_addr.to_string(),
        },
    };
    let members: Vec<Member> = if config.join {
        Vec::new()
    } else {
        config
            .peers
            .iter()
            .map(|peer| member(peer.id, peer.raft_addr, peer.http_addr))
            .chain([member(config.id, config.raft_addr, own_http_addr)])
            .collect()
    };
    let raft_config = Config {
        max_entry_bytes: config.limits.max_key_bytes
            + 2 * config.limits.max_value_bytes
            + crate::command::MAX_REQUEST_OVERHEAD_BYTES,
        snapshot_after_entries: config.snapshots.after_entries,
        snapshot_keep_entries: config.snapshots.keep_entries,
        snapshot_log_multiple: config.snapshots.log_multiple,
        lease_reads: config.lease_reads,
        ..Config::default()
    };
    let store = Arc::new(Mutex::new(KvStateMachine::new()));
    let state_machine = SharedStore(Arc::clone(&store));
    let promotion_max_lag = raft_config.promotion_max_lag;
    let node = RaftNode::start(config.id, members, raft_config, storage, transport, state_machine)
        .context("starting the Raft node")?;
    let mut flag_http_addrs: BTreeMap<NodeId, SocketAddr> =
        config.peers.iter().map(|peer| (peer.id, peer.http_addr)).collect();
    flag_http_addrs.insert(config.id, own_http_addr);
    if config.join && fresh {
        println!("raft-kv node {} waits to be added to a cluster (--join)", config.id.0);
    }
    let scheme = if config.http_tls.is_some() { "https" } else { "http" };
    println!(
        "raft-kv node {} serving HTTP on {scheme}://{}, Raft on {} ({}), data in {}",
        config.id.0,
        http_listener.local_addr()?,
        config.raft_addr,
        if config.peer_tls.is_some() { "mutual TLS" } else { "plain TCP" },
        config.data_dir.display()
    );
    let state = AppState {
        node: node.clone(),
        flag_http_addrs,
        limits: config.limits,
        raft_addr: config.raft_addr,
        http_addr: own_http_addr,
        promotion_max_lag,
        membership_lock: MembershipLock::default(),
        request_latency: Arc::default(),
        wal_sync_latency,
        traffic,
        store,
        scheme,
        may_add_members: config.peer_tls.is_some() || config.allow_plain_peers,
    };
    let state = Arc::new(state);
    let app = router(Arc::clone(&state));
    // A node that stops on its own (a storage failure, or a broken safety invariant) ends the
    // process with its reason, so that a supervisor restarts it: serving on without it would
    // only answer errors.
    let node_ended = {
        let node = node.clone();
        async move {
            node.stopped().await;
        }
    };
    let node_stopped_first = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_serving = {
        let node_stopped_first = Arc::clone(&node_stopped_first);
        async move {
            tokio::select! {
                () = shutdown => {}
                () = node_ended => {
                    node_stopped_first.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    };
    let acceptor = config.http_tls.map(|tls| tls.acceptor);
    let serving =
        http_server::serve(http_listener, app, Some(state), config.http, acceptor, stop_serving);
    tokio::select! {
        () = serving => {}
        () = drain_deadline_after_node_stopped(node.clone()) => tracing::warn!(
            "HTTP requests were still in flight {} s after the Raft node stopped; exiting without them",
            NODE_STOPPED_DRAIN.as_secs()
        ),
    }
    node.shutdown().await.context("the Raft node stopped")?;
    if node_stopped_first.load(std::sync::atomic::Ordering::SeqCst) {
        anyhow::bail!("the Raft node stopped on its own");
    }
    Ok(())
}

/// How long requests in flight may still take once the node stopped on its own, before the
/// process exits without them: a supervisor must see it exit promptly.
const NODE_STOPPED_DRAIN: Duration = Duration::from_secs(3);

/// Completes [`NODE_STOPPED_DRAIN`] after `node` stopped (never while it runs).
async fn drain_deadline_after_node_stopped(node: RaftNode) {
    node.stopped().await;
    tokio::time::sleep(NODE_STOPPED_DRAIN).await;
}

/// The API's routes. Only `PUT` and `DELETE` on `/v1/kv/{key}` and `POST` on `/v1/cas/{key}`
/// propose log entries (membership changes aside). axum answers `HEAD` with the `GET` handler
/// (without the body), so `HEAD /v1/kv/{key}` is a read; on a route without `GET` it is
/// `405`, like every other method a route lacks. Every error body is JSON
/// (`{"error": CODE}`): unknown paths are `404 {"error":"unknown_path"}`, other methods
/// `405 {"error":"method_not_allowed"}`, and the HTTP server turns any other error that is not
/// JSON (a rejection of axum's own) into one ([`http_server::json_error_body`]).
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/kv/", put(empty_key).get(empty_key).delete(empty_key))
        .route("/v1/kv/{key}", put(put_key).get(get_key).delete(delete_key))
        .route("/v1/cas/", post(empty_key))
        .route("/v1/cas/{key}", post(compare_and_swap))
        .route("/v1/status", get(status))
        .route("/v1/members", get(members::list_members).post(members::add_member))
        .route("/v1/members/{id}", delete(members::remove_member))
        .route("/v1/leader", post(members::transfer_leader))
        .route("/metrics", get(metrics))
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        // One allocation for the whole app: every request's handler gets a reference count.
        .with_state(state)
}

async fn unknown_path() -> HttpResponse {
    error(StatusCode::NOT_FOUND, "unknown_path").into_response()
}

async fn method_not_allowed() -> HttpResponse {
    error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").into_response()
}

/// Why a request gets no result: an error with a JSON body, or a redirect to the leader.
pub(crate) enum Rejection {
    Error(StatusCode, &'static str),
    Redirect(HeaderValue),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> HttpResponse {
        match self {
            Rejection::Error(status, code) => {
                (status, axum::Json(json!({ "error": code }))).into_response()
            }
            Rejection::Redirect(location) => {
                (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
            }
        }
    }
}

pub(crate) fn error(status: StatusCode, code: &'static str) -> Rejection {
    Rejection::Error(status, code)
}

async fn empty_key() -> HttpResponse {
    error(StatusCode::BAD_REQUEST, "empty_key").into_response()
}

/// The key from the path: `400 {"error":"invalid_key"}` when axum cannot give it as text
/// (percent-encoded bytes that are not UTF-8).
fn path_key(path: Result<Path<String>, PathRejection>) -> Result<String, Rejection> {
    path.map(|Path(key)| key).map_err(|_| error(StatusCode::BAD_REQUEST, "invalid_key"))
}

fn check_key(state: &AppState, key: &str) -> Result<(), Rejection> {
    if key.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "empty_key"));
    }
    if key.len() > state.limits.max_key_bytes {
        return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "key_too_large"));
    }
    Ok(())
}

/// Checks a write's key and reads its optional session.
fn check_write(
    state: &AppState,
    key: &str,
    headers: &HeaderMap,
) -> Result<Option<(u64, u64)>, Rejection> {
    check_key(state, key)?;
    session(headers)
}

/// The optional deduplication session from `X-Client-Id` and `X-Request-Seq`.
fn session(headers: &HeaderMap) -> Result<Option<(u64, u64)>, Rejection> {
    let number = |name: &str| -> Result<Option<u64>, Rejection> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, "invalid_session_header")),
        }
    };
    match (number("x-client-id")?, number("x-request-seq")?) {
        (Some(client), Some(sequence)) => Ok(Some((client, sequence))),
        (None, None) => Ok(None),
        _ => Err(error(StatusCode::BAD_REQUEST, "incomplete_session_headers")),
    }
}

/// Replicates `request` and returns the store's response, or the HTTP answer that explains
/// why there is none.
async fn submit(state: &AppState, uri: &Uri, request: Request) -> Result<Response, Rejection> {
    submit_encoded(state, request_target(uri), request.encode()).await
}

/// [`submit`] for a request already encoded.
async fn submit_encoded(
    state: &AppState,
    target: &str,
    request: Vec<u8>,
) -> Result<Response, Rejection> {
    let started = Instant::now();
    let proposal = state.node.propose(request);
    let outcome = tokio::time::timeout(state.limits.request_timeout, proposal).await;
    state.request_latency.record(started.elapsed());
    match outcome {
        Err(_) => Err(error(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown")),
        Ok(Ok(bytes)) => Response::decode(&bytes)
            .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "undecodable_response")),
        Ok(Err(ProposeError::NotLeader { leader_hint })) => {
            Err(redirect_to(state, leader_hint, target))
        }
        Ok(Err(ProposeError::OutcomeUnknown { .. })) => {
            Err(error(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"))
        }
        Ok(Err(ProposeError::TooLarge { .. })) => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"))
        }
        Ok(Err(ProposeError::Apply(_))) => Err(error(StatusCode::BAD_REQUEST, "invalid_command")),
        Ok(Err(ProposeError::Shutdown | ProposeError::Storage(_))) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"))
        }
        Ok(Err(ProposeError::LeadershipTransfer { .. })) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "leadership_transfer"))
        }
    }
}

/// `307` to the same path on the leader, or `503` when no leader is known.
pub(crate) fn redirect(state: &AppState, leader: Option<NodeId>, uri: &Uri) -> Rejection {
    redirect_to(state, leader, request_target(uri))
}

/// [`redirect`] for the request target (path and query) `target`.
fn redirect_to(state: &AppState, leader: Option<NodeId>, target: &str) -> Rejection {
    let Some(address) = leader.and_then(|leader| http_addr_of(state, leader)) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no_leader");
    };
    let location = format!("{}://{address}{target}", state.scheme);
    match HeaderValue::from_str(&location) {
        Ok(value) => Rejection::Redirect(value),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
    }
}

/// A request's path and query, as the client sent them.
fn request_target(uri: &Uri) -> &str {
    uri.path_and_query().map_or(uri.path(), |path| path.as_str())
}

/// Where member `id` serves HTTP: its address in the configuration, else the one its
/// `--peer` flag gave.
fn http_addr_of(state: &AppState, id: NodeId) -> Option<SocketAddr> {
    let configuration = state.node.status().configuration;
    configuration
        .address(id)
        .and_then(|address| address.client_addr.parse().ok())
        .or_else(|| state.flag_http_addrs.get(&id).copied())
}

/// Whether `directory` exists and holds anything (a node's data from an earlier run).
fn holds_files(directory: &std::path::Path) -> bool {
    std::fs::read_dir(directory).is_ok_and(|mut entries| entries.next().is_some())
}

async fn put_key(
    State(state): State<Arc<AppState>>,
    key: Result<Path<String>, PathRejection>,
    request: axum::extract::Request,
) -> HttpResponse {
    // The request whole rather than `Uri`, `HeaderMap` and `Body` extractors, which would
    // clone the URI and every header.
    let (parts, body) = request.into_parts();
    let (key, session) = match path_key(key)
        .and_then(|key| check_write(&state, &key, &parts.headers).map(|session| (key, session)))
    {
        Ok(checked) => checked,
        Err(answer) => return answer.into_response(),
    };
    let Ok(value) = to_bytes(body, state.limits.max_value_bytes).await else {
        return value_too_large().into_response();
    };
    write_value(&state, &key, session, &value, request_target(&parts.uri)).await.into_response()
}

fn value_too_large() -> Rejection {
    error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large")
}

/// `PUT /v1/kv/{key}` once the key is checked: writes `value` (both lanes: `put_key` and
/// [`KvRoutes::put`]).
async fn write_value(
    state: &AppState,
    key: &str,
    session: Option<(u64, u64)>,
    value: &[u8],
    target: &str,
) -> KvAnswer {
    if value.len() > state.limits.max_value_bytes {
        return value_too_large().into();
    }
    let command = Request::encode_put(session, key.as_bytes(), value);
    match submit_encoded(state, target, command).await {
        Ok(Response::Written { index }) => KvAnswer::Written(index),
        Ok(other) => KvAnswer::Other(unexpected(other)),
        Err(answer) => answer.into(),
    }
}

/// The HTTP/1.1 fast lane's two requests ([`crate::fast_lane`]), by the same code as their
/// routes: `put_key` and `get_key` extract what these are given.
impl KvRoutes for AppState {
    async fn put(&self, key: &str, value: &[u8], target: &str) -> KvAnswer {
        if let Err(answer) = check_key(self, key) {
            return answer.into();
        }
        write_value(self, key, None, value, target).await
    }

    async fn get(&self, key: &str, consistency: Option<&str>) -> KvAnswer {
        if let Err(answer) = check_key(self, key) {
            return answer.into();
        }
        read_value(self, key, consistency).await
    }
}

impl From<Rejection> for KvAnswer {
    fn from(rejection: Rejection) -> KvAnswer {
        KvAnswer::Other(rejection.into_response())
    }
}

/// The query of a read.
#[derive(Deserialize)]
struct ReadOptions {
    /// Absent or `linearizable`: ReadIndex; `lease`: the leader's lease when the node runs
    /// with leases (ReadIndex otherwise); `local`: this node's store at once, possibly stale.
    consistency: Option<String>,
}

/// Waits until a linearizable read may be served from this node's store: returns the read
/// index, or the HTTP answer that explains why the read cannot be served.
async fn confirm_read(state: &AppState, policy: ReadPolicy) -> Result<LogIndex, Rejection> {
    let started = Instant::now();
    let confirmed =
        tokio::time::timeout(state.limits.request_timeout, state.node.read_index(policy));
    let outcome = confirmed.await;
    state.request_latency.record(started.elapsed());
    match outcome {
        Ok(Ok(read_index)) => Ok(read_index),
        Ok(Err(ReadError::NotLeader { .. })) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "no_leader"))
        }
        Ok(Err(ReadError::LeadershipLost)) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "leadership_lost"))
        }
        Ok(Err(ReadError::TooManyPending { .. })) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "too_many_reads"))
        }
        Err(_) | Ok(Err(ReadError::Timeout)) => {
            Err(error(StatusCode::GATEWAY_TIMEOUT, "read_timeout"))
        }
        Ok(Err(ReadError::Shutdown | ReadError::Query(_))) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"))
        }
    }
}

async fn get_key(
    State(state): State<Arc<AppState>>,
    key: Result<Path<String>, PathRejection>,
    options: Result<Query<ReadOptions>, QueryRejection>,
) -> HttpResponse {
    let key = match path_key(key).and_then(|key| check_key(&state, &key).map(|()| key)) {
        Ok(key) => key,
        Err(answer) => return answer.into_response(),
    };
    // A query that does not parse (`consistency` given twice, bad percent-encoding).
    let Ok(Query(options)) = options else {
        return error(StatusCode::BAD_REQUEST, "bad_query").into_response();
    };
    read_value(&state, &key, options.consistency.as_deref()).await.into_response()
}

/// `GET /v1/kv/{key}` once the key is checked, with `consistency` from the query (both lanes:
/// `get_key` and [`KvRoutes::get`]).
async fn read_value(state: &AppState, key: &str, consistency: Option<&str>) -> KvAnswer {
    let policy = match consistency {
        None | Some("linearizable") => Some(ReadPolicy::ReadIndex),
        Some("lease") => Some(ReadPolicy::Lease),
        Some("local") => None,
        Some(_) => return error(StatusCode::BAD_REQUEST, "bad_consistency").into(),
    };
    let (index_header, index) = match policy {
        None => ("x-raft-applied-index", state.node.status().applied_index.0),
        Some(policy) => match confirm_read(state, policy).await {
            Ok(read_index) => ("x-raft-read-index", read_index.0),
            Err(answer) => return answer.into(),
        },
    };
    // The store has applied through the read index (or, for a local read, whatever it has).
    let value = state
        .store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_shared(key.as_bytes());
    match value {
        // The body shares the stored value: no copy, and the lock is already released.
        Some(value) => {
            KvAnswer::Value { index_header, index, value: bytes::Bytes::from_owner(value) }
        }
        None => KvAnswer::Other(
            (
                StatusCode::NOT_FOUND,
                [(index_header, HeaderValue::from(index))],
                axum::Json(json!({ "error": "not_found" })),
            )
                .into_response(),
        ),
    }
}

async fn delete_key(
    State(state): State<Arc<AppState>>,
    key: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> HttpResponse {
    let (key, session) = match path_key(key)
        .and_then(|key| check_write(&state, &key, &headers).map(|session| (key, session)))
    {
        Ok(checked) => checked,
        Err(answer) => return answer.into_response(),
    };
    let request = Request { session, command: Command::Delete { key: key.into_bytes() } };
    match submit(&state, &uri, request).await {
        Ok(Response::Deleted { existed, index }) => {
            axum::Json(json!({ "index": index, "deleted": existed })).into_response()
        }
        Ok(other) => unexpected(other),
        Err(answer) => answer.into_response(),
    }
}

/// The body of `POST /v1/cas/{key}`: each value as a JSON string (`expected`, `new`), or,
/// for bytes that are not UTF-8, in base64 (`expected_base64`, `new_base64`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    /// The value the key must hold; `null` (or no `expected` field at all) means the key must
    /// be absent. `Some(None)` is an explicit `null`.
    #[serde(default, deserialize_with = "present")]
    expected: Option<Option<String>>,
    /// `expected` in base64; at most one of the two may be given.
    #[serde(default, deserialize_with = "present")]
    expected_base64: Option<Option<String>>,
    /// The value to write.
    new: Option<String>,
    /// `new` in base64; exactly one of the two must be given.
    new_base64: Option<String>,
}

/// Deserializes a field that is there (even as `null`) as `Some`, so that with
/// `#[serde(default)]` an absent field (`None`) differs from `null` (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl CasBody {
    /// `(expected, new)` as bytes: `400` for both forms of one value (`conflicting_fields`),
    /// no `new` at all (`malformed_json`) or bad base64 (`invalid_base64`).
    fn into_values(self) -> Result<(Option<Vec<u8>>, Vec<u8>), Rejection> {
        let decode = |text: &str| {
            base64::decode(text).map_err(|_| error(StatusCode::BAD_REQUEST, "invalid_base64"))
        };
        let conflicting = || error(StatusCode::BAD_REQUEST, "conflicting_fields");
        let new = match (self.new, self.new_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => decode(&encoded)?,
            (None, None) => return Err(error(StatusCode::BAD_REQUEST, "malformed_json")),
            (Some(_), Some(_)) => return Err(conflicting()),
        };
        let expected = match (self.expected, self.expected_base64) {
            (None, None) => None,
            (Some(text), None) => text.map(String::into_bytes),
            (None, Some(encoded)) => encoded.as_deref().map(decode).transpose()?,
            (Some(_), Some(_)) => return Err(conflicting()),
        };
        Ok((expected, new))
    }
}

/// The largest `POST /v1/cas/{key}` body read: both values at `max_value_bytes` in base64,
/// plus 1 KiB for the field names and the JSON around them. (A JSON string heavy with escapes
/// can need more than its base64 form: send such values in base64.)
fn max_cas_body_bytes(max_value_bytes: usize) -> usize {
    2 * base64::encoded_len(max_value_bytes) + 1024
}

async fn compare_and_swap(
    State(state): State<Arc<AppState>>,
    key: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let (key, session) = match path_key(key)
        .and_then(|key| check_write(&state, &key, &headers).map(|session| (key, session)))
    {
        Ok(checked) => checked,
        Err(answer) => return answer.into_response(),
    };
    let Ok(bytes) = to_bytes(body, max_cas_body_bytes(state.limits.max_value_bytes)).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large").into_response();
    };
    let Ok(cas) = serde_json::from_slice::<CasBody>(&bytes) else {
        return error(StatusCode::BAD_REQUEST, "malformed_json").into_response();
    };
    let (expected, new) = match cas.into_values() {
        Ok(values) => values,
        Err(answer) => return answer.into_response(),
    };
    let too_large = |value: &Vec<u8>| value.len() > state.limits.max_value_bytes;
    if too_large(&new) || expected.as_ref().is_some_and(too_large) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large").into_response();
    }
    let command = Command::CompareAndSwap { key: key.into_bytes(), expected, new };
    match submit(&state, &uri, Request { session, command }).await {
        Ok(Response::Swapped { index }) => {
            axum::Json(json!({ "swapped": true, "index": index })).into_response()
        }
        Ok(Response::NotSwapped { current }) => {
            // `current` as text (bytes that are not UTF-8 replaced by U+FFFD) and exactly, in
            // base64.
            let text = current.as_deref().map(|value| String::from_utf8_lossy(value).into_owned());
            let encoded = current.as_deref().map(base64::encode);
            let body = json!({ "swapped": false, "current": text, "current_base64": encoded });
            (StatusCode::CONFLICT, axum::Json(body)).into_response()
        }
        // A retry of a compare-and-swap whose answer was not kept: only a not-swapped answer
        // can be too large to keep (a swapped one is 9 bytes), so it did not swap.
        Ok(Response::NotKept { applied_at }) => (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "swapped": false,
                "error": "response_not_kept",
                "applied_at": applied_at,
            })),
        )
            .into_response(),
        Ok(other) => unexpected(other),
        Err(answer) => answer.into_response(),
    }
}

/// `GET /v1/status`. A node that stopped (a storage failure: the process is about to exit)
/// reports `"state":"stopped"`, `"role":"stopped"`, no leader and no followers, and why in
/// `"stopped_reason"`, never the role it last had; its indexes are its last ones.
async fn status(State(state): State<Arc<AppState>>) -> HttpResponse {
    let mut status = state.node.status();
    // Stopped either way: before this status was read, or as it shows (the node stopped
    // between the two calls).
    let running = state.node.is_running() && status.role != raft_consensus::Role::Stopped;
    if !running {
        status.leader_id = None;
        status.followers.clear();
    }
    let role = if running { status.role.to_string() } else { String::from("stopped") };
    let stopped_reason = state.node.fatal_error().map(|error| error.to_string());
    let leader_http = status
        .leader_id
        .and_then(|leader| http_addr_of(&state, leader))
        .map(|address| format!("{}://{address}", state.scheme));
    let configuration = &status.configuration;
    let ids = |ids: &[NodeId]| ids.iter().map(|id| id.0).collect::<Vec<u64>>();
    let followers: Vec<_> = status
        .followers
        .iter()
        .map(|(id, match_index)| json!({ "id": id.0, "match_index": match_index.0 }))
        .collect();
    axum::Json(json!({
        "id": status.id.0,
        "state": if running { "running" } else { "stopped" },
        "stopped_reason": stopped_reason,
        "role": role,
        "term": status.term.0,
        "leader_id": status.leader_id.map(|leader| leader.0),
        "leader_http": leader_http,
        "disk_stalled_for_ms": status.disk_stalled_for_ms,
        "commit_index": status.commit_index.0,
        "applied_index": status.applied_index.0,
        "last_log_index": status.last_log_index.0,
        "first_log_index": status.first_log_index.0,
        "snapshot_index": status.snapshot_index.0,
        "followers": followers,
        "configuration": {
            "voters": ids(configuration.voters()),
            "learners": configuration.learners().iter().map(|id| id.0).collect::<Vec<u64>>(),
            "joint": configuration.is_joint(),
            "outgoing_voters": configuration.outgoing_voters().map(ids),
            "change_in_progress": status.membership_change_in_progress,
        },
    }))
    .into_response()
}

/// A response that is not the request's own result: a retry refused or answered from its
/// client session (`409`), or, for any other kind, `500 {"error":"unexpected_response"}`.
fn unexpected(response: Response) -> HttpResponse {
    match response {
        // The request's sequence number is older than the client's last one.
        Response::StaleRequest { last_sequence } => (
            StatusCode::CONFLICT,
            axum::Json(json!({ "error": "stale_request", "last_sequence": last_sequence })),
        )
            .into_response(),
        // The client id and sequence number were used for another command.
        Response::SessionConflict => {
            error(StatusCode::CONFLICT, "session_conflict").into_response()
        }
        // A retry of a request applied at `applied_at` whose answer was too large to keep.
        Response::NotKept { applied_at } => (
            StatusCode::CONFLICT,
            axum::Json(json!({ "error": "response_not_kept", "applied_at": applied_at })),
        )
            .into_response(),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected_response").into_response(),
    }
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(state): State<Arc<AppState>>) -> HttpResponse {
    let node = state.node.metrics();
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    metric(
        "raft_proposals_total",
        "counter",
        "Proposals appended by this node as leader.",
        node.proposals,
    );
    metric(
        "raft_proposals_refused_total",
        "counter",
        "Proposals refused (not leader, too large).",
        node.proposals_refused,
    );
    metric(
        "raft_commits_total",
        "counter",
        "Log entries this node learned to be committed.",
        node.entries_committed,
    );
    metric(
        "raft_applies_total",
        "counter",
        "Commands applied to the state machine.",
        node.commands_applied,
    );
    metric(
        "raft_elections_total",
        "counter",
        "Elections this node started.",
        node.elections_started,
    );
    metric(
        "raft_protocol_violations_total",
        "counter",
        "Peer messages refused because no correct peer sends them (a buggy or compromised peer).",
        node.protocol_violations,
    );
    metric(
        "raft_disk_stall_step_downs_total",
        "counter",
        "Times this node stepped down as leader because a write waited max_sync_stall_ms for its sync.",
        node.disk_stall_step_downs,
    );
    metric(
        "raft_leader_changes_total",
        "counter",
        "Changes of the leader this node knows.",
        node.leader_changes,
    );
    metric("raft_term", "gauge", "The current term.", node.term);
    let status = state.node.status();
    metric(
        "raft_disk_stalled",
        "gauge",
        "1 while this node's oldest write has waited max_sync_stall_ms or more for its sync, else 0.",
        u64::from(status.disk_stalled_for_ms.is_some()),
    );
    let configuration = status.configuration;
    metric(
        "raft_voters",
        "gauge",
        "Voters in the configuration this node uses (the incoming ones during a joint change).",
        configuration.voters().len() as u64,
    );
    metric(
        "raft_learners",
        "gauge",
        "Learners (non-voting members) in the configuration this node uses.",
        configuration.learners().len() as u64,
    );
    metric(
        "raft_configuration_joint",
        "gauge",
        "1 while the configuration is joint (a voter change half done), else 0.",
        u64::from(configuration.is_joint()),
    );
    metric(
        "raft_snapshots_stored_total",
        "counter",
        "Snapshots this node took of its store and stored.",
        node.snapshots_stored,
    );
    metric(
        "raft_snapshots_installed_total",
        "counter",
        "Snapshots this node received from a leader and installed.",
        node.snapshots_installed,
    );
    metric(
        "raft_snapshot_index",
        "gauge",
        "The last log index covered by this node's latest snapshot.",
        node.snapshot_index,
    );
    histogram(
        &mut text,
        "raft_kv_request_duration_seconds",
        "Time to replicate and apply a request.",
        &state.request_latency.snapshot(),
    );
    histogram(
        &mut text,
        "raft_wal_sync_duration_seconds",
        "Time of one write-ahead log write and fdatasync.",
        &state.wal_sync_latency.snapshot(),
    );
    let _ = writeln!(
        text,
        "# HELP raft_peer_bytes_sent_total Bytes sent to a peer.\n# TYPE raft_peer_bytes_sent_total counter"
    );
    let traffic = state.traffic.snapshot();
    for (peer, sent, _) in &traffic {
        let _ = writeln!(text, "raft_peer_bytes_sent_total{{peer=\"{}\"}} {sent}", peer.0);
    }
    let _ = writeln!(
        text,
        "# HELP raft_peer_bytes_received_total Bytes received from a peer.\n# TYPE raft_peer_bytes_received_total counter"
    );
    for (peer, _, received) in &traffic {
        let _ = writeln!(text, "raft_peer_bytes_received_total{{peer=\"{}\"}} {received}", peer.0);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn histogram(text: &mut String, name: &str, help: &str, snapshot: &HistogramSnapshot) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, count) in LATENCY_BUCKETS_MICROS.iter().zip(&snapshot.cumulative) {
        let _ = writeln!(text, "{name}_bucket{{le=\"{}\"}} {count}", *bound as f64 / 1e6);
    }
    let _ = writeln!(text, "{name}_bucket{{le=\"+Inf\"}} {}", snapshot.count);
    let _ = writeln!(text, "{name}_sum {}", snapshot.sum_micros as f64 / 1e6);
    let _ = writeln!(text, "{name}_count {}", snapshot.count);
}

#[cfg(test)]
mod tests {
    //! `GET /v1/status` of a node whose storage failed: stopped, with the reason, never the
    //! role it last had.

    use std::sync::atomic::{AtomicBool, Ordering};

    use raft_consensus::core::InitialState;
    use raft_consensus::storage::{MemoryStorage, Storage};
    use raft_consensus::transport::ChannelNetwork;
    use raft_consensus::{Entry, HardState, LogId, StorageError};

    use super::*;

    /// Memory storage whose appends fail with `ENOSPC` once `full` is set.
    struct FillingDisk {
        inner: MemoryStorage,
        full: Arc<AtomicBool>,
    }

    impl Storage for FillingDisk {
        type Snapshots = MemoryStorage;

        fn load(&mut self) -> Result<InitialState, StorageError> {
            self.inner.load()
        }
        fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
            if self.full.load(Ordering::SeqCst) {
                let error = std::io::Error::from(std::io::ErrorKind::StorageFull);
                return Err(StorageError::io("writing the log", error));
            }
            self.inner.append(entries)
        }
        fn reset_log(&mut self, base: LogId) -> Result<(), StorageError> {
            self.inner.reset_log(base)
        }
        fn compact(&mut self, through: LogIndex) -> Result<(), StorageError> {
            self.inner.compact(through)
        }
        fn snapshot_store(&self) -> MemoryStorage {
            self.inner.snapshot_store()
        }
        fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
            self.inner.save_hard_state(hard_state)
        }
        fn save_members(&mut self, members: &[NodeId]) -> Result<(), StorageError> {
            self.inner.save_members(members)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            self.inner.sync()
        }
    }

    #[test]
    fn the_shared_store_forwards_snapshot_views_and_streamed_restores() {
        let put = |key: &str| {
            Request {
                session: Some((1, key.len() as u64)),
                command: Command::Put { key: key.into(), value: b"value".to_vec() },
            }
            .encode()
        };
        let store = Arc::new(Mutex::new(KvStateMachine::new()));
        let mut shared = SharedStore(Arc::clone(&store));
        shared.apply_at(LogIndex(1), &put("a")).expect("applies");
        let view = shared.snapshot_view().expect("a view");
        shared.apply_at(LogIndex(2), &put("bb")).expect("applies");
        let mut written = Vec::new();
        view.write_to(&mut written).expect("writes");
        let mut expected = KvStateMachine::new();
        expected.apply_at(LogIndex(1), &put("a")).expect("applies");
        assert_eq!(written, expected.snapshot().expect("a snapshot"), "the view is as taken");

        let local = Arc::clone(&store);
        shared.restore_from(&mut written.as_slice()).expect("restores");
        assert_eq!(*local.lock().expect("the lock"), expected);
        // A truncated snapshot leaves the shared store as it was.
        let before = local.lock().expect("the lock").clone();
        assert!(shared.restore_from(&mut &written[..written.len() - 1]).is_err());
        assert_eq!(*local.lock().expect("the lock"), before);
    }

    async fn status_json(state: &AppState) -> serde_json::Value {
        let response = status(State(Arc::new(state.clone()))).await;
        let body = to_bytes(response.into_body(), usize::MAX).await.expect("the body");
        serde_json::from_slice(&body).expect("JSON")
    }

    #[tokio::test]
    async fn a_leader_whose_disk_fills_reports_stopped_with_the_reason() {
        let full = Arc::new(AtomicBool::new(false));
        let storage = FillingDisk { inner: MemoryStorage::new(), full: Arc::clone(&full) };
        let store = Arc::new(Mutex::new(KvStateMachine::new()));
        let network = ChannelNetwork::new();
        let node = RaftNode::start(
            NodeId(1),
            [NodeId(1)],
            Config::default(),
            storage,
            network.join(NodeId(1)),
            SharedStore(Arc::clone(&store)),
        )
        .expect("the node starts");
        let address: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        let state = AppState {
            node: node.clone(),
            flag_http_addrs: BTreeMap::new(),
            limits: Limits::default(),
            raft_addr: address,
            http_addr: address,
            promotion_max_lag: 0,
            membership_lock: MembershipLock::default(),
            request_latency: Arc::default(),
            wal_sync_latency: Arc::default(),
            traffic: Arc::default(),
            store,
            scheme: "http",
            may_add_members: false,
        };
        node.wait_for(Duration::from_secs(30), |status| status.is_leader()).await.expect("leads");
        let running = status_json(&state).await;
        assert_eq!(running["state"], "running");
        assert_eq!(running["role"], "Leader");
        assert_eq!(running["stopped_reason"], serde_json::Value::Null);

        full.store(true, Ordering::SeqCst);
        let request = Request { session: None, command: Command::Delete { key: b"k".to_vec() } };
        assert!(node.propose(request.encode()).await.is_err(), "the write cannot be stored");
        let stopped = status_json(&state).await;
        assert_eq!(stopped["state"], "stopped", "{stopped}");
        assert_eq!(stopped["role"], "stopped", "{stopped}");
        assert_eq!(stopped["leader_id"], serde_json::Value::Null, "{stopped}");
        let reason = stopped["stopped_reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("storage failed: disk full ("), "{stopped}");
        for field in ["id", "term", "commit_index", "applied_index", "last_log_index"] {
            assert!(stopped[field].is_u64(), "{field} is kept: {stopped}");
        }
        assert!(node.shutdown().await.is_err());
    }
}
