//! The OpenAPI description tested against the real server: schemathesis (installed by
//! `scripts/install-test-deps` into the test tools' venv) generates requests for every
//! operation `/openapi.json` describes and checks that `flagstate serve`, indexing a real
//! registry with a few images, answers none with a 5xx and every one with a documented
//! status, content type and body schema.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::images::SAMPLE_APPS;
use common::*;

/// Test cases per operation and phase: enough to walk every parameter of every
/// operation and a few random values, little enough for CI on two cores.
const MAX_EXAMPLES: &str = "40";
/// A fixed seed: a failure found once is found again by the next run.
const SEED: &str = "20240601";

/// The schemathesis command of the test tools' venv (`FLAGSTATE_TEST_TOOLS`, else
/// `target/test-tools`), when it is installed.
fn schemathesis() -> Option<PathBuf> {
    let tools = std::env::var_os("FLAGSTATE_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools"));
    let bin = tools.join("schemathesis/bin/schemathesis");
    if bin.is_file() {
        return Some(bin);
    }
    if flagstate_core::testkit::registry_required() {
        panic!(
            "FLAGSTATE_REQUIRE_REGISTRY=1 but {} is missing; run scripts/install-test-deps",
            bin.display()
        );
    }
    eprintln!(
        "\n!!! SKIPPING the schemathesis run: {} is missing (scripts/install-test-deps installs it)\n",
        bin.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_to_its_openapi_description() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let port = free_port();
    let Some(registry) = registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    for app in &SAMPLE_APPS[..3] {
        pusher
            .push_image(&app.repository(), Some("latest"), &app.image())
            .await
            .expect("push a sample app");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("index.db");
    let icons = dir.path().join("icons");
    let server = Server::start(
        port,
        &[
            "--registry",
            &registry.url(),
            "--database",
            db.to_str().expect("UTF-8 path"),
        ],
        &[
            ("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN),
            ("FLAGSTATE_ICONS__DIR", icons.to_str().expect("UTF-8 path")),
        ],
        dir.path(),
    )
    .await;
    // The images are indexed (and their icons extracted) before the run starts.
    server
        .wait_for_index("the sample apps", |i| repository_names(i).len() == 3)
        .await;

    let report = dir.path().join("schemathesis");
    let mut command = Command::new(&schemathesis);
    command
        .arg("run")
        .arg(format!("{}/openapi.json", server.url))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
            // One worker: the machine has two cores, one of them for the server.
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            "--generation-database",
            "none",
            "--header",
            &format!("Authorization: Bearer {EVENTS_TOKEN}"),
            "--report-dir",
        ])
        .arg(&report)
        .env("HOME", dir.path())
        .env("NO_PROXY", "127.0.0.1")
        .current_dir(dir.path());
    let output = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("schemathesis finished within 10 minutes")
    .expect("schemathesis task")
    .expect("run schemathesis");
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found answers that break the description ({}):\n{stdout}\n{}\nserver log:\n{}",
        output.status,
        text(&output.stderr),
        server.log()
    );
    // It tested every operation the document describes but `GET /openapi.json` itself,
    // which schemathesis leaves out as the schema it loaded.
    let document: serde_json::Value = server
        .get("/openapi.json")
        .await
        .json()
        .await
        .expect("the description is JSON");
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |methods| methods.len()))
        .sum();
    assert!(operations >= 16, "{document}");
    let tested = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested:"))
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert_eq!(tested, Some(operations - 1), "{stdout}");
}
