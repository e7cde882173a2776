//! Three `raft-kv` processes on loopback: writes through any node, the leader killed with
//! SIGKILL, a new leader elected and writes continuing, the killed node restarted from its data
//! directory and catching up, every acknowledged write readable afterwards, a follower's 307,
//! and a bad request that changes nothing. And a node stopped while 20,000 writes are made and
//! the others compact their logs, which catches up from a snapshot when it comes back. Waits
//! are for conditions, with deadlines.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
mod common;

use common::Processes;
use common::ports::free_addresses;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raft_kv::client::{request, request_following_redirects};

const DEADLINE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Member {
    id: u64,
    raft: SocketAddr,
    http: SocketAddr,
    data_dir: PathBuf,
}

/// The running processes, killed when the test ends however it ends.
struct Cluster {
    members: Vec<Member>,
    processes: Processes,
    /// Flags every `raft-kv serve` gets besides the cluster's.
    extra_args: Vec<String>,
}

impl Cluster {
    fn start(root: &Path) -> Cluster {
        Cluster::start_with(root, &[])
    }

    fn start_with(root: &Path, extra_args: &[&str]) -> Cluster {
        let addresses = free_addresses(6);
        let members = (0..3)
            .map(|position| Member {
                id: position as u64 + 1,
                raft: addresses[position],
                http: addresses[3 + position],
                data_dir: root.join(format!("node{}", position + 1)),
            })
            .collect();
        let extra_args = extra_args.iter().map(|arg| (*arg).to_owned()).collect();
        let mut cluster = Cluster { members, processes: Processes::default(), extra_args };
        for id in 1..=3 {
            cluster.spawn(id);
        }
        cluster
    }

    fn member(&self, id: u64) -> &Member {
        &self.members[(id - 1) as usize]
    }

    fn spawn(&mut self, id: u64) {
        let me = self.member(id);
        let mut command = Processes::serve_command();
        command.args(["--id", &id.to_string()]).arg("--data-dir").arg(&me.data_dir).args([
            "--raft-addr",
            &me.raft.to_string(),
            "--http-addr",
            &me.http.to_string(),
        ]);
        for peer in self.members.iter().filter(|peer| peer.id != id) {
            command.args(["--peer", &format!("{}={},{}", peer.id, peer.raft, peer.http)]);
        }
        command.args(&self.extra_args);
        self.processes.spawn(id, command);
    }

    fn kill(&mut self, id: u64) {
        self.processes.kill(id);
    }

    async fn status(&self, id: u64) -> Option<serde_json::Value> {
        let reply = request(self.member(id).http, "GET", "/v1/status", &[], b"", REQUEST_TIMEOUT)
            .await
            .ok()?;
        reply.json().ok()
    }

    /// Waits until a running node reports a leader other than `excluded`, and returns it.
    async fn leader(&self, excluded: Option<u64>) -> u64 {
        let started = Instant::now();
        loop {
            for id in self.processes.running() {
                if let Some(status) = self.status(id).await
                    && let Some(leader) = status["leader_id"].as_u64()
                    && Some(leader) != excluded
                    && self.processes.is_running(leader)
                {
                    return leader;
                }
            }
            assert!(started.elapsed() < DEADLINE, "no leader within {DEADLINE:?}");
            tokio::task::yield_now().await;
        }
    }

    /// Writes `key`=`value` through node `via`, retrying (with the same client session, so a
    /// retry after an unknown outcome is not applied twice) until it is acknowledged.
    async fn put(&self, via: u64, key: &str, value: &str, client: u64, sequence: u64) {
        let headers =
            [("X-Client-Id", client.to_string()), ("X-Request-Seq", sequence.to_string())];
        let path = format!("/v1/kv/{key}");
        let started = Instant::now();
        loop {
            let reply = request_following_redirects(
                self.member(via).http,
                "PUT",
                &path,
                &headers,
                value.as_bytes(),
                REQUEST_TIMEOUT,
            )
            .await;
            if let Ok(reply) = &reply
                && reply.status == 200
            {
                return;
            }
            assert!(started.elapsed() < DEADLINE, "{key} was never acknowledged: {reply:?}");
            tokio::task::yield_now().await;
        }
    }

    /// Reads `key` from node `id`'s own store (`?consistency=local`).
    async fn get_local(&self, id: u64, key: &str) -> Option<Vec<u8>> {
        let path = format!("/v1/kv/{key}?consistency=local");
        let reply = request(self.member(id).http, "GET", &path, &[], b"", REQUEST_TIMEOUT)
            .await
            .expect("the node answers");
        match reply.status {
            200 => Some(reply.body),
            404 => None,
            other => panic!("local GET {key} on node {id}: status {other}"),
        }
    }

    /// A number from node `id`'s status.
    async fn status_number(&self, id: u64, field: &str) -> u64 {
        let status = self.status(id).await.unwrap_or_else(|| panic!("node {id} answers"));
        status[field].as_u64().unwrap_or_else(|| panic!("{field} in {status}"))
    }

    /// Waits until node `id` reports `field` at least `target`.
    async fn wait_for_number(&self, id: u64, field: &str, target: u64) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.status(id).await
                && status[field].as_u64().unwrap_or(0) >= target
            {
                return;
            }
            assert!(started.elapsed() < DEADLINE, "node {id} never reached {field} {target}");
            tokio::task::yield_now().await;
        }
    }

    /// Reads `key` linearizably from node `via` itself (reads are never redirected), retrying
    /// while the node is not up yet or knows no leader (just started, or an election is
    /// under way).
    async fn get(&self, via: u64, key: &str) -> Option<Vec<u8>> {
        let path = format!("/v1/kv/{key}");
        let started = Instant::now();
        loop {
            let reply =
                match request(self.member(via).http, "GET", &path, &[], b"", REQUEST_TIMEOUT).await
                {
                    Ok(reply) => reply,
                    Err(_) if started.elapsed() < DEADLINE => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(error) => panic!("GET {key} via node {via}: {error}"),
                };
            match reply.status {
                200 | 404 => {
                    assert!(
                        reply.header("x-raft-read-index").is_some(),
                        "GET {key} via node {via} names no read index"
                    );
                    return (reply.status == 200).then_some(reply.body);
                }
                503 if started.elapsed() < DEADLINE => tokio::task::yield_now().await,
                other => panic!("GET {key} via node {via}: status {other}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_processes_survives_losing_its_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(root.path());
    let leader = cluster.leader(None).await;
    let mut acknowledged = BTreeMap::new();

    // Writes through every node (followers redirect to the leader).
    for round in 0..30u64 {
        let via = round % 3 + 1;
        let (key, value) = (format!("before-{round}"), format!("value-{round}"));
        cluster.put(via, &key, &value, 1, round + 1).await;
        acknowledged.insert(key, value);
    }

    // A follower answers 307 with the leader's URL for the same path.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let redirect =
        request(cluster.member(follower).http, "PUT", "/v1/kv/x", &[], b"1", REQUEST_TIMEOUT)
            .await
            .unwrap();
    assert_eq!(redirect.status, 307);
    let expected = format!("http://{}/v1/kv/x", cluster.member(leader).http);
    assert_eq!(redirect.header("location"), Some(expected.as_str()));

    // A bad request gets its 4xx and changes nothing.
    let before = cluster.status(leader).await.unwrap()["last_log_index"].clone();
    let bad = request(cluster.member(leader).http, "POST", "/v1/cas/x", &[], b"{", REQUEST_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(cluster.status(leader).await.unwrap()["last_log_index"], before);

    // SIGKILL the leader: a new one is elected and writes continue.
    cluster.kill(leader);
    let new_leader = cluster.leader(Some(leader)).await;
    assert_ne!(new_leader, leader);
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    for round in 0..30u64 {
        let (key, value) = (format!("after-{round}"), format!("value-{round}"));
        cluster.put(survivor, &key, &value, 2, round + 1).await;
        acknowledged.insert(key, value);
    }

    // The killed node restarts from its data directory. Reads through it at once are
    // linearizable: each waits until it has applied what the read must see.
    cluster.spawn(leader);
    for (key, value) in &acknowledged {
        assert_eq!(cluster.get(leader, key).await.as_deref(), Some(value.as_bytes()), "{key}");
    }
    let target = cluster.status(new_leader).await.unwrap()["commit_index"].as_u64().unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = cluster.status(leader).await
            && status["applied_index"].as_u64().unwrap_or(0) >= target
        {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the restarted node did not catch up");
        tokio::task::yield_now().await;
    }

    // Every acknowledged write is readable through every node, each serving it itself.
    for via in 1..=3 {
        for (key, value) in &acknowledged {
            assert_eq!(
                cluster.get(via, key).await.as_deref(),
                Some(value.as_bytes()),
                "{key} via {via}"
            );
        }
    }
}

/// Writes made with `raft-kv bench` (kept-alive connections) while a node is down.
const WRITES_WHILE_DOWN: u64 = 20_000;
/// Distinct keys those writes touch.
const KEYS: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_compacted_writes_catches_up_from_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with(
        root.path(),
        &["--snapshot-after-entries", "2000", "--snapshot-keep-entries", "200"],
    );
    let leader = cluster.leader(None).await;
    let stopped = (1..=3).find(|id| *id != leader).unwrap();
    cluster.put(leader, "first", "before the stop", 1, 1).await;
    cluster
        .wait_for_number(
            stopped,
            "applied_index",
            cluster.status_number(leader, "commit_index").await,
        )
        .await;
    let stopped_last_index = cluster.status_number(stopped, "last_log_index").await;
    cluster.kill(stopped);

    // 20,000 writes through the leader while the node is down: half over HTTP/1.1 (a
    // connection per client), half over HTTP/2 (the clients sharing four connections).
    let endpoints = format!("http://{}", cluster.member(leader).http);
    for protocol in [&[][..], &["--http2", "--connections", "4"][..]] {
        let bench = Command::new(env!("CARGO_BIN_EXE_raft-kv"))
            .args(["bench", "--endpoints", &endpoints, "--concurrency", "32"])
            .args(["--requests", &(WRITES_WHILE_DOWN / 2).to_string(), "--duration-secs", "600"])
            .args(["--keys", &KEYS.to_string(), "--value-size", "64"])
            .args(protocol)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .expect("raft-kv bench runs");
        let report = String::from_utf8_lossy(&bench.stdout);
        assert!(bench.status.success(), "raft-kv bench {protocol:?} failed: {report}");
        assert!(report.contains("errors:     0"), "the writes should all succeed: {report}");
    }

    // The others compacted: the entries the stopped node lacks are gone from the leader's log.
    let leader = cluster.leader(Some(stopped)).await;
    let commit_index = cluster.status_number(leader, "commit_index").await;
    assert!(commit_index >= stopped_last_index + WRITES_WHILE_DOWN);
    let first_log_index = cluster.status_number(leader, "first_log_index").await;
    assert!(
        first_log_index > stopped_last_index + 1,
        "the leader's log should start after what the stopped node holds: {first_log_index}"
    );

    // It comes back, catches up, and holds what the leader holds.
    cluster.spawn(stopped);
    cluster.wait_for_number(stopped, "applied_index", commit_index).await;
    let snapshot_index = cluster.status_number(stopped, "snapshot_index").await;
    assert!(
        snapshot_index > stopped_last_index,
        "it can only have caught up through a snapshot (snapshot index {snapshot_index})"
    );
    let metrics =
        request(cluster.member(stopped).http, "GET", "/metrics", &[], b"", REQUEST_TIMEOUT)
            .await
            .expect("the node answers");
    let metrics = String::from_utf8_lossy(&metrics.body);
    let installed: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("raft_snapshots_installed_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no raft_snapshots_installed_total in {metrics}"));
    assert!(installed >= 1, "its metrics show no installed snapshot: {metrics}");
    for key in (0..KEYS).step_by(5).map(|key| format!("bench-{key}")).chain(["first".to_owned()]) {
        assert_eq!(
            cluster.get_local(stopped, &key).await,
            cluster.get_local(leader, &key).await,
            "{key} differs between the restarted node and the leader"
        );
    }
    assert_eq!(cluster.get_local(stopped, "first").await.as_deref(), Some(&b"before the stop"[..]));
}
