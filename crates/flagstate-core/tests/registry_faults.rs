//! Faults: retries, time limits, a registry killed mid-scan, and authentication (HTTP
//! basic against the real registry's htpasswd; the bearer-token flow against an
//! in-test token server in front of the real registry, because the registry's own
//! `auth: token` needs certificates).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flagstate_core::indexer::{Indexer, IndexerError, NoProgress};
use flagstate_core::registry::{RegistryClient, RegistryError, RetryPolicy};
use flagstate_core::testkit::{ImageSpec, TestRegistry, TestRegistryOptions};
use flagstate_core::{Digest, MemoryStore, Store};

async fn seeded(repos: usize) -> Option<TestRegistry> {
    let registry = registry().await?;
    let pusher = registry.pusher();
    for r in 0..repos {
        pusher
            .push_image(
                &format!("f/r{r:02}"),
                Some("v1"),
                &ImageSpec::new("linux", "amd64").label("r", &r.to_string()),
            )
            .await
            .unwrap();
    }
    Some(registry)
}

#[tokio::test]
async fn transient_5xx_are_retried() {
    let Some(registry) = seeded(2).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    proxy.add_rule(
        "/tags/list",
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        Some(2),
    );
    proxy.add_rule(
        "/manifests/",
        Fault::Status {
            code: 502,
            retry_after: None,
        },
        Some(1),
    );
    proxy.add_rule(
        "/blobs/",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        Some(1),
    );
    let (indexer, store) = indexer_for(client_config(&proxy.url));
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.repositories_failed);
    assert_eq!(store.repositories().await.unwrap().len(), 2);
    assert!(
        indexer.client().stats().retries >= 4,
        "{:?}",
        indexer.client().stats()
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let Some(registry) = seeded(1).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    proxy.add_rule(
        "/v2/_catalog",
        Fault::Status {
            code: 429,
            retry_after: Some(1),
        },
        Some(1),
    );
    let mut cfg = client_config(&proxy.url);
    cfg.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_secs(5),
    };
    let (indexer, _) = indexer_for(cfg);
    let started = Instant::now();
    indexer.full_scan(&NoProgress).await.unwrap();
    // Without honouring Retry-After the retry would come after ~1 ms.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.count("GET /v2/_catalog"), 2);
}

#[tokio::test]
async fn persistent_failures_give_clear_errors_and_keep_the_index() {
    let Some(registry) = seeded(3).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    let (indexer, store) = indexer_for(client_config(&proxy.url));
    indexer.full_scan(&NoProgress).await.unwrap();
    let before = store
        .repository_tags(&"f/r01".parse().unwrap())
        .await
        .unwrap()
        .unwrap();

    // A new tag whose manifest cannot be read: the repository fails, the others don't.
    registry
        .pusher()
        .push_image("f/r01", Some("v2"), &ImageSpec::new("linux", "arm64"))
        .await
        .unwrap();
    proxy.add_rule(
        "/v2/f/r01/manifests/sha256:",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        None,
    );
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(report.repositories_scanned, 2);
    assert_eq!(report.repositories_failed.len(), 1);
    let flagstate_core::indexer::RepositoryFailure {
        repository: name,
        error,
    } = &report.repositories_failed[0];
    let error = error.to_string();
    assert_eq!(name, "f/r01");
    assert!(
        error.contains("HTTP 503")
            && error.contains("/v2/f/r01/manifests/sha256:")
            && error.contains("INJECTED"),
        "{error}"
    );
    assert_eq!(
        store
            .repository_tags(&"f/r01".parse().unwrap())
            .await
            .unwrap()
            .unwrap(),
        before,
        "left as it was"
    );
    let status = indexer.status();
    assert!(
        status
            .last_scan_error
            .unwrap()
            .contains("1 of 3 repositories failed")
    );

    match indexer.scan_repository(&"f/r01".parse().unwrap()).await {
        Err(IndexerError::Repository { repository, source }) => {
            assert_eq!(repository, "f/r01");
            assert!(
                matches!(
                    *source,
                    IndexerError::Registry(RegistryError::Status { status: 503, .. })
                ),
                "{source:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn slow_registry_times_out() {
    let Some(registry) = seeded(1).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    proxy.add_rule("/v2/_catalog", Fault::Delay(Duration::from_secs(3)), None);
    let mut cfg = client_config(&proxy.url);
    cfg.timeout = Duration::from_millis(300);
    cfg.retry = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let client = RegistryClient::new(cfg).unwrap();
    // While the registry answers other requests, one that keeps timing out is that
    // request's failure...
    let pings = async {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            client.ping().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (catalog, ()) = tokio::join!(client.catalog(), pings);
    match catalog {
        Err(RegistryError::Network {
            url,
            attempts,
            reason,
        }) => {
            assert!(url.contains("/v2/_catalog"), "{url}");
            assert_eq!(attempts, 2);
            assert!(
                reason.to_lowercase().contains("timed out") || reason.contains("timeout"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // ... while one that times out with no answer from the registry in between means
    // the registry is unreachable.
    match client.catalog().await {
        Err(RegistryError::Unreachable {
            url,
            failures,
            reason,
            ..
        }) => {
            assert!(url.contains("/v2/_catalog"), "{url}");
            assert_eq!(failures, 2);
            assert!(
                reason.to_lowercase().contains("timed out") || reason.contains("timeout"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn registry_killed_mid_scan() {
    let Some(mut registry) = seeded(30).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    let mut cfg = client_config(&proxy.url);
    cfg.max_concurrency = 2;
    let (indexer, store) = indexer_for(cfg);
    indexer.full_scan(&NoProgress).await.unwrap();
    let indexed = store.repositories().await.unwrap();
    assert_eq!(indexed.len(), 30);

    // New content everywhere, and a slow proxy, so the next scan takes a while.
    let pusher = registry.pusher();
    for r in 0..30 {
        pusher
            .push_image(
                &format!("f/r{r:02}"),
                Some("v2"),
                &ImageSpec::new("linux", "arm64").label("r", &r.to_string()),
            )
            .await
            .unwrap();
    }
    proxy.add_rule("/v2/f/", Fault::Delay(Duration::from_millis(30)), None);
    let scan = {
        let indexer = indexer.clone();
        tokio::spawn(async move { indexer.full_scan(&NoProgress).await })
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            let s = indexer.status();
            s.scanning && s.repositories_total == 30 && s.repositories_done >= 5
        })
        .await
    );
    registry.kill();
    // The scan stops with one error once the registry is unreachable, instead of
    // retrying and reporting every remaining repository.
    let err = scan.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            IndexerError::Registry(RegistryError::Unreachable { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("registry unreachable"), "{err}");
    let status = indexer.status();
    assert!(
        status.repositories_done < 30,
        "repositories after the failure are not started: {status:?}"
    );
    assert!(
        status
            .last_scan_error
            .is_some_and(|e| e.contains("registry unreachable"))
    );
    // Nothing already indexed is lost.
    for name in &indexed {
        let tags = store.repository_tags(name).await.unwrap().unwrap();
        assert!(tags.contains_key("v1"), "{name}: {tags:?}");
    }
}

#[tokio::test]
async fn basic_auth_with_htpasswd() {
    let Some(registry) = TestRegistry::start_or_skip(TestRegistryOptions {
        basic_auth: Some(("alice".into(), "wonderland".into())),
        ..TestRegistryOptions::default()
    })
    .await
    else {
        return;
    };
    registry
        .pusher()
        .push_image("secret/app", Some("v1"), &ImageSpec::new("linux", "amd64"))
        .await
        .unwrap();

    let mut cfg = client_config(&registry.url());
    cfg.credentials = Some(basic("alice", "wonderland"));
    let (indexer, store) = indexer_for(cfg);
    indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(store.repositories().await.unwrap(), ["secret/app"]);

    // Anonymous: the catalog is refused, and so is the repository.
    let (anonymous, _) = indexer_for(client_config(&registry.url()));
    let err = anonymous.full_scan(&NoProgress).await.unwrap_err();
    assert!(
        matches!(
            err,
            IndexerError::NoRepositories(RegistryError::CatalogUnavailable { status: 401, .. })
        ),
        "{err:?}"
    );
    let err = anonymous
        .scan_repository(&"secret/app".parse().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("401") && err.contains("/v2/secret/app/tags/list"),
        "{err}"
    );

    // Wrong password: refused, and the password appears nowhere.
    let mut cfg = client_config(&registry.url());
    cfg.credentials = Some(basic("alice", "looking-glass"));
    let (wrong, _) = indexer_for(cfg);
    let err = wrong
        .scan_repository(&"secret/app".parse().unwrap())
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?} {:?}", wrong.client());
    assert!(
        shown.contains("401") && !shown.contains("looking-glass"),
        "{shown}"
    );
}

#[tokio::test]
async fn bearer_token_flow() {
    let Some(registry) = seeded(3).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    proxy.require_tokens("bob", "builder", 300);

    let mut cfg = client_config(&proxy.url);
    cfg.credentials = Some(basic("bob", "builder"));
    let (indexer, store) = indexer_for(cfg);
    indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(store.repositories().await.unwrap().len(), 3);
    // One token for the catalog and one per repository, then cached.
    assert_eq!(proxy.tokens_issued(), 4);
    assert_eq!(indexer.client().stats().token_requests, 4);
    indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(proxy.tokens_issued(), 4, "tokens are cached per scope");

    // Tokens revoked: a 401 makes the client authenticate again and succeed.
    proxy.revoke_tokens();
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert!(report.is_complete(), "{:?}", report.repositories_failed);
    assert_eq!(proxy.tokens_issued(), 8);

    // Bad credentials at the token endpoint: a clear error naming the realm.
    let mut cfg = client_config(&proxy.url);
    cfg.credentials = Some(basic("bob", "wrecker"));
    let (wrong, _) = indexer_for(cfg);
    let err = wrong.full_scan(&NoProgress).await.unwrap_err().to_string();
    assert!(
        err.contains("token request to") && err.contains("/token") && err.contains("401"),
        "{err}"
    );
    assert!(!err.contains("wrecker"));
}

#[tokio::test]
async fn expired_tokens_are_renewed() {
    let Some(registry) = seeded(1).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    proxy.require_tokens("bob", "builder", 1);
    let mut cfg = client_config(&proxy.url);
    cfg.credentials = Some(basic("bob", "builder"));
    let (indexer, _) = indexer_for(cfg);
    indexer.full_scan(&NoProgress).await.unwrap();
    let issued = proxy.tokens_issued();
    let challenges = proxy.count("GET /v2/f/r00/tags/list");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(proxy.tokens_issued(), issued * 2, "expired tokens replaced");
    // Renewed before use (the client knows the expiry): no extra 401 round trip.
    assert_eq!(proxy.count("GET /v2/f/r00/tags/list"), challenges + 1);
}

#[tokio::test]
async fn content_not_matching_its_digest_is_rejected() {
    let Some(registry) = seeded(1).await else {
        return;
    };
    let client = RegistryClient::new(client_config(&registry.url())).unwrap();
    let (digest, media_type) = client
        .head_manifest(&"f/r00".parse().unwrap(), "v1")
        .await
        .unwrap()
        .unwrap();
    let good = client
        .get_manifest(&"f/r00".parse().unwrap(), digest.as_str())
        .await
        .unwrap();
    assert_eq!((&good.digest, &good.media_type), (&digest, &media_type));

    // A registry (or something in between) serving other bytes than it announces.
    let proxy = Proxy::start(&registry.address()).await;
    let forged = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#.to_vec();
    proxy.add_rule(
        &format!("/manifests/{digest}"),
        Fault::Serve {
            headers: vec![("Content-Type", media_type.clone())],
            body: forged.clone(),
        },
        None,
    );
    proxy.add_rule(
        "/manifests/v1",
        Fault::Serve {
            headers: vec![
                ("Content-Type", media_type.clone()),
                ("Docker-Content-Digest", digest.to_string()),
            ],
            body: forged.clone(),
        },
        None,
    );
    let client = RegistryClient::new(client_config(&proxy.url)).unwrap();
    for reference in [digest.as_str(), "v1"] {
        match client
            .get_manifest(&"f/r00".parse().unwrap(), reference)
            .await
        {
            Err(RegistryError::DigestMismatch {
                expected,
                actual,
                url,
            }) => {
                assert_eq!(expected, digest);
                assert_eq!(actual, Digest::sha256_of(&forged));
                assert!(url.contains("/v2/f/r00/manifests/"), "{url}");
            }
            other => panic!("{reference}: {other:?}"),
        }
    }
    // The indexer reports the repository as failed instead of storing forged content.
    let (indexer, store) = indexer_for(client_config(&proxy.url));
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(report.repositories_failed.len(), 1);
    assert!(
        report.repositories_failed[0]
            .error
            .to_string()
            .contains("does not match"),
        "{:?}",
        report.repositories_failed
    );
    assert!(
        store
            .repository_tags(&"f/r00".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn registry_ignoring_conditional_requests_is_checked_with_head() {
    let Some(registry) = seeded(3).await else {
        return;
    };
    // In front of the real registry, a proxy that drops `If-None-Match`: the registry
    // then answers every check with the full, unchanged manifest.
    let proxy = Proxy::start(&registry.address()).await;
    proxy.drop_header("if-none-match");
    // One request at a time, so exactly one check runs before the client has learnt.
    let client = RegistryClient::new(client_config(&proxy.url)).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let indexer = Indexer::new(client, store.clone(), indexer_config().with_concurrency(1));
    assert!(indexer.full_scan(&NoProgress).await.unwrap().is_complete());
    let generation = store.generation().await.unwrap();

    let before = indexer.client().stats();
    let rescan = indexer.full_scan(&NoProgress).await.unwrap();
    let after = indexer.client().stats();
    assert!(rescan.is_complete());
    assert_eq!(rescan.manifests_fetched, 0);
    assert_eq!(
        after.manifest_checks - before.manifest_checks,
        1,
        "one conditional GET shows the registry ignores the condition"
    );
    assert_eq!(after.manifest_not_modified, before.manifest_not_modified);
    assert_eq!(
        after.manifest_heads - before.manifest_heads,
        2,
        "the other tags"
    );
    assert_eq!(after.blob_gets, before.blob_gets);
    assert_eq!(store.generation().await.unwrap(), generation);

    // Moves are still seen, through HEAD and a GET by digest.
    let moved = registry
        .pusher()
        .push_image(
            "f/r01",
            Some("v1"),
            &ImageSpec::new("linux", "arm64").label("moved", "yes"),
        )
        .await
        .unwrap();
    let before = indexer.client().stats();
    assert!(indexer.full_scan(&NoProgress).await.unwrap().is_complete());
    let after = indexer.client().stats();
    assert_eq!(after.manifest_checks, before.manifest_checks);
    assert_eq!(after.manifest_heads - before.manifest_heads, 3);
    assert_eq!(after.manifest_gets - before.manifest_gets, 1);
    let tags = store
        .repository_tags(&"f/r01".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tags["v1"], moved.digest);
}

#[tokio::test]
async fn events_the_registry_can_never_serve_are_skipped_not_refused() {
    use flagstate_core::events::{EventAction, RegistryEvent};

    let Some(registry) = seeded(2).await else {
        return;
    };
    let client = RegistryClient::new(client_config(&registry.url())).unwrap();
    let (bad, media_type) = client
        .head_manifest(&"f/r00".parse().unwrap(), "v1")
        .await
        .unwrap()
        .unwrap();
    let (good, _) = client
        .head_manifest(&"f/r01".parse().unwrap(), "v1")
        .await
        .unwrap()
        .unwrap();
    let push = |id: &str, repository: &str, digest: &Digest| RegistryEvent {
        id: id.into(),
        action: EventAction::Push,
        repository: repository.into(),
        tag: Some("v1".into()),
        digest: Some(digest.clone()),
        media_type: Some(media_type.clone()),
        timestamp: None,
    };
    // Storage serving other bytes than the digest names: no retry can fix that.
    let proxy = Proxy::start(&registry.address()).await;
    proxy.add_rule(
        &format!("/manifests/{bad}"),
        Fault::Serve {
            headers: vec![("Content-Type", media_type.clone())],
            body: br#"{"schemaVersion":2,"config":{},"layers":[]}"#.to_vec(),
        },
        None,
    );
    let (indexer, store) = indexer_for(client_config(&proxy.url));
    let outcome = indexer
        .apply_events(&[push("bad", "f/r00", &bad), push("good", "f/r01", &good)])
        .await
        .expect("a permanent failure does not refuse the delivery");
    assert_eq!((outcome.applied, outcome.failed), (1, 1));
    assert_eq!(outcome.reconcile_scheduled, ["f/r00", "f/r01"]);
    assert!(
        store
            .repository_tags(&"f/r00".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .repository_tags(&"f/r01".parse().unwrap())
            .await
            .unwrap()
            .unwrap()["v1"],
        good
    );
    assert_eq!(indexer.status().events_failed, 1);

    // A registry failing with 5xx may recover: the delivery is refused, to be retried.
    proxy.clear_rules();
    proxy.add_rule(
        &format!("/manifests/{bad}"),
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        None,
    );
    let refused = indexer
        .apply_events(&[push("bad-again", "f/r00", &bad)])
        .await;
    match refused {
        Err(e @ IndexerError::Event { .. }) => assert!(!e.is_permanent(), "{e}"),
        other => panic!("expected a transient failure, got {other:?}"),
    }
    // Once the registry serves it, the redelivery applies.
    proxy.clear_rules();
    let outcome = indexer
        .apply_events(&[push("bad-again", "f/r00", &bad)])
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.failed), (1, 0));
}

#[tokio::test]
async fn an_unusable_manifest_costs_its_tag_not_the_repository() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let spec = |n: &str| ImageSpec::new("linux", "amd64").label("n", n);
    let v1 = pusher
        .push_image("mixed/app", Some("v1"), &spec("1"))
        .await
        .unwrap();
    let v2 = pusher
        .push_image("mixed/app", Some("v2"), &spec("2"))
        .await
        .unwrap();
    let proxy = Proxy::start(&registry.address()).await;
    let (indexer, store) = indexer_for(client_config(&proxy.url));
    assert!(indexer.full_scan(&NoProgress).await.unwrap().is_complete());

    // v2 moves to a manifest the registry (as seen through the proxy) serves with other
    // bytes than its digest; v3 is new and points at another such manifest; v4 is new
    // and fine.
    let moved = pusher
        .push_image("mixed/app", Some("v2"), &spec("2b"))
        .await
        .unwrap();
    let broken = pusher
        .push_image("mixed/app", Some("v3"), &spec("3"))
        .await
        .unwrap();
    let fine = pusher
        .push_image("mixed/app", Some("v4"), &spec("4"))
        .await
        .unwrap();
    let forged = br#"{"schemaVersion":2,"config":{},"layers":[]}"#.to_vec();
    for target in [
        "/manifests/v2".to_owned(),
        format!("/manifests/{}", broken.digest),
    ] {
        proxy.add_rule(
            &target,
            Fault::Serve {
                headers: vec![
                    ("Content-Type", moved.media_type.clone()),
                    ("Docker-Content-Digest", moved.digest.to_string()),
                ],
                body: forged.clone(),
            },
            None,
        );
    }
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(report.repositories_scanned, 1);
    assert_eq!(report.repositories_failed.len(), 1, "{report:?}");
    let flagstate_core::indexer::RepositoryFailure {
        repository: name,
        error: message,
    } = &report.repositories_failed[0];
    let message = message.to_string();
    assert_eq!(name, "mixed/app");
    assert!(
        message.contains("other tags indexed")
            && message.contains("tag v2:")
            && message.contains("tag v3:")
            && message.contains("does not match"),
        "{message}"
    );
    let tags = store
        .repository_tags(&"mixed/app".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let expected = BTreeMap::from([
        ("v1".parse().unwrap(), v1.digest.clone()),
        // The unreadable move keeps what was indexed; the unreadable new tag stays out.
        ("v2".parse().unwrap(), v2.digest.clone()),
        ("v4".parse().unwrap(), fine.digest.clone()),
    ]);
    assert_eq!(tags, expected);
    assert!(indexer.status().last_scan_error.is_some());

    // Once the registry serves them properly, the next scan catches up.
    proxy.clear_rules();
    assert!(indexer.full_scan(&NoProgress).await.unwrap().is_complete());
    let tags = store
        .repository_tags(&"mixed/app".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tags["v2"], moved.digest);
    assert_eq!(tags["v3"], broken.digest);
}

/// A tag pointing at an artifact that moves to a manifest the registry serves unusably
/// keeps the artifact the index had, like an image tag does; once the registry serves
/// it properly, the next scan catches up.
#[tokio::test]
async fn an_unusable_move_of_an_artifact_tag_keeps_the_indexed_artifact() {
    let Some(registry) = registry().await else {
        return;
    };
    const HELM: &str = "application/vnd.cncf.helm.config.v1+json";
    let pusher = registry.pusher();
    let chart = |n: &str| {
        ImageSpec::new("linux", "amd64")
            .label("n", n)
            .artifact(HELM)
    };
    let first = pusher
        .push_image("art/charts", Some("stable"), &chart("1"))
        .await
        .unwrap();
    let proxy = Proxy::start(&registry.address()).await;
    let (indexer, store) = indexer_for(client_config(&proxy.url));
    assert!(indexer.full_scan(&NoProgress).await.unwrap().is_complete());
    let name: flagstate_core::RepositoryName = "art/charts".parse().unwrap();
    let listing = flagstate_core::TagListing::all(flagstate_core::Listing::first(
        flagstate_core::ListOrder::Name,
        10,
    ));
    let indexed = store.list_tags(&name, &listing).await.unwrap().unwrap();
    assert_eq!(indexed.len(), 1);
    assert_eq!(
        (&indexed[0].digest, indexed[0].artifact_type.as_deref()),
        (&first.digest, Some(HELM))
    );

    // `stable` moves to a chart whose manifest the proxy serves with other bytes.
    let moved = pusher
        .push_image("art/charts", Some("stable"), &chart("2"))
        .await
        .unwrap();
    proxy.add_rule(
        &format!("/manifests/{}", moved.digest),
        Fault::Serve {
            headers: vec![
                ("Content-Type", moved.media_type.clone()),
                ("Docker-Content-Digest", moved.digest.to_string()),
            ],
            body: br#"{"schemaVersion":2,"config":{},"layers":[]}"#.to_vec(),
        },
        None,
    );
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(report.repositories_failed.len(), 1, "{report:?}");
    assert_eq!(
        store.list_tags(&name, &listing).await.unwrap().unwrap(),
        indexed,
        "the unreadable move keeps the indexed artifact, with its time"
    );

    proxy.clear_rules();
    assert!(indexer.full_scan(&NoProgress).await.unwrap().is_complete());
    let caught_up = store.list_tags(&name, &listing).await.unwrap().unwrap();
    assert_eq!(caught_up[0].digest, moved.digest);
}

// ---------------------------------------------------------------------------------------
// Hostile registries: credentials stay with their origin, bodies are bounded, a dead
// registry is reported once.

/// A listener on another origin that records each request's `METHOD path` and its
/// `Authorization` header, answering `status`.
async fn foreign_listener(
    status: u16,
) -> (
    Webhook,
    Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let listener = webhook(move |request: Request| {
        log.lock().unwrap().push((
            format!("{} {}", request.method, request.path()),
            request.header("authorization").map(str::to_owned),
        ));
        async move { status }
    })
    .await;
    (listener, seen)
}

/// The origin (`http://host:port/`) of a webhook URL.
fn origin_of(url: &str) -> String {
    let u: url::Url = url.parse().unwrap();
    format!("http://{}:{}/", u.host_str().unwrap(), u.port().unwrap())
}

#[tokio::test]
async fn a_foreign_next_page_link_is_refused_and_deletes_nothing() {
    let Some(registry) = seeded(2).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    proxy.require_tokens("bob", "builder", 300);
    let mut cfg = client_config(&proxy.url);
    cfg.credentials = Some(basic("bob", "builder"));
    let (indexer, store) = indexer_for(cfg);
    assert!(indexer.full_scan(&NoProgress).await.unwrap().is_complete());
    assert_eq!(store.repositories().await.unwrap().len(), 2);

    let (foreign, seen) = foreign_listener(200).await;
    let elsewhere = origin_of(&foreign.url);
    // The catalog's first page names one repository and sends the next page elsewhere.
    proxy.add_rule(
        "/v2/_catalog",
        Fault::Serve {
            headers: vec![
                ("Content-Type", "application/json".into()),
                (
                    "Link",
                    format!("<{elsewhere}v2/_catalog?last=f%2Fr00&n=1000>; rel=\"next\""),
                ),
            ],
            body: br#"{"repositories":["f/r00"]}"#.to_vec(),
        },
        None,
    );
    let err = indexer.full_scan(&NoProgress).await.unwrap_err();
    match &err {
        IndexerError::Registry(RegistryError::ForeignUrl { kind, target, .. }) => {
            assert_eq!(*kind, "next-page link");
            assert!(target.starts_with(&elsewhere), "{target}");
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&elsewhere) && message.contains("not the registry's origin"),
        "{message}"
    );
    assert_eq!(
        store.repositories().await.unwrap().len(),
        2,
        "a failed listing deletes nothing"
    );

    // The same for a repository's tag list: that repository fails and keeps its tags.
    proxy.clear_rules();
    let before = store
        .repository_tags(&"f/r01".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    proxy.add_rule(
        "/v2/f/r01/tags/list",
        Fault::Serve {
            headers: vec![
                ("Content-Type", "application/json".into()),
                (
                    "Link",
                    format!("<{elsewhere}v2/f/r01/tags/list?last=v0&n=1000>; rel=\"next\""),
                ),
            ],
            body: br#"{"name":"f/r01","tags":["v0"]}"#.to_vec(),
        },
        None,
    );
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(report.repositories_failed.len(), 1, "{report:?}");
    let flagstate_core::indexer::RepositoryFailure {
        repository: name,
        error,
    } = &report.repositories_failed[0];
    let error = error.to_string();
    assert_eq!(name, "f/r01");
    assert!(
        error.contains("refusing to follow next-page link"),
        "{error}"
    );
    assert_eq!(
        store
            .repository_tags(&"f/r01".parse().unwrap())
            .await
            .unwrap()
            .unwrap(),
        before
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "no request reached the foreign origin: {:?}",
        seen.lock().unwrap()
    );
    assert_eq!(
        foreign.received.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn redirects_keep_credentials_on_the_registry_origin() {
    let Some(registry) = seeded(1).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    proxy.require_tokens("bob", "builder", 300);
    let mut cfg = client_config(&proxy.url);
    cfg.credentials = Some(basic("bob", "builder"));
    let client = RegistryClient::new(cfg.clone()).unwrap();
    let good = client
        .get_manifest(&"f/r00".parse().unwrap(), "v1")
        .await
        .unwrap();
    let (foreign, seen) = foreign_listener(200).await;
    let elsewhere = origin_of(&foreign.url);

    // A redirect within the registry's origin is followed, with the registry's token
    // (the proxy answers 401 to a request without one).
    proxy.add_rule(
        "/manifests/v1",
        Fault::Reply {
            status: 307,
            headers: vec![("Location", format!("/v2/f/r00/manifests/{}", good.digest))],
        },
        None,
    );
    let followed = client
        .get_manifest(&"f/r00".parse().unwrap(), "v1")
        .await
        .unwrap();
    assert_eq!(followed, good);

    // A manifest redirected to another origin is refused, naming the target; nothing
    // is sent there.
    proxy.clear_rules();
    proxy.add_rule(
        "/manifests/",
        Fault::Reply {
            status: 307,
            headers: vec![("Location", format!("{elsewhere}v2/f/r00/manifests/v1"))],
        },
        None,
    );
    for reference in ["v1", good.digest.as_str()] {
        match client
            .get_manifest(&"f/r00".parse().unwrap(), reference)
            .await
        {
            Err(RegistryError::ForeignUrl { kind, target, .. }) => {
                assert_eq!(kind, "redirect");
                assert!(target.starts_with(&elsewhere), "{target}");
            }
            other => panic!("{reference}: {other:?}"),
        }
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );

    // A blob redirected to its storage elsewhere (S3, a CDN) is fetched there without
    // any credentials, and its bytes are verified: this "storage" serves an empty body.
    proxy.clear_rules();
    let config =
        match flagstate_core::registry::content::parse_manifest(&good.media_type, &good.bytes) {
            flagstate_core::registry::content::ParsedManifest::Image { config, .. } => config,
            other => panic!("{other:?}"),
        };
    proxy.add_rule(
        &format!("/blobs/{config}"),
        Fault::Reply {
            status: 307,
            headers: vec![("Location", format!("{elsewhere}storage/{config}?sig=x"))],
        },
        None,
    );
    match client.get_blob(&"f/r00".parse().unwrap(), &config).await {
        Err(RegistryError::DigestMismatch { url, .. }) => {
            assert!(url.starts_with(&elsewhere), "{url}")
        }
        other => panic!("{other:?}"),
    }
    let requests = seen.lock().unwrap().clone();
    assert_eq!(
        requests,
        [(format!("GET /storage/{config}"), None)],
        "one request, without Authorization"
    );

    // Through the indexer: the repository is reported failed, naming the tag.
    proxy.clear_rules();
    proxy.add_rule(
        "/manifests/",
        Fault::Reply {
            status: 302,
            headers: vec![("Location", format!("{elsewhere}v2/f/r00/manifests/v1"))],
        },
        None,
    );
    let (indexer, store) = indexer_for(cfg);
    let err = indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(err.repositories_failed.len(), 1, "{err:?}");
    assert!(
        err.repositories_failed[0]
            .error
            .to_string()
            .contains("refusing to follow redirect"),
        "{:?}",
        err.repositories_failed
    );
    assert!(
        store
            .repository_tags(&"f/r00".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "still only the blob request");
}

/// A registry of its own making: every `/v2/` request is challenged for a bearer token
/// from `/token`, which `token` answers (it gets the connection and the request head).
async fn challenging_registry<F, Fut>(token: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let realm = format!("{url}token");
    let token = Arc::new(token);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let realm = realm.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head);
                if head.starts_with("GET /token") {
                    token(stream).await;
                    return;
                }
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"hostile\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_huge_token_answer_is_refused() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::AsyncWriteExt;
    // An endless chunked body: the client must stop reading at its limit.
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let (url, task) = challenging_registry(move |mut stream| {
        let counter = counter.clone();
        async move {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let framed = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk, b"\r\n".to_vec()].concat();
            while stream.write_all(&framed).await.is_ok() {
                counter.fetch_add(64 * 1024, Ordering::Relaxed);
                if counter.load(Ordering::Relaxed) > 1 << 30 {
                    return;
                }
            }
        }
    })
    .await;
    let mut cfg = client_config(&url);
    cfg.credentials = Some(basic("bob", "builder"));
    let client = RegistryClient::new(cfg).unwrap();
    match client.catalog().await {
        Err(RegistryError::Token { realm, reason }) => {
            assert!(realm.ends_with("/token"), "{realm}");
            assert!(reason.contains("exceeds the limit of"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The client stopped reading: what was written is the limit plus socket buffers,
    // nowhere near the gigabyte the server would send.
    let sent = written.load(Ordering::Relaxed);
    assert!(sent < 64 << 20, "{sent} bytes were written");
    task.abort();

    // An announced length over the limit is refused before reading.
    let (url, task) = challenging_registry(|mut stream| async move {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 107374182400\r\n\r\n{\"token\":\"";
        let _ = stream.write_all(head.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let client = RegistryClient::new(client_config(&url)).unwrap();
    let started = Instant::now();
    let err = client.catalog().await.unwrap_err().to_string();
    assert!(
        err.contains("token request to") && err.contains("exceeds the limit of"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not waited for"
    );
    task.abort();
}

#[tokio::test]
async fn a_slow_token_endpoint_is_bounded_by_the_request_timeout() {
    use tokio::io::AsyncWriteExt;
    let (url, task) = challenging_registry(|mut stream| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let body = r#"{"token":"late"}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
    })
    .await;
    let mut cfg = client_config(&url);
    cfg.timeout = Duration::from_millis(300);
    let client = RegistryClient::new(cfg).unwrap();
    let started = Instant::now();
    match client.tags(&"a/b".parse().unwrap()).await {
        Err(RegistryError::Token { realm, reason }) => {
            assert!(realm.ends_with("/token"), "{realm}");
            assert!(
                reason.to_lowercase().contains("timed out") || reason.contains("timeout"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Bounded by the 300 ms timeout, not by the endpoint's minute.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().token_requests, 1);
    task.abort();
}

/// A port nothing listens on.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn a_dead_registry_fails_a_scan_once_and_promptly() {
    let url = closed_port_url();
    let mut cfg = client_config(&url);
    cfg.repositories = (0..50)
        .map(|i| format!("r/{i:02}").parse().unwrap())
        .collect();
    let (indexer, _) = indexer_for(cfg);
    let err = indexer.full_scan(&NoProgress).await.unwrap_err();
    match &err {
        IndexerError::Registry(RegistryError::Unreachable { failures, url, .. }) => {
            assert_eq!(*failures, 3, "the catalog's attempts, then no more");
            assert!(url.contains("/v2/_catalog"), "{url}");
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("registry unreachable"), "{message}");
    assert!(message.to_lowercase().contains("connect"), "{message}");
    let stats = indexer.client().stats();
    assert_eq!(stats.requests, 3, "{stats:?}");
    assert_eq!(stats.retries, 2, "{stats:?}");

    // Declared unreachable, the client sends nothing until the budget has passed...
    let again = indexer.full_scan(&NoProgress).await.unwrap_err();
    assert!(again.to_string().contains("not sent"), "{again}");
    assert_eq!(indexer.client().stats().requests, 3);
}

#[tokio::test]
async fn the_retry_budget_bounds_a_registry_that_never_answers() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Accepts connections and never answers: each attempt lasts the whole timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let mut cfg = client_config(&url);
    cfg.timeout = Duration::from_millis(300);
    cfg.retry = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    cfg.retry_budget = Duration::from_millis(700);
    let client = RegistryClient::new(cfg).unwrap();
    match client.ping().await {
        Err(RegistryError::Unreachable {
            failures,
            unanswered,
            reason,
            ..
        }) => {
            // 300 ms per attempt: the third failure is past the 700 ms budget, long
            // before the ten attempts the retry policy allows.
            assert_eq!(failures, 3, "{reason}");
            assert!(unanswered >= Duration::from_millis(700), "{unanswered:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.stats().requests, 3);

    // Until the budget has passed again, requests fail without being sent; then the
    // registry is tried again.
    assert!(
        client
            .ping()
            .await
            .unwrap_err()
            .to_string()
            .contains("not sent")
    );
    assert_eq!(client.stats().requests, 3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(client.ping().await.is_err());
    assert!(client.stats().requests > 3);
    task.abort();
}

#[tokio::test]
async fn the_retry_budget_comes_back_once_the_registry_answers() {
    let Some(mut registry) = seeded(2).await else {
        return;
    };
    let proxy = Proxy::start(&registry.address()).await;
    let mut cfg = client_config(&proxy.url);
    cfg.retry_budget = Duration::from_millis(200);
    let (indexer, store) = indexer_for(cfg);
    indexer.full_scan(&NoProgress).await.unwrap();
    registry.kill();
    let err = indexer.full_scan(&NoProgress).await.unwrap_err();
    assert!(err.to_string().contains("registry unreachable"), "{err}");
    assert_eq!(
        store.repositories().await.unwrap().len(),
        2,
        "nothing removed"
    );
    registry.restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(indexer.full_scan(&NoProgress).await.unwrap().is_complete());
}

#[tokio::test]
async fn a_deeply_nested_config_costs_its_tag_and_is_reported() {
    let Some(registry) = registry().await else {
        return;
    };
    let pusher = registry.pusher();
    let fine = pusher
        .push_image("deep/app", Some("ok"), &ImageSpec::new("linux", "amd64"))
        .await
        .unwrap();
    let depth = 200_000;
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"x":{}1{}}}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let config_digest = pusher
        .push_blob("deep/app", config.as_bytes())
        .await
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [],
    })
    .to_string();
    pusher
        .put_manifest(
            "deep/app",
            "deep",
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
        )
        .await
        .unwrap();

    let (indexer, store) = indexer_for(client_config(&registry.url()));
    let report = indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(report.repositories_failed.len(), 1, "{report:?}");
    let flagstate_core::indexer::RepositoryFailure {
        repository: name,
        error: message,
    } = &report.repositories_failed[0];
    let message = message.to_string();
    assert_eq!(name, "deep/app");
    assert!(
        message.contains("tag deep:")
            && message.contains("recursion limit")
            && message.contains(&config_digest.to_string()),
        "{message}"
    );
    let tags = store
        .repository_tags(&"deep/app".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tags, BTreeMap::from([("ok".parse().unwrap(), fine.digest)]));
    // Reported again by the next scan, not forgotten as unsupported.
    let again = indexer.full_scan(&NoProgress).await.unwrap();
    assert_eq!(again.repositories_failed, report.repositories_failed);
}
