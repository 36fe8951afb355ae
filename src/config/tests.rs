//! Tests of configuration loading. `figment::Jail` gives each test its own working
//! directory and environment, serialised behind a lock.

// `Jail::expect_with` closures must return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::path::Path;
use std::time::Duration;

use figment::Jail;
use figment::error::Kind;

use super::*;

const GO_STYLE: &str = "\
registry:
    url: http://registry:5000
    public_url: /
components:
    web_ui: true
    assert_endpoint: true
events:
    token: \"OPEN_SESAME\"
database:
    postgres:
        url: postgres://index:secret@db:5432/index?sslmode=disable
cache:
    max_age_index: 1s
    max_age_html: 2m
interval:
    fetch_all: 1h
    garbage_collect: 30m
";

fn load(jail: &Jail, yaml: &str) -> Result<Config, ConfigError> {
    jail.create_file("config.yaml", yaml).unwrap();
    Config::load(Some(Path::new("config.yaml")))
}

fn load_err(jail: &Jail, yaml: &str) -> String {
    match load(jail, yaml) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_without_file_or_environment() {
    Jail::expect_with(|_| {
        let c = Config::load(None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8088");
        assert!(!c.read_only);
        assert_eq!(
            c.database.choice().unwrap(),
            DatabaseChoice::Sqlite(PathBuf::from("flagstate.db"))
        );
        assert_eq!(c.interval.fetch_all(), Some(Duration::from_secs(3600)));
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(c.validate(false).is_ok());
        let e = c.validate(true).unwrap_err().to_string();
        assert!(e.contains("registry.url"), "{e}");
        Ok(())
    });
}

#[test]
fn reads_the_original_go_keys() {
    Jail::expect_with(|jail| {
        let c = load(jail, GO_STYLE).unwrap();
        assert_eq!(
            c.registry.url.as_ref().unwrap().as_str(),
            "http://registry:5000/"
        );
        assert_eq!(c.public_registry_url(), "/");
        assert!(c.components.web_ui && c.components.assert_endpoint);
        assert_eq!(c.events.token.as_deref(), Some("OPEN_SESAME"));
        assert_eq!(
            c.database.choice().unwrap(),
            DatabaseChoice::Postgres {
                url: "postgres://index:secret@db:5432/index?sslmode=disable".into(),
                schema: None,
            }
        );
        assert_eq!(c.cache.max_age_index, Duration::from_secs(1));
        assert_eq!(c.cache.max_age_html, Duration::from_secs(120));
        assert_eq!(
            c.interval.garbage_collect(),
            Some(Duration::from_secs(1800))
        );
        c.validate(true).unwrap();
        Ok(())
    });
}

#[test]
fn reads_the_new_keys() {
    Jail::expect_with(|jail| {
        let c = load(
            jail,
            "listen: 0.0.0.0:9000\nread_only: true\n\
             registry: {url: 'https://r.example', username: u, password: p, \
             repositories: [a/b, c], timeout: 10s, max_concurrency: 3}\n\
             database: {sqlite: {path: /var/lib/x.db}}\n\
             log: {format: json, filter: 'flagstate=debug,info'}\n\
             icons: {dir: /srv/icons, uri: /icons/}\n",
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert!(c.read_only);
        assert_eq!(c.registry.repositories, ["a/b", "c"]);
        assert_eq!(c.registry.timeout, Duration::from_secs(10));
        assert_eq!(c.registry.max_concurrency, 3);
        assert_eq!(
            c.database.choice().unwrap(),
            DatabaseChoice::Sqlite("/var/lib/x.db".into())
        );
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.icons.dir.as_deref(), Some(Path::new("/srv/icons")));
        c.validate(true).unwrap();
        Ok(())
    });
}

#[test]
fn unknown_keys_are_named_with_their_full_path() {
    Jail::expect_with(|jail| {
        let e = load_err(jail, "registry:\n  url: http://x\nlisten_addr: 1\n");
        assert!(e.contains("listen_addr: unknown key"), "{e}");
        assert!(e.contains("config.yaml"), "{e}");

        let e = load_err(jail, "registry:\n  urll: http://x\n");
        assert!(e.contains("registry.urll: unknown key"), "{e}");
        assert!(e.contains("url, public_url"), "{e}");

        let e = load_err(jail, "database:\n  postgres:\n    uri: postgres://x\n");
        assert!(e.contains("database.postgres.uri: unknown key"), "{e}");
        Ok(())
    });
}

#[test]
fn bad_values_name_their_key() {
    Jail::expect_with(|jail| {
        let e = load_err(jail, "interval:\n  fetch_all: soon\n");
        assert!(e.contains("interval.fetch_all"), "{e}");
        assert!(e.contains("\"soon\""), "{e}");

        let e = load_err(jail, "cache:\n  max_age_index: 5\n");
        assert!(
            e.contains("cache.max_age_index") && e.contains("no unit"),
            "{e}"
        );

        let e = load_err(jail, "log:\n  format: xml\n");
        assert!(e.contains("log.format") && e.contains("xml"), "{e}");

        let e = load_err(jail, "listen: nowhere\n");
        assert!(e.contains("listen"), "{e}");

        let e = load_err(jail, "registry: [1, 2\n");
        assert!(e.contains("config.yaml"), "{e}");
        Ok(())
    });
}

#[test]
fn durations_follow_go_spelling_and_zero_means_never() {
    assert_eq!(duration::parse("0").unwrap(), Duration::ZERO);
    assert_eq!(duration::parse("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(
        duration::parse("250ms").unwrap(),
        Duration::from_millis(250)
    );
    assert!(duration::parse("").is_err());
    assert!(duration::parse("-1s").is_err());
    Jail::expect_with(|jail| {
        let c = load(jail, "interval:\n  fetch_all: 0\n  garbage_collect: '0'\n").unwrap();
        assert_eq!(c.interval.fetch_all(), None);
        assert_eq!(c.interval.garbage_collect(), None);
        Ok(())
    });
}

#[test]
fn missing_file_is_reported() {
    Jail::expect_with(|_| {
        let e = Config::load(Some(Path::new("nope.yaml"))).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("nope.yaml"), "{e}");
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file() {
    Jail::expect_with(|jail| {
        jail.set_env("FLAGSTATE_REGISTRY__URL", "http://from-env:5000");
        jail.set_env("FLAGSTATE_INTERVAL__FETCH_ALL", "0");
        jail.set_env("FLAGSTATE_READ_ONLY", "true");
        jail.set_env("FLAGSTATE_REGISTRY__PASSWORD", "0123");
        jail.set_env("FLAGSTATE_REGISTRY__USERNAME", "true");
        jail.set_env("FLAGSTATE_REGISTRY__REPOSITORIES", "[a, b/c]");
        // Not configuration: other programs' variables share the prefix.
        jail.set_env("FLAGSTATE_REQUIRE_REGISTRY", "1");
        jail.set_env("FLAGSTATE_TEST_PG_URL", "postgres://x");
        let c = load(jail, GO_STYLE).unwrap();
        assert_eq!(c.registry.url.unwrap().as_str(), "http://from-env:5000/");
        assert_eq!(c.interval.fetch_all(), None);
        assert!(c.read_only);
        assert_eq!(c.registry.password.as_deref(), Some("0123"));
        assert_eq!(c.registry.username.as_deref(), Some("true"));
        assert_eq!(c.registry.repositories, ["a", "b/c"]);
        Ok(())
    });
}

#[test]
fn unknown_environment_keys_are_named() {
    Jail::expect_with(|jail| {
        jail.set_env("FLAGSTATE_REGISTRY__URLL", "http://x");
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.contains("registry.urll: unknown key"), "{e}");
        assert!(e.contains("FLAGSTATE_"), "{e}");
        Ok(())
    });
}

#[test]
fn top_level_key_list_matches_the_struct() {
    Jail::expect_with(|_| {
        let e = Figment::new()
            .merge(("zz_not_a_key", 1))
            .extract::<Config>()
            .unwrap_err();
        let Kind::UnknownField(_, expected) = &e.kind else {
            panic!("{e}");
        };
        let mut expected: Vec<_> = expected.to_vec();
        let mut ours = TOP_LEVEL_KEYS.to_vec();
        expected.sort_unstable();
        ours.sort_unstable();
        assert_eq!(expected, ours);
        Ok(())
    });
}

#[test]
fn validation_catches_inconsistent_settings() {
    Jail::expect_with(|jail| {
        let check = |yaml: &str, key: &str| {
            let c = load(jail, yaml).unwrap();
            let e = c.validate(true).unwrap_err().to_string();
            assert!(e.starts_with(key), "{yaml}: {e}");
        };
        let url = "registry: {url: 'http://r'}\n";
        check(
            &format!("{url}database: {{sqlite: {{path: x}}, postgres: {{url: 'postgres://'}}}}"),
            "database",
        );
        for (yaml, needle) in [
            (
                "registry: {url: 'ftp://r'}",
                "must be an http:// or https:// URL",
            ),
            (
                "registry: {url: '127.0.0.1:5000'}",
                "add http:// or https://",
            ),
        ] {
            let e = load(jail, yaml).unwrap_err().to_string();
            assert!(
                e.starts_with("registry.url: ") && e.contains(needle),
                "{yaml}: {e}"
            );
        }
        check(
            "registry: {url: 'http://r', username: u}",
            "registry.username",
        );
        check(
            "registry: {url: 'http://r', username: u, password: p, token: t}",
            "registry.token",
        );
        check(
            "registry: {url: 'http://r', repositories: [Bad]}",
            "registry.repositories",
        );
        check(
            "registry: {url: 'http://r', max_concurrency: 0}",
            "registry.max_concurrency",
        );
        check(
            &format!("{url}events: {{token: t, allow_anonymous: true}}"),
            "events.allow_anonymous",
        );
        check(
            &format!("{url}events: {{max_pending_reconciles: 0}}"),
            "events.max_pending_reconciles",
        );
        check(
            &format!("{url}server: {{max_connections: 0}}"),
            "server.max_connections",
        );
        check(
            &format!("{url}server: {{max_in_flight: 0}}"),
            "server.max_in_flight",
        );
        check(
            &format!("{url}server: {{max_change_watchers: 0}}"),
            "server.max_change_watchers",
        );
        check(
            &format!("{url}server: {{change_buffer_records: 0}}"),
            "server.change_buffer_records",
        );
        check(
            &format!("{url}server: {{max_concurrent_builds: 0}}"),
            "server.max_concurrent_builds",
        );
        check(
            &format!("{url}server: {{idle_timeout: 0}}"),
            "server.idle_timeout",
        );
        check(
            &format!("{url}server: {{build_timeout: 0}}"),
            "server.build_timeout",
        );
        check(
            &format!("{url}server: {{header_read_timeout: 0}}"),
            "server.header_read_timeout",
        );
        check(&format!("{url}icons: {{uri: /i/}}"), "icons.uri");
        check(&format!("{url}tls: {{cert: c.pem}}"), "tls.key");
        check(&format!("{url}tls: {{key: k.pem}}"), "tls.cert");
        check(
            &format!("{url}server: {{tls_handshake_timeout: 0}}"),
            "server.tls_handshake_timeout",
        );
        // An empty token counts as none: valid, and it opens nothing.
        let c = load(jail, &format!("{url}events: {{token: ''}}")).unwrap();
        c.validate(true).unwrap();
        assert_eq!(c.events.token(), None);
        assert!(!c.events.allow_anonymous);
        check(&format!("{url}log: {{filter: 'a=b=c'}}"), "log.filter");
        Ok(())
    });
}

#[test]
fn database_argument_selects_the_backend() {
    let mut db = DatabaseSettings {
        postgres: Some(PostgresSettings {
            url: "postgres://file".into(),
            schema: Some("idx".into()),
            generation_poll: Some(Duration::from_secs(2)),
            unconfirmed_limit: Some(Duration::from_secs(30)),
        }),
        sqlite: None,
    };
    // Another PostgreSQL URL keeps the configured schema and poll interval.
    db.set_from_argument("postgresql://u@h/d").unwrap();
    let pg = DatabaseChoice::Postgres {
        url: "postgresql://u@h/d".into(),
        schema: Some("idx".into()),
    };
    assert_eq!(db.choice().unwrap(), pg);
    assert_eq!(
        db.postgres.as_ref().and_then(|pg| pg.generation_poll),
        Some(Duration::from_secs(2))
    );
    db.set_from_argument("sqlite:///tmp/a.db").unwrap();
    assert_eq!(
        db.choice().unwrap(),
        DatabaseChoice::Sqlite("/tmp/a.db".into())
    );
    db.set_from_argument("relative.db").unwrap();
    assert_eq!(
        db.choice().unwrap(),
        DatabaseChoice::Sqlite("relative.db".into())
    );
    assert!(db.set_from_argument("sqlite://").is_err());
    assert!(db.set_from_argument("").is_err());
}

#[test]
fn env_var_names() {
    assert_eq!(env_var_name("registry.url"), "FLAGSTATE_REGISTRY__URL");
    assert_eq!(env_var_name("read_only"), "FLAGSTATE_READ_ONLY");
}

#[test]
fn build_timeout_has_a_default_and_a_key() {
    Jail::expect_with(|jail| {
        let defaults = load(jail, "{}\n").unwrap();
        assert_eq!(
            crate::setup::http_config(&defaults).build_timeout,
            flagstate_http::HttpConfig::default().build_timeout
        );
        let c = load(jail, "server: {build_timeout: 90s}\n").unwrap();
        assert_eq!(
            crate::setup::http_config(&c).build_timeout,
            Duration::from_secs(90)
        );
        Ok(())
    });
}

#[test]
fn server_workers_default_to_the_cpus_and_are_bounded() {
    Jail::expect_with(|jail| {
        let defaults = load(jail, "{}\n").unwrap();
        assert_eq!(
            defaults.server.server_config().workers,
            flagstate_http::server::default_workers()
        );
        assert!(defaults.server.server_config().workers >= 1);
        let shared = load(jail, "server: {workers: 0}\n").unwrap();
        assert_eq!(shared.server.server_config().workers, 0);
        assert!(shared.validate(false).is_ok());
        let many = load(jail, "server: {workers: 100000}\n").unwrap();
        let e = many.validate(false).unwrap_err().to_string();
        assert!(e.contains("server.workers") && e.contains("at most"), "{e}");
        Ok(())
    });
}

#[test]
fn query_limits_have_defaults_keys_and_checks() {
    Jail::expect_with(|jail| {
        let defaults = load(jail, "{}\n").unwrap();
        assert_eq!(
            defaults.query.limits(),
            flagstate_core::query::QueryLimits::default()
        );
        let c = load(
            jail,
            "query: {max_pattern_bytes: 1024, max_pattern_wildcards: 4, max_match_cost: 5000}\n",
        )
        .unwrap();
        let limits = c.query.limits();
        assert_eq!(
            (
                limits.max_pattern_bytes,
                limits.max_pattern_wildcards,
                limits.max_match_cost
            ),
            (1024, 4, 5000)
        );
        assert_eq!(crate::setup::http_config(&c).query_limits, limits);
        jail.set_env("FLAGSTATE_QUERY__MAX_MATCH_COST", "77");
        assert_eq!(load(jail, "{}\n").unwrap().query.max_match_cost, 77);
        jail.clear_env();
        for key in ["max_pattern_bytes", "max_match_cost"] {
            let c = load(jail, &format!("query: {{{key}: 0}}\n")).unwrap();
            let e = c.validate(false).unwrap_err().to_string();
            assert!(e.contains(&format!("query.{key}")), "{e}");
        }
        assert!(load_err(jail, "query: {max_glob: 1}\n").contains("query.max_glob"));
        Ok(())
    });
}

#[test]
fn sqlite_synchronous_and_check_on_open() {
    use flagstate_sqlite::{CheckOnOpen, Durability};
    Jail::expect_with(|jail| {
        // Defaults: FULL commits and a quick_check at open, with or without the section.
        let defaults =
            crate::setup::sqlite_options(&load(jail, "{}\n").unwrap().database.sqlite_settings());
        assert_eq!(defaults.durability, Durability::Full);
        assert_eq!(defaults.check_on_open, CheckOnOpen::Quick);
        assert_eq!(
            defaults.generation_refresh,
            flagstate_sqlite::DEFAULT_GENERATION_REFRESH
        );
        let c = load(jail, "database: {sqlite: {synchronous: full}}\n").unwrap();
        assert_eq!(
            c.database.choice().unwrap(),
            DatabaseChoice::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH))
        );

        let c = load(
            jail,
            "database: {sqlite: {path: a.db, synchronous: normal, check_on_open: none, \
             generation_refresh: 2s}}\n",
        )
        .unwrap();
        let options = crate::setup::sqlite_options(&c.database.sqlite_settings());
        assert_eq!(
            options.generation_refresh,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(options.durability, Durability::Normal);
        assert_eq!(options.check_on_open, CheckOnOpen::Skip);
        // --database replaces the file, not the other SQLite settings.
        let mut db = c.database.clone();
        db.set_from_argument("b.db").unwrap();
        let settings = db.sqlite_settings();
        assert_eq!(settings.path, PathBuf::from("b.db"));
        assert_eq!(settings.synchronous, SqliteSynchronous::Normal);
        assert_eq!(settings.check_on_open, SqliteCheckOnOpen::None);

        jail.set_env("FLAGSTATE_DATABASE__SQLITE__SYNCHRONOUS", "normal");
        let c = load(jail, "{}\n").unwrap();
        assert_eq!(
            c.database.sqlite_settings().synchronous,
            SqliteSynchronous::Normal
        );
        jail.clear_env();

        for (yaml, key) in [
            ("database: {sqlite: {synchronous: off}}\n", "synchronous"),
            (
                "database: {sqlite: {check_on_open: full}}\n",
                "check_on_open",
            ),
            (
                "database: {sqlite: {generation_refresh: soon}}\n",
                "generation_refresh",
            ),
        ] {
            let e = load_err(jail, yaml);
            assert!(e.contains(key), "{e}");
        }
        Ok(())
    });
}

#[test]
fn cache_bounds_reach_the_http_layer_and_zero_is_refused() {
    Jail::expect_with(|jail| {
        let defaults = crate::setup::http_config(&load(jail, "{}\n").unwrap());
        let http = flagstate_http::HttpConfig::default();
        assert_eq!(defaults.index_cache_entries, http.index_cache_entries);
        assert_eq!(defaults.page_cache_bytes, http.page_cache_bytes);

        let c = load(
            jail,
            "cache: {index_entries: 10, index_bytes: 2000, page_entries: 3, page_bytes: 4000, \
             answer_dir: /srv/answers, answer_memory_max: 5, answer_disk_bytes: 6000}\n",
        )
        .unwrap();
        let h = crate::setup::http_config(&c);
        assert_eq!(
            (
                h.index_cache_entries,
                h.index_cache_bytes,
                h.page_cache_entries,
                h.page_cache_bytes
            ),
            (10, 2000, 3, 4000)
        );
        assert_eq!(
            (
                h.answer_dir.as_deref(),
                h.answer_memory_max,
                h.answer_disk_bytes
            ),
            (Some(std::path::Path::new("/srv/answers")), 5, 6000)
        );
        assert_eq!(defaults.answer_dir, None);
        assert_eq!(defaults.answer_memory_max, http.answer_memory_max);
        for key in [
            "index_entries",
            "index_bytes",
            "page_bytes",
            "answer_disk_bytes",
        ] {
            let c = load(jail, &format!("cache: {{{key}: 0}}\n")).unwrap();
            let e = c.validate(false).unwrap_err().to_string();
            assert!(e.contains(&format!("cache.{key}")), "{e}");
        }
        // No page cache at all is a choice, not a mistake.
        let c = load(jail, "cache: {page_entries: 0}\n").unwrap();
        assert!(c.validate(false).is_ok());
        assert_eq!(crate::setup::http_config(&c).page_cache_entries, 0);
        Ok(())
    });
}

#[test]
fn ui_remote_name_defaults_to_the_readme_name_and_is_checked() {
    Jail::expect_with(|jail| {
        let c = load(jail, "{}\n").unwrap();
        assert_eq!(c.ui.remote_name, "myregistry");
        assert_eq!(
            crate::setup::http_config(&c).ui_remote_name,
            flagstate_http::HttpConfig::default().ui_remote_name
        );
        let c = load(jail, "ui: {remote_name: acme_flatpaks-2.x}\n").unwrap();
        assert!(c.validate(false).is_ok());
        assert_eq!(
            crate::setup::http_config(&c).ui_remote_name,
            "acme_flatpaks-2.x"
        );
        for bad in ["''", "'-x'", "'.x'", "'a b'", "'a;rm -rf'", "'ü'"] {
            let c = load(jail, &format!("ui: {{remote_name: {bad}}}\n")).unwrap();
            let e = c.validate(false).unwrap_err().to_string();
            assert!(e.contains("ui.remote_name"), "{bad}: {e}");
        }
        jail.set_env("FLAGSTATE_UI__REMOTE_NAME", "fromenv");
        assert_eq!(load(jail, "{}\n").unwrap().ui.remote_name, "fromenv");
        Ok(())
    });
}

#[test]
fn postgres_generation_poll() {
    Jail::expect_with(|jail| {
        let url = "database: {postgres: {url: 'postgres://h/d'";
        let c = load(jail, &format!("{url}}}}}\n")).unwrap();
        c.validate(false).unwrap();
        assert_eq!(c.database.postgres.as_ref().unwrap().generation_poll, None);
        let c = load(jail, &format!("{url}, generation_poll: 250ms}}}}\n")).unwrap();
        c.validate(false).unwrap();
        assert_eq!(
            c.database.postgres.as_ref().unwrap().generation_poll,
            Some(Duration::from_millis(250))
        );
        let c = load(jail, &format!("{url}, generation_poll: 0}}}}\n")).unwrap();
        let e = c.validate(false).unwrap_err().to_string();
        assert!(
            e.contains("database.postgres.generation_poll") && e.contains("must not be 0"),
            "{e}"
        );
        let e = load_err(jail, &format!("{url}, generation_poll: often}}}}\n"));
        assert!(e.contains("generation_poll"), "{e}");
        let c = load(jail, &format!("{url}, unconfirmed_limit: 30s}}}}\n")).unwrap();
        c.validate(false).unwrap();
        assert_eq!(
            c.database.postgres.as_ref().unwrap().unconfirmed_limit,
            Some(Duration::from_secs(30))
        );
        let c = load(jail, &format!("{url}, unconfirmed_limit: 0}}}}\n")).unwrap();
        let e = c.validate(false).unwrap_err().to_string();
        assert!(e.contains("database.postgres.unconfirmed_limit"), "{e}");
        Ok(())
    });
}

#[test]
fn history_retention_has_a_default_a_key_and_a_floor() {
    Jail::expect_with(|jail| {
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.history.retention(),
            flagstate_core::HistoryRetention::default()
        );
        let c = load(jail, "history:\n  max_entries: 5\n  max_age: 7d\n").unwrap();
        let retention = c.history.retention();
        assert_eq!(retention.max_entries, 5);
        assert_eq!(retention.max_age, Some(Duration::from_secs(7 * 24 * 3600)));
        jail.set_env("FLAGSTATE_HISTORY__MAX_AGE", "0");
        let c = load(jail, "history:\n  max_entries: 5\n").unwrap();
        assert_eq!(
            c.history.retention().max_age,
            None,
            "0 keeps entries however old"
        );
        let c = load(jail, "history:\n  max_entries: 0\n").unwrap();
        let e = c.validate(false).unwrap_err().to_string();
        assert!(e.contains("history.max_entries"), "{e}");
        let e = load_err(jail, "history:\n  max_entrys: 3\n");
        assert!(e.contains("max_entrys"), "{e}");
        Ok(())
    });
}

#[test]
fn change_retention_has_a_default_a_key_and_a_floor() {
    Jail::expect_with(|jail| {
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.changes.retention(),
            flagstate_core::ChangeRetention::default()
        );
        let c = load(jail, "changes:\n  max_records: 10\n  max_age: 1h\n").unwrap();
        assert_eq!(c.changes.retention().max_records, 10);
        assert_eq!(
            c.changes.retention().max_age,
            Some(Duration::from_secs(3600))
        );
        let c = load(jail, "changes:\n  max_records: 0\n").unwrap();
        let e = c.validate(false).unwrap_err().to_string();
        assert!(e.contains("changes.max_records"), "{e}");
        Ok(())
    });
}

#[test]
fn notification_endpoints_need_only_a_name_and_a_url() {
    Jail::expect_with(|jail| {
        let c = Config::load(None).unwrap();
        assert!(c.notifications.endpoints().unwrap().is_empty());
        let c = load(
            jail,
            "notifications:\n  endpoints:\n    - name: audit\n      url: http://hooks.example/in\n",
        )
        .unwrap();
        c.validate(false).unwrap();
        let endpoints = c.notifications.endpoints().unwrap();
        assert_eq!(endpoints.len(), 1);
        let e = &endpoints[0];
        assert_eq!(e.name, "audit");
        assert_eq!(e.url.as_str(), "http://hooks.example/in");
        assert!(e.headers.is_empty());
        assert_eq!(
            e.subscription,
            Default::default(),
            "all types, all namespaces"
        );
        assert_eq!(e.timeout, flagstate_core::webhooks::DEFAULT_TIMEOUT);
        assert_eq!(e.backoff, flagstate_core::webhooks::Backoff::default());
        assert_eq!(e.batch_size, flagstate_core::webhooks::DEFAULT_BATCH_SIZE);

        let c = load(
            jail,
            "\
notifications:
  endpoints:
    - name: ci
      url: https://ci.example/hook
      headers:
        Authorization: [Bearer s3cret]
        X-Team: apps
      types: [tag.created, io.flagstate.tag.updated]
      namespaces: [apps, tools/x]
      timeout: 3s
      backoff: {initial: 200ms, max: 1m}
      batch_size: 10
",
        )
        .unwrap();
        let e = &c.notifications.endpoints().unwrap()[0];
        assert_eq!(e.headers["Authorization"], "Bearer s3cret");
        assert_eq!(e.headers["X-Team"], "apps");
        assert_eq!(
            e.subscription.kinds,
            [
                flagstate_core::ChangeKind::TagCreated,
                flagstate_core::ChangeKind::TagUpdated
            ]
            .into()
        );
        let namespaces: Vec<&str> = e
            .subscription
            .namespaces
            .iter()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(namespaces, ["apps", "tools/x"]);
        assert_eq!(e.timeout, Duration::from_secs(3));
        assert_eq!(e.backoff.initial, Duration::from_millis(200));
        assert_eq!(e.backoff.max, Duration::from_secs(60));
        assert_eq!(e.batch_size, 10);
        Ok(())
    });
}

#[test]
fn notification_endpoint_errors_name_their_key() {
    Jail::expect_with(|jail| {
        let endpoint = |extra: &str| {
            format!(
                "notifications:\n  endpoints:\n    - name: a\n      url: http://h.example/\n{extra}"
            )
        };
        let invalid = |jail: &Jail, yaml: &str| {
            let c = load(jail, yaml).unwrap();
            c.validate(false).unwrap_err().to_string()
        };
        for (yaml, key, says) in [
            (
                endpoint("    - name: a\n      url: http://other.example/\n"),
                "notifications.endpoints[1].name",
                "unique",
            ),
            (
                "notifications:\n  endpoints:\n    - name: ''\n      url: http://h.example/\n"
                    .to_owned(),
                "notifications.endpoints[0].name",
                "empty",
            ),
            (
                "notifications:\n  endpoints:\n    - name: a\n      url: h.example:80\n".to_owned(),
                "notifications.endpoints[0].url",
                "no scheme",
            ),
            (
                "notifications:\n  endpoints:\n    - name: a\n      url: ftp://h.example/\n"
                    .to_owned(),
                "notifications.endpoints[0].url",
                "http://",
            ),
            (
                endpoint("      timeout: 0\n"),
                "notifications.endpoints[0].timeout",
                "0",
            ),
            (
                endpoint("      batch_size: 0\n"),
                "notifications.endpoints[0].batch_size",
                "at least 1",
            ),
            (
                endpoint("      backoff: {initial: 0}\n"),
                "notifications.endpoints[0].backoff.initial",
                "0",
            ),
            (
                endpoint("      backoff: {initial: 10s, max: 1s}\n"),
                "notifications.endpoints[0].backoff.max",
                "less than",
            ),
            (
                endpoint("      types: [tag.moved]\n"),
                "notifications.endpoints[0].types",
                "tag.moved",
            ),
            (
                endpoint("      namespaces: ['Bad Name']\n"),
                "notifications.endpoints[0].namespaces",
                "Bad Name",
            ),
            (
                endpoint("      headers: {'bad header': x}\n"),
                "notifications.endpoints[0].headers",
                "bad header",
            ),
        ] {
            let e = invalid(jail, &yaml);
            assert!(e.contains(key) && e.contains(says), "{yaml}: {e}");
        }
        // Unknown keys and missing required ones are refused as everywhere.
        let e = load_err(jail, &endpoint("      retries: 3\n"));
        assert!(e.contains("retries"), "{e}");
        let e = load_err(jail, "notifications:\n  endpoints:\n    - name: a\n");
        assert!(e.contains("url"), "{e}");
        let e = load_err(jail, "notifications:\n  endpoint: []\n");
        assert!(e.contains("notifications.endpoint"), "{e}");
        Ok(())
    });
}
