//! The release server on the open internet: `flagstate serve` against the real registry
//! under a slowloris and connection flood (sockets sending half a request head, more of
//! them than `server.max_connections`), `/events` without a configured token, and HTTPS
//! served by flagstate itself (`tls.*`) within the same limits.

mod common;

use std::time::{Duration, Instant};

use common::images::HELLO;
use common::*;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_partial_heads_is_cut_off_while_clients_are_served() {
    let port = free_port();
    let Some(registry) = hello_registry(Some(port)).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    let server = Server::start(
        port,
        &[
            "--registry",
            &registry.url(),
            "--database",
            db.to_str().unwrap(),
        ],
        &[
            ("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN),
            ("FLAGSTATE_SERVER__IDLE_TIMEOUT", "2s"),
            ("FLAGSTATE_SERVER__HEADER_READ_TIMEOUT", "4s"),
            ("FLAGSTATE_SERVER__MAX_CONNECTIONS", "200"),
        ],
        dir.path(),
    )
    .await;
    let (index, _) = server.flatpak_index().await;

    // 600 sockets, three times the cap, each holding half a request head.
    let mut flood = Vec::new();
    for _ in 0..600 {
        let Ok(mut socket) = TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        if socket
            .write_all(b"GET /index/static HTTP/1.1\r\nHost: flood\r\nX-Partial: ")
            .await
            .is_ok()
        {
            flood.push(socket);
        }
    }
    // Meanwhile clients arriving are served: probes and the Flatpak query, each on a new
    // connection. (The keep-alive connection left idle from before the flood is the
    // longest-idle one at the cap, so it is the first closed to make room, by design; a
    // request sent on it as it closes is reset.)
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let fetch = async |path: &str| {
        fresh
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", server.log()))
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(fetch("/healthz").await.status(), 200);
        let answer = fetch(&format!("/index/static?{FLATPAK_QUERY}")).await;
        assert_eq!(answer.status(), 200);
        let again: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(again, index);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every flood socket is closed by the server, within the timeouts (with slack).
    let deadline = Instant::now() + Duration::from_secs(20);
    for socket in &mut flood {
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, socket.read(&mut buf)).await {
                Err(_) => panic!("a partial-head socket is still open\n{}", server.log()),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
            }
        }
    }
    let idle = server
        .metric("flagstate_http_connections_idle_closed_total")
        .await
        .unwrap_or(0.0);
    let evicted = server
        .metric("flagstate_http_connections_evicted_total")
        .await
        .unwrap_or(0.0);
    assert!(idle + evicted >= 600.0, "idle {idle}, evicted {evicted}");
    assert!(evicted > 0.0, "the cap was never reached");
    assert_eq!(server.get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_configured_token_are_refused_unless_allowed() {
    let Some(registry) = hello_registry(None).await else {
        return;
    };
    let delete = serde_json::json!({"events": [{
        "id": "anon-1",
        "timestamp": "2026-01-01T00:00:00Z",
        "action": "delete",
        "target": {"repository": HELLO.repository(), "tag": "latest"},
    }]})
    .to_string();
    let post = |url: String, body: String| async move {
        http_client()
            .post(format!("{url}/events"))
            .header(
                "content-type",
                "application/vnd.docker.distribution.events.v1+json",
            )
            .body(body)
            .send()
            .await
            .unwrap()
    };

    for (env, allowed) in [
        (vec![], false),
        (vec![("FLAGSTATE_EVENTS__TOKEN", "")], false),
        (vec![("FLAGSTATE_EVENTS__ALLOW_ANONYMOUS", "true")], true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let server = Server::start(
            free_port(),
            &[
                "--registry",
                &registry.url(),
                "--database",
                db.to_str().unwrap(),
            ],
            &env,
            dir.path(),
        )
        .await;
        let (before, _) = server.flatpak_index().await;
        assert_eq!(repository_names(&before), [HELLO.repository()]);
        let answer = post(server.url.clone(), delete.clone()).await;
        if allowed {
            assert_eq!(answer.status(), 200, "{env:?}");
            let body: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(body["applied"], 1, "{body}");
            // Durable on acknowledgement, before the re-scan that restores the tag.
            let (after, _) = server.flatpak_index().await;
            assert!(repository_names(&after).is_empty(), "{after}");
        } else {
            assert_eq!(answer.status(), 401, "{env:?}");
            let body: serde_json::Value = answer.json().await.unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("events.token"), "{message}");
            let (after, _) = server.flatpak_index().await;
            assert_eq!(after, before, "a refused delivery changed the index");
        }
    }
}

/// Reads from `stream` until the server closes it; panics after `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
    what: &str,
) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

/// `tls.cert` and `tls.key`: both or neither, unusable files are named (exit 2, also by
/// `config check`); with a good pair the server answers HTTPS verified against its CA,
/// names `oci+https://` in its web UI, and bounds TLS connections: a plain-HTTP client
/// fails the handshake, a silent socket is closed after `server.tls_handshake_timeout`,
/// and a half request head over TLS after `server.header_read_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_within_the_limits_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let Some(ca) = LocalCa::create(&dir.path().join("tls")) else {
        return;
    };
    let cert = ca.cert.to_str().unwrap();
    let key = ca.key.to_str().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let ca_key = dir.path().join("tls/ca.key");
    let ca_key = ca_key.to_str().unwrap();
    let serve = [
        "serve",
        "--registry",
        "http://127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
    ];
    let check = ["config", "check", "--registry", "http://127.0.0.1:9"];
    for (env, expect) in [
        (
            vec![("FLAGSTATE_TLS__CERT", cert)],
            vec!["tls.key", "tls.cert"],
        ),
        (
            vec![("FLAGSTATE_TLS__KEY", key)],
            vec!["tls.cert", "tls.key"],
        ),
        (
            vec![
                ("FLAGSTATE_TLS__CERT", garbage),
                ("FLAGSTATE_TLS__KEY", key),
            ],
            vec!["tls.cert", garbage, "no PEM certificate"],
        ),
        (
            vec![
                ("FLAGSTATE_TLS__CERT", cert),
                ("FLAGSTATE_TLS__KEY", garbage),
            ],
            vec!["tls.key", garbage, "no PEM private key"],
        ),
        (
            vec![
                ("FLAGSTATE_TLS__CERT", cert),
                ("FLAGSTATE_TLS__KEY", ca_key),
            ],
            vec![cert, ca_key, "cannot be used together"],
        ),
    ] {
        for args in [&serve[..], &check[..]] {
            let out = run_with_env(args, &env);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
            for word in &expect {
                assert!(
                    stderr.contains(word),
                    "{args:?} {env:?}: {word:?} not in {stderr}"
                );
            }
        }
    }
    let out = run_with_env(
        &check,
        &[("FLAGSTATE_TLS__CERT", cert), ("FLAGSTATE_TLS__KEY", key)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("tls: https with certificate {cert} and key {key}")),
        "{}",
        text(&out.stdout)
    );

    let Some(registry) = hello_registry(None).await else {
        return;
    };
    let db = dir.path().join("index.db");
    let port = free_port();
    let server = Server::start_tls(
        port,
        &[
            "--registry",
            &registry.url(),
            "--database",
            db.to_str().unwrap(),
        ],
        &[
            ("FLAGSTATE_SERVER__TLS_HANDSHAKE_TIMEOUT", "1s"),
            ("FLAGSTATE_SERVER__HEADER_READ_TIMEOUT", "1s"),
            ("FLAGSTATE_SERVER__IDLE_TIMEOUT", "60s"),
        ],
        dir.path(),
        &ca,
    )
    .await;
    let (index, _) = server.flatpak_index().await;
    assert_eq!(repository_names(&index), [HELLO.repository()]);
    // Over TLS the web UI's remote names https (the server sets X-Forwarded-Proto), by
    // either name the certificate holds.
    for host in ["127.0.0.1", "localhost"] {
        let apps = ca
            .client()
            .get(format!("https://{host}:{port}/apps"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            apps.contains(&format!("oci+https://{host}:{port}/")),
            "{apps}"
        );
    }

    // Plain HTTP to the TLS port: no answer, a failed handshake.
    assert!(
        http_client()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
    );
    // A socket that never starts the handshake, with idle_timeout far away.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(20), "a silent socket").await;
    // A completed handshake, then half a request head.
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&ca.ca).unwrap();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    };
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(b"GET /index/static HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    closed_within(&mut tls, Duration::from_secs(20), "a half head over TLS").await;

    for metric in [
        "flagstate_http_connections_tls_handshake_errors_total",
        "flagstate_http_connections_tls_handshake_timeouts_total",
        "flagstate_http_connections_read_errors_total",
    ] {
        let value = server.metric(metric).await.unwrap_or(0.0);
        assert!(value >= 1.0, "{metric} is {value}\n{}", server.log());
    }
    assert_eq!(
        server
            .metric("flagstate_http_connections_idle_closed_total")
            .await,
        Some(0.0),
        "the idle sweep, not the TLS limits, closed a connection"
    );
    assert_eq!(server.get("/healthz").await.status(), 200);
}
