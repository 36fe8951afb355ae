//! `POST /events`: registry notifications (webhooks).
//!
//! Order of checks, each answered with a JSON error: whether this server writes the
//! index at all (`503` on a read-only replica), bearer token (`401`; without a
//! configured token every post is refused unless anonymous posts are explicitly
//! allowed, [`HttpConfig::events_allow_anonymous`](crate::HttpConfig)), content type (`415`),
//! body size (`413`), parsing (`400`). Accepted events are then applied through
//! [`Indexer::apply_events`](flagstate_core::indexer::Indexer::apply_events), which writes
//! them to the store before returning; only then is the delivery acknowledged with `200`.
//! If applying fails the answer is `5xx` and the registry delivers the envelope again, so
//! an acknowledged event is never lost — unless the failure is permanent (the registry's
//! own answer is unusable, e.g. content not matching its digest): such an event is
//! acknowledged as `failed` and left to the re-scan, because refusing it would make the
//! registry retry it forever and hold back every later notification.
//!
//! Redeliveries are acknowledged without re-applying: the ids of recently applied events
//! are remembered (a bounded set, oldest forgotten first). Events without an id are always applied (applying is
//! idempotent anyway; the set only saves the work).
//!
//! Understood encodings: the distribution registry's envelope
//! (`application/vnd.docker.distribution.events.v1+json`, `…v2+json`), CloudEvents in
//! structured (`application/cloudevents+json`), batch
//! (`application/cloudevents-batch+json`) and binary mode (`ce-*` headers), and plain
//! `application/json` holding either an envelope or CloudEvents.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, header};
use flagstate_core::events::{
    EventError, RegistryEvent, parse_cloudevent_binary, parse_cloudevents, parse_distribution,
};
use flagstate_core::sync::lock;
use lru::LruCache;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::error::{ErrorBody, HttpError};
use crate::state::AppState;

/// How a delivery's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Distribution,
    CloudEvents,
    CloudEventBinary,
    /// `application/json`: an envelope when it has `events`, else CloudEvents.
    AnyJson,
}

/// The ids of recently applied events, oldest evicted first.
///
/// Eviction follows insertion order: looking an id up, or remembering it again, does not
/// keep it longer.
#[derive(Debug)]
pub struct RecentEvents {
    /// `None` when nothing is remembered (a capacity of 0).
    ids: Option<Mutex<LruCache<String, ()>>>,
}

impl RecentEvents {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        RecentEvents {
            ids: NonZeroUsize::new(capacity).map(|capacity| Mutex::new(LruCache::new(capacity))),
        }
    }

    /// Whether the event with this id was applied recently (empty ids never were).
    pub fn seen(&self, id: &str) -> bool {
        match &self.ids {
            Some(ids) => !id.is_empty() && lock(ids).contains(id),
            None => false,
        }
    }

    /// Records ids of applied events.
    pub fn remember<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let Some(recent) = &self.ids else {
            return;
        };
        let mut recent = lock(recent);
        for id in ids.into_iter().filter(|id| !id.is_empty()) {
            // `contains` leaves the order alone, so an id is evicted by age of first sight.
            if !recent.contains(id) {
                recent.put(id.to_owned(), ());
            }
        }
    }
}

/// Who may post notifications.
#[derive(Debug, Clone, Copy)]
enum Access<'a> {
    /// Senders presenting this bearer token.
    Token(&'a str),
    /// Anyone (`events_allow_anonymous` without a token).
    Anyone,
    /// No one: no token is configured and anonymous posts are not allowed.
    NoOne,
}

impl<'a> Access<'a> {
    fn of(config: &'a crate::HttpConfig) -> Self {
        match (&config.events_token, config.events_allow_anonymous) {
            (Some(token), _) => Access::Token(token),
            (None, true) => Access::Anyone,
            (None, false) => Access::NoOne,
        }
    }
}

/// Checks `Authorization: Bearer <token>` in constant time. Both sides are hashed first
/// so that neither the comparison nor its length leaks the token.
fn authorize(access: Access<'_>, headers: &HeaderMap) -> Result<(), HttpError> {
    let expected = match access {
        Access::Anyone => return Ok(()),
        Access::NoOne => {
            return Err(HttpError::Unauthorized(
                "this server accepts registry notifications only with a bearer token, and \
                 none is configured: set events.token (and send it from the registry), or \
                 events.allow_anonymous: true to accept notifications from anyone"
                    .into(),
            ));
        }
        Access::Token(token) => token,
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| HttpError::Unauthorized("missing Authorization: Bearer token".into()))?
        .to_str()
        .map_err(|_| HttpError::Unauthorized("Authorization header is not text".into()))?;
    let (scheme, token) = presented.trim().split_once(' ').unwrap_or((presented, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(HttpError::Unauthorized(
            "Authorization must use the Bearer scheme".into(),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(HttpError::Unauthorized("Bearer token is empty".into()));
    }
    let a = Sha256::digest(token.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    // An empty configured token can never be presented (checked above): fail closed.
    if bool::from(a.ct_eq(&b)) && !expected.is_empty() {
        Ok(())
    } else {
        Err(HttpError::Unauthorized("wrong Bearer token".into()))
    }
}

fn essence(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or("").trim();
    Some(essence.to_ascii_lowercase())
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, HttpError> {
    let content_type = essence(headers);
    if headers.contains_key("ce-specversion") || headers.contains_key("ce-type") {
        // Binary mode: the content type describes the data, which must be JSON.
        return match content_type.as_deref() {
            None | Some("application/json") => Ok(Encoding::CloudEventBinary),
            Some(ct) if ct.ends_with("+json") => Ok(Encoding::CloudEventBinary),
            Some(ct) => Err(HttpError::UnsupportedMediaType(format!(
                "binary-mode CloudEvent data of type {ct:?} is not understood; send JSON"
            ))),
        };
    }
    match content_type.as_deref() {
        Some(
            "application/vnd.docker.distribution.events.v1+json"
            | "application/vnd.docker.distribution.events.v2+json",
        ) => Ok(Encoding::Distribution),
        Some("application/cloudevents+json" | "application/cloudevents-batch+json") => {
            Ok(Encoding::CloudEvents)
        }
        Some("application/json") => Ok(Encoding::AnyJson),
        Some(other) => Err(HttpError::UnsupportedMediaType(format!(
            "content type {other:?} is not a registry notification; expected \
             application/vnd.docker.distribution.events.v1+json, \
             application/cloudevents+json, application/cloudevents-batch+json or \
             application/json"
        ))),
        None => Err(HttpError::UnsupportedMediaType(
            "missing Content-Type; expected a registry notification type".into(),
        )),
    }
}

fn parse(
    encoding: Encoding,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<RegistryEvent>, EventError> {
    match encoding {
        Encoding::Distribution => parse_distribution(body),
        Encoding::CloudEvents => parse_cloudevents(body),
        Encoding::CloudEventBinary => {
            let attrs: BTreeMap<String, String> = headers
                .iter()
                .filter_map(|(name, value)| {
                    let key = name.as_str().strip_prefix("ce-")?;
                    Some((key.to_owned(), value.to_str().ok()?.to_owned()))
                })
                .collect();
            parse_cloudevent_binary(&attrs, body).map(|e| vec![e])
        }
        Encoding::AnyJson => {
            let is_envelope = matches!(
                serde_json::from_slice::<Value>(body),
                Ok(Value::Object(ref o)) if o.contains_key("events")
            );
            if is_envelope {
                parse_distribution(body)
            } else {
                parse_cloudevents(body)
            }
        }
    }
}

/// The answer to an accepted delivery: what became of its events.
#[derive(Debug, Serialize, ToSchema)]
pub struct Receipt {
    /// Events in the delivery.
    pub received: usize,
    /// Events that changed the store.
    pub applied: u64,
    /// Events that change nothing (pulls, blob pushes, …).
    pub ignored: u64,
    /// Events the registry itself cannot serve (left to the next scan).
    pub failed: u64,
    /// Events acknowledged without re-applying: their id was applied recently.
    pub duplicates: usize,
}

/// `POST /events`. See the module docs.
#[utoipa::path(
    post,
    path = "/events",
    operation_id = "events",
    tag = "events",
    security(("events_token" = [])),
    request_body(
        description = "A distribution registry notification envelope (`{\"events\": [...]}`), \
            or CloudEvents (structured, batch, or binary mode with `ce-*` headers).",
        content(
            (Value = "application/vnd.docker.distribution.events.v1+json"),
            (Value = "application/cloudevents+json"),
            (Value = "application/cloudevents-batch+json"),
            (Value = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "Applied to the store (durably) and acknowledged.", body = Receipt),
        (status = 400, description = "The body is not a notification (`invalid_notification`) or unreadable (`unreadable_body`).", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token, or no token configured (`unauthorized`).", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"flagstate\"`."))),
        (status = 413, description = "The body is larger than `events.max_body` (`payload_too_large`).", body = ErrorBody),
        (status = 415, description = "Not a notification content type (`unsupported_media_type`).", body = ErrorBody),
        (status = 500, description = "Applying failed (`events_not_applied`); the registry delivers again.", body = ErrorBody),
        (status = 503, description = "A read-only replica (`read_only`), or the store or registry is unavailable (`store_unavailable`, `events_not_applied`); the registry delivers again.", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Receipt>, HttpError> {
    let metrics = state.metrics();
    let reject = |reason: &'static str, e: HttpError| {
        metrics.delivery_rejected(reason);
        e
    };
    let headers = request.headers().clone();
    let Some(indexer) = state.indexer().cloned() else {
        return Err(reject(
            "read_only",
            HttpError::ReadOnly(
                "this server is a read-only replica and does not apply registry \
                 notifications; send them to the server that runs the indexer"
                    .into(),
            ),
        ));
    };
    authorize(Access::of(state.config()), &headers).map_err(|e| reject("unauthorized", e))?;
    let encoding = encoding(&headers).map_err(|e| reject("media_type", e))?;
    let limit = state.config().max_event_body;
    // A declared length over the limit is refused before reading a byte, so a sender
    // announcing a huge body gets its answer at once instead of after `limit` bytes.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(reject("too_large", HttpError::PayloadTooLarge { limit }));
    }
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                reject("too_large", HttpError::PayloadTooLarge { limit })
            } else {
                reject(
                    "unreadable",
                    HttpError::bad_request("unreadable_body", rejection.body_text()),
                )
            }
        })?;
    let events = parse(encoding, &headers, &body).map_err(|e| {
        reject(
            "malformed",
            HttpError::bad_request("invalid_notification", e.to_string()),
        )
    })?;
    let received = events.len();
    let fresh: Vec<RegistryEvent> = events
        .into_iter()
        .filter(|e| !state.recent_events().seen(&e.id))
        .collect();
    let duplicates = received - fresh.len();
    metrics.events_received.inc_by(received as u64);
    metrics.events_duplicate.inc_by(duplicates as u64);
    let outcome = if fresh.is_empty() {
        Default::default()
    } else {
        indexer
            .apply_events(&fresh)
            .await
            .map_err(|e| reject("apply_failed", HttpError::Indexer(e)))?
    };
    state
        .recent_events()
        .remember(fresh.iter().map(|e| e.id.as_str()));
    metrics.events_applied.inc_by(outcome.applied);
    metrics.events_ignored.inc_by(outcome.ignored);
    Ok(Json(Receipt {
        received,
        applied: outcome.applied,
        ignored: outcome.ignored,
        failed: outcome.failed,
        duplicates,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(value: Option<&[u8]>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_checks() {
        assert!(authorize(Access::Anyone, &auth(None)).is_ok());
        assert!(authorize(Access::Anyone, &auth(Some(b"Bearer whatever"))).is_ok());
        assert!(authorize(Access::NoOne, &auth(None)).is_err());
        assert!(authorize(Access::NoOne, &auth(Some(b"Bearer whatever"))).is_err());
        let t = Access::Token("s3cret");
        assert!(authorize(t, &auth(Some(b"Bearer s3cret"))).is_ok());
        assert!(authorize(t, &auth(Some(b"bearer   s3cret "))).is_ok());
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer s3cre",
            b"Bearer s3cret2",
            b"Basic s3cret",
            b"s3cret",
            b"",
            b"Bearer \xff\xfe",
        ] {
            assert!(authorize(t, &auth(Some(bad))).is_err(), "{bad:?}");
        }
        assert!(authorize(t, &auth(None)).is_err());
        assert!(authorize(Access::Token(""), &auth(Some(b"Bearer "))).is_err());
        assert!(authorize(Access::Token(""), &auth(None)).is_err());
    }

    #[test]
    fn recent_ids_are_bounded() {
        let r = RecentEvents::new(2);
        r.remember(["a", "b", "", "c"]);
        assert!(!r.seen("a") && r.seen("b") && r.seen("c") && !r.seen(""));
        let none = RecentEvents::new(0);
        none.remember(["a"]);
        assert!(!none.seen("a"));
    }
}
