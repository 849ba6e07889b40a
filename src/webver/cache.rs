//! The per-version cache of WhatsApp Web's `index.html` on the shared volume, the way
//! whatsapp-web.js's LocalWebCache keeps `{version}.html`:
//!
//! ```text
//! <data>/wa-web/<version>.html   the index.html a live session was served, by version
//! <data>/wa-web/last-good        the last version a live session reached WORKING on (one line)
//! ```
//!
//! Every write is atomic (a temporary file in the same directory, fsync, rename), so a reader on
//! another worker sees the old file or the new one, never half of one. A version string is
//! validated before it reaches a path.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::engine::document::MAX_INDEX_HTML_BYTES;
use crate::engine::events::valid_version;

/// The cache directory under the data directory.
pub const CACHE_DIR: &str = "wa-web";
/// The file naming the last version proven good.
pub const LAST_GOOD_FILE: &str = "last-good";

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The version string may not be used in a path.
    #[error("{0:?} is not a valid WhatsApp Web version")]
    BadVersion(String),
    /// The document is empty or too large.
    #[error("index.html of {0} bytes refused (1 to {MAX_INDEX_HTML_BYTES})")]
    BadDocument(usize),
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One cached version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CachedVersion {
    /// The version.
    pub version: String,
    /// Size of its index.html.
    pub bytes: u64,
    /// When it was saved (Unix ms).
    pub saved_at_ms: u64,
}

/// The cache of one data directory.
#[derive(Debug, Clone)]
pub struct WebCache {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl WebCache {
    /// The cache under `<data>/wa-web/`.
    pub fn new(data: &Path) -> WebCache {
        WebCache {
            dir: data.join(CACHE_DIR),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `version`'s index.html lives (validated).
    pub fn path(&self, version: &str) -> Result<PathBuf, CacheError> {
        let v = valid_version(version).ok_or_else(|| CacheError::BadVersion(version.into()))?;
        Ok(self.dir.join(format!("{v}.html")))
    }

    /// `version`'s index.html, if cached.
    pub fn cached(&self, version: &str) -> Option<PathBuf> {
        self.path(version).ok().filter(|p| p.is_file())
    }

    /// Saves `html` as `version`'s index.html unless one is there already; whether it wrote.
    pub fn save(&self, version: &str, html: &[u8]) -> Result<bool, CacheError> {
        let path = self.path(version)?;
        if html.is_empty() || html.len() as u64 > MAX_INDEX_HTML_BYTES {
            return Err(CacheError::BadDocument(html.len()));
        }
        if path.is_file() {
            return Ok(false);
        }
        self.write_atomic(&path, html)?;
        Ok(true)
    }

    /// The last version proven good, if recorded (an unreadable or invalid file counts as none).
    pub fn last_good(&self) -> Result<Option<String>, CacheError> {
        let path = self.dir.join(LAST_GOOD_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(valid_version(text.trim())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Records `version` as the last one proven good.
    pub fn set_last_good(&self, version: &str) -> Result<(), CacheError> {
        let v = valid_version(version).ok_or_else(|| CacheError::BadVersion(version.into()))?;
        self.write_atomic(&self.dir.join(LAST_GOOD_FILE), format!("{v}\n").as_bytes())
    }

    /// Every cached version, oldest first.
    pub fn list(&self) -> Result<Vec<CachedVersion>, CacheError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(v) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".html"))
                .and_then(valid_version)
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let saved_at_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            out.push(CachedVersion {
                version: v,
                bytes: meta.len(),
                saved_at_ms,
            });
        }
        out.sort_by(|a, b| (a.saved_at_ms, &a.version).cmp(&(b.saved_at_ms, &b.version)));
        Ok(out)
    }

    fn write_atomic(&self, path: &Path, body: &[u8]) -> Result<(), CacheError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        // Unique per process and call: two workers saving the same version never share a
        // temporary file; the last rename wins with identical content.
        let tmp = self.dir.join(format!(
            ".tmp-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(path)(e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_once_per_version_lists_and_records_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let cache = WebCache::new(dir.path());
        assert!(cache.list().unwrap().is_empty());
        assert_eq!(cache.last_good().unwrap(), None);
        assert!(cache.cached("2.3000.1").is_none());
        assert!(cache.save("2.3000.1", b"<html>one</html>").unwrap());
        assert!(
            !cache.save("2.3000.1", b"<html>other</html>").unwrap(),
            "one save per version"
        );
        let path = cache.cached("2.3000.1").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"<html>one</html>");
        assert_eq!(path, dir.path().join("wa-web/2.3000.1.html"));
        cache.set_last_good("2.3000.1").unwrap();
        assert_eq!(cache.last_good().unwrap().as_deref(), Some("2.3000.1"));
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].version, "2.3000.1");
        assert_eq!(listed[0].bytes, 16);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".tmp")), "{names:?}");
    }

    #[test]
    fn bad_versions_and_documents_never_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cache = WebCache::new(dir.path());
        for bad in ["../../etc/passwd", "a/b", "", ".x"] {
            assert!(matches!(
                cache.save(bad, b"<html>"),
                Err(CacheError::BadVersion(_))
            ));
            assert!(cache.set_last_good(bad).is_err());
        }
        assert!(matches!(
            cache.save("1.0", b""),
            Err(CacheError::BadDocument(0))
        ));
        // A corrupt last-good file reads as none.
        std::fs::create_dir_all(cache.dir()).unwrap();
        std::fs::write(cache.dir().join(LAST_GOOD_FILE), "../x\n").unwrap();
        assert_eq!(cache.last_good().unwrap(), None);
    }
}
