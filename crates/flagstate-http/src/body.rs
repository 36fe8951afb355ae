//! Built answer bodies, in memory or, beyond a size, in content-addressed files.
//!
//! An answer is written once per store generation through a [`Spool`]: bytes are hashed
//! (SHA-256, the strong ETag's base) as they are written and kept in memory up to a
//! threshold; a larger answer continues into a file in the spool directory, renamed to
//! `<sha256><suffix>` when complete. A file-backed [`Body`] is served in chunks read
//! from the file, so memory stays flat however large the index, and the file is removed
//! when the last [`Body`] that holds it is dropped (its cache entry was superseded or
//! evicted, and no response is still reading it). Files are read through the open
//! handle each body keeps, so removing or replacing a name never disturbs a body being
//! served.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// How much of a file-backed body one read takes (and one response holds at a time).
const CHUNK: usize = 256 * 1024;

/// The directory file-backed bodies live in, and the size from which they go there.
#[derive(Debug)]
pub struct SpoolDir {
    dir: PathBuf,
    memory_max: usize,
    /// A private directory made for this process (removed with it), unless configured.
    _private: Option<tempfile::TempDir>,
}

impl SpoolDir {
    /// Spools into `dir` (created if missing; files left there by an earlier run are
    /// removed), or into a private temporary directory when `None`. Bodies up to
    /// `memory_max` bytes stay in memory.
    pub fn new(dir: Option<&Path>, memory_max: usize) -> io::Result<Self> {
        let (dir, private) = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                remove_spooled(dir)?;
                (dir.to_path_buf(), None)
            }
            None => {
                let private = tempfile::Builder::new()
                    .prefix("flagstate-answers-")
                    .tempdir()?;
                (private.path().to_path_buf(), Some(private))
            }
        };
        Ok(SpoolDir {
            dir,
            memory_max,
            _private: private,
        })
    }

    /// Where the files go.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Bodies up to this size stay in memory.
    pub fn memory_max(&self) -> usize {
        self.memory_max
    }

    /// A writer for one body.
    pub fn spool(self: &Arc<Self>) -> Spool {
        Spool {
            dir: self.clone(),
            memory: Vec::new(),
            file: None,
            hasher: Sha256::new(),
            len: 0,
        }
    }
}

/// Files are named `<64 hex digits><suffix>`, temporary ones start with `.tmp`; both are
/// this server's own and safe to remove at start.
fn remove_spooled(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let hashed = name.len() >= 64 && name.as_bytes()[..64].iter().all(u8::is_ascii_hexdigit);
        if (hashed || name.starts_with(".tmp")) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Writes one body: in memory up to the threshold, then into a temporary file.
#[derive(Debug)]
pub struct Spool {
    dir: Arc<SpoolDir>,
    memory: Vec<u8>,
    file: Option<io::BufWriter<tempfile::NamedTempFile>>,
    hasher: Sha256,
    len: u64,
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() && self.memory.len() + buf.len() > self.dir.memory_max {
            let mut file = io::BufWriter::with_capacity(
                CHUNK,
                tempfile::Builder::new()
                    .prefix(".tmp")
                    .tempfile_in(&self.dir.dir)?,
            );
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(buf)?,
            None => self.memory.extend_from_slice(buf),
        }
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Spool {
    /// The finished body and the hex SHA-256 of its bytes. A file-backed body gets the
    /// name `name(hash)` in the spool directory.
    pub fn finish(self, name: impl FnOnce(&str) -> String) -> io::Result<(Body, String)> {
        let hash = hex::encode(self.hasher.finalize());
        let Some(file) = self.file else {
            return Ok((Body::Memory(Bytes::from(self.memory)), hash));
        };
        let temp = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        let path = self.dir.dir.join(name(&hash));
        let file = temp.persist(&path).map_err(|e| e.error)?;
        let body = BodyFile {
            file,
            path,
            len: self.len,
            _dir: self.dir,
        };
        Ok((Body::File(Arc::new(body)), hash))
    }
}

/// A body in a file; the file is removed when this is dropped.
#[derive(Debug)]
pub struct BodyFile {
    file: std::fs::File,
    path: PathBuf,
    len: u64,
    /// Keeps a private spool directory alive while its files are.
    _dir: Arc<SpoolDir>,
}

impl BodyFile {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        // Another body with the same bytes may have taken the name since; it reads
        // through its own handle, so removing the name harms nobody.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A built body: bytes in memory, or a file.
#[derive(Debug, Clone)]
pub enum Body {
    /// In memory.
    Memory(Bytes),
    /// In a file of the spool directory.
    File(Arc<BodyFile>),
}

impl Body {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(bytes) => bytes.len() as u64,
            Body::File(file) => file.len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when in memory.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Body::Memory(bytes) => Some(bytes),
            Body::File(_) => None,
        }
    }

    /// Reads the whole body (blocking; for tests and tools, not for serving).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        self.reader().read_to_end(&mut out)?;
        Ok(out)
    }

    /// The whole body in memory (read from its file off the async threads): for
    /// consumers that need all of it at once, not for serving.
    pub async fn load(&self) -> io::Result<Bytes> {
        match self {
            Body::Memory(bytes) => Ok(bytes.clone()),
            Body::File(_) => {
                let body = self.clone();
                tokio::task::spawn_blocking(move || body.read_all().map(Bytes::from))
                    .await
                    .map_err(io::Error::other)?
            }
        }
    }

    /// A blocking reader over the body from its start.
    pub fn reader(&self) -> BodyReader {
        BodyReader {
            body: self.clone(),
            offset: 0,
        }
    }

    /// The body as an HTTP response body: in-memory bytes as they are, a file in chunks
    /// read on blocking threads as the connection takes them.
    pub fn to_http(&self) -> axum::body::Body {
        match self {
            Body::Memory(bytes) => axum::body::Body::from(bytes.clone()),
            Body::File(file) => {
                let chunks = futures::stream::try_unfold(
                    (file.clone(), 0u64),
                    |(file, offset)| async move {
                        if offset >= file.len {
                            return Ok(None);
                        }
                        let reading = file.clone();
                        let chunk = tokio::task::spawn_blocking(move || {
                            let want = usize::try_from(reading.len - offset)
                                .unwrap_or(CHUNK)
                                .min(CHUNK);
                            let mut buf = vec![0; want];
                            let got = reading.read_at(&mut buf, offset)?;
                            if got == 0 {
                                return Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "the answer file is shorter than written",
                                ));
                            }
                            buf.truncate(got);
                            Ok::<_, io::Error>(Bytes::from(buf))
                        })
                        .await
                        .map_err(io::Error::other)??;
                        let next = offset + chunk.len() as u64;
                        Ok::<_, io::Error>(Some((chunk, (file, next))))
                    },
                );
                axum::body::Body::from_stream(chunks)
            }
        }
    }
}

/// A blocking [`Read`] over a [`Body`].
#[derive(Debug)]
pub struct BodyReader {
    body: Body,
    offset: u64,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &self.body {
            Body::Memory(bytes) => {
                let start = usize::try_from(self.offset).unwrap_or(usize::MAX);
                let rest = bytes.get(start..).unwrap_or_default();
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                n
            }
            Body::File(file) => {
                let left = file.len.saturating_sub(self.offset);
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                if want == 0 {
                    0
                } else {
                    file.read_at(&mut buf[..want], self.offset)?
                }
            }
        };
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spooled(dir: &Arc<SpoolDir>, data: &[u8]) -> (Body, String) {
        let mut spool = dir.spool();
        for piece in data.chunks(7) {
            spool.write_all(piece).unwrap();
        }
        spool.finish(|h| format!("{h}.json")).unwrap()
    }

    #[test]
    fn small_bodies_stay_in_memory_large_ones_go_to_a_named_file() {
        let dir = Arc::new(SpoolDir::new(None, 100).unwrap());
        let (small, hash) = spooled(&dir, b"{\"a\":1}");
        assert_eq!(small.as_bytes().map(|b| &b[..]), Some(&b"{\"a\":1}"[..]));
        assert_eq!(hash, hex::encode(Sha256::digest(b"{\"a\":1}")));

        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let (large, hash) = spooled(&dir, &data);
        assert_eq!(hash, hex::encode(Sha256::digest(&data)));
        let Body::File(file) = &large else {
            panic!("a large body goes to a file");
        };
        assert_eq!(file.path(), dir.path().join(format!("{hash}.json")));
        assert_eq!(large.read_all().unwrap(), data);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        let path = file.path().to_path_buf();
        drop(large);
        assert!(!path.exists(), "the file goes with its last body");
    }

    #[test]
    fn equal_bodies_share_a_name_without_harming_each_other() {
        let dir = Arc::new(SpoolDir::new(None, 10).unwrap());
        let data = vec![b'x'; 1000];
        let (a, _) = spooled(&dir, &data);
        let (b, _) = spooled(&dir, &data);
        drop(a);
        assert_eq!(b.read_all().unwrap(), data);
    }

    #[tokio::test]
    async fn a_file_body_streams_its_bytes_in_chunks() {
        let dir = Arc::new(SpoolDir::new(None, 10).unwrap());
        let data: Vec<u8> = (0..(3 * CHUNK + 5)).map(|i| (i % 251) as u8).collect();
        let (body, _) = spooled(&dir, &data);
        let got = axum::body::to_bytes(body.to_http(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&got[..], &data[..]);
    }

    #[test]
    fn a_configured_directory_is_created_and_cleared_of_old_answers() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("answers");
        std::fs::create_dir_all(&dir).unwrap();
        let old = dir.join(format!("{}.json.gz", "a".repeat(64)));
        std::fs::write(&old, b"old").unwrap();
        std::fs::write(dir.join("keep.txt"), b"mine").unwrap();
        let spool = SpoolDir::new(Some(&dir), 10).unwrap();
        assert!(!old.exists());
        assert!(
            dir.join("keep.txt").exists(),
            "only its own files are removed"
        );
        drop(spool);
        assert!(dir.exists(), "a configured directory stays");
    }
}
