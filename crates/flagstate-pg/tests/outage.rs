//! Connection loss: a throwaway PostgreSQL cluster is stopped under a store and started
//! again. While it is down every operation fails with `StoreError::Unavailable`; once it is
//! back the same store (and its replica) recover without being reopened.
//!
//! The cluster is created with `initdb` in a temporary directory, on a free port, and run
//! as the `postgres` user when the tests run as root (the server refuses root). It never
//! touches the shared server on port 5432.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flagstate_core::conformance::fixtures::{image, put_image, query, repo};
use flagstate_core::store::StoreNotReady;
use flagstate_core::{Store, StoreError};
use flagstate_pg::{PgOptions, PgStore};

/// A private PostgreSQL cluster; stopped (immediately) when dropped.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn find_bin() -> PathBuf {
    for dir in ["/usr/local/bin", "/usr/lib/postgresql/15/bin"] {
        if Path::new(dir).join("initdb").exists() && Path::new(dir).join("pg_ctl").exists() {
            return PathBuf::from(dir);
        }
    }
    panic!("initdb/pg_ctl not found in /usr/local/bin or /usr/lib/postgresql/15/bin");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    fn create() -> Cluster {
        let bin = find_bin();
        let dir = tempfile::Builder::new()
            .prefix("flagstate-pg-outage")
            .tempdir()
            .unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster directory failed");
        }
        // A port that was free a moment ago (the server binds it itself).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { bin, dir, port };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        std::fs::create_dir_all(cluster.dir.path().join("sock")).unwrap();
        if is_root() {
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(cluster.dir.path().join("sock"))
                .status()
                .unwrap();
        }
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let output = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        }
        .unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().join("sock").display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let args = [
            "-D",
            data.to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "stop",
        ];
        let path = self.bin.join("pg_ctl");
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        };
    }
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Unavailable {
            store: "postgres",
            source,
        }) => {
            let message = source.to_string();
            assert!(
                message.contains("cannot reach PostgreSQL"),
                "{what}: {message}"
            );
        }
        other => panic!("{what}: expected Unavailable while the server is down, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_fail_while_the_server_is_down_and_recover_after() {
    // Runs wherever the other PostgreSQL tests run; needs initdb, not the shared server.
    if common::pg_url().is_none() {
        return;
    }
    let cluster = Cluster::create();
    cluster.start();
    let options = |read_only| {
        PgOptions::default()
            .with_read_only(read_only)
            .with_acquire_timeout(Duration::from_secs(1))
            .with_max_connections(2)
            .with_schema(Some("outage".into()))
    };
    let writer = PgStore::connect(&cluster.url(), options(false))
        .await
        .unwrap();
    let replica = PgStore::connect(&cluster.url(), options(true))
        .await
        .unwrap();
    let before = image("before").build();
    let g1 = writer
        .replace_repository(&repo("r").image("v1", &before).build())
        .await
        .unwrap();
    let all = query("");
    let answer = writer.query(&all).await.unwrap();
    assert_eq!(answer.len(), 1);
    writer.readiness().await.unwrap();
    replica.readiness().await.unwrap();

    cluster.stop();
    for (what, store) in [("writer", &writer), ("replica", &replica)] {
        match store.readiness().await {
            Err(StoreNotReady::Unreadable(e)) => assert_unavailable(what, Err::<(), _>(e)),
            other => panic!("{what}: expected unreadable while the server is down, got {other:?}"),
        }
    }
    assert_unavailable("query", writer.query(&all).await);
    assert_unavailable("replica query", replica.query(&all).await);
    assert_unavailable("repositories", writer.repositories().await);
    assert_unavailable("search", replica.search("r", 0, 10).await);
    let after = image("after").build();
    assert_unavailable("write", writer.apply(&put_image("r", "v2", &after)).await);

    cluster.start();
    // The pools reconnect on demand; give the server a moment to accept connections.
    let started = Instant::now();
    let recovered = loop {
        match writer.query(&all).await {
            Ok(answer) => break answer,
            Err(StoreError::Unavailable { .. }) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("store did not recover: {e}"),
        }
    };
    assert_eq!(recovered, answer, "nothing indexed was lost");
    let g2 = writer.apply(&put_image("r", "v2", &after)).await.unwrap();
    assert_eq!(g2, g1 + 1, "the failed write left no trace");
    // The replica's listener reconnects too: it follows the writer again.
    let started = Instant::now();
    while replica.generation().await.ok() != Some(g2) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replica did not catch up after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        replica.query(&all).await.unwrap(),
        writer.query(&all).await.unwrap()
    );
    writer.readiness().await.unwrap();
    replica.readiness().await.unwrap();

    // A server that reads but refuses writes (here: read-only transactions by default,
    // as after `ALTER SYSTEM` on a server being drained) makes the writer not ready,
    // while the replica, which never writes, stays ready.
    let admin = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    let set_read_only = |on: bool| {
        let admin = admin.clone();
        async move {
            let statement = if on {
                "ALTER SYSTEM SET default_transaction_read_only = on"
            } else {
                "ALTER SYSTEM RESET default_transaction_read_only"
            };
            let mut conn = admin.acquire().await.unwrap();
            sqlx::query("SET default_transaction_read_only = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query(statement).execute(&mut *conn).await.unwrap();
            sqlx::query("SELECT pg_reload_conf()")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    };
    set_read_only(true).await;
    // Sessions pick the reloaded setting up at their next command.
    let started = Instant::now();
    let refusal = loop {
        match writer.readiness().await {
            Err(StoreNotReady::NotWritable(e)) => break e.to_string(),
            Ok(()) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("expected not writable, got {other:?}"),
        }
    };
    assert!(refusal.contains("read-only"), "{refusal}");
    // What readiness says is what writes find.
    let refused = image("refused").build();
    assert!(writer.apply(&put_image("r", "v3", &refused)).await.is_err());
    replica.readiness().await.unwrap();
    set_read_only(false).await;
    let started = Instant::now();
    while writer.readiness().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "writer did not become ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.close().await;
    writer.close().await;
    replica.close().await;
}
