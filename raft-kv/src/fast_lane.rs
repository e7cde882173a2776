//! The HTTP/1.1 fast lane: a plain connection's `PUT` and `GET /v1/kv/{key}` requests parsed,
//! answered and written without hyper and axum, the rest of the API through them unchanged.
//!
//! At 128 clients hyper's connection machinery and axum's routing and extractors cost the
//! leader about half its CPU per write (BENCHMARKS.md, issue #17); the two requests that
//! carry nearly all load are simple enough to serve from a reused buffer. A plain HTTP/1.1
//! connection starts here. Each request is parsed with `httparse` (hyper's own parser) and
//! served here only when it is plainly one of them:
//!
//! - `PUT /v1/kv/{key}` without a query, or `GET /v1/kv/{key}` with no query or only
//!   `consistency=linearizable|lease|local`, over HTTP/1.1;
//! - a key of unreserved path characters only (no `%`-escapes, nothing to decode);
//! - no header beyond `Host`, `Content-Length` (once, at most [`MAX_FAST_BODY_BYTES`] and
//!   within the HTTP body limit; none or zero on a `GET`), `Content-Type`, `User-Agent`,
//!   `Accept`, `Accept-Encoding` and `Connection: keep-alive` or `close`;
//! - the head within [`MAX_FAST_HEAD_BYTES`], and a request-in-flight permit free at once.
//!
//! Anything else (another path or method, `HEAD`, a session header, `Expect`, a chunked body,
//! HTTP/2's preface, a head or body over those sizes, a request that does not parse) hands the
//! connection, with the bytes read so far, to hyper for the rest of its life, where it is
//! served exactly as before. (Behind hyper, a request that meets the same rules on its target
//! and headers, [`key_target`] and [`is_unread_header`], goes to the same [`KvRoutes`]
//! without axum's router: `http_server.rs`, for HTTP/2, HTTPS and handed-over connections.)
//! The answers are the handlers' own (server.rs shares one function
//! per request between both lanes: [`KvRoutes`]), written as hyper writes them: status line,
//! the handler's headers, `content-length`, `date`, and `connection: close` when the client
//! asked for it. Requests sent back to back (pipelined) are answered in order.
//!
//! Waits and ends are hyper's: a request's head must arrive within `header_timeout` of the
//! connection becoming ready for it (else the connection is closed without an answer), its
//! body within `body_timeout` of the head (else `408 {"error":"body_timeout"}`; a client that
//! closes its side mid-body gets `400 {"error":"unreadable_body"}`; both close the
//! connection); a connection that moves no bytes for `idle_timeout`, waiting for a request or
//! writing an answer its client does not read, is closed. A request holds one of the
//! server's in-flight permits while it is served, not while its answer is written. At
//! shutdown the request being served is answered with `connection: close` and the connection
//! closes; one with no whole request waiting (part of a head included) closes at once. Two
//! differences remain, both in the client's favour: a whole request followed by the client
//! closing its side is still answered (hyper drops it), and a head still arriving when it
//! passes [`MAX_FAST_HEAD_BYTES`] goes to hyper, whose own header timeout starts then. A
//! connection here holds at most [`MAX_FAST_HEAD_BYTES`] + [`MAX_FAST_BODY_BYTES`] of
//! unanswered input (read before its permit is taken) and one answer.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{StatusCode, Version};
use axum::response::{IntoResponse, Response as HttpResponse};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::http_server::{Activity, HttpLimits, json_error_body, refuse};

/// The longest request head served here; a longer one goes to hyper.
pub(crate) const MAX_FAST_HEAD_BYTES: usize = 8 * 1024;
/// The largest request body served here; a larger one goes to hyper.
pub(crate) const MAX_FAST_BODY_BYTES: usize = 64 * 1024;
/// Headers parsed per request; a request with more goes to hyper.
const MAX_HEADERS: usize = 16;
/// The path prefix of the key routes.
const KV_PREFIX: &str = "/v1/kv/";

/// The two requests the fast lane serves, answered by the same code as their axum routes.
pub(crate) trait KvRoutes: Send + Sync + 'static {
    /// `PUT /v1/kv/{key}` with `value`; `target` is the request's path (for a redirect).
    fn put(&self, key: &str, value: &[u8], target: &str) -> impl Future<Output = KvAnswer> + Send;
    /// `GET /v1/kv/{key}` with `consistency` from the query, if given.
    fn get(&self, key: &str, consistency: Option<&str>) -> impl Future<Output = KvAnswer> + Send;
}

/// The answer to a key request.
pub(crate) enum KvAnswer {
    /// `200 {"index":N}`: a write applied at `N`.
    Written(u64),
    /// `200` with the value as `application/octet-stream`, and the index it was read at in
    /// the header `index_header`.
    Value { index_header: &'static str, index: u64, value: Bytes },
    /// Any other answer (errors, redirects, a key not found), as the handler built it.
    Other(HttpResponse),
}

impl IntoResponse for KvAnswer {
    fn into_response(self) -> HttpResponse {
        use axum::http::{HeaderValue, header};
        match self {
            KvAnswer::Written(index) => (
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                index_json(index),
            )
                .into_response(),
            KvAnswer::Value { index_header, index, value } => {
                (StatusCode::OK, [(index_header, HeaderValue::from(index))], value).into_response()
            }
            KvAnswer::Other(response) => response,
        }
    }
}

/// `{"index":N}`.
fn index_json(index: u64) -> String {
    format!("{{\"index\":{index}}}")
}

/// How the fast lane left a connection.
pub(crate) enum Ending {
    /// Closed: by the client, at shutdown, idle, or after `Connection: close`.
    Closed,
    /// Everything from here on goes to hyper: these bytes were read and not served.
    HandOff(BytesMut),
}

/// A request the fast lane serves, located in the input buffer.
#[derive(Debug, PartialEq, Eq)]
struct FastRequest {
    is_put: bool,
    /// The key's bytes in the buffer.
    key: std::ops::Range<usize>,
    /// The request target (path and query) in the buffer.
    target: std::ops::Range<usize>,
    /// `consistency` from a `GET`'s query.
    consistency: Option<&'static str>,
    /// `Connection: close`.
    close: bool,
    head_len: usize,
    body_len: usize,
}

/// What the bytes at the front of the input buffer are.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A request served here (its body may still be arriving).
    Fast(FastRequest),
    /// The start of a head.
    Incomplete,
    /// Anything else: hyper's.
    Other,
}

/// Classifies the request at the front of `input` (see the module documentation).
fn parse(input: &[u8], max_body_bytes: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) if input.len() < MAX_FAST_HEAD_BYTES => {
            return Parsed::Incomplete;
        }
        _ => return Parsed::Other,
    };
    if head_len > MAX_FAST_HEAD_BYTES || request.version != Some(1) {
        return Parsed::Other;
    }
    let is_put = match request.method {
        Some("PUT") => true,
        Some("GET") => false,
        _ => return Parsed::Other,
    };
    let Some(target) = request.path else { return Parsed::Other };
    let Some(KeyTarget { key, consistency }) = key_target(is_put, target) else {
        return Parsed::Other;
    };
    let mut body_len = None;
    let mut close = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
                .and_then(|text| text.parse::<usize>().ok());
            match (body_len, length) {
                (None, Some(length)) => body_len = Some(length),
                _ => return Parsed::Other,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if header.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !header.value.eq_ignore_ascii_case(b"keep-alive") {
                return Parsed::Other;
            }
        } else if !is_unread_header(name) {
            return Parsed::Other;
        }
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > MAX_FAST_BODY_BYTES.min(max_body_bytes) || (!is_put && body_len > 0) {
        return Parsed::Other;
    }
    let key_start = offset_of(input, key);
    let target_start = offset_of(input, target);
    Parsed::Fast(FastRequest {
        is_put,
        key: key_start..key_start + key.len(),
        target: target_start..target_start + target.len(),
        consistency,
        close,
        head_len,
        body_len,
    })
}

/// The key and read consistency of a key request's target (path and query), when the key
/// routes may serve it directly (see the module documentation): a plain key, and no query
/// but a `GET`'s `consistency`.
pub(crate) struct KeyTarget<'a> {
    pub(crate) key: &'a str,
    pub(crate) consistency: Option<&'static str>,
}

/// [`KeyTarget`] of a `PUT` (`is_put`) or `GET` to `target`, if served directly.
pub(crate) fn key_target(is_put: bool, target: &str) -> Option<KeyTarget<'_>> {
    let rest = target.strip_prefix(KV_PREFIX)?;
    let (key, query) = match rest.split_once('?') {
        Some((key, query)) => (key, Some(query)),
        None => (rest, None),
    };
    if key.is_empty() || !key.bytes().all(is_plain_key_byte) {
        return None;
    }
    let consistency = match (is_put, query) {
        (_, None) => None,
        (false, Some("consistency=linearizable")) => Some("linearizable"),
        (false, Some("consistency=lease")) => Some("lease"),
        (false, Some("consistency=local")) => Some("local"),
        _ => return None,
    };
    Some(KeyTarget { key, consistency })
}

/// A header that no key route reads (unlike the session headers a write reads), so a key
/// request carrying it may be served directly. `Content-Length` and `Connection` are the
/// framing's, checked by whichever lane parses the request.
pub(crate) fn is_unread_header(name: &str) -> bool {
    ["host", "content-type", "user-agent", "accept", "accept-encoding"]
        .iter()
        .any(|allowed| name.eq_ignore_ascii_case(allowed))
}

/// Where `part`, a slice of `whole`, starts in it.
fn offset_of(whole: &[u8], part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// A byte a key may hold and still need no decoding: RFC 3986's unreserved characters and
/// sub-delimiters, `:` and `@` (a path segment's characters, without `%`-escapes).
fn is_plain_key_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte)
}

/// One plain connection's limits and shared state, as the HTTP server holds them.
pub(crate) struct Lane<'a, R> {
    pub(crate) routes: &'a R,
    pub(crate) limits: &'a HttpLimits,
    /// Permits for requests in flight, shared by every connection.
    pub(crate) requests: &'a Semaphore,
    pub(crate) stopping: &'a mut watch::Receiver<bool>,
    /// When the connection last moved bytes.
    pub(crate) activity: &'a Activity,
}

impl<R: KvRoutes> Lane<'_, R> {
    /// Serves `stream`'s requests until it closes or a request is not the fast lane's.
    pub(crate) async fn serve(
        self,
        stream: &mut (impl AsyncRead + AsyncWrite + Unpin + Send),
    ) -> io::Result<Ending> {
        let mut input = BytesMut::with_capacity(4096);
        let mut output = Vec::with_capacity(1024);
        let mut check =
            tokio::time::interval(self.limits.idle_timeout.max(Duration::from_secs(1)) / 4);
        let mut stopping = *self.stopping.borrow();
        // One timer for every head, re-armed only when it goes off before the current head's
        // deadline (moving it for each request would take it out of the runtime's timer and
        // put it back every time).
        let head_timer = tokio::time::sleep(self.limits.header_timeout);
        tokio::pin!(head_timer);
        loop {
            // The head: within header_timeout of the connection being ready for it.
            let head_deadline = Instant::now() + self.limits.header_timeout;
            let request = loop {
                match parse(&input, self.limits.max_body_bytes) {
                    Parsed::Fast(request) => break request,
                    Parsed::Other => return Ok(Ending::HandOff(input)),
                    Parsed::Incomplete => {}
                }
                if stopping {
                    // At shutdown a connection without a whole head waiting is closed, one
                    // with part of a head too (as hyper does).
                    return Ok(Ending::Closed);
                }
                // Room for a read (reusing the buffer's space once its requests are answered).
                input.reserve(4096);
                tokio::select! {
                    biased;
                    read = stream.read_buf(&mut input) => {
                        if read? == 0 {
                            return Ok(Ending::Closed);
                        }
                    }
                    changed = self.stopping.changed(), if !stopping => {
                        stopping = true;
                        let _ = changed;
                    }
                    () = head_timer.as_mut() => {
                        if Instant::now() >= head_deadline {
                            return Ok(Ending::Closed);
                        }
                        head_timer.as_mut().reset(head_deadline);
                    }
                    _ = check.tick() => self.check_idle()?,
                }
            };
            // The body: within body_timeout of the head.
            let total = request.head_len + request.body_len;
            if input.len() < total {
                input.reserve(total - input.len());
                let body = async {
                    while input.len() < total {
                        if stream.read_buf(&mut input).await? == 0 {
                            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                        }
                    }
                    Ok(())
                };
                let refusal = match tokio::time::timeout(self.limits.body_timeout, body).await {
                    Ok(Ok(())) => None,
                    // The client closed its side mid-body: hyper's answer to a body it
                    // cannot read.
                    Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
                        Some((StatusCode::BAD_REQUEST, "unreadable_body"))
                    }
                    Ok(Err(error)) => return Err(error),
                    Err(_) => Some((StatusCode::REQUEST_TIMEOUT, "body_timeout")),
                };
                if let Some((status, code)) = refusal {
                    output.clear();
                    write_response(&mut output, refuse(Version::HTTP_11, status, code), true).await;
                    self.write(stream, &output, &mut check).await?;
                    return Ok(Ending::Closed);
                }
            }
            let Ok(permit) = self.requests.try_acquire() else {
                // Past the limit: hyper's path waits for a permit, then answers 503.
                return Ok(Ending::HandOff(input));
            };
            let key = std::str::from_utf8(&input[request.key.clone()])
                .expect("a fast-lane key is ASCII: parse checked each byte");
            let answer = if request.is_put {
                let target = std::str::from_utf8(&input[request.target.clone()])
                    .expect("httparse gives the request target as text");
                let value = &input[request.head_len..total];
                self.routes.put(key, value, target).await
            } else {
                self.routes.get(key, request.consistency).await
            };
            // The answer is ready: writing it to a slow reader holds no request slot (as on
            // hyper's path).
            drop(permit);
            // At shutdown the answer says the connection closes, and it does.
            let close = request.close || stopping || *self.stopping.borrow();
            output.clear();
            let close = match answer {
                KvAnswer::Written(index) => {
                    let body = index_json(index);
                    write_head(&mut output, "200 OK", body.len(), close);
                    output.extend_from_slice(body.as_bytes());
                    close
                }
                KvAnswer::Value { index_header, index, value } => {
                    output.extend_from_slice(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n",
                    );
                    let _ = write!(Text(&mut output), "{index_header}: {index}\r\n");
                    write_tail(&mut output, value.len(), close);
                    output.extend_from_slice(&value);
                    close
                }
                KvAnswer::Other(response) => write_response(&mut output, response, close).await,
            };
            self.write(stream, &output, &mut check).await?;
            input.advance(total);
            if close {
                return Ok(Ending::Closed);
            }
            output = kept_for_next(output);
        }
    }

    /// Fails once the connection has moved no bytes for `idle_timeout`.
    fn check_idle(&self) -> io::Result<()> {
        if self.activity.idle_for() >= self.limits.idle_timeout {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
        }
        Ok(())
    }

    /// Writes `output` whole, or fails once the connection has moved no bytes for
    /// `idle_timeout` (a client that stopped reading its answers).
    async fn write(
        &self,
        stream: &mut (impl AsyncWrite + Unpin),
        output: &[u8],
        check: &mut tokio::time::Interval,
    ) -> io::Result<()> {
        let write = stream.write_all(output);
        tokio::pin!(write);
        loop {
            tokio::select! {
                biased;
                written = &mut write => return written,
                _ = check.tick() => self.check_idle()?,
            }
        }
    }
}

/// The largest answer buffer a connection keeps between requests.
const MAX_KEPT_OUTPUT_BYTES: usize = 32 * 1024;

/// The answer buffer kept for the next request: one grown past [`MAX_KEPT_OUTPUT_BYTES`] (by a
/// large value) is dropped rather than kept for the connection's life.
fn kept_for_next(output: Vec<u8>) -> Vec<u8> {
    if output.capacity() > MAX_KEPT_OUTPUT_BYTES { Vec::with_capacity(1024) } else { output }
}

/// A status line and `content-type: application/json`, then [`write_tail`].
fn write_head(output: &mut Vec<u8>, status: &str, body_len: usize, close: bool) {
    let _ = write!(Text(output), "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n");
    write_tail(output, body_len, close);
}

/// `content-length`, `connection: close` if `close`, `date` and the blank line, in the order
/// hyper writes them (which puts `connection` first when the body is empty).
fn write_tail(output: &mut Vec<u8>, body_len: usize, close: bool) {
    if close && body_len == 0 {
        output.extend_from_slice(b"connection: close\r\ncontent-length: 0\r\n");
    } else {
        let _ = write!(Text(output), "content-length: {body_len}\r\n");
        if close {
            output.extend_from_slice(b"connection: close\r\n");
        }
    }
    output.extend_from_slice(b"date: ");
    http_date(output);
    output.extend_from_slice(b"\r\n\r\n");
}

/// Writes `response` (a handler's, with a body held in memory) as HTTP/1.1, with
/// `connection: close` if `close` or the response asks for it; whether it does.
async fn write_response(output: &mut Vec<u8>, response: HttpResponse, close: bool) -> bool {
    let (parts, body) = json_error_body(response).into_parts();
    // Every body the handlers build is already in memory; none is unbounded.
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let reason = parts.status.canonical_reason().unwrap_or("");
    let _ = write!(Text(output), "HTTP/1.1 {} {reason}\r\n", parts.status.as_u16());
    let close = close || parts.headers.get("connection").is_some_and(|value| value == "close");
    for (name, value) in &parts.headers {
        if name == "content-length" || name == "connection" {
            continue;
        }
        output.extend_from_slice(name.as_str().as_bytes());
        output.extend_from_slice(b": ");
        output.extend_from_slice(value.as_bytes());
        output.extend_from_slice(b"\r\n");
    }
    write_tail(output, body.len(), close);
    output.extend_from_slice(&body);
    close
}

/// `std::fmt::Write` onto a byte buffer.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

thread_local! {
    /// The current second and its IMF-fixdate, formatted once a second per thread.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Appends the current time as an HTTP date (`Sat, 05 Dec 2026 17:30:00 GMT`).
fn http_date(output: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second {
            *cached_second = second;
            *text = httpdate::fmt_http_date(now);
        }
        output.extend_from_slice(text.as_bytes());
    });
}

/// A stream that first yields bytes already read from it: what hyper gets at a hand-off.
pub(crate) struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(prefix: BytesMut, inner: S) -> Rewind<S> {
        Rewind { prefix: prefix.freeze(), inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let count = self.prefix.len().min(buffer.remaining());
            buffer.put_slice(&self.prefix[..count]);
            self.prefix.advance(count);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(context, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 4 * 1024 * 1024;

    fn fast(input: &[u8]) -> FastRequest {
        match parse(input, LIMIT) {
            Parsed::Fast(request) => request,
            other => {
                panic!("{:?} is not the fast lane's: {other:?}", String::from_utf8_lossy(input))
            }
        }
    }

    fn text(input: &[u8], range: std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&input[range]).unwrap()
    }

    #[test]
    fn a_plain_put_and_get_are_the_fast_lanes() {
        let put = b"PUT /v1/kv/key-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let request = fast(put);
        assert!(request.is_put && !request.close);
        assert_eq!(text(put, request.key.clone()), "key-1");
        assert_eq!(text(put, request.target.clone()), "/v1/kv/key-1");
        assert_eq!((request.head_len, request.body_len), (put.len() - 3, 3));

        let get = b"GET /v1/kv/a:b@c~d?consistency=lease HTTP/1.1\r\nhost: x\r\nUser-Agent: curl\r\nAccept: */*\r\nConnection: close\r\n\r\n";
        let request = fast(get);
        assert!(!request.is_put && request.close);
        assert_eq!(text(get, request.key.clone()), "a:b@c~d");
        assert_eq!(request.consistency, Some("lease"));
        assert_eq!(request.body_len, 0);
        for consistency in ["linearizable", "local"] {
            let get = format!("GET /v1/kv/k?consistency={consistency} HTTP/1.1\r\n\r\n");
            assert_eq!(fast(get.as_bytes()).consistency, Some(consistency));
        }
        // `Connection: keep-alive` is the default said aloud.
        let kept = b"GET /v1/kv/k HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n";
        assert!(!fast(kept).close);
        // A head of exactly the largest size served here.
        let mut longest = b"GET /v1/kv/k HTTP/1.1\r\nUser-Agent: ".to_vec();
        longest.resize(MAX_FAST_HEAD_BYTES - 4, b'x');
        longest.extend_from_slice(b"\r\n\r\n");
        assert_eq!(fast(&longest).head_len, MAX_FAST_HEAD_BYTES);
        // A body not all here yet is still the fast lane's: it waits for the rest.
        let partial = b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 10\r\n\r\n01";
        assert_eq!(fast(partial).body_len, 10);
    }

    #[test]
    fn heads_to_8_kib_and_bodies_to_64_kib_are_the_fast_lanes() {
        let mut head = b"PUT /v1/kv/k HTTP/1.1\r\nUser-Agent: ".to_vec();
        head.resize(8 * 1024 - 40, b'x');
        head.extend_from_slice(b"\r\nContent-Length: 65536\r\n\r\n");
        let request = fast(&head);
        assert_eq!((request.head_len, request.body_len), (head.len(), 64 * 1024));
    }

    #[test]
    fn a_head_still_arriving_is_incomplete_until_it_is_too_long() {
        assert_eq!(parse(b"", LIMIT), Parsed::Incomplete);
        assert_eq!(parse(b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\n", LIMIT), Parsed::Incomplete);
        let mut long = b"PUT /v1/kv/k HTTP/1.1\r\nHost: ".to_vec();
        long.resize(MAX_FAST_HEAD_BYTES, b'x');
        assert_eq!(parse(&long, LIMIT), Parsed::Other);
        // A whole head longer than that is hyper's too.
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&long, LIMIT), Parsed::Other);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let others: &[&[u8]] = &[
            b"HEAD /v1/kv/k HTTP/1.1\r\n\r\n",
            b"DELETE /v1/kv/k HTTP/1.1\r\n\r\n",
            b"POST /v1/cas/k HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            b"GET /v1/status HTTP/1.1\r\n\r\n",
            b"GET /v1/kv/ HTTP/1.1\r\n\r\n",
            b"GET /v1/kv/a/b HTTP/1.1\r\n\r\n",
            b"GET /v1/kv/a%20b HTTP/1.1\r\n\r\n",
            b"GET http://x/v1/kv/k HTTP/1.1\r\n\r\n",
            b"GET /v1/kv/k HTTP/1.0\r\n\r\n",
            b"GET /v1/kv/k?consistency=bogus HTTP/1.1\r\n\r\n",
            b"GET /v1/kv/k?consistency=lease&consistency=local HTTP/1.1\r\n\r\n",
            b"GET /v1/kv/k HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            b"PUT /v1/kv/k?x=1 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            b"PUT /v1/kv/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            b"PUT /v1/kv/k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"PUT /v1/kv/k HTTP/1.1\r\nX-Client-Id: 1\r\nX-Request-Seq: 1\r\nContent-Length: 1\r\n\r\nx",
            b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
            b"PUT /v1/kv/k HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"GET /v1/kv/k HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"PUT /v1/kv/k HTTP/1.1\r\nBad Header\r\n\r\n",
        ];
        for input in others {
            assert_eq!(parse(input, LIMIT), Parsed::Other, "{}", String::from_utf8_lossy(input));
        }
        // A body over the fast lane's size, or over the server's body limit.
        let large =
            format!("PUT /v1/kv/k HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_FAST_BODY_BYTES + 1);
        assert_eq!(parse(large.as_bytes(), LIMIT), Parsed::Other);
        let at_limit = b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 16\r\n\r\n";
        assert_eq!(fast(at_limit).body_len, 16);
        assert!(matches!(parse(at_limit, 16), Parsed::Fast(_)));
        assert_eq!(parse(at_limit, 15), Parsed::Other);
    }

    /// A handler's answer that asks to close says so once, and closes; its own
    /// `content-length` is not written twice.
    #[tokio::test]
    async fn a_written_answer_has_one_connection_and_one_length_header() {
        let mut output = Vec::new();
        let refusal = refuse(Version::HTTP_11, StatusCode::REQUEST_TIMEOUT, "body_timeout");
        assert!(write_response(&mut output, refusal, false).await, "the answer asked to close");
        let text = String::from_utf8(output).unwrap();
        assert_eq!(text.matches("connection: close\r\n").count(), 1, "{text}");
        assert_eq!(text.matches("content-length: ").count(), 1, "{text}");
        let mut output = Vec::new();
        let answer = ([(axum::http::header::CONTENT_LENGTH, "2")], "hi").into_response();
        assert!(!write_response(&mut output, answer, false).await);
        let text = String::from_utf8(output).unwrap();
        assert_eq!(text.matches("content-length: ").count(), 1, "{text}");
        assert!(!text.contains("connection"), "{text}");
    }

    #[test]
    fn a_large_answer_buffer_is_not_kept() {
        let kept = kept_for_next(Vec::with_capacity(MAX_KEPT_OUTPUT_BYTES));
        assert_eq!(kept.capacity(), MAX_KEPT_OUTPUT_BYTES);
        let large = kept_for_next(Vec::with_capacity(MAX_KEPT_OUTPUT_BYTES + 1));
        assert!(large.capacity() < MAX_KEPT_OUTPUT_BYTES, "{}", large.capacity());
    }

    #[test]
    fn dates_are_imf_fixdates() {
        let mut output = Vec::new();
        http_date(&mut output);
        let date = String::from_utf8(output).unwrap();
        assert_eq!(date.len(), "Sat, 05 Dec 2026 17:30:00 GMT".len(), "{date}");
        assert!(date.ends_with(" GMT") && httpdate::parse_http_date(&date).is_ok(), "{date}");
    }
}
