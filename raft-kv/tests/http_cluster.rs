//! Three `raft-kv` servers in one process on loopback (HTTP and TCP for real): writes through
//! the leader, redirects from followers, reads, and bad requests that change nothing. Waits
//! are for conditions, with deadlines.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::ports::free_addresses;
use raft_consensus::NodeId;
use raft_kv::client::{HttpReply, request};
use raft_kv::server::{Limits, Peer, ServerConfig, SnapshotPolicy, run};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(20);

/// One request, answered within the deadline.
async fn http(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> HttpReply {
    request(address, method, path, &[], body, DEADLINE).await.expect("the server answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_serves_the_http_api() {
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
    let mut servers = Vec::new();
    for me in &peers {
        let config = ServerConfig {
            id: me.id,
            cluster_id: 11,
            data_dir: directory.path().join(format!("node{}", me.id.0)),
            raft_addr: me.raft_addr,
            http_addr: me.http_addr,
            peers: peers.iter().filter(|peer| peer.id != me.id).cloned().collect(),
            join: false,
            limits: Limits::default(),
            snapshots: SnapshotPolicy::default(),
            lease_reads: true,
            peer_tls: None,
            http_tls: None,
            http: raft_kv::http_server::HttpLimits::default(),
            allow_plain_peers: true,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        servers.push(tokio::spawn(run(config, async move {
            let _ = stopped.await;
        })));
    }

    // Wait until a leader is known, through the status endpoint.
    let started = Instant::now();
    let leader_id = loop {
        assert!(started.elapsed() < DEADLINE, "no leader elected");
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(peers[0].http_addr))
                .await
        {
            let _ = stream.shutdown().await;
            let status = http(peers[0].http_addr, "GET", "/v1/status", b"").await.json().unwrap();
            if let Some(leader) = status["leader_id"].as_u64() {
                break leader;
            }
        }
        tokio::task::yield_now().await;
    };
    let leader = peers.iter().find(|peer| peer.id.0 == leader_id).unwrap();
    let follower = peers.iter().find(|peer| peer.id.0 != leader_id).unwrap();

    // A follower redirects to the same path on the leader.
    let redirected = http(follower.http_addr, "PUT", "/v1/kv/colour", b"blue").await;
    assert_eq!(redirected.status, 307);
    assert_eq!(
        redirected.header("location"),
        Some(format!("http://{}/v1/kv/colour", leader.http_addr).as_str())
    );

    // Writes and reads through the leader.
    let written = http(leader.http_addr, "PUT", "/v1/kv/colour", b"blue").await;
    assert_eq!(written.status, 200, "{}", String::from_utf8_lossy(&written.body));
    let index = written.json().unwrap()["index"].as_u64().unwrap();
    assert!(index >= 2);
    let read = http(leader.http_addr, "GET", "/v1/kv/colour", b"").await;
    assert_eq!((read.status, read.body.as_slice()), (200, b"blue".as_slice()));
    // Linearizable reads on every node, answered there (no redirect): a follower serves the
    // write acknowledged just above, with the read index it waited for.
    for peer in &peers {
        for query in ["", "?consistency=linearizable", "?consistency=lease"] {
            let read = http(peer.http_addr, "GET", &format!("/v1/kv/colour{query}"), b"").await;
            assert_eq!(
                (read.status, read.body.as_slice()),
                (200, b"blue".as_slice()),
                "node {} {query}",
                peer.id.0
            );
            let read_index: u64 = read.header("x-raft-read-index").unwrap().parse().unwrap();
            assert!(read_index >= index, "node {} read index {read_index} < {index}", peer.id.0);
        }
        let missing = http(peer.http_addr, "GET", "/v1/kv/absent", b"").await;
        assert_eq!(missing.status, 404);
        assert_eq!(missing.json().unwrap()["error"], "not_found");
    }
    let bad = http(follower.http_addr, "GET", "/v1/kv/colour?consistency=eventual", b"").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json().unwrap()["error"], "bad_consistency");
    let cas =
        http(leader.http_addr, "POST", "/v1/cas/colour", br#"{"expected":"red","new":"green"}"#)
            .await;
    assert_eq!(cas.status, 409);
    assert_eq!(cas.json().unwrap()["current"], "blue");
    let cas =
        http(leader.http_addr, "POST", "/v1/cas/colour", br#"{"expected":"blue","new":"green"}"#)
            .await;
    assert_eq!(cas.status, 200);
    assert_eq!(cas.json().unwrap()["swapped"], true);

    // Bad requests get their 4xx and write nothing.
    let before =
        http(leader.http_addr, "GET", "/v1/status", b"").await.json().unwrap()["last_log_index"]
            .clone();
    assert_eq!(http(leader.http_addr, "PUT", "/v1/kv/", b"x").await.status, 400);
    assert_eq!(http(leader.http_addr, "POST", "/v1/cas/colour", b"{not json").await.status, 400);
    let long_key = format!("/v1/kv/{}", "k".repeat(2000));
    assert_eq!(http(leader.http_addr, "PUT", &long_key, b"x").await.status, 413);
    let after =
        http(leader.http_addr, "GET", "/v1/status", b"").await.json().unwrap()["last_log_index"]
            .clone();
    assert_eq!(before, after, "a bad request wrote to the log");

    // Every node applies the writes.
    let target = after.as_u64().unwrap();
    for peer in &peers {
        let started = Instant::now();
        loop {
            let status = http(peer.http_addr, "GET", "/v1/status", b"").await.json().unwrap();
            if status["applied_index"].as_u64().unwrap() >= target {
                break;
            }
            assert!(started.elapsed() < DEADLINE, "node {} did not catch up", peer.id.0);
            tokio::task::yield_now().await;
        }
    }

    // Metrics, in Prometheus text.
    let metrics = http(leader.http_addr, "GET", "/metrics", b"").await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    for expected in [
        "raft_proposals_total ",
        "raft_commits_total ",
        "raft_applies_total ",
        "raft_elections_total ",
        "raft_term ",
        "raft_leader_changes_total ",
        "raft_kv_request_duration_seconds_bucket{le=",
        "raft_wal_sync_duration_seconds_count ",
        "raft_peer_bytes_sent_total{peer=",
        "raft_peer_bytes_received_total{peer=",
        "raft_voters 3",
        "raft_learners 0",
        "raft_configuration_joint 0",
    ] {
        assert!(text.contains(expected), "/metrics lacks {expected}:\n{text}");
    }
    let proposals: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("raft_proposals_total "))
        .and_then(|value| value.parse().ok())
        .unwrap();
    // The put and the two compare-and-swaps; the reads wrote nothing to the log.
    assert_eq!(proposals, 3, "{proposals} proposals counted");

    // The membership API: any node lists the members from its own view.
    let members = http(follower.http_addr, "GET", "/v1/members", b"").await;
    assert_eq!(members.status, 200);
    let members = members.json().unwrap();
    assert_eq!(members["leader"], leader_id);
    let listed = members["members"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    for (entry, peer) in listed.iter().zip(&peers) {
        assert_eq!(entry["id"], peer.id.0);
        assert_eq!(entry["raft_addr"], peer.raft_addr.to_string());
        assert_eq!(entry["http_addr"], peer.http_addr.to_string());
        assert_eq!(entry["voter"], true);
    }
    let status = http(follower.http_addr, "GET", "/v1/status", b"").await.json().unwrap();
    assert_eq!(status["configuration"]["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(status["configuration"]["joint"], false);
    // Changes go to the leader; bad ones are refused and change nothing.
    let spare = free_addresses(2);
    let add = |id: u64, raft: SocketAddr, http: SocketAddr| {
        format!(r#"{{"id":{id},"raft_addr":"{raft}","http_addr":"{http}"}}"#)
    };
    let body = add(4, spare[0], spare[1]);
    let redirected = http(follower.http_addr, "POST", "/v1/members", body.as_bytes()).await;
    assert_eq!(redirected.status, 307);
    let in_use = add(follower.id.0, spare[0], spare[1]);
    let refused = http(leader.http_addr, "POST", "/v1/members", in_use.as_bytes()).await;
    assert_eq!(refused.status, 400, "an id in use");
    let address_in_use = add(4, follower.raft_addr, spare[1]);
    let refused = http(leader.http_addr, "POST", "/v1/members", address_in_use.as_bytes()).await;
    assert_eq!(refused.status, 400, "an address in use");
    assert_eq!(http(leader.http_addr, "POST", "/v1/members", b"{").await.status, 400);
    let not_a_voter = http(leader.http_addr, "POST", "/v1/leader", br#"{"id":9}"#).await;
    assert_eq!(not_a_voter.status, 409);
    let before = http(leader.http_addr, "GET", "/v1/status", b"").await.json().unwrap();
    assert_eq!(before["configuration"]["voters"], serde_json::json!([1, 2, 3]));
    // Removing a node that is not a member is a no-op answered with the members.
    let gone = http(leader.http_addr, "DELETE", "/v1/members/9", b"").await;
    assert_eq!(gone.status, 200);
    assert_eq!(gone.json().unwrap()["members"].as_array().unwrap().len(), 3);
    // A transfer to a caught-up voter answers once it leads.
    let target = peers.iter().find(|peer| peer.id.0 != leader_id).unwrap();
    let body = format!(r#"{{"id":{}}}"#, target.id.0);
    let moved = http(leader.http_addr, "POST", "/v1/leader", body.as_bytes()).await;
    assert_eq!(moved.status, 200, "{}", String::from_utf8_lossy(&moved.body));
    assert_eq!(moved.json().unwrap()["leader"], target.id.0);

    for stop in stops {
        let _ = stop.send(());
    }
    for server in servers {
        server.await.unwrap().unwrap();
    }
}
