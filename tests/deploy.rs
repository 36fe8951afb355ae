//! The deployment files in `deploy/` and the development environment, with the real
//! programs: nginx (`deploy/nginx`, started by `scripts/front-nginx` exactly as
//! `scripts/dev-env` starts it) and Apache httpd (`deploy/apache`) joining a real registry
//! and `flagstate serve` under one host, read by the real Flatpak, podman and skopeo
//! clients; `systemd-analyze` on the unit; the example configurations through the binary's
//! `config check`; and `scripts/dev-env up`/`status`/`down` itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{Flatpak, Podman, Skopeo, available, available_with, success};
use common::images::{self, HELLO, SAMPLE_APPS, WORLD};
use common::{
    EVENTS_TOKEN, FLATPAK_QUERY, LocalCa, Server, binary, flatpak_refs, free_port, http_client,
    registry, repository_names, run, text,
};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_file(path: &str) -> String {
    repo_root().join("deploy").join(path).display().to_string()
}

// --- configuration files --------------------------------------------------------------

#[test]
fn example_configurations_pass_config_check() {
    for (file, expect) in [
        ("config/writer.yaml", "mode: writer"),
        ("config/replica-postgres.yaml", "mode: read-only replica"),
    ] {
        let out = run(&["config", "check", "-c", &deploy_file(file)]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}\n{stdout}",
            text(&out.stderr)
        );
        assert!(stdout.contains(expect), "{file}:\n{stdout}");
        assert!(
            stdout.contains("registry.public_url: /\n"),
            "{file}:\n{stdout}"
        );
    }
    let out = run(&[
        "config",
        "check",
        "--index",
        "-c",
        &deploy_file("config/static-index.yaml"),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains("index flatpak-amd64: "), "{stdout}");
    assert!(stdout.contains("index flatpak-arm64: "), "{stdout}");
}

#[test]
fn config_check_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "registry:\n  urll: http://127.0.0.1:5000\n").unwrap();
    let out = run(&["config", "check", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("registry.urll"),
        "{}",
        text(&out.stderr)
    );

    // A regindexer file is not flagstate's configuration, and the other way round.
    let out = run(&[
        "config",
        "check",
        "-c",
        &deploy_file("config/static-index.yaml"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("icons_dir"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        "config",
        "check",
        "--index",
        "-c",
        &deploy_file("config/writer.yaml"),
    ]);
    assert_eq!(out.status.code(), Some(2));

    // A writer needs the registry; the secrets given stay unprinted.
    let out = common::run_with_env(
        &["config", "check", "--registry", "http://127.0.0.1:5000"],
        &[("FLAGSTATE_EVENTS__TOKEN", "do-not-print-me")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("do-not-print-me"));
    let out = run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("registry.url"),
        "{}",
        text(&out.stderr)
    );
}

// --- systemd --------------------------------------------------------------------------

/// `systemd-analyze verify` checks every directive (an unknown one is a warning it prints,
/// so nothing may be printed) and that `ExecStart` names an executable: the copy checked
/// names the built binary instead of `/usr/bin/flagstate`. `security --offline` rates the
/// sandbox; the threshold is the rating of "OK" at most 2.0 of 10.
#[test]
fn systemd_unit_verifies_and_is_sandboxed() {
    if !available("systemd-analyze") {
        return;
    }
    let unit = std::fs::read_to_string(deploy_file("systemd/flagstate.service")).unwrap();
    assert_eq!(
        unit.matches("ExecStart=/usr/bin/flagstate serve -c /etc/flagstate/config.yaml\n")
            .count(),
        1
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("flagstate.service");
    std::fs::write(&copy, unit.replace("/usr/bin/flagstate", binary())).unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze security: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );

    // The check is real: a misspelt directive is reported.
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/flagstate", binary())
            .replace("ProtectHome=yes", "ProtectHomes=yes"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("ProtectHomes"),
        "{}",
        text(&out.stderr)
    );
}

// --- the joined host ------------------------------------------------------------------

/// A child process killed (with its process group's leader) when dropped.
struct Process {
    child: Child,
    what: &'static str,
    log: PathBuf,
}

impl Process {
    fn spawn(what: &'static str, mut cmd: Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Process { child, what, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `url` answers 200.
    async fn wait_for(&mut self, url: &str) {
        let client = http_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.what, self.log());
            }
            if matches!(client.get(url).send().await, Ok(r) if r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not answer {url}:\n{}",
                self.what,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registry with two pullable apps, `flagstate serve` indexing it (notifications wired,
/// icons extracted, `registry.public_url: /`), and nothing in front yet.
struct Backends {
    registry: flagstate_core::testkit::TestRegistry,
    server: Server,
    dir: tempfile::TempDir,
}

async fn backends() -> Option<Backends> {
    let port = free_port();
    let registry = registry(Some(port)).await?;
    let pusher = registry.pusher();
    for app in [&HELLO, &WORLD] {
        pusher
            .push_image(
                &app.repository(),
                Some("latest"),
                &images::pullable(app.image(), app.name),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    let icons = dir.path().join("icons");
    let server = Server::start(
        port,
        &[
            "--registry",
            &registry.url(),
            "--database",
            db.to_str().unwrap(),
        ],
        &[
            ("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN),
            ("FLAGSTATE_REGISTRY__PUBLIC_URL", "/"),
            ("FLAGSTATE_ICONS__DIR", icons.to_str().unwrap()),
        ],
        dir.path(),
    )
    .await;
    Some(Backends {
        registry,
        server,
        dir,
    })
}

/// `scripts/front-nginx` on a free port in front of `backends`.
async fn nginx_front(backends: &Backends) -> (Process, String) {
    let front = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(repo_root().join("scripts/front-nginx"));
    cmd.arg(backends.dir.path().join("nginx"))
        .arg(&front)
        .arg(format!("127.0.0.1:{}", backends.server.port))
        .arg(backends.registry.address());
    let mut nginx = Process::spawn("nginx", cmd, backends.dir.path().join("nginx.log"));
    nginx.wait_for(&format!("http://{front}/readyz")).await;
    (nginx, front)
}

/// `scripts/front-nginx` in front of `backends` with its HTTPS block too, serving `ca`'s
/// certificate: (process, HTTP address, HTTPS address).
async fn nginx_front_tls(backends: &Backends, ca: &LocalCa) -> (Process, String, String) {
    let front = format!("127.0.0.1:{}", free_port());
    let tls_front = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(repo_root().join("scripts/front-nginx"));
    cmd.arg(backends.dir.path().join("nginx-tls"))
        .arg(&front)
        .arg(format!("127.0.0.1:{}", backends.server.port))
        .arg(backends.registry.address())
        .arg(&tls_front)
        .arg(&ca.cert)
        .arg(&ca.key);
    let mut nginx = Process::spawn("nginx", cmd, backends.dir.path().join("nginx-tls.log"));
    nginx.wait_for(&format!("http://{front}/readyz")).await;
    (nginx, front, tls_front)
}

/// Flatpak, trusting `ca` and nothing insecure, adds `oci+https://{host}`, lists the two
/// apps and updates its appstream data.
async fn flatpak_over_https(host: &str, ca: &LocalCa) {
    if !available("flatpak") {
        return;
    }
    let Some(flatpak) = Flatpak::trusting(&ca.ca) else {
        return;
    };
    let url = format!("oci+https://{host}");
    flatpak
        .ok(&["remote-add", "--user", "--no-gpg-verify", "tls", &url])
        .await;
    let listed = flatpak
        .ok(&["remote-ls", "--user", "--columns=application", "tls"])
        .await;
    let mut ids: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [HELLO.id, WORLD.id], "{url}: {listed}");
    flatpak
        .ok(&["update", "--user", "--appstream", "tls"])
        .await;

    // The check is real: without the CA the same commands fail verification.
    let untrusting = Flatpak::new();
    untrusting
        .ok(&["remote-add", "--user", "--no-gpg-verify", "tls", &url])
        .await;
    let output = untrusting.run(&["remote-ls", "--user", "tls"]).await;
    assert!(!output.status.success(), "{url} verified without the CA");
}

/// HTTPS with a certificate of a CA the test creates and trusts per client (Flatpak in a
/// mount namespace whose system store holds it, podman in its user `certs.d` and with
/// `pull --cert-dir`; no certificate check turned off): through the front nginx's HTTPS block, Flatpak lists and updates,
/// podman searches and pulls; against `flagstate serve` terminating TLS itself, Flatpak
/// lists and podman searches (pulls need the registry, which only the front serves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_front_and_flagstate_tls_verify_for_the_real_clients() {
    if !available_with("nginx", "-v") {
        return;
    }
    let Some(backends) = backends().await else {
        return;
    };
    let Some(ca) = LocalCa::create(&backends.dir.path().join("tls")) else {
        return;
    };
    let (nginx, _, tls_front) = nginx_front_tls(&backends, &ca).await;
    let index = ca
        .client()
        .get(format!("https://{tls_front}/index/static?{FLATPAK_QUERY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), 200);
    flatpak_over_https(&tls_front, &ca).await;
    if available("podman") {
        let podman = Podman::new();
        podman.trust(&tls_front, &ca.ca);
        let output = podman.run(&["search", &format!("{tls_front}/hello")]).await;
        let listed = success(&output, "podman search over https");
        let name = format!("{tls_front}/{}", HELLO.repository());
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "{listed}"
        );
        let reference = format!("{name}:latest");
        let output = podman.run(&["pull", &reference]).await;
        success(&output, "podman pull over https");
        // --cert-dir, the per-command way, for a client without the certs.d entry.
        let output = Podman::new()
            .run(&[
                "pull",
                &format!("--cert-dir={}", ca.cert_dir.display()),
                &reference,
            ])
            .await;
        success(&output, "podman pull --cert-dir over https");
        // Without the CA, verification fails.
        let output = Podman::new()
            .run(&["search", &format!("{tls_front}/hello")])
            .await;
        assert!(
            !output.status.success(),
            "podman search verified without the CA"
        );
    }
    drop(nginx);

    // flagstate serve terminating TLS itself, over the same registry.
    let db = backends.dir.path().join("tls-index.db");
    let server = Server::start_tls(
        free_port(),
        &[
            "--registry",
            &backends.registry.url(),
            "--database",
            db.to_str().unwrap(),
        ],
        &[],
        backends.dir.path(),
        &ca,
    )
    .await;
    let direct = format!("127.0.0.1:{}", server.port);
    flatpak_over_https(&direct, &ca).await;
    if available("podman") {
        let podman = Podman::new();
        podman.trust(&direct, &ca.ca);
        let output = podman.run(&["search", &format!("{direct}/hello")]).await;
        let listed = success(&output, "podman search against flagstate over https");
        assert!(listed.contains(&HELLO.repository()), "{listed}");
    }
}

/// Through the front host at `front`: every flagstate path of today answers from
/// flagstate, `/metrics` is not published, and the rest of `/v2/` is the registry's.
async fn check_routes(front: &str, backends: &Backends) {
    let client = http_client();
    let url = |path: &str| format!("http://{front}{path}");
    let get = |path: &str| {
        let client = client.clone();
        let url = url(path);
        async move {
            let answer = client.get(&url).send().await.expect("GET");
            let status = answer.status().as_u16();
            let headers = answer.headers().clone();
            (status, headers, answer.text().await.unwrap_or_default())
        }
    };

    // The index, as Flatpak asks for it, with the same bytes as from flagstate itself.
    let (status, headers, body) = get(&format!("/index/static?{FLATPAK_QUERY}")).await;
    assert_eq!(status, 200, "{body}");
    let index: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(index["Registry"], "/");
    assert_eq!(
        flatpak_refs(&index),
        [HELLO.flatpak_ref(), WORLD.flatpak_ref()]
    );
    let (direct, direct_etag) = backends.server.flatpak_index().await;
    assert_eq!(index, direct);
    assert_eq!(headers["etag"].to_str().unwrap(), direct_etag);
    let (status, _, _) = get("/index/dynamic?tag=latest").await;
    assert_eq!(status, 200);

    // The icon the answer names, from /icons/.
    let icon = index["Results"][0]["Images"][0]["Labels"]["org.freedesktop.appstream.icon-64"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(icon.starts_with("/icons/"), "{icon}");
    let (status, headers, _) = get(&icon).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/png");

    // podman search's endpoint.
    let (status, _, body) = get("/v1/search?q=hello").await;
    assert_eq!(status, 200);
    assert!(body.contains(&HELLO.repository()), "{body}");

    // The web UI, its stylesheet, and the remote it offers naming this host.
    let (status, _, home) = get("/").await;
    assert_eq!(status, 200);
    let style = home
        .split('"')
        .find(|s| s.starts_with("/static/"))
        .unwrap_or_else(|| panic!("no stylesheet link in the home page:\n{home}"))
        .to_owned();
    assert_eq!(get(&style).await.0, 200, "{style}");
    assert_eq!(get("/search?q=hello").await.0, 200);
    let (status, _, apps) = get("/apps").await;
    assert_eq!(status, 200);
    assert!(apps.contains(&format!("oci+http://{front}/")), "{apps}");
    assert_eq!(get(&format!("/r/{}", HELLO.repository())).await.0, 200);
    let digest = index["Results"][0]["Images"][0]["Digest"].as_str().unwrap();
    assert_eq!(get(&format!("/i/{digest}")).await.0, 200);
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    let (status, _, openapi) = get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(openapi.contains("\"/index/static\""), "{openapi}");

    // Not published.
    let (status, _, body) = get("/metrics").await;
    assert_eq!(status, 404);
    assert!(!body.contains("flagstate_"), "{body}");

    // /events is flagstate's (the registry has no such path): without the token, 401.
    let answer = client.post(url("/events")).body("{}").send().await.unwrap();
    assert_eq!(answer.status(), 401);

    // The discovery extension is flagstate's, at registry and repository level.
    let hello = HELLO.repository();
    for path in [
        "/v2/_oci/ext/discover".to_owned(),
        "/v2/_flagstate/repositories".to_owned(),
        format!("/v2/{hello}/_oci/ext/discover"),
        format!("/v2/{hello}/_flagstate/tags?sort=-updated&n=1"),
        format!("/v2/{hello}/_flagstate/history/latest"),
        format!("/v2/{hello}/_flagstate/manifests"),
        format!("/v2/{hello}/referrers/sha256:{}", "0".repeat(64)),
        "/v2/_flagstate/changes".to_owned(),
    ] {
        let (status, _, body) = get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.starts_with('{'), "{path}: {body}");
    }
    let (_, _, tags) = get(&format!("/v2/{hello}/_flagstate/tags")).await;
    assert!(tags.contains("\"latest\""), "{tags}");

    // The rest of /v2/ is the registry's: flagstate has no tag lists.
    let (status, headers, body) = get(&format!("/v2/{}/tags/list", HELLO.repository())).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("latest"), "{body}");
    assert!(headers.contains_key("docker-distribution-api-version"));
    assert_eq!(get("/v2/").await.0, 200);
}

/// The real clients through the joined host `front`: Flatpak lists the apps, podman
/// searches, lists tags and pulls a name search printed, skopeo pushes a copy that the
/// registry's notifications bring into the index.
async fn check_clients(front: &str, backends: &Backends) {
    if available("flatpak") {
        let flatpak = Flatpak::new();
        flatpak
            .ok(&[
                "remote-add",
                "--user",
                "--no-gpg-verify",
                "dev",
                &format!("oci+http://{front}"),
            ])
            .await;
        let listed = flatpak
            .ok(&["remote-ls", "--user", "--columns=application", "dev"])
            .await;
        let mut ids: Vec<&str> = listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [HELLO.id, WORLD.id], "{listed}");
    }
    if available("podman") {
        podman_through(front).await;
    }
    if available("skopeo") {
        let skopeo = Skopeo::new();
        skopeo
            .ok(&[
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &format!("docker://{front}/{}:latest", HELLO.repository()),
                &format!("docker://{front}/mirror/hello:latest"),
            ])
            .await;
        backends
            .server
            .wait_for_index("the copy pushed through the joined host", |i| {
                repository_names(i).contains(&"mirror/hello".to_owned())
            })
            .await;
    }
}

/// `podman search HOST/hello` prints `HOST/apps/org.example.hello`; `--list-tags` of that
/// name lists `latest`; `podman pull` of it works.
async fn podman_through(front: &str) {
    let podman = Podman::new();
    let output = podman
        .run(&["search", "--tls-verify=false", &format!("{front}/hello")])
        .await;
    let listed = success(&output, "podman search");
    let name = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|n| n.ends_with(&HELLO.repository()))
        .unwrap_or_else(|| panic!("podman search does not list the app:\n{listed}"))
        .to_owned();
    assert_eq!(name, format!("{front}/{}", HELLO.repository()));

    let output = podman
        .run(&["search", "--tls-verify=false", "--list-tags", &name])
        .await;
    let tags = success(&output, "podman search --list-tags");
    assert!(
        tags.lines()
            .any(|l| l.split_whitespace().eq([name.as_str(), "latest"])),
        "podman search --list-tags does not list {name} latest:\n{tags}"
    );

    let reference = format!("{name}:latest");
    let output = podman
        .run(&["pull", "--tls-verify=false", &reference])
        .await;
    success(&output, "podman pull");
    let output = podman.run(&["image", "exists", &reference]).await;
    success(&output, "podman image exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_joins_registry_and_index_for_the_real_clients() {
    if !available_with("nginx", "-v") {
        return;
    }
    let Some(backends) = backends().await else {
        return;
    };
    let (nginx, front) = nginx_front(&backends).await;
    check_routes(&front, &backends).await;
    check_clients(&front, &backends).await;
    drop(nginx);
}

/// `scripts/front-nginx` refuses what would make the deployed file unfit: a wrong address.
#[test]
fn front_nginx_refuses_bad_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(repo_root().join("scripts/front-nginx"))
        .arg(dir.path())
        .args(["127.0.0.1", "127.0.0.1:8088", "127.0.0.1:5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a host:port"),
        "{}",
        text(&out.stderr)
    );
}

/// The Apache modules and program of this system (Debian's `apache2`, else `httpd`).
fn apache() -> Option<(&'static str, &'static str)> {
    let program = ["apache2", "httpd"].into_iter().find(|p| {
        Command::new(p)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(program) = program else {
        available_with("apache2", "-v");
        return None;
    };
    let modules = [
        "/usr/lib/apache2/modules",
        "/usr/lib64/httpd/modules",
        "/usr/lib/httpd/modules",
    ]
    .into_iter()
    .find(|d| Path::new(d).join("mod_proxy_http.so").is_file())?;
    Some((program, modules))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_joins_registry_and_index_for_the_real_clients() {
    let Some((program, modules)) = apache() else {
        return;
    };
    let Some(backends) = backends().await else {
        return;
    };
    let dir = backends.dir.path().join("apache");
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let front = format!("127.0.0.1:{}", free_port());
    let load = [
        "mpm_event",
        "authz_core",
        "proxy",
        "proxy_http",
        "headers",
        "env",
    ]
    .map(|m| format!("LoadModule {m}_module {modules}/mod_{m}.so\n"))
    .concat();
    // The deployed file unchanged; the addresses are Defines read before it.
    let conf = format!(
        "ServerRoot {dir}\nPidFile {dir}/httpd.pid\nErrorLog {dir}/error.log\nServerName 127.0.0.1\n\
         Listen {front}\n{load}DocumentRoot {dir}/empty\n\
         Define FLAGSTATE_UPSTREAM {flagstate}\nDefine REGISTRY_UPSTREAM {registry}\n\
         Define FLAGSTATE_VHOST {front}\nInclude {site}\n",
        dir = dir.display(),
        flagstate = backends.server.url,
        registry = backends.registry.url().trim_end_matches('/'),
        site = deploy_file("apache/flagstate.conf"),
    );
    let conf_path = dir.join("httpd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let out = Command::new(program)
        .arg("-t")
        .arg("-f")
        .arg(&conf_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} -t: {}", text(&out.stderr));

    // -X: one process in the foreground, stopped with it.
    let mut cmd = Command::new(program);
    cmd.arg("-X").arg("-f").arg(&conf_path);
    let mut httpd = Process::spawn("apache", cmd, dir.join("stdout.log"));
    httpd.wait_for(&format!("http://{front}/readyz")).await;
    check_routes(&front, &backends).await;
    check_clients(&front, &backends).await;
    drop(httpd);
}

// --- scripts/dev-env ------------------------------------------------------------------

/// Runs `scripts/dev-env down` for its state when dropped, so a failing test leaves
/// nothing running.
struct DevEnv {
    env: Vec<(String, String)>,
}

impl DevEnv {
    fn run(&self, command: &str) -> std::process::Output {
        let mut cmd = Command::new(repo_root().join("scripts/dev-env"));
        cmd.arg(command).stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("run scripts/dev-env")
    }
}

impl Drop for DevEnv {
    fn drop(&mut self) {
        let _ = self.run("down");
    }
}

/// `scripts/dev-env up` brings up registry, sample apps, server and front nginx on the
/// ports it is given (with the debug binaries of this build instead of a release build),
/// the commands it prints work, and `down` stops everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_env_up_serves_the_clients_and_down_stops_it() {
    if !available_with("nginx", "-v") || registry(None).await.is_none() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let tls_port = free_port();
    let populate = Path::new(binary())
        .parent()
        .unwrap()
        .join("examples/populate");
    assert!(
        populate.is_file(),
        "{} is not built (cargo builds examples with the tests)",
        populate.display()
    );
    let env = DevEnv {
        env: vec![
            (
                "FLAGSTATE_DEV_STATE".into(),
                state.path().display().to_string(),
            ),
            ("FLAGSTATE_DEV_PORT".into(), port.to_string()),
            ("FLAGSTATE_DEV_TLS_PORT".into(), tls_port.to_string()),
            ("FLAGSTATE_DEV_SERVER_PORT".into(), free_port().to_string()),
            (
                "FLAGSTATE_DEV_REGISTRY_PORT".into(),
                free_port().to_string(),
            ),
            ("FLAGSTATE_DEV_IMAGES".into(), "5".into()),
            ("FLAGSTATE_DEV_FLAGSTATE".into(), binary().into()),
            (
                "FLAGSTATE_DEV_POPULATE".into(),
                populate.display().to_string(),
            ),
        ],
    };
    let out = env.run("up");
    let printed = success(&out, "scripts/dev-env up");
    let front = format!("127.0.0.1:{port}");
    for hint in [
        format!(
            "flatpak remote-add --user --no-gpg-verify dev oci+http://{front} && flatpak remote-ls --user dev"
        ),
        format!("podman search --tls-verify=false {front}/hello"),
        format!(
            "podman pull --tls-verify=false {front}/{}:latest",
            HELLO.repository()
        ),
        format!(
            "skopeo inspect --tls-verify=false docker://{front}/{}:latest",
            HELLO.repository()
        ),
        format!("http://{front}/"),
    ] {
        assert!(
            printed.contains(&hint),
            "`up` does not print {hint:?}:\n{printed}"
        );
    }
    let config = state.path().join("flagstate.yaml");
    let out = run(&["config", "check", "-c", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // HTTPS with the environment's own CA: verified by a client trusting it, and by the
    // system store once `trust` installed it (`trust` and `untrust` run in a private
    // mount namespace over copies of the store, so the machine's stays as it is).
    let tls_front = format!("127.0.0.1:{tls_port}");
    let ca = state.path().join("tls/ca.crt");
    assert!(
        printed.contains(&format!("https://{tls_front}/")),
        "{printed}"
    );
    let pem = std::fs::read(&ca).unwrap();
    let trusting = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let ready = trusting
        .get(format!("https://{tls_front}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    if common::clients::is_root()
        && Path::new("/usr/local/share/ca-certificates").is_dir()
        && Command::new("sh")
            .args(["-c", "command -v update-ca-certificates"])
            .output()
            .is_ok_and(|o| o.status.success())
        && available("unshare")
        && available("curl")
    {
        let script = r#"set -e
store="$(mktemp -d)"
cp -a /etc/ssl/certs "$store/certs"
cp -a /usr/local/share/ca-certificates "$store/local"
mount --bind "$store/certs" /etc/ssl/certs
mount --bind "$store/local" /usr/local/share/ca-certificates
if curl -fsS -o /dev/null "$1"; then echo "verified before trust"; exit 1; fi
"$0" trust
curl -fsS -o /dev/null "$1"
echo "verified after trust"
"$0" untrust
if curl -fsS -o /dev/null "$1"; then echo "verified after untrust"; exit 1; fi
echo "refused after untrust"
"#;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "sh", "-c", script])
            .arg(repo_root().join("scripts/dev-env"))
            .arg(format!("https://{tls_front}/readyz"))
            .stdin(Stdio::null());
        for (k, v) in &env.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let said = success(&out, "scripts/dev-env trust/untrust");
        for line in [
            "verified after trust",
            "refused after untrust",
            "--cert-dir",
            "flatpak remote-add",
        ] {
            assert!(said.contains(line), "{line:?} not in:\n{said}");
        }
    }

    // What the hints promise.
    if available("flatpak") {
        let flatpak = Flatpak::new();
        flatpak
            .ok(&[
                "remote-add",
                "--user",
                "--no-gpg-verify",
                "dev",
                &format!("oci+http://{front}"),
            ])
            .await;
        let listed = flatpak
            .ok(&["remote-ls", "--user", "--columns=application", "dev"])
            .await;
        for app in SAMPLE_APPS {
            assert!(
                listed.contains(app.id),
                "remote-ls lacks {}:\n{listed}",
                app.id
            );
        }
    }
    if available("podman") {
        podman_through(&front).await;
    }
    if available("skopeo") {
        let inspected = Skopeo::new()
            .ok_bytes(&[
                "inspect",
                "--tls-verify=false",
                &format!("docker://{front}/{}:latest", HELLO.repository()),
            ])
            .await;
        let inspected: serde_json::Value = serde_json::from_slice(&inspected).unwrap();
        assert_eq!(inspected["Labels"]["org.flatpak.ref"], HELLO.flatpak_ref());
    }
    let status = env.run("status");
    assert!(status.status.success(), "{}", text(&status.stdout));
    assert!(
        text(&status.stdout).contains("\"status\":\"ready\""),
        "{}",
        text(&status.stdout)
    );

    let out = env.run("down");
    let stopped = success(&out, "scripts/dev-env down");
    for name in ["nginx", "flagstate", "registry"] {
        assert!(stopped.contains(&format!("{name} (pid")), "{stopped}");
    }
    let status = env.run("status");
    assert_eq!(status.status.code(), Some(1), "{}", text(&status.stdout));
    assert!(
        http_client()
            .get(format!("http://{front}/readyz"))
            .send()
            .await
            .is_err(),
        "the front host still answers after down"
    );
}
