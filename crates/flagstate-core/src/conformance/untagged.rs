//! Untagged manifests and the manifest listing: manifests pushed by digest are kept per
//! repository until deleted, listed as untagged while no tag reaches them, and recorded
//! in the change log; the listing orders, filters and pages by (digest, tag); sizes of
//! manifests stored without one are filled in by a later supplied copy.

use std::collections::BTreeMap;

use super::fixtures::{
    at, delete_manifest, delete_tag, image, list, put_image, put_list, put_referrer, put_untagged,
    repo, repository_name, tag_name, time,
};
use super::ok;
use crate::changes::{ChangeCursor, ChangeFilter, ChangeKind};
use crate::digest::Digest;
use crate::discovery::{
    ListOrder, Listing, ManifestInfo, ManifestListing, RepositoryListing, Untagged,
    manifest_entries,
};
use crate::model::{Manifest, OCI_MANIFEST, PushedManifest, TagChange};
use crate::name::Tag;
use crate::store::Store;

async fn manifests(store: &dyn Store, name: &str, untagged: Untagged) -> Option<Vec<ManifestInfo>> {
    let listing = ManifestListing {
        untagged,
        after: None,
        limit: 10_000,
    };
    ok(
        store.list_manifests(&repository_name(name), &listing).await,
        "list_manifests",
    )
}

/// (digest, tag) of each entry.
fn keys(entries: &[ManifestInfo]) -> Vec<(String, Option<String>)> {
    entries
        .iter()
        .map(|e| (e.digest.to_string(), e.tag.as_ref().map(Tag::to_string)))
        .collect()
}

fn untagged_key(digest: &Digest) -> (String, Option<String>) {
    (digest.to_string(), None)
}

fn tagged_key(digest: &Digest, tag: &str) -> (String, Option<String>) {
    (digest.to_string(), Some(tag.to_owned()))
}

/// The records after `after`: kind and digest.
async fn records(store: &dyn Store, after: ChangeCursor) -> Vec<(ChangeKind, Option<String>)> {
    let page = ok(
        store
            .changes_since(after, &ChangeFilter::default(), usize::MAX)
            .await,
        "changes_since",
    );
    page.records
        .iter()
        .map(|r| (r.kind, r.digest.as_ref().map(Digest::to_string)))
        .collect()
}

async fn cursor(store: &dyn Store) -> ChangeCursor {
    ChangeCursor::at_generation(ok(store.generation().await, "generation"))
}

/// A push by digest creates the repository when needed, is listed untagged until a tag
/// reaches it (directly or through a list) and again when none does, is recorded once,
/// and goes with a delete, recorded only while it was untagged.
pub async fn untagged_manifests_follow_pushes_tags_and_deletes(store: &dyn Store) {
    let a = image("untagged a").build();
    let child = image("untagged child").arch("arm64").build();
    let multi = list("untagged list").child(&child).build();
    let start = cursor(store).await;
    assert_eq!(manifests(store, "app", Untagged::Include).await, None);

    ok(
        store
            .apply(&at(
                put_untagged("app", &a.digest, OCI_MANIFEST, 531),
                time(4),
            ))
            .await,
        "push by digest",
    );
    let listed = manifests(store, "app", Untagged::Include).await;
    assert_eq!(
        listed,
        Some(vec![ManifestInfo {
            digest: a.digest.clone(),
            media_type: OCI_MANIFEST.to_owned(),
            size: Some(531),
            platform: None,
            tag: None,
            artifact_type: None,
            pushed: Some(time(4)),
        }]),
        "a push by digest into a new repository is listed untagged"
    );
    let all = RepositoryListing {
        namespace: None,
        listing: Listing::first(ListOrder::Name, 100),
    };
    let listed = ok(store.list_repositories(&all).await, "repos");
    assert!(
        listed
            .iter()
            .any(|r| r.name.as_str() == "app" && r.tags == 0),
        "the repository exists with 0 tags: {listed:?}"
    );
    let a_hex = a.digest.to_string();
    assert_eq!(
        records(store, start).await,
        vec![
            (ChangeKind::RepositoryCreated, None),
            (ChangeKind::ManifestUntaggedCreated, Some(a_hex.clone())),
        ]
    );
    let page = ok(
        store
            .changes_since(start, &ChangeFilter::default(), usize::MAX)
            .await,
        "changes_since",
    );
    assert_eq!(
        page.records[1].media_type.as_deref(),
        Some(OCI_MANIFEST),
        "the record names the pushed media type"
    );

    let generation = ok(store.generation().await, "generation");
    ok(
        store
            .apply(&put_untagged("app", &a.digest, OCI_MANIFEST, 531))
            .await,
        "the same push again",
    );
    assert_eq!(
        ok(store.generation().await, "generation"),
        generation,
        "pushing a held manifest again changes nothing"
    );

    let before_tag = cursor(store).await;
    ok(store.apply(&put_image("app", "v1", &a)).await, "tag it");
    assert_eq!(
        keys(
            &manifests(store, "app", Untagged::Include)
                .await
                .unwrap_or_default()
        ),
        vec![tagged_key(&a.digest, "v1")],
        "a tagged manifest is listed with its tag only"
    );
    assert_eq!(manifests(store, "app", Untagged::Only).await, Some(vec![]));
    ok(store.apply(&delete_tag("app", "v1")).await, "untag it");
    assert_eq!(
        keys(
            &manifests(store, "app", Untagged::Only)
                .await
                .unwrap_or_default()
        ),
        vec![untagged_key(&a.digest)],
        "with no tag left it is untagged again"
    );

    // A list's child pushed by digest is reached through its tagged list.
    ok(
        store
            .apply(&put_untagged("app", &child.digest, OCI_MANIFEST, 400))
            .await,
        "child by digest",
    );
    ok(store.apply(&put_list("app", "multi", &multi)).await, "list");
    let only = manifests(store, "app", Untagged::Only)
        .await
        .unwrap_or_default();
    assert_eq!(
        keys(&only),
        vec![untagged_key(&a.digest)],
        "the child of a tagged list is not untagged"
    );
    let exclude = manifests(store, "app", Untagged::Exclude)
        .await
        .unwrap_or_default();
    assert_eq!(keys(&exclude), vec![tagged_key(multi.digest(), "multi")]);

    let before_delete = cursor(store).await;
    ok(
        store.apply(&delete_manifest("app", &a.digest)).await,
        "delete a",
    );
    ok(
        store.apply(&delete_manifest("app", &child.digest)).await,
        "delete the reached child",
    );
    assert_eq!(
        manifests(store, "app", Untagged::Only).await,
        Some(vec![]),
        "deleted manifests are gone"
    );
    let after = records(store, before_delete).await;
    assert_eq!(
        after,
        vec![(ChangeKind::ManifestUntaggedDeleted, Some(a_hex.clone()))],
        "only the deletion of an untagged manifest is recorded as one"
    );
    let child_hex = child.digest.to_string();
    let untagged_records: Vec<_> = records(store, before_tag)
        .await
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                k,
                ChangeKind::ManifestUntaggedCreated | ChangeKind::ManifestUntaggedDeleted
            )
        })
        .collect();
    assert_eq!(
        untagged_records,
        vec![
            (ChangeKind::ManifestUntaggedCreated, Some(child_hex)),
            (ChangeKind::ManifestUntaggedDeleted, Some(a_hex.clone())),
        ],
        "untagging or tagging a held manifest records tag changes only; a push no tag \
         reaches is recorded, and so is deleting it while no tag reaches it"
    );

    ok(
        store
            .apply(&put_untagged("app", &a.digest, OCI_MANIFEST, 531))
            .await,
        "push again",
    );
    ok(
        store.remove_repository(&repository_name("app")).await,
        "remove",
    );
    assert_eq!(manifests(store, "app", Untagged::Include).await, None);
    ok(store.apply(&put_image("app", "v1", &a)).await, "recreate");
    assert_eq!(
        manifests(store, "app", Untagged::Only).await,
        Some(vec![]),
        "a removed repository's untagged manifests go with it"
    );
}

/// The listing is the reference entries (every tag, untagged pushes no tag reaches) by
/// digest then tag, filtered by `untagged`, and walking it page by page from each
/// page's last position visits every entry once.
pub async fn manifest_listing_orders_filters_and_pages(store: &dyn Store) {
    let images: Vec<_> = (0..6)
        .map(|i| {
            image(&format!("listing {i}"))
                .arch(if i % 2 == 0 { "amd64" } else { "arm64" })
                .variant("v8")
                .build()
        })
        .collect();
    let multi = list("listing list")
        .child(&images[4])
        .child(&images[5])
        .build();
    let mut snapshot = repo("lib")
        .image("a", &images[0])
        .image("b", &images[0])
        .image("c", &images[1])
        .list("multi", &multi);
    snapshot = snapshot.at(time(1));
    ok(store.replace_repository(&snapshot.build()).await, "scan");
    let mut pushed = Vec::new();
    for (i, image) in images.iter().enumerate() {
        // Image 3 (never tagged) says what artifact it is; the listing carries that.
        let manifest = PushedManifest {
            digest: image.digest.clone(),
            media_type: OCI_MANIFEST.to_owned(),
            size: 600 + i as u64,
            pushed: time(2),
            artifact_type: (i == 3).then(|| "application/vnd.example.thing".to_owned()),
            subject: None,
            annotations: BTreeMap::new(),
        };
        let change = TagChange::PutUntagged {
            repository: repository_name("lib"),
            manifest: manifest.clone(),
        };
        ok(store.apply(&change).await, "push by digest");
        pushed.push(manifest);
    }
    let tags: BTreeMap<Tag, Digest> = [
        ("a", &images[0].digest),
        ("b", &images[0].digest),
        ("c", &images[1].digest),
        ("multi", multi.digest()),
    ]
    .into_iter()
    .map(|(t, d)| (tag_name(t), d.clone()))
    .collect();
    // Image 2 is held (it was tagged once), image 3 never was.
    ok(
        store.apply(&put_image("lib", "old", &images[2])).await,
        "tag",
    );
    ok(store.apply(&delete_tag("lib", "old")).await, "untag");
    let stored: BTreeMap<Digest, Manifest> = multi
        .manifests()
        .into_iter()
        .chain(images[..3].iter().cloned().map(Manifest::Image))
        .map(|m| (m.digest().clone(), m))
        .collect();
    let reference = manifest_entries(&tags, &BTreeMap::new(), &pushed, |d| stored.get(d));
    for untagged in [Untagged::Include, Untagged::Only, Untagged::Exclude] {
        let full = ManifestListing {
            untagged,
            after: None,
            limit: 1000,
        };
        let expected = full.select(reference.clone());
        assert_eq!(
            manifests(store, "lib", untagged).await.as_ref(),
            Some(&expected),
            "{untagged:?}"
        );
        for n in [1, 2, 3] {
            let mut walked = Vec::new();
            let mut listing = ManifestListing {
                untagged,
                after: None,
                limit: n,
            };
            loop {
                let page = ok(
                    store
                        .list_manifests(&repository_name("lib"), &listing)
                        .await,
                    "page",
                )
                .unwrap_or_default();
                assert!(page.len() <= n);
                let Some(last) = page.last() else { break };
                listing.after = Some(last.position());
                walked.extend(page);
            }
            assert_eq!(walked, expected, "{untagged:?} in pages of {n}");
        }
    }
    // Untagged: images 2 and 3 (0 and 1 are tagged, 4 and 5 are reached by the list).
    let only = manifests(store, "lib", Untagged::Only)
        .await
        .unwrap_or_default();
    let mut want = vec![
        untagged_key(&images[2].digest),
        untagged_key(&images[3].digest),
    ];
    want.sort();
    assert_eq!(keys(&only), want);
    let platform_of = |digest: &Digest| {
        only.iter()
            .find(|e| e.digest == *digest)
            .map(|e| e.platform.clone())
    };
    assert_eq!(
        platform_of(&images[2].digest),
        Some(Some(images[2].platform.clone())),
        "an untagged image the index holds carries its platform"
    );
    assert_eq!(
        platform_of(&images[3].digest),
        Some(None),
        "one it does not hold has none"
    );
    let list_entry = manifests(store, "lib", Untagged::Exclude)
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.tag.as_ref().map(Tag::as_str) == Some("multi"));
    assert_eq!(
        list_entry.map(|e| (e.platform, e.size)),
        Some((None, multi.manifests()[0].size())),
        "a list has no platform and its own size"
    );
}

/// A manifest stored without a size is not "known" (so a scan reads it again), and the
/// size of a later supplied copy is kept, with nothing else of that copy.
pub async fn sizes_fill_in_for_manifests_stored_without(store: &dyn Store) {
    let unsized_image = image("unsized").label("k", "stored").size(None).build();
    ok(
        store
            .replace_repository(&repo("old").image("v1", &unsized_image).build())
            .await,
        "store without a size",
    );
    let digest = unsized_image.digest.clone();
    let known = ok(
        store.known_manifests(std::slice::from_ref(&digest)).await,
        "known",
    );
    assert!(
        known.is_empty(),
        "a manifest without a size counts as unknown"
    );
    let listed = manifests(store, "old", Untagged::Include)
        .await
        .unwrap_or_default();
    assert_eq!(listed.first().map(|e| e.size), Some(None));

    let sized = image("unsized")
        .label("k", "supplied")
        .size(Some(777))
        .build();
    ok(
        store
            .replace_repository(&repo("old").image("v1", &sized).build())
            .await,
        "rescan supplies it with a size",
    );
    let known = ok(
        store.known_manifests(std::slice::from_ref(&digest)).await,
        "known",
    );
    assert!(known.contains(&digest), "now it is known");
    let stored = ok(store.manifest(&digest).await, "manifest");
    let Some(Manifest::Image(stored)) = stored else {
        panic!("the image is stored: {stored:?}");
    };
    assert_eq!(stored.size, Some(777));
    assert_eq!(
        stored.labels.get("k").map(String::as_str),
        Some("stored"),
        "the stored copy keeps everything but the size"
    );
    let listed = manifests(store, "old", Untagged::Include)
        .await
        .unwrap_or_default();
    assert_eq!(listed.first().map(|e| e.size), Some(Some(777)));
}

/// The referrers of a manifest are the manifests pushed by digest to the same
/// repository whose `subject` it is, by digest, filtered by artifact type, each with its
/// artifact type and annotations; deleting one removes it.
pub async fn referrers_are_pushed_manifests_naming_the_subject(store: &dyn Store) {
    let image_a = image("referred").build();
    let other = image("not referred").build();
    ok(
        store
            .replace_repository(
                &repo("app")
                    .image("v1", &image_a)
                    .image("v2", &other)
                    .build(),
            )
            .await,
        "scan",
    );
    let referrers = |name: &'static str, subject: Digest, kind: Option<&'static str>| async move {
        ok(
            store
                .list_referrers(&repository_name(name), &subject, kind)
                .await,
            "list_referrers",
        )
    };
    assert_eq!(
        referrers("app", image_a.digest.clone(), None).await,
        Some(vec![])
    );
    assert_eq!(
        referrers("nothing", image_a.digest.clone(), None).await,
        None
    );
    const SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    const SBOM: &str = "application/spdx+json";
    let before_push = cursor(store).await;
    for change in [
        put_referrer("app", "signature", SIGNATURE, &image_a.digest),
        put_referrer("app", "sbom", SBOM, &image_a.digest),
        put_referrer("app", "other sbom", SBOM, &other.digest),
        put_referrer("lib", "elsewhere", SBOM, &image_a.digest),
    ] {
        ok(store.apply(&change).await, "push a referrer");
    }
    let expected = |seeds: &[&str]| {
        let mut digests: Vec<String> = seeds
            .iter()
            .map(|s| super::fixtures::digest(s).to_string())
            .collect();
        digests.sort();
        digests
    };
    let found = referrers("app", image_a.digest.clone(), None)
        .await
        .unwrap_or_default();
    assert_eq!(
        found
            .iter()
            .map(|r| r.digest.to_string())
            .collect::<Vec<_>>(),
        expected(&["signature", "sbom"]),
        "the referrers of the subject in this repository, by digest"
    );
    let sbom = found
        .iter()
        .find(|r| r.artifact_type.as_deref() == Some(SBOM))
        .cloned();
    let sbom = sbom.unwrap_or_else(|| panic!("the SBOM is listed: {found:?}"));
    assert_eq!(sbom.subject.as_ref(), Some(&image_a.digest));
    assert_eq!(
        sbom.annotations.get("org.example.seed").map(String::as_str),
        Some("sbom")
    );
    assert_eq!(sbom.media_type, OCI_MANIFEST);
    let only_sboms = referrers("app", image_a.digest.clone(), Some(SBOM))
        .await
        .unwrap_or_default();
    assert_eq!(
        only_sboms
            .iter()
            .map(|r| r.digest.to_string())
            .collect::<Vec<_>>(),
        expected(&["sbom"])
    );
    // The manifest listing describes each untagged referrer with its artifact type.
    let untagged = manifests(store, "app", Untagged::Only)
        .await
        .unwrap_or_default();
    let listed_types: BTreeMap<String, Option<String>> = untagged
        .iter()
        .map(|m| (m.digest.to_string(), m.artifact_type.clone()))
        .collect();
    assert_eq!(
        listed_types,
        BTreeMap::from([
            (
                super::fixtures::digest("signature").to_string(),
                Some(SIGNATURE.to_owned())
            ),
            (
                super::fixtures::digest("sbom").to_string(),
                Some(SBOM.to_owned())
            ),
            (
                super::fixtures::digest("other sbom").to_string(),
                Some(SBOM.to_owned())
            ),
        ]),
        "untagged referrers are listed with their artifact types"
    );
    // Each referrer pushed is one `referrer.created` record naming its subject and type,
    // beside the untagged manifest's own record.
    let referrer_records = |after: ChangeCursor| async move {
        let filter = ChangeFilter {
            kinds: [ChangeKind::ReferrerCreated, ChangeKind::ReferrerDeleted].into(),
            ..ChangeFilter::default()
        };
        ok(
            store.changes_since(after, &filter, 100).await,
            "changes_since",
        )
        .records
        .into_iter()
        .map(|r| {
            (
                r.kind,
                r.repository.to_string(),
                r.digest.map(|d| d.to_string()),
                r.subject.map(|d| d.to_string()),
                r.artifact_type,
            )
        })
        .collect::<Vec<_>>()
    };
    let record = |kind, name: &str, seed: &str, subject: &Digest, artifact_type: &str| {
        (
            kind,
            name.to_owned(),
            Some(super::fixtures::digest(seed).to_string()),
            Some(subject.to_string()),
            Some(artifact_type.to_owned()),
        )
    };
    assert_eq!(
        referrer_records(before_push).await,
        vec![
            record(
                ChangeKind::ReferrerCreated,
                "app",
                "signature",
                &image_a.digest,
                SIGNATURE
            ),
            record(
                ChangeKind::ReferrerCreated,
                "app",
                "sbom",
                &image_a.digest,
                SBOM
            ),
            record(
                ChangeKind::ReferrerCreated,
                "app",
                "other sbom",
                &other.digest,
                SBOM
            ),
            record(
                ChangeKind::ReferrerCreated,
                "lib",
                "elsewhere",
                &image_a.digest,
                SBOM
            ),
        ],
        "every referrer pushed is recorded with its subject and artifact type"
    );
    let untagged_created = ok(
        store
            .changes_since(
                before_push,
                &ChangeFilter {
                    kinds: [ChangeKind::ManifestUntaggedCreated].into(),
                    ..ChangeFilter::default()
                },
                100,
            )
            .await,
        "changes_since",
    )
    .records;
    assert_eq!(untagged_created.len(), 4, "{untagged_created:?}");
    assert!(
        untagged_created
            .iter()
            .all(|r| r.subject.is_some() && r.artifact_type.is_some()),
        "an untagged manifest's record names its subject and type too: {untagged_created:?}"
    );
    let before_delete = cursor(store).await;
    ok(
        store
            .apply(&put_referrer(
                "app",
                "signature",
                SIGNATURE,
                &image_a.digest,
            ))
            .await,
        "push the signature again",
    );
    ok(
        store
            .apply(&delete_manifest(
                "app",
                &super::fixtures::digest("signature"),
            ))
            .await,
        "delete the signature",
    );
    assert_eq!(
        referrer_records(before_delete).await,
        vec![record(
            ChangeKind::ReferrerDeleted,
            "app",
            "signature",
            &image_a.digest,
            SIGNATURE
        )],
        "pushing a held referrer again records nothing; deleting it records its deletion"
    );
    let left = referrers("app", image_a.digest.clone(), None)
        .await
        .unwrap_or_default();
    assert_eq!(
        left.iter()
            .map(|r| r.digest.to_string())
            .collect::<Vec<_>>(),
        expected(&["sbom"])
    );
}
