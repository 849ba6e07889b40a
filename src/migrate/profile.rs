//! The I/O half of profile transfers: listing a profile (caches left out), streaming it as a
//! tar, and unpacking a tar stream into a fresh directory with caps and verification.
//!
//! Both directions stream in 64 KiB chunks with backpressure (a bounded channel), so a 2 GiB
//! profile never sits in memory. The unpacker writes only into a directory it was given empty
//! and creates nothing but directories (0700) and regular files (0600) under safe relative
//! paths ([`super::tar`]); on any error the caller removes that directory.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::MigrateError;
use super::tar::{self, Event, Kind, TarReader};
use crate::backup::{EXCLUDED_DIRS, EXCLUDED_FILES};

/// Size of the chunks a tar stream is produced in.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Default cap on an uploaded profile (the tar stream's bytes).
pub const DEFAULT_MAX_PROFILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Default longest pause between two chunks of an upload before it is abandoned.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Relative path with `/`.
    pub rel: String,
    /// Directory or file (with its size when listed).
    pub kind: Kind,
    /// Where it is.
    pub abs: PathBuf,
}

/// What a profile holds, caches excluded: the entries in tar order (parents first).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Entries, sorted by path.
    pub entries: Vec<Listed>,
    /// Regular files.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> MigrateError {
    MigrateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a profile entry is left out of transfers: Chromium's caches (rebuilt on demand,
/// most of a profile's size, none holds the login) and its process-singleton files (they name
/// the browser that ran; a copy would make the next Chromium think the profile is taken).
pub fn excluded(name: &str, is_dir: bool) -> bool {
    if is_dir {
        EXCLUDED_DIRS.contains(&name)
    } else {
        EXCLUDED_FILES.contains(&name)
    }
}

/// Lists `root` (a Chromium user-data-dir): directories and regular files, minus
/// [`excluded`] ones; symbolic links and special files are skipped, never followed.
pub fn list_profile(root: &Path) -> Result<Listing, MigrateError> {
    let meta = fs::metadata(root).map_err(|e| io("open", root, e))?;
    if !meta.is_dir() {
        return Err(MigrateError::Invalid(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let mut listing = Listing::default();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| io("list", &dir, e))? {
            let entry = entry.map_err(|e| io("list", &dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                // Chromium writes UTF-8 names only; anything else is not ours to carry.
                continue;
            };
            let ft = entry
                .file_type()
                .map_err(|e| io("stat", &entry.path(), e))?;
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if ft.is_dir() && !excluded(&name, true) {
                listing.entries.push(Listed {
                    rel: child.clone(),
                    kind: Kind::Dir,
                    abs: entry.path(),
                });
                stack.push((child, entry.path()));
            } else if ft.is_file() && !excluded(&name, false) {
                let size = entry
                    .metadata()
                    .map_err(|e| io("stat", &entry.path(), e))?
                    .len();
                listing.files += 1;
                listing.bytes += size;
                listing.entries.push(Listed {
                    rel: child,
                    kind: Kind::File { size },
                    abs: entry.path(),
                });
            }
        }
    }
    listing.entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(listing)
}

/// Streams `listing` as a tar, in [`CHUNK_BYTES`] chunks, from a blocking thread. A file whose
/// size changed since it was listed ends the stream with an error (a browser is writing to the
/// profile: the copy would not be consistent).
pub fn tar_stream(listing: Listing) -> impl Stream<Item = Result<Bytes, MigrateError>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, MigrateError>>(8);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = write_tar(&listing, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The receiver hung up (the upload failed or was refused): stop quietly.
struct Gone;

fn send(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, MigrateError>>,
    b: Vec<u8>,
) -> Result<(), Gone> {
    tx.blocking_send(Ok(Bytes::from(b))).map_err(|_| Gone)
}

fn write_tar(
    listing: &Listing,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, MigrateError>>,
) -> Result<(), MigrateError> {
    let mut out = Vec::with_capacity(CHUNK_BYTES + tar::BLOCK * 3);
    let flush = |out: &mut Vec<u8>| -> Result<bool, MigrateError> {
        if out.len() >= CHUNK_BYTES {
            let chunk = std::mem::replace(out, Vec::with_capacity(CHUNK_BYTES + tar::BLOCK * 3));
            return Ok(send(tx, chunk).is_ok());
        }
        Ok(true)
    };
    for e in &listing.entries {
        let mtime = fs::symlink_metadata(&e.abs)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        match e.kind {
            Kind::Dir => {
                out.extend_from_slice(&tar::header(&e.rel, Kind::Dir, 0o700, mtime)?);
            }
            Kind::File { size } => {
                out.extend_from_slice(&tar::header(&e.rel, e.kind, 0o600, mtime)?);
                let mut f = fs::File::open(&e.abs).map_err(|err| io("open", &e.abs, err))?;
                let mut left = size;
                let mut buf = vec![0u8; CHUNK_BYTES];
                while left > 0 {
                    let want = left.min(CHUNK_BYTES as u64) as usize;
                    let n = f
                        .read(&mut buf[..want])
                        .map_err(|err| io("read", &e.abs, err))?;
                    if n == 0 {
                        return Err(MigrateError::Changed(e.abs.clone()));
                    }
                    out.extend_from_slice(&buf[..n]);
                    left -= n as u64;
                    if !flush(&mut out)? {
                        return Ok(());
                    }
                }
                // More bytes than listed: the file grew while it was read.
                if f.read(&mut buf[..1])
                    .map_err(|err| io("read", &e.abs, err))?
                    != 0
                {
                    return Err(MigrateError::Changed(e.abs.clone()));
                }
                out.resize(out.len() + tar::padding(size), 0);
            }
        }
        if !flush(&mut out)? {
            return Ok(());
        }
    }
    out.extend_from_slice(&tar::END_OF_ARCHIVE);
    let _ = send(tx, out);
    Ok(())
}

/// Limits of one unpack.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Largest tar stream accepted, bytes ([`MigrateError::TooLarge`] beyond).
    pub max_bytes: u64,
    /// Longest wait for the next chunk.
    pub idle_timeout: Duration,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_PROFILE_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unpacked {
    /// Regular files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Unpacks a tar `stream` into `dest` (created here; it must not exist), refusing unsafe
/// entries, duplicate files, a stream larger than `limits.max_bytes`, a stall longer than
/// `limits.idle_timeout`, and a truncated archive. Files are fsynced. On error `dest` may hold
/// a partial tree: the caller removes it.
pub async fn unpack<S, E>(
    stream: S,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<Unpacked, MigrateError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    create_private_dir(dest, false).await?;
    let mut stream = stream;
    let mut reader = TarReader::new();
    let mut seen: u64 = 0;
    let mut done = Unpacked::default();
    let mut current: Option<(tokio::fs::File, PathBuf, u64)> = None;
    loop {
        let next = tokio::time::timeout(limits.idle_timeout, stream.next())
            .await
            .map_err(|_| MigrateError::Stalled(limits.idle_timeout))?;
        let chunk = match next {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(MigrateError::Body(e.to_string())),
        };
        seen += chunk.len() as u64;
        if seen > limits.max_bytes {
            return Err(MigrateError::TooLarge(limits.max_bytes));
        }
        for ev in reader.feed(chunk)? {
            match ev {
                Event::Entry { path, kind } => {
                    let target = dest.join(&path);
                    match kind {
                        Kind::Dir => create_private_dir(&target, true).await?,
                        Kind::File { .. } => {
                            if let Some(parent) = target.parent() {
                                create_private_dir(parent, true).await?;
                            }
                            let f = tokio::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .mode(0o600)
                                .open(&target)
                                .await
                                .map_err(|e| {
                                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                                        MigrateError::Invalid(format!(
                                            "the tar holds {path:?} twice"
                                        ))
                                    } else {
                                        io("create", &target, e)
                                    }
                                })?;
                            current = Some((f, target, 0));
                        }
                    }
                }
                Event::Data(b) => {
                    if let Some((f, p, n)) = current.as_mut() {
                        f.write_all(&b).await.map_err(|e| io("write", p, e))?;
                        *n += b.len() as u64;
                    }
                }
                Event::FileEnd => {
                    if let Some((mut f, p, n)) = current.take() {
                        f.flush().await.map_err(|e| io("write", &p, e))?;
                        f.sync_all().await.map_err(|e| io("fsync", &p, e))?;
                        done.files += 1;
                        done.bytes += n;
                    }
                }
                Event::End => {}
            }
        }
    }
    reader.finish()?;
    Ok(done)
}

async fn create_private_dir(path: &Path, recursive: bool) -> Result<(), MigrateError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(recursive)
            .mode(0o700)
            .create(&p)
            .map_err(|e| io("mkdir", &p, e))
    })
    .await
    .map_err(|e| MigrateError::Invalid(format!("mkdir task: {e}")))?
}

/// Removes a directory tree, ignoring "not found" (cleanup after a refused unpack).
pub async fn remove_tree(path: &Path) {
    let p = path.to_path_buf();
    let r = tokio::task::spawn_blocking(move || fs::remove_dir_all(&p)).await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a partial import")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a partial import")
        }
    }
}

/// Compares what was unpacked with what the sender announced.
pub fn verify(got: Unpacked, files: u64, bytes: u64) -> Result<(), MigrateError> {
    if got.files == files && got.bytes == bytes {
        Ok(())
    } else {
        Err(MigrateError::Mismatch {
            expected_files: files,
            expected_bytes: bytes,
            files: got.files,
            bytes: got.bytes,
        })
    }
}

/// Counts the files and bytes of a tar file and checks it on the way (a first pass before an
/// upload, so the announced totals are right). Refuses what [`unpack`] would refuse.
pub fn scan_tar(path: &Path) -> Result<Unpacked, MigrateError> {
    let mut f = fs::File::open(path).map_err(|e| io("open", path, e))?;
    let mut reader = TarReader::new();
    let mut got = Unpacked::default();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = f.read(&mut buf).map_err(|e| io("read", path, e))?;
        if n == 0 {
            break;
        }
        for ev in reader.feed(Bytes::copy_from_slice(&buf[..n]))? {
            match ev {
                Event::Entry {
                    kind: Kind::File { size },
                    ..
                } => {
                    got.files += 1;
                    got.bytes += size;
                }
                Event::End => {
                    reader.finish()?;
                    return Ok(got);
                }
                _ => {}
            }
        }
    }
    reader.finish()?;
    Ok(got)
}

/// Streams a file's bytes in [`CHUNK_BYTES`] chunks.
pub fn file_stream(path: PathBuf) -> impl Stream<Item = Result<Bytes, MigrateError>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, MigrateError>>(8);
    tokio::task::spawn_blocking(move || {
        let mut f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(io("open", &path, e)));
                return;
            }
        };
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(io("read", &path, e)));
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
