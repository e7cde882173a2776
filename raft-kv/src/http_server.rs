//! The HTTP server's connection handling: HTTP/1.1 and HTTP/2 on one port (over TLS when
//! configured) with every wait and count bounded, so that slow or idle clients cannot stop a
//! node from serving others.
//!
//! A plain connection that opens with HTTP/2's connection preface is served as HTTP/2 ("prior
//! knowledge", as `curl --http2-prior-knowledge` and `raft-kv --http2` do); anything else as
//! HTTP/1.1, so curl works unchanged. Under TLS, ALPN offers `h2` and `http/1.1` and the
//! client picks. A plain HTTP/1.1 connection's `PUT` and `GET /v1/kv/{key}` requests are
//! served by the fast lane (`fast_lane.rs`) under the same limits, without hyper; the first
//! request that is not its own hands the connection to hyper. An HTTP/2 connection carries at
//! most [`HttpLimits::max_streams_per_connection`] requests at once; each request's body is
//! bounded and timed as below, and the connection's idle timeout counts traffic on all its
//! streams.
//!
//! - at most [`HttpLimits::max_connections`] connections at once. At the limit, a new
//!   connection takes the place of the one that has been quiet longest (at least
//!   `evict_idle_after`, a second:
//!   idle keep-alives, clients that never sent a request), so idle or stalled connections
//!   cannot lock out new clients; when every connection is busy, the new one is closed at once.
//!   A log line says when the limit is reached and when it clears;
//! - a TLS handshake and a request's headers must arrive within `header_timeout`;
//! - a request's body must arrive within `body_timeout`, and a `Content-Length` above
//!   `max_body_bytes` is answered `413` at once, before any of the body is read;
//! - at most [`HttpLimits::max_requests_in_flight`] requests are served at once over all
//!   connections (HTTP/2 multiplexes many on one); one past it waits, unread, for up to
//!   `body_timeout`, then is answered `503 {"error":"overloaded"}`;
//! - a connection with no traffic for `idle_timeout` is closed;
//! - at shutdown, connections finish their requests in flight for up to `drain_timeout`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;

use crate::fast_lane::{
    Ending, KeyTarget, KvAnswer, KvRoutes, Lane, Rewind, is_unread_header, key_target,
};

/// HTTP/2: the largest request head (HPACK-decoded header list) a client may send.
const MAX_HTTP2_HEADER_BYTES: u32 = 16 * 1024;
/// HTTP/2: the most response bytes buffered per stream before the handler waits for the
/// client to read (its flow-control window).
const MAX_HTTP2_SEND_BUFFER_BYTES: usize = 256 * 1024;

/// The HTTP server's limits (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections held at once.
    pub max_connections: usize,
    /// Time for a TLS handshake, and for a request's headers.
    pub header_timeout: Duration,
    /// Time for a request's body.
    pub body_timeout: Duration,
    /// A connection without traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// At shutdown, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// At the connection limit, a connection quiet for this long gives its place to a new one.
    pub evict_idle_after: Duration,
    /// HTTP/2: requests (streams) one connection may have in flight at once (default 256);
    /// more wait for the client's own flow control (the server advertises the limit).
    pub max_streams_per_connection: u32,
    /// Requests served at once, over all connections (default 4,096, the connection limit:
    /// HTTP/2 does not raise what HTTP/1.1 allowed). A request past it waits, its body
    /// unread, for up to `body_timeout`, then is answered `503 {"error":"overloaded"}`.
    pub max_requests_in_flight: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: 4 * 1024 * 1024,
            drain_timeout: Duration::from_secs(10),
            evict_idle_after: Duration::from_secs(1),
            max_streams_per_connection: 256,
            max_requests_in_flight: 4096,
        }
    }
}

/// Serves `app` on `listener` (TLS with `tls`) within `limits` until `shutdown` completes,
/// then lets connections finish for up to `limits.drain_timeout`. Plain HTTP/1.1 connections
/// start in the fast lane for `routes` ([`crate::fast_lane`]), when given.
pub(crate) async fn serve<R: KvRoutes>(
    listener: TcpListener,
    app: Router,
    routes: Option<Arc<R>>,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let requests = Arc::new(Semaphore::new(limits.max_requests_in_flight.max(1)));
    let registry = Arc::new(Registry::default());
    let (stop, stopping) = watch::channel(false);
    let mut at_limit = false;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, typically: wait for connections to close.
                tracing::warn!("Accepting an HTTP connection failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                if at_limit && slots.available_permits() > 0 {
                    tracing::info!(
                        "HTTP connections below the limit of {} again",
                        limits.max_connections
                    );
                    at_limit = false;
                }
                slot
            }
            Err(_) => {
                if !at_limit {
                    tracing::warn!(
                        "HTTP connection limit reached: {} connections open; new ones replace the longest idle, or are closed while all are busy",
                        limits.max_connections
                    );
                    at_limit = true;
                }
                match make_room(&registry, &slots, limits.evict_idle_after).await {
                    Some(slot) => slot,
                    None => {
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let (id, activity) = registry.add();
        let connection = Connection {
            app: app.clone(),
            routes: routes.clone(),
            requests: Arc::clone(&requests),
            limits: limits.clone(),
            tls: tls.clone(),
            stopping: stopping.clone(),
            activity,
        };
        // However the task ends (served out, failed, or aborted to make room at the limit),
        // the connection leaves the registry and frees its slot.
        let leave = Leave { registry: Arc::clone(&registry), id, _slot: slot };
        let task = tokio::spawn(async move {
            let _leave = leave;
            if let Err(error) = connection.run(stream).await {
                tracing::debug!(%address, "HTTP connection ended: {error}");
            }
        });
        registry.set_abort(id, task.abort_handle());
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.drain_timeout, slots.acquire_many(all)).await;
}

/// Each open connection's activity and, once its task runs, what closes it, by id.
type Connections = std::collections::BTreeMap<u64, (Arc<Activity>, Option<AbortHandle>)>;

/// A connection's place in the registry and its slot, given up when its task ends.
struct Leave {
    registry: Arc<Registry>,
    id: u64,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// The open connections' activity, and how to close each: what the accept loop needs to make
/// room at the limit.
#[derive(Default)]
struct Registry {
    connections: std::sync::Mutex<Connections>,
    next_id: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        // Entries are inserted and removed whole: a poisoned map is still consistent.
        self.connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a new connection: its id and its activity.
    fn add(&self) -> (u64, Arc<Activity>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        self.lock().insert(id, (Arc::clone(&activity), None));
        (id, activity)
    }

    /// How to close connection `id`, once its task is spawned (unless it already ended).
    fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some((_, slot)) = self.lock().get_mut(&id) {
            *slot = Some(abort);
        }
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection quiet longest (at least `quiet_for`); whether there was one.
    /// Its task is aborted: the connection is dropped at its next wait, and its slot freed.
    fn evict_longest_idle(&self, quiet_for: Duration) -> bool {
        let mut connections = self.lock();
        let quietest = connections
            .iter()
            .filter(|(_, (_, abort))| abort.is_some())
            .map(|(id, (activity, _))| (activity.idle_for(), std::cmp::Reverse(*id)))
            .filter(|(idle, _)| *idle >= quiet_for)
            // The quietest; among equally quiet ones, the oldest.
            .max();
        match quietest.and_then(|(_, std::cmp::Reverse(id))| connections.remove(&id)) {
            Some((_, Some(abort))) => {
                tracing::debug!("Closing the quietest HTTP connection for a new one at the limit");
                abort.abort();
                true
            }
            _ => false,
        }
    }
}

/// At the limit: closes the longest-idle connection and takes its slot once it is free.
async fn make_room(
    registry: &Registry,
    slots: &Arc<Semaphore>,
    quiet_for: Duration,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if !registry.evict_longest_idle(quiet_for) {
        return None;
    }
    tokio::time::timeout(Duration::from_secs(1), Arc::clone(slots).acquire_owned()).await.ok()?.ok()
}

/// One accepted connection and what it needs.
struct Connection<R> {
    app: Router,
    /// The fast lane's requests, served without hyper on plain connections.
    routes: Option<Arc<R>>,
    /// Permits for requests in flight, shared by every connection.
    requests: Arc<Semaphore>,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stopping: watch::Receiver<bool>,
    activity: Arc<Activity>,
}

impl<R: KvRoutes> Connection<R> {
    async fn run(mut self, stream: TcpStream) -> io::Result<()> {
        let _ = stream.set_nodelay(true);
        let activity = Arc::clone(&self.activity);
        let mut watched = Watched { inner: stream, activity: Arc::clone(&activity) };
        match self.tls.take() {
            None => {
                let Some(routes) = self.routes.clone() else {
                    return self.serve(watched, activity).await;
                };
                let lane = Lane {
                    routes: &*routes,
                    limits: &self.limits,
                    requests: &self.requests,
                    stopping: &mut self.stopping,
                    activity: &activity,
                };
                match lane.serve(&mut watched).await? {
                    Ending::Closed => Ok(()),
                    Ending::HandOff(read) => {
                        self.serve(Rewind::new(read, watched), Arc::clone(&activity)).await
                    }
                }
            }
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.limits.header_timeout, acceptor.accept(watched));
                let stream = handshake.await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
                self.serve(stream, activity).await
            }
        }
    }

    async fn serve(
        mut self,
        stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
        activity: Arc<Activity>,
    ) -> io::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.limits.header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.limits.max_streams_per_connection)
            .max_header_list_size(MAX_HTTP2_HEADER_BYTES)
            .max_send_buf_size(MAX_HTTP2_SEND_BUFFER_BYTES);
        // Each request: its body bounded and read (bounded_body), then the app. A plain
        // function rather than a tower middleware layer, which would box and clone services
        // for every request.
        let app = TowerToHyperService::new(self.app.clone());
        let limits = self.limits.clone();
        let requests = Arc::clone(&self.requests);
        let routes = self.routes.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let app = app.clone();
            let limits = limits.clone();
            let requests = Arc::clone(&requests);
            let routes = routes.clone();
            async move {
                // Held until the answer is ready: it bounds the bodies held in memory.
                let Ok(Ok(_permit)) =
                    tokio::time::timeout(limits.body_timeout, requests.acquire_owned()).await
                else {
                    return Ok(refuse(
                        request.version(),
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                    ));
                };
                Ok::<_, Infallible>(bounded_body(&limits, &app, routes.as_deref(), request).await)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut draining = false;
        if *self.stopping.borrow() {
            // Stopping began while the fast lane had the connection.
            connection.as_mut().graceful_shutdown();
            draining = true;
        }
        let mut check =
            tokio::time::interval(self.limits.idle_timeout.max(Duration::from_secs(1)) / 4);
        loop {
            tokio::select! {
                result = connection.as_mut() => return result.map_err(io::Error::other),
                changed = self.stopping.changed(), if !draining => {
                    let _ = changed;
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
                _ = check.tick() => {
                    if activity.idle_for() >= self.limits.idle_timeout {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
                    }
                }
            }
        }
    }
}

/// When a connection last moved bytes.
pub(crate) struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { origin: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    pub(crate) fn idle_for(&self) -> Duration {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that records its traffic in an [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buffer.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(context, buffer);
        if buffer.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(context, bytes);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

/// Answers a declared body over the limit with `413` before reading it, and reads the body
/// within `body_timeout` (`408` when it does not arrive), so that handlers never wait on a
/// client.
async fn bounded_body<R: KvRoutes>(
    limits: &HttpLimits,
    app: &TowerToHyperService<Router>,
    routes: Option<&R>,
    request: hyper::Request<Incoming>,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let version = request.version();
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return refuse(version, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        limits.body_timeout,
        axum::body::to_bytes(Body::new(body), limits.max_body_bytes),
    );
    let request = match read.await {
        Ok(Ok(bytes)) => {
            if let Some(routes) = routes
                && let Some(answer) = direct_key_request(routes, &parts, &bytes)
            {
                return with_content_length(json_error_body(answer.await.into_response()));
            }
            Request::from_parts(parts, Body::from(bytes))
        }
        Ok(Err(error)) if is_length_limit(&error) => {
            return refuse(version, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
        }
        Ok(Err(_)) => return refuse(version, StatusCode::BAD_REQUEST, "unreadable_body"),
        Err(_) => return refuse(version, StatusCode::REQUEST_TIMEOUT, "body_timeout"),
    };
    match hyper::service::Service::call(app, request).await {
        Ok(response) => json_error_body(response),
        Err(never) => match never {},
    }
}

/// A key request that hyper parsed (HTTP/2, HTTPS, or a connection the fast lane handed
/// over) answered by the key routes directly, as the fast lane answers it, rather than
/// through axum's router and extractors: the same rules on its target and headers
/// ([`crate::fast_lane`]), and a `GET` without a body. `None` for any other request.
fn direct_key_request<'a, R: KvRoutes>(
    routes: &'a R,
    parts: &'a axum::http::request::Parts,
    body: &'a bytes::Bytes,
) -> Option<impl Future<Output = KvAnswer> + Send + 'a> {
    use axum::http::Method;
    let is_put = match parts.method {
        Method::PUT => true,
        Method::GET if body.is_empty() => false,
        _ => return None,
    };
    let target = parts.uri.path_and_query().map_or(parts.uri.path(), |target| target.as_str());
    let KeyTarget { key, consistency } = key_target(is_put, target)?;
    let unread = |name: &header::HeaderName| {
        name == header::CONTENT_LENGTH
            || name == header::CONNECTION
            || is_unread_header(name.as_str())
    };
    if !parts.headers.keys().all(unread) {
        return None;
    }
    Some(async move {
        if is_put {
            routes.put(key, body, target).await
        } else {
            routes.get(key, consistency).await
        }
    })
}

/// `response` with a `content-length` when it has none and its body's size is known, as
/// axum's router gives every answer (hyper alone leaves it out of an empty HTTP/2 answer).
fn with_content_length(mut response: Response) -> Response {
    if !response.headers().contains_key(header::CONTENT_LENGTH)
        && let Some(length) = hyper::body::Body::size_hint(response.body()).exact()
    {
        response.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    }
    response
}

/// Replaces the body of an error response that is not JSON (axum's own rejections are
/// text) with `{"error": CODE}`, CODE from the status ([`status_code_name`]); the status and
/// other headers (such as `Allow` on a `405`) stay. A plain function applied to every answer
/// of the app, rather than a tower layer on its routes, which boxed a future per request.
pub(crate) fn json_error_body(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, axum::Json(json!({ "error": status_code_name(status) }))).into_response()
}

/// The error code for a response with `status` and no code of its own.
fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "unknown_path",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        status if status.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// A JSON error; over HTTP/1.1 it also closes the connection (the rest of the body is not
/// read). HTTP/2 has no `Connection` header: there the stream alone is reset once answered.
pub(crate) fn refuse(version: Version, status: StatusCode, code: &'static str) -> Response {
    let mut response = (status, axum::Json(json!({ "error": code }))).into_response();
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast_lane::KvAnswer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// A server with routes of its own and the fast lane's over [`MemoryRoutes`]. Its
    /// routes include `PUT /v1/kv/{key}`, answered `hyper`: what the fast lane handed over.
    async fn server(limits: HttpLimits) -> SocketAddrAndStop {
        server_with(limits, Arc::new(MemoryRoutes::default())).await
    }

    /// [`server`] with the fast lane's routes over `routes`.
    async fn server_with(limits: HttpLimits, routes: Arc<MemoryRoutes>) -> SocketAddrAndStop {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().expect("bound");
        let app = Router::new()
            .route("/", axum::routing::get(|| async { "hi" }))
            .route(
                "/echo",
                axum::routing::put(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .route("/v1/kv/{key}", axum::routing::put(|| async { "hyper" }))
            .route("/large", axum::routing::get(|| async { large_answer() }))
            .route("/length", axum::routing::put(declared_length).get(declared_length));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, Some(routes), limits, None, async move {
            let _ = stopped.await;
        }));
        SocketAddrAndStop { address, _stop: stop }
    }

    struct SocketAddrAndStop {
        address: std::net::SocketAddr,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    /// The fast lane's routes over a map: a write answers the number of keys; a read the
    /// value, at index 7. A read of `hold` says it `entered` and waits for `release`.
    #[derive(Default)]
    struct MemoryRoutes {
        values: std::sync::Mutex<std::collections::BTreeMap<String, bytes::Bytes>>,
        entered: Notify,
        release: Notify,
    }

    impl KvRoutes for MemoryRoutes {
        async fn put(&self, key: &str, value: &[u8], _target: &str) -> KvAnswer {
            let mut values = self.values.lock().expect("no test panics holding it");
            values.insert(key.to_owned(), bytes::Bytes::copy_from_slice(value));
            KvAnswer::Written(values.len() as u64)
        }

        async fn get(&self, key: &str, _consistency: Option<&str>) -> KvAnswer {
            if key == "hold" {
                self.entered.notify_one();
                self.release.notified().await;
            }
            match self.values.lock().expect("no test panics holding it").get(key) {
                Some(value) => KvAnswer::Value {
                    index_header: "x-raft-read-index",
                    index: 7,
                    value: value.clone(),
                },
                None => KvAnswer::Other(StatusCode::NOT_FOUND.into_response()),
            }
        }
    }

    /// Reads until the server closes the connection; fails the test past the deadline.
    async fn read_until_closed(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the server kept the connection open");
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// A kept-alive connection that goes quiet after a request is closed after the idle
    /// timeout, though the header timeout is far longer.
    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed() {
        let limits = HttpLimits {
            idle_timeout: Duration::from_millis(300),
            header_timeout: Duration::from_secs(3600),
            ..HttpLimits::default()
        };
        let server = server(limits).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connects");
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("sent");
        let answer = read_until_closed(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// Headers that do not arrive within the header timeout end the connection.
    #[tokio::test]
    async fn slow_headers_are_cut_off() {
        let limits = HttpLimits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(3600),
            ..HttpLimits::default()
        };
        let server = server(limits).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connects");
        stream.write_all(b"GET / HTTP/1.1\r\nHo").await.expect("sent");
        read_until_closed(&mut stream).await;
    }

    /// Connections beyond the cap are closed at once while every connection is busy.
    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once() {
        let limits = HttpLimits {
            max_connections: 2,
            evict_idle_after: Duration::from_secs(3600),
            ..HttpLimits::default()
        };
        let server = server(limits).await;
        let _held = [
            TcpStream::connect(server.address).await.expect("connects"),
            TcpStream::connect(server.address).await.expect("connects"),
        ];
        let mut excess = TcpStream::connect(server.address).await.expect("connects");
        let _ = excess.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let answer = read_until_closed(&mut excess).await;
        assert!(answer.is_empty(), "served beyond the cap: {answer}");
    }

    /// At the cap, a new client takes the place of the quietest connection (here any: the
    /// eviction threshold is zero), which is closed; the new client is served.
    #[tokio::test]
    async fn at_the_cap_a_new_client_replaces_the_quietest_connection() {
        let limits = HttpLimits {
            max_connections: 2,
            evict_idle_after: Duration::ZERO,
            header_timeout: Duration::from_secs(3600),
            ..HttpLimits::default()
        };
        let server = server(limits).await;
        let mut held = [
            TcpStream::connect(server.address).await.expect("connects"),
            TcpStream::connect(server.address).await.expect("connects"),
        ];
        // The first is the quietest: the second has just sent part of a request.
        held[1].write_all(b"GET / HTTP/1.1\r\n").await.expect("sent");
        let mut newcomer = TcpStream::connect(server.address).await.expect("connects");
        newcomer
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("sent");
        let answer = read_until_closed(&mut newcomer).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let evicted = read_until_closed(&mut held[0]).await;
        assert!(evicted.is_empty(), "{evicted}");
    }

    /// Sends `request` on a new connection and reads the answer until the server closes.
    async fn exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connects");
        stream.write_all(request).await.expect("sent");
        read_until_closed(&mut stream).await
    }

    fn small_bodies() -> HttpLimits {
        HttpLimits {
            max_body_bytes: 16,
            body_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        }
    }

    /// A declared body over the limit is answered 413 before any of it is sent; one at the
    /// limit is served.
    #[tokio::test]
    async fn a_declared_body_over_the_limit_is_refused_at_once() {
        let server = server(small_bodies()).await;
        let answer = exchange(
            server.address,
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.ends_with(r#"{"error":"request_too_large"}"#), "{answer}");
        let at_limit = b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\nConnection: close\r\n\r\n0123456789abcdef";
        let answer = exchange(server.address, at_limit).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("16"), "{answer}");
    }

    /// A chunked body (no declared length) that grows past the limit is refused with 413.
    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_refused() {
        let server = server(small_bodies()).await;
        let request = b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n0123456789abcdef0123456789abcdef\r\n0\r\n\r\n";
        let answer = exchange(server.address, request).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.ends_with(r#"{"error":"request_too_large"}"#), "{answer}");
    }

    /// A body that stops arriving is answered 408 after the body timeout, by hyper (`/echo`)
    /// and by the fast lane (`/v1/kv/k`) alike.
    #[tokio::test]
    async fn a_stalled_body_is_answered_408() {
        let server = server(small_bodies()).await;
        for path in ["/echo", "/v1/kv/k"] {
            let request =
                format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234");
            let answer = exchange(server.address, request.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
            assert!(answer.ends_with(r#"{"error":"body_timeout"}"#), "{path}: {answer}");
        }
    }

    /// Traffic keeps a kept-alive connection from counting as idle: requests spaced under the
    /// idle timeout, and spanning more than it, are all answered on one connection.
    #[tokio::test]
    async fn a_connection_with_traffic_is_not_idle() {
        let limits = HttpLimits {
            idle_timeout: Duration::from_millis(400),
            header_timeout: Duration::from_secs(3600),
            ..HttpLimits::default()
        };
        six_requests_150_ms_apart(limits, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    }

    /// Sends `request` six times on one kept-alive connection, 150 ms apart (the gaps are the
    /// stimulus: each under the 300-400 ms timeout a test sets, all six over it), each
    /// answered 200.
    async fn six_requests_150_ms_apart(limits: HttpLimits, request: &[u8]) {
        let server = server(limits).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connects");
        for _ in 0..6 {
            stream.write_all(request).await.expect("sent");
            let mut answer = [0u8; 1024];
            let read = tokio::time::timeout(DEADLINE, stream.read(&mut answer)).await;
            let read = read.expect("answered in time").expect("readable");
            assert!(answer[..read].starts_with(b"HTTP/1.1 200"), "closed while in use");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// One plain connection that opens with HTTP/2's preface is served as HTTP/2, many
    /// requests at once; an HTTP/1.1 client on the same port is still served.
    #[tokio::test]
    async fn http2_by_prior_knowledge_and_http1_share_the_port() {
        let server = server(small_bodies()).await;
        let connection =
            crate::http2_client::Http2Connection::open(server.address, None).await.expect("h2");
        // Twenty requests in flight at once, each a stream on the one connection.
        let requests: Vec<_> = (0..20)
            .map(|_| {
                let connection = connection.clone();
                tokio::spawn(async move {
                    let body = bytes::Bytes::from_static(b"0123");
                    connection.request("PUT", "/echo", &[], body).await
                })
            })
            .collect();
        for request in requests {
            let reply = request.await.expect("the request task ran").expect("answered");
            assert_eq!((reply.status, reply.body.as_slice()), (200, b"4".as_slice()));
        }
        let answer =
            exchange(server.address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi"), "{answer}");
    }

    /// `GET /large`: 300 KiB, more than HTTP/2's initial flow-control window, so the client
    /// must hand back window as it reads.
    fn large_answer() -> Vec<u8> {
        (0..300 * 1024).map(|position| (position % 251) as u8).collect()
    }

    /// The HTTP/2 client reads an answer larger than its flow-control window whole, and says
    /// its connection is closed once the server has gone.
    #[tokio::test]
    async fn the_http2_client_reads_large_answers_and_sees_the_server_go() {
        let server = server(HttpLimits::default()).await;
        let connection =
            crate::http2_client::Http2Connection::open(server.address, None).await.expect("h2");
        let read = connection.request("GET", "/large", &[], bytes::Bytes::new());
        let reply = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the answer arrives (the client hands back window as it reads)")
            .expect("served");
        assert_eq!(reply.status, 200);
        assert!(reply.body == large_answer(), "{} bytes, not the answer sent", reply.body.len());
        assert!(connection.is_open());
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(10);
        while connection.is_open() {
            assert!(Instant::now() < deadline, "the connection still says open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refused = connection.request("GET", "/", &[], bytes::Bytes::new()).await;
        assert!(refused.is_err(), "a request on a closed connection was answered");
    }

    /// `/length`: the request's `content-length`, or `none`.
    async fn declared_length(headers: axum::http::HeaderMap) -> String {
        let length = headers.get(header::CONTENT_LENGTH);
        length.map_or("none".to_owned(), |length| format!("{length:?}"))
    }

    /// The HTTP/2 client declares its bodies' length (so a server may refuse one over its
    /// limit before reading it), a `PUT` without a body included; a `GET` without a body
    /// declares none. `status_of` (the load generator's call) gives the answer's status.
    #[tokio::test]
    async fn the_http2_client_declares_body_lengths() {
        let server = server(HttpLimits::default()).await;
        let connection =
            crate::http2_client::Http2Connection::open(server.address, None).await.expect("h2");
        let cases = [
            ("PUT", &b"abc"[..], "\"3\""),
            ("PUT", &b""[..], "\"0\""),
            ("GET", &b"ab"[..], "\"2\""),
            ("GET", &b""[..], "none"),
        ];
        for (method, body, declared) in cases {
            let body = bytes::Bytes::from_static(body);
            let reply = connection.request(method, "/length", &[], body).await.expect("served");
            assert_eq!(String::from_utf8(reply.body).expect("text"), declared, "{method}");
        }
        for (path, status) in [("/", 200), ("/nowhere", 404)] {
            let answer = connection.status_of(axum::http::Method::GET, path, bytes::Bytes::new());
            let answer = answer.await;
            assert_eq!(answer.expect("answered"), status, "{path}");
        }
    }

    /// Once the server says it is going away (`GOAWAY`, at shutdown), a new request fails
    /// and the client's connection says it is closed at once, while the request already in
    /// flight is still answered.
    #[tokio::test]
    async fn the_http2_client_sees_a_goaway_at_once() {
        let routes = Arc::new(MemoryRoutes::default());
        let server = server_with(HttpLimits::default(), Arc::clone(&routes)).await;
        let connection =
            crate::http2_client::Http2Connection::open(server.address, None).await.expect("h2");
        let held = tokio::spawn({
            let connection = connection.clone();
            async move { connection.request("GET", "/v1/kv/hold", &[], bytes::Bytes::new()).await }
        });
        let entered = tokio::time::timeout(DEADLINE, routes.entered.notified());
        entered.await.expect("the held request reached the key routes");
        drop(server);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let attempt = connection.request("GET", "/", &[], bytes::Bytes::new()).await;
            if attempt.is_err() {
                break;
            }
            assert!(Instant::now() < deadline, "requests are still served after shutdown");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!connection.is_open(), "a connection told to go away still says it is open");
        routes.release.notify_one();
        let reply = tokio::time::timeout(DEADLINE, held).await.expect("answered in time");
        let reply = reply.expect("the request task ran").expect("answered while draining");
        assert_eq!(reply.status, 404, "the routes' answer: no value under `hold`");
    }

    /// Clients sharing a connection never open more streams than the server allows, even
    /// all at once right after the connection opens: none is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_http2_client_keeps_to_the_servers_stream_limit_from_the_start() {
        let limits = HttpLimits { max_streams_per_connection: 8, ..HttpLimits::default() };
        let server = server(limits).await;
        let connection =
            crate::http2_client::Http2Connection::open(server.address, None).await.expect("h2");
        let requests: Vec<_> = (0..50)
            .map(|_| {
                let connection = connection.clone();
                tokio::spawn(async move {
                    connection.request("GET", "/", &[], bytes::Bytes::new()).await
                })
            })
            .collect();
        for request in requests {
            let reply = request.await.expect("the request task ran").expect("not refused");
            assert_eq!(reply.status, 200);
        }
    }

    /// Over HTTP/2 a plain key request is answered by the key routes, without the app's
    /// router; a `GET` with a body, or a request with a header a route reads, by the app.
    #[tokio::test]
    async fn over_http2_plain_key_requests_skip_the_router() {
        let server = server(HttpLimits::default()).await;
        let connection =
            crate::http2_client::Http2Connection::open(server.address, None).await.expect("h2");
        let put = |headers: Vec<(&'static str, String)>| {
            let connection = connection.clone();
            async move {
                let body = bytes::Bytes::from_static(b"v");
                let reply = connection.request("PUT", "/v1/kv/k", &headers, body).await;
                String::from_utf8(reply.expect("answered").body).expect("text")
            }
        };
        assert_eq!(put(Vec::new()).await, r#"{"index":1}"#);
        assert_eq!(put(vec![("user-agent", "test".to_owned())]).await, r#"{"index":1}"#);
        assert_eq!(put(vec![("x-client-id", "1".to_owned())]).await, "hyper");
        let read = connection.request("GET", "/v1/kv/k", &[], bytes::Bytes::new()).await;
        let reply = read.expect("answered");
        assert_eq!((reply.status, reply.body.as_slice()), (200, b"v".as_slice()));
        assert_eq!(reply.header("x-raft-read-index"), Some("7"));
        assert_eq!(reply.header("content-length"), Some("1"));
        let with_body = bytes::Bytes::from_static(b"x");
        let read = connection.request("GET", "/v1/kv/k", &[], with_body).await;
        assert_eq!(read.expect("answered").status, 405, "the app has no GET on a key");
    }

    /// Over HTTP/2 a body over the limit is answered 413 with the JSON error and without
    /// HTTP/1.1's `Connection` header (illegal in HTTP/2); the connection goes on serving.
    #[tokio::test]
    async fn an_http2_body_over_the_limit_is_refused_and_the_connection_lives() {
        let server = server(small_bodies()).await;
        let connection =
            crate::http2_client::Http2Connection::open(server.address, None).await.expect("h2");
        let too_large = bytes::Bytes::from_static(b"0123456789abcdef0");
        let reply = connection.request("PUT", "/echo", &[], too_large).await.expect("answered");
        assert_eq!(reply.status, 413);
        assert_eq!(reply.body, br#"{"error":"request_too_large"}"#);
        assert_eq!(reply.header("connection"), None);
        let reply = connection.request("GET", "/", &[], bytes::Bytes::new()).await.expect("served");
        assert_eq!((reply.status, reply.body.as_slice()), (200, b"hi".as_slice()));
    }

    /// Past the requests-in-flight limit a request waits, its body unread, and is answered
    /// 503 once the body timeout passes; the request holding the permit is served.
    #[tokio::test]
    async fn requests_past_the_in_flight_limit_are_refused_after_the_body_timeout() {
        let limits = HttpLimits {
            max_requests_in_flight: 1,
            body_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().expect("bound");
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let (held, entering) = (Arc::clone(&release), Arc::clone(&entered));
        let app = Router::new().route(
            "/hold",
            axum::routing::get(move || {
                let (held, entering) = (Arc::clone(&held), Arc::clone(&entering));
                async move {
                    entering.notify_one();
                    held.notified().await;
                    "released"
                }
            }),
        );
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let routes = Some(Arc::new(MemoryRoutes::default()));
        tokio::spawn(serve(listener, app, routes, limits, None, async move {
            let _ = stopped.await;
        }));
        let request = b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut holder = TcpStream::connect(address).await.expect("connects");
        holder.write_all(request).await.expect("sent");
        // The holder's handler runs: it has the only permit.
        tokio::time::timeout(DEADLINE, entered.notified()).await.expect("the handler ran");
        let refused = exchange(address, request).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.ends_with(r#"{"error":"overloaded"}"#), "{refused}");
        release.notify_one();
        let answer = read_until_closed(&mut holder).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("released"), "{answer}");
    }

    /// The body of each answer in `raw`, a run of HTTP/1.1 responses with `content-length`.
    fn bodies(raw: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut rest = raw;
        while let Some((head, after)) = rest.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|length| length.parse().ok())
                .unwrap_or_else(|| panic!("no content-length in {head}"));
            bodies.push(after[..length].to_owned());
            rest = &after[length..];
        }
        bodies
    }

    /// Key requests sent back to back on one connection are answered in order by the fast
    /// lane; the first request that is not its own (`GET /`) hands the connection to hyper,
    /// which serves it and everything after: a plain key request still by the key routes
    /// (`{"index":3}`), one with a session header by the app (its `PUT /v1/kv/{key}` answers
    /// `hyper`).
    #[tokio::test]
    async fn the_fast_lane_answers_in_order_then_hands_over_to_hyper() {
        let server = server(HttpLimits::default()).await;
        let requests = concat!(
            "PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nv1",
            "PUT /v1/kv/b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nvv2",
            "GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/kv/missing?consistency=local HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "PUT /v1/kv/c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx",
            "PUT /v1/kv/d HTTP/1.1\r\nHost: x\r\nX-Client-Id: 1\r\nX-Request-Seq: 1\r\n",
            "Content-Length: 1\r\nConnection: close\r\n\r\nx",
        );
        let answer = exchange(server.address, requests.as_bytes()).await;
        assert_eq!(
            bodies(&answer),
            [
                r#"{"index":1}"#,
                r#"{"index":2}"#,
                "v1",
                r#"{"error":"unknown_path"}"#,
                "hi",
                r#"{"index":3}"#,
                "hyper"
            ],
            "{answer}"
        );
        let statuses: Vec<&str> = answer
            .split("HTTP/1.1 ")
            .skip(1)
            .filter_map(|response| response.split("\r\n").next())
            .collect();
        let expected =
            ["200 OK", "200 OK", "200 OK", "404 Not Found", "200 OK", "200 OK", "200 OK"];
        assert_eq!(statuses, expected);
        assert!(answer.contains("\r\nx-raft-read-index: 7\r\n"), "{answer}");
    }

    /// A key request whose body arrives after its head is served by the fast lane once the
    /// body is in (one whose body stops arriving: `a_stalled_body_is_answered_408`).
    #[tokio::test]
    async fn the_fast_lane_waits_for_a_body_that_arrives_after_its_head() {
        let server = server(small_bodies()).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connects");
        stream
            .write_all(b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
            .await
            .expect("sent");
        // The gap is the stimulus: the head is read before the body is sent.
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.write_all(b"body").await.expect("sent");
        let answer = read_until_closed(&mut stream).await;
        assert_eq!(bodies(&answer), [r#"{"index":1}"#], "{answer}");
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    }

    /// The header timeout counts from each request: a kept-alive connection whose requests
    /// each arrive in time lives well past one header timeout.
    #[tokio::test]
    async fn the_fast_lanes_header_timeout_counts_from_each_request() {
        let limits =
            HttpLimits { header_timeout: Duration::from_millis(300), ..HttpLimits::default() };
        let request = b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv";
        six_requests_150_ms_apart(limits, request).await;
    }

    /// At shutdown a kept-alive connection in the fast lane is closed once its request is
    /// answered.
    #[tokio::test]
    async fn at_shutdown_the_fast_lane_closes_its_connections() {
        let server = server(HttpLimits::default()).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connects");
        stream
            .write_all(b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv")
            .await
            .expect("sent");
        let mut answer = [0u8; 1024];
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut answer)).await;
        let read = read.expect("answered in time").expect("readable");
        assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
        drop(server);
        assert_eq!(read_until_closed(&mut stream).await, "");
    }

    /// A client that stops reading its answers holds no request slot while the fast lane
    /// writes to it (another client is served at once, with the only slot), and its
    /// connection is closed once it has moved nothing for the idle timeout.
    #[tokio::test]
    async fn a_client_that_stops_reading_holds_no_slot_and_is_closed_when_idle() {
        let limits = HttpLimits {
            max_requests_in_flight: 1,
            idle_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let routes = Arc::new(MemoryRoutes::default());
        const BIG: usize = 32 << 20;
        let big = bytes::Bytes::from(vec![b'x'; BIG]);
        routes.values.lock().expect("no test panics holding it").insert("big".into(), big);
        let server = server_with(limits, routes).await;
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(4096).expect("a small receive buffer");
        let mut stalled = socket.connect(server.address).await.expect("connects");
        stalled.write_all(b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("sent");
        // The answer has begun: the server is writing far more than the socket buffers hold.
        let mut start = [0u8; 12];
        stalled.read_exact(&mut start).await.expect("the answer begins");
        assert_eq!(&start, b"HTTP/1.1 200");
        let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answer = exchange(server.address, request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "a stalled reader held the slot: {answer}");
        // The stimulus: the client reads nothing for longer than the idle timeout.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(DEADLINE, stalled.read_to_end(&mut rest)).await;
        read.expect("the server closed the connection").expect("read to the end");
        assert!(rest.len() < BIG, "the whole answer was written: {} bytes", rest.len());
    }

    /// A body cut short by the client closing its side is answered 400, by hyper (`/echo`)
    /// and by the fast lane (`/v1/kv/k`) alike.
    #[tokio::test]
    async fn a_body_cut_short_is_answered_400() {
        let server = server(HttpLimits::default()).await;
        for path in ["/echo", "/v1/kv/k"] {
            let mut stream = TcpStream::connect(server.address).await.expect("connects");
            let request =
                format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n012");
            stream.write_all(request.as_bytes()).await.expect("sent");
            stream.shutdown().await.expect("half-closed");
            let answer = read_until_closed(&mut stream).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
            assert!(answer.contains("\r\nconnection: close\r\n"), "{path}: {answer}");
            assert!(answer.ends_with(r#"{"error":"unreadable_body"}"#), "{path}: {answer}");
        }
    }

    /// At shutdown the fast lane answers the request it is serving with `connection: close`
    /// and closes, and closes a connection with only part of a head at once.
    #[tokio::test]
    async fn at_shutdown_the_fast_lane_answers_with_close_and_drops_partial_heads() {
        let limits =
            HttpLimits { header_timeout: Duration::from_secs(3600), ..HttpLimits::default() };
        let routes = Arc::new(MemoryRoutes::default());
        let server = server_with(limits, Arc::clone(&routes)).await;
        let mut serving = TcpStream::connect(server.address).await.expect("connects");
        let pipelined = b"GET /v1/kv/hold HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/kv/hold HTTP/1.1\r\nHost: x\r\n\r\n";
        serving.write_all(pipelined).await.expect("sent");
        // A whole request and part of the next in one segment: once the first is answered,
        // the server holds the part.
        let mut partial = TcpStream::connect(server.address).await.expect("connects");
        let request_and_part =
            b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 1\r\n\r\nvGET /v1/kv/k HTTP/1.1\r\nHo";
        partial.write_all(request_and_part).await.expect("sent");
        let mut answer = [0u8; 1024];
        let read = tokio::time::timeout(DEADLINE, partial.read(&mut answer)).await;
        assert!(read.expect("answered in time").expect("readable") > 0);
        tokio::time::timeout(DEADLINE, routes.entered.notified()).await.expect("being served");
        drop(server);
        assert_eq!(read_until_closed(&mut partial).await, "");
        routes.release.notify_one();
        let answer = read_until_closed(&mut serving).await;
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "served after shutdown: {answer}");
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    }

    /// A closed connection leaves the registry: at the cap, the quietest *open* connection
    /// makes room (a closed one left behind would be chosen, and the newcomer dropped).
    #[tokio::test]
    async fn a_closed_connection_is_not_chosen_to_make_room() {
        let limits = HttpLimits {
            max_connections: 1,
            evict_idle_after: Duration::ZERO,
            header_timeout: Duration::from_secs(3600),
            ..HttpLimits::default()
        };
        let server = server(limits).await;
        let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answer = exchange(server.address, request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The first connection is gone; this one holds the only slot, quietly.
        let mut held = TcpStream::connect(server.address).await.expect("connects");
        held.write_all(b"GET / HTTP/1.1\r\n").await.expect("sent");
        let answer = exchange(server.address, request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "the newcomer was dropped: {answer}");
        assert!(read_until_closed(&mut held).await.is_empty());
    }
}
