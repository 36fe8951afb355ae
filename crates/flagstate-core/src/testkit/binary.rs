//! Finding, or unpacking, the distribution registry binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestkitError;

/// The tools cache: `FLAGSTATE_TEST_TOOLS`, else `target/test-tools` of this workspace.
fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLAGSTATE_TEST_TOOLS") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-tools")
        .components()
        .collect()
}

fn cached_binary() -> PathBuf {
    tools_dir().join("docker-registry/usr/bin/docker-registry")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The path of the `docker-registry` binary: `FLAGSTATE_REGISTRY_BIN`, the tools cache,
/// `PATH`; otherwise unpacks the Debian package into the tools cache.
pub fn registry_binary() -> Result<PathBuf, TestkitError> {
    if let Some(bin) = std::env::var_os("FLAGSTATE_REGISTRY_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(TestkitError::Binary(format!(
                "FLAGSTATE_REGISTRY_BIN={} is not a file",
                bin.display()
            )))
        };
    }
    let cached = cached_binary();
    if cached.is_file() {
        return Ok(cached);
    }
    if let Some(bin) = on_path("docker-registry") {
        return Ok(bin);
    }
    install()?;
    if cached.is_file() {
        Ok(cached)
    } else {
        Err(TestkitError::Binary(format!(
            "unpacked the package but {} is missing",
            cached.display()
        )))
    }
}

/// `apt-get download docker-registry && dpkg-deb -x` into the tools cache. Unpacks into
/// a fresh directory and renames it into place, so concurrent test processes never see
/// half an installation.
fn install() -> Result<(), TestkitError> {
    let tools = tools_dir();
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| TestkitError::Io { what, source }
    };
    std::fs::create_dir_all(&tools).map_err(io("create the tools directory"))?;
    let work = tempfile::Builder::new()
        .prefix("docker-registry-install")
        .tempdir_in(&tools)
        .map_err(io("create a download directory"))?;
    // apt drops privileges to `_apt` for downloads; it must be able to write here.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777));
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), TestkitError> {
        let out = cmd
            .output()
            .map_err(|e| TestkitError::Binary(format!("{what}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Binary(format!(
                "{what} failed ({}): {}; run scripts/install-test-deps",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    run(
        Command::new("apt-get")
            .arg("download")
            .arg("docker-registry")
            .current_dir(work.path()),
        "apt-get download docker-registry",
    )?;
    let deb = std::fs::read_dir(work.path())
        .map_err(io("list the download directory"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| TestkitError::Binary("apt-get download produced no .deb".into()))?;
    let unpacked = work.path().join("root");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
        "dpkg-deb -x",
    )?;
    let target = tools.join("docker-registry");
    if !target.exists() {
        // Losing the race against another process is fine: it unpacked the same thing.
        let _ = std::fs::rename(&unpacked, &target);
    }
    Ok(())
}
