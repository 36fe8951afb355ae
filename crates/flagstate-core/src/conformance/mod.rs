//! The conformance suite every [`Store`] backend runs from its own tests
//! (feature `conformance`).
//!
//! Each suite function is a plain `pub async fn name(store: &dyn Store)` that expects a
//! **fresh, empty** store and panics with a message when the store breaks the contract.
//! [`conformance_tests!`](crate::conformance_tests) expands to one `#[tokio::test]` per
//! function, so a backend's whole conformance test file is:
//!
//! ```ignore
//! // tests/conformance.rs of a backend crate; needs `flagstate-core` with feature
//! // `conformance` and `tokio` (features `macros`, `rt-multi-thread`) as dev-dependencies.
//! async fn fresh_store() -> my_backend::MyStore {
//!     my_backend::MyStore::open_empty_for_tests().await.unwrap()
//! }
//! flagstate_core::conformance_tests!(fresh_store);
//! ```
//!
//! The macro argument is anything callable with no arguments that returns a future of a
//! value implementing `Store` (an `async fn`, or a closure `|| async { … }`); it is
//! called once per test. Tests run on a multi-threaded tokio runtime. When a store needs
//! something kept alive next to it (a temporary directory, a throwaway database), return
//! [`Guarded::new(store, guard)`](Guarded).
//!
//! Tests that depend on optional behaviour select themselves by
//! [`Capabilities`], never by backend name. Fixtures live in
//! [`fixtures`]; a new test is a function in one of the submodules plus a line in the
//! macro's list.

mod artifacts;
mod changes;
mod concurrency;
mod discovery;
pub mod fixtures;
mod lists;
mod output;
mod patterns;
mod queries;
mod random;
mod readiness;
mod regressions;
mod search;
mod untagged;
mod writes;

pub use artifacts::*;
pub use changes::*;
pub use concurrency::*;
pub use discovery::*;
pub use lists::*;
pub use output::*;
pub use patterns::*;
pub use queries::*;
pub use random::*;
pub use readiness::*;
pub use regressions::*;
pub use search::*;
pub use untagged::*;
pub use writes::*;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use crate::digest::Digest;
use crate::model::{Manifest, RepositorySnapshot, TagChange};
use crate::name::{RepositoryName, Tag};
use crate::query::IndexQuery;
use crate::response::RepositoryEntry;
use crate::store::{
    Capabilities, GcStats, Generation, SearchPage, Store, StoreError, StoreNotReady,
};

/// Unwraps a store result, panicking with what was being done.
pub(crate) fn ok<T>(result: Result<T, StoreError>, doing: &str) -> T {
    result.unwrap_or_else(|e| panic!("{doing}: unexpected store error: {e}"))
}

/// A store together with something that must live as long as it (a temporary directory,
/// a database dropped on `Drop`); it is a `Store` that delegates every call.
#[derive(Debug)]
pub struct Guarded<S, G> {
    /// The store under test.
    pub store: S,
    _guard: G,
}

impl<S, G> Guarded<S, G> {
    /// Keeps `guard` alive as long as `store`.
    pub fn new(store: S, guard: G) -> Self {
        Guarded {
            store,
            _guard: guard,
        }
    }
}

#[async_trait]
impl<S: Store, G: std::fmt::Debug + Send + Sync + 'static> Store for Guarded<S, G> {
    async fn replace_repository(
        &self,
        snapshot: &RepositorySnapshot,
    ) -> Result<Generation, StoreError> {
        self.store.replace_repository(snapshot).await
    }
    async fn remove_repository(&self, name: &RepositoryName) -> Result<Generation, StoreError> {
        self.store.remove_repository(name).await
    }
    async fn apply(&self, change: &TagChange) -> Result<Generation, StoreError> {
        self.store.apply(change).await
    }
    async fn repositories(&self) -> Result<Vec<RepositoryName>, StoreError> {
        self.store.repositories().await
    }
    async fn repository_tags(
        &self,
        name: &RepositoryName,
    ) -> Result<Option<BTreeMap<Tag, Digest>>, StoreError> {
        self.store.repository_tags(name).await
    }
    async fn known_manifests(&self, digests: &[Digest]) -> Result<BTreeSet<Digest>, StoreError> {
        self.store.known_manifests(digests).await
    }
    async fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>, StoreError> {
        self.store.manifest(digest).await
    }
    async fn query(&self, query: &IndexQuery) -> Result<Vec<RepositoryEntry>, StoreError> {
        self.store.query(query).await
    }
    async fn list_repositories(
        &self,
        listing: &crate::discovery::RepositoryListing,
    ) -> Result<Vec<crate::discovery::RepositoryInfo>, StoreError> {
        self.store.list_repositories(listing).await
    }
    async fn list_tags(
        &self,
        repository: &RepositoryName,
        listing: &crate::discovery::TagListing,
    ) -> Result<Option<Vec<crate::discovery::TagInfo>>, StoreError> {
        self.store.list_tags(repository, listing).await
    }
    async fn list_manifests(
        &self,
        repository: &RepositoryName,
        listing: &crate::discovery::ManifestListing,
    ) -> Result<Option<Vec<crate::discovery::ManifestInfo>>, StoreError> {
        self.store.list_manifests(repository, listing).await
    }
    async fn list_referrers(
        &self,
        repository: &RepositoryName,
        subject: &crate::digest::Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<crate::model::PushedManifest>>, StoreError> {
        self.store
            .list_referrers(repository, subject, artifact_type)
            .await
    }
    async fn tag_history(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Vec<crate::discovery::HistoryEntry>>, StoreError> {
        self.store.tag_history(repository, tag).await
    }
    async fn prune_history(
        &self,
        retention: &crate::discovery::HistoryRetention,
        now: crate::Timestamp,
    ) -> Result<u64, StoreError> {
        self.store.prune_history(retention, now).await
    }
    async fn changes_since(
        &self,
        after: crate::ChangeCursor,
        filter: &crate::ChangeFilter,
        limit: usize,
    ) -> Result<crate::ChangePage, StoreError> {
        self.store.changes_since(after, filter, limit).await
    }
    async fn prune_changes(
        &self,
        retention: &crate::ChangeRetention,
        now: crate::Timestamp,
    ) -> Result<u64, StoreError> {
        self.store.prune_changes(retention, now).await
    }
    async fn delivery_cursor(
        &self,
        endpoint: &str,
    ) -> Result<Option<crate::ChangeCursor>, StoreError> {
        self.store.delivery_cursor(endpoint).await
    }
    async fn set_delivery_cursor(
        &self,
        endpoint: &str,
        cursor: crate::ChangeCursor,
    ) -> Result<(), StoreError> {
        self.store.set_delivery_cursor(endpoint, cursor).await
    }
    async fn search(&self, text: &str, offset: u64, limit: u64) -> Result<SearchPage, StoreError> {
        self.store.search(text, offset, limit).await
    }
    async fn generation(&self) -> Result<Generation, StoreError> {
        self.store.generation().await
    }
    async fn registry_url(&self) -> Result<Option<String>, StoreError> {
        self.store.registry_url().await
    }
    async fn set_registry_url(&self, url: &str) -> Result<Generation, StoreError> {
        self.store.set_registry_url(url).await
    }
    async fn collect_garbage(&self) -> Result<GcStats, StoreError> {
        self.store.collect_garbage().await
    }
    async fn readiness(&self) -> Result<(), StoreNotReady> {
        self.store.readiness().await
    }
    fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }
}

/// Expands to one `#[tokio::test]` per conformance suite function, each run against a
/// fresh store from `$make` (see the [module docs](crate::conformance)).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr $(,)?) => {
        $crate::__conformance_tests!($make;
            // writes
            replace_creates_repository,
            replace_identical_does_not_bump,
            replace_removes_tags,
            replace_missing_manifest_changes_nothing,
            replace_rejects_invalid_input,
            stored_manifests_are_immutable,
            remove_repository_keeps_manifests_until_gc,
            apply_put_adds_and_moves_tags,
            apply_put_missing_manifest_changes_nothing,
            apply_delete_tag,
            apply_delete_manifest_stays_in_its_repository,
            deletes_of_absent_things_are_noops,
            garbage_collection,
            known_manifests_reports_complete_manifests,
            listing_repositories_and_tags,
            registry_url_is_stored_with_the_index,
            concurrent_writes_are_atomic,
            // queries
            query_all,
            query_repository,
            query_tag,
            query_tag_matches,
            query_os_and_architecture,
            query_label_forms,
            query_annotation_forms,
            query_or_within_key_and_across_keys,
            query_list_shows_only_matching_children,
            query_tag_on_list_matches_children,
            query_list_platform_wins_over_config,
            query_image_tags_are_all_tags_in_repository,
            query_untagged_manifests_are_invisible,
            unicode_and_html_values_round_trip,
            order_is_independent_of_insertion,
            manifests_round_trip_exactly,
            large_values_round_trip,
            glob_metacharacters_are_literal,
            randomized_queries_match_reference,
            query_stream_is_query_in_bounded_pieces,
            // search
            search_empty_text_matches_nothing,
            search_all_terms_must_match,
            search_prefix_and_case_insensitive,
            search_uses_tagged_images_only,
            search_hits_describe_repositories,
            search_paging_and_total,
            search_ranking_prefers_names,
            // regressions of the original implementation
            regression_label_queries_match,
            regression_tags_do_not_leak_across_repositories,
            regression_repeated_annotation_values_are_ored,
            regression_matches_takes_a_glob,
            regression_order_is_bytewise_and_total,
            // readiness
            healthy_store_is_ready,
            // discovery
            times_follow_changes_and_rescans_keep_them,
            history_records_moves_and_outlives_deleted_tags,
            prune_history_applies_retention,
            listings_order_filter_and_page,
            listings_refuse_positions_of_another_order,
            randomized_walks_match_reference,
            // change log
            changes_record_every_visible_change_in_order,
            changes_since_filters_and_limits,
            prune_changes_drops_the_oldest_and_moves_the_floor,
            delivery_cursors_are_kept_per_endpoint_without_bumping,
            // untagged manifests and the manifest listing
            untagged_manifests_follow_pushes_tags_and_deletes,
            manifest_listing_orders_filters_and_pages,
            sizes_fill_in_for_manifests_stored_without,
            referrers_are_pushed_manifests_naming_the_subject,
            // artifact tags
            artifact_tags_are_listed_and_never_indexed,
            artifact_tags_move_and_go_with_deletes,
            replace_sets_artifact_tags_exactly,
        );
    };
}

/// Implementation detail of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = ($make)().await;
                $crate::conformance::$name(&store).await;
            }
        )*
    };
}
