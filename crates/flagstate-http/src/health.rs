//! `GET /healthz` (liveness: the process is up and serving HTTP) and `GET /readyz`
//! (readiness: the store answers and the index is worth serving).
//!
//! Liveness deliberately ignores the store: a database outage is not cured by restarting
//! the server, so an orchestrator must not kill it for one; it only stops sending it
//! traffic, which is what readiness is for.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use std::time::Instant;

use flagstate_core::Store;

use crate::error::{ErrorBody, HttpError};
use crate::state::AppState;

/// Runs the store's readiness check for `/readyz`, one at a time: probes that arrive
/// while a check runs take its result instead of starting their own. The probe is
/// unauthenticated and never shed, and a writer's check briefly takes the write lock, so
/// a flood of probes must not turn into a queue of lock requests in front of the writer.
#[derive(Debug, Default)]
pub struct ReadinessCheck {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl ReadinessCheck {
    /// The store's readiness, checked now or by a check that finished after this call
    /// began waiting.
    pub async fn check(&self, store: &dyn Store) -> Result<(), String> {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && *at >= arrived
        {
            return result.clone();
        }
        let result = store.readiness().await.map_err(|e| e.to_string());
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

/// The body of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The body of `GET /readyz` when ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Whether this server runs the indexer (else it only reads the index).
    pub indexer: bool,
}

/// `GET /healthz`: always `200` with `{"status": "ok"}` while the process serves
/// requests; it touches nothing else.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses((status = 200, description = "The process serves requests.", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`: `200` when the store passes [`Store::readiness`] (it answers a read
/// and, for a writer, a write could start) and, with an indexer, the first full scan is
/// done; else `503` (`not_ready`) whose message starts with the reason: `store
/// unreadable: …`, `store not writable: …` or `first scan not done: …`.
///
/// [`Store::readiness`]: flagstate_core::Store::readiness
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The store answers and the first scan is done.", body = Readiness),
        (status = 503, description = "Not ready (`not_ready`); the message starts with the reason.", body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, HttpError> {
    state
        .readiness()
        .check(state.store().as_ref())
        .await
        .map_err(HttpError::NotReady)?;
    match state.indexer() {
        None => Ok(Json(Readiness {
            status: "ready",
            indexer: false,
        })),
        Some(indexer) => {
            let s = indexer.status();
            if s.first_scan_done {
                Ok(Json(Readiness {
                    status: "ready",
                    indexer: true,
                }))
            } else {
                let mut message = format!(
                    "first scan not done: the first full scan of the registry has not completed ({} of {} repositories done)",
                    s.repositories_done, s.repositories_total
                );
                if let Some(e) = s.last_scan_error {
                    message.push_str(&format!("; last scan error: {e}"));
                }
                Err(HttpError::NotReady(message))
            }
        }
    }
}
