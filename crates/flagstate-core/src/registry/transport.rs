//! The request path under every [`RegistryClient`] operation: authentication (basic,
//! static bearer, and the token flow with a per-scope cache), the global concurrency
//! limit, size-limited body reads, and retries with exponential backoff and jitter that
//! honour `Retry-After`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::auth::{Challenge, Credentials, TokenResponse, parse_challenge};
use super::client::{Answer, RegistryClient, bump, error_detail};
use super::{RegistryError, RetryPolicy};

impl RegistryClient {
    /// Sends one request with authentication and retries, and reads the body up to
    /// `limit` bytes. Non-success statuses that are not retried are returned as answers
    /// for the caller to interpret.
    pub(super) async fn execute(
        &self,
        method: Method,
        url: Url,
        scope: Option<&str>,
        headers: &[(header::HeaderName, &str)],
        limit: usize,
    ) -> Result<Answer, RegistryError> {
        let retry = self.inner.retry;
        let mut attempt: u32 = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let authorization = self.authorization(scope).await?;
            let mut permit = Some(
                self.inner
                    .limit
                    .acquire()
                    .await
                    .map_err(|_| RegistryError::Config("client is shut down".into()))?,
            );
            let mut request = self.inner.http.request(method.clone(), url.clone());
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            bump(&self.inner.counters.requests);
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                        permit.take();
                        reauthenticated = true;
                        if self.authenticate(&headers, scope, &url).await? {
                            // Not a failure of the registry: do not spend a retry on it.
                            attempt -= 1;
                            continue;
                        }
                        Ok(Answer {
                            url: url.clone(),
                            status,
                            headers,
                            body: Bytes::new(),
                        })
                    } else if is_retryable_status(status) && attempt < retry.max_attempts {
                        permit.take();
                        let wait = retry_after(&headers).map(|d| d.min(retry.max_delay));
                        self.back_off(attempt, wait, &url, &status.to_string())
                            .await;
                        continue;
                    } else {
                        match read_limited(response, limit, &url).await {
                            Ok(body) => Ok(Answer {
                                url: url.clone(),
                                status,
                                headers,
                                body,
                            }),
                            Err(e) => Err(e),
                        }
                    }
                }
                Err(e) => Err(ReadError::Network(describe(&e))),
            };
            permit.take();
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(ReadError::TooLarge) => {
                    return Err(RegistryError::TooLarge {
                        url: url.to_string(),
                        limit,
                    });
                }
                Err(ReadError::Network(reason)) => {
                    if attempt < retry.max_attempts {
                        self.back_off(attempt, None, &url, &reason).await;
                        continue;
                    }
                    return Err(RegistryError::Network {
                        url: url.to_string(),
                        attempts: attempt,
                        reason,
                    });
                }
            }
        }
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
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = service {
                q.append_pair("service", service);
            }
            if !scope.is_empty() {
                q.append_pair("scope", scope);
            }
        }
        let mut request = self.inner.http.get(url);
        if let Some(Credentials::Basic { username, password }) = &self.inner.credentials {
            request = request.basic_auth(username, Some(password));
        }
        bump(&self.inner.counters.token_requests);
        let response = request.send().await.map_err(|e| fail(describe(&e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| fail(describe(&e)))?;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded state stays consistent even if a holder panicked (plain inserts).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
