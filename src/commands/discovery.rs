//! `flagstate ls [REPO]` and `flagstate history REPO:TAG`: the discovery listings of
//! `/v2/_flagstate/…`, read from the configured store and printed one item per line,
//! tab-separated, so they pipe into `cut`, `sort` and `awk`.

use std::io::Write;
use std::process::ExitCode;

use flagstate_core::discovery::{ListOrder, Listing, RepositoryListing, TagListing};
use flagstate_core::{RepositoryName, Store, Tag};

use crate::cli::{HistoryArgs, LsArgs};
use crate::config::Config;
use crate::error::CliError;
use crate::setup;

/// Items read from the store at once while walking a listing.
const PAGE: usize = 1000;

fn repository_name(text: &str) -> Result<RepositoryName, CliError> {
    RepositoryName::parse(text)
        .map_err(|e| CliError::Usage(format!("{text:?} is not a repository name: {e}")))
}

/// Writes `lines` to standard output; a closed pipe (`| head`) is not a failure.
fn print(lines: &[String]) -> Result<ExitCode, CliError> {
    let mut stdout = std::io::stdout().lock();
    let written = lines
        .iter()
        .try_for_each(|line| writeln!(stdout, "{line}"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(CliError::Runtime(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

/// Runs `ls`: repositories by name (`NAME TAGS UPDATED`), or a repository's tags newest
/// first (`TAG DIGEST UPDATED`).
pub async fn ls(args: &LsArgs, config: &Config) -> Result<ExitCode, CliError> {
    // Arguments are checked before the store is opened.
    let repository = args
        .repository
        .as_deref()
        .map(repository_name)
        .transpose()?;
    let namespace = args
        .namespace
        .as_deref()
        .map(repository_name)
        .transpose()?
        .map(|n| n.to_string());
    let store = setup::open_existing_store(config).await?;
    let mut lines = Vec::new();
    match repository {
        None => {
            let mut listing = RepositoryListing {
                namespace,
                listing: Listing::first(ListOrder::Name, PAGE),
            };
            loop {
                let page = store.list_repositories(&listing).await?;
                lines.extend(
                    page.iter()
                        .map(|r| format!("{}\t{}\t{}", r.name, r.tags, r.updated)),
                );
                match page.last() {
                    Some(last) if page.len() == PAGE => {
                        listing.listing.after = Some(listing.listing.position_of(last));
                    }
                    _ => break,
                }
            }
        }
        Some(name) => {
            let mut listing = TagListing::all(Listing::first(ListOrder::NewestFirst, PAGE));
            loop {
                let page = store.list_tags(&name, &listing).await?.ok_or_else(|| {
                    CliError::NotFound(format!("repository {name} is not in the index"))
                })?;
                // A tag pointing at an artifact names its type in a fourth column.
                lines.extend(page.iter().map(|t| match &t.artifact_type {
                    Some(artifact_type) => {
                        format!("{}\t{}\t{}\t{artifact_type}", t.tag, t.digest, t.updated)
                    }
                    None => format!("{}\t{}\t{}", t.tag, t.digest, t.updated),
                }));
                match page.last() {
                    Some(last) if page.len() == PAGE => {
                        listing.listing.after = Some(listing.listing.position_of(last));
                    }
                    _ => break,
                }
            }
        }
    }
    print(&lines)
}

/// Runs `history`: `SINCE DIGEST` per line, oldest first.
pub async fn history(args: &HistoryArgs, config: &Config) -> Result<ExitCode, CliError> {
    let (repository, tag) = args.reference.rsplit_once(':').ok_or_else(|| {
        CliError::Usage(format!(
            "{:?} is not REPO:TAG (a repository and a tag, joined by `:`)",
            args.reference
        ))
    })?;
    let repository = repository_name(repository)?;
    let tag = Tag::parse(tag).map_err(|e| CliError::Usage(format!("{tag:?} is not a tag: {e}")))?;
    let store = setup::open_existing_store(config).await?;
    let history = store.tag_history(&repository, &tag).await?.ok_or_else(|| {
        CliError::NotFound(format!("repository {repository} is not in the index"))
    })?;
    if history.is_empty() {
        return Err(CliError::NotFound(format!(
            "the index has no history of {repository}:{tag}"
        )));
    }
    let lines: Vec<String> = history
        .iter()
        .map(|entry| format!("{}\t{}", entry.since, entry.digest))
        .collect();
    print(&lines)
}
