//! Private PostgreSQL servers for tests: a primary set up for streaming replication and
//! hot standbys of it ([`PgCluster`]), each made with `initdb` (or `pg_basebackup -R`)
//! in a temporary directory, listening on a free port of 127.0.0.1 with trust
//! authentication. They never touch a server the machine already runs.
//!
//! The binaries are Debian's (`/usr/lib/postgresql/<version>/bin`, the newest version
//! wins), `FLAGSTATE_PG_BIN` when set, or those on `PATH`; `scripts/install-test-deps`
//! installs them. PostgreSQL refuses to run as root, so when the tests run as root
//! (as in CI containers) every server command runs as the `postgres` user through
//! `runuser`, and the cluster directories are handed to that user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::TestkitError;

/// The unprivileged user servers run as when the tests run as root.
const SERVER_USER: &str = "postgres";

/// A PostgreSQL server in a temporary directory. Stopped (immediately) when dropped;
/// the directory goes with it.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
}

/// The directory holding `initdb`, `pg_ctl` and `pg_basebackup`.
pub fn postgres_bin_dir() -> Result<PathBuf, TestkitError> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "pg_basebackup"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    if let Some(dir) = std::env::var_os("FLAGSTATE_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(TestkitError::Postgres(format!(
                "FLAGSTATE_PG_BIN={} lacks initdb, pg_ctl or pg_basebackup",
                dir.display()
            )))
        };
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.pop() {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| complete(dir)))
        .ok_or_else(|| {
            TestkitError::Postgres(
                "initdb, pg_ctl and pg_basebackup not found in /usr/lib/postgresql/*/bin or \
                 on PATH (Debian package postgresql; scripts/install-test-deps installs it)"
                    .into(),
            )
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A port that was free a moment ago (the server binds it itself).
fn free_port() -> Result<u16, TestkitError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| TestkitError::Io {
            what: "find a free port".into(),
            source,
        })
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> TestkitError + '_ {
    move |source| TestkitError::Io {
        what: what.to_owned(),
        source,
    }
}

impl PgCluster {
    /// A new primary, not started: `initdb` (superuser `postgres`, trust), configured for
    /// streaming replication (`wal_level = replica`, WAL senders, a `replication` line
    /// for 127.0.0.1 in `pg_hba.conf`).
    pub fn primary() -> Result<PgCluster, TestkitError> {
        let cluster = PgCluster::empty("flagstate-pg-primary")?;
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        let append = |file: &str, text: &str| {
            use std::io::Write as _;
            std::fs::OpenOptions::new()
                .append(true)
                .open(data.join(file))
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(io("configure the primary"))
        };
        append(
            "postgresql.conf",
            "\n# flagstate testkit: streaming replication\nwal_level = replica\n\
             max_wal_senders = 8\nwal_keep_size = '128MB'\nhot_standby = on\n",
        )?;
        append("pg_hba.conf", "\nhost replication all 127.0.0.1/32 trust\n")?;
        Ok(cluster)
    }

    /// A hot standby of this (running) primary, not started: `pg_basebackup -R` streams
    /// a copy and writes `standby.signal` and `primary_conninfo`, so once started it
    /// replays the primary's WAL and answers read-only queries.
    pub fn standby(&self) -> Result<PgCluster, TestkitError> {
        let standby = PgCluster::empty("flagstate-pg-standby")?;
        standby.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &standby.data().to_string_lossy(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        )?;
        Ok(standby)
    }

    fn empty(prefix: &str) -> Result<PgCluster, TestkitError> {
        let bin = postgres_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(io("create the cluster directory"))?;
        std::fs::create_dir(dir.path().join("sock")).map_err(io("create the socket directory"))?;
        let cluster = PgCluster {
            bin,
            dir,
            port: free_port()?,
            as_root: is_root(),
        };
        if cluster.as_root {
            let out = Command::new("chown")
                .arg("-R")
                .arg(format!("{SERVER_USER}:{SERVER_USER}"))
                .arg(cluster.dir.path())
                .output()
                .map_err(io("run chown"))?;
            cluster.check("chown", out)?;
        }
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn check(&self, what: &str, output: Output) -> Result<(), TestkitError> {
        if output.status.success() {
            return Ok(());
        }
        Err(TestkitError::Postgres(format!(
            "{what} failed ({}): {}{}\n--- server log ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        )))
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), TestkitError> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .map_err(io(program))?;
        self.check(&format!("{program} {args:?}"), output)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), TestkitError> {
        let data = self.data();
        let mut all = vec!["-D", data.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// Starts the server and waits until it accepts connections (read-only ones, for a
    /// standby).
    pub fn start(&self) -> Result<(), TestkitError> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().join("sock").display()
        );
        let log = self.dir.path().join("server.log");
        self.pg_ctl(&[
            "-o",
            &options,
            "-l",
            &log.to_string_lossy(),
            "-t",
            "60",
            "-w",
            "start",
        ])
    }

    /// Stops the server (fast shutdown: sessions are disconnected) and waits until it is
    /// gone.
    pub fn stop(&self) -> Result<(), TestkitError> {
        self.pg_ctl(&["-m", "fast", "-t", "60", "-w", "stop"])
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Not running is fine: the directory goes either way.
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
}
