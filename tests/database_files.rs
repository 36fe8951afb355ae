//! `flagstate serve` on database files it must not use as they are: a corrupt file is
//! refused at start (exit 1, naming the file and what `PRAGMA quick_check` reported);
//! a file the writer cannot write is refused at start too, while a read-only server
//! serves it.
//!
//! The tests run as root here, where mode 0444 stops nothing; the shared helper makes
//! the file immutable instead (`chattr +i`) and verifies that writing really fails.

mod common;

#[path = "../crates/flagstate-sqlite/tests/common/damage.rs"]
mod damage;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, free_port, run, run_with_env, text};
use damage::{ReadOnlyFile, corrupt_later_pages, populated_database};

fn serve_args(db: &Path) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--registry",
        "http://127.0.0.1:1",
        "--database",
        db.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn serve_refuses_a_corrupt_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    populated_database(&db, 300).await;
    corrupt_later_pages(&db);

    let mut read_only = serve_args(&db);
    read_only.push("--read-only".into());
    for args in [serve_args(&db), read_only] {
        let out = run(&refs(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&db.display().to_string()), "{stderr}");
        assert!(stderr.contains("the database is corrupt"), "{stderr}");
        assert!(stderr.contains("PRAGMA quick_check reported: "), "{stderr}");
    }
}

/// Waits until `/healthz` of a server started on `port` answers, or panics.
async fn wait_serving(child: &mut std::process::Child, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = common::http_client();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve exited with {status}");
        }
        if let Ok(answer) = client.get(&url).send().await
            && answer.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn check_on_open_none_starts_on_the_same_file() {
    flagstate_core::registry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    populated_database(&db, 300).await;
    corrupt_later_pages(&db);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(common::binary())
        .args(["serve", "--read-only", "--listen", &listen, "--database"])
        .arg(&db)
        .env("FLAGSTATE_DATABASE__SQLITE__CHECK_ON_OPEN", "none")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_serving(&mut child, port).await;
    child.kill().unwrap();
    child.wait().unwrap();

    // The key is checked like every other.
    let out = run_with_env(
        &refs(&serve_args(&db)),
        &[("FLAGSTATE_DATABASE__SQLITE__CHECK_ON_OPEN", "sometimes")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("check_on_open"), "{out:?}");
}

#[tokio::test]
async fn writer_refuses_a_read_only_file_and_a_read_only_server_serves_it() {
    flagstate_core::registry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    populated_database(&db, 20).await;
    let _read_only = ReadOnlyFile::new(&db);

    let out = run(&refs(&serve_args(&db)));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(stderr.contains("cannot be written"), "{stderr}");

    let db_arg = db.to_str().unwrap();
    let mut server = Server::start(
        free_port(),
        &["--read-only", "--database", db_arg],
        &[],
        dir.path(),
    )
    .await;
    let answer = server.get("/index/static?tag=latest").await;
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["Results"].as_array().unwrap().len(), 20, "{body}");
    assert!(server.terminate().success());
}

/// A writer and a read-only server on one SQLite file answer the same bytes and ETag:
/// the writer stores the registry URL it serves with, and the read-only server, started
/// with the file alone (no registry URL), names the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_read_only_server_on_one_file_answer_identical_bytes() {
    let Some(registry) = common::hello_registry(None).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    let db = db.to_str().unwrap();
    let writer = Server::start(
        free_port(),
        &["--registry", &registry.url(), "--database", db],
        &[],
        dir.path(),
    )
    .await;
    let reader = Server::start(
        free_port(),
        &["--read-only", "--database", db],
        &[],
        dir.path(),
    )
    .await;
    common::assert_identical_answers(&writer, &reader, &registry.url()).await;
}
