//! Indexes a registry into memory and prints one query's answer as index JSON.
//!
//! ```text
//! cargo run --example index_to_memory -- http://127.0.0.1:5000/ 'os=linux&tag=latest'
//! ```

use std::sync::Arc;

use flagstate_core::indexer::{Indexer, IndexerConfig, NoProgress};
use flagstate_core::registry::{RegistryClient, RegistryConfig};
use flagstate_core::{IndexQuery, MemoryStore, StoreExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: index_to_memory REGISTRY_URL [QUERY]")?;
    let query = IndexQuery::parse(&args.next().unwrap_or_default())?;

    let client = RegistryClient::new(RegistryConfig::new(url.parse()?))?;
    let store = Arc::new(MemoryStore::new());
    let indexer = Indexer::new(client, store.clone(), IndexerConfig::default());
    let report = indexer.full_scan(&NoProgress).await?;
    eprintln!(
        "indexed {} repositories ({} failed), {} manifests fetched",
        report.repositories_scanned,
        report.repositories_failed.len(),
        report.manifests_fetched
    );

    let response = store.index(&url, &query).await?;
    println!("{}", String::from_utf8_lossy(&response.to_json()));
    Ok(())
}
