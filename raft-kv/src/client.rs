//! A minimal HTTP/1.1 client for the `raft-kv` API (one request per connection), used by the
//! tests and the command-line client, over plain TCP or TLS ([`ClientTls`]), and the same
//! calls over HTTP/2 ([`Http2Connection`], `--http2`). It follows the service's `307`
//! redirects to the leader.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::http2_client::Http2Connection;
pub use crate::tls::ClientTls;

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A client connection's byte stream: plain TCP, or TLS over it.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for S {}

/// Connects to `address`, over TLS when `tls` is given.
pub async fn connect(
    address: SocketAddr,
    tls: Option<&ClientTls>,
) -> io::Result<Box<dyn ClientStream>> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(match tls {
        None => Box::new(stream),
        Some(tls) => Box::new(tls.connect(address, stream).await?),
    })
}

/// Sends one request to `address` over plain HTTP and reads the whole response, within
/// `timeout`.
pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpReply> {
    request_with(None, address, method, path, headers, body, timeout).await
}

/// Like [`request`], over TLS when `tls` is given.
pub async fn request_with(
    tls: Option<&ClientTls>,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpReply> {
    let exchange = async {
        let mut stream = connect(address, tls).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        match stream.read_to_end(&mut raw).await {
            Ok(_) => {}
            // A TLS server may close without close_notify once it has answered in full.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(error) => return Err(error),
        }
        if raw.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server closed the connection without answering (if it serves HTTPS, use \
                 https:// endpoints and --cacert)",
            ));
        }
        parse(&raw)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the server did not answer in time"))?
}

/// Like [`request`], following `307` redirects (to `http://HOST:PORT/PATH` locations).
pub async fn request_following_redirects(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpReply> {
    request_following_redirects_with(None, address, method, path, headers, body, timeout).await
}

/// Like [`request_with`], following `307` redirects (to `http://` locations without `tls`,
/// `https://` ones with it).
pub async fn request_following_redirects_with(
    tls: Option<&ClientTls>,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpReply> {
    request_following_redirects_over(false, tls, address, method, path, headers, body, timeout)
        .await
}

/// One request over HTTP/2 (a connection of its own), within `timeout`.
pub async fn request_http2(
    tls: Option<&ClientTls>,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: bytes::Bytes,
    timeout: Duration,
) -> io::Result<HttpReply> {
    let exchange = async {
        let connection = Http2Connection::open(address, tls).await?;
        connection.request(method, path, headers, body).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the server did not answer in time"))?
}

/// [`request_with`] or, with `http2`, [`request_http2`].
#[allow(clippy::too_many_arguments)]
pub async fn request_over(
    http2: bool,
    tls: Option<&ClientTls>,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpReply> {
    if http2 {
        let body = bytes::Bytes::copy_from_slice(body);
        request_http2(tls, address, method, path, headers, body, timeout).await
    } else {
        request_with(tls, address, method, path, headers, body, timeout).await
    }
}

/// Like [`request_following_redirects_with`], over HTTP/2 (a connection per node asked)
/// when `http2` is set.
#[allow(clippy::too_many_arguments)]
pub async fn request_following_redirects_over(
    http2: bool,
    tls: Option<&ClientTls>,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpReply> {
    let mut target = (address, path.to_owned());
    for _ in 0..=MAX_REDIRECTS {
        let reply =
            request_over(http2, tls, target.0, method, &target.1, headers, body, timeout).await?;
        if reply.status != 307 {
            return Ok(reply);
        }
        let location = reply.header("location").ok_or_else(|| invalid("a 307 without Location"))?;
        target = parse_location(location, tls.is_some())?;
    }
    Err(invalid("too many redirects"))
}

fn parse_location(location: &str, tls: bool) -> io::Result<(SocketAddr, String)> {
    let scheme = if tls { "https://" } else { "http://" };
    let rest = location.strip_prefix(scheme).ok_or_else(|| {
        invalid(if tls {
            "a redirect to plain http from an https server"
        } else {
            "a redirect to https: give the CA with --cacert"
        })
    })?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let address = authority.parse().map_err(|_| invalid("a Location without an IP address"))?;
    Ok((address, if path.is_empty() { String::from("/") } else { path.to_owned() }))
}

fn parse(raw: &[u8]) -> io::Result<HttpReply> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| invalid("a response without a complete head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("a response without a status code"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(HttpReply { status, headers, body: raw[split + 4..].to_vec() })
}

/// Whether `error` is a TLS failure (a certificate refused, by either side): retrying the
/// same request cannot succeed.
pub fn is_tls_failure(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("invalid HTTP response: {what}"))
}
