//! End to end over the socket: every endpoint's bad inputs get a clear status and a JSON
//! body naming the problem, nothing already indexed is lost, the server shuts down
//! cleanly on SIGTERM, and a read-only server over the same database refuses events.

mod common;

use std::time::Duration;

use common::images::HELLO;
use common::{
    EVENTS_TOKEN, FLATPAK_QUERY, Server, free_port, hello_registry, http_client, repository_names,
};
use serde_json::Value;

const EVENTS_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// Asserts `status` and a JSON error body whose message contains `needle`.
async fn expect_error(response: reqwest::Response, status: u16, needle: &str) -> Value {
    let got = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.unwrap();
    assert_eq!(got, status, "body: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}: {body}"
    );
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {body}");
    json
}

/// Sends `head` then `body` on a fresh connection and returns the status line of the
/// answer. The body is written concurrently, ignoring write errors: a server may answer
/// (and close) before reading all of it.
async fn raw_request(port: u16, head: &str, body: Vec<u8>) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let head = head.as_bytes().to_vec();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&head).await;
        let _ = write.write_all(&body).await;
        write
    });
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(read).read_line(&mut line),
    )
    .await
    .expect("no answer within 10 s")
    .unwrap();
    writer.abort();
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_nothing_is_lost() {
    let port = free_port();
    let Some(registry) = hello_registry(Some(port)).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    let db = db.to_str().unwrap();
    let mut server = Server::start(
        port,
        &["--registry", &registry.url(), "--database", db],
        &[
            ("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN),
            ("FLAGSTATE_COMPONENTS__ASSERT_ENDPOINT", "true"),
        ],
        dir.path(),
    )
    .await;
    let (before, etag) = server.flatpak_index().await;
    assert_eq!(repository_names(&before), [HELLO.repository()]);
    let client = http_client();
    let url = |path: &str| format!("{}{path}", server.url);

    // Malformed queries name the parameter.
    for (query, needle) in [
        (
            "label%3Aorg.flatpak.ref%3Aexists=2",
            "label:org.flatpak.ref:exists",
        ),
        ("architecture=amd64&colour=blue", "colour"),
        ("tag=", "tag"),
        ("label%3A=x", "label:"),
        ("repository=%FF", "repository"),
    ] {
        for endpoint in ["/index/static", "/index/dynamic"] {
            let answer = client
                .get(url(&format!("{endpoint}?{query}")))
                .send()
                .await
                .unwrap();
            expect_error(answer, 400, needle).await;
        }
    }
    let long = format!("/index/static?tag={}", "a".repeat(10_000));
    let answer = client.get(url(&long)).send().await.unwrap();
    assert_eq!(answer.status(), 400);

    // Notifications: authentication first, then the body.
    let events = url("/events");
    let good_body = r#"{"events":[]}"#;
    let answer = client
        .post(&events)
        .header("content-type", EVENTS_TYPE)
        .body(good_body)
        .send()
        .await
        .unwrap();
    expect_error(answer, 401, "Bearer").await;
    for auth in ["Bearer wrong-token", "Bearer ", "Basic dXNlcjpwYXNz"] {
        let answer = client
            .post(&events)
            .header("authorization", auth)
            .header("content-type", EVENTS_TYPE)
            .body(good_body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "{auth}");
    }
    let authorized = |body: Vec<u8>, content_type: &'static str| {
        client
            .post(&events)
            .bearer_auth(EVENTS_TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let answer = authorized(b"{\"events\": [".to_vec(), EVENTS_TYPE)
        .await
        .unwrap();
    assert_eq!(answer.status(), 400, "{}", answer.text().await.unwrap());
    let answer = authorized(b"[1, 2, 3]".to_vec(), EVENTS_TYPE)
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    // An oversized body is refused once the limit is passed (a client library reports
    // the early answer as a broken upload, hence the raw socket).
    let huge = vec![b' '; 4 * 1024 * 1024];
    let status_line = raw_request(
        server.port,
        &format!(
            "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {EVENTS_TOKEN}\r\n\
             Content-Type: {EVENTS_TYPE}\r\nContent-Length: {}\r\n\r\n",
            huge.len()
        ),
        huge,
    )
    .await;
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    let answer = authorized(good_body.as_bytes().to_vec(), "text/plain")
        .await
        .unwrap();
    assert_eq!(answer.status(), 415);
    let answer = authorized(good_body.as_bytes().to_vec(), EVENTS_TYPE)
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "an empty envelope is fine: {}",
        answer.status()
    );

    // Unknown paths are real 404s, not the home page.
    for path in [
        "/nope",
        "/index/static/extra",
        "/index",
        "/events/x",
        "/v2/nope/tags/list",
    ] {
        let answer = client.get(url(path)).send().await.unwrap();
        expect_error(answer, 404, "").await;
    }
    let answer = client.delete(url("/index/static")).send().await.unwrap();
    assert_eq!(answer.status(), 405);

    // Caching still works and the data is intact.
    let head = client
        .head(url(&format!("/index/static?{FLATPAK_QUERY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"], etag.as_str());
    let not_modified = client
        .get(url(&format!("/index/static?{FLATPAK_QUERY}")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let (after, after_etag) = server.flatpak_index().await;
    assert_eq!(after, before, "bad requests changed the index");
    assert_eq!(after_etag, etag);

    // SIGTERM while a request is in flight (an assertion waiting 2 s for something that
    // never happens): the request still gets its complete answer, new connections are
    // refused, and the process exits 0.
    let in_flight = tokio::spawn(
        http_client()
            .post(url("/assert?timeout=2"))
            .body(r#"{"Query": "repository=never/there", "Assertions": [{"Type": "contains", "Test": {"Results": [{"Name": "never/there"}]}}]}"#)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.send_sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !in_flight.is_finished(),
        "the in-flight request ended early"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .is_err(),
        "still accepting connections after SIGTERM"
    );
    let answer = in_flight.await.unwrap().expect("in-flight request cut off");
    assert_eq!(answer.status(), 409);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["Result"], false);
    let status = server.wait_exit();
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        server.log()
    );
    assert!(server.log().contains("stopped"), "{}", server.log());

    // A read-only server over the same database answers queries and refuses events.
    let ro_port = free_port();
    let readonly = Server::start(
        ro_port,
        &["--read-only", "--database", db, "--json-logs"],
        &[("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN)],
        dir.path(),
    )
    .await;
    let (ro_index, _) = readonly.flatpak_index().await;
    assert_eq!(ro_index["Results"], before["Results"]);
    // No registry configured at all: it names the registry the writer stored with the
    // index, as the writer did.
    assert_eq!(ro_index["Registry"], before["Registry"]);
    assert_ne!(ro_index["Registry"], "/");
    let answer = http_client()
        .post(format!("{}/events", readonly.url))
        .bearer_auth(EVENTS_TOKEN)
        .header("content-type", EVENTS_TYPE)
        .body(good_body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);

    // --json-logs: every line is one JSON object.
    let log = readonly.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening on http://"))),
        "{log}"
    );
}

#[tokio::test]
async fn malformed_encoding_and_oversized_globs_are_refused_by_the_binary() {
    let Some(registry) = hello_registry(None).await else {
        return;
    };
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
        &[("FLAGSTATE_QUERY__MAX_PATTERN_BYTES", "8")],
        dir.path(),
    )
    .await;
    let (before, _) = server.flatpak_index().await;
    assert_eq!(repository_names(&before), [HELLO.repository()]);
    for endpoint in ["/index/static", "/index/dynamic", "/v1/search"] {
        let answer = server.get(&format!("{endpoint}?tag=%ZZ")).await;
        let json = expect_error(
            answer,
            400,
            "parameter \"tag\" is not valid percent-encoded",
        )
        .await;
        assert_eq!(json["error"]["code"], "invalid_query");
    }
    // The configured glob limit applies; a glob within it is answered.
    let answer = server.get("/index/static?tag:matches=latest-*-x").await;
    let json = expect_error(
        answer,
        400,
        "\"tag:matches\" has a pattern of 10 bytes; the limit is 8",
    )
    .await;
    assert_eq!(json["error"]["code"], "invalid_query");
    let answer = server.get("/index/static?tag:matches=lat*").await;
    assert_eq!(answer.status(), 200);
    let index: Value = answer.json().await.unwrap();
    assert_eq!(repository_names(&index), [HELLO.repository()]);
}
