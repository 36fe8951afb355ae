//! The real Flatpak, podman and skopeo clients, each confined to a throwaway home so nothing of
//! the machine's own configuration or state is read or written.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tempfile::TempDir;

/// Whether `program` can be run. When it cannot: panics if the environment requires the
/// real clients (`FLAGSTATE_REQUIRE_REGISTRY=1`), else prints a loud skip notice.
pub fn available(program: &str) -> bool {
    available_with(program, "--version")
}

/// [`available`] for a program that prints its version with `version_flag` (`nginx -v`).
pub fn available_with(program: &str, version_flag: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if flagstate_core::testkit::registry_required() {
            panic!(
                "FLAGSTATE_REQUIRE_REGISTRY=1 but `{program}` cannot be run; run scripts/install-test-deps"
            );
        }
        eprintln!(
            "\n!!! SKIPPING the {program} part: `{program}` cannot be run (scripts/install-test-deps installs it)\n"
        );
    }
    found
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> Output {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    match tokio::time::timeout(Duration::from_secs(90), cmd.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("{what}: cannot run: {e}"),
        Err(_) => panic!("{what}: no answer within 90 s"),
    }
}

/// Asserts success and returns standard output.
pub fn success(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// skopeo with a throwaway home and a signature policy that accepts anything (the test
/// registry serves unsigned images over plain HTTP).
pub struct Skopeo {
    dir: TempDir,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        let dir = tempfile::tempdir().expect("skopeo home");
        write(
            &dir.path().join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        );
        Skopeo { dir }
    }

    /// Runs `skopeo` with `args`, asserts success and returns standard output.
    pub async fn ok_bytes(&self, args: &[&str]) -> Vec<u8> {
        let mut cmd = tokio::process::Command::new("skopeo");
        let policy = self.dir.path().join("policy.json");
        cmd.arg("--policy")
            .arg(&policy)
            .args(args)
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_RUNTIME_DIR", self.dir.path());
        let what = format!("skopeo {}", args.join(" "));
        let output = run(cmd, &what).await;
        success(&output, &what);
        output.stdout
    }

    /// Like [`ok_bytes`](Self::ok_bytes), for commands whose output is not needed.
    pub async fn ok(&self, args: &[&str]) {
        self.ok_bytes(args).await;
    }
}

/// A Flatpak user installation in a temporary directory.
pub struct Flatpak {
    dir: TempDir,
    /// The system CA bundle plus a test CA, seen by this installation's commands in
    /// place of the system's ([`Flatpak::trusting`]).
    bundle: Option<PathBuf>,
}

/// The CA bundle Debian's libcurl (Flatpak's HTTP client) reads: the system trust store.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Flatpak {
    /// A fresh, empty installation.
    pub fn new() -> Flatpak {
        let dir = tempfile::Builder::new()
            .prefix("flagstate-flatpak")
            .tempdir()
            .expect("temp dir");
        for sub in ["user", "system", "data", "cache", "config", "home"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        Flatpak { dir, bundle: None }
    }

    /// A fresh installation whose commands also trust the CA certificate `ca`, with no
    /// certificate check turned off and nothing changed for other processes.
    ///
    /// Flatpak 1.14 has no per-remote CA for OCI remotes and its libcurl reads no CA
    /// environment variable, only the system store ([`SYSTEM_CA_BUNDLE`]). So each
    /// command runs in a mount namespace of its own (`unshare --mount`, as a mapped root
    /// when not root) in which that one file is the system's bundle plus `ca`: the
    /// client verifies exactly as with the CA installed system-wide. `None` (after a skip
    /// notice, or a panic when the real clients are required) without `unshare`.
    pub fn trusting(ca: &Path) -> Option<Flatpak> {
        if !available("unshare") {
            return None;
        }
        let mut flatpak = Flatpak::new();
        let mut bundle = std::fs::read(SYSTEM_CA_BUNDLE).unwrap_or_default();
        bundle.push(b'\n');
        bundle.extend(std::fs::read(ca).expect("read the CA certificate"));
        let path = flatpak.path("ca-bundle.crt");
        std::fs::write(&path, bundle).expect("write the CA bundle");
        flatpak.bundle = Some(path);
        Some(flatpak)
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// The installation's directory (for inspecting appstream data).
    pub fn user_dir(&self) -> PathBuf {
        self.path("user")
    }

    /// Runs `flatpak ARGS` against this installation.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = match &self.bundle {
            None => tokio::process::Command::new("flatpak"),
            Some(bundle) => {
                let mut cmd = tokio::process::Command::new("unshare");
                cmd.arg("--mount");
                if !is_root() {
                    cmd.arg("--map-root-user");
                }
                cmd.args([
                    "sh",
                    "-c",
                    "mount --bind \"$0\" \"$1\" && shift && exec flatpak \"$@\"",
                ])
                .arg(bundle)
                .arg(SYSTEM_CA_BUNDLE);
                cmd
            }
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("FLATPAK_USER_DIR", self.path("user"))
            .env("FLATPAK_SYSTEM_DIR", self.path("system"))
            .env("FLATPAK_CONFIG_DIR", self.path("config"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("LANG", "C.UTF-8");
        run(cmd, &format!("flatpak {}", args.join(" "))).await
    }

    /// Runs `flatpak ARGS` and asserts it succeeded; returns its standard output.
    pub async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        success(&output, &format!("flatpak {}", args.join(" ")))
    }
}

/// podman with its configuration, storage and credentials in a temporary directory.
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    /// A fresh configuration.
    pub fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("flagstate-podman")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        for sub in ["home", "config", "data", "run", "storage", "storage-run"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        write(
            &root.join("storage.conf"),
            &format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.join("storage").display(),
                root.join("storage-run").display()
            ),
        );
        write(
            &root.join("registries.conf"),
            "unqualified-search-registries = []\n",
        );
        write(&root.join("auth.json"), "{}\n");
        Podman { dir }
    }

    /// Trusts the CA certificate `ca` for the registry at `host` (`host:port`) the way a
    /// user does without changing the system: `~/.config/containers/certs.d/HOST/ca.crt`
    /// in this configuration's home (`podman search` has no `--cert-dir`).
    pub fn trust(&self, host: &str, ca: &Path) {
        let dir = self
            .dir
            .path()
            .join("home/.config/containers/certs.d")
            .join(host);
        std::fs::create_dir_all(&dir).expect("mkdir certs.d");
        std::fs::copy(ca, dir.join("ca.crt")).expect("copy the CA certificate");
    }

    /// Runs `podman ARGS`.
    pub async fn run(&self, args: &[&str]) -> Output {
        let root = self.dir.path();
        let mut cmd = tokio::process::Command::new("podman");
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", root.join("home"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .env("CONTAINERS_STORAGE_CONF", root.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", root.join("registries.conf"))
            .env("REGISTRY_AUTH_FILE", root.join("auth.json"));
        run(cmd, &format!("podman {}", args.join(" "))).await
    }
}

/// Whether the tests run as root (`id -u` is 0).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn write(path: &Path, content: &str) {
    std::fs::write(path, content).expect("write client configuration");
}
