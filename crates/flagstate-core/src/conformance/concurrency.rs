//! Atomicity under concurrency: many writes and reads in flight at once on one store.

use futures::future::join_all;

use super::fixtures::{image, put_image, query, repository_name};
use super::ok;
use crate::store::Store;

/// Forty concurrent `Put`s (four repositories, ten new tags each) with queries in
/// between: every write succeeds, each returns a distinct generation, and the final
/// state holds every tag.
pub async fn concurrent_writes_are_atomic(store: &dyn Store) {
    let g0 = ok(store.generation().await, "generation");
    let images: Vec<_> = (0..10).map(|i| image(&format!("c{i}")).build()).collect();
    let changes: Vec<_> = (0..40)
        .map(|i| put_image(&format!("repo{}", i % 4), &format!("t{i}"), &images[i % 10]))
        .collect();
    let writes = join_all(changes.iter().map(|c| store.apply(c)));
    let q = query("tag:matches=t*");
    let reads = join_all((0..10).map(|_| store.query(&q)));
    let (written, read) = futures::join!(writes, reads);
    let mut generations: Vec<u64> = written
        .into_iter()
        .map(|r| ok(r, "concurrent put"))
        .collect();
    for r in read {
        ok(r, "concurrent query");
    }
    generations.sort_unstable();
    generations.dedup();
    assert_eq!(
        generations.len(),
        40,
        "each bumping write has its own generation"
    );
    assert!(generations[0] > g0);
    let last = ok(store.generation().await, "generation");
    assert!(last >= g0 + 40, "forty bumps, got {g0} -> {last}");
    for r in 0..4 {
        let tags = ok(
            store
                .repository_tags(&repository_name(&format!("repo{r}")))
                .await,
            "tags",
        );
        assert_eq!(tags.map(|t| t.len()), Some(10), "repo{r}");
    }
    let results = ok(store.query(&q).await, "query");
    let tagged: usize = results
        .iter()
        .flat_map(|r| &r.images)
        .map(|i| i.tags.as_ref().map_or(0, Vec::len))
        .sum();
    assert_eq!(tagged, 40);
}
