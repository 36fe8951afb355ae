//! The content discovery extension (`/v2/_flagstate/…`, `_oci/ext/discover`) and the
//! `ls` / `history` commands.
//!
//! - Paging, as an embedder serves it (the `flagstate-http` router over the SQLite store,
//!   and PostgreSQL when `FLAGSTATE_TEST_PG_URL` is set): 2,500 repositories and a
//!   repository of 2,500 tags walked through `Link` headers with n = 7, 100 and 1000
//!   while writes land between pages.
//! - End to end: the `flagstate` binary beside the real distribution registry with
//!   notifications: pushes, moves and deletes show in the listings and the history, a
//!   restart and the full scan that follows keep every time, and bad input gets the
//!   distribution error format; untagged manifests and referrers, pushed by digest with a
//!   `subject` or kept under referrer tags (`sha256-<hex>`, cosign's `.sig`).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::images::HELLO;
use common::{EVENTS_TOKEN, Server, free_port, http_client, registry, run, text};
use flagstate_core::conformance::fixtures::{image, put_image, repo};
use flagstate_core::testkit::ImageSpec;
use flagstate_core::{Store, Timestamp};
use flagstate_http::{AppState, HttpConfig, router};
use serde_json::Value;
use tower::ServiceExt;

/// One `GET` through the router: status, `Link` header and JSON body.
async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Option<String>, Value) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let link = response
        .headers()
        .get("link")
        .map(|l| l.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, link, body)
}

/// The URL of a `Link: <URL>; rel="next"` header.
fn next_url(link: &str) -> String {
    let url = link
        .strip_prefix('<')
        .and_then(|l| l.split_once(">; rel=\"next\""))
        .map(|(url, _)| url.to_owned());
    url.unwrap_or_else(|| panic!("not a next link: {link}"))
}

/// Follows `Link` headers from `first`, calling `between` after each page; returns the
/// `field` of every item of `list`, in walk order.
async fn walk(
    app: &axum::Router,
    first: &str,
    list: &str,
    field: &str,
    mut between: impl AsyncFnMut(usize),
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut uri = first.to_owned();
    for page in 0.. {
        let (status, link, body) = get(app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        for item in body[list].as_array().unwrap() {
            seen.push(item[field].as_str().unwrap().to_owned());
        }
        let Some(link) = link else { break };
        uri = next_url(&link);
        between(page).await;
    }
    seen
}

fn assert_once(seen: &[String], expected: &BTreeSet<String>, what: &str) {
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "{what}: an item was listed twice");
    let missing: Vec<_> = expected.difference(&unique).take(5).collect();
    assert!(missing.is_empty(), "{what}: skipped {missing:?}");
}

/// 2,500 repositories (one of them with 2,500 tags) walked page by page while new
/// repositories and tags arrive and existing tags move between pages: in name order
/// every repository that existed when the walk began is listed exactly once; in time
/// order a walk over a quiet index lists everything once, and arrivals during it (newer
/// than anything listed) never repeat an item.
async fn paging_holds_under_writes(store: Arc<dyn Store>) {
    let a = image("a").build();
    let b = image("b").build();
    let mut expected_repositories = BTreeSet::new();
    for chunk in 0..25 {
        for i in 0..100 {
            let n = chunk * 100 + i;
            let name = format!("ns{}/repo{n:04}", n % 7);
            let snapshot = repo(&name)
                .image("v1", &a)
                .at(Timestamp::from_millis(1_000_000 + (n as i64 % 50) * 1000))
                .build();
            store.replace_repository(&snapshot).await.unwrap();
            expected_repositories.insert(name);
        }
    }
    let mut big = repo("big/many");
    let mut expected_tags = BTreeSet::new();
    for t in 0..2500 {
        big = big.image(&format!("t{t:04}"), &a);
        expected_tags.insert(format!("t{t:04}"));
    }
    store.replace_repository(&big.build()).await.unwrap();
    expected_repositories.insert("big/many".to_owned());
    let app = router(AppState::new(store.clone(), None, HttpConfig::default()));

    let mut arrivals = 0;
    for n in [7, 100, 1000] {
        for sort in ["name", "updated", "-updated"] {
            let first = format!("/v2/_flagstate/repositories?n={n}&sort={sort}");
            let seen = walk(&app, &first, "repositories", "name", async |page| {
                if page % 3 == 0 {
                    arrivals += 1;
                    let change = put_image(&format!("late/r{arrivals}"), "v1", &b);
                    store.apply(&change).await.unwrap();
                    if sort == "name" {
                        // Moves change times, not names: name order must not care.
                        let moved = put_image(&format!("ns1/repo{:04}", page * 7 + 1), "v1", &b);
                        store.apply(&moved).await.unwrap();
                    }
                }
            })
            .await;
            assert_once(&seen, &expected_repositories, &first);
            let first = format!("/v2/big/many/_flagstate/tags?n={n}&sort={sort}");
            let seen = walk(&app, &first, "tags", "name", async |page| {
                let change = put_image("big/many", &format!("new{n}{sort}{page}"), &b);
                store.apply(&change).await.unwrap();
            })
            .await;
            assert_once(&seen, &expected_tags, &first);
        }
    }
    let (status, link, body) = get(&app, "/v2/_flagstate/repositories?n=0").await;
    assert_eq!((status, link), (StatusCode::OK, None));
    assert_eq!(body["repositories"].as_array().map(Vec::len), Some(0));
    let (_, _, newest) = get(&app, "/v2/big/many/_flagstate/tags?sort=-updated&n=1").await;
    assert!(
        newest["tags"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("new"),
        "the newest tag is the last one added: {newest}"
    );
    let (_, link, body) = get(&app, "/v2/_flagstate/repositories?namespace=ns3&n=1000").await;
    assert_eq!(link, None, "fewer than 1000 under ns3");
    let names: Vec<&str> = body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(!names.is_empty() && names.iter().all(|n| n.starts_with("ns3/")));
    assert_eq!(
        names.len(),
        expected_repositories
            .iter()
            .filter(|n| n.starts_with("ns3/"))
            .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_holds_under_writes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = flagstate_sqlite::SqliteStore::open(dir.path().join("index.db")).unwrap();
    paging_holds_under_writes(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_holds_under_writes_on_postgres() {
    let Ok(url) = std::env::var("FLAGSTATE_TEST_PG_URL") else {
        assert!(
            !flagstate_core::testkit::registry_required(),
            "FLAGSTATE_REQUIRE_REGISTRY=1 but FLAGSTATE_TEST_PG_URL is not set"
        );
        eprintln!("\n!!! SKIPPING: FLAGSTATE_TEST_PG_URL is not set\n");
        return;
    };
    let schema = format!("flagstate_discovery_{}", std::process::id());
    let options = flagstate_pg::PgOptions::default().with_schema(Some(schema.clone()));
    let store = flagstate_pg::PgStore::connect(&url, options).await.unwrap();
    paging_holds_under_writes(Arc::new(store.clone())).await;
    store.close().await;
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

/// `GET` on the server; status, headers and JSON body.
async fn fetch(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = http_client().get(format!("{}{path}", server.url));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// The web UI page at `path`, which must answer `200`.
async fn html(server: &Server, path: &str) -> String {
    let response = http_client()
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.text().await.unwrap()
}

/// Polls `path` until `done` holds for its body (up to 30 s).
async fn wait_for(server: &Server, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = fetch(server, path, &[]).await;
        if status == StatusCode::OK && done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never showed {what}; last answer {status} {body}\nserver log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The digests of the images `/index/static` answers for `repository`, in order.
async fn indexed_images(server: &Server, repository: &str) -> Vec<String> {
    let path = format!("/index/static?repository={repository}");
    let (_, _, index) = fetch(server, &path, &[]).await;
    index["Results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["Images"].as_array().into_iter().flatten())
        .filter_map(|i| i["Digest"].as_str().map(str::to_owned))
        .collect()
}

fn tag<'a>(tags: &'a Value, name: &str) -> Option<&'a Value> {
    tags["tags"].as_array()?.iter().find(|t| t["name"] == name)
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_history_follow_the_registry_and_survive_a_restart() {
    let port = free_port();
    let Some(registry) = registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    let app = HELLO.repository();
    let first = pusher
        .push_image(&app, Some("stable"), &HELLO.image())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db").to_str().unwrap().to_owned();
    let args = ["--registry", &registry.url(), "--database", &db];
    let env = [("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN)];
    let mut server = Server::start(port, &args, &env, dir.path()).await;

    // Pushes, a move and a delete arrive as notifications.
    let second_spec = ImageSpec::new("linux", "amd64").label("org.example.build", "2");
    let second = pusher
        .push_image(&app, Some("stable"), &second_spec)
        .await
        .unwrap();
    let tags_path = format!("/v2/{app}/_flagstate/tags");
    let moved = wait_for(&server, &tags_path, "stable moved", |t| {
        tag(t, "stable").is_some_and(|s| s["digest"] == second.digest.as_str())
    })
    .await;
    let extra = ImageSpec::new("linux", "arm64");
    let edge = pusher.push_image(&app, Some("edge"), &extra).await.unwrap();
    pusher
        .push_image("other/thing", Some("v1"), &extra)
        .await
        .unwrap();
    let tags = wait_for(&server, &tags_path, "edge", |t| tag(t, "edge").is_some()).await;
    let stable = tag(&tags, "stable").unwrap();
    assert_eq!(stable["mediaType"], second.media_type.as_str());
    assert_eq!(
        stable["updated"],
        tag(&moved, "stable").unwrap()["updated"],
        "a later push elsewhere must not restamp stable"
    );
    let (_, headers, newest) = fetch(&server, &format!("{tags_path}?sort=-updated&n=1"), &[]).await;
    assert_eq!(newest["tags"][0]["name"], "edge", "{newest}");
    assert_eq!(newest["tags"].as_array().map(Vec::len), Some(1));
    let link = headers.get("link").unwrap().to_str().unwrap();
    assert!(
        link.contains("sort=-updated") && link.contains("n=1"),
        "{link}"
    );
    let history_path = format!("/v2/{app}/_flagstate/history/stable");
    let history = wait_for(&server, &history_path, "two entries", |h| {
        h["history"].as_array().is_some_and(|e| e.len() == 2)
    })
    .await;
    assert_eq!(history["name"], app.as_str());
    assert_eq!(history["history"][0]["digest"], first.digest.as_str());
    assert_eq!(history["history"][1]["digest"], second.digest.as_str());
    assert_eq!(history["history"][1]["updateTimestamp"], stable["updated"]);
    let (_, headers, _) = fetch(&server, &history_path, &[]).await;
    assert!(
        headers.contains_key("flagstate-cursor"),
        "the history names the change cursor it reflects"
    );

    pusher.delete_manifest(&app, &edge.digest).await.unwrap();
    wait_for(&server, &tags_path, "edge deleted", |t| {
        tag(t, "edge").is_none()
    })
    .await;
    let repositories = wait_for(
        &server,
        "/v2/_flagstate/repositories?sort=-updated",
        "both",
        |r| r["repositories"].as_array().is_some_and(|r| r.len() == 2),
    )
    .await;
    assert_eq!(
        repositories["repositories"][0]["name"],
        app.as_str(),
        "{repositories}"
    );
    assert_eq!(repositories["repositories"][0]["tags"], 1);

    // Validators and compression, like index answers.
    let (_, headers, _) = fetch(&server, &tags_path, &[]).await;
    let etag = headers.get("etag").unwrap().to_str().unwrap().to_owned();
    let (status, _, _) = fetch(&server, &tags_path, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let gzip = http_client()
        .get(format!("{}{tags_path}", server.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.headers().get("content-encoding").unwrap(), "gzip");

    // The extension documents.
    let (status, _, discover) = fetch(&server, "/v2/_oci/ext/discover", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(discover["extensions"][0]["name"], "_flagstate");
    assert_eq!(
        discover["extensions"][0]["endpoints"][0],
        "_flagstate/repositories"
    );
    let (_, _, discover) = fetch(&server, &format!("/v2/{app}/_oci/ext/discover"), &[]).await;
    let endpoints = discover["extensions"][0]["endpoints"].to_string();
    assert!(endpoints.contains("_flagstate/tags") && endpoints.contains("_flagstate/history"));

    // Bad input: the distribution error format, naming the problem.
    for (path, status, code) in [
        (
            "/v2/_flagstate/repositories?n=-1",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            "/v2/_flagstate/repositories?n=1001",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            "/v2/_flagstate/repositories?n=abc",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            "/v2/_flagstate/repositories?sort=newest",
            400,
            "UNSUPPORTED",
        ),
        (
            "/v2/_flagstate/repositories?sort=updated&last=garbage",
            400,
            "UNSUPPORTED",
        ),
        (
            "/v2/_flagstate/repositories?namespace=Bad..Name",
            400,
            "NAME_INVALID",
        ),
        ("/v2/no/such/_flagstate/tags", 404, "NAME_UNKNOWN"),
        ("/v2/no/such/_oci/ext/discover", 404, "NAME_UNKNOWN"),
        ("/v2/Bad..Name/_flagstate/tags", 400, "NAME_INVALID"),
    ] {
        let (got, _, body) = fetch(&server, path, &[]).await;
        assert_eq!(
            (got.as_u16(), error_code(&body)),
            (status, code),
            "{path}: {body}"
        );
        assert!(!body["errors"][0]["message"].as_str().unwrap().is_empty());
    }
    let (got, _, body) = fetch(&server, &format!("/v2/{app}/_flagstate/history/never"), &[]).await;
    assert_eq!(
        (got.as_u16(), error_code(&body)),
        (404, "MANIFEST_UNKNOWN"),
        "{body}"
    );

    // A restart and the full scan of an already indexed registry keep every time.
    let before_tags = fetch(&server, &tags_path, &[]).await.2;
    let before_repositories = fetch(&server, "/v2/_flagstate/repositories", &[]).await.2;
    server.terminate();
    let server = Server::start(port, &args, &env, dir.path()).await;
    assert_eq!(fetch(&server, &tags_path, &[]).await.2, before_tags);
    assert_eq!(
        fetch(&server, "/v2/_flagstate/repositories", &[]).await.2,
        before_repositories
    );
    assert_eq!(fetch(&server, &history_path, &[]).await.2, history);
    drop(server);

    // The same listings from the command line.
    let out = run(&["ls", "--database", &db]);
    assert!(out.status.success(), "{out:?}");
    let lines = text(&out.stdout);
    assert!(
        lines.lines().any(|l| l.starts_with(&format!("{app}\t1\t"))),
        "{lines}"
    );
    assert!(
        lines.lines().any(|l| l.starts_with("other/thing\t1\t")),
        "{lines}"
    );
    let out = run(&["ls", &app, "--database", &db]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout).trim(),
        format!(
            "stable\t{}\t{}",
            second.digest,
            stable["updated"].as_str().unwrap()
        )
    );
    let out = run(&["history", &format!("{app}:stable"), "--database", &db]);
    assert!(out.status.success(), "{out:?}");
    let history_lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(history_lines.len(), 2, "{history_lines:?}");
    assert!(history_lines[0].ends_with(first.digest.as_str()));
    for (args, code, says) in [
        (vec!["ls", "no/such"], 1, "not in the index"),
        (vec!["ls", "Bad..Name"], 2, "not a repository name"),
        (vec!["history", "no-colon"], 2, "not REPO:TAG"),
        (vec!["history", "other/thing:never"], 1, "no history"),
    ] {
        let mut args = args;
        args.extend(["--database", db.as_str()]);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// The descriptors of a manifests answer: (digest, tag) each.
fn descriptors(index: &Value) -> Vec<(String, Option<String>)> {
    index["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|d| {
                    let tag = d["annotations"]["org.opencontainers.image.ref.name"].as_str();
                    (
                        d["digest"].as_str().unwrap_or_default().to_owned(),
                        tag.map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Manifests pushed by digest only, through the real registry's notifications: listed
/// untagged (with the size and media type the registry serves) and recorded in the
/// change feed; tagging moves one to the tagged entries; a delete removes one; and a
/// full scan drops one the registry no longer serves while keeping a repository that
/// holds nothing but untagged manifests. Referrers pushed by digest answer the referrers
/// API, and the web UI shows them and the untagged manifests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_manifests_follow_pushes_by_digest() {
    let port = free_port();
    let Some(registry) = registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    let app = HELLO.repository();
    let tagged = pusher
        .push_image(&app, Some("v1"), &HELLO.image())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db").to_str().unwrap().to_owned();
    let args = ["--registry", &registry.url(), "--database", &db];
    let env = [("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN)];
    let server = Server::start(port, &args, &env, dir.path()).await;

    let spec = |n: &str| ImageSpec::new("linux", "amd64").label("org.example.n", n);
    let by_digest = pusher.push_image(&app, None, &spec("2")).await.unwrap();
    let only = format!("/v2/{app}/_flagstate/manifests?untagged=only");
    let untagged = wait_for(&server, &only, "the push by digest", |m| {
        descriptors(m) == [(by_digest.digest.to_string(), None)]
    })
    .await;
    assert_eq!(untagged["schemaVersion"], 2);
    assert_eq!(
        untagged["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let descriptor = &untagged["manifests"][0];
    assert_eq!(descriptor["mediaType"], by_digest.media_type.as_str());
    assert_eq!(descriptor["size"], by_digest.size);
    let (status, headers, _) = fetch(&server, &only, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(headers.contains_key("flagstate-cursor"));

    // Tagged, it is listed with its tag only; every tag has a descriptor with its size.
    pusher.tag(&app, "v2", &by_digest.digest).await.unwrap();
    let all = format!("/v2/{app}/_flagstate/manifests");
    let mut want = vec![
        (tagged.digest.to_string(), Some("v1".to_owned())),
        (by_digest.digest.to_string(), Some("v2".to_owned())),
    ];
    want.sort();
    let index = wait_for(&server, &all, "the tag", |m| descriptors(m) == want).await;
    for d in index["manifests"].as_array().unwrap() {
        assert!(d["size"].as_u64().is_some_and(|s| s > 0), "{d}");
        assert_eq!(d["platform"]["architecture"], "amd64", "{d}");
    }
    let (_, _, only_now) = fetch(&server, &only, &[]).await;
    assert_eq!(descriptors(&only_now), []);

    // A delete by digest removes an untagged one.
    let doomed = pusher.push_image(&app, None, &spec("3")).await.unwrap();
    wait_for(&server, &only, "the second push by digest", |m| {
        descriptors(m) == [(doomed.digest.to_string(), None)]
    })
    .await;
    pusher.delete_manifest(&app, &doomed.digest).await.unwrap();
    wait_for(&server, &only, "the delete", |m| descriptors(m).is_empty()).await;

    // A repository holding only manifests pushed by digest.
    let loose = pusher
        .push_image("loose/only", None, &spec("4"))
        .await
        .unwrap();
    let loose_path = "/v2/loose/only/_flagstate/manifests?untagged=only";
    wait_for(&server, loose_path, "the loose manifest", |m| {
        descriptors(m) == [(loose.digest.to_string(), None)]
    })
    .await;
    let vanishing = pusher.push_image(&app, None, &spec("5")).await.unwrap();
    wait_for(&server, &only, "the third push by digest", |m| {
        descriptors(m) == [(vanishing.digest.to_string(), None)]
    })
    .await;

    // The feed recorded pushes and the delete as untagged changes.
    let (_, _, feed) = fetch(
        &server,
        "/v2/_flagstate/changes?since=0&n=1000&type=manifest.untagged.created,manifest.untagged.deleted",
        &[],
    )
    .await;
    assert_eq!(
        feed["changes"][0]["subject"],
        format!("{app}@{}", by_digest.digest),
        "{feed}"
    );
    let events: Vec<(String, String)> = feed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["data"]["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let created = "io.flagstate.manifest.untagged.created".to_owned();
    assert_eq!(
        events,
        vec![
            (created.clone(), by_digest.digest.to_string()),
            (created.clone(), doomed.digest.to_string()),
            (
                "io.flagstate.manifest.untagged.deleted".to_owned(),
                doomed.digest.to_string()
            ),
            (created.clone(), loose.digest.to_string()),
            (created, vanishing.digest.to_string()),
        ],
        "{feed}"
    );
    // Referrers (OCI 1.1), pushed by digest with a `subject`, as clients do against a
    // registry without the referrers API.
    let signed = "with/referrers";
    let subject = pusher
        .push_image(signed, Some("v1"), &spec("6"))
        .await
        .unwrap();
    let empty = pusher.push_blob(signed, b"{}").await.unwrap();
    let artifact = |kind: &str| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2}],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.size},
            "annotations": {"org.example.kind": kind},
        })
        .to_string()
    };
    let mut referrers = Vec::new();
    for kind in [
        "application/vnd.example.sbom",
        "application/vnd.example.signature",
    ] {
        let bytes = artifact(kind);
        let digest = flagstate_core::Digest::sha256_of(bytes.as_bytes());
        pusher
            .put_manifest(
                signed,
                digest.as_str(),
                "application/vnd.oci.image.manifest.v1+json",
                bytes.as_bytes(),
            )
            .await
            .unwrap();
        referrers.push((digest.to_string(), kind, bytes.len()));
    }
    referrers.sort();
    let referrers_path = format!("/v2/{signed}/referrers/{}", subject.digest);
    let listed = wait_for(&server, &referrers_path, "both referrers", |r| {
        r["manifests"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;
    assert_eq!(listed["schemaVersion"], 2);
    for (descriptor, (digest, kind, size)) in listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&referrers)
    {
        assert_eq!(descriptor["digest"], digest.as_str(), "{listed}");
        assert_eq!(descriptor["artifactType"], *kind, "{listed}");
        assert_eq!(descriptor["size"], *size, "{listed}");
        assert_eq!(
            descriptor["annotations"]["org.example.kind"], *kind,
            "{listed}"
        );
    }
    let (status, headers, filtered) = fetch(
        &server,
        &format!("{referrers_path}?artifactType=application/vnd.example.sbom"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("oci-filters-applied").unwrap(), "artifactType");
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(filtered["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        filtered["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    // The web UI shows the same: the image's referrers, each repository's untagged
    // manifests.
    let image_page = html(&server, &format!("/r/{signed}/@{}", subject.digest)).await;
    assert!(image_page.contains("id=\"referrers-h\""), "{image_page}");
    for (digest, kind, _) in &referrers {
        assert!(
            image_page.contains(&format!("<code>{kind}</code>")),
            "{image_page}"
        );
        assert!(image_page.contains(&format!("<code class=\"digest\">{digest}</code>")));
    }
    assert!(image_page.contains(&format!("href=\"{referrers_path}\"")));
    let app_page = html(&server, &format!("/r/{app}")).await;
    assert!(app_page.contains("id=\"untagged-h\""), "{app_page}");
    assert!(app_page.contains(&format!(
        "<code class=\"digest\">{}</code>",
        vanishing.digest
    )));
    assert!(!app_page.contains(&format!(
        "<code class=\"digest\">{}</code>",
        by_digest.digest
    )));
    let (status, _, none) = fetch(
        &server,
        &format!("/v2/{signed}/referrers/{}", tagged.digest),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        none["manifests"],
        serde_json::json!([]),
        "an unknown digest has none"
    );
    for (path, status, code) in [
        (
            format!("/v2/{signed}/referrers/sha256:nothex"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/no/such/referrers/{}", subject.digest),
            404,
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/{app}/_flagstate/manifests?untagged=some"),
            400,
            "UNSUPPORTED",
        ),
        (
            format!("/v2/{app}/_flagstate/manifests?last=garbage"),
            400,
            "UNSUPPORTED",
        ),
        (
            format!("/v2/{app}/_flagstate/manifests?n=1001"),
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            "/v2/no/such/_flagstate/manifests".to_owned(),
            404,
            "NAME_UNKNOWN",
        ),
    ] {
        let (got, _, body) = fetch(&server, &path, &[]).await;
        assert_eq!(
            (got.as_u16(), error_code(&body)),
            (status, code),
            "{path}: {body}"
        );
    }
    drop(server);

    // Deleted while nobody listens; the next full scan asks the registry and drops it.
    // The repository of loose manifests has no tags list, and stays.
    pusher
        .delete_manifest(&app, &vanishing.digest)
        .await
        .unwrap();
    let out = run(&["scan", "--registry", &registry.url(), "--database", &db]);
    assert!(out.status.success(), "{out:?}");
    let store = flagstate_sqlite::SqliteStore::open(&db).unwrap();
    let listing = flagstate_core::ManifestListing {
        untagged: flagstate_core::Untagged::Only,
        after: None,
        limit: 100,
    };
    let untagged_now = |name: &str| {
        let store = &store;
        let listing = &listing;
        let name: flagstate_core::RepositoryName = name.parse().unwrap();
        async move { store.list_manifests(&name, listing).await.unwrap() }
    };
    assert_eq!(untagged_now(&app).await.map(|m| m.len()), Some(0));
    let loose_now = untagged_now("loose/only").await.unwrap();
    assert_eq!(
        loose_now.iter().map(|m| &m.digest).collect::<Vec<_>>(),
        [&loose.digest]
    );
}

/// Referrers a registry without the referrers API keeps under tags: a cosign-style
/// attachment tag (`sha256-<hex>.sig`, an image manifest with a placeholder config) and
/// the referrers tag schema (`sha256-<hex>`, an index of the referrers). Pushed before
/// the server runs, the first scan finds them through their tags (the attachment has
/// no `subject`: only its tag names what it refers to); an attachment tag pushed while
/// it runs is found by the scan its notification schedules; deleting one by digest
/// removes it. The feed records each once, as `referrer.created` / `.deleted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_named_by_tags_are_found_by_scans() {
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    const ATT: &str = "application/vnd.dev.cosign.artifact.att.v1+json";
    const SBOM: &str = "application/spdx+json";
    let port = free_port();
    let Some(registry) = registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    let repository = "signed/app";
    let spec = ImageSpec::new("linux", "amd64").label("org.example.n", "signed");
    let subject = pusher
        .push_image(repository, Some("v1"), &spec)
        .await
        .unwrap();
    let hex = subject
        .digest
        .as_str()
        .trim_start_matches("sha256:")
        .to_owned();

    // A cosign-style attachment: an image manifest whose config is a placeholder image
    // config and whose layer is the signed payload.
    let attachment = |payload: &[u8], config: &flagstate_core::Digest, config_size: usize| {
        let layer = flagstate_core::Digest::sha256_of(payload);
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.to_string(), "size": config_size},
            "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                        "digest": layer.to_string(), "size": payload.len(),
                        "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ"}}],
        })
        .to_string()
    };
    let config =
        br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = pusher.push_blob(repository, config).await.unwrap();
    let payload = br#"{"critical":{"image":{"docker-manifest-digest":"x"}}}"#;
    pusher.push_blob(repository, payload).await.unwrap();
    let sig = attachment(payload, &config_digest, config.len());
    let sig_digest = pusher
        .put_manifest(
            repository,
            &format!("sha256-{hex}.sig"),
            OCI,
            sig.as_bytes(),
        )
        .await
        .unwrap();

    // The referrers tag schema: an SBOM artifact pushed by digest, listed by an index
    // under `sha256-<hex>`.
    let empty = pusher.push_blob(repository, b"{}").await.unwrap();
    let sbom = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI,
        "artifactType": SBOM,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.size},
        "annotations": {"org.opencontainers.image.created": "2026-12-01T00:00:00Z"},
    })
    .to_string();
    let sbom_digest = flagstate_core::Digest::sha256_of(sbom.as_bytes());
    pusher
        .put_manifest(repository, sbom_digest.as_str(), OCI, sbom.as_bytes())
        .await
        .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI, "digest": sbom_digest.to_string(), "size": sbom.len(),
                       "artifactType": SBOM,
                       "annotations": {"org.opencontainers.image.created": "2026-12-01T00:00:00Z"}}],
    })
    .to_string();
    pusher
        .put_manifest(
            repository,
            &format!("sha256-{hex}"),
            "application/vnd.oci.image.index.v1+json",
            index.as_bytes(),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db").to_str().unwrap().to_owned();
    let args = ["--registry", &registry.url(), "--database", &db];
    let env = [("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN)];
    let server = Server::start(port, &args, &env, dir.path()).await;

    let path = format!("/v2/{repository}/referrers/{}", subject.digest);
    let types = |r: &Value| -> Vec<(String, String)> {
        let mut found: Vec<_> = r["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["digest"].as_str().unwrap_or_default().to_owned(),
                    d["artifactType"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        found.sort();
        found
    };
    let mut want = vec![
        (sig_digest.to_string(), SIG.to_owned()),
        (sbom_digest.to_string(), SBOM.to_owned()),
    ];
    want.sort();
    let listed = wait_for(&server, &path, "the tagged referrers", |r| types(r) == want).await;
    let sbom_entry = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == sbom_digest.as_str())
        .unwrap();
    assert_eq!(sbom_entry["size"], sbom.len(), "{listed}");
    assert_eq!(
        sbom_entry["annotations"]["org.opencontainers.image.created"], "2026-12-01T00:00:00Z",
        "the referrer's annotations are answered: {listed}"
    );
    let (_, headers, only_sig) = fetch(
        &server,
        &format!("{path}?artifactType={}", SIG.replace('+', "%2B")),
        &[],
    )
    .await;
    assert_eq!(headers.get("oci-filters-applied").unwrap(), "artifactType");
    assert!(
        headers.contains_key("flagstate-cursor"),
        "the referrers listing names the change cursor it reflects"
    );
    assert_eq!(types(&only_sig), [(sig_digest.to_string(), SIG.to_owned())]);

    // The attachment tag is an artifact tag: listed with its type, never an image of
    // the index, although its placeholder config is an image config.
    let (_, _, tags) = fetch(&server, &format!("/v2/{repository}/_flagstate/tags"), &[]).await;
    let sig_tag = tag(&tags, &format!("sha256-{hex}.sig")).unwrap_or_else(|| panic!("{tags}"));
    assert_eq!(sig_tag["artifactType"], SIG, "{tags}");
    assert_eq!(sig_tag["digest"], sig_digest.as_str());
    let indexed = indexed_images(&server, repository).await;
    assert_eq!(indexed, [subject.digest.to_string()]);

    // An attachment tag pushed while the server runs.
    let att_payload = br#"{"payloadType":"application/vnd.in-toto+json"}"#;
    pusher.push_blob(repository, att_payload).await.unwrap();
    let att = attachment(att_payload, &config_digest, config.len());
    let att_digest = pusher
        .put_manifest(
            repository,
            &format!("sha256-{hex}.att"),
            OCI,
            att.as_bytes(),
        )
        .await
        .unwrap();
    want.push((att_digest.to_string(), ATT.to_owned()));
    want.sort();
    wait_for(&server, &path, "the attachment pushed later", |r| {
        types(r) == want
    })
    .await;
    let (_, _, tags) = fetch(&server, &format!("/v2/{repository}/_flagstate/tags"), &[]).await;
    assert_eq!(
        tag(&tags, &format!("sha256-{hex}.att")).map(|t| t["artifactType"].clone()),
        Some(Value::from(ATT)),
        "a notification's attachment tag is an artifact tag: {tags}"
    );

    // Deleting the signature by digest removes it.
    pusher
        .delete_manifest(repository, &sig_digest)
        .await
        .unwrap();
    want.retain(|(d, _)| *d != sig_digest.to_string());
    wait_for(&server, &path, "the signature's deletion", |r| {
        types(r) == want
    })
    .await;

    let (_, _, feed) = fetch(
        &server,
        "/v2/_flagstate/changes?since=0&n=1000&type=referrer.created,referrer.deleted",
        &[],
    )
    .await;
    let mut events: Vec<(String, String, String, String)> = feed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["data"]["digest"].as_str().unwrap_or_default().to_owned(),
                e["data"]["subjectDigest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["data"]["artifactType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let created = |d: &flagstate_core::Digest, t: &str| {
        (
            "io.flagstate.referrer.created".to_owned(),
            d.to_string(),
            subject.digest.to_string(),
            t.to_owned(),
        )
    };
    let deleted = (
        "io.flagstate.referrer.deleted".to_owned(),
        sig_digest.to_string(),
        subject.digest.to_string(),
        SIG.to_owned(),
    );
    // The first scan's two records come in either order; the rest follow in order.
    assert_eq!(events.len(), 4, "{feed}");
    events[..2].sort();
    let mut first = [created(&sig_digest, SIG), created(&sbom_digest, SBOM)];
    first.sort();
    assert_eq!(events[..2], first[..], "{feed}");
    assert_eq!(
        events[2..],
        [created(&att_digest, ATT), deleted][..],
        "{feed}"
    );
}

/// Tags pointing at artifacts — a Helm chart, a WASM module — are found by the first scan
/// and by notifications, listed with their artifact type (and filtered by it, the filter
/// travelling in the next page's link), listed by the manifest listing and the web UI,
/// and never answered by the index; a tag moving to an image and a deleted artifact
/// follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_tags_are_listed_with_their_types_and_never_indexed() {
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    const HELM: &str = "application/vnd.cncf.helm.config.v1+json";
    const WASM: &str = "application/vnd.wasm.config.v0+json";
    let port = free_port();
    let Some(registry) = registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    let repository = "charts/app";
    let spec = ImageSpec::new("linux", "amd64").label("org.example.n", "chart");
    let image = pusher
        .push_image(repository, Some("v1"), &spec)
        .await
        .unwrap();
    // An artifact as Helm and ORAS push one: a manifest whose config names the
    // artifact's type (`artifactType` absent) and whose layers are its content.
    let push_artifact = |tag: String, config_type: &'static str, content: &'static [u8]| {
        let pusher = pusher.clone();
        async move {
            let config = pusher.push_blob(repository, b"{}").await.unwrap();
            let layer = pusher.push_blob(repository, content).await.unwrap();
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI,
                "config": {"mediaType": config_type, "digest": config.to_string(), "size": 2},
                "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                            "digest": layer.to_string(), "size": content.len()}],
            })
            .to_string();
            pusher
                .put_manifest(repository, &tag, OCI, manifest.as_bytes())
                .await
                .unwrap()
        }
    };
    let chart = push_artifact("1.0.0".into(), HELM, b"chart 1.0.0").await;
    let newer_chart = push_artifact("1.1.0".into(), HELM, b"chart 1.1.0").await;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db").to_str().unwrap().to_owned();
    let args = ["--registry", &registry.url(), "--database", &db];
    let env = [("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN)];
    let server = Server::start(port, &args, &env, dir.path()).await;

    let tags_path = format!("/v2/{repository}/_flagstate/tags");
    let described = |t: &Value| -> Vec<(String, String, String)> {
        t["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["name"].as_str().unwrap_or_default().to_owned(),
                    t["digest"].as_str().unwrap_or_default().to_owned(),
                    t["artifactType"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let scanned = [
        ("1.0.0".to_owned(), chart.to_string(), HELM.to_owned()),
        ("1.1.0".to_owned(), newer_chart.to_string(), HELM.to_owned()),
        ("v1".to_owned(), image.digest.to_string(), String::new()),
    ];
    let tags = wait_for(&server, &tags_path, "the scanned artifact tags", |t| {
        described(t) == scanned
    })
    .await;
    assert_eq!(tag(&tags, "1.0.0").unwrap()["mediaType"], OCI, "{tags}");

    // The filter, paged: the link of the first page carries it.
    let helm = HELM.replace('+', "%2B");
    let (status, headers, first) = fetch(
        &server,
        &format!("{tags_path}?artifactType={helm}&n=1"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(described(&first), scanned[..1]);
    let link = headers.get("link").unwrap().to_str().unwrap().to_owned();
    assert!(link.contains("artifactType="), "{link}");
    let (_, _, second) = fetch(&server, &next_url(&link), &[]).await;
    assert_eq!(described(&second), scanned[1..2]);
    let (_, _, none) = fetch(
        &server,
        &format!("{tags_path}?artifactType=application/x-none"),
        &[],
    )
    .await;
    assert_eq!(described(&none), []);

    // The index answers images only; the manifest listing names the artifact tags.
    let indexed = indexed_images(&server, repository).await;
    assert_eq!(indexed, [image.digest.to_string()]);
    let (_, _, manifests) = fetch(
        &server,
        &format!("/v2/{repository}/_flagstate/manifests?untagged=exclude"),
        &[],
    )
    .await;
    let chart_entry = manifests["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == chart.as_str())
        .unwrap_or_else(|| panic!("{manifests}"));
    assert_eq!(chart_entry["artifactType"], HELM, "{manifests}");
    assert_eq!(
        chart_entry["annotations"]["org.opencontainers.image.ref.name"],
        "1.0.0"
    );
    let (_, _, untagged) = fetch(
        &server,
        &format!("/v2/{repository}/_flagstate/manifests?untagged=only"),
        &[],
    )
    .await;
    assert_eq!(
        descriptors(&untagged),
        [],
        "tagged artifacts are not untagged"
    );
    let page = html(&server, &format!("/r/{repository}")).await;
    assert!(page.contains("Helm chart"), "{page}");
    // The change feed describes an artifact tag with the artifact's types.
    let (_, _, feed) = fetch(
        &server,
        "/v2/_flagstate/changes?since=0&n=1000&type=tag.created",
        &[],
    )
    .await;
    let created = feed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["tag"] == "1.0.0")
        .unwrap_or_else(|| panic!("{feed}"));
    assert_eq!(created["data"]["artifactType"], HELM, "{feed}");
    assert_eq!(created["data"]["mediaType"], OCI, "{feed}");
    let out = run(&["ls", repository, "--database", &db]);
    assert!(out.status.success(), "{out:?}");
    let listed = text(&out.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("1.0.0\t{chart}\t"))
                && l.ends_with(&format!("\t{HELM}"))),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("v1\t") && l.split('\t').count() == 3),
        "{listed}"
    );

    // Notifications: a new artifact tag, a tag moving to an image, an artifact deleted.
    let module = push_artifact("module".into(), WASM, b"\0asm").await;
    wait_for(&server, &tags_path, "the pushed module", |t| {
        tag(t, "module")
            .is_some_and(|m| m["artifactType"] == WASM && m["digest"] == module.as_str())
    })
    .await;
    pusher
        .push_image(repository, Some("module"), &spec)
        .await
        .unwrap();
    let moved = wait_for(&server, &tags_path, "module moved to the image", |t| {
        tag(t, "module").is_some_and(|m| m["digest"] == image.digest.as_str())
    })
    .await;
    assert!(
        tag(&moved, "module").unwrap().get("artifactType").is_none(),
        "{moved}"
    );
    pusher.delete_manifest(repository, &chart).await.unwrap();
    wait_for(&server, &tags_path, "the deleted chart gone", |t| {
        tag(t, "1.0.0").is_none() && tag(t, "1.1.0").is_some()
    })
    .await;
    let (_, _, history) = fetch(
        &server,
        &format!("/v2/{repository}/_flagstate/history/module"),
        &[],
    )
    .await;
    let pointed: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["digest"].as_str())
        .collect();
    assert_eq!(
        pointed,
        [module.as_str(), image.digest.as_str()],
        "{history}"
    );

    // `check` compares every tag the index keeps, artifact tags included.
    let out = run(&["check", "--registry", &registry.url(), "--database", &db]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stdout).contains("in sync: 1 repositories, 3 tags"),
        "{out:?}"
    );
}
