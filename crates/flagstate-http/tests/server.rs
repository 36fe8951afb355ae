//! The bounded server loop (`flagstate_http::serve`) and the per-request limits, over real
//! sockets: slow and idle clients are cut off, the connection cap evicts idle sockets or
//! answers 503, stalled readers are dropped, requests beyond the in-flight cap are shed,
//! slow answers time out — and a normal client is served throughout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::filled_store;
use flagstate_http::{AppState, HttpConfig, ServerConfig, router_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running server over the test store, with three extra routes: `/slow` (answers after
/// `?ms=` milliseconds), `/big` (a 64 MiB body) and `/thread` (the name of the thread
/// that served the request).
struct Running {
    addr: SocketAddr,
    state: AppState,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    #[allow(
        clippy::disallowed_methods,
        reason = "test-only routes, deliberately not in /openapi.json"
    )]
    async fn start(server: ServerConfig, http: HttpConfig) -> Running {
        flagstate_core::registry::install_crypto_provider();
        let store = filled_store().await;
        let state = AppState::new(store, None, http);
        let extra = Router::new()
            .route(
                "/slow",
                get(
                    |q: axum::extract::Query<std::collections::HashMap<String, u64>>| async move {
                        let ms = q.get("ms").copied().unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        "slow"
                    },
                ),
            )
            .route("/big", get(|| async { vec![b'x'; 64 << 20] }))
            .route(
                "/thread",
                get(|| async { std::thread::current().name().unwrap_or_default().to_owned() }),
            );
        let app = router_with(state.clone(), extra.into());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let connections = state.connections();
        let signal = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            flagstate_http::serve(listener, app, &server, connections, signal).await;
        });
        Running {
            addr,
            state,
            stop,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric line (`name value`), 0 when absent.
    async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}

fn config(f: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut c = ServerConfig::default();
    f(&mut c);
    c
}

/// Waits until the server closes `socket` (EOF or reset) and returns how long it took;
/// panics after `limit`.
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            socket.read(&mut buf),
        )
        .await
        {
            Err(_) => panic!("socket still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
        }
    }
}

async fn healthy(server: &Running) {
    let r = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(server.url("/index/static?tag=latest"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("apps/org.example.app"));
}

#[tokio::test]
async fn partial_heads_are_closed_and_normal_clients_are_served_meanwhile() {
    let server = Running::start(
        config(|c| {
            c.idle_timeout = Duration::from_millis(1500);
            c.header_read_timeout = Duration::from_secs(30);
        }),
        HttpConfig::default(),
    )
    .await;
    let mut sockets = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /index/static HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        sockets.push(s);
    }
    // The flood changes nothing for a client that sends whole requests.
    for _ in 0..5 {
        healthy(&server).await;
    }
    for s in &mut sockets {
        closed_within(s, Duration::from_secs(15)).await;
    }
    assert!(
        server
            .metric("flagstate_http_connections_idle_closed_total")
            .await
            >= 300.0
    );
    healthy(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_head_trickled_one_line_a_second_is_cut_off() {
    // The idle sweep is set far out, so hyper's header timer is what cuts the client off.
    let server = Running::start(
        config(|c| {
            c.idle_timeout = Duration::from_secs(60);
            c.header_read_timeout = Duration::from_secs(2);
        }),
        HttpConfig::default(),
    )
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let trickle = async {
        for i in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return i;
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
            {
                return i;
            }
        }
        60
    };
    let lines = trickle.await;
    assert!(lines < 10, "the trickling client was served {lines} lines");
    healthy(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn at_the_cap_idle_connections_make_room_and_busy_ones_get_503() {
    let server = Running::start(config(|c| c.max_connections = 4), HttpConfig::default()).await;
    // Four idle sockets fill the cap; a real request evicts the longest idle one.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    closed_within(&mut idle[0], Duration::from_secs(5)).await;
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Four connections busy with slow requests: a fifth is answered 503 and closed.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), server.url("/slow?ms=1500"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("retry-after: 1"),
        "{reply}"
    );
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"]["code"], "overloaded");
    for t in slow {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(
        server
            .metric("flagstate_http_connections_rejected_total")
            .await
            >= 1.0
    );
    assert!(
        server
            .metric("flagstate_http_connections_evicted_total")
            .await
            >= 1.0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let server = Running::start(
        config(|c| c.write_timeout = Duration::from_millis(500)),
        HttpConfig::default(),
    )
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read: the kernel buffers fill and the server's writes stall.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .metric("flagstate_http_connections_write_timeouts_total")
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the stalled reader was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s);
    healthy(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn requests_beyond_the_in_flight_cap_are_shed_but_probes_are_not() {
    let server = Running::start(ServerConfig::default(), {
        let mut fields = HttpConfig::default();
        fields.max_in_flight = 2;
        fields
    })
    .await;
    let client = reqwest::Client::new();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (client.clone(), server.url("/slow?ms=1500"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = client
        .get(server.url("/index/static"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "overloaded");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests")
    );
    for probe in ["/healthz", "/readyz"] {
        let r = client.get(server.url(probe)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{probe}");
    }
    for t in slow {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(server.state.metrics().requests_shed.get(), 1);
    healthy(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn an_answer_slower_than_the_request_timeout_is_503() {
    let server = Running::start(ServerConfig::default(), {
        let mut fields = HttpConfig::default();
        fields.request_timeout = Duration::from_millis(200);
        fields
    })
    .await;
    let r = reqwest::get(server.url("/slow?ms=5000")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "overloaded");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request timeout"),
        "{json}"
    );
    let r = reqwest::get(server.url("/slow?ms=10")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.state.metrics().requests_timed_out.get(), 1);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_requests_in_flight() {
    let server = Running::start(ServerConfig::default(), HttpConfig::default()).await;
    let url = server.url("/slow?ms=800");
    let request = tokio::spawn(async move { reqwest::get(url).await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = server.addr;
    server.stop().await;
    assert_eq!(request.await.unwrap(), 200);
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn broad_pages_and_index_builds_share_the_build_limit() {
    let store = filled_store().await;
    let state = AppState::new(store, None, {
        let mut fields = HttpConfig::default();
        fields.max_concurrent_builds = 1;
        fields
    });
    let app = router_with(state.clone(), flagstate_http::ui::routes());
    let builds = state.cache().builds();
    for path in ["/apps", "/index/static?tag=latest"] {
        let held = builds.clone().acquire_owned().await.unwrap();
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let pending = tower::ServiceExt::oneshot(app.clone(), request);
        tokio::pin!(pending);
        // While the only permit is held, the answer waits for it...
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut pending)
                .await
                .is_err(),
            "{path} was built without a permit"
        );
        // ...and is built once it is free.
        drop(held);
        let response = pending.await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

/// By default connections are served by worker threads, each with its own event loop,
/// on the one listening socket; `workers: 0` serves them on the caller's runtime. Both
/// answer, and both stop at shutdown.
#[tokio::test]
async fn connections_are_served_by_worker_threads_or_on_the_callers_runtime() {
    for workers in [3, 0] {
        let mut config = ServerConfig::default();
        config.workers = workers;
        let server = Running::start(config, HttpConfig::default()).await;
        // A new connection for each request, so the kernel hands them to any worker.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..24 {
            let name = client
                .get(server.url("/thread"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            seen.insert(name);
        }
        if workers == 0 {
            assert!(
                seen.iter().all(|name| !name.starts_with("flagstate-http-")),
                "{seen:?}"
            );
        } else {
            assert!(
                seen.iter().all(|name| name.starts_with("flagstate-http-")),
                "{seen:?}"
            );
        }
        assert_eq!(
            reqwest::get(server.url("/index/static"))
                .await
                .unwrap()
                .status(),
            200
        );
        let addr = server.addr;
        server.stop().await;
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
