//! The client commands of `raft-kv`: `put`, `get`, `del`, `cas` and `status` against a list of
//! endpoints. Each follows redirects to the leader, tries the next endpoint when one does not
//! answer, and retries writes whose outcome is unknown under one client session, so a retry
//! is never applied twice (the writes through the library's leader-following client, over
//! [`raft_kv::http_endpoint`]). Errors end the process with a non-zero status and a clear
//! message.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use raft_consensus::client::{ClientError, RetryPolicy};
use raft_kv::client::{ClientTls, HttpReply, is_tls_failure, request_following_redirects_over};
use raft_kv::http_endpoint::{HttpProposeError, cluster_client};
use raft_kv::{Command, Request};

/// How long a command keeps retrying before it gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(15);
/// How long one HTTP exchange may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The nodes a command talks to, and how.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Their HTTP addresses.
    pub endpoints: Vec<SocketAddr>,
    /// TLS settings (`--cacert`, `--cert`, `--key`) for `https://` endpoints.
    pub tls: Option<ClientTls>,
    /// Speak HTTP/2 (`--http2`) rather than HTTP/1.1.
    pub http2: bool,
}

impl Cluster {
    /// One request to `endpoint`, following redirects, over the cluster's protocol.
    pub async fn request(
        &self,
        endpoint: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<HttpReply> {
        let tls = self.tls.as_ref();
        request_following_redirects_over(
            self.http2,
            tls,
            endpoint,
            method,
            path,
            headers,
            body,
            REQUEST_TIMEOUT,
        )
        .await
    }
}

/// Parses `--endpoints` (comma-separated `http://HOST:PORT`, or `https://HOST:PORT` with
/// `tls`; a bare `HOST:PORT` takes the scheme `tls` implies).
pub fn parse_cluster(text: &str, tls: Option<ClientTls>) -> anyhow::Result<Cluster> {
    let mut endpoints = Vec::new();
    for endpoint in text.split(',').map(str::trim).filter(|endpoint| !endpoint.is_empty()) {
        let authority = match (endpoint.split_once("://"), tls.is_some()) {
            (Some(("http", _)), true) => {
                bail!("endpoint {endpoint:?} is plain http but --cacert asks for TLS: use https://")
            }
            (Some(("https", _)), false) => {
                bail!("endpoint {endpoint:?} is https: give the cluster's CA with --cacert FILE")
            }
            (Some(("http" | "https", authority)), _) => authority,
            (Some(_), _) => bail!("endpoint {endpoint:?} is not http(s)://HOST:PORT"),
            (None, _) => endpoint,
        };
        let authority = authority.trim_end_matches('/');
        let address = authority
            .to_socket_addrs()
            .with_context(|| format!("endpoint {endpoint:?} is not http(s)://HOST:PORT"))?
            .next()
            .ok_or_else(|| anyhow!("endpoint {endpoint:?} resolves to no address"))?;
        endpoints.push(address);
    }
    if endpoints.is_empty() {
        bail!("--endpoints names no endpoint");
    }
    Ok(Cluster { endpoints, tls, http2: false })
}

/// `--endpoints` as a list of URLs, each with a scheme (`http://` added where missing).
#[cfg(feature = "etcd")]
pub fn endpoint_urls(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty())
        .map(|endpoint| {
            if endpoint.contains("://") {
                endpoint.to_owned()
            } else {
                format!("http://{endpoint}")
            }
        })
        .collect()
}

/// One request to the cluster: tries each endpoint in turn (following redirects), and keeps
/// trying while the answer is "no leader" or "outcome unknown", until [`GIVE_UP_AFTER`].
async fn send(
    cluster: &Cluster,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> anyhow::Result<HttpReply> {
    let started = Instant::now();
    let mut last_problem = String::from("no endpoint tried");
    for attempt in 0.. {
        let endpoint = cluster.endpoints[attempt % cluster.endpoints.len()];
        match cluster.request(endpoint, method, path, headers, body).await {
            Ok(reply) if matches!(reply.status, 503 | 504) => {
                last_problem = format!("{endpoint} answered {}: {}", reply.status, text(&reply));
            }
            Ok(reply) => return Ok(reply),
            Err(error) if is_tls_failure(&error) => {
                bail!("TLS with {endpoint} failed: {error}")
            }
            Err(error) => last_problem = format!("{endpoint}: {error}"),
        }
        if started.elapsed() > GIVE_UP_AFTER {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt as u64 % 5 + 1))).await;
    }
    bail!("the cluster did not answer within {GIVE_UP_AFTER:?}; last: {last_problem}")
}

fn text(reply: &HttpReply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// One invocation's write, under a session of its own (a random client id, sequence 1),
/// through the library's leader-following client: it follows redirects to the leader, tries
/// the next endpoint when one does not answer, and retries after an unknown outcome, pausing
/// 100 to 500 ms, for at most [`GIVE_UP_AFTER`]. A final answer (`4xx`,
/// `500`) is returned as the reply.
async fn write(cluster: &Cluster, command: Command) -> anyhow::Result<HttpReply> {
    let policy = RetryPolicy {
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        deadline: GIVE_UP_AFTER,
        max_attempts: u32::MAX,
    };
    let client =
        cluster_client(&cluster.endpoints, cluster.tls.clone(), cluster.http2, REQUEST_TIMEOUT)?
            .with_policy(policy);
    let client_id = RandomState::new().hash_one(std::process::id()) | 1;
    let request = Request { session: Some((client_id, 1)), command };
    match client.propose_deduplicated(request.encode()).await {
        Ok(body) => Ok(HttpReply { status: 200, headers: Vec::new(), body }),
        Err(ClientError::Rejected { error: HttpProposeError::Status { reply, .. }, .. }) => {
            Ok(reply)
        }
        Err(ClientError::Rejected { error: HttpProposeError::Io { address, error }, .. }) => {
            bail!("TLS with {address} failed: {error}")
        }
        Err(ClientError::GaveUp { last: Some((_, last)), .. }) => {
            bail!("the cluster did not answer within {GIVE_UP_AFTER:?}; last: {last}")
        }
        Err(error) => Err(error.into()),
    }
}

fn fail_unless_ok(reply: &HttpReply) -> anyhow::Result<()> {
    if reply.status != 200 {
        bail!("the server answered {}: {}", reply.status, text(reply));
    }
    Ok(())
}

/// `raft-kv put KEY VALUE`.
pub async fn put(cluster: &Cluster, key: &str, value: &str) -> anyhow::Result<()> {
    let reply = write(cluster, Command::Put { key: key.into(), value: value.into() }).await?;
    fail_unless_ok(&reply)?;
    println!("{}", text(&reply));
    Ok(())
}

/// `raft-kv get KEY`: prints the value.
pub async fn get(cluster: &Cluster, key: &str) -> anyhow::Result<()> {
    let reply = send(cluster, "GET", &format!("/v1/kv/{key}"), &[], b"").await?;
    if reply.status == 404 {
        bail!("key {key:?} not found");
    }
    fail_unless_ok(&reply)?;
    println!("{}", text(&reply));
    Ok(())
}

/// `raft-kv del KEY`.
pub async fn delete(cluster: &Cluster, key: &str) -> anyhow::Result<()> {
    let reply = write(cluster, Command::Delete { key: key.into() }).await?;
    fail_unless_ok(&reply)?;
    println!("{}", text(&reply));
    Ok(())
}

/// `raft-kv cas KEY NEW [--expected OLD]` (without `--expected`, the key must be absent).
pub async fn compare_and_swap(
    cluster: &Cluster,
    key: &str,
    expected: Option<&str>,
    new: &str,
) -> anyhow::Result<()> {
    let command = Command::CompareAndSwap {
        key: key.into(),
        expected: expected.map(Into::into),
        new: new.into(),
    };
    let reply = write(cluster, command).await?;
    if reply.status == 409 {
        // `{"swapped": false, ...}` is the compare-and-swap's own answer; any other 409 (a
        // session refusal such as `session_conflict`) is an error like the rest.
        let not_swapped = reply.json().is_ok_and(|answer| answer["swapped"] == false);
        if not_swapped {
            bail!("not swapped: {}", text(&reply));
        }
        bail!("the server answered 409: {}", text(&reply));
    }
    fail_unless_ok(&reply)?;
    println!("{}", text(&reply));
    Ok(())
}

/// `raft-kv member list`: prints the members JSON of the first endpoint that answers.
pub async fn member_list(cluster: &Cluster) -> anyhow::Result<()> {
    let reply = send(cluster, "GET", "/v1/members", &[], b"").await?;
    fail_unless_ok(&reply)?;
    println!("{}", text(&reply));
    Ok(())
}

/// `raft-kv member add ID RAFT_ADDR HTTP_ADDR`: adds a voter and prints the members. A retry
/// after an unknown outcome is safe: the server answers 200 for a node already added.
pub async fn member_add(
    cluster: &Cluster,
    id: u64,
    raft_addr: &str,
    http_addr: &str,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "id": id, "raft_addr": raft_addr, "http_addr": http_addr });
    let reply = send_change(cluster, "POST", "/v1/members", body.to_string().as_bytes()).await?;
    fail_unless_ok(&reply)?;
    println!("{}", text(&reply));
    Ok(())
}

/// `raft-kv member remove ID`: removes a member and prints the members.
pub async fn member_remove(cluster: &Cluster, id: u64) -> anyhow::Result<()> {
    let reply = send_change(cluster, "DELETE", &format!("/v1/members/{id}"), b"").await?;
    fail_unless_ok(&reply)?;
    println!("{}", text(&reply));
    Ok(())
}

/// `raft-kv transfer-leader ID`: prints `{"leader": ID}` once ID leads.
pub async fn transfer_leader(cluster: &Cluster, id: u64) -> anyhow::Result<()> {
    let body = serde_json::json!({ "id": id });
    let reply = send_change(cluster, "POST", "/v1/leader", body.to_string().as_bytes()).await?;
    fail_unless_ok(&reply)?;
    println!("{}", text(&reply));
    Ok(())
}

/// A membership request: like [`send`], and it also retries `409 change_in_progress` (a
/// change running when it came, or the same change retried) until the deadline.
async fn send_change(
    cluster: &Cluster,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<HttpReply> {
    let started = Instant::now();
    loop {
        let reply = send(cluster, method, path, &[], body).await?;
        let busy = reply.status == 409 && text(&reply).contains("change_in_progress");
        if !busy || started.elapsed() > GIVE_UP_AFTER {
            return Ok(reply);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `raft-kv status`: the first endpoint that answers.
pub async fn status(cluster: &Cluster) -> anyhow::Result<()> {
    let mut last_problem = String::new();
    for endpoint in &cluster.endpoints {
        match cluster.request(*endpoint, "GET", "/v1/status", &[], b"").await {
            Ok(reply) => {
                fail_unless_ok(&reply)?;
                println!("{}", text(&reply));
                return Ok(());
            }
            Err(error) => last_problem = format!("{endpoint}: {error}"),
        }
    }
    bail!("no endpoint answered: {last_problem}")
}
