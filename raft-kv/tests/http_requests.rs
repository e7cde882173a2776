//! The request rules of the HTTP API (#15), each against a one-node `raft-kv` server in this
//! process (HTTP and TCP for real): client sessions refuse a reused id and sequence number
//! with another command, a retry whose answer was too large to keep says where it was
//! applied, compare-and-swap takes two values at the limit and bytes that are not UTF-8, every
//! error body is JSON, and `HEAD` (or any method a route lacks) never writes to the log.
//! Waits are for conditions, with deadlines.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::ports::free_addresses;
use raft_consensus::NodeId;
use raft_kv::base64;
use raft_kv::client::{Http2Connection, HttpReply, request};
use raft_kv::server::{Limits, ServerConfig, SnapshotPolicy, run};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(20);

/// A one-node cluster serving HTTP, stopped (and checked to stop cleanly) by [`Node::stop`].
struct Node {
    http: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
    config: ServerConfig,
    directory: tempfile::TempDir,
}

impl Node {
    /// Starts a node with `limits` and waits until it leads.
    async fn start(limits: Limits) -> Node {
        Node::start_with(limits, SnapshotPolicy::default()).await
    }

    /// Starts a node with `limits` and `snapshots` and waits until it leads. Its ports are
    /// found free and released before the node binds them (`common/ports.rs`), so another
    /// process may still take one in between: a node that stops before leading is started
    /// again on fresh ports.
    async fn start_with(limits: Limits, snapshots: SnapshotPolicy) -> Node {
        let mut failures = Vec::new();
        while failures.len() < 3 {
            let addresses = free_addresses(2);
            let directory = tempfile::tempdir().unwrap();
            let config = ServerConfig {
                id: NodeId(1),
                cluster_id: 15,
                data_dir: directory.path().join("node1"),
                raft_addr: addresses[0],
                http_addr: addresses[1],
                peers: Vec::new(),
                join: false,
                limits: limits.clone(),
                snapshots: snapshots.clone(),
                lease_reads: false,
                peer_tls: None,
                http_tls: None,
                http: raft_kv::http_server::HttpLimits::default(),
                allow_plain_peers: true,
            };
            match Node::try_run(config, directory).await {
                Ok(node) => return node,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("the node stopped before leading, three times: {failures:?}");
    }

    /// Runs a node with `config` (data in `directory`) and waits until it leads.
    async fn run(config: ServerConfig, directory: tempfile::TempDir) -> Node {
        Node::try_run(config, directory).await.unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// [`Node::run`], or why the node stopped before it led.
    async fn try_run(config: ServerConfig, directory: tempfile::TempDir) -> Result<Node, String> {
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(run(config.clone(), async move {
            let _ = stopped.await;
        }));
        let node = Node { http: config.http_addr, stop, server, config, directory };
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < DEADLINE, "the node did not become leader");
            if node.server.is_finished() {
                return Err(format!("the node stopped before it led: {:?}", node.server.await));
            }
            let reply = request(node.http, "GET", "/v1/status", &[], b"", DEADLINE).await;
            if let Ok(reply) = reply
                && reply.json().is_ok_and(|status| status["role"] == "Leader")
            {
                return Ok(node);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Stops the node and starts it again on its data directory.
    async fn restart(self) -> Node {
        let (config, directory) = (self.config.clone(), self.directory);
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
        Node::run(config, directory).await
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }

    /// One request with `headers`, answered within the deadline.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> HttpReply {
        request(self.http, method, path, headers, body, DEADLINE).await.expect("the node answers")
    }

    async fn http(&self, method: &str, path: &str, body: &[u8]) -> HttpReply {
        self.send(method, path, &[], body).await
    }

    /// The node's `last_log_index` and `raft_proposals_total`: what a write would move.
    async fn log_position(&self) -> (u64, u64) {
        let status = self.http("GET", "/v1/status", b"").await.json().unwrap();
        let metrics = self.http("GET", "/metrics", b"").await;
        let proposals = String::from_utf8_lossy(&metrics.body)
            .lines()
            .find_map(|line| line.strip_prefix("raft_proposals_total ")?.parse().ok())
            .expect("/metrics has raft_proposals_total");
        (status["last_log_index"].as_u64().unwrap(), proposals)
    }
}

/// Request headers, as [`request`] takes them.
type Headers<'a> = &'a [(&'a str, String)];

/// A request and the JSON error it must get.
struct Refused<'a> {
    method: &'a str,
    path: &'a str,
    headers: Headers<'a>,
    body: &'a [u8],
    status: u16,
    code: &'a str,
}

fn refused<'a>(
    method: &'a str,
    path: &'a str,
    headers: Headers<'a>,
    body: &'a [u8],
    status: u16,
    code: &'a str,
) -> Refused<'a> {
    Refused { method, path, headers, body, status, code }
}

fn session(client: u64, sequence: u64) -> [(&'static str, String); 2] {
    [("X-Client-Id", client.to_string()), ("X-Request-Seq", sequence.to_string())]
}

fn text(reply: &HttpReply) -> String {
    format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_session_with_another_command_is_refused() {
    let node = Node::start(Limits::default()).await;
    let first = node.send("PUT", "/v1/kv/k", &session(42, 1), b"v").await;
    assert_eq!(first.status, 200, "{}", text(&first));
    // The true retry is answered from the session: the same index, nothing applied again.
    let retry = node.send("PUT", "/v1/kv/k", &session(42, 1), b"v").await;
    assert_eq!((retry.status, retry.json().unwrap()), (200, first.json().unwrap()));
    let cas_body = br#"{"expected":"v","new":"w"}"#.as_slice();
    for (method, path, body) in [
        ("PUT", "/v1/kv/k", b"another value".as_slice()),
        ("PUT", "/v1/kv/other", b"v".as_slice()),
        ("DELETE", "/v1/kv/k", b"".as_slice()),
        ("POST", "/v1/cas/k", cas_body),
    ] {
        let refused = node.send(method, path, &session(42, 1), body).await;
        assert_eq!(refused.status, 409, "{method} {path}: {}", text(&refused));
        assert_eq!(refused.body, br#"{"error":"session_conflict"}"#, "{method} {path}");
        assert_eq!(refused.header("content-type"), Some("application/json"));
    }
    let value = node.http("GET", "/v1/kv/k", b"").await;
    assert_eq!((value.status, value.body.as_slice()), (200, b"v".as_slice()));
    assert_eq!(node.http("GET", "/v1/kv/other", b"").await.status, 404);
    // A compare-and-swap's retry with other arguments is refused too.
    let swapped = node.send("POST", "/v1/cas/k", &session(42, 2), cas_body).await;
    assert_eq!(swapped.status, 200, "{}", text(&swapped));
    let other = br#"{"expected":"v","new":"x"}"#;
    let refused = node.send("POST", "/v1/cas/k", &session(42, 2), other).await;
    assert_eq!(
        (refused.status, refused.body.as_slice()),
        (409, br#"{"error":"session_conflict"}"#.as_slice())
    );
    let retry = node.send("POST", "/v1/cas/k", &session(42, 2), cas_body).await;
    assert_eq!((retry.status, retry.json().unwrap()), (200, swapped.json().unwrap()));
    assert_eq!(node.http("GET", "/v1/kv/k", b"").await.body, b"w");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_digest_survives_a_snapshot_and_a_restart() {
    let snapshots =
        SnapshotPolicy { after_entries: 3, keep_entries: 0, ..SnapshotPolicy::default() };
    let node = Node::start_with(Limits::default(), snapshots).await;
    let first = node.send("PUT", "/v1/kv/k", &session(9, 1), b"v").await;
    assert_eq!(first.status, 200, "{}", text(&first));
    let index = first.json().unwrap()["index"].as_u64().unwrap();
    for number in 0..4 {
        let written = node.http("PUT", &format!("/v1/kv/filler{number}"), b"x").await;
        assert_eq!(written.status, 200, "{}", text(&written));
    }
    // Wait until a snapshot covers the session's write, so the restart restores it from there.
    let started = Instant::now();
    loop {
        let status = node.http("GET", "/v1/status", b"").await.json().unwrap();
        if status["snapshot_index"].as_u64().unwrap() > index {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "no snapshot taken: {status}");
        tokio::task::yield_now().await;
    }
    let node = node.restart().await;
    let status = node.http("GET", "/v1/status", b"").await.json().unwrap();
    // The log below the snapshot may stay on disk (compaction drops whole segments), but the
    // store starts from the snapshot and applies only the entries after it.
    assert!(status["snapshot_index"].as_u64().unwrap() > index, "{status}");
    let refused = node.send("PUT", "/v1/kv/k", &session(9, 1), b"changed").await;
    assert_eq!(
        (refused.status, refused.body.as_slice()),
        (409, br#"{"error":"session_conflict"}"#.as_slice())
    );
    let retry = node.send("PUT", "/v1/kv/k", &session(9, 1), b"v").await;
    assert_eq!((retry.status, retry.json().unwrap()["index"].as_u64()), (200, Some(index)));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_answer_was_too_large_to_keep_says_where_it_was_applied() {
    let node = Node::start(Limits::default()).await;
    let large = vec![b'L'; 4096];
    assert_eq!(node.http("PUT", "/v1/kv/big", &large).await.status, 200);
    let body = br#"{"expected":"something else","new":"n"}"#;
    let first = node.send("POST", "/v1/cas/big", &session(7, 1), body).await;
    assert_eq!(first.status, 409, "{}", text(&first));
    let first = first.json().unwrap();
    assert_eq!(first["swapped"], false);
    assert_eq!(first["current"].as_str().unwrap().as_bytes(), large.as_slice());
    let retry = node.send("POST", "/v1/cas/big", &session(7, 1), body).await;
    assert_eq!(retry.status, 409, "{}", text(&retry));
    let retry = retry.json().unwrap();
    assert_eq!(retry["error"], "response_not_kept");
    assert_eq!(retry["swapped"], false);
    let applied_at = retry["applied_at"].as_u64().unwrap();
    let (last_log_index, _) = node.log_position().await;
    assert!(applied_at > 0 && applied_at < last_log_index, "applied at {applied_at}");
    assert!(retry.get("current").is_none(), "a value not kept is not made up: {retry}");

    // A small answer is kept and replayed whole.
    assert_eq!(node.http("PUT", "/v1/kv/small", b"s").await.status, 200);
    let body = br#"{"expected":null,"new":"n"}"#;
    let first = node.send("POST", "/v1/cas/small", &session(7, 2), body).await;
    let retry = node.send("POST", "/v1/cas/small", &session(7, 2), body).await;
    assert_eq!((first.status, first.json().unwrap()["current"].clone()), (409, "s".into()));
    assert_eq!((retry.status, retry.json().unwrap()), (409, first.json().unwrap()));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_takes_two_values_at_the_limit_and_bytes_that_are_not_utf8() {
    let max_value_bytes = 64 * 1024;
    let node = Node::start(Limits { max_value_bytes, ..Limits::default() }).await;
    // Not UTF-8, the largest value allowed.
    let old: Vec<u8> = (0..max_value_bytes).map(|at| 0x80 | (at % 0x7f) as u8).collect();
    let new: Vec<u8> = old.iter().map(|byte| byte ^ 0x7f).collect();
    assert_eq!(node.http("PUT", "/v1/kv/bin", &old).await.status, 200);
    let cas = |expected: &[u8], new: &[u8]| {
        format!(
            r#"{{"expected_base64":"{}","new_base64":"{}"}}"#,
            base64::encode(expected),
            base64::encode(new)
        )
    };
    let swapped = node.http("POST", "/v1/cas/bin", cas(&old, &new).as_bytes()).await;
    assert_eq!(swapped.status, 200, "{}", text(&swapped));
    assert_eq!(swapped.json().unwrap()["swapped"], true);
    let read = node.http("GET", "/v1/kv/bin", b"").await;
    assert_eq!((read.status, read.body == new), (200, true));
    // Not swapped: the current value exactly, in base64.
    let refused = node.http("POST", "/v1/cas/bin", cas(&old, b"x").as_bytes()).await;
    assert_eq!(refused.status, 409, "{}", text(&refused));
    let refused = refused.json().unwrap();
    assert_eq!(refused["swapped"], false);
    assert_eq!(refused["current_base64"].as_str().unwrap(), base64::encode(&new));
    // `expected_base64: null` (like `expected: null`) means the key must be absent.
    let body = br#"{"expected_base64":null,"new_base64":"AP8="}"#;
    assert_eq!(node.http("POST", "/v1/cas/fresh", body).await.status, 200);
    assert_eq!(node.http("GET", "/v1/kv/fresh", b"").await.body, [0x00, 0xff]);
    // The text fields still work, and mix with the base64 ones.
    let body = br#"{"expected_base64":"AP8=","new":"text"}"#;
    assert_eq!(node.http("POST", "/v1/cas/fresh", body).await.status, 200);
    let body = br#"{"expected":"text","new_base64":"dGV4dDI="}"#;
    assert_eq!(node.http("POST", "/v1/cas/fresh", body).await.status, 200);
    assert_eq!(node.http("GET", "/v1/kv/fresh", b"").await.body, b"text2");

    let (before, _) = node.log_position().await;
    let too_large = vec![1u8; max_value_bytes + 1];
    for (body, status, code) in [
        (
            r#"{"expected":"a","expected_base64":"YQ==","new":"b"}"#.to_owned(),
            400,
            "conflicting_fields",
        ),
        (
            r#"{"expected":null,"expected_base64":null,"new":"b"}"#.to_owned(),
            400,
            "conflicting_fields",
        ),
        (r#"{"new":"b","new_base64":"Yg=="}"#.to_owned(), 400, "conflicting_fields"),
        (r#"{"new_base64":"not base64!"}"#.to_owned(), 400, "invalid_base64"),
        (r#"{"expected_base64":"Yg","new":"b"}"#.to_owned(), 400, "invalid_base64"),
        (r#"{"expected":null}"#.to_owned(), 400, "malformed_json"),
        (cas(&too_large, b"b"), 413, "value_too_large"),
        (cas(b"a", &too_large), 413, "value_too_large"),
    ] {
        let reply = node.http("POST", "/v1/cas/fresh", body.as_bytes()).await;
        assert_eq!(reply.status, status, "{body:.80}: {}", text(&reply));
        assert_eq!(reply.json().unwrap()["error"], code, "{body:.80}");
    }
    assert_eq!(node.log_position().await.0, before, "a refused compare-and-swap was written");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_body_is_json() {
    let node = Node::start(Limits { max_value_bytes: 1024, ..Limits::default() }).await;
    assert_eq!(node.http("PUT", "/v1/kv/k", b"v").await.status, 200);
    let (before, _) = node.log_position().await;
    let long_key = format!("/v1/kv/{}", "k".repeat(2000));
    let large = vec![b'x'; 8 * 1024];
    let bad_seq = [("X-Client-Id", String::from("1")), ("X-Request-Seq", String::from("x"))];
    let only_client = [("X-Client-Id", String::from("1"))];
    let cases = [
        refused("GET", "/nowhere", &[], b"", 404, "unknown_path"),
        refused("PUT", "/v1/kv/a/b", &[], b"v", 404, "unknown_path"),
        refused("GET", "/v1/kv/missing", &[], b"", 404, "not_found"),
        refused("PATCH", "/v1/kv/k", &[], b"v", 405, "method_not_allowed"),
        refused("POST", "/v1/kv/k", &[], b"v", 405, "method_not_allowed"),
        refused("GET", "/v1/cas/k", &[], b"", 405, "method_not_allowed"),
        refused("DELETE", "/v1/status", &[], b"", 405, "method_not_allowed"),
        refused("POST", "/v1/cas/", &[], br#"{"new":"v"}"#, 400, "empty_key"),
        refused("PUT", "/v1/kv/", &[], b"v", 400, "empty_key"),
        refused("GET", "/v1/kv/%FF", &[], b"", 400, "invalid_key"),
        refused("PUT", "/v1/kv/%FF%FE", &[], b"v", 400, "invalid_key"),
        refused("DELETE", "/v1/kv/%C3", &[], b"", 400, "invalid_key"),
        refused("POST", "/v1/cas/%FF", &[], br#"{"new":"v"}"#, 400, "invalid_key"),
        refused("DELETE", "/v1/members/%FF", &[], b"", 400, "bad_request"),
        refused("POST", "/v1/cas/k", &[], b"{not json", 400, "malformed_json"),
        refused("GET", "/v1/kv/k?consistency=local&consistency=lease", &[], b"", 400, "bad_query"),
        refused("PUT", &long_key, &[], b"v", 413, "key_too_large"),
        refused("PUT", "/v1/kv/k", &[], &large, 413, "value_too_large"),
        refused("POST", "/v1/cas/k", &[], &large, 413, "value_too_large"),
        refused("PUT", "/v1/kv/k", &bad_seq, b"v", 400, "invalid_session_header"),
        refused("PUT", "/v1/kv/k", &only_client, b"v", 400, "incomplete_session_headers"),
    ];
    for Refused { method, path, headers, body, status, code } in cases {
        let reply = node.send(method, path, headers, body).await;
        let case = format!("{method} {path:.40}");
        assert_eq!(reply.status, status, "{case}: {}", text(&reply));
        assert_eq!(reply.header("content-type"), Some("application/json"), "{case}");
        let json = reply.json().unwrap_or_else(|_| panic!("{case}: {}", text(&reply)));
        assert_eq!(json["error"], code, "{case}");
        if status == 405 {
            assert!(reply.header("allow").is_some(), "{case}: a 405 names the methods");
        }
    }
    assert_eq!(node.log_position().await.0, before, "a refused request was written");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_methods_a_route_lacks_never_write() {
    let node = Node::start(Limits::default()).await;
    assert_eq!(node.http("PUT", "/v1/kv/k", b"value").await.status, 200);
    let before = node.log_position().await;
    // HEAD on a key is a read: the GET answer without its body.
    let head = node.send("HEAD", "/v1/kv/k", &session(3, 1), b"").await;
    assert_eq!(head.status, 200, "{}", text(&head));
    assert_eq!(head.header("content-length"), Some("5"));
    assert!(head.header("x-raft-read-index").is_some());
    assert!(head.body.is_empty());
    assert_eq!(node.http("HEAD", "/v1/kv/missing", b"").await.status, 404);
    assert_eq!(node.http("HEAD", "/v1/kv/k?consistency=local", b"").await.status, 200);
    for (method, path, status) in [
        ("HEAD", "/v1/kv/", 400),
        ("HEAD", "/v1/cas/k", 405),
        ("HEAD", "/v1/cas/", 405),
        ("HEAD", "/v1/leader", 405),
        ("HEAD", "/v1/members/1", 405),
        ("HEAD", "/v1/members", 200),
        ("HEAD", "/v1/status", 200),
        ("HEAD", "/metrics", 200),
        ("OPTIONS", "/v1/kv/k", 405),
        ("PATCH", "/v1/kv/k", 405),
        ("POST", "/v1/kv/k", 405),
        ("PUT", "/v1/cas/k", 405),
        ("PATCH", "/v1/cas/k", 405),
        ("PUT", "/v1/leader", 405),
    ] {
        let reply = node.send(method, path, &session(3, 2), b"").await;
        assert_eq!(reply.status, status, "{method} {path}: {}", text(&reply));
    }
    assert_eq!(node.log_position().await, before, "HEAD or a method a route lacks wrote");
    // The key is untouched, and the session unused: sequence 1 is still new.
    let written = node.send("PUT", "/v1/kv/k", &session(3, 1), b"again").await;
    assert_eq!(written.status, 200, "{}", text(&written));
    node.stop().await;
}

/// Sends `request` (with `Connection: close`) on a connection of its own and returns the
/// answer with its `date` header's value as `D` and each run of digits as `N` (indexes move
/// on between two writes; the rest of an answer, header order included, must not).
async fn raw_answer(address: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    read.expect("answered in time").expect("readable");
    let answer = String::from_utf8_lossy(&answer);
    let dated: Vec<&str> = answer
        .split("\r\n")
        .map(|line| if line.starts_with("date: ") { "date: D" } else { line })
        .collect();
    digits_as_n(&dated.join("\r\n"))
}

/// `text` with each run of digits as `N`.
fn digits_as_n(text: &str) -> String {
    let mut normalized = String::new();
    for character in text.chars() {
        if !character.is_ascii_digit() {
            normalized.push(character);
        } else if !normalized.ends_with('N') {
            normalized.push('N');
        }
    }
    normalized
}

/// Key requests (method, path, body) whose answers cover successes, refusals and an empty
/// value, on a node whose keys are at most 16 bytes and values 8.
const KEY_REQUESTS: [(&str, &str, &str); 11] = [
    ("PUT", "/v1/kv/key", "value"),
    ("GET", "/v1/kv/key", ""),
    ("GET", "/v1/kv/key?consistency=local", ""),
    ("GET", "/v1/kv/key?consistency=lease", ""),
    ("GET", "/v1/kv/key?consistency=linearizable", ""),
    ("GET", "/v1/kv/missing", ""),
    ("PUT", "/v1/kv/key", "too large"),
    ("PUT", "/v1/kv/a-key-over-16-bytes", "v"),
    ("GET", "/v1/kv/a-key-over-16-bytes", ""),
    ("PUT", "/v1/kv/k", ""),
    ("GET", "/v1/kv/k", ""),
];

/// The HTTP/1.1 fast lane (plain `PUT` and `GET` on a key) answers exactly as hyper and axum
/// do: each request sent as it is, then with a header the fast lane leaves to hyper, gets
/// the same status line, headers in the same order (the date's value aside) and body,
/// successes, refusals and an empty value alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_lane_answers_as_hyper_does() {
    let node =
        Node::start(Limits { max_key_bytes: 16, max_value_bytes: 8, ..Limits::default() }).await;
    for (method, path, body) in KEY_REQUESTS {
        let request = |extra: &str| {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let fast = raw_answer(node.http, &request("")).await;
        let hyper = raw_answer(node.http, &request("X-Lane: hyper\r\n")).await;
        assert_eq!(fast, hyper, "{method} {path}");
        assert!(fast.starts_with("HTTP/N.N N "), "{method} {path}: {fast}");
    }
    node.stop().await;
}

/// Over HTTP/2 (and whenever hyper parsed the request), a plain key request is answered by
/// the key routes directly, without axum's router: each request as it is, then with a
/// header that sends it through the router, gets the same status, headers in the same
/// order (the date aside) and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_requests_over_http2_are_answered_as_the_router_answers_them() {
    let node =
        Node::start(Limits { max_key_bytes: 16, max_value_bytes: 8, ..Limits::default() }).await;
    let connection = Http2Connection::open(node.http, None).await.expect("HTTP/2 handshake");
    for (method, path, body) in KEY_REQUESTS {
        let answer = |headers: Vec<(&'static str, String)>| {
            let connection = connection.clone();
            async move {
                let body = bytes::Bytes::from_static(body.as_bytes());
                let reply =
                    connection.request(method, path, &headers, body).await.expect("answered");
                // The date aside, and each run of digits as `N` (indexes move on between two
                // writes; the rest of an answer, header order included, must not).
                let mut text = reply.status.to_string();
                for (name, value) in reply.headers.iter().filter(|(name, _)| name != "date") {
                    text.push_str(&format!("\n{name}: {value}"));
                }
                text.push_str(&format!("\n\n{}", String::from_utf8_lossy(&reply.body)));
                digits_as_n(&text)
            }
        };
        let direct = answer(Vec::new()).await;
        let routed = answer(vec![("x-lane", "router".to_owned())]).await;
        assert_eq!(direct, routed, "{method} {path}");
    }
    node.stop().await;
}
