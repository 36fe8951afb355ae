//! End to end for the one-shot commands (`scan`, `query`, `check`) against a real
//! registry, and for configuration and usage errors (exit status 2, messages naming the
//! problem).

mod common;

use common::images::{App, HELLO, WORLD};
use common::{FLATPAK_QUERY, flatpak_refs, hello_registry, run, run_in, run_with_env, text};
use flagstate_core::testkit::{TestRegistry, TestRegistryOptions};

fn write_config(dir: &std::path::Path, yaml: &str) -> String {
    let path = dir.join("flagstate.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn unknown_configuration_key_is_named_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "registry:\n  url: http://127.0.0.1:5000\ninterval:\n  fetch_all: 1h\n  fetch_some: 2h\n",
    );
    let out = run(&["--config", &config, "scan"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("interval.fetch_some: unknown key"),
        "{stderr}"
    );
    assert!(stderr.contains("fetch_all, garbage_collect"), "{stderr}");
}

#[test]
fn unknown_environment_key_is_named_with_exit_2() {
    let out = run_with_env(
        &["query", "--database", "/nonexistent/x.db"],
        &[("FLAGSTATE_DATABASE__SQLITE__PATHH", "x.db")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("database.sqlite.pathh: unknown key"),
        "{out:?}"
    );
}

#[test]
fn missing_configuration_file_is_a_clear_error() {
    let out = run(&["--config", "/nonexistent/flagstate.yaml", "serve"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot read configuration file /nonexistent/flagstate.yaml"),
        "{stderr}"
    );
}

#[test]
fn invalid_values_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "interval:\n  fetch_all: often\n");
    let out = run(&[
        "--config",
        &config,
        "serve",
        "--registry",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("interval.fetch_all"), "{out:?}");

    let out = run(&["scan"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("registry.url"), "{out:?}");

    let out = run(&["serve", "--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn malformed_query_names_the_parameter_with_exit_2() {
    for (query, needle) in [
        (
            "label:org.flatpak.ref:exists=yes",
            "label:org.flatpak.ref:exists",
        ),
        ("colour=blue", "colour"),
    ] {
        let out = run(&["query", query, "--database", "/nonexistent/x.db"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(text(&out.stderr).contains(needle), "{out:?}");
    }
}

/// A parameter that parses but reads like a misspelt operator gets a warning on stderr
/// (the query itself still runs as written).
#[test]
fn likely_typos_in_a_query_are_warned_about() {
    let out = run(&[
        "query",
        "label:org.flatpak.ref:exist=1",
        "--database",
        "/nonexistent/x.db",
    ]);
    assert!(
        text(&out.stderr).contains("warning: label:org.flatpak.ref:exist compares")
            && text(&out.stderr).contains("did you mean label:org.flatpak.ref:exists?"),
        "{out:?}"
    );
    let out = run(&[
        "query",
        "label:org.flatpak.ref:exists=1",
        "--database",
        "/nonexistent/x.db",
    ]);
    assert!(!text(&out.stderr).contains("warning:"), "{out:?}");
}

#[test]
fn port_in_use_is_a_runtime_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let out = run(&[
        "serve",
        "--listen",
        &addr,
        "--registry",
        "http://127.0.0.1:1",
        "--database",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on {addr}")),
        "{out:?}"
    );
}

#[test]
fn scan_against_an_unreachable_registry_fails() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let out = run(&[
        "scan",
        "--registry",
        "http://127.0.0.1:1",
        "--database",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("127.0.0.1:1"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_query_and_check_against_a_real_registry() {
    // No notifications: only the commands change the index.
    let Some(registry) = hello_registry(None).await else {
        return;
    };
    let pusher = registry.pusher();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    let db = db.to_str().unwrap().to_owned();
    let config = write_config(
        dir.path(),
        &format!(
            "registry:\n  url: {}\n  public_url: /\ndatabase:\n  sqlite:\n    path: {db}\n",
            registry.url()
        ),
    );

    // Before any scan there is no index to query.
    let out = run(&["--config", &config, "query"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("no index at"), "{out:?}");

    let out = run(&["--config", &config, "scan"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary = text(&out.stdout);
    assert!(summary.contains("scanned 1 of 1 repositories"), "{summary}");
    assert!(summary.contains("0 failed"), "{summary}");
    assert!(summary.contains("0 tags confirmed unchanged"), "{summary}");
    // Scanning again only confirms the known tag: ping, catalog, tags/list, one 304.
    let out = run(&["--config", &config, "scan"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary = text(&out.stdout);
    assert!(
        summary.contains("0 manifests and 0 configs fetched")
            && summary.contains("1 tags confirmed unchanged (304)"),
        "{summary}"
    );

    // Zero configuration: the registry alone, SQLite in the working directory.
    let cwd = tempfile::tempdir().unwrap();
    let out = run_in(cwd.path(), &["scan", "--registry", &registry.url()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(cwd.path().join("flagstate.db").is_file());

    let out = run(&["--config", &config, "query", FLATPAK_QUERY]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let compact = text(&out.stdout);
    assert_eq!(compact.lines().count(), 1, "{compact}");
    let index: serde_json::Value = serde_json::from_str(&compact).unwrap();
    assert_eq!(index["Registry"], "/");
    assert_eq!(flatpak_refs(&index), [HELLO.flatpak_ref()]);

    // The database flag overrides the file; --pretty indents; a leading ? is accepted.
    let out = run(&[
        "--config",
        &config,
        "--database",
        &format!("sqlite://{db}"),
        "query",
        &format!("?{FLATPAK_QUERY}"),
        "--pretty",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let pretty: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pretty, index);
    assert!(text(&out.stdout).lines().count() > 10);

    let out = run(&["--config", &config, "query", "architecture=arm64"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let none: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(none["Results"], serde_json::json!([]));

    let out = run(&["--config", &config, "check"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stdout).contains("in sync: 1 repositories, 1 tags"),
        "{out:?}"
    );

    // Pushes the index never heard of: a new repository and a moved tag.
    pusher
        .push_image(&WORLD.repository(), Some("latest"), &WORLD.image())
        .await
        .unwrap();
    let v2 = App {
        version: "1.1",
        ..HELLO
    };
    let moved = pusher
        .push_image(&HELLO.repository(), Some("latest"), &v2.image())
        .await
        .unwrap();
    pusher
        .push_image(&HELLO.repository(), Some("beta"), &v2.image())
        .await
        .unwrap();
    let out = run(&["--config", &config, "check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = text(&out.stdout);
    let hello = format!("{}:\n", HELLO.repository());
    let world = format!("{}:\n", WORLD.repository());
    assert!(
        report.contains(&hello) && report.contains(&world),
        "{report}"
    );
    assert!(
        report.contains(&format!("missing beta -> {}", moved.digest)),
        "{report}"
    );
    assert!(report.contains("moved   latest: indexed"), "{report}");
    assert!(
        report.contains(&format!("registry {}", moved.digest)),
        "{report}"
    );
    assert!(
        report
            .contains("out of sync: 2 of 2 repositories differ (2 missing, 0 extra, 1 moved tags)"),
        "{report}"
    );

    // A scan repairs it.
    let out = run(&["--config", &config, "scan"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run(&["--config", &config, "check"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stdout).contains("in sync: 2 repositories, 3 tags"),
        "{out:?}"
    );

    // Deleting the moved manifest leaves tags the index still has: "extra".
    pusher
        .delete_manifest(&HELLO.repository(), &moved.digest)
        .await
        .unwrap();
    let out = run(&["--config", &config, "check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = text(&out.stdout);
    assert!(report.contains("extra   beta"), "{report}");
    assert!(report.contains("extra   latest"), "{report}");

    // A repository whose manifest cannot be read (its stored bytes no longer match their
    // digest) fails the scan (exit 1) and is named; the others are still indexed.
    let broken = pusher
        .push_image("broken/app", Some("latest"), &WORLD.image().label("x", "y"))
        .await
        .unwrap();
    let hex = broken
        .digest
        .as_str()
        .trim_start_matches("sha256:")
        .to_owned();
    let blob = registry.storage_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    std::fs::write(&blob, b"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"layers\": []}")
        .unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
    let out = run(&["--config", &config, "scan"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("failed: broken/app"), "{out:?}");
    assert!(text(&out.stdout).contains("1 failed"), "{out:?}");
    let out = run(&[
        "--config",
        &config,
        "query",
        "repository=apps/org.example.world",
    ]);
    let world: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(flatpak_refs(&world), [WORLD.flatpak_ref()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_come_from_the_environment() {
    let credentials = ("indexer".to_owned(), "0123-secret".to_owned());
    let Some(registry) = TestRegistry::start_or_skip(TestRegistryOptions {
        notifications: None,
        basic_auth: Some(credentials.clone()),
    })
    .await
    else {
        return;
    };
    registry
        .pusher()
        .push_image(&HELLO.repository(), Some("latest"), &HELLO.image())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    let args = [
        "scan",
        "--registry",
        &registry.url(),
        "--database",
        db.to_str().unwrap(),
    ];

    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("401"), "{out:?}");

    let out = run_with_env(
        &args,
        &[
            ("FLAGSTATE_REGISTRY__USERNAME", credentials.0.as_str()),
            ("FLAGSTATE_REGISTRY__PASSWORD", credentials.1.as_str()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("scanned 1 of 1"), "{out:?}");
    // The password never shows up in what the command prints.
    assert!(!text(&out.stderr).contains(&credentials.1), "{out:?}");
}

#[test]
fn scan_against_a_dead_registry_reports_it_unreachable_promptly() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("registry:\n  url: {url}\n  retry_budget: 5s\n  repositories: [a/b, c/d]\n"),
    );
    let db = dir.path().join("x.db");
    let started = std::time::Instant::now();
    let out = run(&[
        "--config",
        &config,
        "scan",
        "--database",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("registry unreachable").count(),
        1,
        "one error, once: {stderr}"
    );
    assert!(stderr.contains(&url), "{stderr}");
    // The default retry policy's four attempts of the first request, then no more.
    assert!(stderr.contains("over 4 attempt(s)"), "{stderr}");
    // A bound that cannot flake: the retries take about a second and a half.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    let config = write_config(
        dir.path(),
        "registry:\n  url: http://127.0.0.1:1\n  retry_budget: 0s\n",
    );
    let out = run(&["--config", &config, "scan"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("registry.retry_budget: must not be 0"),
        "{out:?}"
    );
}

/// `serve` logs a full scan's start, its progress (every `log.scan_progress_interval`)
/// and its end with repositories, tags, failures and duration, on standard error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_scan_start_progress_and_end() {
    let Some(registry) = common::registry(None).await else {
        return;
    };
    let pusher = registry.pusher();
    for (repository, image) in [
        (
            common::images::HELLO.repository(),
            common::images::HELLO.image(),
        ),
        (
            common::images::WORLD.repository(),
            common::images::WORLD.image(),
        ),
    ] {
        pusher
            .push_image(&repository, Some("latest"), &image)
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    let mut server = common::Server::start(
        common::free_port(),
        &[
            "--registry",
            &registry.url(),
            "--database",
            db.to_str().unwrap(),
        ],
        &[("FLAGSTATE_LOG__SCAN_PROGRESS_INTERVAL", "1ms")],
        dir.path(),
    )
    .await;
    let log = server.log();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} line in:\n{log}"))
            .to_owned()
    };
    let started = line("full scan started");
    assert!(
        started.contains(&format!("registry={}", registry.url())),
        "{started}"
    );
    let progress = line("full scan progress: ");
    assert!(
        progress.contains("full scan progress: 1 of 2 repositories")
            || progress.contains("full scan progress: 2 of 2 repositories"),
        "{progress}"
    );
    assert!(progress.contains("failed=0"), "{progress}");
    let finished = line("full scan finished");
    for field in ["repositories=2", "tags=2", "failed=0", "duration="] {
        assert!(finished.contains(field), "{field} missing: {finished}");
    }
    let order: Vec<usize> = [started, progress, finished]
        .iter()
        .map(|l| log.find(l.as_str()).unwrap())
        .collect();
    assert!(order.is_sorted(), "out of order:\n{log}");
    assert!(server.terminate().success(), "{}", server.log());
}
