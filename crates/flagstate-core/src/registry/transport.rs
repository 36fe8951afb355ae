//! The request path under every [`RegistryClient`] operation: authentication (basic,
//! static bearer, and the token flow with a per-scope cache), the global concurrency
//! limit, size-limited body reads, and retries with exponential backoff and jitter that
//! honour `Retry-After`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::auth::{Challenge, Credentials, TokenResponse, parse_challenge};
use super::client::{Answer, MAX_TOKEN_BYTES, RegistryClient, bump, error_detail};
use super::{RegistryError, RetryPolicy};
use crate::sync::lock;

/// Which redirects a request follows. Automatic redirects are off in the HTTP client:
/// reqwest (0.13) follows up to ten hops to any origin, stripping `Authorization` on
/// cross-origin ones, and hands back whatever the last origin answered, so a foreign
/// origin's `401` challenge (naming a token realm of its choosing) would reach
/// `authenticate`. `execute` follows redirects by hand instead, deciding per hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Redirects {
    /// Only to the registry's own origin; another origin is refused
    /// ([`RegistryError::ForeignUrl`]).
    SameOrigin,
    /// Also to another origin, without any credentials: a blob's storage (S3, GCS, a
    /// CDN). Only for content verified against its digest afterwards.
    ToStorage,
}

/// Redirect hops followed for one request (reqwest's own default).
const MAX_REDIRECTS: usize = 10;

/// Whether the registry answered lately, over all requests of the client: the basis of
/// the retry budget (see [`RegistryConfig::retry_budget`](super::RegistryConfig)).
#[derive(Default)]
pub(super) struct Reachability {
    /// When the registry last answered anything.
    last_answer: Option<Instant>,
    /// Start of the earliest attempt that failed since the last answer.
    failing_since: Option<Instant>,
    /// Attempts failed since the last answer.
    failures: u64,
    /// What went wrong on the last failed attempt.
    last_reason: String,
    /// Declared unreachable: requests fail without being sent until then.
    unreachable_until: Option<Instant>,
}

impl RegistryClient {
    /// Sends one request with authentication and retries, and reads the body up to
    /// `limit` bytes. Non-success statuses that are not retried are returned as answers
    /// for the caller to interpret. Redirects are followed as `redirects` allows;
    /// credentials are attached only to the registry's own origin.
    pub(super) async fn execute(
        &self,
        method: Method,
        url: Url,
        scope: Option<&str>,
        headers: &[(header::HeaderName, &str)],
        limit: usize,
        redirects: Redirects,
    ) -> Result<Answer, RegistryError> {
        let retry = self.inner.retry;
        let mut first_sent: Option<Instant> = None;
        let mut target = url;
        let mut hops = 0;
        let mut attempt: u32 = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            if let Some(e) = self.unreachable_now(&target) {
                return Err(e);
            }
            let own_origin = self.is_own_origin(&target);
            let authorization = if own_origin {
                self.authorization(scope).await?
            } else {
                None
            };
            let mut permit = Some(
                self.inner
                    .limit
                    .acquire()
                    .await
                    .map_err(|_| RegistryError::Config("client is shut down".into()))?,
            );
            let mut request = self.inner.http.request(method.clone(), target.clone());
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            bump(&self.inner.counters.requests);
            let sent = Instant::now();
            let first = *first_sent.get_or_insert(sent);
            let outcome = match request.send().await {
                Ok(response) => {
                    self.answered();
                    let status = response.status();
                    let headers = response.headers().clone();
                    if let Some(next) = redirect_target(status, &headers, &target)? {
                        permit.take();
                        hops += 1;
                        if hops > MAX_REDIRECTS {
                            return Err(RegistryError::InvalidResponse {
                                url: target.to_string(),
                                reason: format!("more than {MAX_REDIRECTS} redirects"),
                            });
                        }
                        if !self.is_own_origin(&next) && redirects == Redirects::SameOrigin {
                            return Err(self.foreign(&target, "redirect", &next));
                        }
                        tracing::debug!(from = %target, to = %next, "following redirect");
                        target = next;
                        // Not a failure of the registry: do not spend a retry on it.
                        attempt -= 1;
                        continue;
                    }
                    if status == StatusCode::UNAUTHORIZED && own_origin && !reauthenticated {
                        permit.take();
                        reauthenticated = true;
                        if self.authenticate(&headers, scope, &target).await? {
                            attempt -= 1;
                            continue;
                        }
                        Ok(Answer {
                            url: target.clone(),
                            status,
                            headers,
                            body: Bytes::new(),
                        })
                    } else if is_retryable_status(status) && attempt < retry.max_attempts {
                        permit.take();
                        let wait = retry_after(&headers).map(|d| d.min(retry.max_delay));
                        self.back_off(attempt, wait, &target, &status.to_string())
                            .await;
                        continue;
                    } else {
                        read_limited(response, limit, &target)
                            .await
                            .map(|body| Answer {
                                url: target.clone(),
                                status,
                                headers,
                                body,
                            })
                    }
                }
                Err(e) if target.scheme() == "https" && is_plain_http_answer(&e) => {
                    // The server answered, in the wrong protocol: no retry will help.
                    self.answered();
                    let mut suggestion = if own_origin {
                        self.inner.base.clone()
                    } else {
                        let mut origin = target.clone();
                        origin.set_path("/");
                        origin.set_query(None);
                        origin
                    };
                    let _ = suggestion.set_scheme("http");
                    return Err(RegistryError::PlainHttp {
                        url: target.to_string(),
                        suggestion: super::redacted(&suggestion),
                    });
                }
                Err(e) => Err(ReadError::Network(describe(&e))),
            };
            permit.take();
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(ReadError::TooLarge) => {
                    return Err(RegistryError::TooLarge {
                        url: target.to_string(),
                        limit,
                    });
                }
                Err(ReadError::Network(reason)) => {
                    let exhausted = attempt >= retry.max_attempts;
                    if let Some(e) = self.attempt_failed(&target, sent, first, exhausted, &reason) {
                        return Err(e);
                    }
                    if !exhausted {
                        self.back_off(attempt, None, &target, &reason).await;
                        continue;
                    }
                    return Err(RegistryError::Network {
                        url: target.to_string(),
                        attempts: attempt,
                        reason,
                    });
                }
            }
        }
    }

    /// Whether `url` is on the registry's own origin (scheme, host and port), the only
    /// origin registry credentials are sent to.
    pub(super) fn is_own_origin(&self, url: &Url) -> bool {
        url.origin() == self.inner.base.origin()
    }

    /// The error for a `kind` (redirect, link) from `url` to a foreign `target`.
    pub(super) fn foreign(&self, url: &Url, kind: &'static str, target: &Url) -> RegistryError {
        RegistryError::ForeignUrl {
            url: url.to_string(),
            kind,
            target: target.to_string(),
            origin: self.inner.base.origin().ascii_serialization(),
        }
    }

    /// The registry answered (any status): it is reachable.
    fn answered(&self) {
        let mut r = lock(&self.inner.reachability);
        r.last_answer = Some(Instant::now());
        r.failing_since = None;
        r.failures = 0;
        r.unreachable_until = None;
    }

    /// While the registry is declared unreachable: the error to fail a request with,
    /// without sending it.
    fn unreachable_now(&self, url: &Url) -> Option<RegistryError> {
        let r = lock(&self.inner.reachability);
        let now = Instant::now();
        if r.unreachable_until.is_none_or(|until| now >= until) {
            return None;
        }
        Some(RegistryError::Unreachable {
            url: url.to_string(),
            failures: r.failures,
            unanswered: r.failing_since.map(|s| now - s).unwrap_or_default(),
            reason: format!("not sent; earlier attempts: {}", r.last_reason),
        })
    }

    /// Records a failed attempt (no answer at all) sent at `sent`, of a request whose
    /// first attempt was sent at `request_started`. Declares the registry unreachable, and returns
    /// the error, when it has answered nothing for the retry budget, when it is declared
    /// so already, or when this request is `exhausted` and nothing answered during any
    /// of its attempts.
    fn attempt_failed(
        &self,
        url: &Url,
        sent: Instant,
        request_started: Instant,
        exhausted: bool,
        reason: &str,
    ) -> Option<RegistryError> {
        let budget = self.inner.retry_budget;
        let mut r = lock(&self.inner.reachability);
        let now = Instant::now();
        // An attempt sent before the last answer says nothing about the time after it.
        let began = r.last_answer.map_or(sent, |answer| sent.max(answer));
        let since = r.failing_since.map_or(began, |s| s.min(began));
        r.failing_since = Some(since);
        r.failures += 1;
        reason.clone_into(&mut r.last_reason);
        let unanswered = now - since;
        let declared = r.unreachable_until.is_some_and(|until| now < until);
        if !(declared || unanswered >= budget || (exhausted && since <= request_started)) {
            return None;
        }
        if !declared {
            tracing::warn!(
                registry = %self.inner.base,
                failures = r.failures,
                ?unanswered,
                reason,
                "the registry does not answer; requests fail without retries for the retry budget"
            );
        }
        r.unreachable_until = Some(now + budget);
        Some(RegistryError::Unreachable {
            url: url.to_string(),
            failures: r.failures,
            unanswered,
            reason: reason.to_owned(),
        })
    }

    async fn back_off(&self, attempt: u32, asked: Option<Duration>, url: &Url, why: &str) {
        bump(&self.inner.counters.retries);
        let delay = asked.unwrap_or_else(|| backoff_delay(&self.inner.retry, attempt));
        tracing::debug!(%url, attempt, ?delay, reason = why, "retrying registry request");
        tokio::time::sleep(delay).await;
    }

    /// The `Authorization` header for a request in `scope`, fetching a bearer token first
    /// when the registry is known to want one and none is cached.
    async fn authorization(
        &self,
        scope: Option<&str>,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let key = scope.unwrap_or_default();
        let (basic, token, bearer) = {
            let state = lock(&self.inner.auth);
            (state.basic, state.token(key), state.bearer.clone())
        };
        match &self.inner.credentials {
            Some(Credentials::Bearer { token }) => return Ok(Some(bearer_header(token)?)),
            Some(Credentials::Basic { username, password }) if basic => {
                return Ok(Some(basic_header(username, password)?));
            }
            _ => {}
        }
        if let Some(token) = token {
            return Ok(Some(bearer_header(&token)?));
        }
        if let (Some((realm, service)), Some(scope)) = (bearer, scope) {
            let token = self.fetch_token(&realm, service.as_deref(), scope).await?;
            return Ok(Some(bearer_header(&token)?));
        }
        Ok(None)
    }

    /// Reacts to a 401: learns the challenge and obtains what it asks for. Returns
    /// whether repeating the request can succeed.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        scope: Option<&str>,
        url: &Url,
    ) -> Result<bool, RegistryError> {
        let Some(challenge) = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge)
        else {
            return Ok(false);
        };
        match (challenge, &self.inner.credentials) {
            (Challenge::Basic, Some(Credentials::Basic { .. })) => {
                let mut state = lock(&self.inner.auth);
                let first = !state.basic;
                state.basic = true;
                Ok(first)
            }
            (Challenge::Basic, _)
            | (Challenge::Bearer { .. }, Some(Credentials::Bearer { .. })) => Ok(false),
            (
                Challenge::Bearer {
                    realm,
                    service,
                    scope: asked,
                },
                _,
            ) => {
                let key = scope.unwrap_or_default().to_owned();
                {
                    let mut state = lock(&self.inner.auth);
                    state.tokens.remove(&key);
                    state.bearer = Some((realm.clone(), service.clone()));
                }
                let token_scope = asked.or(scope.map(str::to_owned)).unwrap_or_default();
                tracing::debug!(%url, %realm, scope = %token_scope, "registry asks for a bearer token");
                let token = self
                    .request_token(&realm, service.as_deref(), &token_scope)
                    .await?;
                lock(&self.inner.auth).tokens.insert(key, token);
                Ok(true)
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let (token, expires) = self.request_token(realm, service, scope).await?;
        lock(&self.inner.auth)
            .tokens
            .insert(scope.to_owned(), (token.clone(), expires));
        Ok(token)
    }

    async fn request_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Instant), RegistryError> {
        let fail = |reason: String| RegistryError::Token {
            realm: realm.to_owned(),
            reason,
        };
        let mut url = Url::parse(realm).map_err(|e| fail(format!("realm is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            // Credentials in the clear only where the registry itself is spoken to so.
            "http" if self.inner.base.scheme() == "http" => {}
            other => {
                return Err(fail(format!(
                    "realm scheme {other:?} is not allowed for a registry at {}",
                    self.inner.base.origin().ascii_serialization()
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(fail("realm carries credentials of its own".into()));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = service {
                q.append_pair("service", service);
            }
            if !scope.is_empty() {
                q.append_pair("scope", scope);
            }
        }
        // The token endpoint is the one other origin credentials go to: the realm named
        // by the registry's own challenge (`authenticate` only reads challenges from the
        // registry's origin). The registry's bearer credentials never go there.
        let mut request = self.inner.http.get(url.clone());
        if let Some(Credentials::Basic { username, password }) = &self.inner.credentials {
            request = request.basic_auth(username, Some(password));
        }
        bump(&self.inner.counters.token_requests);
        let response = request.send().await.map_err(|e| fail(describe(&e)))?;
        let status = response.status();
        let body = read_limited(response, MAX_TOKEN_BYTES, &url)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => fail(format!(
                    "answer exceeds the limit of {MAX_TOKEN_BYTES} bytes"
                )),
                ReadError::Network(reason) => fail(reason),
            })?;
        if status.is_redirection() {
            return Err(fail(format!("HTTP {status}: redirects are not followed")));
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {}", error_detail(&body))));
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| fail(format!("bad JSON: {e}")))?;
        let (token, lifetime) = parsed
            .into_token()
            .ok_or_else(|| fail("answer carries no token".into()))?;
        Ok((token, Instant::now() + lifetime))
    }
}

enum ReadError {
    Network(String),
    TooLarge,
}

/// The target of a redirect answer (`301`, `302`, `303`, `307`, `308`), resolved against
/// the URL requested and stripped of any user info; `None` for other statuses (`304` is
/// an answer, not a redirect).
fn redirect_target(
    status: StatusCode,
    headers: &HeaderMap,
    requested: &Url,
) -> Result<Option<Url>, RegistryError> {
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return Ok(None);
    }
    let invalid = |reason: String| RegistryError::InvalidResponse {
        url: requested.to_string(),
        reason,
    };
    let location = headers
        .get(header::LOCATION)
        .ok_or_else(|| invalid(format!("HTTP {status} without Location")))?
        .to_str()
        .map_err(|_| invalid(format!("HTTP {status} with a Location that is not text")))?;
    let mut next = requested
        .join(location)
        .map_err(|e| invalid(format!("HTTP {status} to {location:?}: {e}")))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "HTTP {status} to {location:?}: not an http(s) URL"
        )));
    }
    let _ = next.set_username("");
    let _ = next.set_password(None);
    Ok(Some(next))
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    url: &Url,
) -> Result<Bytes, ReadError> {
    if response.content_length().is_some_and(|l| l > limit as u64) {
        tracing::debug!(%url, limit, "response announces a body over the limit");
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ReadError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(body)),
            Err(e) => return Err(ReadError::Network(describe(&e))),
        }
    }
}

/// Whether `e` is rustls failing the handshake because the server's first bytes are not
/// a TLS record, which is what a plain HTTP server's answer (`HTTP/1.1 400 …`) looks like.
fn is_plain_http_answer(e: &(dyn std::error::Error + 'static)) -> bool {
    let plain = |mut e: &(dyn std::error::Error + 'static)| {
        // io::Error hides the error it wraps from `source()` (and hyper-rustls wraps
        // tokio-rustls' io::Error in another one): unwrap them.
        while let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            e = inner;
        }
        matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))
        )
    };
    let mut next = Some(e);
    while let Some(e) = next {
        if plain(e) {
            return true;
        }
        next = e.source();
    }
    false
}

/// The error and its causes on one line (reqwest's own message is often just
/// "error sending request").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random, so
/// retries of many concurrent requests spread out but never retry immediately.
fn backoff_delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(policy.max_delay);
    let half = capped / 2;
    let jitter_ms = rand::random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter_ms)
}

fn bearer_header(token: &str) -> Result<HeaderValue, RegistryError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        RegistryError::Config("bearer token has characters not allowed in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn basic_header(username: &str, password: &str) -> Result<HeaderValue, RegistryError> {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| RegistryError::Config("credentials not allowed in a header".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let d1 = backoff_delay(&p, 1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(101),
                "{d1:?}"
            );
            let d3 = backoff_delay(&p, 3);
            assert!(
                d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(401),
                "{d3:?}"
            );
            let d9 = backoff_delay(&p, 9);
            assert!(d9 <= Duration::from_millis(1001), "{d9:?}");
        }
    }

    #[tokio::test]
    async fn token_realm_must_not_downgrade_or_carry_credentials() {
        let mut cfg = super::super::RegistryConfig::new("https://r.example/".parse().unwrap());
        cfg.credentials = Some(Credentials::Basic {
            username: "bob".into(),
            password: "builder".into(),
        });
        let client = RegistryClient::new(cfg).unwrap();
        for (realm, expected) in [
            (
                "http://127.0.0.1:1/token",
                "realm scheme \"http\" is not allowed",
            ),
            (
                "ftp://127.0.0.1:1/token",
                "realm scheme \"ftp\" is not allowed",
            ),
            ("https://u:p@127.0.0.1:1/token", "realm carries credentials"),
        ] {
            match client.request_token(realm, None, "").await {
                Err(RegistryError::Token { reason, .. }) => {
                    assert!(reason.contains(expected), "{realm}: {reason}")
                }
                other => panic!("{realm}: {other:?}"),
            }
        }
        assert_eq!(client.stats().token_requests, 0, "nothing was sent");
    }

    #[test]
    fn redirect_targets() {
        let requested: Url = "http://r.example:5000/v2/a/manifests/v1".parse().unwrap();
        let mut h = HeaderMap::new();
        assert!(
            redirect_target(StatusCode::NOT_MODIFIED, &h, &requested)
                .unwrap()
                .is_none()
        );
        assert!(redirect_target(StatusCode::TEMPORARY_REDIRECT, &h, &requested).is_err());
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("//u:p@elsewhere/x"),
        );
        let next = redirect_target(StatusCode::FOUND, &h, &requested)
            .unwrap()
            .unwrap();
        assert_eq!(next.as_str(), "http://elsewhere/x", "user info stripped");
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("file:///etc/passwd"),
        );
        assert!(redirect_target(StatusCode::MOVED_PERMANENTLY, &h, &requested).is_err());
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let future = std::time::SystemTime::now() + Duration::from_secs(100);
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(future)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(90) && d <= Duration::from_secs(100),
            "{d:?}"
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
