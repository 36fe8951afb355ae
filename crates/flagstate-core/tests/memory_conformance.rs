//! The shared conformance suite run against [`MemoryStore`].

use flagstate_core::MemoryStore;

async fn fresh_store() -> MemoryStore {
    MemoryStore::new()
}

flagstate_core::conformance_tests!(fresh_store);
