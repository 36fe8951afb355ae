//! `flagstate scan`: one full scan of the registry into the store, with a progress bar on
//! a terminal and a summary line at the end.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use flagstate_core::indexer::ScanProgress;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, ConfigError};
use crate::error::CliError;
use crate::setup;

/// Shows scan progress as a bar on standard error (hidden when that is not a terminal).
pub(crate) struct Bar(ProgressBar);

impl Bar {
    /// A bar, shown when `show` is set and standard error is a terminal.
    pub(crate) fn new(show: bool) -> Self {
        if !show || !std::io::stderr().is_terminal() {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::new_spinner();
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} repositories {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("listing repositories");
        // Log lines (scan start, progress, failures) are written around the bar.
        crate::logging::attach_bar(&bar);
        Bar(bar)
    }

    /// Removes the bar from the terminal.
    pub(crate) fn finish(&self) {
        crate::logging::detach_bar();
        self.0.finish_and_clear();
    }
}

impl ScanProgress for Bar {
    fn total_repositories(&self, n: u64) {
        self.0.set_length(n);
        self.0.set_message("");
    }

    fn repository_done(&self, name: &str, _manifests_fetched: u64) {
        self.0.inc(1);
        self.0.set_message(name.to_owned());
    }
}

/// Runs the command.
pub async fn run(config: &Config) -> Result<ExitCode, CliError> {
    if config.read_only {
        return Err(
            ConfigError::invalid("read_only", "`scan` writes the index; unset read_only").into(),
        );
    }
    let store = setup::open_store(config).await?;
    let indexer = setup::indexer(config, store)?;
    let bar = Bar::new(true);
    let result = indexer.full_scan(&bar).await;
    bar.finish();
    let report = result?;
    for failure in &report.repositories_failed {
        eprintln!("failed: {failure}");
    }
    let requests = indexer.client().stats();
    println!(
        "scanned {} of {} repositories in {:.1?}: {} tags, {} manifests and {} configs fetched, {} repositories removed, {} failed; {} registry requests, {} tags confirmed unchanged (304)",
        report.repositories_scanned,
        report.repositories_total,
        report.duration,
        report.tags_seen,
        report.manifests_fetched,
        report.blobs_fetched,
        report.repositories_removed.len(),
        report.repositories_failed.len(),
        requests.requests,
        requests.manifest_not_modified,
    );
    Ok(if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
