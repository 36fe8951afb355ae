//! `flagstate index`: writes static index files (the regindexer model).
//!
//! Reads a regindexer configuration file unchanged (`icons_dir`, `icons_uri`, `indexes:
//! {name: {output, registry, registry_public, tags, required_annotations,
//! required_labels, architectures, skip_flatpak_annotations, skip_flatpak_labels,
//! extract_icons}}`) plus one addition, `gzip` per index (also write `<output>.gz`).
//! Each registry named by the indexes is scanned once; every index file is rendered by
//! the same query engine as the server and written atomically, only when its content
//! changed. After a run in which every index was written, icons no index references any
//! more are deleted.
//!
//! A registry whose scan was incomplete (catalog or any repository failed) gets none of
//! its files rewritten: a partial file would silently drop applications that the file
//! already published.
//!
//! With `--watch`, the command keeps running: it listens for registry notifications on
//! `/events` (the same endpoint as the server), keeps the index up to date and rewrites
//! the files whose content changed, debounced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use flagstate_core::icons::IconStore;
use flagstate_core::indexer::{Indexer, IndexerConfig, ScanProgress};
use flagstate_core::registry::{RegistryClient, RegistryConfig};
use flagstate_core::static_index::{IndexSpec, WriteOutcome};
use flagstate_core::{MemoryStore, Store};
use serde::Deserialize;

use crate::cli::IndexArgs;
use crate::commands::scan::Bar;
use crate::config::ConfigError;
use crate::error::CliError;

/// The regindexer configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticIndexConfig {
    /// Directory icons are extracted into; relative paths are resolved against the
    /// configuration file's directory.
    #[serde(default)]
    pub icons_dir: Option<PathBuf>,
    /// Public URI of the icon directory, relative to the index files' URIs.
    #[serde(default)]
    pub icons_uri: Option<String>,
    /// The indexes, by name.
    #[serde(default)]
    pub indexes: BTreeMap<String, IndexSettings>,
    /// regindexer-daemon's section (the fedmsg topic it rebuilds on). Accepted so that
    /// regindexer files work unchanged; flagstate reads registry notifications instead.
    #[serde(default)]
    pub daemon: Option<DaemonSection>,
}

/// regindexer's `daemon:` section: read, reported, not used.
#[derive(Debug, Clone, Deserialize)]
pub struct DaemonSection {
    /// fedmsg topic prefix (regindexer's default `org.fedoraproject`).
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// fedmsg environment (regindexer's default `dev`).
    #[serde(default)]
    pub environment: Option<String>,
    /// Any other messaging setting (`amqp_url`, `queue_name`, …), of regindexer versions
    /// or deployments that consume AMQP.
    #[serde(flatten)]
    pub other: BTreeMap<String, figment::value::Value>,
}

/// One index of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSettings {
    /// Where the JSON file is written (required).
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// The registry to index (required).
    #[serde(default)]
    pub registry: Option<String>,
    /// The registry URL written into the file; defaults to `registry`.
    #[serde(default)]
    pub registry_public: Option<String>,
    /// Tag globs (`*`, `?`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Annotations an image must carry.
    #[serde(default)]
    pub required_annotations: Vec<String>,
    /// Labels an image must carry.
    #[serde(default)]
    pub required_labels: Vec<String>,
    /// Architectures to include.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Drop `org.flatpak.*` / `org.freedesktop.*` annotations.
    #[serde(default)]
    pub skip_flatpak_annotations: bool,
    /// Drop `org.flatpak.*` / `org.freedesktop.*` labels.
    #[serde(default)]
    pub skip_flatpak_labels: bool,
    /// Extract `data:` icons into `icons_dir`.
    #[serde(default)]
    pub extract_icons: bool,
    /// Also write `<output>.gz` (an addition to the regindexer format).
    #[serde(default)]
    pub gzip: bool,
}

/// A checked configuration: specs grouped by the registry they read.
#[derive(Debug, Clone)]
pub struct StaticIndexPlan {
    /// Registry URL → the indexes built from it.
    pub registries: BTreeMap<url::Url, Vec<IndexSpec>>,
    /// Where icons go, when any index extracts them.
    pub icons: Option<IconStore>,
}

impl StaticIndexConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Figment::from(crate::config::yaml_file(path)?)
            .extract()
            .map_err(ConfigError::from_figment)
    }

    /// The line logged when the file has a `daemon:` section, saying what flagstate does
    /// instead of listening to fedmsg; `None` without one.
    pub fn daemon_notice(&self) -> Option<String> {
        let daemon = self.daemon.as_ref()?;
        let mut keys: Vec<&str> = daemon.other.keys().map(String::as_str).collect();
        keys.extend(daemon.topic_prefix.as_ref().map(|_| "topic_prefix"));
        keys.extend(daemon.environment.as_ref().map(|_| "environment"));
        keys.sort_unstable();
        let topic = format!(
            "{}.{}.bodhi.compose.complete",
            daemon
                .topic_prefix
                .as_deref()
                .unwrap_or("org.fedoraproject"),
            daemon.environment.as_deref().unwrap_or("dev"),
        );
        Some(format!(
            "the daemon section ({}) is not used: instead of fedmsg messages on {topic}, flagstate reads the registry's notifications (flagstate index --watch, POST /events)",
            if keys.is_empty() {
                "empty".to_owned()
            } else {
                keys.join(", ")
            }
        ))
    }

    /// Checks the configuration and turns it into a plan. Relative paths are resolved
    /// against `base` (the configuration file's directory).
    pub fn plan(&self, base: &Path) -> Result<StaticIndexPlan, ConfigError> {
        if self.indexes.is_empty() {
            return Err(ConfigError::invalid("indexes", "no index is configured"));
        }
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let icons = match (&self.icons_dir, &self.icons_uri) {
            (Some(dir), uri) => Some(IconStore::new(
                resolve(dir),
                uri.clone().unwrap_or_else(|| "/icons/".into()),
            )),
            (None, _) => None,
        };
        let mut registries: BTreeMap<url::Url, Vec<IndexSpec>> = BTreeMap::new();
        let mut outputs = BTreeSet::new();
        for (name, settings) in &self.indexes {
            let key = |field: &str| format!("indexes.{name}.{field}");
            let output = settings
                .output
                .as_deref()
                .ok_or_else(|| ConfigError::invalid(key("output"), "is required"))?;
            let output = resolve(output);
            if !outputs.insert(output.clone()) {
                return Err(ConfigError::invalid(
                    key("output"),
                    format!("{} is written by another index too", output.display()),
                ));
            }
            let registry = settings
                .registry
                .as_deref()
                .ok_or_else(|| ConfigError::invalid(key("registry"), "is required"))?;
            let registry_url = crate::config::parse_registry_url(registry)
                .map_err(|e| ConfigError::invalid(key("registry"), e))?;
            if settings.extract_icons && icons.is_none() {
                return Err(ConfigError::invalid(
                    key("extract_icons"),
                    "needs icons_dir to be set",
                ));
            }
            let spec = IndexSpec {
                name: name.clone(),
                output,
                registry_public: settings
                    .registry_public
                    .clone()
                    .unwrap_or_else(|| registry.to_owned()),
                tags: settings.tags.clone(),
                required_labels: settings.required_labels.clone(),
                required_annotations: settings.required_annotations.clone(),
                architectures: settings.architectures.clone(),
                skip_flatpak_labels: settings.skip_flatpak_labels,
                skip_flatpak_annotations: settings.skip_flatpak_annotations,
                extract_icons: settings.extract_icons,
                gzip: settings.gzip,
            };
            spec.query()
                .map_err(|e| ConfigError::invalid(format!("indexes.{name}"), e.to_string()))?;
            registries.entry(registry_url).or_default().push(spec);
        }
        Ok(StaticIndexPlan { registries, icons })
    }
}

/// What one pass over all indexes did.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Index name → whether its file changed.
    pub written: BTreeMap<String, WriteOutcome>,
    /// Registries whose indexes were not written, with why.
    pub failed: Vec<(String, String)>,
    /// Icon files deleted as unreferenced.
    pub icons_removed: u64,
}

/// Builds and writes every index of `registry` from `store`, collecting referenced icons.
async fn write_indexes(
    specs: &[IndexSpec],
    store: &dyn Store,
    icons: Option<&IconStore>,
    referenced: &mut BTreeSet<String>,
    report: &mut PassReport,
) -> Result<(), CliError> {
    for spec in specs {
        let built = spec
            .build(store, icons)
            .await
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        for warning in &built.icons.warnings {
            tracing::warn!(index = %spec.name, "icon left out: {warning}");
            eprintln!("warning: index {}: icon left out: {warning}", spec.name);
        }
        referenced.extend(built.icons.referenced.iter().cloned());
        let outcome = spec
            .write(&built)
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        report.written.insert(spec.name.clone(), outcome);
    }
    Ok(())
}

/// One registry's scanned index, kept for rebuilding.
struct Source {
    specs: Vec<IndexSpec>,
    indexer: Arc<Indexer>,
}

fn new_source(url: &url::Url, specs: Vec<IndexSpec>) -> Result<Source, CliError> {
    let client = RegistryClient::new(RegistryConfig::new(url.clone()))
        .map_err(|e| CliError::Config(ConfigError::invalid("registry", e.to_string())))?;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = IndexerConfig::default()
        .with_full_scan_interval(None)
        .with_gc_interval(None);
    Ok(Source {
        specs,
        indexer: Arc::new(Indexer::new(client, store, config)),
    })
}

/// Scans every registry and writes every index once.
async fn scan_and_write(
    sources: &[Source],
    icons: Option<&IconStore>,
    progress: &dyn ScanProgress,
) -> Result<PassReport, CliError> {
    let mut report = PassReport::default();
    let mut referenced = BTreeSet::new();
    for source in sources {
        let registry = source.indexer.client().base_url().to_string();
        match source.indexer.full_scan(progress).await {
            Ok(scan) if scan.is_complete() => {}
            Ok(scan) => {
                let failed: Vec<_> = scan
                    .repositories_failed
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                report
                    .failed
                    .push((registry, format!("scan incomplete: {}", failed.join("; "))));
                continue;
            }
            Err(e) => {
                report.failed.push((registry, e.to_string()));
                continue;
            }
        }
        write_indexes(
            &source.specs,
            source.indexer.store().as_ref(),
            icons,
            &mut referenced,
            &mut report,
        )
        .await?;
    }
    if let Some(icons) = icons
        && report.failed.is_empty()
    {
        report.icons_removed = icons
            .retain(&referenced)
            .map_err(|e| CliError::Runtime(e.to_string()))?;
    }
    Ok(report)
}

/// Prints what a pass did, one line per index, and returns the exit status.
fn summarize(report: &PassReport) -> ExitCode {
    for (name, outcome) in &report.written {
        let what = match outcome {
            WriteOutcome::Written => "written",
            WriteOutcome::Unchanged => "unchanged",
        };
        println!("index {name}: {what}");
    }
    if report.icons_removed > 0 {
        println!("icons: {} unreferenced removed", report.icons_removed);
    }
    for (registry, why) in &report.failed {
        eprintln!("flagstate: registry {registry}: its index files were left as they were: {why}");
    }
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `flagstate index` as `args` say: once, or with `--watch` until a signal. Scan
/// progress is shown when `--progress` is given and standard error is a terminal.
pub async fn run(config_path: &Path, args: &IndexArgs) -> Result<ExitCode, CliError> {
    let progress = Bar::new(args.progress);
    let result = if args.watch {
        let interval: Duration = args.rescan_interval.into();
        let options = WatchOptions {
            listen: args.listen,
            events_token: args.events_token.clone(),
            allow_anonymous_events: args.allow_anonymous_events,
            rescan_interval: (!interval.is_zero()).then_some(interval),
        };
        run_watch(config_path, &options, &progress).await
    } else {
        run_once(config_path, &progress).await
    };
    progress.finish();
    result
}

/// Runs `flagstate index` once (no `--watch`).
pub async fn run_once(
    config_path: &Path,
    progress: &dyn ScanProgress,
) -> Result<ExitCode, CliError> {
    let (plan, sources) = prepare(config_path)?;
    let report = scan_and_write(&sources, plan.icons.as_ref(), progress).await?;
    Ok(summarize(&report))
}

fn prepare(config_path: &Path) -> Result<(StaticIndexPlan, Vec<Source>), CliError> {
    let config = StaticIndexConfig::load(config_path)?;
    if let Some(notice) = config.daemon_notice() {
        tracing::info!(file = %config_path.display(), "{notice}");
    }
    let base = config_path.parent().map(Path::to_owned).unwrap_or_default();
    let plan = config.plan(&base)?;
    let sources = plan
        .registries
        .iter()
        .map(|(url, specs)| new_source(url, specs.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((plan, sources))
}

/// How long the store must stay unchanged before files are rewritten in `--watch` mode.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(500);

/// Options of `--watch` mode.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Where `/events` (and the rest of the server's API) listens.
    pub listen: std::net::SocketAddr,
    /// Bearer token the registry must send to `/events`.
    pub events_token: Option<String>,
    /// Accept notifications without a token (when `events_token` is `None`).
    pub allow_anonymous_events: bool,
    /// Time between full re-scans that repair what notifications missed.
    pub rescan_interval: Option<Duration>,
}

/// Runs `flagstate index --watch`: writes every index once, then keeps the index up to
/// date from registry notifications and periodic re-scans, rewriting the files whose
/// content changed, until SIGTERM/SIGINT.
pub async fn run_watch(
    config_path: &Path,
    options: &WatchOptions,
    progress: &dyn ScanProgress,
) -> Result<ExitCode, CliError> {
    let (plan, sources) = prepare(config_path)?;
    let [source] = sources.as_slice() else {
        return Err(ConfigError::invalid(
            "indexes",
            format!(
                "--watch follows one registry's notifications, but these indexes read {} registries; run one watcher per registry",
                sources.len()
            ),
        )
        .into());
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CliError::Listen {
        addr: options.listen,
        source,
    })?;

    let first = scan_and_write(&sources, plan.icons.as_ref(), progress).await?;
    summarize(&first);

    // A fresh indexer with the re-scan interval; it shares the scanned store.
    let client = source.indexer.client().clone();
    let store = source.indexer.store().clone();
    let indexer = Arc::new(Indexer::new(
        client,
        store.clone(),
        IndexerConfig::default()
            .with_full_scan_interval(options.rescan_interval)
            .with_gc_interval(options.rescan_interval),
    ));
    let shutdown = tokio_util::sync::CancellationToken::new();
    // The scan above is the first one; the periodic ones start an interval later.
    let indexer_task = indexer.clone().spawn_after_scan(shutdown.child_token());
    let http = {
        let mut fields = flagstate_http::HttpConfig::default();
        fields.public_registry_url = source
            .specs
            .first()
            .map(|s| s.registry_public.clone())
            .unwrap_or_default();
        fields.events_token = options.events_token.clone().filter(|t| !t.is_empty());
        fields.events_allow_anonymous = options.allow_anonymous_events;
        fields.build_info = crate::setup::build_info();
        fields
    };
    if http.events_token.is_none() && !http.events_allow_anonymous {
        tracing::warn!(
            "no --events-token: /events refuses every notification (pass --events-token, or --allow-anonymous-events)"
        );
    }
    let state = flagstate_http::AppState::new(store.clone(), Some(indexer), http);
    tracing::info!(%addr, "listening on http://{addr}");
    eprintln!("flagstate: watching; notifications to http://{addr}/events");

    let rewriter = tokio::spawn(rewrite_on_change(
        source.specs.clone(),
        store,
        plan.icons.clone(),
        shutdown.child_token(),
    ));
    crate::serve::serve_until_signal(
        listener,
        None,
        state,
        false,
        &flagstate_http::ServerConfig::default(),
        &shutdown,
        Some(indexer_task),
    )
    .await;
    match rewriter.await {
        Ok(result) => result?,
        Err(e) => return Err(CliError::Runtime(format!("index writer stopped: {e}"))),
    }
    Ok(ExitCode::SUCCESS)
}

/// Rewrites the index files whenever the store's generation changed and then stayed put
/// for [`WATCH_DEBOUNCE`]; a last check runs when `shutdown` fires.
async fn rewrite_on_change(
    specs: Vec<IndexSpec>,
    store: Arc<dyn Store>,
    icons: Option<IconStore>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), CliError> {
    let mut written = store.generation().await?;
    let mut seen = written;
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(WATCH_DEBOUNCE) => false,
        };
        let now = match store.generation().await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable; index files not checked");
                if stopping {
                    return Ok(());
                }
                continue;
            }
        };
        // Write once the generation stopped moving (or we are stopping with changes).
        if now != written && (now == seen || stopping) {
            let mut report = PassReport::default();
            let mut referenced = BTreeSet::new();
            match write_indexes(
                &specs,
                store.as_ref(),
                icons.as_ref(),
                &mut referenced,
                &mut report,
            )
            .await
            {
                Ok(()) => {
                    if let Some(icons) = &icons
                        && let Err(e) = icons.retain(&referenced)
                    {
                        tracing::warn!(error = %e, "unreferenced icons not removed");
                    }
                    for spec in &specs {
                        match report.written.get(&spec.name) {
                            Some(WriteOutcome::Written) => tracing::info!(
                                index = %spec.name,
                                path = %spec.output.display(),
                                generation = now,
                                "index file rewritten"
                            ),
                            _ => tracing::debug!(
                                index = %spec.name,
                                generation = now,
                                "index file unchanged"
                            ),
                        }
                    }
                    written = now;
                }
                Err(e) => tracing::warn!(error = %e, "index files not rewritten; retrying"),
            }
        }
        seen = now;
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Yaml};

    /// regindexer's README example, with its duplicated `output` key fixed.
    const README_EXAMPLE: &str = r#"
# Directory to extract icons into, resolved with the index as a base
icons_dir: /var/lib/regindexer/icons
# Public URI relative to the index file URIs for the icon directory
icons_uri: /icons/
indexes:
    flatpak_amd64:
        output: /var/lib/regindexer/flatpak-amd64.json
        registry: https://1.2.3.4:5000
        registry_public: https://registry.example.com:5000
        tags: ['latest', 'latest-*']
        required_annotations: ['org.flatpak.body']
        architectures: ['amd64']
        extract_icons: true
    all:
        output: /var/lib/regindexer/all.json
        registry: https://1.2.3.4:5000
        registry_public: https://registry.example.com:5000
        tags: ['latest']
"#;

    fn parse(text: &str) -> Result<StaticIndexPlan, ConfigError> {
        let config: StaticIndexConfig = Figment::from(Yaml::string(text))
            .extract()
            .map_err(ConfigError::from_figment)?;
        config.plan(Path::new("/base"))
    }

    #[test]
    fn readme_example_parses() {
        let plan = parse(README_EXAMPLE).unwrap();
        assert_eq!(plan.registries.len(), 1, "both indexes read one registry");
        let specs = plan.registries.values().next().unwrap();
        let amd64 = specs.iter().find(|s| s.name == "flatpak_amd64").unwrap();
        assert!(amd64.extract_icons);
        assert_eq!(amd64.tags, ["latest", "latest-*"]);
        assert_eq!(amd64.registry_public, "https://registry.example.com:5000");
        assert_eq!(plan.icons.unwrap().uri(), "/icons/");
    }

    #[test]
    fn errors_name_the_key() {
        let missing_output = "indexes: {a: {registry: 'http://r'}}";
        assert!(
            parse(missing_output)
                .unwrap_err()
                .to_string()
                .contains("indexes.a.output")
        );
        let no_icons_dir =
            "indexes: {a: {output: a.json, registry: 'http://r', extract_icons: true}}";
        let e = parse(no_icons_dir).unwrap_err().to_string();
        assert!(
            e.contains("indexes.a.extract_icons") && e.contains("icons_dir"),
            "{e}"
        );
        let unknown = "indexes: {a: {output: a.json, registry: 'http://r', colour: red}}";
        assert!(parse(unknown).unwrap_err().to_string().contains("colour"));
        let relative = parse("indexes: {a: {output: out/a.json, registry: 'http://r'}}").unwrap();
        let spec = &relative.registries.values().next().unwrap()[0];
        assert_eq!(spec.output, Path::new("/base/out/a.json"));
        assert!(parse("indexes: {}").is_err());
        let same_output = "indexes: {a: {output: x.json, registry: 'http://r'}, b: {output: x.json, registry: 'http://r'}}";
        assert!(
            parse(same_output)
                .unwrap_err()
                .to_string()
                .contains("another index")
        );
    }
}
