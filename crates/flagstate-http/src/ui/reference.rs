//! How pages point elsewhere: pull commands naming the registry host, and icon URLs
//! taken from labels.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Uri, header};
use url::Url;

/// Where pull commands send clients: `host[:port]` of the registry, and whether it
/// speaks plain HTTP (so clients need TLS verification turned off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `host` or `host:port`.
    pub host: String,
    /// The configured registry URL says `http://`.
    pub plain_http: bool,
}

impl RegistryHost {
    /// The host of the configured public registry URL; when that URL is relative (the
    /// registry is served under the same host as this index), the host the request was
    /// sent to.
    pub fn resolve(registry: &str, request: &HeaderMap, uri: &Uri) -> Self {
        if let Ok(url) = Url::parse(registry)
            && let Some(host) = url.host_str()
        {
            let host = match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            };
            return RegistryHost {
                host,
                plain_http: url.scheme() == "http",
            };
        }
        let requested = request
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .filter(|h| is_plausible_host(h));
        RegistryHost {
            host: requested.unwrap_or("localhost").to_owned(),
            plain_http: false,
        }
    }

    /// `podman pull` and `skopeo copy` commands for `name` at `reference`, which is
    /// `:tag` or `@digest`.
    pub fn pull_commands(&self, name: &str, reference: &str) -> Vec<PullCommand> {
        let tls = if self.plain_http {
            " --tls-verify=false"
        } else {
            ""
        };
        let image = format!("{}/{name}{reference}", self.host);
        // skopeo needs a destination; an OCI layout directory named after the repository
        // is the one that works without any other tool installed.
        let base = name.rsplit('/').next().unwrap_or(name);
        let layout_ref = match reference.strip_prefix(':') {
            Some(tag) => format!("{base}:{tag}"),
            None => base.to_owned(),
        };
        let src_tls = if self.plain_http {
            " --src-tls-verify=false"
        } else {
            ""
        };
        vec![
            PullCommand {
                tool: "podman",
                command: format!("podman pull{tls} {image}"),
            },
            PullCommand {
                tool: "skopeo",
                command: format!("skopeo copy{src_tls} docker://{image} oci:{layout_ref}"),
            },
        ]
    }
}

/// A shell command shown for copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullCommand {
    /// The tool it runs.
    pub tool: &'static str,
    /// The full command line.
    pub command: String,
}

/// A `Host` header is shown verbatim in commands; anything beyond host name, IP literal
/// and port characters is refused rather than echoed.
fn is_plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

/// A safe `<img src>` for an icon label value: `data:image/…` URIs and `http(s)` URLs
/// as they are; relative URLs resolved the way Flatpak resolves them, against the
/// index URL (`/index/static`). Anything else (other schemes, garbage) gives `None`.
pub fn icon_src(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Some(rest) = value.get(..11)
        && rest.eq_ignore_ascii_case("data:image/")
    {
        return Some(value.to_owned());
    }
    match Url::parse(value) {
        Ok(url) => matches!(url.scheme(), "http" | "https").then(|| url.to_string()),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let base = Url::parse("http://index.invalid/index/static").ok()?;
            let joined = base.join(value).ok()?;
            if joined.host_str() == Some("index.invalid") {
                Some(joined[url::Position::BeforePath..].to_owned())
            } else {
                Some(joined.to_string())
            }
        }
        Err(_) => None,
    }
}

/// The first usable icon among `keys`, looking at labels before annotations.
pub fn find_icon<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<String> {
    keys.into_iter().find_map(|k| {
        labels
            .get(k)
            .and_then(|v| icon_src(v))
            .or_else(|| annotations.get(k).and_then(|v| icon_src(v)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(registry: &str, host_header: Option<&str>) -> RegistryHost {
        let mut headers = HeaderMap::new();
        if let Some(h) = host_header {
            headers.insert(header::HOST, h.parse().unwrap());
        }
        RegistryHost::resolve(registry, &headers, &Uri::from_static("/r/x"))
    }

    #[test]
    fn host_from_registry_url_or_request() {
        assert_eq!(
            host("https://registry.example.org/", Some("index.example.org")),
            RegistryHost {
                host: "registry.example.org".into(),
                plain_http: false
            }
        );
        assert_eq!(
            host("http://127.0.0.1:5000", None),
            RegistryHost {
                host: "127.0.0.1:5000".into(),
                plain_http: true
            }
        );
        assert_eq!(host("/", Some("idx.example:8080")).host, "idx.example:8080");
        assert_eq!(host("/", Some("bad host<")).host, "localhost");
        assert_eq!(host("", None).host, "localhost");
    }

    #[test]
    fn pull_commands_name_host_repository_and_reference() {
        let h = RegistryHost {
            host: "reg.example".into(),
            plain_http: true,
        };
        let cmds = h.pull_commands("apps/editor", ":stable");
        assert_eq!(
            cmds[0].command,
            "podman pull --tls-verify=false reg.example/apps/editor:stable"
        );
        assert_eq!(
            cmds[1].command,
            "skopeo copy --src-tls-verify=false docker://reg.example/apps/editor:stable oci:editor:stable"
        );
        let h = RegistryHost {
            host: "reg.example".into(),
            plain_http: false,
        };
        assert_eq!(
            h.pull_commands("a", "@sha256:00")[0].command,
            "podman pull reg.example/a@sha256:00"
        );
    }

    #[test]
    fn icon_sources() {
        assert_eq!(
            icon_src("data:image/png;base64,AAAA").as_deref(),
            Some("data:image/png;base64,AAAA")
        );
        assert_eq!(
            icon_src("https://cdn.example/i.png").as_deref(),
            Some("https://cdn.example/i.png")
        );
        assert_eq!(
            icon_src("icons/ab/cd.png").as_deref(),
            Some("/index/icons/ab/cd.png")
        );
        assert_eq!(icon_src("/icons/x.png").as_deref(), Some("/icons/x.png"));
        assert_eq!(icon_src("javascript:alert(1)"), None);
        assert_eq!(icon_src("data:text/html,<script>"), None);
        assert_eq!(icon_src("  "), None);
    }
}
