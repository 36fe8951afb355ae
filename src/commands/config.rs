//! `flagstate config check`: loads a configuration the way the command that uses it would,
//! validates it (reading the TLS certificate and key, when set), and prints the settings in
//! force (secrets never shown), without opening the store, the registry or a socket.
//!
//! flagstate's own configuration (file, `FLAGSTATE_*` environment, flags) is checked as
//! `serve` reads it; with `--index`, `--config` names a regindexer file and it is checked
//! as `flagstate index` reads it.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::commands::index::StaticIndexConfig;
use crate::config::{Config, ConfigError, DatabaseChoice};
use crate::error::CliError;

/// Prints the settings of a checked flagstate configuration; `source` names where it came
/// from.
pub fn run(config: &Config, source: Option<&Path>) -> Result<ExitCode, CliError> {
    // The certificate and key are read as `serve` reads them, so a file it would refuse
    // fails the check.
    config.tls.load()?;
    print!("{}", describe(config, source));
    Ok(ExitCode::SUCCESS)
}

/// Checks the regindexer file at `path` as `flagstate index` would and prints its plan.
pub fn run_index(path: &Path) -> Result<ExitCode, CliError> {
    let config = StaticIndexConfig::load(path)?;
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let plan = config.plan(&base)?;
    let mut out = format!("{}: valid static index configuration\n", path.display());
    for (registry, specs) in &plan.registries {
        for spec in specs {
            // `plan` has already built each query once; it cannot fail here.
            let query = spec.query().map_err(|e| {
                ConfigError::invalid(format!("indexes.{}", spec.name), e.to_string())
            })?;
            let _ = writeln!(
                out,
                "index {}: {} from {registry} (Registry {}), query {:?}{}",
                spec.name,
                spec.output.display(),
                spec.registry_public,
                query.canonical(),
                if spec.gzip { ", with .gz" } else { "" },
            );
        }
    }
    if let Some(icons) = &plan.icons {
        let _ = writeln!(
            out,
            "icons: {} (served as {})",
            icons.dir().display(),
            icons.uri()
        );
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The settings in force, one `key: value` line each, secrets replaced by whether they are
/// set.
pub fn describe(config: &Config, source: Option<&Path>) -> String {
    let mut out = String::new();
    let source = source.map_or_else(
        || "defaults, environment and flags".to_owned(),
        |p| p.display().to_string(),
    );
    let _ = writeln!(out, "{source}: valid configuration");
    let _ = writeln!(out, "listen: {}", config.listen);
    match config.tls.files() {
        Ok(Some((cert, key))) => {
            let _ = writeln!(
                out,
                "tls: https with certificate {} and key {}",
                cert.display(),
                key.display()
            );
        }
        Ok(None) => {
            let _ = writeln!(out, "tls: off (plain http)");
        }
        Err(e) => {
            let _ = writeln!(out, "tls: invalid: {e}");
        }
    }
    let mode = if config.read_only {
        "read-only replica (no indexer; /events answers 503)"
    } else {
        "writer (indexes the registry)"
    };
    let _ = writeln!(out, "mode: {mode}");
    let registry = &config.registry;
    let url = registry
        .url
        .as_ref()
        .map_or_else(|| "none".to_owned(), ToString::to_string);
    let credentials = match (&registry.username, &registry.token) {
        (Some(user), _) => format!("basic auth as {user}"),
        (None, Some(_)) => "bearer token".to_owned(),
        (None, None) => "none".to_owned(),
    };
    let _ = writeln!(out, "registry.url: {url} (credentials: {credentials})");
    let _ = writeln!(out, "registry.public_url: {}", config.public_registry_url());
    if !registry.repositories.is_empty() {
        let _ = writeln!(
            out,
            "registry.repositories: {} (the catalog is not read)",
            registry.repositories.join(", ")
        );
    }
    let database = match config.database.choice() {
        Ok(DatabaseChoice::Sqlite(path)) => {
            let sqlite = config.database.sqlite_settings();
            let lower = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
            format!(
                "sqlite {} (synchronous {}, check_on_open {})",
                path.display(),
                lower(&sqlite.synchronous),
                lower(&sqlite.check_on_open)
            )
        }
        Ok(DatabaseChoice::Postgres { url, schema }) => format!(
            "postgres {}{}",
            redact_password(&url),
            schema.map_or_else(String::new, |s| format!(" (schema {s})"))
        ),
        Err(e) => format!("invalid: {e}"),
    };
    let _ = writeln!(out, "database: {database}");
    let events = if config.read_only {
        "disabled (read-only)"
    } else if config.events.token().is_some() {
        "token set: notifications need it"
    } else if config.events.allow_anonymous {
        "anonymous notifications accepted"
    } else {
        "no token: every notification is refused"
    };
    let _ = writeln!(out, "events: {events}");
    match &config.icons.dir {
        Some(dir) => {
            let _ = writeln!(
                out,
                "icons: extracted to {} (served as {})",
                dir.display(),
                config.icons.uri.as_deref().unwrap_or("/icons/")
            );
        }
        None => {
            let _ = writeln!(out, "icons: inline (data: URIs)");
        }
    }
    let on = |b: bool| if b { "on" } else { "off" };
    let _ = writeln!(
        out,
        "components: web_ui {}, assert_endpoint {}",
        on(config.components.web_ui),
        on(config.components.assert_endpoint)
    );
    let every = |d: Option<std::time::Duration>| {
        d.map_or_else(
            || "never".to_owned(),
            |d| humantime::format_duration(d).to_string(),
        )
    };
    let _ = writeln!(
        out,
        "interval: fetch_all {}, garbage_collect {}",
        every(config.interval.fetch_all()),
        every(config.interval.garbage_collect())
    );
    let endpoints = &config.notifications.endpoints;
    if !endpoints.is_empty() {
        let names: Vec<String> = endpoints
            .iter()
            .map(|e| format!("{} ({})", e.name, redact_password(&e.url)))
            .collect();
        let who = if config.read_only {
            "not delivered here: read-only"
        } else {
            "delivered by this writer"
        };
        let _ = writeln!(out, "notifications: {} ({who})", names.join(", "));
    }
    out
}

/// `url` with its password, if any, replaced by `***`.
fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password only fails for URLs that cannot have one, and this one has.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://flagstate:s3cret@db:5432/flagstate"),
            "postgres://flagstate:***@db:5432/flagstate"
        );
        assert_eq!(
            redact_password("postgres://db/flagstate"),
            "postgres://db/flagstate"
        );
    }

    #[test]
    fn describe_names_no_secret() {
        let mut config = Config::default();
        config.events.token = Some("OPEN_SESAME".into());
        config.registry.password = Some("hunter2".into());
        config.registry.username = Some("alice".into());
        let text = describe(&config, None);
        assert!(!text.contains("OPEN_SESAME"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("basic auth as alice"), "{text}");
        assert!(text.contains("events: token set"), "{text}");
    }

    #[test]
    fn describe_names_webhook_endpoints_without_their_secrets() {
        let mut config = Config::default();
        assert!(!describe(&config, None).contains("notifications"));
        let endpoint: crate::config::notifications::EndpointSettings =
            serde_json::from_value(serde_json::json!({
                "name": "ci",
                "url": "https://bot:s3cret@ci.example/hook",
                "headers": {"Authorization": "Bearer t0ken"},
            }))
            .unwrap();
        config.notifications.endpoints.push(endpoint);
        let text = describe(&config, None);
        assert!(
            text.contains(
                "notifications: ci (https://bot:***@ci.example/hook) (delivered by this writer)"
            ),
            "{text}"
        );
        assert!(
            !text.contains("s3cret") && !text.contains("t0ken"),
            "{text}"
        );
        config.read_only = true;
        assert!(describe(&config, None).contains("not delivered here: read-only"));
    }
}
