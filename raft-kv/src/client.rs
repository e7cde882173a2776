//! A minimal HTTP/1.1 client for the `raft-kv` API (one request per connection), used by the
//! tests and the command-line client. It follows the service's `307` redirects to the leader.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Sends one request to `address` and reads the whole response, within `timeout`.
pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpReply> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
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
        stream.read_to_end(&mut raw).await?;
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
    let mut target = (address, path.to_owned());
    for _ in 0..=MAX_REDIRECTS {
        let reply = request(target.0, method, &target.1, headers, body, timeout).await?;
        if reply.status != 307 {
            return Ok(reply);
        }
        let location = reply.header("location").ok_or_else(|| invalid("a 307 without Location"))?;
        target = parse_location(location)?;
    }
    Err(invalid("too many redirects"))
}

fn parse_location(location: &str) -> io::Result<(SocketAddr, String)> {
    let rest = location.strip_prefix("http://").ok_or_else(|| invalid("a non-http Location"))?;
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

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("invalid HTTP response: {what}"))
}
