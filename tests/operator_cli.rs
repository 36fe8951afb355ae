//! End to end for what an operator meets around the commands: shell completions and the
//! manual page, the version and build metric, the Go original's invocation and default
//! configuration file, regindexer's `daemon:` section, and errors that say what to change
//! (configuration files named, unreachable PostgreSQL, a registry URL without a scheme,
//! `https://` against a plain HTTP registry).

mod common;

use std::path::Path;

use common::{NO_DEFAULT_CONFIG, Server, free_port, hello_registry, run, run_with_env, text};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

const SUBCOMMANDS: [&str; 7] = [
    "serve",
    "scan",
    "query",
    "check",
    "index",
    "completions",
    "man",
];

#[test]
fn completions_and_manual_page_name_the_subcommands() {
    let out = run(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let bash = text(&out.stdout);
    assert!(bash.contains("_flagstate()"), "{bash}");
    assert!(bash.contains("complete -F _flagstate"), "{bash}");
    for sub in SUBCOMMANDS {
        assert!(
            bash.contains(&format!("flagstate__subcmd__{sub}")),
            "{sub}: {bash}"
        );
    }

    let out = run(&["completions", "zsh"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stdout).starts_with("#compdef flagstate"),
        "{out:?}"
    );
    let out = run(&["completions", "fish"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out.stdout).contains("complete -c flagstate"),
        "{out:?}"
    );

    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("bash"), "{out:?}");

    let out = run(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let roff = text(&out.stdout);
    assert!(roff.contains(".TH flagstate 1"), "{roff}");
    assert!(roff.contains(".SH SUBCOMMANDS"), "{roff}");
    for sub in SUBCOMMANDS {
        assert!(
            roff.contains(&format!("flagstate\\-{sub}(1)")),
            "{sub}: {roff}"
        );
        // The pages the main one refers to exist.
        let out = run(&["man", sub]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let page = text(&out.stdout);
        assert!(page.contains(&format!(".TH flagstate-{sub} 1")), "{page}");
    }
    let out = run(&["man", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("frobnicate"), "{out:?}");
}

/// The commit `build.rs` sees: this package's own checkout's `HEAD`, else none.
fn checkout_commit() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| text(&out.stdout).trim().to_owned())
    };
    let top = std::fs::canonicalize(git(&["rev-parse", "--show-toplevel"])?).ok()?;
    if top != std::fs::canonicalize(dir).ok()? {
        return None;
    }
    git(&["rev-parse", "--short", "HEAD"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_build_metric_name_the_commit() {
    let commit = checkout_commit();
    let version = env!("CARGO_PKG_VERSION");
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let expected = match &commit {
        Some(commit) => format!("flagstate {version} (commit {commit})"),
        None => format!("flagstate {version}"),
    };
    assert_eq!(text(&out.stdout).trim(), expected);

    let Some(registry) = hello_registry(None).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index.db");
    let server = Server::start(
        free_port(),
        &[
            "--registry",
            &registry.url(),
            "--database",
            db.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    )
    .await;
    let key = format!(
        "flagstate_build_info{{version=\"{version}\",commit=\"{}\"}}",
        commit.as_deref().unwrap_or("unknown")
    );
    assert_eq!(server.metric(&key).await, Some(1.0), "{}", server.log());
}

#[test]
fn the_go_invocation_serves_with_the_named_file() {
    let dir = tempfile::tempdir().unwrap();
    // Serving is what fails here, on the taken port the file names.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let db = dir.path().join("x.db");
    let config = write(
        dir.path(),
        "config.yaml",
        &format!(
            "listen: {addr}\nregistry:\n  url: http://127.0.0.1:1\ndatabase:\n  sqlite:\n    path: {}\n",
            db.display()
        ),
    );
    for args in [
        vec!["-config", config.as_str()],
        vec!["--config", config.as_str()],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            text(&out.stderr).contains(&format!("cannot listen on {addr}")),
            "{args:?}: {out:?}"
        );
    }
    let equals = format!("-config={config}");
    let out = run(&[equals.as_str()]);
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on {addr}")),
        "{out:?}"
    );
    // A subcommand after the file is still that subcommand.
    let out = run(&["-config", &config, "query", "--pretty"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("no index at"), "{out:?}");
}

#[test]
fn the_default_configuration_file_is_read_when_none_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let default = write(
        dir.path(),
        "default.yaml",
        "registry:\n  url: http://127.0.0.1:1\ninterval:\n  fetch_every: 1h\n",
    );
    let out = run_with_env(&["scan"], &[("FLAGSTATE_DEFAULT_CONFIG", &default)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("interval.fetch_every: unknown key") && stderr.contains(&default),
        "{stderr}"
    );

    // A named file replaces the default one.
    let named = write(dir.path(), "named.yaml", "log:\n  format: text\n");
    for env in [
        vec![("FLAGSTATE_DEFAULT_CONFIG", default.as_str())],
        vec![
            ("FLAGSTATE_DEFAULT_CONFIG", default.as_str()),
            ("FLAGSTATE_CONFIG", named.as_str()),
        ],
    ] {
        let args: &[&str] = if env.len() == 1 {
            &["--config", &named, "scan"]
        } else {
            &["scan"]
        };
        let out = run_with_env(args, &env);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("registry.url: is required") && !stderr.contains("fetch_every"),
            "{stderr}"
        );
    }

    // No file at the default path, or the default turned off: defaults alone.
    let missing = dir.path().join("missing.yaml");
    for value in [missing.to_str().unwrap(), NO_DEFAULT_CONFIG.1] {
        let out = run_with_env(&["scan"], &[("FLAGSTATE_DEFAULT_CONFIG", value)]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            text(&out.stderr).contains("registry.url: is required"),
            "{out:?}"
        );
    }
}

#[test]
fn configuration_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "flagstate",
            "registry:\n  urll: http://r\n",
            "registry.urll",
        ),
        ("flagstate", "registry:\n  url: [\n", "line 3"),
        (
            "index",
            "indexes:\n  a:\n    output: a.json\n    registry: http://r\n    colour: red\n",
            "indexes.a.colour: unknown key",
        ),
        ("index", "indexes: [\n", "line 2"),
        (
            "index",
            "deamon:\n  topic_prefix: org.example\nindexes: {}\n",
            "deamon: unknown key",
        ),
    ];
    for (i, (command, yaml, needle)) in cases.into_iter().enumerate() {
        let file = write(dir.path(), &format!("{i}.yaml"), yaml);
        let out = match command {
            "index" => run(&["index", "--config", &file]),
            _ => run(&["--config", &file, "scan"]),
        };
        assert_eq!(out.status.code(), Some(2), "{yaml}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(needle) && stderr.contains(&format!("(in {file})")),
            "{yaml}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_regindexer_daemon_section_is_accepted_and_reported() {
    let Some(registry) = hello_registry(None).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "regindexer.yaml",
        &format!(
            "daemon:\n  topic_prefix: org.example\n  environment: prod\n  amqp_url: amqp://mq.example/\n\
             indexes:\n  all:\n    output: all.json\n    registry: {}\n    tags: [latest]\n",
            registry.url()
        ),
    );
    let out = run_with_env(&["index", "--config", &config], &[("RUST_LOG", "info")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("index all: written"), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr
            .matches("the daemon section (amqp_url, environment, topic_prefix) is not used")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("org.example.prod.bodhi.compose.complete"),
        "{stderr}"
    );
    assert!(dir.path().join("all.json").is_file());
}

#[test]
fn unreachable_postgresql_names_the_server_and_the_cause() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("postgres://postgres@{addr}/test");
    let out = run(&["query", "--database", &url]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach PostgreSQL at {addr}"))
            && stderr.contains("Connection refused"),
        "{stderr}"
    );
}

#[test]
fn a_registry_url_without_a_scheme_says_which_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["scan", "--registry", "127.0.0.1:5000"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains(
            "--registry: \"127.0.0.1:5000\" has no scheme: add http:// or https:// (e.g. http://127.0.0.1:5000)"
        ),
        "{out:?}"
    );
    // `localhost:5000` parses as a URL of scheme `localhost`; it gets the same advice.
    let config = write(
        dir.path(),
        "flagstate.yaml",
        "registry:\n  url: localhost:5000\n",
    );
    let out = run(&["--config", &config, "scan"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("registry.url: \"localhost:5000\" has no scheme"),
        "{out:?}"
    );
    let index = write(
        dir.path(),
        "regindexer.yaml",
        "indexes:\n  a:\n    output: a.json\n    registry: registry.example:5000\n",
    );
    let out = run(&["index", "--config", &index]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("indexes.a.registry: \"registry.example:5000\" has no scheme"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_against_a_plain_http_registry_says_to_use_http() {
    let Some(registry) = hello_registry(None).await else {
        return;
    };
    let plain = registry.url();
    let https = plain.replacen("http://", "https://", 1);
    assert_ne!(plain, https);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let out = run(&[
        "scan",
        "--registry",
        &https,
        "--database",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the registry speaks plain HTTP: use {}/",
            plain.trim_end_matches('/')
        )),
        "{stderr}"
    );
    // Told once, without retrying into "unreachable".
    assert!(!stderr.contains("unreachable"), "{stderr}");
}
