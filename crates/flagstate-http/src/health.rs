//! `GET /healthz` (the process and its store answer) and `GET /readyz` (the index is
//! worth serving: the first full scan completed, or this is a read-only replica, whose
//! data comes from the writer).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::HttpError;
use crate::state::AppState;

/// `GET /healthz`: `200` when the store answers, `503` when it is unavailable.
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let generation = state.store().generation().await?;
    Ok(Json(json!({"status": "ok", "generation": generation})))
}

/// `GET /readyz`: `200` once the first full scan is done (always for read-only
/// replicas), else `503` saying how far the scan got.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    match state.indexer() {
        None => Ok(Json(json!({"status": "ready", "indexer": false}))),
        Some(indexer) => {
            let s = indexer.status();
            if s.first_scan_done {
                Ok(Json(json!({"status": "ready", "indexer": true})))
            } else {
                let mut message = format!(
                    "the first full scan of the registry has not completed ({} of {} repositories done)",
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
