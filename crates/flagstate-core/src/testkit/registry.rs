//! [`TestRegistry`]: a throwaway distribution registry process.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Pusher, TestkitError, registry_binary, registry_required};

/// Where the registry sends its webhook notifications.
#[derive(Debug, Clone)]
pub struct Notifications {
    /// Endpoint URL, e.g. `http://127.0.0.1:PORT/events`.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
    /// Drop blob pushes and pulls at the source (`ignore: mediatypes/actions`).
    pub ignore_blobs_and_pulls: bool,
}

/// How to start a [`TestRegistry`].
#[derive(Debug, Clone, Default)]
pub struct TestRegistryOptions {
    /// Send notifications to this endpoint.
    pub notifications: Option<Notifications>,
    /// Require HTTP basic authentication with this (user, password) (htpasswd).
    pub basic_auth: Option<(String, String)>,
}

/// A running registry; the process is killed when this is dropped.
pub struct TestRegistry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
    options: TestRegistryOptions,
    /// Sent by the registry in a response header, so readiness checks cannot be fooled
    /// by another process that grabbed the port first.
    instance: String,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry")
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestRegistry {
    /// Starts a registry with filesystem storage in a temporary directory, deletes
    /// enabled, on a free port of 127.0.0.1, and waits until `/v2/` answers.
    pub async fn start(options: TestRegistryOptions) -> Result<TestRegistry, TestkitError> {
        let binary = registry_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("flagstate-test-registry")
            .tempdir()
            .map_err(|source| TestkitError::Io {
                what: "create the registry directory".into(),
                source,
            })?;
        let mut registry = TestRegistry {
            child: None,
            port: 0,
            dir,
            binary,
            options,
            instance: format!("{:016x}", rand::random::<u64>()),
        };
        registry.launch().await?;
        Ok(registry)
    }

    /// Like [`start`](TestRegistry::start), but when the registry cannot be started
    /// returns `None` after printing why — or panics if [`registry_required`].
    pub async fn start_or_skip(options: TestRegistryOptions) -> Option<TestRegistry> {
        match TestRegistry::start(options).await {
            Ok(r) => Some(r),
            Err(e) if registry_required() => {
                panic!("FLAGSTATE_REQUIRE_REGISTRY=1 but the test registry cannot start: {e}")
            }
            Err(e) => {
                eprintln!(
                    "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                     !!! SKIPPING: the test registry cannot start: {e}\n\
                     !!! run scripts/install-test-deps, or set FLAGSTATE_REGISTRY_BIN\n\
                     !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
                );
                None
            }
        }
    }

    async fn launch(&mut self) -> Result<(), TestkitError> {
        let mut last_error = String::new();
        // The free port is found by binding and releasing it; another process may grab
        // it before the registry does, so try a few ports.
        for _ in 0..5 {
            let port = free_port()?;
            let config = self.write_config(port)?;
            let log =
                std::fs::File::create(self.log_path()).map_err(|source| TestkitError::Io {
                    what: "create the registry log".into(),
                    source,
                })?;
            let log_err = log.try_clone().map_err(|source| TestkitError::Io {
                what: "open the registry log".into(),
                source,
            })?;
            let child = Command::new(&self.binary)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| {
                    TestkitError::Start(format!("cannot run {}: {e}", self.binary.display()))
                })?;
            self.child = Some(child);
            self.port = port;
            match self.wait_ready(Duration::from_secs(15)).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last_error = e;
                    self.kill();
                }
            }
        }
        Err(TestkitError::Start(format!(
            "{last_error}; log: {}",
            std::fs::read_to_string(self.log_path())
                .unwrap_or_default()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        )))
    }

    fn write_config(&self, port: u16) -> Result<PathBuf, TestkitError> {
        let storage = self.dir.path().join("storage");
        let mut yaml = String::new();
        let _ = write!(
            yaml,
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: flagstate-test-secret\n  \
             headers:\n    X-Flagstate-Test-Instance: [\"{instance}\"]\n",
            storage = storage.display(),
            instance = self.instance,
        );
        if let Some((user, password)) = &self.options.basic_auth {
            let hash = bcrypt::hash(password, 5)
                .map_err(|e| TestkitError::Start(format!("cannot hash the test password: {e}")))?;
            let htpasswd = self.dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).map_err(|source| {
                TestkitError::Io {
                    what: "write htpasswd".into(),
                    source,
                }
            })?;
            let _ = write!(
                yaml,
                "auth:\n  htpasswd:\n    realm: flagstate-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        if let Some(n) = &self.options.notifications {
            let _ = write!(
                yaml,
                "notifications:\n  endpoints:\n    - name: flagstate\n      url: {}\n      \
                 timeout: 2s\n      threshold: 3\n      backoff: 100ms\n",
                n.url
            );
            if let Some(token) = &n.bearer_token {
                let _ = write!(
                    yaml,
                    "      headers:\n        Authorization: [\"Bearer {token}\"]\n"
                );
            }
            if n.ignore_blobs_and_pulls {
                yaml.push_str(
                    "      ignore:\n        mediatypes:\n          - application/octet-stream\n        \
                     actions:\n          - pull\n",
                );
            }
        }
        let path = self.dir.path().join("config.yml");
        std::fs::write(&path, yaml).map_err(|source| TestkitError::Io {
            what: "write the registry config".into(),
            source,
        })?;
        Ok(path)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        crate::registry::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("{}v2/", self.url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("registry exited with {status}"));
            }
            if let Ok(r) = http.get(&url).send().await
                && (r.status().is_success() || r.status().as_u16() == 401)
            {
                let ours = r
                    .headers()
                    .get("x-flagstate-test-instance")
                    .is_some_and(|v| v.as_bytes() == self.instance.as_bytes());
                if !ours {
                    return Err(format!("another process answers on port {}", self.port));
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{url} did not answer within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log file (its stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The storage directory.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// A pusher for this registry, with its basic credentials if it has any.
    pub fn pusher(&self) -> Pusher {
        Pusher::new(&self.url(), self.options.basic_auth.clone())
    }

    /// Kills the registry process now (data stays on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the registry again on the same port and storage after [`kill`](Self::kill).
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        let config = self.write_config(self.port)?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.log_path())
            .map_err(|source| TestkitError::Io {
                what: "open the registry log".into(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| TestkitError::Io {
            what: "open the registry log".into(),
            source,
        })?;
        self.child = Some(
            Command::new(&self.binary)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| TestkitError::Start(e.to_string()))?,
        );
        self.wait_ready(Duration::from_secs(15))
            .await
            .map_err(TestkitError::Start)
    }

    /// The registry's directory (config, storage, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16, TestkitError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| TestkitError::Io {
            what: "find a free port".into(),
            source,
        })
}
