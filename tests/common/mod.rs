//! Shared pieces of the end-to-end tests: the real `flagstate` binary as a child process,
//! Flatpak-style images, and the real Flatpak and podman clients in throwaway homes.
//!
//! Each test file uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod clients;
pub mod images;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use flagstate_core::testkit::{Notifications, TestRegistry, TestRegistryOptions};

/// The query Flatpak 1.14 sends, byte for byte.
pub const FLATPAK_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

/// The bearer token the test registries send with notifications.
pub const EVENTS_TOKEN: &str = "e2e-events-token";

/// The `flagstate` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_flagstate")
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Starts a real registry; `notify_port` receives its notifications at `/events` with
/// [`EVENTS_TOKEN`]. `None` when the registry cannot start and it is not required.
pub async fn registry(notify_port: Option<u16>) -> Option<TestRegistry> {
    let notifications = notify_port.map(|port| Notifications {
        url: format!("http://127.0.0.1:{port}/events"),
        bearer_token: Some(EVENTS_TOKEN.to_owned()),
        ignore_blobs_and_pulls: true,
    });
    TestRegistry::start_or_skip(TestRegistryOptions {
        notifications,
        basic_auth: None,
    })
    .await
}

/// [`registry`] with [`images::HELLO`](images::HELLO) pushed as `latest`, the one
/// application most end-to-end tests index.
pub async fn hello_registry(notify_port: Option<u16>) -> Option<TestRegistry> {
    let registry = registry(notify_port).await?;
    registry
        .pusher()
        .push_image(
            &images::HELLO.repository(),
            Some("latest"),
            &images::HELLO.image(),
        )
        .await
        .expect("push the hello app");
    Some(registry)
}

/// Keeps the machine's `/etc/flagstate/config.yaml`, if any, out of the tests: set to
/// the empty string, `FLAGSTATE_DEFAULT_CONFIG` turns the default configuration file off.
pub const NO_DEFAULT_CONFIG: (&str, &str) = ("FLAGSTATE_DEFAULT_CONFIG", "");

/// Runs the binary to completion with `args` (and no `FLAGSTATE_*` configuration from
/// the environment of the test run).
pub fn run(args: &[&str]) -> Output {
    run_with_env(args, &[])
}

/// Like [`run`], in the working directory `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn")
        .env(NO_DEFAULT_CONFIG.0, NO_DEFAULT_CONFIG.1)
        .output()
        .expect("run flagstate")
}

/// Like [`run`], with extra environment variables.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn")
        .env(NO_DEFAULT_CONFIG.0, NO_DEFAULT_CONFIG.1);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run flagstate")
}

/// Text of a captured stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A throwaway CA and a server certificate it signs for `IP:127.0.0.1` and
/// `DNS:localhost`, made by `scripts/local-ca` (the development environment's).
pub struct LocalCa {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// A directory holding only the CA certificate, for `--cert-dir`.
    pub cert_dir: PathBuf,
}

impl LocalCa {
    /// Creates the CA and certificate in `dir`; `None` when openssl is missing and the
    /// real components are not required.
    pub fn create(dir: &Path) -> Option<LocalCa> {
        if !clients::available_with("openssl", "version") {
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-ca");
        let out = Command::new(script)
            .arg(dir)
            .output()
            .expect("run scripts/local-ca");
        assert!(
            out.status.success(),
            "scripts/local-ca: {}",
            text(&out.stderr)
        );
        Some(LocalCa {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            cert_dir: dir.join("cert-dir"),
        })
    }

    /// An HTTP client trusting this CA (and no certificate check turned off).
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca).expect("read the CA certificate");
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("CA certificate")])
            .build()
            .expect("HTTPS client")
    }
}

/// A running `flagstate serve`; killed when dropped.
pub struct Server {
    child: Child,
    /// Port it listens on.
    pub port: u16,
    /// `http://127.0.0.1:PORT`, or `https://` when it terminates TLS.
    pub url: String,
    client: reqwest::Client,
    log: PathBuf,
}

impl Server {
    /// Starts `flagstate serve --listen 127.0.0.1:PORT` with `args` and waits until
    /// `/readyz` answers 200 (the first full scan is done).
    pub async fn start(port: u16, args: &[&str], env: &[(&str, &str)], log_dir: &Path) -> Server {
        Self::start_with(port, args, env, log_dir, None).await
    }

    /// [`start`](Self::start) with HTTPS: `tls.cert` and `tls.key` from `ca`, and the
    /// server's requests verified against it.
    pub async fn start_tls(
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
        ca: &LocalCa,
    ) -> Server {
        let cert = ca.cert.display().to_string();
        let key = ca.key.display().to_string();
        let mut env = env.to_vec();
        env.extend([
            ("FLAGSTATE_TLS__CERT", cert.as_str()),
            ("FLAGSTATE_TLS__KEY", key.as_str()),
        ]);
        Self::start_with(port, args, &env, log_dir, Some(ca)).await
    }

    async fn start_with(
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
        tls: Option<&LocalCa>,
    ) -> Server {
        let log = log_dir.join(format!("flagstate-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create server log");
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--listen")
            .arg(&listen)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file)
            .env("RUST_LOG", "info,flagstate_core=debug,flagstate_http=debug")
            .env(NO_DEFAULT_CONFIG.0, NO_DEFAULT_CONFIG.1);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn flagstate serve");
        let (scheme, client) = match tls {
            Some(ca) => ("https", ca.client()),
            None => ("http", http_client()),
        };
        let mut server = Server {
            child,
            port,
            url: format!("{scheme}://{listen}"),
            client,
            log,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let client = self.client.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll server") {
                panic!(
                    "flagstate serve exited early with {status}:\n{}",
                    self.log()
                );
            }
            let answer = client.get(format!("{}/readyz", self.url)).send().await;
            if matches!(&answer, Ok(r) if r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "flagstate serve not ready after 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (up to 30 s) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit()
    }

    /// Sends SIGTERM.
    pub fn send_sigterm(&self) {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits (up to 30 s) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running 30 s after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET {url}{path_and_query}`.
    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path_and_query}", self.url))
            .send()
            .await
            .expect("GET")
    }

    /// The Flatpak query's answer as JSON, with its ETag.
    pub async fn flatpak_index(&self) -> (serde_json::Value, String) {
        let answer = self.get(&format!("/index/static?{FLATPAK_QUERY}")).await;
        assert_eq!(answer.status(), 200);
        let etag = answer
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (answer.json().await.expect("index JSON"), etag)
    }

    /// The value of a metric without labels from `/metrics` (`None` when absent).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let body = self.get("/metrics").await.text().await.expect("metrics");
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
    }

    /// Polls the Flatpak query until `done` holds for its answer (up to 30 s).
    pub async fn wait_for_index(
        &self,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> (serde_json::Value, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (index, etag) = self.flatpak_index().await;
            if done(&index) {
                return (index, etag);
            }
            assert!(
                Instant::now() < deadline,
                "index never showed {what}; last answer {index}\nserver log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP client without proxies.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Repository names in an index answer.
pub fn repository_names(index: &serde_json::Value) -> Vec<String> {
    index["Results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter_map(|r| r["Name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every `org.flatpak.ref` label in an index answer (images and list children).
pub fn flatpak_refs(index: &serde_json::Value) -> Vec<String> {
    let mut refs = Vec::new();
    for repository in index["Results"].as_array().into_iter().flatten() {
        let images = repository["Images"].as_array().into_iter().flatten();
        let children = repository["Lists"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["Images"].as_array().into_iter().flatten());
        for image in images.chain(children) {
            if let Some(r) = image["Labels"]["org.flatpak.ref"].as_str() {
                refs.push(r.to_owned());
            }
        }
    }
    refs.sort();
    refs
}

/// Asserts that `a` and `b` answer the Flatpak query and the whole-index query with the
/// same bytes and ETag, naming `registry` (the writer's registry URL) as `Registry`.
pub async fn assert_identical_answers(a: &Server, b: &Server, registry: &str) {
    for query in [FLATPAK_QUERY, "tag=latest"] {
        let path = format!("/index/static?{query}");
        let (ra, rb) = (a.get(&path).await, b.get(&path).await);
        assert_eq!(
            (ra.status().as_u16(), rb.status().as_u16()),
            (200, 200),
            "{path}"
        );
        let etag = |r: &reqwest::Response| r.headers().get("etag").cloned();
        let (ea, eb) = (etag(&ra), etag(&rb));
        let (ba, bb) = (ra.bytes().await.unwrap(), rb.bytes().await.unwrap());
        assert_eq!(
            text(&ba),
            text(&bb),
            "{path}: different bodies\nfirst log:\n{}\nsecond log:\n{}",
            a.log(),
            b.log()
        );
        assert!(ea.is_some());
        assert_eq!(ea, eb, "{path}: different ETags");
        let json: serde_json::Value = serde_json::from_slice(&ba).unwrap();
        assert_eq!(json["Registry"], registry, "{path}");
        assert!(!repository_names(&json).is_empty(), "{path}: empty answer");
    }
}
