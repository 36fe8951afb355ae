//! Damaging database files as failing disks and operators do: random bytes over pages,
//! and files the server may not write. Also compiled into the root package's end-to-end
//! tests (included by path), so both test the same damage.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flagstate_core::Store;
use flagstate_core::conformance::fixtures::{image, repo};
use flagstate_sqlite::SqliteStore;

/// Creates a database at `path` with `repositories` repositories of one image each,
/// carrying a few KiB of labels, and closes it (checkpointing the WAL into the file).
pub async fn populated_database(path: &Path, repositories: usize) {
    let store = SqliteStore::open(path).unwrap();
    let filler = "the quick brown fox jumps over the lazy dog ".repeat(60);
    for n in 0..repositories {
        let img = image(&format!("damage-{n}"))
            .label("description", &filler)
            .label("n", &n.to_string())
            .build();
        store
            .replace_repository(&repo(&format!("damage/r{n}")).image("latest", &img).build())
            .await
            .unwrap();
    }
    drop(store);
    assert!(
        !wal_of(path).exists(),
        "closing the store should have checkpointed and removed the WAL"
    );
}

fn wal_of(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Overwrites the second half of the file's pages with pseudo-random bytes, keeping
/// page 1 (the header and the root of the schema) and the early pages (the schema,
/// created before any data) intact, so the file still opens as a database. Returns how
/// many pages were overwritten.
pub fn corrupt_later_pages(path: &Path) -> u64 {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut header = [0u8; 100];
    file.read_exact(&mut header).unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0", "not a SQLite file");
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    let pages = file.metadata().unwrap().len() / page_size;
    assert!(
        pages >= 16,
        "only {pages} pages: too small to damage usefully"
    );
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = vec![0u8; page_size as usize];
    for page in pages / 2..pages {
        for byte in noise.iter_mut() {
            // xorshift64: deterministic noise, no dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        file.seek(SeekFrom::Start(page * page_size)).unwrap();
        file.write_all(&noise).unwrap();
    }
    file.sync_all().unwrap();
    pages - pages / 2
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A file nobody may write while this lives. Mode 0444 stops any user but root; root
/// ignores permission bits, so as root the file is made immutable (`chattr +i`, which
/// stops root too). Either way the constructor verifies that opening the file for
/// writing now fails. Dropping restores writability so the directory can be removed.
pub struct ReadOnlyFile {
    path: PathBuf,
    immutable: bool,
}

impl ReadOnlyFile {
    /// Makes `path` read-only.
    pub fn new(path: &Path) -> ReadOnlyFile {
        let immutable = is_root();
        if immutable {
            let status = Command::new("chattr").arg("+i").arg(path).status().unwrap();
            assert!(status.success(), "chattr +i {} failed", path.display());
        } else {
            set_mode(path, 0o444);
        }
        let guard = ReadOnlyFile {
            path: path.to_owned(),
            immutable,
        };
        assert!(
            OpenOptions::new().append(true).open(path).is_err(),
            "{} is still writable",
            path.display()
        );
        guard
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Drop for ReadOnlyFile {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
        } else {
            set_mode(&self.path, 0o644);
        }
    }
}
