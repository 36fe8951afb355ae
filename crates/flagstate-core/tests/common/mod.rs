//! Shared support for the registry integration tests: a real registry (testkit), a tiny
//! webhook receiver, and a fault-injecting HTTP proxy for faults the real registry
//! cannot produce (5xx, 429, slowness, missing catalog, bearer-token auth).
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flagstate_core::indexer::{Indexer, IndexerConfig};
use flagstate_core::registry::{Credentials, RegistryClient, RegistryConfig, RetryPolicy};
use flagstate_core::testkit::{TestRegistry, TestRegistryOptions};
use flagstate_core::{MemoryStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn registry() -> Option<TestRegistry> {
    TestRegistry::start_or_skip(TestRegistryOptions::default()).await
}

pub fn client_config(url: &str) -> RegistryConfig {
    let mut cfg = RegistryConfig::new(url.parse().unwrap());
    cfg.timeout = Duration::from_secs(10);
    cfg.max_concurrency = 8;
    cfg.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
    };
    cfg
}

pub fn indexer_config() -> IndexerConfig {
    IndexerConfig::default()
        .with_concurrency(4)
        .with_full_scan_interval(None)
        .with_gc_interval(None)
        .with_reconcile_debounce(Duration::from_millis(100))
}

pub fn indexer_for(cfg: RegistryConfig) -> (Arc<Indexer>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let client = RegistryClient::new(cfg).unwrap();
    (
        Arc::new(Indexer::new(client, store.clone(), indexer_config())),
        store,
    )
}

pub fn basic(user: &str, password: &str) -> Credentials {
    Credentials::Basic {
        username: user.into(),
        password: password.into(),
    }
}

/// Polls `check` until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Minimal HTTP/1.1 plumbing (enough for the registry's notifier and reqwest).

pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub raw_head: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let mut first = lines.next()?.split(' ');
            let method = first.next()?.to_owned();
            let target = first.next()?.to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let raw_head = buf[..end + 4].to_vec();
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some(Request {
                method,
                target,
                headers,
                body,
                raw_head,
            });
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn response(status: u16, headers: &[(&str, String)], body: &[u8], close: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------
// Webhook receiver.

pub struct Webhook {
    pub url: String,
    pub received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Receives `POST`s; answers with the status `handler` returns for the request.
pub async fn webhook<F, Fut>(handler: F) -> Webhook
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u16> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let handler = Arc::new(handler);
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(request) = read_request(&mut stream, &mut buf).await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let status = handler(request).await;
                    if stream
                        .write_all(&response(status, &[], b"", false))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Webhook {
        url,
        received,
        task,
    }
}

// ---------------------------------------------------------------------------------------
// Fault-injecting proxy with optional bearer-token authentication.

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status (with `Retry-After` seconds when given) instead of forwarding.
    Status { code: u16, retry_after: Option<u64> },
    /// Wait, then forward.
    Delay(Duration),
    /// Answer 200 with these headers and body (a registry serving wrong content).
    Serve {
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Answer this status with these headers and an empty body (e.g. a redirect).
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
    },
}

#[derive(Clone, Debug)]
pub struct Rule {
    /// Applies to requests whose target contains this.
    pub path_contains: String,
    pub fault: Fault,
    /// How many more times; `None` = always.
    pub remaining: Option<u32>,
}

pub struct TokenAuth {
    pub username: String,
    pub password: String,
    pub lifetime_secs: u64,
    /// token → (scope, expiry)
    issued: HashMap<String, (String, Instant)>,
}

#[derive(Default)]
struct ProxyState {
    rules: Mutex<Vec<Rule>>,
    /// (from, to) replacements applied to request targets before forwarding.
    rewrites: Mutex<Vec<(String, String)>>,
    /// Request headers (lowercase names) removed before forwarding.
    dropped_headers: Mutex<Vec<String>>,
    counts: Mutex<HashMap<String, u64>>,
    auth: Mutex<Option<TokenAuth>>,
    tokens_issued: AtomicU64,
}

pub struct Proxy {
    pub url: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream.parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        let own_url = url.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, upstream, st.clone(), own_url.clone()));
            }
        });
        Proxy { url, state, task }
    }

    pub fn add_rule(&self, path_contains: &str, fault: Fault, times: Option<u32>) {
        self.state.rules.lock().unwrap().push(Rule {
            path_contains: path_contains.into(),
            fault,
            remaining: times,
        });
    }

    /// Rewrites `from` to `to` in request targets before forwarding (e.g. a smaller
    /// page size, so the real registry paginates).
    pub fn rewrite(&self, from: &str, to: &str) {
        self.state
            .rewrites
            .lock()
            .unwrap()
            .push((from.into(), to.into()));
    }

    /// Removes a request header before forwarding (e.g. `if-none-match`, to play a
    /// registry that ignores conditional requests).
    pub fn drop_header(&self, name: &str) {
        self.state
            .dropped_headers
            .lock()
            .unwrap()
            .push(format!("{}:", name.to_ascii_lowercase()));
    }

    pub fn clear_rules(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Requires bearer tokens from its own `/token` endpoint (which takes these basic
    /// credentials) for every `/v2/` request.
    pub fn require_tokens(&self, username: &str, password: &str, lifetime_secs: u64) {
        *self.state.auth.lock().unwrap() = Some(TokenAuth {
            username: username.into(),
            password: password.into(),
            lifetime_secs,
            issued: HashMap::new(),
        });
    }

    /// Invalidates every issued token (as a token server restart would).
    pub fn revoke_tokens(&self) {
        if let Some(a) = self.state.auth.lock().unwrap().as_mut() {
            a.issued.clear();
        }
    }

    pub fn tokens_issued(&self) -> u64 {
        self.state.tokens_issued.load(Ordering::SeqCst)
    }

    /// Requests seen whose `METHOD path` starts with `prefix` (e.g. `GET /v2/a/manifests`).
    pub fn count(&self, prefix: &str) -> u64 {
        self.state
            .counts
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

fn scope_of(path: &str) -> String {
    if path.starts_with("/v2/_catalog") {
        return "registry:catalog:*".into();
    }
    let rest = path.trim_start_matches("/v2/");
    for marker in ["/tags/", "/manifests/", "/blobs/"] {
        if let Some(i) = rest.find(marker) {
            return format!("repository:{}:pull", &rest[..i]);
        }
    }
    String::new()
}

async fn serve(
    mut stream: TcpStream,
    upstream: SocketAddr,
    state: Arc<ProxyState>,
    own_url: String,
) {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf).await {
        *state
            .counts
            .lock()
            .unwrap()
            .entry(format!("{} {}", request.method, request.path()))
            .or_default() += 1;
        // Token endpoint.
        if request.path() == "/token" {
            let answer = issue_token(&state, &request);
            if stream.write_all(&answer).await.is_err() {
                return;
            }
            continue;
        }
        // Bearer check.
        let challenge = {
            let mut auth = state.auth.lock().unwrap();
            match auth.as_mut() {
                Some(auth) if request.path().starts_with("/v2/") => {
                    let scope = scope_of(request.path());
                    let token = request
                        .header("authorization")
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or_default();
                    let valid = auth.issued.get(token).is_some_and(|(s, exp)| {
                        *exp > Instant::now() && (scope.is_empty() || *s == scope)
                    });
                    (!valid).then(|| {
                        format!(
                            "Bearer realm=\"{own_url}token\",service=\"flagstate-test\",scope=\"{scope}\""
                        )
                    })
                }
                _ => None,
            }
        };
        if let Some(challenge) = challenge {
            let body =
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
            let answer = response(401, &[("WWW-Authenticate", challenge)], body, false);
            if stream.write_all(&answer).await.is_err() {
                return;
            }
            continue;
        }
        // Faults.
        let fault = {
            let mut rules = state.rules.lock().unwrap();
            let mut found = None;
            for rule in rules.iter_mut() {
                if request.target.contains(&rule.path_contains) && rule.remaining != Some(0) {
                    if let Some(n) = rule.remaining.as_mut() {
                        *n -= 1;
                    }
                    found = Some(rule.fault.clone());
                    break;
                }
            }
            found
        };
        match fault {
            Some(Fault::Status { code, retry_after }) => {
                let headers: Vec<(&str, String)> = retry_after
                    .map(|s| ("Retry-After", s.to_string()))
                    .into_iter()
                    .collect();
                let body =
                    format!(r#"{{"errors":[{{"code":"INJECTED","message":"fault {code}"}}]}}"#);
                if stream
                    .write_all(&response(code, &headers, body.as_bytes(), false))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::Serve { headers, body }) => {
                if stream
                    .write_all(&response(200, &headers, &body, false))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Some(Fault::Reply { status, headers }) => {
                if stream
                    .write_all(&response(status, &headers, b"", false))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            None => {}
        }
        // Forward over a fresh connection that the upstream closes after answering.
        let mut up = match TcpStream::connect(upstream).await {
            Ok(up) => up,
            Err(e) => {
                tracing::debug!("proxy cannot reach {upstream}: {e}");
                return; // upstream down: drop the client connection
            }
        };
        let mut head = String::from_utf8_lossy(&request.raw_head).into_owned();
        if let Some(first_line_end) = head.find("\r\n") {
            let mut first = head[..first_line_end].to_owned();
            for (from, to) in state.rewrites.lock().unwrap().iter() {
                first = first.replace(from.as_str(), to);
            }
            head.replace_range(..first_line_end, &first);
        }
        let dropped = state.dropped_headers.lock().unwrap().clone();
        let mut rewritten = String::new();
        for (i, line) in head.split("\r\n").enumerate() {
            let lower = line.to_ascii_lowercase();
            if i > 0
                && (lower.starts_with("connection:")
                    || lower.starts_with("authorization:")
                    || dropped.iter().any(|d| lower.starts_with(d.as_str())))
            {
                continue;
            }
            if line.is_empty() {
                continue;
            }
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
        rewritten.push_str("Connection: close\r\n\r\n");
        if up.write_all(rewritten.as_bytes()).await.is_err()
            || up.write_all(&request.body).await.is_err()
        {
            return;
        }
        let mut answer = Vec::new();
        if let Err(e) = up.read_to_end(&mut answer).await {
            tracing::debug!("proxy read from upstream: {e}");
            return;
        }
        let _ = stream.write_all(&answer).await;
        // The upstream answered with `Connection: close`; so do we.
        return;
    }
}

fn issue_token(state: &ProxyState, request: &Request) -> Vec<u8> {
    use base64::Engine as _;
    let mut auth = state.auth.lock().unwrap();
    let Some(auth) = auth.as_mut() else {
        return response(404, &[], b"", false);
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", auth.username, auth.password))
    );
    if request.header("authorization") != Some(expected.as_str()) {
        return response(401, &[], br#"{"details":"bad credentials"}"#, false);
    }
    let scope = request
        .target
        .split_once('?')
        .map(|(_, q)| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let n = state.tokens_issued.fetch_add(1, Ordering::SeqCst);
    let token = format!("token-{n}");
    auth.issued.insert(
        token.clone(),
        (
            scope,
            Instant::now() + Duration::from_secs(auth.lifetime_secs),
        ),
    );
    let body = format!(
        r#"{{"token":"{token}","expires_in":{},"issued_at":"2024-01-01T00:00:00Z"}}"#,
        auth.lifetime_secs
    );
    response(
        200,
        &[("Content-Type", "application/json".into())],
        body.as_bytes(),
        false,
    )
}
