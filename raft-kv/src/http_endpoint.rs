//! [`HttpEndpoint`]: one `raft-kv` server as an [`Endpoint`] of the library's leader-following
//! [`Client`], so that a client program proposes writes through whichever server leads.
//!
//! The bytes a client proposes are a [`Request`] in raft-kv's encoding (with its session, when
//! deduplicated); the endpoint sends it as the HTTP request that carries it (`PUT` or `DELETE
//! /v1/kv/KEY`, `POST /v1/cas/KEY` with both values in base64, the session in `X-Client-Id`
//! and `X-Request-Seq`) to its one server over HTTP/1.1 or HTTP/2 (a connection per
//! request either way), without following redirects, and sorts the answer into a [`Failure`]:
//!
//! | answer | [`Failure`] |
//! |---|---|
//! | `200` | none: the body is the result |
//! | `307` to the leader | [`Failure::NotLeader`], hinting the member whose address `Location` names |
//! | `503` (definitely not applied: no leader, leadership lost or in transfer, stopped) | [`Failure::Unavailable`] |
//! | `504` (`outcome_unknown`) | [`Failure::OutcomeUnknown`] |
//! | another status (`400`, `404`, `409`, `413`, `500`) | [`Failure::Final`] |
//! | the connection refused | [`Failure::Unavailable`] |
//! | a TLS failure (a certificate refused) | [`Failure::Final`] |
//! | any other I/O error or a timeout (the request may have arrived) | [`Failure::OutcomeUnknown`] |
//!
//! The members' ids are their positions in the address list (`NodeId(1)` for the first): a
//! client knows the servers' addresses, not their node ids.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raft_consensus::NodeId;
use raft_consensus::client::{Client, Endpoint, Failure, NoMembers};

use crate::base64;
use crate::client::{ClientTls, HttpReply, is_tls_failure, request_over};
use crate::command::{Command, CommandError, Request};

/// One server of the cluster, reached over HTTP(S).
#[derive(Clone, Debug)]
pub struct HttpEndpoint {
    /// This server's HTTP address.
    address: SocketAddr,
    /// Every member's address, in the client's order: member `i` is `NodeId(i + 1)`.
    members: Arc<[SocketAddr]>,
    tls: Option<ClientTls>,
    /// HTTP/2 rather than HTTP/1.1.
    http2: bool,
    /// How long one exchange may take.
    timeout: Duration,
}

/// A client of the servers at `addresses` (over TLS with `tls`, HTTP/2 with `http2`), each
/// exchange bounded by `timeout`, with the library's default retry policy.
pub fn cluster_client(
    addresses: &[SocketAddr],
    tls: Option<ClientTls>,
    http2: bool,
    timeout: Duration,
) -> Result<Client<HttpEndpoint>, NoMembers> {
    let members: Arc<[SocketAddr]> = addresses.into();
    Client::new(addresses.iter().zip(1..).map(|(address, id)| {
        let endpoint = HttpEndpoint {
            address: *address,
            members: Arc::clone(&members),
            tls: tls.clone(),
            http2,
            timeout,
        };
        (NodeId(id), endpoint)
    }))
}

/// Why a server did not return a write's result.
#[derive(Debug)]
pub enum HttpProposeError {
    /// The proposed bytes are not a write this endpoint can send: not a [`Request`], a get, or
    /// a key that is not UTF-8 (nothing was sent).
    NotAWrite(String),
    /// The server redirected to the leader at `location`: the member at that address, if it
    /// is one.
    Redirect {
        /// The server.
        address: SocketAddr,
        /// The `Location` header (empty when missing).
        location: String,
        /// The member `location` names.
        leader_hint: Option<NodeId>,
    },
    /// The server answered with a status other than `200` and `307`.
    Status {
        /// The server.
        address: SocketAddr,
        /// Its answer.
        reply: HttpReply,
    },
    /// The exchange failed.
    Io {
        /// The server.
        address: SocketAddr,
        /// The error.
        error: io::Error,
    },
}

impl fmt::Display for HttpProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpProposeError::NotAWrite(reason) => write!(f, "not a write: {reason}"),
            HttpProposeError::Redirect { address, location, .. } => {
                write!(f, "{address} redirected to {location:?}")
            }
            HttpProposeError::Status { address, reply } => write!(
                f,
                "{address} answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
            HttpProposeError::Io { address, error } => write!(f, "{address}: {error}"),
        }
    }
}

impl std::error::Error for HttpProposeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpProposeError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The HTTP request that carries a write: method, path, session headers and body.
type HttpWrite = (&'static str, String, Vec<(&'static str, String)>, Vec<u8>);

/// The HTTP request for the raft-kv request encoded in `bytes`.
fn http_write(bytes: &[u8]) -> Result<HttpWrite, HttpProposeError> {
    let not_a_write = |reason: String| HttpProposeError::NotAWrite(reason);
    let request = Request::decode(bytes).map_err(|CommandError(reason)| not_a_write(reason))?;
    let headers = match request.session {
        Some((client, sequence)) => {
            vec![("X-Client-Id", client.to_string()), ("X-Request-Seq", sequence.to_string())]
        }
        None => Vec::new(),
    };
    let path_key = |key: Vec<u8>| {
        String::from_utf8(key).map_err(|_| not_a_write(String::from("the key is not UTF-8")))
    };
    Ok(match request.command {
        Command::Get { .. } => return Err(not_a_write(String::from("a get is a read"))),
        Command::Put { key, value } => {
            ("PUT", format!("/v1/kv/{}", path_key(key)?), headers, value)
        }
        Command::Delete { key } => {
            ("DELETE", format!("/v1/kv/{}", path_key(key)?), headers, Vec::new())
        }
        Command::CompareAndSwap { key, expected, new } => {
            let body = serde_json::json!({
                "expected_base64": expected.as_deref().map(base64::encode),
                "new_base64": base64::encode(&new),
            });
            ("POST", format!("/v1/cas/{}", path_key(key)?), headers, body.to_string().into_bytes())
        }
    })
}

impl HttpEndpoint {
    /// One request to this server, over the endpoint's protocol, within its timeout.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> io::Result<HttpReply> {
        let tls = self.tls.as_ref();
        request_over(self.http2, tls, self.address, method, path, headers, &body, self.timeout)
            .await
    }

    /// The member whose address `location` (`http(s)://HOST:PORT/...`) names.
    fn member_at(&self, location: &str) -> Option<NodeId> {
        let rest = location.split_once("://").map_or(location, |(_, rest)| rest);
        let authority = rest.split('/').next()?;
        let address: SocketAddr = authority.parse().ok()?;
        let position = self.members.iter().position(|member| *member == address)?;
        Some(NodeId(position as u64 + 1))
    }
}

impl Endpoint for HttpEndpoint {
    type Error = HttpProposeError;

    async fn propose(&self, command: Bytes) -> Result<Vec<u8>, HttpProposeError> {
        let (method, path, headers, body) = http_write(&command)?;
        let headers: Vec<(&str, String)> = headers;
        let address = self.address;
        let reply = self
            .exchange(method, &path, &headers, body)
            .await
            .map_err(|error| HttpProposeError::Io { address, error })?;
        match reply.status {
            200 => Ok(reply.body),
            307 => {
                let location = reply.header("location").unwrap_or_default().to_owned();
                let leader_hint = self.member_at(&location);
                Err(HttpProposeError::Redirect { address, location, leader_hint })
            }
            _ => Err(HttpProposeError::Status { address, reply }),
        }
    }

    fn classify(error: &HttpProposeError) -> Failure {
        match error {
            HttpProposeError::NotAWrite(_) => Failure::Final,
            HttpProposeError::Redirect { leader_hint, .. } => {
                Failure::NotLeader { leader_hint: *leader_hint }
            }
            HttpProposeError::Status { reply, .. } => match reply.status {
                503 => Failure::Unavailable,
                504 => Failure::OutcomeUnknown,
                _ => Failure::Final,
            },
            HttpProposeError::Io { error, .. } if is_tls_failure(error) => Failure::Final,
            HttpProposeError::Io { error, .. }
                if error.kind() == io::ErrorKind::ConnectionRefused =>
            {
                Failure::Unavailable
            }
            HttpProposeError::Io { .. } => Failure::OutcomeUnknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> HttpEndpoint {
        let members: Arc<[SocketAddr]> =
            ["127.0.0.1:8001", "127.0.0.1:8002"].map(|text| text.parse().unwrap()).into();
        let timeout = Duration::from_secs(1);
        HttpEndpoint { address: members[0], members, tls: None, http2: false, timeout }
    }

    #[test]
    fn writes_become_their_http_requests_and_reads_are_refused() {
        let put = Request {
            session: Some((7, 3)),
            command: Command::Put { key: b"k".to_vec(), value: b"v".to_vec() },
        };
        let (method, path, headers, body) = http_write(&put.encode()).unwrap();
        assert_eq!((method, path.as_str(), body.as_slice()), ("PUT", "/v1/kv/k", &b"v"[..]));
        assert_eq!(
            headers,
            [("X-Client-Id", String::from("7")), ("X-Request-Seq", String::from("3"))]
        );
        let cas = Request {
            session: None,
            command: Command::CompareAndSwap {
                key: b"k".to_vec(),
                expected: None,
                new: b"\xff".to_vec(),
            },
        };
        let (method, path, headers, body) = http_write(&cas.encode()).unwrap();
        assert_eq!((method, path.as_str(), headers.len()), ("POST", "/v1/cas/k", 0));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json, serde_json::json!({ "expected_base64": null, "new_base64": "/w==" }));
        let delete = Request { session: None, command: Command::Delete { key: b"k".to_vec() } };
        assert_eq!(http_write(&delete.encode()).unwrap().0, "DELETE");
        let get = Request { session: None, command: Command::Get { key: b"k".to_vec() } };
        assert!(matches!(http_write(&get.encode()), Err(HttpProposeError::NotAWrite(_))));
        assert!(matches!(http_write(b"junk"), Err(HttpProposeError::NotAWrite(_))));
    }

    #[test]
    fn answers_sort_into_failures() {
        let endpoint = endpoint();
        assert_eq!(endpoint.member_at("http://127.0.0.1:8002/v1/kv/k"), Some(NodeId(2)));
        assert_eq!(endpoint.member_at("https://127.0.0.1:8001/v1/cas/k"), Some(NodeId(1)));
        assert_eq!(endpoint.member_at("http://127.0.0.1:9000/v1/kv/k"), None);
        assert_eq!(endpoint.member_at("nonsense"), None);
        let address = endpoint.address;
        let status = |status| HttpProposeError::Status {
            address,
            reply: HttpReply { status, headers: Vec::new(), body: Vec::new() },
        };
        assert_eq!(HttpEndpoint::classify(&status(503)), Failure::Unavailable);
        assert_eq!(HttpEndpoint::classify(&status(504)), Failure::OutcomeUnknown);
        for final_status in [400, 404, 409, 413, 500] {
            assert_eq!(HttpEndpoint::classify(&status(final_status)), Failure::Final);
        }
        let io = |kind| HttpProposeError::Io { address, error: io::Error::from(kind) };
        assert_eq!(
            HttpEndpoint::classify(&io(io::ErrorKind::ConnectionRefused)),
            Failure::Unavailable
        );
        assert_eq!(HttpEndpoint::classify(&io(io::ErrorKind::TimedOut)), Failure::OutcomeUnknown);
        assert_eq!(
            HttpEndpoint::classify(&io(io::ErrorKind::ConnectionReset)),
            Failure::OutcomeUnknown
        );
        let redirect = HttpProposeError::Redirect {
            address,
            location: String::new(),
            leader_hint: Some(NodeId(2)),
        };
        assert_eq!(
            HttpEndpoint::classify(&redirect),
            Failure::NotLeader { leader_hint: Some(NodeId(2)) }
        );
    }
}
