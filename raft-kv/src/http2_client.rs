//! An HTTP/2 client connection to one `raft-kv` node: many requests at once over one TCP (or
//! TLS) connection, as etcd's gRPC clients do. Used by `raft-kv --http2` (the command-line
//! client) and `raft-kv bench --http2 --connections N` (clients sharing N connections).
//!
//! Plain connections start HTTP/2 by prior knowledge (the server tells HTTP/2's preface from
//! HTTP/1.1); TLS connections agree on `h2` through ALPN.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::client::{ClientTls, HttpReply};

/// Largest response body read into memory (a value is at most a few MiB; status and
/// metrics pages are smaller).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// One HTTP/2 connection. Clones share it: each request is a stream of its own.
#[derive(Clone, Debug)]
pub struct Http2Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Http2Connection {
    /// Connects to `address` (over TLS with `tls`) and completes HTTP/2's handshake.
    pub async fn open(address: SocketAddr, tls: Option<&ClientTls>) -> io::Result<Http2Connection> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let sender = match tls {
            None => handshake(stream).await?,
            Some(tls) => handshake(tls.connect_http2(address, stream).await?).await?,
        };
        Ok(Http2Connection { sender, authority: address.to_string() })
    }

    /// Whether the connection can take requests (false once it broke or the server closed it).
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request and reads its whole answer. `body` is sent without a copy.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> io::Result<HttpReply> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.authority))
            .version(hyper::Version::HTTP_2);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(body)).map_err(invalid_request)?;
        let (status, headers, body) = self.exchange(request).await?;
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
        method: hyper::Method,
        path: &str,
        body: Bytes,
    ) -> io::Result<u16> {
        let uri = hyper::Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(invalid_request)?;
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = hyper::Version::HTTP_2;
        Ok(self.exchange(request).await?.0)
    }

    async fn exchange(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> io::Result<(u16, hyper::HeaderMap, Bytes)> {
        // `SendRequest` is a handle; a clone per request lets many be in flight at once.
        let mut sender = self.sender.clone();
        sender.ready().await.map_err(io::Error::other)?;
        let response = sender.send_request(request).await.map_err(io::Error::other)?;
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?
            .to_bytes();
        Ok((parts.status.as_u16(), parts.headers, body))
    }
}

/// HTTP/2's handshake over `stream`; the connection is driven by a task of its own until it
/// closes.
async fn handshake<S>(stream: S) -> io::Result<SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!("HTTP/2 connection ended: {error}");
        }
    });
    Ok(sender)
}

fn invalid_request(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("invalid HTTP request: {error}"))
}
