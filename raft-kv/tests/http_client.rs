//! The library's leader-following client over raft-kv's HTTP API ([`raft_kv::http_endpoint`]),
//! over HTTP/1.1 and HTTP/2, against three servers in one process on loopback: it reaches the leader from a follower,
//! a retried write (the same session stamp) is answered without being applied again, and it
//! follows a new leader once the leader stops. Waits are for conditions, with deadlines.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::ports::free_addresses;
use raft_consensus::NodeId;
use raft_consensus::client::{ClientError, RetryPolicy};
use raft_kv::client::{HttpReply, request};
use raft_kv::http_endpoint::{HttpProposeError, cluster_client};
use raft_kv::server::{Limits, Peer, ServerConfig, SnapshotPolicy, run};
use raft_kv::{Command, Request};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(20);

async fn http(address: SocketAddr, method: &str, path: &str) -> Option<HttpReply> {
    request(address, method, path, &[], b"", Duration::from_secs(2)).await.ok()
}

struct Servers {
    peers: Vec<Peer>,
    stops: Vec<Option<oneshot::Sender<()>>>,
    tasks: Vec<Option<JoinHandle<anyhow::Result<()>>>>,
    _directory: tempfile::TempDir,
}

impl Servers {
    fn start() -> Servers {
        let addresses = free_addresses(6);
        let peers: Vec<Peer> = (0..3)
            .map(|position| Peer {
                id: NodeId(position as u64 + 1),
                raft_addr: addresses[position],
                http_addr: addresses[3 + position],
            })
            .collect();
        let directory = tempfile::tempdir().unwrap();
        let mut stops = Vec::new();
        let mut tasks = Vec::new();
        for me in &peers {
            let config = ServerConfig {
                id: me.id,
                cluster_id: 12,
                data_dir: directory.path().join(format!("node{}", me.id.0)),
                raft_addr: me.raft_addr,
                http_addr: me.http_addr,
                peers: peers.iter().filter(|peer| peer.id != me.id).cloned().collect(),
                join: false,
                limits: Limits::default(),
                snapshots: SnapshotPolicy::default(),
                lease_reads: false,
                peer_tls: None,
                http_tls: None,
                http: raft_kv::http_server::HttpLimits::default(),
                allow_plain_peers: true,
            };
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(Some(stop));
            tasks.push(Some(tokio::spawn(run(config, async move {
                let _ = stopped.await;
            }))));
        }
        Servers { peers, stops, tasks, _directory: directory }
    }

    /// The leader as a running server other than `excluded` reports it.
    async fn leader(&self, excluded: Option<NodeId>) -> NodeId {
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < DEADLINE, "no leader elected");
            for peer in self.peers.iter().filter(|peer| Some(peer.id) != excluded) {
                let Some(reply) = http(peer.http_addr, "GET", "/v1/status").await else { continue };
                let leader = reply.json().ok().and_then(|status| status["leader_id"].as_u64());
                if let Some(leader) = leader.filter(|id| Some(NodeId(*id)) != excluded) {
                    return NodeId(leader);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running server reports `leader` as the leader.
    async fn all_follow(&self, leader: NodeId) {
        let started = Instant::now();
        for peer in &self.peers {
            loop {
                assert!(started.elapsed() < DEADLINE, "{} does not follow {leader}", peer.id);
                let reply = http(peer.http_addr, "GET", "/v1/status").await;
                let known = reply
                    .and_then(|reply| reply.json().ok())
                    .and_then(|status| status["leader_id"].as_u64());
                if known == Some(leader.0) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    fn addresses_starting_at(&self, first: NodeId) -> Vec<SocketAddr> {
        let mut peers = self.peers.clone();
        peers.sort_by_key(|peer| peer.id != first);
        peers.iter().map(|peer| peer.http_addr).collect()
    }

    async fn stop(&mut self, id: NodeId) {
        let position = (id.0 - 1) as usize;
        if let Some(stop) = self.stops[position].take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.tasks[position].take() {
            let _ = task.await;
        }
    }

    async fn stop_all(mut self) {
        for id in 1..=3 {
            self.stop(NodeId(id)).await;
        }
    }
}

fn put(session: Option<(u64, u64)>, key: &str, value: &str) -> Vec<u8> {
    let command = Command::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() };
    Request { session, command }.encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reaches_the_leader_over_http_and_a_retry_is_applied_once() {
    the_client_reaches_the_leader_and_a_retry_is_applied_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reaches_the_leader_over_http2_and_a_retry_is_applied_once() {
    the_client_reaches_the_leader_and_a_retry_is_applied_once(true).await;
}

async fn the_client_reaches_the_leader_and_a_retry_is_applied_once(http2: bool) {
    let mut servers = Servers::start();
    let leader = servers.leader(None).await;
    let follower = servers.peers.iter().map(|peer| peer.id).find(|id| *id != leader).unwrap();
    let mut addresses = servers.addresses_starting_at(follower);
    let leader_address = servers.peers[(leader.0 - 1) as usize].http_addr;
    // The leader last: two attempts reach it only by following the first one's redirect.
    addresses.retain(|address| *address != leader_address);
    addresses.push(leader_address);
    servers.all_follow(leader).await;
    let two_attempts = RetryPolicy { max_attempts: 2, ..RetryPolicy::default() };
    let hinted = cluster_client(&addresses, None, http2, Duration::from_secs(5))
        .unwrap()
        .with_policy(two_attempts);
    hinted.propose(put(None, "hinted", "yes")).await.expect("the redirect's hint is followed");
    assert_eq!(hinted.leader(), Some(NodeId(3)), "the leader is the third address");
    let client = cluster_client(&addresses, None, http2, Duration::from_secs(5)).unwrap();

    // From a follower to the leader: the redirect's Location names the member to go to.
    let first = put(Some((42, 1)), "colour", "blue");
    let answer = client.propose_deduplicated(first.clone()).await.expect("the leader writes");
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let index = answer["index"].as_u64().expect("a put answers its index");
    let cached = client.leader().map(|member| addresses[(member.0 - 1) as usize]);
    assert_eq!(cached, Some(leader_address));

    // Another writer changes the key; the first write's retry is answered, not applied again.
    client.propose(put(None, "colour", "red")).await.expect("the second write");
    let retried = client.propose_deduplicated(first).await.expect("the retry is answered");
    let retried: serde_json::Value = serde_json::from_slice(&retried).unwrap();
    assert_eq!(retried["index"].as_u64(), Some(index), "the first write's answer");
    let read = http(leader_address, "GET", "/v1/kv/colour").await.unwrap();
    assert_eq!(read.body, b"red", "the retry did not write blue again");

    // A final answer is returned as it is.
    let conflict = client.propose_deduplicated(put(Some((42, 1)), "colour", "green")).await;
    match conflict {
        Err(ClientError::Rejected { error: HttpProposeError::Status { reply, .. }, .. }) => {
            assert_eq!(reply.status, 409);
        }
        other => panic!("expected a 409 session conflict, got {other:?}"),
    }

    // The leader stops: the client moves on to the new one.
    servers.stop(leader).await;
    let answer = client
        .propose_deduplicated(put(Some((42, 2)), "colour", "after"))
        .await
        .expect("a new leader takes the write");
    assert!(serde_json::from_slice::<serde_json::Value>(&answer).unwrap()["index"].is_u64());
    let new_leader = servers.leader(Some(leader)).await;
    let cached = client.leader().map(|member| addresses[(member.0 - 1) as usize]);
    assert_eq!(cached, Some(servers.peers[(new_leader.0 - 1) as usize].http_addr));
    servers.stop_all().await;
}
