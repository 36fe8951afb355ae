//! [`serve`]: the HTTP/1.1 server loop for a router, bounded for the open internet.
//!
//! `axum::serve` accepts every connection and waits on each for as long as the client
//! likes, so a few thousand sockets that send half a request head exhaust the process's
//! file descriptors and the server stops answering anyone. This loop bounds every
//! resource a client can hold ([`ServerConfig`]):
//!
//! - **Request heads** must arrive complete within
//!   [`header_read_timeout`](ServerConfig::header_read_timeout) (hyper's timer, which
//!   also runs while a keep-alive connection waits for its next request).
//! - **Idle connections** — no request being served, whether they never sent one, sent
//!   half a head, or finished their last response — are closed after
//!   [`idle_timeout`](ServerConfig::idle_timeout).
//! - **Stalled readers**: a response write that makes no progress for
//!   [`write_timeout`](ServerConfig::write_timeout) closes the connection.
//! - **Connections** are capped at [`max_connections`](ServerConfig::max_connections),
//!   kept below the process's descriptor limit ([`descriptor_budget`]). At the cap a new
//!   connection evicts the longest-idle one, so a flood of idle sockets cannot lock out
//!   clients that send requests; when every connection is serving a request the new one
//!   is answered `503` with `Retry-After` and closed.
//!
//! - **TLS handshakes** ([`serve_tls`]) must complete within
//!   [`tls_handshake_timeout`](ServerConfig::tls_handshake_timeout). Until the first
//!   request a connection is idle, so the idle sweep and eviction at the cap apply to a
//!   handshake too; every limit above applies to the decrypted connection as to a plain
//!   one (the write deadline watches the socket under TLS). At the cap with every
//!   connection busy a TLS connection is closed without an answer (a plain-text `503`
//!   would mean nothing to a TLS client). Requests on TLS connections carry
//!   `X-Forwarded-Proto: https` (set by the loop, replacing any the client sent), the
//!   header through which a proxy in front tells the same, so handlers learn the scheme
//!   one way.
//!
//! Connections are accepted and served by [`workers`](ServerConfig::workers) threads,
//! each running an event loop of its own on the one listening socket (as nginx runs a
//! worker per core): a connection stays on the thread that accepted it, so a cached
//! answer or a `304` costs no hand-over between threads, which on a work-stealing
//! runtime was a third of the cost of a bodiless request. The limits above are shared
//! by all workers (one registry of connections, one cap, one idle sweep).
//!
//! Requests themselves are bounded by the router's layers ([`crate::limits`]): a deadline
//! per request and a cap on requests in flight. On shutdown the loop stops accepting,
//! lets requests in flight finish (at most
//! [`shutdown_timeout`](ServerConfig::shutdown_timeout)) and closes the rest.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::tls::TlsConfig;

/// Connection-level limits of [`serve`], and how many threads serve. Every field has a
/// safe default.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Longest time a client may take to send a complete request head, counted from the
    /// moment the server waits for it (a new connection, or the end of the previous
    /// response on a keep-alive connection). Default 10 s: a client trickling one header
    /// line a second is cut off.
    pub header_read_timeout: Duration,
    /// How long a connection with no request being served stays open. Default 5 s.
    pub idle_timeout: Duration,
    /// Longest time a response write may make no progress (the client stopped reading)
    /// before the connection is closed. Default 30 s.
    pub write_timeout: Duration,
    /// Most connections open at once; lowered at start to fit the descriptor limit
    /// ([`descriptor_budget`]). Default 4096.
    pub max_connections: usize,
    /// Longest wait for requests in flight at shutdown before their connections are
    /// closed. Default 30 s.
    pub shutdown_timeout: Duration,
    /// Longest time a TLS handshake may take ([`serve_tls`]), counted from the accept.
    /// Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Threads that accept and serve connections, each with an event loop of its own (a
    /// current-thread tokio runtime) on the shared listening socket, the way nginx runs
    /// one worker process per core: a connection lives on the thread that accepted it,
    /// so a request costs no hand-over between threads. Store work still runs on
    /// blocking threads. `0` serves on the caller's runtime instead (its tasks spread by
    /// tokio's work-stealing scheduler). Default: the number of CPUs this process may
    /// use.
    pub workers: usize,
}

/// The default of [`ServerConfig::workers`]: the CPUs this process may use (its
/// affinity and cgroup quota), at least one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The most [`ServerConfig::workers`] [`serve`] starts (more are not started).
pub const MAX_WORKERS: usize = 256;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            max_connections: 4096,
            shutdown_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            workers: default_workers(),
        }
    }
}

/// Descriptors kept free for everything but client connections: the store's files and
/// connections, registry requests, icon files, logs.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// How many client connections fit the process's open-file limit: the soft limit
/// (raised to the hard limit first, as far as the system allows) minus
/// [`RESERVED_DESCRIPTORS`] for everything else. `None` when the limit cannot be read.
pub fn descriptor_budget() -> Option<usize> {
    // Raising the soft limit is what servers do at start (nginx' worker_rlimit_nofile,
    // Go's runtime since 1.19); a failure leaves the current limit, which is then used.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (soft, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    let budget = soft.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    Some(usize::try_from(budget).unwrap_or(usize::MAX))
}

/// Counters of the server loop, reported by `/metrics` (they are registered in
/// [`Metrics`](crate::metrics::Metrics); [`crate::AppState::connections`] hands them out).
/// `Default` gives unregistered counters, for a server whose router has no metrics.
#[derive(Debug, Clone, Default)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: Gauge,
    /// Connections accepted since start.
    pub accepted: Counter,
    /// Connections answered `503` at the cap because every connection was busy.
    pub rejected: Counter,
    /// Idle connections closed to make room for a new one at the cap.
    pub evicted: Counter,
    /// Connections closed after `idle_timeout` without a request.
    pub idle_closed: Counter,
    /// Connections closed because a response write stalled for `write_timeout`.
    pub write_timeouts: Counter,
    /// Connections that ended with an error reading the request (including a request
    /// head not complete within `header_read_timeout`).
    pub read_errors: Counter,
    /// TLS connections whose handshake failed (not TLS, no common cipher, the client
    /// refused the certificate).
    pub tls_handshake_errors: Counter,
    /// TLS connections closed because the handshake took longer than
    /// `tls_handshake_timeout`.
    pub tls_handshake_timeouts: Counter,
}

/// What one connection is doing, seen by the idle sweep and by eviction.
#[derive(Debug)]
struct Connection {
    /// Requests being served (a request counts until its response body is done).
    active: AtomicUsize,
    /// Milliseconds since the server's start at which the connection last became idle.
    idle_since: AtomicU64,
    /// Set once the connection was told to close, so it is not counted or evicted twice.
    closing: AtomicBool,
    close: Notify,
}

impl Connection {
    /// Tells the connection to close once its requests are done; false when it was
    /// already told.
    fn close(&self) -> bool {
        let first = !self.closing.swap(true, Ordering::AcqRel);
        if first {
            self.close.notify_one();
        }
        first
    }

    fn idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0 && !self.closing.load(Ordering::Acquire)
    }
}

/// The open connections, by id.
#[derive(Debug)]
struct Registry {
    epoch: Instant,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        flagstate_core::sync::lock(&self.connections)
    }

    /// Idle connections open longer than `idle` without a request.
    fn idle_longer_than(&self, idle: Duration) -> Vec<Arc<Connection>> {
        let now = self.now_ms();
        let limit = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        self.lock()
            .values()
            .filter(|c| {
                c.idle() && now.saturating_sub(c.idle_since.load(Ordering::Acquire)) >= limit
            })
            .cloned()
            .collect()
    }
}

/// Marks a request as being served on its connection until dropped (with the response
/// body, so a long download is not "idle").
#[derive(Debug)]
struct Busy {
    connection: Arc<Connection>,
    registry: Arc<Registry>,
}

impl Busy {
    fn new(connection: Arc<Connection>, registry: Arc<Registry>) -> Self {
        connection.active.fetch_add(1, Ordering::AcqRel);
        Busy {
            connection,
            registry,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.connection
            .idle_since
            .store(self.registry.now_ms(), Ordering::Release);
        self.connection.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until it is done.
struct TrackedBody {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Removes a connection from the registry and the open count when its task ends, however
/// it ends.
struct Registered {
    id: u64,
    registry: Arc<Registry>,
    stats: ConnectionStats,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.stats.open.dec();
    }
}

/// The client socket with a deadline on write progress. Hand-written rather than
/// `tokio-io-timeout`: it is the one timeout needed, and reads are already bounded by
/// hyper's header timer, the idle sweep and the request deadline.
struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    stats: ConnectionStats,
}

impl WriteDeadline {
    /// Turns a pending write into an error once it has been pending for `timeout`.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                self.stalled = None;
                self.stats.write_timeouts.inc();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading the response",
                )))
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The answer to a connection that arrives while every connection is serving a request.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
cache-control: no-store\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 94\r\n\
\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"too many connections; try again in a second\"}}\n";

/// Serves `app` on `listener` until `shutdown` resolves, within `config`'s limits, and
/// returns once the connections have drained (see the module docs). `stats` receives
/// the loop's counters; pass [`crate::AppState::connections`] to see them in `/metrics`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &ServerConfig,
    stats: ConnectionStats,
    shutdown: impl Future<Output = ()>,
) {
    run(listener, None, app, config, stats, shutdown).await;
}

/// [`serve`] over TLS: every accepted connection first completes a TLS handshake with
/// `tls` (within [`ServerConfig::tls_handshake_timeout`]), then is served exactly like a
/// plain one, within the same limits.
pub async fn serve_tls(
    listener: TcpListener,
    tls: TlsConfig,
    app: Router,
    config: &ServerConfig,
    stats: ConnectionStats,
    shutdown: impl Future<Output = ()>,
) {
    run(listener, Some(tls), app, config, stats, shutdown).await;
}

/// What every accept loop shares: the connection registry (one cap and one idle sweep
/// for all workers), the router, TLS, the limits and the counters.
struct Shared {
    registry: Arc<Registry>,
    /// `config.max_connections`, lowered to fit the descriptor limit.
    max_connections: usize,
    app: Router,
    tls: Option<TlsConfig>,
    config: ServerConfig,
    stats: ConnectionStats,
}

async fn run(
    listener: TcpListener,
    tls: Option<TlsConfig>,
    app: Router,
    config: &ServerConfig,
    stats: ConnectionStats,
    shutdown: impl Future<Output = ()>,
) {
    let max_connections = match descriptor_budget() {
        Some(budget) if budget < config.max_connections => {
            warn!(
                configured = config.max_connections,
                budget, "server.max_connections lowered to fit the open-file limit"
            );
            budget
        }
        _ => config.max_connections,
    }
    .max(1);
    let shared = Arc::new(Shared {
        registry: Arc::new(Registry {
            epoch: Instant::now(),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }),
        max_connections,
        app,
        tls,
        config: config.clone(),
        stats,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loops = start_workers(listener, &shared, config.workers, &stopped);

    let sweep_every =
        (config.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = sweep.tick() => {
                for connection in shared.registry.idle_longer_than(config.idle_timeout) {
                    if connection.close() {
                        shared.stats.idle_closed.inc();
                    }
                }
            }
        }
    }
    info!(
        connections = shared.registry.lock().len(),
        "no longer accepting connections; draining"
    );
    let _ = stop.send(true);
    for done in loops {
        // An error means the loop's thread ended without reporting (it panicked).
        let _ = done.await;
    }
}

/// Starts the accept loops: `workers` threads with a runtime each on clones of the
/// listening socket, or one loop on the caller's runtime for `0` (also when no thread
/// could be started). Each returned receiver completes when its loop has drained.
fn start_workers(
    listener: TcpListener,
    shared: &Arc<Shared>,
    workers: usize,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::sync::oneshot::Receiver<()>> {
    let on_caller = |listener: TcpListener| {
        let (done, finished) = tokio::sync::oneshot::channel();
        let (shared, stopped) = (shared.clone(), stopped.clone());
        tokio::spawn(async move {
            accept_loop(listener, shared, stopped).await;
            let _ = done.send(());
        });
        vec![finished]
    };
    if workers == 0 {
        return on_caller(listener);
    }
    let socket = match listener.into_std() {
        Ok(socket) => socket,
        Err(e) => {
            warn!(error = %e, "cannot hand the listening socket to worker threads; the server is not accepting connections");
            return Vec::new();
        }
    };
    let workers = workers.min(MAX_WORKERS);
    let mut loops = Vec::with_capacity(workers);
    for worker in 0..workers {
        let started = socket.try_clone().and_then(|socket| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (done, finished) = tokio::sync::oneshot::channel();
            let (shared, stopped) = (shared.clone(), stopped.clone());
            std::thread::Builder::new()
                .name(format!("flagstate-http-{worker}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match TcpListener::from_std(socket) {
                            Ok(listener) => accept_loop(listener, shared, stopped).await,
                            Err(e) => warn!(error = %e, "worker cannot listen"),
                        }
                    });
                    let _ = done.send(());
                    // Blocking work still running (a compression nobody waits for)
                    // is not waited for.
                    runtime.shutdown_background();
                })?;
            Ok(finished)
        });
        match started {
            Ok(finished) => loops.push(finished),
            Err(e) => warn!(worker, error = %e, "cannot start a server worker thread"),
        }
    }
    if loops.is_empty() {
        match TcpListener::from_std(socket) {
            Ok(listener) => return on_caller(listener),
            Err(e) => warn!(error = %e, "the server is not accepting connections"),
        }
    } else {
        debug!(workers = loops.len(), "server worker threads started");
    }
    loops
}

/// One accept loop: accepts connections on `listener` within the shared cap and serves
/// each in a task of this runtime until `stopped`, then closes the connections and lets
/// its own drain (at most `shutdown_timeout`).
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors or memory: back off instead of spinning;
                        // idle connections are being closed meanwhile.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Some(task) = admit(stream, peer, &shared) {
                    tasks.spawn(task);
                }
            }
        }
    }
    drop(listener);
    // Every loop closes every connection once it has stopped accepting, so a connection
    // another loop accepted just before it stopped is closed too.
    for connection in shared.registry.lock().values() {
        connection.close();
    }
    let drained = tokio::time::timeout(shared.config.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = tasks.len(),
            "requests still in flight after server.shutdown_timeout; closing their connections"
        );
        tasks.shutdown().await;
    }
}

/// Admits an accepted connection within the cap (evicting the longest-idle one, or
/// answering `503` when all are busy) and returns the task that serves it.
fn admit(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    shared: &Arc<Shared>,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let stats = &shared.stats;
    let registry = &shared.registry;
    let (id, connection) = {
        let mut connections = registry.lock();
        if connections.len() >= shared.max_connections {
            let idle = connections
                .values()
                .filter(|c| c.idle())
                .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
                .cloned();
            match idle {
                Some(idle) => {
                    if idle.close() {
                        stats.evicted.inc();
                    }
                }
                None => {
                    drop(connections);
                    stats.rejected.inc();
                    if shared.tls.is_none() {
                        debug!(%peer, "every connection is busy; answering 503");
                        // One non-blocking write: the reply fits any socket buffer, and a
                        // peer that cannot take it is not waited for.
                        let _ = stream.try_write(BUSY_RESPONSE);
                    } else {
                        debug!(%peer, "every connection is busy; closing");
                    }
                    return None;
                }
            }
        }
        let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(registry.now_ms()),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        connections.insert(id, connection.clone());
        (id, connection)
    };
    stats.accepted.inc();
    stats.open.inc();
    let _ = stream.set_nodelay(true);
    let io = WriteDeadline {
        stream,
        timeout: shared.config.write_timeout,
        stalled: None,
        stats: stats.clone(),
    };
    let registered = Registered {
        id,
        registry: registry.clone(),
        stats: stats.clone(),
    };
    let shared = shared.clone();
    Some(async move {
        let _registered = registered;
        let Shared {
            app,
            tls,
            config,
            registry,
            stats,
            ..
        } = &*shared;
        let Some(tls) = tls else {
            serve_connection(
                io,
                false,
                app.clone(),
                config.header_read_timeout,
                connection,
                registry.clone(),
                stats.clone(),
            )
            .await;
            return;
        };
        let handshake =
            tokio::time::timeout(config.tls_handshake_timeout, tls.acceptor().accept(io));
        let accepted = tokio::select! {
            accepted = handshake => accepted,
            // Idle-closed or evicted during the handshake.
            () = connection.close.notified() => return,
        };
        match accepted {
            Ok(Ok(io)) => {
                serve_connection(
                    io,
                    true,
                    app.clone(),
                    config.header_read_timeout,
                    connection,
                    registry.clone(),
                    stats.clone(),
                )
                .await;
            }
            Ok(Err(e)) => {
                stats.tls_handshake_errors.inc();
                debug!(%peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                stats.tls_handshake_timeouts.inc();
                debug!(%peer, "TLS handshake not complete within server.tls_handshake_timeout");
            }
        }
    })
}

/// One connection (plain, or after its TLS handshake: `tls`), from its first request
/// byte to its close.
async fn serve_connection<I>(
    io: I,
    tls: bool,
    app: Router,
    header_read_timeout: Duration,
    connection: Arc<Connection>,
    registry: Arc<Registry>,
    stats: ConnectionStats,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let connection = connection.clone();
        let registry = registry.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            if tls {
                request.headers_mut().insert(
                    "x-forwarded-proto",
                    hyper::header::HeaderValue::from_static("https"),
                );
            }
            let busy = Busy::new(connection.clone(), registry.clone());
            let app = app.clone();
            async move {
                let response = match app.oneshot(request.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, std::convert::Infallible>(
                    response.map(|inner| TrackedBody { inner, _busy: busy }),
                )
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = connection.close.notified() => {
            if connection.active.load(Ordering::Acquire) == 0 {
                // Idle, or stuck in a partial head: hyper's graceful shutdown would wait
                // for that head to complete, so the socket is closed outright.
                Ok(())
            } else {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    if let Err(e) = result {
        stats.read_errors.inc();
        debug!(error = %e, "connection ended with an error");
    }
}
