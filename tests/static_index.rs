//! End to end for `flagstate index` (static index files, the regindexer model) against a
//! real registry: golden output, untouched files on an unchanged re-run, only the
//! affected file rewritten after a push, icon extraction with deduplication and removal
//! of stale icons, configuration errors, an unreachable registry, and `--watch` following
//! the registry's notifications.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::images::{HELLO, WORLD, icon_data_uri, png};
use common::{EVENTS_TOKEN, binary, free_port, hello_registry, registry, run, text};
use flagstate_core::testkit::{ImageSpec, TestRegistry};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const ICON_64: &str = "org.freedesktop.appstream.icon-64";
const ICON_128: &str = "org.freedesktop.appstream.icon-128";

fn icon_relative(bytes: &[u8]) -> String {
    let hex = hex::encode(Sha256::digest(bytes));
    format!("{}/{}.png", &hex[..2], &hex[2..])
}

fn config(dir: &Path, registry: &TestRegistry) -> String {
    let yaml = format!(
        r#"
icons_dir: icons
icons_uri: /icons/
indexes:
    flatpak_amd64:
        output: out/flatpak-amd64.json
        registry: {url}
        registry_public: https://registry.example.org
        tags: ['latest', 'latest-*']
        required_labels: ['org.flatpak.ref']
        architectures: ['amd64']
        extract_icons: true
        gzip: true
    all:
        output: out/all.json
        registry: {url}
        registry_public: /
        tags: ['latest']
        skip_flatpak_labels: true
"#,
        url = registry.url()
    );
    let path = dir.join("regindexer.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn index(config: &str) -> std::process::Output {
    run(&["--config", config, "index"])
}

#[tokio::test(flavor = "multi_thread")]
async fn static_indexes_golden_unchanged_rerun_and_icons() {
    let Some(registry) = registry(None).await else {
        return;
    };
    let pusher = registry.pusher();
    // Hello carries the same icon in both labels (one file), World a different one.
    let hello_image = HELLO.image().label(ICON_128, &icon_data_uri(64));
    let world_image = WORLD.image().label(ICON_64, &icon_data_uri(32));
    let hello = pusher
        .push_image(&HELLO.repository(), Some("latest"), &hello_image)
        .await
        .unwrap();
    let world = pusher
        .push_image(&WORLD.repository(), Some("latest"), &world_image)
        .await
        .unwrap();
    let arm = ImageSpec::new("linux", "arm64")
        .label("org.flatpak.ref", "app/org.example.Arm/aarch64/stable");
    pusher
        .push_image("apps/arm-only", Some("latest"), &arm)
        .await
        .unwrap();
    let base = ImageSpec::new("linux", "amd64").label("name", "Base OS");
    let base_v1 = pusher
        .push_image("base/os", Some("latest"), &base)
        .await
        .unwrap();
    pusher
        .push_image(
            "base/os",
            Some("devel"),
            &base.clone().label("version", "2"),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &registry);
    let out = index(&cfg);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("index flatpak_amd64: written") && stdout.contains("index all: written"),
        "{stdout}"
    );

    // Golden: the Flatpak index holds exactly the two amd64 apps, icons rewritten.
    let flatpak_path = dir.path().join("out/flatpak-amd64.json");
    let icon_hello = icon_relative(&png(64));
    let icon_world = icon_relative(&png(32));
    let app = |pushed: &flagstate_core::testkit::PushedImage,
               image: &ImageSpec,
               icons: &[(&str, &str)]| {
        let mut labels = serde_json::to_value(&image.labels).unwrap();
        for (key, relative) in icons {
            labels[*key] = json!(format!("/icons/{relative}"));
        }
        json!({
            "Digest": pushed.digest.to_string(),
            "MediaType": pushed.media_type,
            "OS": "linux",
            "Architecture": "amd64",
            "Labels": labels,
            "Tags": ["latest"],
        })
    };
    let expected = json!({
        "Registry": "https://registry.example.org",
        "Results": [
            {"Name": HELLO.repository(), "Images": [app(&hello, &hello_image, &[(ICON_64, &icon_hello), (ICON_128, &icon_hello)])], "Lists": []},
            {"Name": WORLD.repository(), "Images": [app(&world, &world_image, &[(ICON_64, &icon_world)])], "Lists": []},
        ]
    });
    assert_eq!(read_json(&flatpak_path), expected);
    let gz = std::fs::read(dir.path().join("out/flatpak-amd64.json.gz")).unwrap();
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped).unwrap();
    assert_eq!(
        unzipped,
        std::fs::read(&flatpak_path).unwrap(),
        ".gz holds the same bytes"
    );
    assert_eq!(
        std::fs::read(dir.path().join("icons").join(&icon_hello)).unwrap(),
        png(64)
    );
    assert_eq!(
        std::fs::read(dir.path().join("icons").join(&icon_world)).unwrap(),
        png(32)
    );

    // The "all" index: every `latest`, Flatpak keys dropped, other labels kept.
    let all_path = dir.path().join("out/all.json");
    let all = read_json(&all_path);
    let names: Vec<&str> = all["Results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "apps/arm-only",
            HELLO.repository().as_str(),
            WORLD.repository().as_str(),
            "base/os"
        ]
    );
    let base_entry = &all["Results"][3]["Images"][0];
    assert_eq!(base_entry["Digest"], base_v1.digest.to_string());
    assert_eq!(base_entry["Tags"], json!(["latest"]));
    assert!(
        all["Results"][1]["Images"][0].get("Labels").is_none(),
        "only Flatpak labels: dropped whole"
    );

    // Unchanged registry: nothing is rewritten, mtimes stay.
    let before = (mtime(&flatpak_path), mtime(&all_path));
    std::thread::sleep(Duration::from_millis(50));
    let out = index(&cfg);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("index flatpak_amd64: unchanged"),
        "{out:?}"
    );
    assert!(
        text(&out.stdout).contains("index all: unchanged"),
        "{out:?}"
    );
    assert_eq!((mtime(&flatpak_path), mtime(&all_path)), before);

    // A push that only the "all" index sees rewrites only that file.
    let base_v2 = pusher
        .push_image(
            "base/os",
            Some("latest"),
            &base.clone().label("version", "3"),
        )
        .await
        .unwrap();
    let out = index(&cfg);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        mtime(&flatpak_path),
        before.0,
        "the Flatpak index did not change"
    );
    assert_ne!(mtime(&all_path), before.1);
    assert_eq!(
        read_json(&all_path)["Results"][3]["Images"][0]["Digest"],
        base_v2.digest.to_string()
    );

    // World's new version uses Hello's icon: World's old icon is no longer referenced.
    let world_v2 = WORLD.image();
    pusher
        .push_image(&WORLD.repository(), Some("latest"), &world_v2)
        .await
        .unwrap();
    let out = index(&cfg);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("icons: 1 unreferenced removed"),
        "{out:?}"
    );
    assert!(!dir.path().join("icons").join(&icon_world).exists());
    assert!(dir.path().join("icons").join(&icon_hello).exists());

    // A broken icon is left out with a warning naming the image; the run succeeds.
    let broken = HELLO.image().label(ICON_64, "data:image/png;base64,%%%");
    let broken_pushed = pusher
        .push_image(&HELLO.repository(), Some("latest"), &broken)
        .await
        .unwrap();
    let out = index(&cfg);
    assert!(out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&broken_pushed.digest.to_string()) && stderr.contains("invalid base64"),
        "{stderr}"
    );
    let hello_entry = &read_json(&flatpak_path)["Results"][0]["Images"][0];
    assert!(hello_entry["Labels"].get(ICON_64).is_none());

    // The registry going away leaves every file as it was, and says so (exit 1).
    let before = std::fs::read(&flatpak_path).unwrap();
    drop(registry);
    let out = index(&cfg);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("left as they were"), "{out:?}");
    assert_eq!(std::fs::read(&flatpak_path).unwrap(), before);
}

/// Runs `flagstate --config CONFIG index` under `umask`.
fn index_with_umask(config: &str, umask: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", "umask \"$0\"; shift; exec \"$@\""])
        .args([umask, "sh", binary(), "--config", config, "index"])
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Files `index` publishes (JSON, its gzip, icons) get the mode the umask gives any new
/// file, so a web server running as another user can read them: 0644 under 022 (read
/// back as `nobody` when the test runs as root), 0600 under 077.
#[tokio::test(flavor = "multi_thread")]
async fn published_files_follow_the_umask_and_other_users_can_read_them() {
    use std::os::unix::fs::PermissionsExt;
    let Some(registry) = registry(None).await else {
        return;
    };
    let hello_image = HELLO.image().label(ICON_128, &icon_data_uri(64));
    registry
        .pusher()
        .push_image(&HELLO.repository(), Some("latest"), &hello_image)
        .await
        .unwrap();
    for (umask, expected) in [("022", 0o644), ("077", 0o600)] {
        let dir = tempfile::tempdir().unwrap();
        // A web root others may enter (tempdir makes it 0700).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = config(dir.path(), &registry);
        let out = index_with_umask(&cfg, umask);
        assert!(out.status.success(), "{out:?}");
        let published = [
            dir.path().join("out/flatpak-amd64.json"),
            dir.path().join("out/flatpak-amd64.json.gz"),
            dir.path().join("out/all.json"),
            dir.path().join("icons").join(icon_relative(&png(64))),
        ];
        for path in &published {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode,
                expected,
                "umask {umask}: {} is {mode:o}",
                path.display()
            );
        }
        let as_root = text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0";
        if umask == "022" && as_root && Path::new("/usr/sbin/runuser").exists() {
            for path in &published {
                let read = Command::new("/usr/sbin/runuser")
                    .args(["-u", "nobody", "--", "cat"])
                    .arg(path)
                    .stdout(Stdio::null())
                    .output()
                    .unwrap();
                assert!(
                    read.status.success(),
                    "nobody reads {}: {read:?}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn bad_configurations_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "indexes:\n  a:\n    registry: http://127.0.0.1:1\n",
            "indexes.a.output",
        ),
        (
            "indexes:\n  a:\n    output: a.json\n    registry: http://127.0.0.1:1\n    extract_icons: true\n",
            "indexes.a.extract_icons",
        ),
        (
            "indexes:\n  a:\n    output: a.json\n    registry: http://127.0.0.1:1\n    tag: [latest]\n",
            "indexes.a.tag",
        ),
        (
            "indexes:\n  a:\n    output: a.json\n    registry: 'not a url'\n",
            "indexes.a.registry",
        ),
    ];
    for (yaml, key) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = run(&["--config", path.to_str().unwrap(), "index"]);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {out:?}");
        assert!(
            text(&out.stderr).contains(key),
            "{yaml}: {}",
            text(&out.stderr)
        );
    }
    let out = run(&["index"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("--config"), "{out:?}");
    let out = run(&["--config", "/nonexistent/regindexer.yaml", "index"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_mode_rewrites_files_after_notifications() {
    let port = free_port();
    let Some(registry) = hello_registry(Some(port)).await else {
        return;
    };
    let pusher = registry.pusher();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &registry);
    let log = std::fs::File::create(dir.path().join("watch.log")).unwrap();
    let child = Command::new(binary())
        .args([
            "--config",
            &cfg,
            "index",
            "--watch",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--events-token", EVENTS_TOKEN, "--rescan-interval", "0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut watcher = Watcher(child);
    let flatpak_path = dir.path().join("out/flatpak-amd64.json");
    let log_text = || std::fs::read_to_string(dir.path().join("watch.log")).unwrap_or_default();

    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(
                Instant::now() < deadline,
                "{what} within 30 s:\n{}",
                log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("first write", &|| log_text().contains("watching"));
    assert_eq!(
        read_json(&flatpak_path)["Results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Periodic re-scans are off: only the registry's notification can bring World in.
    pusher
        .push_image(&WORLD.repository(), Some("latest"), &WORLD.image())
        .await
        .unwrap();
    wait_for("World in the file after its notification", &|| {
        read_json(&flatpak_path)["Results"]
            .as_array()
            .is_some_and(|r| r.len() == 2)
    });
    // The rewrite is logged, naming the index and its file.
    wait_for("the rewrite in the log", &|| {
        log_text().lines().any(|l| {
            l.contains("index file rewritten")
                && l.contains("index=flatpak_amd64")
                && l.contains("out/flatpak-amd64.json")
        })
    });

    let sent = Command::new("kill")
        .args(["-TERM", &watcher.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = watcher.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after SIGTERM:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", log_text());
}
