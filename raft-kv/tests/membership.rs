//! Membership changes on real `raft-kv` processes under a closed-loop write load: a 3-node
//! cluster grows to 5 (nodes started with `--join`, added with `POST /v1/members`), replaces
//! two of its original nodes (the leader among them: `DELETE /v1/members/{id}` on the leader
//! itself), and shrinks back to 3. Every acknowledged write must be readable at the end, and
//! no interval without a leader may last longer than two election timeouts (the removed
//! leader hands over with TimeoutNow rather than leaving the cluster to time out). Waits are
//! for conditions, with deadlines.

#![cfg(unix)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::Processes;
use common::ports::free_addresses;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_kv::client::{request, request_following_redirects};
use serde_json::Value;
use tokio::sync::Mutex;

const DEADLINE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The default election timeout's upper bound (`Config::default().election_timeout_max_ms`).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(300);

/// Seven nodes' addresses; nodes 1 to 3 bootstrap the cluster, 4 to 7 join it.
struct Nodes {
    raft: Vec<SocketAddr>,
    http: Vec<SocketAddr>,
    processes: Processes,
}

impl Nodes {
    fn new() -> Nodes {
        let addresses = free_addresses(14);
        Nodes {
            raft: addresses[..7].to_vec(),
            http: addresses[7..].to_vec(),
            processes: Processes::default(),
        }
    }

    fn raft(&self, id: u64) -> SocketAddr {
        self.raft[(id - 1) as usize]
    }

    fn http(&self, id: u64) -> SocketAddr {
        self.http[(id - 1) as usize]
    }

    /// Starts node `id`: bootstrapping with nodes 1 to 3, or joining.
    fn spawn(&mut self, root: &Path, id: u64, join: bool) {
        let mut command = Processes::serve_command();
        command
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(root.join(format!("node{id}")))
            .args(["--raft-addr", &self.raft(id).to_string()])
            .args(["--http-addr", &self.http(id).to_string()]);
        if join {
            command.arg("--join");
        } else {
            for peer in (1..=3).filter(|peer| *peer != id) {
                command
                    .args(["--peer", &format!("{peer}={},{}", self.raft(peer), self.http(peer))]);
            }
        }
        self.processes.spawn(id, command);
    }

    fn kill(&mut self, id: u64) {
        self.processes.kill(id);
    }
}

async fn status(address: SocketAddr) -> Option<Value> {
    let reply = request(address, "GET", "/v1/status", &[], b"", Duration::from_secs(1)).await;
    reply.ok()?.json().ok()
}

/// Sends a membership request through `via` (following redirects), retrying while no
/// leader is known or a change is still running, until it answers 200.
async fn change(via: &[SocketAddr], method: &str, path: &str, body: &str) -> Value {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let endpoint = via[attempt % via.len()];
        attempt += 1;
        let reply = request_following_redirects(
            endpoint,
            method,
            path,
            &[],
            body.as_bytes(),
            REQUEST_TIMEOUT,
        )
        .await;
        if let Ok(reply) = &reply
            && reply.status == 200
        {
            return reply.json().expect("a JSON answer");
        }
        assert!(started.elapsed() < DEADLINE, "{method} {path} {body}: {reply:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The voters in a members answer.
fn voters(members: &Value) -> Vec<u64> {
    let list = members["members"].as_array().expect("a member list");
    list.iter().filter(|member| member["voter"] == true).filter_map(|m| m["id"].as_u64()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_replaces_its_leader_and_shrinks_under_load() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Nodes::new();
    for id in 1..=3 {
        nodes.spawn(root.path(), id, false);
    }
    let endpoints = Arc::new(Mutex::new(vec![nodes.http(1), nodes.http(2), nodes.http(3)]));

    // A closed-loop writer: one write at a time, each retried (same session) until
    // acknowledged; acknowledged keys are recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, acknowledged, endpoints) =
            (Arc::clone(&stop), Arc::clone(&acknowledged), Arc::clone(&endpoints));
        tokio::spawn(async move {
            let mut attempt = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let sequence = acknowledged.load(Ordering::SeqCst) + 1;
                let headers =
                    [("X-Client-Id", String::from("77")), ("X-Request-Seq", sequence.to_string())];
                let path = format!("/v1/kv/key{sequence}");
                let endpoint = {
                    let endpoints = endpoints.lock().await;
                    endpoints[attempt % endpoints.len()]
                };
                let reply = request_following_redirects(
                    endpoint,
                    "PUT",
                    &path,
                    &headers,
                    format!("value{sequence}").as_bytes(),
                    Duration::from_secs(2),
                )
                .await;
                match reply {
                    Ok(reply) if reply.status == 200 => {
                        acknowledged.store(sequence, Ordering::SeqCst);
                    }
                    _ => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
    };

    // A watcher: the longest time no running node claimed to lead.
    let longest_leaderless = Arc::new(Mutex::new(Duration::ZERO));
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, longest, watching) =
            (Arc::clone(&stop), Arc::clone(&longest_leaderless), Arc::clone(&watching));
        let all: Vec<SocketAddr> = nodes.http.clone();
        tokio::spawn(async move {
            let mut leaderless_since: Option<Instant> = None;
            while !stop.load(Ordering::SeqCst) {
                let mut leads = false;
                for address in &all {
                    if let Some(status) = status(*address).await
                        && status["role"] == "Leader"
                    {
                        leads = true;
                    }
                }
                if !watching.load(Ordering::SeqCst) {
                    leaderless_since = None;
                } else if leads {
                    if let Some(since) = leaderless_since.take() {
                        let mut longest = longest.lock().await;
                        *longest = (*longest).max(since.elapsed());
                    }
                } else if leaderless_since.is_none() {
                    leaderless_since = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let wait_for_writes = |after: u64| {
        let acknowledged = Arc::clone(&acknowledged);
        async move {
            let started = Instant::now();
            while acknowledged.load(Ordering::SeqCst) < after + 20 {
                assert!(started.elapsed() < DEADLINE, "writes stalled after {after}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for_writes(0).await;
    watching.store(true, Ordering::SeqCst);

    // Grow to 5.
    for id in [4, 5] {
        nodes.spawn(root.path(), id, true);
        let body = format!(
            r#"{{"id":{id},"raft_addr":"{}","http_addr":"{}"}}"#,
            nodes.raft(id),
            nodes.http(id)
        );
        let members = change(&endpoints.lock().await.clone(), "POST", "/v1/members", &body).await;
        assert!(voters(&members).contains(&id), "{members}");
        endpoints.lock().await.push(nodes.http(id));
        wait_for_writes(acknowledged.load(Ordering::SeqCst)).await;
    }

    // Replace an original follower, then the original leader itself, each by a new node.
    let leader = loop {
        let current = endpoints.lock().await.clone();
        let mut found = None;
        for address in current {
            if let Some(status) = status(address).await
                && status["role"] == "Leader"
            {
                found = status["id"].as_u64();
            }
        }
        if let Some(leader) = found.filter(|leader| *leader <= 3) {
            break leader;
        }
        if found.is_some() {
            // The leader is a new node: hand leadership back to an original one.
            let via = endpoints.lock().await.clone();
            change(&via, "POST", "/v1/leader", r#"{"id":1}"#).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let follower = (1..=3).find(|id| *id != leader).expect("two originals follow");
    for (new, old) in [(6, follower), (7, leader)] {
        nodes.spawn(root.path(), new, true);
        let body = format!(
            r#"{{"id":{new},"raft_addr":"{}","http_addr":"{}"}}"#,
            nodes.raft(new),
            nodes.http(new)
        );
        change(&endpoints.lock().await.clone(), "POST", "/v1/members", &body).await;
        endpoints.lock().await.push(nodes.http(new));
        let members =
            change(&endpoints.lock().await.clone(), "DELETE", &format!("/v1/members/{old}"), "")
                .await;
        assert!(!voters(&members).contains(&old), "{members}");
        endpoints.lock().await.retain(|address| *address != nodes.http(old));
        nodes.kill(old);
        wait_for_writes(acknowledged.load(Ordering::SeqCst)).await;
    }

    // Shrink back to 3.
    for old in [4, 5] {
        change(&endpoints.lock().await.clone(), "DELETE", &format!("/v1/members/{old}"), "").await;
        endpoints.lock().await.retain(|address| *address != nodes.http(old));
        nodes.kill(old);
        wait_for_writes(acknowledged.load(Ordering::SeqCst)).await;
    }
    let survivors = endpoints.lock().await.clone();
    let members = change(&survivors, "GET", "/v1/members", "").await;
    let remaining: Vec<u64> =
        [1, 2, 3].into_iter().filter(|id| ![leader, follower].contains(id)).collect();
    assert_eq!(voters(&members), [remaining, vec![6, 7]].concat(), "{members}");

    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    watcher.await.unwrap();
    let written = acknowledged.load(Ordering::SeqCst);
    for sequence in 1..=written {
        let path = format!("/v1/kv/key{sequence}");
        let reply =
            request_following_redirects(survivors[0], "GET", &path, &[], b"", REQUEST_TIMEOUT)
                .await
                .expect("the cluster answers");
        assert_eq!(reply.status, 200, "key{sequence} of {written} acknowledged writes is lost");
        assert_eq!(reply.body, format!("value{sequence}").as_bytes());
    }
    let longest = *longest_leaderless.lock().await;
    eprintln!("{written} writes acknowledged; longest time without a leader: {longest:?}");
    assert!(
        longest < 2 * ELECTION_TIMEOUT,
        "the cluster went {longest:?} without a leader (more than two election timeouts)"
    );
}
