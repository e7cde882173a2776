//! A leader whose disk freezes steps down (issue #16): three `raft-kv serve` processes on
//! loopback, each on a file system whose syncs wait while a signal file exists (the hidden
//! `--freeze-syncs-while` flag, built only with the `disk-freeze` feature that raft-kv's tests
//! turn on). The leader's disk is frozen while it serves a write; a write through another node
//! is accepted by a new leader within two election timeouts; the frozen node reports the stall
//! in `/v1/status` and its metrics, logs why it stepped down, and stands for no election;
//! unfrozen, it follows the new leader and holds every acknowledged write. Then a follower's
//! disk freezes: the cluster goes on without it, and it reports the stall and catches up.
//! Waits are for conditions, with deadlines.
//!
//! The time from freezing the disk to the first write a new leader accepts is printed
//! (`cargo test -p raft-kv --test disk_stall -- --nocapture`; BENCHMARKS.md).

#![cfg(unix)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Processes;
use common::ports::free_addresses;
use raft_consensus::Config;
use raft_kv::client::{request, request_following_redirects};

const DEADLINE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Member {
    id: u64,
    raft: SocketAddr,
    http: SocketAddr,
}

struct Cluster {
    root: PathBuf,
    members: Vec<Member>,
    processes: Processes,
}

impl Cluster {
    /// Three nodes, each with its disk freezable through `freeze_file(id)`.
    fn start(root: &Path) -> Cluster {
        let addresses = free_addresses(6);
        let members = (0..3)
            .map(|position| Member {
                id: position as u64 + 1,
                raft: addresses[position],
                http: addresses[3 + position],
            })
            .collect();
        let mut cluster =
            Cluster { root: root.to_owned(), members, processes: Processes::default() };
        for id in 1..=3 {
            cluster.spawn(id);
        }
        cluster
    }

    fn member(&self, id: u64) -> &Member {
        &self.members[(id - 1) as usize]
    }

    fn freeze_file(&self, id: u64) -> PathBuf {
        self.root.join(format!("freeze-node{id}"))
    }

    fn log_file(&self, id: u64) -> PathBuf {
        self.root.join(format!("node{id}.log"))
    }

    /// Starts node `id`, its warnings logged to `log_file(id)`.
    fn spawn(&mut self, id: u64) {
        let me = self.member(id);
        let mut command = Processes::serve_command();
        command
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.root.join(format!("node{id}")))
            .args(["--raft-addr", &me.raft.to_string(), "--http-addr", &me.http.to_string()])
            .arg("--freeze-syncs-while")
            .arg(self.freeze_file(id));
        for peer in self.members.iter().filter(|peer| peer.id != id) {
            command.args(["--peer", &format!("{}={},{}", peer.id, peer.raft, peer.http)]);
        }
        let log = std::fs::File::create(self.log_file(id)).expect("a log file");
        let child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("raft-kv starts");
        self.processes.adopt(id, child);
    }

    async fn status(&self, id: u64) -> Option<serde_json::Value> {
        let reply = request(self.member(id).http, "GET", "/v1/status", &[], b"", REQUEST_TIMEOUT)
            .await
            .ok()?;
        reply.json().ok()
    }

    /// Waits until `condition` holds for node `id`'s status; returns that status.
    async fn wait_for_status(
        &self,
        id: u64,
        what: &str,
        condition: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            if let Some(status) = self.status(id).await
                && condition(&status)
            {
                return status;
            }
            assert!(started.elapsed() < DEADLINE, "node {id}: {what} within {DEADLINE:?}");
            tokio::task::yield_now().await;
        }
    }

    /// Waits until some node leads, by its own status; returns it.
    async fn leader(&self) -> u64 {
        let started = Instant::now();
        loop {
            for id in 1..=3 {
                if let Some(status) = self.status(id).await
                    && status["role"] == "Leader"
                {
                    return id;
                }
            }
            assert!(started.elapsed() < DEADLINE, "no leader within {DEADLINE:?}");
            tokio::task::yield_now().await;
        }
    }

    /// Writes `key`=`value` through node `via` (following redirects to the leader), retrying
    /// with the same client session until it is acknowledged.
    async fn put(&self, via: u64, key: &str, value: &str, sequence: u64) {
        let headers = [("X-Client-Id", "7".to_owned()), ("X-Request-Seq", sequence.to_string())];
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
            if reply.as_ref().is_ok_and(|reply| reply.status == 200) {
                return;
            }
            assert!(started.elapsed() < DEADLINE, "{key} was never acknowledged: {reply:?}");
            tokio::task::yield_now().await;
        }
    }

    /// Node `id`'s Prometheus metric `name`.
    async fn metric(&self, id: u64, name: &str) -> u64 {
        let reply = request(self.member(id).http, "GET", "/metrics", &[], b"", REQUEST_TIMEOUT)
            .await
            .expect("metrics");
        let text = String::from_utf8(reply.body).expect("text");
        let line = text
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
        line.split_whitespace().nth(1).and_then(|value| value.parse().ok()).expect("a number")
    }

    /// Reads `key` from node `id`'s own store.
    async fn get_local(&self, id: u64, key: &str) -> Option<Vec<u8>> {
        let path = format!("/v1/kv/{key}?consistency=local");
        let reply = request(self.member(id).http, "GET", &path, &[], b"", REQUEST_TIMEOUT)
            .await
            .expect("the node answers");
        (reply.status == 200).then_some(reply.body)
    }
}

/// The binary these tests run carries the hook (cargo turns the `disk-freeze` feature on for
/// raft-kv's tests): it takes `--freeze-syncs-while` and goes on to check the other flags.
fn assert_the_binary_carries_the_freeze_hook() {
    let output = Command::new(env!("CARGO_BIN_EXE_raft-kv"))
        .args(["serve", "--insecure", "--id", "0", "--freeze-syncs-while", "/nonexistent"])
        .output()
        .expect("raft-kv runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        !stderr.contains("unexpected argument"),
        "raft-kv was built without the disk-freeze feature: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_freezes_steps_down_and_writes_resume_on_a_new_leader() {
    assert_the_binary_carries_the_freeze_hook();
    let root = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(root.path());
    let old = cluster.leader().await;
    for sequence in 1..=5 {
        cluster.put(old, &format!("before-{sequence}"), "acknowledged", sequence).await;
    }
    let elections_before = cluster.metric(old, "raft_elections_total").await;

    // Freeze the leader's disk while it serves a write: the write commits on the followers'
    // durable copies, but the leader's own sync hangs.
    std::fs::write(cluster.freeze_file(old), b"").unwrap();
    let frozen_at = Instant::now();
    let old_http = cluster.member(old).http;
    let frozen_write = tokio::spawn(async move {
        let headers = [("X-Client-Id", "8".to_owned()), ("X-Request-Seq", "1".to_owned())];
        request(old_http, "PUT", "/v1/kv/during-freeze", &headers, b"maybe", REQUEST_TIMEOUT)
            .await
            .map(|reply| reply.status)
    });

    // A write through another node, straight to it (307 while it follows the frozen leader),
    // until a new leader accepts one.
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let headers = [("X-Client-Id", "9".to_owned()), ("X-Request-Seq", "1".to_owned())];
    let new = 'accepted: loop {
        for &id in &others {
            let reply = request(
                cluster.member(id).http,
                "PUT",
                "/v1/kv/after-freeze",
                &headers,
                b"acknowledged",
                REQUEST_TIMEOUT,
            )
            .await;
            if reply.is_ok_and(|reply| reply.status == 200) {
                break 'accepted id;
            }
        }
        assert!(frozen_at.elapsed() < DEADLINE, "no new leader accepted a write");
        tokio::task::yield_now().await;
    };
    let took = frozen_at.elapsed();
    let config = Config::default();
    let two_election_timeouts = Duration::from_millis(2 * config.election_timeout_max_ms);
    println!(
        "node {old}'s disk froze; node {new} accepted a write as the new leader {} ms later (max_sync_stall_ms {}, two election timeouts {} ms)",
        took.as_millis(),
        config.max_sync_stall_ms,
        two_election_timeouts.as_millis()
    );
    assert!(
        took <= two_election_timeouts,
        "writes resumed {} ms after the freeze, beyond two election timeouts",
        took.as_millis()
    );

    // The frozen node stepped down, says why, and stands for no election while frozen.
    let stalled = cluster
        .wait_for_status(old, "reports a stalled disk as a follower", |status| {
            status["role"] == "Follower" && status["disk_stalled_for_ms"].as_u64().is_some()
        })
        .await;
    assert!(stalled["disk_stalled_for_ms"].as_u64() >= Some(config.max_sync_stall_ms));
    assert_eq!(cluster.metric(old, "raft_disk_stall_step_downs_total").await, 1);
    assert_eq!(cluster.metric(old, "raft_disk_stalled").await, 1);
    for sequence in 2..=4 {
        cluster.put(new, &format!("while-frozen-{sequence}"), "acknowledged", 10 + sequence).await;
    }
    // Several election timeouts pass while the disk stays frozen.
    let frozen_for = Duration::from_millis(5 * config.election_timeout_max_ms);
    cluster
        .wait_for_status(old, "stays frozen for five election timeouts", |status| {
            status["disk_stalled_for_ms"].as_u64() >= Some(frozen_for.as_millis() as u64)
        })
        .await;
    assert_eq!(
        cluster.metric(old, "raft_elections_total").await,
        elections_before,
        "the frozen node stood for election"
    );
    assert_eq!(cluster.metric(new, "raft_disk_stalled").await, 0);
    let log = std::fs::read_to_string(cluster.log_file(old)).unwrap();
    assert!(log.contains("Stepping down: the disk has not synced a write for"), "{log}");

    // Thawed: the old leader follows the new one and holds every acknowledged write.
    std::fs::remove_file(cluster.freeze_file(old)).unwrap();
    let frozen_write = frozen_write.await.unwrap();
    let commit = cluster.status(new).await.expect("the new leader answers")["commit_index"]
        .as_u64()
        .expect("a commit index");
    cluster
        .wait_for_status(old, "catches up as a follower of the new leader", |status| {
            status["disk_stalled_for_ms"].is_null()
                && status["role"] == "Follower"
                && status["leader_id"].as_u64() == Some(new)
                && status["applied_index"].as_u64() >= Some(commit)
        })
        .await;
    let mut acknowledged: Vec<String> =
        (1..=5).map(|sequence| format!("before-{sequence}")).collect();
    acknowledged.push(String::from("after-freeze"));
    acknowledged.extend((2..=4).map(|sequence| format!("while-frozen-{sequence}")));
    for key in &acknowledged {
        for id in 1..=3 {
            assert_eq!(
                cluster.get_local(id, key).await.as_deref(),
                Some(&b"acknowledged"[..]),
                "{key} on node {id}"
            );
        }
    }
    // The write the frozen leader took commits on its followers' durable copies: if it was
    // acknowledged, the new leader and the thawed node hold it.
    if frozen_write.as_ref().is_ok_and(|status| *status == 200) {
        for id in [old, new] {
            let value = cluster.get_local(id, "during-freeze").await;
            assert_eq!(value.as_deref(), Some(&b"maybe"[..]), "node {id}");
        }
    }
    println!("the write the frozen leader took: {frozen_write:?}");

    // A follower's disk freezes: it acknowledges nothing, so the leader commits with the
    // other follower; the frozen one reports the stall, stays a follower, and catches up
    // once thawed.
    let follower = old;
    std::fs::write(cluster.freeze_file(follower), b"").unwrap();
    for sequence in 1..=3 {
        cluster
            .put(new, &format!("follower-frozen-{sequence}"), "acknowledged", 20 + sequence)
            .await;
    }
    let stalled = cluster
        .wait_for_status(follower, "reports its stalled disk", |status| {
            status["disk_stalled_for_ms"].as_u64().is_some()
        })
        .await;
    assert_eq!((&stalled["role"], stalled["leader_id"].as_u64()), (&"Follower".into(), Some(new)));
    assert_eq!(cluster.status(new).await.expect("the leader answers")["role"], "Leader");
    std::fs::remove_file(cluster.freeze_file(follower)).unwrap();
    let commit = cluster.status(new).await.expect("the leader answers")["commit_index"]
        .as_u64()
        .expect("a commit index");
    cluster
        .wait_for_status(follower, "catches up once thawed", |status| {
            status["disk_stalled_for_ms"].is_null()
                && status["applied_index"].as_u64() >= Some(commit)
        })
        .await;
    for sequence in 1..=3 {
        let key = format!("follower-frozen-{sequence}");
        assert_eq!(cluster.get_local(follower, &key).await.as_deref(), Some(&b"acknowledged"[..]));
    }
}
