//! The release server on the open internet: `flagstate serve` against the real registry
//! under a slowloris and connection flood (sockets sending half a request head, more of
//! them than `server.max_connections`), and `/events` without a configured token.

mod common;

use std::time::{Duration, Instant};

use common::images::HELLO;
use common::*;
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
    // Meanwhile a normal client is served: probes and the Flatpak query.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(server.get("/healthz").await.status(), 200);
        let (again, _) = server.flatpak_index().await;
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
