//! Artifact tags: tags pointing at manifests that are neither images nor image lists.
//! The repository holds each such artifact by digest; its tags are listed (with their
//! artifact type) by the tag and manifest listings, counted by the repository listing,
//! kept in tag history and the change log, and never seen by index queries, search or
//! [`Store::repository_tags`].

use super::fixtures::{
    artifact, delete_manifest, delete_tag, image, put_artifact, put_image, put_untagged, repo,
    repository_name, tag_name, time,
};
use super::ok;
use super::queries::run;
use crate::changes::{ChangeCursor, ChangeFilter, ChangeKind, ChangeRecord};
use crate::discovery::{
    ListOrder, Listing, ManifestListing, RepositoryListing, TagInfo, TagListing, Untagged,
};
use crate::model::{OCI_MANIFEST, PushedManifest, TagChange};
use crate::name::Tag;
use crate::store::{Store, StoreError};

const HELM: &str = "application/vnd.cncf.helm.config.v1+json";
const SPDX: &str = "application/spdx+json";

async fn tags(store: &dyn Store, name: &str, artifact_type: Option<&str>) -> Vec<TagInfo> {
    let listing = TagListing {
        artifact_type: artifact_type.map(str::to_owned),
        listing: Listing::first(ListOrder::Name, 1000),
    };
    ok(
        store.list_tags(&repository_name(name), &listing).await,
        "list_tags",
    )
    .unwrap_or_default()
}

/// (tag, digest, artifact type) of each listed tag.
fn described(tags: &[TagInfo]) -> Vec<(String, String, Option<String>)> {
    tags.iter()
        .map(|t| {
            (
                t.tag.to_string(),
                t.digest.to_string(),
                t.artifact_type.clone(),
            )
        })
        .collect()
}

fn entry(tag: &str, artifact: &PushedManifest) -> (String, String, Option<String>) {
    (
        tag.to_owned(),
        artifact.digest.to_string(),
        artifact.artifact_type.clone(),
    )
}

/// (tag, digest, artifact type) of each manifest listing entry.
async fn manifest_keys(
    store: &dyn Store,
    name: &str,
    untagged: Untagged,
) -> Vec<(Option<String>, String, Option<String>)> {
    let listing = ManifestListing {
        untagged,
        after: None,
        limit: 1000,
    };
    ok(
        store.list_manifests(&repository_name(name), &listing).await,
        "list_manifests",
    )
    .unwrap_or_default()
    .into_iter()
    .map(|m| {
        (
            m.tag.as_ref().map(Tag::to_string),
            m.digest.to_string(),
            m.artifact_type,
        )
    })
    .collect()
}

async fn records_after(store: &dyn Store, after: ChangeCursor) -> Vec<ChangeRecord> {
    ok(
        store
            .changes_since(after, &ChangeFilter::default(), usize::MAX)
            .await,
        "changes_since",
    )
    .records
}

async fn cursor(store: &dyn Store) -> ChangeCursor {
    ChangeCursor::at_generation(ok(store.generation().await, "generation"))
}

/// Artifact tags are listed with their types, filtered by type, counted, reached (not
/// untagged), recorded and kept in history; index queries and `repository_tags` see
/// only the image tags.
pub async fn artifact_tags_are_listed_and_never_indexed(store: &dyn Store) {
    let app = image("artifact app").build();
    let chart = artifact("artifact chart", HELM);
    let sbom = artifact("artifact sbom", SPDX);
    ok(store.apply(&put_image("app", "v1", &app)).await, "put");
    let start = cursor(store).await;
    ok(
        store.apply(&put_artifact("app", "chart", &chart)).await,
        "chart",
    );
    ok(
        store.apply(&put_artifact("app", "sbom", &sbom)).await,
        "sbom",
    );

    let all = tags(store, "app", None).await;
    assert_eq!(
        described(&all),
        [
            entry("chart", &chart),
            entry("sbom", &sbom),
            ("v1".to_owned(), app.digest.to_string(), None),
        ],
        "every tag is listed, artifacts with their type"
    );
    assert!(
        all.iter()
            .take(2)
            .all(|t| t.media_type == OCI_MANIFEST && t.created.is_none())
    );
    assert_eq!(
        described(&tags(store, "app", Some(HELM)).await),
        [entry("chart", &chart)],
        "artifactType filters"
    );
    assert!(
        tags(store, "app", Some("application/none"))
            .await
            .is_empty()
    );

    let listed = ok(
        store
            .list_repositories(&RepositoryListing {
                namespace: None,
                listing: Listing::first(ListOrder::Name, 10),
            })
            .await,
        "list_repositories",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tags, 3, "artifact tags count as tags");

    let indexed = ok(
        store.repository_tags(&repository_name("app")).await,
        "repository_tags",
    )
    .unwrap_or_default();
    assert_eq!(indexed.keys().map(Tag::as_str).collect::<Vec<_>>(), ["v1"]);
    let results = run(store, "").await;
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0]
            .images
            .iter()
            .map(|i| &i.digest)
            .collect::<Vec<_>>(),
        [&app.digest],
        "index answers hold images only"
    );

    assert!(
        manifest_keys(store, "app", Untagged::Only).await.is_empty(),
        "a tagged artifact is not untagged"
    );
    let with_tags = manifest_keys(store, "app", Untagged::Exclude).await;
    assert!(with_tags.contains(&(
        Some("chart".to_owned()),
        chart.digest.to_string(),
        chart.artifact_type.clone()
    )));
    assert_eq!(with_tags.len(), 3);

    let history = ok(
        store
            .tag_history(&repository_name("app"), &tag_name("chart"))
            .await,
        "tag_history",
    )
    .unwrap_or_default();
    assert_eq!(
        history.iter().map(|h| &h.digest).collect::<Vec<_>>(),
        [&chart.digest]
    );

    let records = records_after(store, start).await;
    let seen: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.kind,
                r.tag.as_ref().map(Tag::to_string),
                r.media_type.clone(),
                r.artifact_type.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                ChangeKind::TagCreated,
                Some("chart".to_owned()),
                Some(OCI_MANIFEST.to_owned()),
                Some(HELM.to_owned())
            ),
            (
                ChangeKind::TagCreated,
                Some("sbom".to_owned()),
                Some(OCI_MANIFEST.to_owned()),
                Some(SPDX.to_owned())
            ),
        ]
    );
}

/// A tag moves between artifacts and images (each move recorded once, the listing
/// following), a repeated put changes nothing, and deleting the tag or the artifact
/// removes the artifact tag; an artifact held by digest before it was tagged is listed
/// untagged again once its tag is gone.
pub async fn artifact_tags_move_and_go_with_deletes(store: &dyn Store) {
    let app = image("moving app").build();
    let first = artifact("moving first", HELM);
    let second = artifact("moving second", SPDX);
    ok(store.apply(&put_artifact("r", "x", &first)).await, "x");
    let generation = ok(store.generation().await, "generation");
    ok(store.apply(&put_artifact("r", "x", &first)).await, "again");
    assert_eq!(
        ok(store.generation().await, "generation"),
        generation,
        "the same artifact again changes nothing"
    );

    let start = cursor(store).await;
    ok(store.apply(&put_image("r", "x", &app)).await, "image");
    assert_eq!(
        described(&tags(store, "r", None).await),
        [("x".to_owned(), app.digest.to_string(), None)]
    );
    assert_eq!(
        manifest_keys(store, "r", Untagged::Only).await,
        [(None, first.digest.to_string(), first.artifact_type.clone())],
        "the artifact is still held, now untagged"
    );
    ok(
        store.apply(&put_artifact("r", "x", &second)).await,
        "second",
    );
    assert_eq!(
        described(&tags(store, "r", None).await),
        [entry("x", &second)]
    );
    assert!(
        ok(store.repository_tags(&repository_name("r")).await, "tags")
            .unwrap_or_default()
            .is_empty()
    );
    ok(store.apply(&delete_tag("r", "x")).await, "delete tag");
    assert!(tags(store, "r", None).await.is_empty());
    let moves: Vec<_> = records_after(store, start)
        .await
        .into_iter()
        .map(|r| (r.kind, r.digest, r.previous_digest))
        .collect();
    assert_eq!(
        moves,
        [
            (
                ChangeKind::TagUpdated,
                Some(app.digest.clone()),
                Some(first.digest.clone())
            ),
            (
                ChangeKind::TagUpdated,
                Some(second.digest.clone()),
                Some(app.digest.clone())
            ),
            (ChangeKind::TagDeleted, None, Some(second.digest.clone())),
        ]
    );

    // An image held by digest before it was tagged is described as an image, not by
    // what its push told.
    let held_image = image("moving held image").build();
    let mut held = artifact(
        "moving held image",
        "application/vnd.oci.image.config.v1+json",
    );
    held.media_type = held_image.media_type.clone();
    ok(
        store
            .apply(&TagChange::PutUntagged {
                repository: repository_name("r"),
                manifest: held,
            })
            .await,
        "held",
    );
    let start = cursor(store).await;
    ok(
        store.apply(&put_image("r", "img", &held_image)).await,
        "tag it",
    );
    let tagged: Vec<_> = records_after(store, start)
        .await
        .into_iter()
        .map(|r| (r.kind, r.media_type, r.artifact_type))
        .collect();
    assert_eq!(
        tagged,
        [(
            ChangeKind::TagCreated,
            Some(held_image.media_type.clone()),
            None
        )]
    );
    ok(store.apply(&delete_tag("r", "img")).await, "untag it");
    let start = cursor(store).await;
    let rescan = repo("r").image("img", &held_image).build();
    ok(store.replace_repository(&rescan).await, "tag it by a scan");
    let scanned: Vec<_> = records_after(store, start)
        .await
        .into_iter()
        .map(|r| (r.kind, r.artifact_type))
        .collect();
    assert_eq!(scanned, [(ChangeKind::TagCreated, None)]);
    ok(store.apply(&delete_tag("r", "img")).await, "untag it again");

    // Held by digest first, then tagged twice; deleting the manifest takes both tags.
    let loose = artifact("moving loose", SPDX);
    ok(
        store
            .apply(&put_untagged("r", &loose.digest, OCI_MANIFEST, loose.size))
            .await,
        "untagged",
    );
    ok(store.apply(&put_artifact("r", "y", &loose)).await, "y");
    ok(store.apply(&put_artifact("r", "z", &loose)).await, "z");
    assert!(
        !manifest_keys(store, "r", Untagged::Only)
            .await
            .iter()
            .any(|(_, d, _)| *d == loose.digest.to_string()),
        "tagged now"
    );
    let start = cursor(store).await;
    ok(
        store.apply(&delete_manifest("r", &loose.digest)).await,
        "delete manifest",
    );
    assert!(tags(store, "r", None).await.is_empty());
    let deleted: Vec<_> = records_after(store, start)
        .await
        .into_iter()
        .map(|r| (r.kind, r.tag.as_ref().map(Tag::to_string)))
        .collect();
    assert_eq!(
        deleted,
        [
            (ChangeKind::TagDeleted, Some("y".to_owned())),
            (ChangeKind::TagDeleted, Some("z".to_owned())),
        ],
        "a tagged artifact's delete records its tags, not an untagged manifest"
    );
    assert!(
        !manifest_keys(store, "r", Untagged::Include)
            .await
            .iter()
            .any(|(_, d, _)| *d == loose.digest.to_string())
    );
}

/// A snapshot's artifact tags are set exactly, like its image tags: an identical
/// re-scan changes nothing (times included), a changed one records what changed, a
/// referrer among them is listed and recorded once, and a tag in both maps is refused.
pub async fn replace_sets_artifact_tags_exactly(store: &dyn Store) {
    let app = image("scanned app").build();
    let chart = artifact("scanned chart", HELM);
    let mut signature = artifact(
        "scanned signature",
        "application/vnd.dev.cosign.artifact.sig.v1+json",
    );
    signature.subject = Some(app.digest.clone());
    let mut snapshot = repo("s").image("v1", &app).at(time(10)).build();
    snapshot.artifacts.insert(tag_name("chart"), chart.clone());
    snapshot
        .artifacts
        .insert(tag_name("signed"), signature.clone());
    ok(store.replace_repository(&snapshot).await, "replace");
    let listed = tags(store, "s", None).await;
    assert_eq!(
        described(&listed),
        [
            entry("chart", &chart),
            entry("signed", &signature),
            ("v1".to_owned(), app.digest.to_string(), None),
        ]
    );
    assert!(listed.iter().all(|t| t.updated == time(10)));
    let referrers = ok(
        store
            .list_referrers(&repository_name("s"), &app.digest, None)
            .await,
        "list_referrers",
    )
    .unwrap_or_default();
    assert_eq!(
        referrers.iter().map(|r| &r.digest).collect::<Vec<_>>(),
        [&signature.digest],
        "a tagged referrer is a referrer"
    );
    let all = records_after(store, ChangeCursor::default()).await;
    assert_eq!(
        all.iter()
            .filter(|r| r.kind == ChangeKind::ReferrerCreated)
            .count(),
        1
    );

    let generation = ok(store.generation().await, "generation");
    let mut again = snapshot.clone();
    again.at = time(20);
    again.manifests.clear();
    ok(store.replace_repository(&again).await, "rescan");
    assert_eq!(ok(store.generation().await, "generation"), generation);
    assert!(
        tags(store, "s", None)
            .await
            .iter()
            .all(|t| t.updated == time(10)),
        "an identical re-scan keeps every time"
    );

    let start = cursor(store).await;
    let mut changed = again.clone();
    changed.at = time(30);
    changed.artifacts.remove(&tag_name("signed"));
    let newer = artifact("scanned chart 2", HELM);
    changed.artifacts.insert(tag_name("chart"), newer.clone());
    ok(store.replace_repository(&changed).await, "changed");
    let moves: Vec<_> = records_after(store, start)
        .await
        .into_iter()
        .map(|r| (r.kind, r.tag.as_ref().map(Tag::to_string), r.artifact_type))
        .collect();
    assert_eq!(
        moves,
        [
            (
                ChangeKind::TagUpdated,
                Some("chart".to_owned()),
                Some(HELM.to_owned())
            ),
            (ChangeKind::TagDeleted, Some("signed".to_owned()), None),
        ]
    );
    assert_eq!(
        described(&tags(store, "s", None).await),
        [
            entry("chart", &newer),
            ("v1".to_owned(), app.digest.to_string(), None),
        ]
    );

    // A tag that moves between image and artifact at the same digest (a cosign
    // signature, classified by its tag's name) keeps its time and history and records
    // nothing; what the index answers changes, so the generation moves.
    let signature_image = image("scanned class").build();
    let signature_artifact = artifact(
        "scanned class",
        "application/vnd.dev.cosign.artifact.sig.v1+json",
    );
    assert_eq!(signature_image.digest, signature_artifact.digest);
    let as_image = repo("c")
        .image("sig", &signature_image)
        .at(time(40))
        .build();
    ok(store.replace_repository(&as_image).await, "as image");
    let mut as_artifact = repo("c").at(time(50)).build();
    as_artifact
        .artifacts
        .insert(tag_name("sig"), signature_artifact.clone());
    for (step, snapshot, artifact_type) in [
        (
            "to artifact",
            &as_artifact,
            signature_artifact.artifact_type.clone(),
        ),
        ("back to image", &as_image, None),
    ] {
        let before = ok(store.generation().await, "generation");
        let start = cursor(store).await;
        ok(store.replace_repository(snapshot).await, step);
        assert!(
            ok(store.generation().await, "generation") > before,
            "{step}"
        );
        assert!(records_after(store, start).await.is_empty(), "{step}");
        let listed = tags(store, "c", None).await;
        assert_eq!(listed.len(), 1, "{step}");
        assert_eq!(
            (listed[0].updated, listed[0].artifact_type.clone()),
            (time(40), artifact_type),
            "{step}"
        );
        let history = ok(
            store
                .tag_history(&repository_name("c"), &tag_name("sig"))
                .await,
            "tag_history",
        )
        .unwrap_or_default();
        assert_eq!(history.len(), 1, "{step}");
        let indexed = run(store, "repository=c").await;
        assert_eq!(indexed.is_empty(), step == "to artifact", "{step}");
    }

    let generation = ok(store.generation().await, "generation");
    let mut both = changed.clone();
    both.artifacts.insert(tag_name("v1"), chart.clone());
    assert!(matches!(
        store.replace_repository(&both).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(ok(store.generation().await, "generation"), generation);
}
