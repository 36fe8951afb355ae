//! `flagstate serve`: the HTTP server plus the indexer keeping the store up to date, and
//! their graceful shutdown.
//!
//! Order matters: the socket is bound before the indexer starts, so a port already in use
//! fails fast without touching the registry. Connections and requests are bounded by
//! `server.*` ([`flagstate_http::serve`]). On SIGTERM/SIGINT the server stops accepting
//! connections and finishes the requests in flight (a notification being applied completes
//! and is acknowledged; at most `server.shutdown_timeout`), the indexer is cancelled, and
//! the process exits 0. A second signal exits at once.
//!
//! A writer with `notifications.endpoints` also delivers the change log to them
//! (`flagstate_core::webhooks`), each endpoint resuming from its stored delivery cursor;
//! the deliveries stop with the indexer.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flagstate_core::Store;
use flagstate_core::icons::{IconCollection, IconStore};
use flagstate_core::webhooks::Webhooks;
use flagstate_http::{AppState, ServerConfig, TlsConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::CliError;
use crate::setup;

/// How long the indexer gets to stop after the server has drained.
const INDEXER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the server until a shutdown signal.
pub async fn run(config: &Config) -> Result<ExitCode, CliError> {
    // The certificate and key are read before anything else: an unusable file stops the
    // start with an error naming it.
    let tls = config.tls.load()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CliError::Listen {
        addr: config.listen,
        source,
    })?;

    if !config.read_only && config.events.token().is_none() {
        if !config.events.allow_anonymous {
            warn!(
                "events.token is not set: /events refuses every notification (set events.token, or events.allow_anonymous: true)"
            );
        } else if !addr.ip().is_loopback() {
            warn!(%addr, "events.allow_anonymous: /events accepts notifications from anyone who can reach this address");
        }
    }

    let store = setup::open_store(config).await?;
    let shutdown = CancellationToken::new();
    let (indexer, indexer_task) = if config.read_only {
        info!("read-only: not indexing; /events is disabled");
        (None, None)
    } else {
        let indexer = Arc::new(setup::indexer(config, store.clone())?);
        let task = indexer.clone().spawn(shutdown.child_token());
        (Some(indexer), Some(task))
    };

    // Outgoing webhooks: delivered by the writer only, so replicas of one index never
    // deliver a record twice.
    let endpoints = config.notifications.endpoints()?;
    let webhooks = if endpoints.is_empty() {
        None
    } else if config.read_only {
        info!("read-only: not delivering notifications.endpoints (the writer does)");
        None
    } else {
        let webhooks = Webhooks::start(
            endpoints,
            store.clone(),
            config.public_registry_url(),
            shutdown.child_token(),
        )
        .map_err(|e| CliError::Runtime(e.to_string()))?;
        Some(webhooks)
    };

    let state = flagstate_http::AppState::new(store.clone(), indexer, setup::http_config(config));
    if let Some(webhooks) = &webhooks {
        state.report_webhooks(webhooks.monitor());
    }
    // Large answers are written to files there: a directory that cannot be used stops
    // the server now rather than failing requests later.
    match state.spool().await {
        Ok(spool) => {
            info!(dir = %spool.path().display(), "large index answers are written to files here")
        }
        Err(e) => {
            shutdown.cancel();
            return Err(CliError::Runtime(e.to_string()));
        }
    }
    // Answers write icon files as they are computed; files no answer references any
    // more are deleted on the garbage-collection interval.
    let icon_task = match (state.icon_store(), config.interval.garbage_collect()) {
        (Some(icons), Some(every)) => Some(tokio::spawn(collect_icons(
            icons.clone(),
            store,
            every,
            shutdown.child_token(),
        ))),
        _ => None,
    };
    // Credentials may be written into the URL; they never go to the log.
    let registry = config
        .registry
        .url
        .as_ref()
        .map(flagstate_core::registry::redacted);
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(%addr, registry = registry.as_deref().unwrap_or("none"), "listening on {scheme}://{addr}");

    serve_until_signal(
        listener,
        tls,
        state,
        config.components.web_ui,
        &config.server.server_config(),
        &shutdown,
        indexer_task,
    )
    .await;
    if let Some(task) = icon_task {
        let _ = task.await;
    }
    if let Some(webhooks) = webhooks
        && tokio::time::timeout(INDEXER_STOP_TIMEOUT, webhooks.join())
            .await
            .is_err()
    {
        warn!("webhook deliveries did not stop within {INDEXER_STOP_TIMEOUT:?}");
    }
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serves the API over `state` (and the web UI when `web_ui` is set) on `listener` (over
/// TLS with `tls`) until
/// SIGTERM/SIGINT ([`wait_for_signal`]), then cancels `shutdown` and waits (at most
/// [`INDEXER_STOP_TIMEOUT`]) for `indexer` to stop.
///
/// The server stops accepting connections on the signal and finishes the requests in
/// flight (bounded by `server`, [`flagstate_http::serve`]) before the indexer is
/// stopped, so a notification being applied completes and is acknowledged. Tasks that
/// watch `shutdown` (children of it) are the caller's to join afterwards.
pub(crate) async fn serve_until_signal(
    listener: TcpListener,
    tls: Option<TlsConfig>,
    state: AppState,
    web_ui: bool,
    server: &ServerConfig,
    shutdown: &CancellationToken,
    indexer: Option<JoinHandle<()>>,
) {
    let connections = state.connections();
    let app = if web_ui {
        flagstate_http::router_with(state, flagstate_http::ui::routes())
    } else {
        flagstate_http::router(state)
    };
    let signal = wait_for_signal(shutdown.clone());
    match tls {
        Some(tls) => {
            flagstate_http::serve_tls(listener, tls, app, server, connections, signal).await
        }
        None => flagstate_http::serve(listener, app, server, connections, signal).await,
    }
    shutdown.cancel();
    if let Some(task) = indexer {
        match tokio::time::timeout(INDEXER_STOP_TIMEOUT, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "indexer task ended abnormally"),
            Err(_) => warn!("indexer did not stop within {INDEXER_STOP_TIMEOUT:?}"),
        }
    }
}

/// Deletes unreferenced icon files every `every` until `shutdown`.
async fn collect_icons(
    icons: IconStore,
    store: Arc<dyn Store>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let pass = tokio::select! {
            _ = shutdown.cancelled() => return,
            pass = icons.collect(&store) => pass,
        };
        match pass {
            Ok(IconCollection::Removed(0)) => debug!("no unreferenced icon files"),
            Ok(IconCollection::Removed(n)) => {
                info!(removed = n, "deleted icon files no answer references")
            }
            Ok(IconCollection::StoreChanged) => {
                debug!("the index changed during icon collection; trying again next interval")
            }
            Err(e) => warn!(error = %e, "icon collection failed"),
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT (and then cancels `shutdown`); a second signal
/// ends the process at once.
async fn wait_for_signal(shutdown: CancellationToken) {
    let name = next_signal().await;
    info!(signal = name, "shutting down: finishing requests in flight");
    shutdown.cancel();
    tokio::spawn(async {
        let name = next_signal().await;
        warn!(signal = name, "second signal: exiting without waiting");
        std::process::exit(130);
    });
}

async fn next_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        // Installing handlers fails only when the runtime has no signal driver; Ctrl-C is
        // then the one signal left to wait for.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
