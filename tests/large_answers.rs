//! Index answers larger than `cache.answer_memory_max` are written to content-addressed
//! files and served from them: the same bytes and ETag as an answer kept in memory, the
//! file named by the SHA-256 the ETag carries, and removed once a change supersedes it.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{EVENTS_TOKEN, Server, free_port, images};
use sha2::{Digest as _, Sha256};

/// Names of the answer files in `dir`.
fn answer_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_are_served_from_content_addressed_files() {
    let port = free_port();
    let Some(registry) = common::hello_registry(Some(port)).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let answers = dir.path().join("answers");
    let db = dir.path().join("index.db");
    let db = db.to_str().unwrap();
    let answers_env = answers.to_str().unwrap();
    // The hello app's answer is a few KB (appdata and an icon): far over 1 KB.
    let writer = Server::start(
        port,
        &["--registry", &registry.url(), "--database", db],
        &[
            ("FLAGSTATE_CACHE__ANSWER_MEMORY_MAX", "1024"),
            ("FLAGSTATE_CACHE__ANSWER_DIR", answers_env),
            ("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN),
        ],
        dir.path(),
    )
    .await;
    // A read-only server on the same file keeps every answer in memory (the default).
    let reader = Server::start(
        free_port(),
        &["--read-only", "--database", db],
        &[],
        dir.path(),
    )
    .await;
    common::assert_identical_answers(&writer, &reader, &registry.url()).await;

    let path = "/index/static?tag=latest";
    let answer = writer.get(path).await;
    assert_eq!(answer.status(), 200);
    let etag = answer.headers()["etag"].to_str().unwrap().to_owned();
    let length: usize = answer.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = answer.bytes().await.unwrap();
    assert!(body.len() > 1024, "the answer is larger than the threshold");
    assert_eq!(length, body.len());
    let hash = hex::encode(Sha256::digest(&body));
    assert_eq!(
        etag,
        format!("\"{hash}\""),
        "the ETag is the body's SHA-256"
    );
    let file = answers.join(format!("{hash}.json"));
    assert_eq!(
        std::fs::read(&file).expect("the answer's file"),
        body,
        "the file holds the bytes served"
    );

    // The gzip variant is the same answer, and If-None-Match on it is a 304.
    let client = common::http_client();
    let gzip = client
        .get(format!("{}{path}", writer.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    let gzip_etag = gzip.headers()["etag"].clone();
    let compressed = gzip.bytes().await.unwrap();
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, body);
    let revalidated = client
        .get(format!("{}{path}", writer.url))
        .header("accept-encoding", "gzip")
        .header("if-none-match", gzip_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    let head = client
        .head(format!("{}{path}", writer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        length.to_string()
    );

    // A push changes the index: the next request builds a new file, and the superseded
    // one is gone.
    registry
        .pusher()
        .push_image(
            &images::WORLD.repository(),
            Some("latest"),
            &images::WORLD.image(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_body = loop {
        let body = writer.get(path).await.bytes().await.unwrap();
        if body.windows(17).any(|w| w == b"org.example.World") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the push never showed:\n{}",
            writer.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let new_hash = hex::encode(Sha256::digest(&new_body));
    let files = answer_files(&answers);
    assert!(
        files.contains(&format!("{new_hash}.json")),
        "the new answer has its file: {files:?}"
    );
    assert!(
        !file.exists(),
        "the superseded answer's file is removed: {files:?}"
    );
    assert!(
        files.iter().all(|f| !f.starts_with(&hash)),
        "no variant of the superseded answer is left: {files:?}"
    );
}

#[tokio::test]
async fn an_unusable_answer_directory_stops_serve_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let answers = blocker.join("answers");
    let db = dir.path().join("index.db");
    drop(flagstate_sqlite::SqliteStore::open(&db).expect("create an empty index"));
    let port = free_port().to_string();
    let out = common::run_with_env(
        &[
            "serve",
            "--read-only",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            db.to_str().unwrap(),
        ],
        &[("FLAGSTATE_CACHE__ANSWER_DIR", answers.to_str().unwrap())],
    );
    let stderr = common::text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cache.answer_dir") && stderr.contains(answers.to_str().unwrap()),
        "names the key and the directory: {stderr}"
    );
}
