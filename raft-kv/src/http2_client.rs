//! An HTTP/2 client connection to one `raft-kv` node: many requests at once over one TCP (or
//! TLS) connection, as etcd's gRPC clients do. Used by `raft-kv --http2` (the command-line
//! client) and `raft-kv bench --http2 --connections N` (clients sharing N connections).
//!
//! Plain connections start HTTP/2 by prior knowledge (the server tells HTTP/2's preface from
//! HTTP/1.1); TLS connections agree on `h2` through ALPN.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use hyper::http;
use tokio::net::TcpStream;

use crate::client::{ClientTls, HttpReply};

/// Largest response body read into memory (a value is at most a few MiB; status and
/// metrics pages are smaller).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Streams opened before the server's settings say how many it allows (hyper's figure).
const STREAMS_BEFORE_SETTINGS: usize = 100;
/// Flow-control windows: how much of answers the server may send ahead of our reading
/// (hyper's client figures, so that a value of a few MiB needs few round trips).
const STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 5 * 1024 * 1024;
/// How long the server has to send its settings (answer the first ping).
const SETTINGS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest answer head (decoded header list) accepted.
const MAX_ANSWER_HEAD_BYTES: u32 = 16 * 1024;

/// One HTTP/2 connection. Clones share it: each request is a stream of its own.
///
/// Built on the `h2` crate directly (hyper's HTTP/2 is built on it too): a request is sent
/// from the task that makes it, without hyper's hand-off to the connection's task and, for a
/// request with a body, a task of its own to send the body. The load generator's CPU per
/// request is what this saves (`BENCHMARKS.md`).
#[derive(Clone, Debug)]
pub struct Http2Connection {
    sender: SendRequest<Bytes>,
    authority: String,
    closed: Arc<AtomicBool>,
}

impl Http2Connection {
    /// Connects to `address` (over TLS with `tls`), completes HTTP/2's handshake and waits
    /// for the server's settings (within 10 s), so that no request exceeds its stream limit.
    pub async fn open(address: SocketAddr, tls: Option<&ClientTls>) -> io::Result<Http2Connection> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, closed) = match tls {
            None => handshake(stream).await?,
            Some(tls) => handshake(tls.connect_http2(address, stream).await?).await?,
        };
        Ok(Http2Connection { sender, authority: address.to_string(), closed })
    }

    /// Whether the connection can take requests (false once it broke or the server closed it).
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Sends one request and reads its whole answer. `body` is sent without a copy.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> io::Result<HttpReply> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.authority))
            .version(http::Version::HTTP_2);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(()).map_err(invalid_request)?;
        let (status, headers, body) = self.exchange(request, body).await?;
        let headers = headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect();
        Ok(HttpReply { status, headers, body: body.to_vec() })
    }

    /// Sends one request whose path is already a URI path (with query), and returns only the
    /// status code, reading and dropping the body: the load generator's call.
    pub async fn status_of(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> io::Result<u16> {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(invalid_request)?;
        let mut request = http::Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        Ok(self.exchange(request, body).await?.0)
    }

    async fn exchange(
        &self,
        request: http::Request<()>,
        body: Bytes,
    ) -> io::Result<(u16, http::HeaderMap, Bytes)> {
        let mut request = request;
        // As hyper's client does: the server may refuse a body over its limit before reading
        // it.
        if !body.is_empty() || matches!(*request.method(), http::Method::PUT | http::Method::POST) {
            request.headers_mut().insert(http::header::CONTENT_LENGTH, body.len().into());
        }
        // `SendRequest` is a handle; a clone per request lets many be in flight at once.
        // `ready` waits while the server's limit on concurrent streams is reached.
        let mut sender = self.sender.clone().ready().await.map_err(|error| self.failed(error))?;
        let (response, mut send) =
            sender.send_request(request, body.is_empty()).map_err(|error| self.failed(error))?;
        if !body.is_empty() {
            // Queued whole and sent as the server's flow-control window allows.
            send.send_data(body, true).map_err(|error| self.failed(error))?;
        }
        let (parts, mut received) =
            response.await.map_err(|error| self.failed(error))?.into_parts();
        let mut answer = BytesMut::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.map_err(|error| self.failed(error))?;
            // Read, so the server may send as much again.
            let _ = received.flow_control().release_capacity(chunk.len());
            if answer.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the answer is over {MAX_RESPONSE_BYTES} bytes"),
                ));
            }
            if answer.is_empty() && received.is_end_stream() {
                // The whole body in one frame (every key answer): no copy.
                return Ok((parts.status.as_u16(), parts.headers, chunk));
            }
            answer.extend_from_slice(&chunk);
        }
        Ok((parts.status.as_u16(), parts.headers, answer.freeze()))
    }
}

impl Http2Connection {
    /// `error` as an I/O error; the connection counts as closed from now on when the error
    /// is the connection's (a `GOAWAY` from the server, a broken socket) rather than one
    /// stream's, though its task may still be finishing the streams in flight.
    fn failed(&self, error: h2::Error) -> io::Error {
        if error.is_go_away() || error.is_io() {
            self.closed.store(true, Ordering::Release);
        }
        h2_error(error)
    }
}

/// HTTP/2's handshake over `stream`; the connection is driven by a task of its own until it
/// closes, which sets the flag returned.
async fn handshake<S>(stream: S) -> io::Result<(SendRequest<Bytes>, Arc<AtomicBool>)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::Builder::new()
        .initial_max_send_streams(STREAMS_BEFORE_SETTINGS)
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_header_list_size(MAX_ANSWER_HEAD_BYTES)
        .handshake(stream)
        .await
        .map_err(h2_error)?;
    let mut connection = connection;
    let ping = connection.ping_pong();
    let closed = Arc::new(AtomicBool::new(false));
    let closing = Arc::clone(&closed);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!("HTTP/2 connection ended: {error}");
        }
        closing.store(true, Ordering::Release);
    });
    // A server sends its settings first, so once our ping is answered they are known: the
    // clients sharing this connection then never open more streams than it allows (past
    // its limit, a stream is refused).
    if let Some(mut ping) = ping {
        let answered = tokio::time::timeout(SETTINGS_TIMEOUT, ping.ping(h2::Ping::opaque()));
        answered
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "the HTTP/2 server sent no settings")
            })?
            .map_err(h2_error)?;
    }
    Ok((sender, closed))
}

fn h2_error(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error.into_io().unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    io::Error::other(error)
}

fn invalid_request(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("invalid HTTP request: {error}"))
}
