//! The accept loop: every connection, plain or TLS, HTTP/1.1 or HTTP/2,
//! lives under the same [`Limits`], so that clients who never authenticate
//! cannot make the server hold memory or connections without bound, and
//! can never lock signed requests out. See `docs/security.md`.
//!
//! - A TLS handshake, and the headers of a connection's first request,
//!   must arrive within `header_timeout` of the accept; the headers of a
//!   later request within `header_timeout` of their first byte.
//! - A connection with no request in flight is closed after `idle_timeout`.
//! - At most `max_connections` are open. At the cap, a new connection
//!   closes the one that matters least (never one serving an authenticated
//!   request): first those that never carried an authenticated request,
//!   the longest idle first. When every connection serves an authenticated
//!   request, the new one is closed instead.
//! - Request bodies read before authentication are bounded in size by the
//!   APIs and in number by [`preauth_slot`], with a deadline of
//!   `body_timeout` for the whole body.
//!
//! The watchdog of each connection decides with [`verdict`], a pure
//! function of the connection's [`Snapshot`]; the accept loop picks whom to
//! close with [`victim`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, SemaphorePermit, watch};

/// Connection limits of the server (`edgedeploy server --max-connections ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (default 1024; lowered to fit the open-files limit).
    pub max_connections: usize,
    /// TLS handshake and request headers (default 10 s).
    pub header_timeout: Duration,
    /// A connection without a request in flight (default 60 s).
    pub idle_timeout: Duration,
    /// A whole request body read before authentication, or a small document (default 30 s).
    pub body_timeout: Duration,
    /// Request bodies read before authentication at once (default 16); more get 503.
    pub preauth_bodies: usize,
    /// Serve HTTP/2 (prior knowledge on the plain port, ALPN under TLS) (default on).
    pub http2: bool,
    /// Streams at once on one HTTP/2 connection (default 32).
    pub h2_max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            preauth_bodies: 16,
            http2: true,
            h2_max_streams: 32,
        }
    }
}

/// Largest read buffer of an HTTP/1.1 connection: the request head must fit.
const H1_MAX_BUF: usize = 64 << 10;
/// HTTP/2 header block limit, connection and stream windows.
const H2_MAX_HEADER_LIST: u32 = 16 << 10;
const H2_CONN_WINDOW: u32 = 1 << 20;
const H2_STREAM_WINDOW: u32 = 256 << 10;
/// Longest sleep of a watchdog between two looks at its connection.
const WATCH_TICK: Duration = Duration::from_secs(1);
/// How long connections may finish their requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// File descriptors kept for everything but connections (store, bundles, logs).
const RESERVED_FDS: u64 = 128;

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Sets the limits; only before the first connection. Returns them back
/// when they were already fixed.
pub fn configure(limits: Limits) -> Result<(), Limits> {
    LIMITS.set(limits)
}

/// The limits in force.
pub fn limits() -> &'static Limits {
    LIMITS.get_or_init(Limits::default)
}

static PREAUTH: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(limits().preauth_bodies.max(1)));

/// A slot for reading one request body before its request is
/// authenticated, or `None` when all [`Limits::preauth_bodies`] are taken.
pub fn preauth_slot() -> Option<SemaphorePermit<'static>> {
    PREAUTH.try_acquire().ok()
}

/// A slot as [`preauth_slot`], waiting in turn (first come, first served)
/// up to `wait` for one to be free.
pub async fn preauth_slot_within(wait: Duration) -> Option<SemaphorePermit<'static>> {
    tokio::time::timeout(wait, PREAUTH.acquire()).await.ok()?.ok()
}

/// Milliseconds since the first call (a monotonic clock for atomics).
fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the server knows of one connection, shared by its task, its
/// requests and the accept loop.
#[derive(Debug, Default)]
struct Conn {
    id: u64,
    accepted_ms: u64,
    /// Requests being served (until their response body is sent).
    in_flight: AtomicUsize,
    /// Of those, the ones that authenticated.
    authenticated: AtomicUsize,
    /// Some request on this connection authenticated.
    ever_authenticated: AtomicBool,
    /// Requests started.
    requests: AtomicU64,
    /// When the connection last became idle (accept or end of a request).
    idle_since_ms: AtomicU64,
    /// First byte received while idle (0: none): a request head is arriving.
    head_started_ms: AtomicU64,
    /// Chosen to be closed by the accept loop.
    evicted: AtomicBool,
    evict: Notify,
}

/// A moment's view of a connection, for the pure decisions below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Connection id (accept order).
    pub id: u64,
    /// Milliseconds (on the server's clock) of the accept.
    pub accepted_ms: u64,
    /// Requests in flight.
    pub in_flight: usize,
    /// Authenticated requests in flight.
    pub authenticated: usize,
    /// Some request authenticated on it.
    pub ever_authenticated: bool,
    /// Requests started on it.
    pub requests: u64,
    /// When it last became idle.
    pub idle_since_ms: u64,
    /// When the head of a next request started to arrive (0: not yet).
    pub head_started_ms: u64,
    /// Already chosen to be closed.
    pub evicted: bool,
}

impl Conn {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id,
            accepted_ms: self.accepted_ms,
            in_flight: self.in_flight.load(Ordering::Acquire),
            authenticated: self.authenticated.load(Ordering::Acquire),
            ever_authenticated: self.ever_authenticated.load(Ordering::Acquire),
            requests: self.requests.load(Ordering::Acquire),
            idle_since_ms: self.idle_since_ms.load(Ordering::Acquire),
            head_started_ms: self.head_started_ms.load(Ordering::Acquire),
            evicted: self.evicted.load(Ordering::Acquire),
        }
    }

    fn received(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.head_started_ms.load(Ordering::Acquire) == 0 {
            self.head_started_ms.store(now_ms().max(1), Ordering::Release);
        }
    }
}

/// What a watchdog does with its connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; look again at this time (ms).
    Keep(u64),
    /// Close it, for this reason.
    Close(&'static str),
}

/// The deadlines of [`Limits`] applied to `conn` at `now` (ms).
pub fn verdict(conn: &Snapshot, now: u64, limits: &Limits) -> Verdict {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let tick = now.saturating_add(ms(WATCH_TICK));
    if conn.in_flight > 0 {
        return Verdict::Keep(tick);
    }
    let (deadline, reason) = if conn.requests == 0 {
        (conn.accepted_ms.saturating_add(ms(limits.header_timeout)), "no request headers within the header timeout")
    } else if conn.head_started_ms != 0 {
        (
            conn.head_started_ms
                .saturating_add(ms(limits.header_timeout))
                .min(conn.idle_since_ms.saturating_add(ms(limits.idle_timeout))),
            "request headers not complete within the header timeout",
        )
    } else {
        (conn.idle_since_ms.saturating_add(ms(limits.idle_timeout)), "idle timeout")
    };
    if now >= deadline { Verdict::Close(reason) } else { Verdict::Keep(deadline.min(tick)) }
}

/// The connection to close so that a new one fits under the cap: never one
/// serving an authenticated request or already chosen; first those that
/// never authenticated, then the longest idle (or oldest). `None` when
/// every connection is busy with authenticated requests.
pub fn victim(conns: &[Snapshot]) -> Option<u64> {
    conns
        .iter()
        .filter(|c| c.authenticated == 0 && !c.evicted)
        .min_by_key(|c| (c.ever_authenticated, c.in_flight > 0, c.idle_since_ms.max(c.head_started_ms), c.id))
        .map(|c| c.id)
}

/// The soft limit of open files from `/proc/self/limits` text.
pub fn open_files_limit(proc_limits: &str) -> Option<u64> {
    let line = proc_limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// `wanted` connections, lowered so that they fit under `fd_limit`.
pub fn fitting_connections(wanted: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX).max(16);
            wanted.min(room)
        }
        None => wanted,
    }
}

/// Open connections, by id.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    changed: Notify,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection if there is room (closing another one if
    /// needed); `None` when it must be refused.
    fn admit(&self, id: u64, cap: usize) -> Option<Arc<Conn>> {
        let mut conns = self.lock();
        let open = conns.values().filter(|c| !c.evicted.load(Ordering::Acquire)).count();
        if open >= cap {
            let snapshots: Vec<Snapshot> = conns.values().map(|c| c.snapshot()).collect();
            let chosen = victim(&snapshots)?;
            if let Some(conn) = conns.get(&chosen) {
                conn.evicted.store(true, Ordering::Release);
                conn.evict.notify_one();
            }
        }
        let now = now_ms();
        let conn = Arc::new(Conn { id, accepted_ms: now, idle_since_ms: AtomicU64::new(now), ..Conn::default() });
        conns.insert(id, conn.clone());
        Some(conn)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.changed.notify_waiters();
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Marks the request `request` belongs to as authenticated: its connection
/// is then never closed to make room, until the response is sent.
pub fn mark_authenticated(extensions: &axum::http::Extensions) {
    if let Some(ticket) = extensions.get::<Ticket>() {
        ticket.authenticated();
    }
}

/// One request in flight on a connection, until its response body is
/// sent or dropped (every clone).
#[derive(Clone)]
struct Ticket(Arc<TicketInner>);

struct TicketInner {
    conn: Arc<Conn>,
    authenticated: AtomicBool,
}

impl Ticket {
    fn new(conn: Arc<Conn>) -> Ticket {
        conn.requests.fetch_add(1, Ordering::AcqRel);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_started_ms.store(0, Ordering::Release);
        Ticket(Arc::new(TicketInner { conn, authenticated: AtomicBool::new(false) }))
    }

    fn authenticated(&self) {
        if !self.0.authenticated.swap(true, Ordering::AcqRel) {
            self.0.conn.authenticated.fetch_add(1, Ordering::AcqRel);
            self.0.conn.ever_authenticated.store(true, Ordering::Release);
        }
    }
}

impl Drop for TicketInner {
    fn drop(&mut self) {
        if self.authenticated.load(Ordering::Acquire) {
            self.conn.authenticated.fetch_sub(1, Ordering::AcqRel);
        }
        self.conn.idle_since_ms.store(now_ms(), Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`Ticket`].
struct TicketBody {
    inner: Body,
    _ticket: Ticket,
}

impl HttpBody for TicketBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that tells its [`Conn`] when bytes arrive.
struct Watched<I> {
    inner: I,
    conn: Arc<Conn>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.received();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The hyper connection builder for `limits`.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).max_buf_size(H1_MAX_BUF).keep_alive(true).header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .max_pending_accept_reset_streams(32)
        .max_local_error_reset_streams(256)
        .keep_alive_interval(None);
    if limits.http2 { builder } else { builder.http1_only() }
}

/// Serves `app` on `listener` (through `tls` when given) until `shutdown`
/// turns true; then lets requests in flight finish for a few seconds.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = limits().clone();
    let fd_limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| open_files_limit(&t));
    let cap = fitting_connections(limits.max_connections, fd_limit);
    if cap < limits.max_connections {
        log::warn!(
            "max connections lowered from {} to {cap} to fit the open-files limit {fd_limit:?} (raise it with ulimit -n)",
            limits.max_connections
        );
    }
    let registry = Arc::new(Registry::default());
    let builder = Arc::new(builder(&limits));
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: let connections close before trying again.
                log::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let Some(conn) = registry.admit(next_id, cap) else {
            log::warn!("{cap} connections open, all serving authenticated requests: a new one is closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let task = Task {
            conn,
            registry: registry.clone(),
            builder: builder.clone(),
            app: app.clone(),
            limits: limits.clone(),
            shutdown: shutdown.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move { task.run(stream, tls).await });
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while registry.len() > 0 {
        let changed = registry.changed.notified();
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            log::warn!("{} connections still open at shutdown", registry.len());
            break;
        }
    }
}

/// One connection's task.
struct Task {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
}

impl Task {
    async fn run(self, stream: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let id = self.conn.id;
        let registry = self.registry.clone();
        let watched = Watched { inner: stream, conn: self.conn.clone() };
        match tls {
            None => self.serve(watched).await,
            Some(acceptor) => {
                let handshake = tokio::time::timeout(self.limits.header_timeout, acceptor.accept(watched));
                let evicted = self.conn.evict.notified();
                tokio::select! {
                    done = handshake => match done {
                        Ok(Ok(stream)) => self.serve(stream).await,
                        Ok(Err(e)) => log::debug!("connection {id}: TLS handshake: {e}"),
                        Err(_) => log::debug!("connection {id}: no TLS handshake within the header timeout"),
                    },
                    _ = evicted => log::debug!("connection {id}: closed during its handshake to make room"),
                }
            }
        }
        registry.remove(id);
    }

    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Task { conn, builder, app, limits, mut shutdown, .. } = self;
        let for_requests = conn.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let ticket = Ticket::new(for_requests.clone());
            request.extensions_mut().insert(ticket.clone());
            let mut app = app.clone();
            async move {
                let response = tower_service::Service::call(&mut app, request.map(Body::new)).await;
                let response: Response<Body> = match response {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|inner| Body::new(TicketBody { inner, _ticket: ticket })))
            }
        });
        let served = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(served);
        let mut closing = false;
        loop {
            let wake = match verdict(&conn.snapshot(), now_ms(), &limits) {
                Verdict::Close(reason) => {
                    log::debug!("connection {}: {reason}", conn.id);
                    return;
                }
                Verdict::Keep(at) => tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())),
            };
            tokio::select! {
                done = served.as_mut() => {
                    if let Err(e) = done {
                        log::debug!("connection {}: {e}", conn.id);
                    }
                    return;
                }
                _ = conn.evict.notified() => {
                    log::debug!("connection {}: closed to make room for a new one", conn.id);
                    return;
                }
                _ = shutdown.changed(), if !closing => {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: u64) -> Snapshot {
        Snapshot {
            id,
            accepted_ms: 1000,
            in_flight: 0,
            authenticated: 0,
            ever_authenticated: false,
            requests: 0,
            idle_since_ms: 1000,
            head_started_ms: 0,
            evicted: false,
        }
    }

    #[test]
    fn a_connection_without_headers_closes_at_the_header_timeout() {
        let limits = Limits::default();
        let conn = snap(1);
        assert_eq!(verdict(&conn, 1000 + 9_999, &limits), Verdict::Keep(1000 + 10_000));
        assert!(matches!(verdict(&conn, 1000 + 10_000, &limits), Verdict::Close(_)));
    }

    #[test]
    fn an_idle_connection_closes_at_the_idle_timeout_and_a_dripped_head_sooner() {
        let limits = Limits::default();
        let conn = Snapshot { requests: 3, idle_since_ms: 5000, ..snap(1) };
        assert!(matches!(verdict(&conn, 5000 + 59_000, &limits), Verdict::Keep(_)));
        assert!(matches!(verdict(&conn, 5000 + 60_000, &limits), Verdict::Close("idle timeout")));
        let dripping = Snapshot { head_started_ms: 6000, ..conn };
        assert!(matches!(verdict(&dripping, 6000 + 10_000, &limits), Verdict::Close(_)));
    }

    #[test]
    fn a_connection_with_a_request_in_flight_is_kept() {
        let conn = Snapshot { in_flight: 1, requests: 1, ..snap(1) };
        assert!(matches!(verdict(&conn, u64::MAX / 2, &Limits::default()), Verdict::Keep(_)));
    }

    #[test]
    fn the_victim_is_never_serving_an_authenticated_request() {
        let busy = Snapshot { authenticated: 1, in_flight: 1, ever_authenticated: true, ..snap(1) };
        let trusted_idle = Snapshot { ever_authenticated: true, idle_since_ms: 10, ..snap(2) };
        let stranger_new = Snapshot { idle_since_ms: 9000, ..snap(3) };
        let stranger_old = Snapshot { idle_since_ms: 2000, ..snap(4) };
        assert_eq!(victim(&[busy, trusted_idle, stranger_new, stranger_old]), Some(4));
        assert_eq!(victim(&[busy, trusted_idle]), Some(2));
        assert_eq!(victim(&[busy]), None);
        assert_eq!(victim(&[Snapshot { evicted: true, ..stranger_old }]), None);
    }

    #[test]
    fn the_cap_fits_the_open_files_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_limit(text), Some(1024));
        assert_eq!(fitting_connections(1024, Some(1024)), 896);
        assert_eq!(fitting_connections(1024, Some(65536)), 1024);
        assert_eq!(fitting_connections(1024, None), 1024);
    }
}
