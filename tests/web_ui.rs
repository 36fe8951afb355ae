//! The web UI in a real browser against the real server.
//!
//! Starts a distribution registry (testkit), pushes a Flatpak-style image list, a plain
//! image and an image whose labels carry markup, starts `flagstate serve` with the web
//! UI on, waits for the first scan, then loads pages in headless Chromium: the DOM it
//! dumps is what a visitor's browser built, and screenshots (desktop and phone width)
//! land in `test-artifacts/web_ui/` for a human to look at.
//!
//! Without Chromium the test is skipped with a loud message, unless
//! `FLAGSTATE_REQUIRE_REGISTRY=1`, where a missing browser or registry is a failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flagstate_core::testkit::{
    ImageSpec, ListFormat, TestRegistry, TestRegistryOptions, registry_required,
};

const CHROMIUM: &str = "/usr/bin/chromium";
/// A 64×64 PNG (blue disc) as the Flatpak icon label carries it.
const ICON: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAYAAACqaXHeAAAAvElEQVR42u3b0QnDMAwEUE/T8TJntmp2sGVLRu8gn4XeK6TgXMYQERGRnfk973/2alv8WojI0tdhnChfEuFk8XIQmeXTESqUT0OoVP44QsXyxxAql9+OcEP5rQitAWa+RGRSEWZ/hWyAMAQAnQFWbkQVAJYRogF2fi4cYPWvqArANAIAAAAAAAAAAAAAAAAAAOgI0P48wImQM0EAADwZ8mwQgH2AhYiNkJWYnaClqK2wtbj3BTIghoiIyLZ8aZqzU9/AgxEAAAAASUVORK5CYII=";
const APPDATA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<component type="desktop-application">
  <id>org.example.PhotoViewer</id>
  <name>Photo Viewer</name>
  <name xml:lang="de">Fotobetrachter</name>
  <summary>Browse and organise your pictures</summary>
  <developer_name>Example Photo Team</developer_name>
</component>"#;

/// `flagstate serve` as a child process, killed on drop.
struct Server {
    child: Child,
    base: String,
    logs: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary on a free port and returns once it logged its address.
    /// `extra` is appended to the configuration file (top-level YAML keys).
    /// `env` is added to the process environment.
    fn start(dir: &Path, registry_url: &str, extra: &str, env: &[(&str, &str)]) -> Server {
        let config = dir.join("flagstate.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:0\"\n\
                 registry:\n  url: \"{registry_url}\"\n\
                 database:\n  sqlite:\n    path: \"{}\"\n\
                 components:\n  web_ui: true\n\
                 cache:\n  max_age_html: 5s\n{extra}",
                dir.join("index.db").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flagstate"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_remove("FLAGSTATE_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flagstate serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining the pipe for the life of the process.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let mut exited = None;
        let mut addr = None;
        while Instant::now() < deadline && addr.is_none() && exited.is_none() {
            match logs.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    addr = listening_address(&line);
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => exited = child.try_wait().ok().flatten(),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        match addr {
            Some(addr) => Server {
                child,
                base: format!("http://{addr}"),
                logs,
            },
            None => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "flagstate serve did not log its address (exit: {status:?}):\n{}",
                    seen.join("\n")
                );
            }
        }
    }

    /// Waits until `/readyz` says the first scan is done.
    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            match client.get(format!("{}/readyz", self.base)).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => last = r.text().await.unwrap_or_default(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let logs: Vec<String> = self.logs.try_iter().collect();
        panic!("server not ready: {last}\n{}", logs.join("\n"));
    }
}

/// `127.0.0.1:PORT` from the server's "listening on http://…" log line.
fn listening_address(line: &str) -> Option<String> {
    let start = line.find("listening on http://")? + "listening on http://".len();
    let addr: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// Runs headless Chromium with a fresh profile; returns stdout. Kills it after 90 s.
fn chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn dump_dom(url: &str) -> String {
    chromium(&["--dump-dom".to_owned(), url.to_owned()])
}

fn screenshot(url: &str, file: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(file);
    chromium(&[
        format!("--screenshot={}", file.display()),
        format!("--window-size={width},{height}"),
        url.to_owned(),
    ]);
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1000,
        "screenshot {} missing or empty",
        file.display()
    );
}

/// The text a visitor reads: the DOM without tags, whitespace collapsed. Element
/// content only; character references are decoded for the few the pages produce.
fn visible_text(dom: &str) -> String {
    let body = dom.split_once("<body").map_or(dom, |(_, b)| b);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/web_ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn web_ui_in_headless_chromium() {
    if !Path::new(CHROMIUM).exists() {
        if registry_required() {
            panic!("FLAGSTATE_REQUIRE_REGISTRY=1 but {CHROMIUM} is missing");
        }
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPING web_ui_in_headless_chromium: {CHROMIUM} is missing\n\
             !!! (apt-get install chromium, or run scripts/install-test-deps)\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }
    let Some(registry) = TestRegistry::start_or_skip(TestRegistryOptions::default()).await else {
        return;
    };
    let pusher = registry.pusher();
    let app = |arch: &str, flatpak_arch: &str| {
        ImageSpec::new("linux", arch)
            .label(
                "org.flatpak.ref",
                &format!("app/org.example.PhotoViewer/{flatpak_arch}/stable"),
            )
            .label("org.freedesktop.appstream.appdata", APPDATA)
            .label("org.freedesktop.appstream.icon-64", ICON)
            .label("org.flatpak.download-size", "7340032")
    };
    let list = pusher
        .push_list(
            "apps/photo-viewer",
            "latest",
            ListFormat::OciIndex,
            &[app("amd64", "x86_64"), app("arm64", "aarch64")],
        )
        .await
        .unwrap();
    pusher
        .push_image(
            "base/os",
            Some("2.1"),
            &ImageSpec::new("linux", "amd64")
                .label("org.opencontainers.image.title", "Base OS")
                .label(
                    "org.opencontainers.image.description",
                    "Minimal userland — ünïcødé ✓",
                ),
        )
        .await
        .unwrap();
    pusher
        .push_image(
            "tricky",
            Some("latest"),
            &ImageSpec::new("linux", "amd64").label(
                "org.opencontainers.image.title",
                "<script>alert(1)</script>",
            ),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &registry.url(), "", &[]);
    server.wait_ready().await;
    let base = server.base.clone();
    let child = list.children[0].digest.to_string();
    let registry_host = registry
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();

    // The browser runs blocking child processes; keep them off the async workers.
    let outcome = tokio::task::spawn_blocking(move || {
        let artifacts = artifacts_dir();

        let home = dump_dom(&format!("{base}/"));
        let text = visible_text(&home);
        assert!(text.contains("3 repositories indexed"), "{text}");
        assert!(text.contains("Photo Viewer"), "{text}");
        assert!(text.contains("Browse and organise your pictures"), "{text}");
        assert!(text.contains("Base OS") && text.contains("Minimal userland — ünïcødé ✓"));
        // The markup label is text on the page, not an element.
        assert!(text.contains("<script>alert(1)</script>"), "{text}");
        assert!(!home.contains("<script>alert"), "script element in DOM");
        assert!(home.contains(&format!("src=\"{ICON}\"")), "icon shown");
        // Cards are headed by the repository name, the title beneath it.
        assert!(
            home.contains("<h2><a href=\"/r/apps/photo-viewer\">apps/photo-viewer</a></h2>"),
            "{home}"
        );
        assert!(
            home.contains("<h2><a href=\"/r/base/os\">base/os</a></h2>")
                && home.contains("<p class=\"repo-title\">Base OS</p>"),
            "{home}"
        );
        // A clean scan: no scan notice.
        assert!(!home.contains("scan-status"), "{home}");
        // The footer links a filtered query, never the unfiltered whole index.
        assert!(!home.contains("href=\"/index/static\""), "{home}");
        let footer = home.split("<footer").nth(1).unwrap_or_default();
        assert!(
            footer.contains("href=\"/index/static?label:org.flatpak.ref:exists=1&amp;os=linux&amp;architecture=amd64&amp;tag=latest\""),
            "{footer}"
        );

        let search = dump_dom(&format!("{base}/search?q=photo&arch=arm64"));
        let text = visible_text(&search);
        assert!(text.contains("1 result"), "{text}");
        assert!(search.contains("href=\"/r/apps/photo-viewer\""), "{search}");
        assert!(!text.contains("Base OS"));

        let page = dump_dom(&format!("{base}/r/apps/photo-viewer"));
        let text = visible_text(&page);
        assert!(text.contains("Photo Viewer"), "{text}");
        assert!(
            text.contains(&format!(
                "podman pull --tls-verify=false {registry_host}/apps/photo-viewer:latest"
            )),
            "{text}"
        );
        assert!(text.contains("linux/amd64, linux/arm64"), "{text}");

        let image = dump_dom(&format!("{base}/r/apps/photo-viewer/@{child}"));
        let text = visible_text(&image);
        assert!(
            text.contains("Ref app/org.example.PhotoViewer/x86_64/stable"),
            "{text}"
        );
        assert!(text.contains("Download size 7.0 MiB"), "{text}");
        assert!(text.contains("Platform linux/amd64"), "{text}");

        let apps = dump_dom(&format!("{base}/apps"));
        let text = visible_text(&apps);
        assert!(text.contains("1 Flatpak ref in this registry"), "{text}");
        // The remote is named as in README.md, not after the host (127.0.0.1).
        assert!(
            text.contains(&format!(
                "flatpak remote-add --user --if-not-exists --no-gpg-verify myregistry oci+http://{}/",
                base.trim_start_matches("http://")
            )),
            "{text}"
        );
        assert!(
            text.contains("flatpak install --user myregistry app/org.example.PhotoViewer//stable"),
            "{text}"
        );
        assert!(!text.contains("127-0-0-1"), "{text}");
        assert!(text.contains("Example Photo Team"), "{text}");
        assert!(
            text.contains("app/org.example.PhotoViewer//stable"),
            "{text}"
        );

        for (name, url) in [
            ("home", format!("{base}/")),
            ("repository", format!("{base}/r/apps/photo-viewer")),
            ("apps", format!("{base}/apps")),
            ("search", format!("{base}/search?q=photo&arch=arm64")),
            ("image", format!("{base}/r/apps/photo-viewer/@{child}")),
        ] {
            screenshot(
                &url,
                &artifacts.join(format!("{name}-desktop.png")),
                1280,
                900,
            );
            screenshot(&url, &artifacts.join(format!("{name}-phone.png")), 390, 844);
        }
    })
    .await;
    drop(server);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `GET url`: status, body and ETag.
async fn fetch(url: &str) -> (u16, String, Option<String>) {
    flagstate_core::registry::install_crypto_provider();
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, response.text().await.unwrap(), etag)
}

/// Polls `url` (up to 60 s) until its body contains `needle`; returns the body and ETag.
async fn wait_for_page(server: &Server, url: &str, needle: &str) -> (String, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body, etag) = fetch(url).await;
        if status == 200 && body.contains(needle) {
            return (body, etag);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = server.logs.try_iter().collect();
            panic!(
                "{url} never showed {needle:?}; last ({status}):\n{body}\nlog:\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `datetime` of the page's last-completed-scan `<time>` element.
fn last_scan_time(body: &str) -> Option<std::time::SystemTime> {
    let start = body.find("<time datetime=\"")? + "<time datetime=\"".len();
    let end = start + body[start..].find('"')?;
    humantime::parse_rfc3339(&body[start..end]).ok()
}

const SCAN_FAILED: &str = "The last scan of the registry failed: ";

/// The registry stops answering while `serve` runs: every page keeps showing what was
/// indexed, and says that the last scan failed, why, and when the last scan completed.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_stops_answering_is_shown_on_every_page() {
    let Some(mut registry) = TestRegistry::start_or_skip(TestRegistryOptions::default()).await
    else {
        return;
    };
    registry
        .pusher()
        .push_image(
            "tools/hello",
            Some("latest"),
            &ImageSpec::new("linux", "amd64").label("org.opencontainers.image.title", "Hello"),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::SystemTime::now();
    let server = Server::start(
        dir.path(),
        &registry.url(),
        "interval:\n  fetch_all: 1s\n",
        &[
            ("FLAGSTATE_REGISTRY__RETRY_BUDGET", "1s"),
            ("FLAGSTATE_REGISTRY__TIMEOUT", "1s"),
        ],
    );
    server.wait_ready().await;
    let base = server.base.clone();
    let (_, healthy, healthy_etag) = fetch(&format!("{base}/")).await;
    assert!(healthy.contains("href=\"/r/tools/hello\""), "{healthy}");
    assert!(!healthy.contains("scan-status"), "{healthy}");

    registry.kill();
    let (home, etag) = wait_for_page(&server, &format!("{base}/"), SCAN_FAILED).await;
    assert!(home.contains("registry unreachable"), "{home}");
    assert!(home.contains("role=\"alert\""), "{home}");
    let at = last_scan_time(&home).unwrap_or_else(|| panic!("no last scan time: {home}"));
    assert!(
        at + Duration::from_secs(1) >= started && at <= std::time::SystemTime::now(),
        "{home}"
    );
    // What was indexed stays listed, and the page is a new one (new ETag).
    assert!(home.contains("href=\"/r/tools/hello\""), "{home}");
    assert_ne!(etag, healthy_etag);
    for path in ["/apps", "/search?q=hello", "/r/tools/hello"] {
        let (status, body, _) = fetch(&format!("{base}{path}")).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(SCAN_FAILED), "{path}: {body}");
        assert!(last_scan_time(&body).is_some(), "{path}: {body}");
    }
}

/// `serve` against a port nobody listens on: the home page says the scan failed and
/// that no scan ever completed, instead of only "Nothing is indexed yet."
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_never_answered_is_shown_on_the_home_page() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(
        dir.path(),
        &format!("http://127.0.0.1:{closed}/"),
        "",
        &[("FLAGSTATE_REGISTRY__RETRY_BUDGET", "1s")],
    );
    let (home, _) = wait_for_page(&server, &format!("{}/", server.base), SCAN_FAILED).await;
    assert!(home.contains(&format!("127.0.0.1:{closed}")), "{home}");
    assert!(home.contains("Last completed scan: none yet."), "{home}");
    assert!(last_scan_time(&home).is_none(), "{home}");
    assert!(home.contains("Nothing is indexed yet."), "{home}");
}
