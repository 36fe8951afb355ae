//! End to end with the real clients: a real registry with Flatpak-style images, the real
//! `flagstate serve` binary indexing it and receiving its notifications, and the real
//! Flatpak and podman clients reading the index.
//!
//! One registry and one server serve the whole scenario, to keep the suite fast. Also
//! here: a read-only server sharing the writer's SQLite file, as Flatpak sees it.

mod common;

use common::clients::{Flatpak, Podman, Skopeo, available, success};
use common::images::{App, HELLO, WORLD};
use common::{EVENTS_TOKEN, Server, flatpak_refs, free_port, registry, repository_names};
use flagstate_core::testkit::TestRegistry;

/// What most tests here start from: a real registry holding [`HELLO`]`:latest`, and
/// `flagstate serve` indexing it into a SQLite file in `dir`. With `notify`, the
/// registry's notifications go to the server's `/events` (with [`EVENTS_TOKEN`]).
struct Setup {
    registry: TestRegistry,
    server: Server,
    db: String,
    dir: tempfile::TempDir,
}

async fn hello_served(notify: bool, env: &[(&str, &str)]) -> Option<Setup> {
    let port = free_port();
    let registry = registry(notify.then_some(port)).await?;
    registry
        .pusher()
        .push_image(&HELLO.repository(), Some("latest"), &HELLO.image())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db").to_str().unwrap().to_owned();
    let mut env = env.to_vec();
    if notify {
        env.push(("FLAGSTATE_EVENTS__TOKEN", EVENTS_TOKEN));
    }
    let server = Server::start(
        port,
        &["--registry", &registry.url(), "--database", &db],
        &env,
        dir.path(),
    )
    .await;
    Some(Setup {
        registry,
        server,
        db,
        dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flatpak_and_podman_read_the_index_and_see_pushes() {
    let Some(Setup {
        registry, server, ..
    }) = hello_served(true, &[]).await
    else {
        return;
    };
    let pusher = registry.pusher();

    // The first full scan indexed the app with every label Flatpak reads.
    let (index, first_etag) = server.flatpak_index().await;
    assert_eq!(repository_names(&index), [HELLO.repository()]);
    let image = &index["Results"][0]["Images"][0];
    assert_eq!(image["Labels"]["org.flatpak.ref"], HELLO.flatpak_ref());
    assert_eq!(image["OS"], "linux");
    assert_eq!(image["Architecture"], "amd64");
    assert_eq!(image["Tags"], serde_json::json!(["latest"]));
    assert!(!first_etag.is_empty(), "no ETag");

    if available("flatpak") {
        flatpak_client(&server, &[&HELLO]).await;
    }
    if available("podman") {
        podman_search(&server).await;
    }

    // A new application and a new version of the first arrive through notifications
    // only: the periodic rescan is an hour away.
    let hello_v2 = App {
        version: "1.1",
        ..HELLO
    };
    pusher
        .push_image(&WORLD.repository(), Some("latest"), &WORLD.image())
        .await
        .unwrap();
    let pushed = pusher
        .push_image(&HELLO.repository(), Some("latest"), &hello_v2.image())
        .await
        .unwrap();
    let (index, etag) = server
        .wait_for_index("the pushed app and version", |index| {
            let names = repository_names(index);
            names.contains(&WORLD.repository())
                && index["Results"][0]["Images"][0]["Digest"] == pushed.digest.as_str()
        })
        .await;
    assert_ne!(
        etag, first_etag,
        "ETag unchanged although the index changed"
    );
    assert_eq!(
        flatpak_refs(&index),
        [HELLO.flatpak_ref(), WORLD.flatpak_ref()]
    );
    assert_eq!(index["Results"][0]["Images"].as_array().unwrap().len(), 1);
    // Notifications delivered the change, not a second full scan.
    let applied = server.metric("flagstate_events_applied_total").await;
    assert!(applied.unwrap_or(0.0) >= 2.0, "events applied: {applied:?}");
    let scans = server.metric("flagstate_indexer_full_scans_total").await;
    assert_eq!(scans, Some(1.0));

    if available("flatpak") {
        flatpak_client(&server, &[&HELLO, &WORLD]).await;
    }
}

/// skopeo, a real registry client, copies the app into another repository and converts
/// it to Docker schema 2; the registry's notifications alone bring the copy into the
/// index, and every image the index names is fetched by skopeo at the digest it gives,
/// with the labels it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_are_indexed_and_indexed_digests_resolve() {
    if !available("skopeo") {
        return;
    }
    let Some(Setup {
        registry, server, ..
    }) = hello_served(true, &[]).await
    else {
        return;
    };
    server
        .wait_for_index("the pushed app", |i| {
            repository_names(i) == [HELLO.repository()]
        })
        .await;

    let skopeo = Skopeo::new();
    let at = |reference: &str| format!("docker://{}/{reference}", registry.address());
    skopeo
        .ok(&[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            &at(&format!("{}:latest", HELLO.repository())),
            &at("mirror/hello:latest"),
        ])
        .await;
    let (index, _) = server
        .wait_for_index("the copy skopeo pushed", |i| {
            repository_names(i).contains(&"mirror/hello".to_owned())
        })
        .await;
    assert_eq!(
        repository_names(&index),
        ["apps/org.example.hello", "mirror/hello"]
    );
    let copy = &index["Results"][1]["Images"][0];
    assert_eq!(
        copy["MediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(copy["Labels"]["org.flatpak.ref"], HELLO.flatpak_ref());

    for result in index["Results"].as_array().unwrap() {
        let name = result["Name"].as_str().unwrap();
        for image in result["Images"].as_array().unwrap() {
            let digest = image["Digest"].as_str().unwrap();
            let reference = at(&format!("{name}@{digest}"));
            let raw = skopeo
                .ok_bytes(&["inspect", "--tls-verify=false", "--raw", &reference])
                .await;
            let actual = {
                use sha2::Digest as _;
                format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw)))
            };
            assert_eq!(actual, digest, "{reference}");
            let config: serde_json::Value = serde_json::from_slice(
                &skopeo
                    .ok_bytes(&["inspect", "--tls-verify=false", "--config", &reference])
                    .await,
            )
            .unwrap();
            assert_eq!(config["config"]["Labels"], image["Labels"], "{reference}");
            assert_eq!(config["architecture"], image["Architecture"]);
        }
    }
}

/// Two processes on one SQLite file: the writer indexes, a read-only server started next
/// to it answers queries and follows the writer's changes as they are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_server_follows_a_writer_on_the_same_sqlite_file() {
    let Some(Setup {
        registry,
        server: writer,
        db,
        dir,
    }) = hello_served(true, &[]).await
    else {
        return;
    };
    let pusher = registry.pusher();
    let (index, _) = writer
        .wait_for_index("the first app on the writer", |i| {
            flatpak_refs(i) == [HELLO.flatpak_ref()]
        })
        .await;
    let replica = Server::start(
        free_port(),
        &[
            "--read-only",
            "--registry",
            &registry.url(),
            "--database",
            &db,
        ],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(replica.flatpak_index().await.0, index);

    pusher
        .push_image(&WORLD.repository(), Some("latest"), &WORLD.image())
        .await
        .unwrap();
    let both = [HELLO.flatpak_ref(), WORLD.flatpak_ref()];
    let (on_writer, writer_etag) = writer
        .wait_for_index("the pushed app on the writer", |i| flatpak_refs(i) == both)
        .await;
    let (on_replica, replica_etag) = replica
        .wait_for_index("the pushed app on the replica", |i| flatpak_refs(i) == both)
        .await;
    // Same bytes, so the same ETag from either process.
    assert_eq!(on_replica, on_writer);
    assert_eq!(replica_etag, writer_etag);
}

/// A fresh Flatpak installation adds the server as a remote and sees exactly `apps`.
async fn flatpak_client(server: &Server, apps: &[&App]) {
    let flatpak = Flatpak::new();
    let remote = format!("oci+{}", server.url);
    flatpak
        .ok(&["remote-add", "--user", "--no-gpg-verify", "t", &remote])
        .await;

    let listed = flatpak
        .ok(&["remote-ls", "--user", "--columns=application,ref", "t"])
        .await;
    for app in apps {
        assert!(
            listed.contains(app.id),
            "remote-ls does not list {}:\n{listed}",
            app.id
        );
    }
    assert_eq!(
        listed.lines().filter(|l| !l.trim().is_empty()).count(),
        apps.len(),
        "remote-ls lists something else:\n{listed}"
    );

    flatpak.ok(&["update", "--user", "--appstream", "t"]).await;
    let appstream = flatpak.user_dir().join("appstream/t/x86_64");
    for app in apps {
        let icon = appstream.join(format!("icons/64x64/{}.png", app.id));
        assert!(
            icon.is_file(),
            "flatpak did not extract the icon {}",
            icon.display()
        );
    }
    for app in apps {
        // A word of the summary proves the AppStream data was read. Flatpak 1.14 matches
        // lowercased tokens against the term as typed, so the term is lowercase.
        let word = app
            .summary
            .split_whitespace()
            .next()
            .unwrap_or(app.name)
            .to_lowercase();
        let word = word.as_str();
        let found = flatpak.ok(&["search", "--user", word]).await;
        assert!(
            found.contains(app.id),
            "flatpak search {word} does not find {}:\n{found}",
            app.id
        );
    }
    let missing = flatpak
        .run(&["search", "--user", "nosuchapplication"])
        .await;
    let missing_out = String::from_utf8_lossy(&missing.stdout);
    assert!(
        !apps.iter().any(|a| missing_out.contains(a.id)),
        "search for a missing term found an app:\n{missing_out}"
    );
}

/// `podman search HOST/term` finds the repository by its name.
async fn podman_search(server: &Server) {
    let podman = Podman::new();
    let host = server.url.trim_start_matches("http://");
    let term = format!("{host}/hello");
    let output = podman.run(&["search", "--tls-verify=false", &term]).await;
    let listed = success(&output, "podman search");
    assert!(
        listed.contains(&format!("{host}/{}", HELLO.repository())),
        "podman search does not list the repository:\n{listed}"
    );
    let output = podman
        .run(&[
            "search",
            "--tls-verify=false",
            &format!("{host}/nosuchthing"),
        ])
        .await;
    let listed = success(&output, "podman search (no match)");
    assert!(
        !listed.contains(&HELLO.repository()),
        "podman search lists a repository for a term that matches nothing:\n{listed}"
    );
}

/// With `icons.dir` set, the server moves `data:` icons out of its answers into files it
/// serves under `/icons/`, and the real Flatpak client fetches them from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flatpak_fetches_icons_the_server_extracted() {
    let icons = tempfile::tempdir().unwrap();
    let Some(Setup { server, .. }) = hello_served(
        false,
        &[("FLAGSTATE_ICONS__DIR", icons.path().to_str().unwrap())],
    )
    .await
    else {
        return;
    };

    let (index, _) = server.flatpak_index().await;
    let icon_url = index["Results"][0]["Images"][0]["Labels"]["org.freedesktop.appstream.icon-64"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = common::images::png(64);
    let hex = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&expected))
    };
    assert_eq!(icon_url, format!("/icons/{}/{}.png", &hex[..2], &hex[2..]));
    let answer = server.get(&icon_url).await;
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(answer.bytes().await.unwrap().as_ref(), expected.as_slice());

    if available("flatpak") {
        // flatpak_client checks that `update --appstream` stored the icon: here it can
        // only have come from the server's /icons/ URL.
        flatpak_client(&server, &[&HELLO]).await;
    }
}

/// Icon files the server wrote for answers that no longer exist are deleted on the
/// garbage-collection interval; the current ones stay served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_deletes_icons_no_answer_references() {
    let icons_dir = tempfile::tempdir().unwrap();
    let icons = icons_dir.path().to_owned();
    let Some(Setup {
        registry, server, ..
    }) = hello_served(
        false,
        &[
            ("FLAGSTATE_ICONS__DIR", icons.to_str().unwrap()),
            ("FLAGSTATE_INTERVAL__FETCH_ALL", "1s"),
            ("FLAGSTATE_INTERVAL__GARBAGE_COLLECT", "1s"),
        ],
    )
    .await
    else {
        return;
    };
    let pusher = registry.pusher();
    let icon_of = |index: &serde_json::Value| {
        index["Results"][0]["Images"][0]["Labels"]["org.freedesktop.appstream.icon-64"]
            .as_str()
            .map(str::to_owned)
    };
    let (index, _) = server
        .wait_for_index("the first icon", |i| icon_of(i).is_some())
        .await;
    let old = icon_of(&index).unwrap();
    assert_eq!(server.get(&old).await.status(), 200);

    // A new version with another icon replaces the tag; the periodic re-scan sees it.
    let new_image = HELLO.image().label(
        "org.freedesktop.appstream.icon-64",
        &common::images::icon_data_uri(128),
    );
    pusher
        .push_image(&HELLO.repository(), Some("latest"), &new_image)
        .await
        .unwrap();
    let (index, _) = server
        .wait_for_index("the new icon", |i| {
            icon_of(i).is_some_and(|icon| icon != old)
        })
        .await;
    let new = icon_of(&index).unwrap();
    let file = |uri: &str| icons.join(uri.trim_start_matches("/icons/"));
    assert!(file(&new).is_file());

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while file(&old).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the unreferenced icon was never deleted; server log:\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(server.get(&old).await.status(), 404);
    assert_eq!(server.get(&new).await.status(), 200);
    assert!(file(&new).is_file());
}
