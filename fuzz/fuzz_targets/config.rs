//! The YAML configuration loader of the `flagstate` binary (`Config::load`, then
//! `Config::validate`), on arbitrary file contents.
//!
//! The loader belongs to the binary's module tree, not to a library, so this target
//! compiles `src/config.rs` itself as a module, and feeds it the way the binary does:
//! through a file (one temporary file, rewritten per input).
//!
//! Properties: nothing panics; loading is deterministic; a refusal names where it came
//! from (the file); validation is monotonic (what passes with a registry required passes
//! without) and an accepted configuration satisfies what validation promises.
#![no_main]

/// The binary's source directory; `config` resolves to `src/config.rs` and its
/// submodules to `src/config/`, exactly as in the binary.
#[path = "../../src"]
mod binary {
    #[allow(dead_code)]
    pub mod config;
}

use std::path::PathBuf;
use std::sync::LazyLock;

use binary::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

static FILE: LazyLock<(tempfile::TempDir, PathBuf)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("flagstate.yaml");
    (dir, path)
});

fuzz_target!(|data: &[u8]| {
    let path = &FILE.1;
    std::fs::write(path, data).expect("the temporary configuration file is writable");
    let loaded = Config::load(Some(path));
    let again = Config::load(Some(path));
    assert_eq!(
        format!("{loaded:?}"),
        format!("{again:?}"),
        "loading is not deterministic"
    );
    let config = match loaded {
        Ok(config) => config,
        Err(ConfigError::Parse(message)) => {
            // The loader names the file as figment shows it: absolute, or relative to
            // the working directory when that is shorter (`../.tmpXXXX/flagstate.yaml`).
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(
                message.contains(&format!("{name})")) || message.contains(&format!("{name}:")),
                "error {message:?} does not name the file"
            );
            return;
        }
        Err(other) => panic!("a readable file failed with {other}"),
    };
    let with_registry = config.validate(true);
    let without_registry = config.validate(false);
    if with_registry.is_ok() {
        assert!(
            without_registry.is_ok(),
            "validate(true) passed, validate(false) refused"
        );
    }
    if without_registry.is_ok() {
        assert!(config.database.choice().is_ok());
        assert!(config.registry.max_concurrency >= 1);
        assert!(!config.registry.timeout.is_zero());
        // An empty token counts as none, and a token excludes anonymous notifications.
        assert!(!(config.events.token().is_some() && config.events.allow_anonymous));
        assert!(config.events.max_pending_reconciles >= 1);
        assert!(config.server.max_connections >= 1 && config.server.max_in_flight >= 1);
        assert!(!config.server.header_read_timeout.is_zero());
        for name in &config.registry.repositories {
            assert!(flagstate_core::RepositoryName::parse(name.as_str()).is_ok());
        }
        assert!(config.registry.repository_names().is_ok());
    }
    if with_registry.is_ok() {
        let url = config
            .registry
            .url
            .as_ref()
            .expect("validated: a registry URL");
        assert!(matches!(url.scheme(), "http" | "https"));
    }
});
