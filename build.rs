//! Records the git commit the binary is built from, for `flagstate --version` and the
//! `flagstate_build_info` metric.
//!
//! Sets `FLAGSTATE_GIT_COMMIT` to the short hash of `HEAD` when the package is built from
//! its own git checkout, and to the empty string otherwise (no git, no `.git`, or a source
//! tarball unpacked inside some other repository), and `FLAGSTATE_VERSION` to the package
//! version followed by ` (commit HASH)` when the commit is known.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        println!("cargo:rustc-env=FLAGSTATE_GIT_COMMIT=");
        println!(
            "cargo:rustc-env=FLAGSTATE_VERSION={}",
            std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
        );
        return;
    };
    let dir = Path::new(&manifest_dir);
    // Only this package's own checkout counts: a tarball unpacked inside another
    // repository must not report that repository's commit.
    let own_checkout = git(dir, &["rev-parse", "--show-toplevel"])
        .and_then(|top| std::fs::canonicalize(top).ok())
        .zip(std::fs::canonicalize(dir).ok())
        .is_some_and(|(top, dir)| top == dir);
    let commit = own_checkout
        .then(|| git(dir, &["rev-parse", "--short", "HEAD"]))
        .flatten();
    if own_checkout {
        // Rebuild when HEAD moves: HEAD itself, the branch it points at, packed refs.
        let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
        watched.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
        for path in &watched {
            // A file that does not exist would make every build rerun this script.
            if let Some(file) = git(dir, &["rev-parse", "--git-path", path])
                && dir.join(&file).exists()
            {
                println!("cargo:rerun-if-changed={}", dir.join(file).display());
            }
        }
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let long_version = match &commit {
        Some(commit) => format!("{version} (commit {commit})"),
        None => version,
    };
    println!("cargo:rustc-env=FLAGSTATE_VERSION={long_version}");
    println!(
        "cargo:rustc-env=FLAGSTATE_GIT_COMMIT={}",
        commit.unwrap_or_default()
    );
}
