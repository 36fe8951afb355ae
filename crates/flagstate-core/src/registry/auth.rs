//! Registry authentication: credentials, `WWW-Authenticate` challenges and the bearer
//! token cache.
//!
//! The distribution token flow: a request without (valid) credentials gets `401` with
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`; the client asks the realm
//! for a token (with HTTP basic credentials when it has them), caches it per scope until
//! it expires, and repeats the request with `Authorization: Bearer <token>`.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How to authenticate to the registry.
///
/// `Debug` prints the user name at most, never a password or token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic credentials: sent directly when the registry asks for `Basic`, and to
    /// the token endpoint when it asks for `Bearer`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A ready-made bearer token, sent with every request.
    Bearer {
        /// The token.
        token: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Bearer { .. } => f
                .debug_struct("Bearer")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the first challenge of a `WWW-Authenticate` header value. Unknown schemes
/// give `None`.
///
/// Written by hand because the grammar needed is tiny (one scheme, `key="value"` pairs
/// with backslash escapes) and the crates that parse it are unmaintained.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(mut rest: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        params.insert(key, value);
    }
    params
}

/// The token endpoint's answer. Registries use either field name.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long it may be used. The distribution spec's default lifetime
    /// is 60 seconds; a margin keeps us from sending a token in its last moment.
    pub fn into_token(self) -> Option<(String, Duration)> {
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60).max(1));
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        Some((token, lifetime - margin))
    }
}

/// What the client learned about how the registry wants to be authenticated.
#[derive(Default)]
pub(crate) struct AuthState {
    /// The registry asked for basic credentials: send them pre-emptively from now on.
    pub basic: bool,
    /// Bearer tokens by scope key, with their expiry.
    pub tokens: HashMap<String, (String, Instant)>,
    /// The last bearer challenge seen, so a new scope can be authorised before the
    /// first request instead of after a 401.
    pub bearer: Option<(String, Option<String>)>,
}

impl AuthState {
    /// A cached, unexpired token for `scope`.
    pub fn token(&self, scope: &str) -> Option<String> {
        self.tokens
            .get(scope)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(token, _)| token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None, "realm required");
        assert_eq!(
            parse_challenge(r#"bearer realm=http://t/x , scope="a\"b""#),
            Some(Challenge::Bearer {
                realm: "http://t/x".into(),
                service: None,
                scope: Some("a\"b".into()),
            })
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let basic = Credentials::Basic {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        let bearer = Credentials::Bearer {
            token: "s3cr3t".into(),
        };
        let shown = format!("{basic:?} {bearer:?}");
        assert!(shown.contains("alice"));
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

    #[test]
    fn token_lifetime() {
        let r = TokenResponse {
            token: None,
            access_token: Some("t".into()),
            expires_in: Some(300),
        };
        let (t, life) = r.into_token().unwrap();
        assert_eq!(t, "t");
        assert_eq!(life, Duration::from_secs(270));
        let empty = TokenResponse {
            token: Some(String::new()),
            access_token: None,
            expires_in: None,
        };
        assert!(empty.into_token().is_none());
    }
}
