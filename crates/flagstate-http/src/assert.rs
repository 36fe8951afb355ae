//! `POST /assert?timeout=N`: wait until an index query's answer satisfies assertions.
//!
//! Meant for deployment checks and tests ("after pushing, the index shows the image"):
//! body `{"Query": "<query string>", "Assertions": [{"Type": "contains" | "not-contains",
//! "Test": <JSON>}]}`. The query is answered exactly like `/index/static?<Query>` (a
//! leading `?` or `/index/static?` prefix is accepted). `contains` holds when `Test` is a
//! structural subset of the answer: every key of a `Test` object is present in the
//! answer's object with a contained value; every element of a `Test` array is contained
//! in some element of the answer's array; scalars are equal. `not-contains` is its
//! negation.
//!
//! Answers `200 {"Result": true}` as soon as every assertion holds, re-checking whenever
//! the store's generation changes (polled, because a replica learns of changes only
//! through the shared database). When `timeout` (seconds, default 0 = check once, capped
//! by configuration) passes first, the answer is **`409 Conflict`** with `{"Result":
//! false, "Failed": [indexes of the failing assertions], "Response": <last answer>}`, so
//! `curl --fail` treats an unmet assertion as failure.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{ErrorBody, HttpError};
use crate::index::answer;
use crate::params::{QueryParams, Repeated};
use crate::state::AppState;

/// Largest assertion body accepted, in bytes.
pub const MAX_ASSERT_BODY: usize = 1024 * 1024;
/// How often the store's generation is polled while waiting.
const POLL: Duration = Duration::from_millis(100);

/// The body of `POST /assert`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AssertRequest {
    /// An index query string, as for `/index/static?<Query>`.
    #[serde(rename = "Query")]
    query: String,
    /// What the answer must (not) contain.
    #[serde(rename = "Assertions")]
    assertions: Vec<Assertion>,
}

/// One assertion about an index answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Assertion {
    /// `contains` or `not-contains`.
    #[serde(rename = "Type")]
    kind: AssertionKind,
    /// JSON the answer must (not) contain as a structural subset.
    #[serde(rename = "Test")]
    test: Value,
}

/// Whether an assertion asks for containment or its negation.
#[derive(Debug, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
enum AssertionKind {
    #[serde(rename = "contains")]
    Contains,
    #[serde(rename = "not-contains")]
    NotContains,
}

/// Whether `test` is a structural subset of `value` (see the module docs).
pub fn contains(value: &Value, test: &Value) -> bool {
    match (value, test) {
        (Value::Object(v), Value::Object(t)) => t
            .iter()
            .all(|(k, tv)| v.get(k).is_some_and(|vv| contains(vv, tv))),
        (Value::Array(v), Value::Array(t)) => {
            t.iter().all(|tv| v.iter().any(|vv| contains(vv, tv)))
        }
        (v, t) => v == t,
    }
}

fn failing(response: &Value, assertions: &[Assertion]) -> Vec<usize> {
    assertions
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            let holds = contains(response, &a.test);
            match a.kind {
                AssertionKind::Contains => !holds,
                AssertionKind::NotContains => holds,
            }
        })
        .map(|(i, _)| i)
        .collect()
}

fn timeout(raw: Option<&str>, cap: Duration) -> Result<Duration, HttpError> {
    let params = QueryParams::parse(raw, Repeated::Last)?;
    let Some(value) = params.get("timeout").filter(|v| !v.is_empty()) else {
        return Ok(Duration::ZERO);
    };
    let secs: f64 = value
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            HttpError::bad_request(
                "invalid_parameter",
                format!("parameter \"timeout\" must be a number of seconds, got {value:?}"),
            )
        })?;
    Ok(Duration::from_secs_f64(secs.min(cap.as_secs_f64())))
}

fn strip_query_prefix(query: &str) -> &str {
    match query.split_once('?') {
        Some((_, rest)) => rest,
        None => query,
    }
}

/// The answer of `POST /assert`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssertOutcome {
    /// Whether every assertion held.
    #[serde(rename = "Result")]
    pub result: bool,
    /// Indexes of the assertions that did not hold (only when `Result` is false).
    #[serde(rename = "Failed", skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<usize>>,
    /// The last answer checked (only when `Result` is false).
    #[serde(rename = "Response", skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

/// `POST /assert`. See the module docs.
#[utoipa::path(
    post,
    path = "/assert",
    operation_id = "assert",
    tag = "index",
    params(
        ("timeout" = Option<f64>, Query, minimum = 0, description = "Seconds to wait for the assertions to hold (default 0: check once; capped by `http.max_assert_timeout`)."),
    ),
    request_body(content = AssertRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Every assertion holds.", body = AssertOutcome),
        (status = 400, description = "A malformed body (`invalid_assertion`, `unreadable_body`), `timeout` (`invalid_parameter`) or query (`invalid_query`, `query_too_expensive`).", body = ErrorBody),
        (status = 409, description = "The timeout passed with assertions failing.", body = AssertOutcome),
        (status = 413, description = "The body is larger than 1 MiB (`payload_too_large`).", body = ErrorBody),
        (status = 503, description = "The store is unavailable (`store_unavailable`).", body = ErrorBody),
    )
)]
pub async fn check(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::PayloadTooLarge {
                limit: MAX_ASSERT_BODY,
            }
        } else {
            HttpError::bad_request("unreadable_body", rejection.body_text())
        }
    })?;
    let wait = timeout(raw.as_deref(), state.config().max_assert_timeout)?;
    let request: AssertRequest = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request("invalid_assertion", format!("assertion body: {e}")))?;
    let query = strip_query_prefix(&request.query);
    let deadline = tokio::time::Instant::now() + wait;
    let mut checked_generation = None;
    let mut last_response = Value::Null;
    let mut last_failed = Vec::new();
    loop {
        let generation = state.store().generation().await?;
        if checked_generation != Some(generation) {
            let body = answer(&state, query).await?;
            let bytes = body.identity().load().await.map_err(|e| {
                HttpError::Internal(format!("reading the index answer failed: {e}"))
            })?;
            last_response = serde_json::from_slice(&bytes)
                .map_err(|e| HttpError::Internal(format!("index answer is not JSON: {e}")))?;
            last_failed = failing(&last_response, &request.assertions);
            if last_failed.is_empty() {
                return Ok(Json(AssertOutcome {
                    result: true,
                    failed: None,
                    response: None,
                })
                .into_response());
            }
            checked_generation = Some(body.generation().max(generation));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
    Ok((
        StatusCode::CONFLICT,
        Json(AssertOutcome {
            result: false,
            failed: Some(last_failed),
            response: Some(last_response),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structural_subset() {
        let v = json!({"Registry": "/", "Results": [
            {"Name": "a", "Images": [{"Digest": "d1", "Tags": ["x", "y"]}]},
            {"Name": "b", "Images": []}
        ]});
        assert!(contains(&v, &json!({})));
        assert!(contains(&v, &json!({"Results": []})));
        assert!(contains(&v, &json!({"Results": [{"Name": "b"}]})));
        assert!(contains(
            &v,
            &json!({"Results": [{"Name": "a", "Images": [{"Tags": ["y"]}]}]})
        ));
        assert!(contains(
            &v,
            &json!({"Results": [{"Name": "a"}, {"Name": "b"}]})
        ));
        assert!(!contains(&v, &json!({"Results": [{"Name": "c"}]})));
        assert!(!contains(
            &v,
            &json!({"Results": [{"Name": "b", "Images": [{}]}]})
        ));
        assert!(!contains(&v, &json!({"Missing": 1})));
        assert!(!contains(&v, &json!({"Registry": "/x"})));
        assert!(!contains(&v, &json!({"Results": {"Name": "a"}})));
        assert!(contains(&json!(1), &json!(1)) && !contains(&json!(1), &json!("1")));
    }

    #[test]
    fn timeouts() {
        let cap = Duration::from_secs(10);
        assert_eq!(timeout(None, cap).unwrap(), Duration::ZERO);
        assert_eq!(
            timeout(Some("timeout=2"), cap).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            timeout(Some("timeout=0.5"), cap).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(timeout(Some("timeout=99999"), cap).unwrap(), cap);
        for bad in [
            "timeout=-1",
            "timeout=abc",
            "timeout=NaN",
            "timeout=inf",
            "timeout=%ZZ",
            "time%out=1",
        ] {
            assert!(timeout(Some(bad), cap).is_err(), "{bad}");
        }
    }
}
