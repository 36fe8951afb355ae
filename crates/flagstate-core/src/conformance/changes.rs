//! Change log contract: one record per visible change, in the same transaction, in
//! cursor order; filters, limits and retention.

use std::time::Duration;

use super::fixtures::{
    at, delete_manifest, delete_tag, image, list, put_image, put_list, repo, repository_name, time,
};
use super::ok;
use crate::changes::{ChangeCursor, ChangeFilter, ChangeKind, ChangePage, ChangeRetention};
use crate::store::Store;

async fn read(
    store: &dyn Store,
    after: ChangeCursor,
    filter: &ChangeFilter,
    limit: usize,
) -> ChangePage {
    ok(
        store.changes_since(after, filter, limit).await,
        "changes_since",
    )
}

async fn everything(store: &dyn Store) -> ChangePage {
    read(
        store,
        ChangeCursor::at_generation(0),
        &ChangeFilter::default(),
        usize::MAX,
    )
    .await
}

/// A compact view of a record: kind, repository, tag, digest, previous digest.
type Summary = (
    ChangeKind,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn summary(page: &ChangePage) -> Vec<Summary> {
    page.records
        .iter()
        .map(|r| {
            (
                r.kind,
                r.repository.to_string(),
                r.tag.as_ref().map(|t| t.to_string()),
                r.digest.as_ref().map(|d| d.to_string()),
                r.previous_digest.as_ref().map(|d| d.to_string()),
            )
        })
        .collect()
}

fn rec(
    kind: ChangeKind,
    repository: &str,
    tag: Option<&str>,
    digest: Option<&crate::Digest>,
    previous: Option<&crate::Digest>,
) -> Summary {
    (
        kind,
        repository.to_owned(),
        tag.map(str::to_owned),
        digest.map(|d| d.to_string()),
        previous.map(|d| d.to_string()),
    )
}

/// Every write that changes tags or repositories records exactly those changes, under
/// the generation it returned, in order; writes that change nothing record nothing.
pub async fn changes_record_every_visible_change_in_order(store: &dyn Store) {
    use ChangeKind::*;
    let fresh = everything(store).await;
    assert!(fresh.records.is_empty());
    assert!(
        fresh.oldest <= ChangeCursor::at_generation(0),
        "a fresh log starts at 0"
    );
    let (a, b) = (image("a").build(), image("b").build());
    let l = list("l").child(&image("x").build()).build();
    let snapshot = repo("app")
        .image("latest", &a)
        .image("old", &a)
        .at(time(1))
        .build();
    let g1 = ok(store.replace_repository(&snapshot).await, "scan");
    ok(
        store.replace_repository(&snapshot).await,
        "identical rescan",
    );
    let moved = repo("app")
        .image("latest", &b)
        .image("new", &a)
        .at(time(2))
        .build();
    let g2 = ok(
        store.replace_repository(&moved).await,
        "rescan with changes",
    );
    let g3 = ok(
        store
            .apply(&at(put_list("app", "multi", &l), time(3)))
            .await,
        "put",
    );
    ok(
        store
            .apply(&at(put_list("app", "multi", &l), time(4)))
            .await,
        "same put",
    );
    let g4 = ok(
        store.apply(&at(delete_tag("app", "multi"), time(5))).await,
        "delete",
    );
    ok(
        store.apply(&at(delete_tag("app", "multi"), time(6))).await,
        "delete again",
    );
    let g5 = ok(
        store.apply(&at(put_image("svc", "v1", &a), time(7))).await,
        "new repo",
    );
    let g6 = ok(
        store
            .apply(&at(delete_manifest("app", &a.digest), time(8)))
            .await,
        "manifest",
    );
    let g7 = ok(
        store.remove_repository(&repository_name("svc")).await,
        "remove",
    );
    ok(
        store.remove_repository(&repository_name("svc")).await,
        "remove again",
    );

    let log = everything(store).await;
    assert_eq!(
        summary(&log),
        vec![
            rec(RepositoryCreated, "app", None, None, None),
            rec(TagCreated, "app", Some("latest"), Some(&a.digest), None),
            rec(TagCreated, "app", Some("old"), Some(&a.digest), None),
            rec(
                TagUpdated,
                "app",
                Some("latest"),
                Some(&b.digest),
                Some(&a.digest)
            ),
            rec(TagCreated, "app", Some("new"), Some(&a.digest), None),
            rec(TagDeleted, "app", Some("old"), None, Some(&a.digest)),
            rec(TagCreated, "app", Some("multi"), Some(l.digest()), None),
            rec(TagDeleted, "app", Some("multi"), None, Some(l.digest())),
            rec(RepositoryCreated, "svc", None, None, None),
            rec(TagCreated, "svc", Some("v1"), Some(&a.digest), None),
            rec(TagDeleted, "app", Some("new"), None, Some(&a.digest)),
            rec(RepositoryDeleted, "svc", None, None, None),
        ]
    );
    let generations: Vec<u64> = log.records.iter().map(|r| r.cursor.generation).collect();
    assert_eq!(
        generations,
        [g1, g1, g1, g2, g2, g2, g3, g4, g5, g5, g6, g7]
    );
    let cursors: Vec<ChangeCursor> = log.records.iter().map(|r| r.cursor).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    let times: Vec<_> = log.records[..10].iter().map(|r| r.time).collect();
    assert_eq!(
        times,
        [
            time(1),
            time(1),
            time(1),
            time(2),
            time(2),
            time(2),
            time(3),
            time(5),
            time(7),
            time(7)
        ]
    );
    assert_eq!(
        log.records[3].media_type.as_deref(),
        Some(b.media_type.as_str())
    );
    assert_eq!(
        log.records[6].media_type.as_deref(),
        Some(l.list.media_type.as_str())
    );
    assert_eq!(log.next, cursors[11]);
    // Reading from a generation gives exactly what came after it.
    let after_g2 = read(
        store,
        ChangeCursor::at_generation(g2),
        &ChangeFilter::default(),
        100,
    )
    .await;
    assert_eq!(after_g2.records.len(), 6);
    assert_eq!(after_g2.records[0].cursor.generation, g3);
    let at_end = read(store, log.next, &ChangeFilter::default(), 100).await;
    assert!(at_end.records.is_empty());
    assert_eq!(
        at_end.next, log.next,
        "nothing new: next stays where the reader is"
    );
}

/// Filters keep repositories, namespaces and kinds; a limit stops early; `next` is the
/// last record read, so a filtered reader does not read skipped records again.
pub async fn changes_since_filters_and_limits(store: &dyn Store) {
    let a = image("a").build();
    for name in ["ns/a", "ns/deep/b", "nsx/c", "other"] {
        ok(store.apply(&put_image(name, "v1", &a)).await, "put");
    }
    ok(store.apply(&delete_tag("ns/a", "v1")).await, "delete");
    let start = ChangeCursor::at_generation(0);
    let names = |page: &ChangePage| -> Vec<String> {
        page.records
            .iter()
            .map(|r| r.repository.to_string())
            .collect()
    };
    let namespace = ChangeFilter {
        namespace: Some("ns".into()),
        ..ChangeFilter::default()
    };
    let page = read(store, start, &namespace, 100).await;
    assert_eq!(
        names(&page),
        ["ns/a", "ns/a", "ns/deep/b", "ns/deep/b", "ns/a"]
    );
    let one = ChangeFilter {
        repository: Some(repository_name("nsx/c")),
        ..ChangeFilter::default()
    };
    let page = read(store, start, &one, 100).await;
    assert_eq!(names(&page), ["nsx/c", "nsx/c"]);
    let all = everything(store).await;
    assert_eq!(page.next, all.next, "a filtered read reads to the end");
    let deletes = ChangeFilter {
        kinds: [ChangeKind::TagDeleted].into(),
        ..ChangeFilter::default()
    };
    let page = read(store, start, &deletes, 100).await;
    assert_eq!(summary(&page).len(), 1);
    assert_eq!(page.records[0].repository.as_str(), "ns/a");
    // Limits: two records, then continue from `next`.
    let first = read(store, start, &ChangeFilter::default(), 2).await;
    assert_eq!(first.records.len(), 2);
    assert_eq!(first.next, first.records[1].cursor);
    let rest = read(store, first.next, &ChangeFilter::default(), 100).await;
    assert_eq!(first.records.len() + rest.records.len(), all.records.len());
    assert_eq!(rest.records[0], all.records[2]);
    let created = ChangeFilter {
        kinds: [ChangeKind::RepositoryCreated].into(),
        ..ChangeFilter::default()
    };
    let page = read(store, start, &created, 1).await;
    assert_eq!(names(&page), ["ns/a"]);
    let page = read(store, page.next, &created, 1).await;
    assert_eq!(
        names(&page),
        ["ns/deep/b"],
        "continues after the last record read"
    );
    assert!(
        read(store, start, &ChangeFilter::default(), 0)
            .await
            .records
            .is_empty()
    );
}

/// Retention drops the oldest records (by count, and by age as a prefix) and moves the
/// floor past them; the rest reads as before.
pub async fn prune_changes_drops_the_oldest_and_moves_the_floor(store: &dyn Store) {
    let a = image("a").build();
    for i in 0..6 {
        let change = at(put_image("app", &format!("t{i}"), &a), time(i * 100));
        ok(store.apply(&change).await, "put");
    }
    // 7 records: the repository's creation and six tags.
    let before = everything(store).await;
    assert_eq!(before.records.len(), 7);
    let g = ok(store.generation().await, "generation");
    let keep = |max_records, max_age| ChangeRetention {
        max_records,
        max_age,
    };
    assert_eq!(
        ok(
            store.prune_changes(&keep(10, None), time(1000)).await,
            "prune"
        ),
        0
    );
    assert_eq!(
        ok(
            store.prune_changes(&keep(5, None), time(1000)).await,
            "prune"
        ),
        2
    );
    let after = everything(store).await;
    assert_eq!(after.records, before.records[2..]);
    assert_eq!(
        after.oldest, before.records[1].cursor,
        "the floor is the last record dropped"
    );
    assert_eq!(
        ok(store.generation().await, "generation"),
        g,
        "pruning never bumps"
    );
    // By age: at 700 with 250 s, records before 450 go (t1 at 100 … t4 at 400).
    let by_age = keep(100, Some(Duration::from_secs(250)));
    assert_eq!(
        ok(store.prune_changes(&by_age, time(700)).await, "prune"),
        4
    );
    let after = everything(store).await;
    assert_eq!(after.records, before.records[6..]);
    assert_eq!(after.oldest, before.records[5].cursor);
    // The log goes on after pruning.
    ok(store.apply(&put_image("app", "later", &a)).await, "put");
    assert_eq!(everything(store).await.records.len(), 2);
}

/// Delivery cursors are kept per endpoint name, replaced by each store (backwards too),
/// never bump the generation, and leave the change log as it was.
pub async fn delivery_cursors_are_kept_per_endpoint_without_bumping(store: &dyn Store) {
    assert_eq!(
        ok(store.delivery_cursor("audit").await, "delivery_cursor"),
        None,
        "an endpoint never stored has no cursor"
    );
    let a = image("a").build();
    ok(store.apply(&put_image("app", "v1", &a)).await, "put");
    let log = everything(store).await;
    let g = ok(store.generation().await, "generation");
    let first = log.records[0].cursor;
    let last = log.records[1].cursor;
    ok(store.set_delivery_cursor("audit", last).await, "set");
    ok(
        store
            .set_delivery_cursor("ci", ChangeCursor::at_generation(g))
            .await,
        "set",
    );
    assert_eq!(ok(store.delivery_cursor("audit").await, "get"), Some(last));
    assert_eq!(
        ok(store.delivery_cursor("ci").await, "get"),
        Some(ChangeCursor::at_generation(g)),
        "a cursor between generations keeps its position"
    );
    assert_eq!(ok(store.delivery_cursor("Audit").await, "get"), None);
    ok(store.set_delivery_cursor("audit", first).await, "set");
    assert_eq!(
        ok(store.delivery_cursor("audit").await, "get"),
        Some(first),
        "a stored cursor is replaced, not merged"
    );
    let name = "team/ünïcode endpoint";
    ok(store.set_delivery_cursor(name, first).await, "set");
    assert_eq!(ok(store.delivery_cursor(name).await, "get"), Some(first));
    assert_eq!(
        ok(store.generation().await, "generation"),
        g,
        "delivery state never bumps the generation"
    );
    assert_eq!(everything(store).await, log, "the log is untouched");
}
