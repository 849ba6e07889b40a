//! One profile on disk: who holds it (Chromium's `SingletonLock`), which files are worth copying,
//! and copying or re-reading them with sha256.
//!
//! Not here: deciding when a copy is consistent (that is `run.rs`, which compares two passes).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::BackupError;

/// Directory names skipped anywhere inside a profile: caches Chromium rebuilds on demand, crash
/// dumps and metrics. None of them holds the WhatsApp login (that lives in IndexedDB, Local
/// Storage and Cookies), and they are most of a profile's size.
pub const EXCLUDED_DIRS: &[&str] = &[
    "Cache",
    "Code Cache",
    "GPUCache",
    "GrShaderCache",
    "GraphiteDawnCache",
    "ShaderCache",
    "DawnCache",
    "DawnGraphiteCache",
    "DawnWebGPUCache",
    "CacheStorage",
    "ScriptCache",
    "Crashpad",
    "BrowserMetrics",
    "component_crx_cache",
    "optimization_guide_model_store",
    "Safe Browsing",
];

/// File names skipped anywhere inside a profile: Chromium's process-singleton files (they name
/// the live browser, and restoring one would make a new Chromium think the profile is taken)
/// and throw-away metrics files.
pub const EXCLUDED_FILES: &[&str] = &[
    "SingletonLock",
    "SingletonSocket",
    "SingletonCookie",
    "BrowserMetrics-spare.pma",
];

/// Who may be using a profile, from its `SingletonLock` symlink (`<hostname>-<pid>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No lock, or a lock naming a process of this host that no longer exists (a crash left it).
    Nobody,
    /// A running process on this host.
    LocalPid(u32),
    /// A process on another host (shared storage); we cannot tell whether it is alive.
    OtherHost(String),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Nobody => f.write_str("nobody"),
            Holder::LocalPid(p) => write!(f, "Chromium pid {p} on this host"),
            Holder::OtherHost(h) => write!(f, "a Chromium on host {h}"),
        }
    }
}

/// This machine's hostname as Chromium writes it into `SingletonLock` (gethostname(2), which
/// Linux exposes in `/proc/sys/kernel/hostname`).
pub fn local_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Reads `<profile>/SingletonLock` and decides who holds the profile. `hostname` is this
/// machine's name ([`local_hostname`]); a pid is alive if `/proc/<pid>` exists, so the caller
/// must share the pid namespace of the workers on this host (the Nomad backup job sets
/// `pid_mode = "host"`).
pub fn holder(profile: &Path, hostname: &str) -> Holder {
    let Ok(target) = fs::read_link(profile.join("SingletonLock")) else {
        return Holder::Nobody;
    };
    let target = target.to_string_lossy().into_owned();
    // The hostname itself may contain '-', the pid never does: split at the last one.
    let Some((host, pid)) = target.rsplit_once('-') else {
        return Holder::OtherHost(target);
    };
    match pid.parse::<u32>() {
        Ok(pid) if host == hostname => {
            if Path::new("/proc").join(pid.to_string()).exists() {
                Holder::LocalPid(pid)
            } else {
                Holder::Nobody
            }
        }
        _ => Holder::OtherHost(host.to_owned()),
    }
}

/// What one pass saw of a file: enough to notice that Chromium wrote to it in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub size: u64,
    pub mtime: Option<SystemTime>,
    /// Present when the pass hashed the content.
    pub sha256: Option<String>,
}

/// Relative path (with `/`) → what was seen.
pub(crate) type Snapshot = BTreeMap<String, Seen>;

fn excluded(name: &str, is_dir: bool) -> bool {
    if is_dir {
        EXCLUDED_DIRS.contains(&name)
    } else {
        EXCLUDED_FILES.contains(&name)
    }
}

/// Every regular file under `root` that is not excluded, as (relative path with `/`, absolute
/// path), sorted. Symlinks are neither followed nor copied: a profile has none worth keeping
/// besides `SingletonLock`, and following them could leave the profile.
pub(crate) fn list_files(root: &Path) -> Result<Vec<(String, PathBuf)>, BackupError> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            // A directory Chromium removed while we walked: the two-pass check will notice.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(BackupError::io("list", &dir, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| BackupError::io("list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BackupError::io("stat", entry.path(), e)),
            };
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if ft.is_dir() && !excluded(&name, true) {
                stack.push((child_rel, entry.path()));
            } else if ft.is_file() && !excluded(&name, false) {
                out.push((child_rel, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn stat(path: &Path) -> Result<Option<fs::Metadata>, BackupError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BackupError::io("stat", path, e)),
    }
}

/// Copies `src` to `dst` (creating parents), fsyncs it, and returns what was seen: size and
/// mtime from before the copy, sha256 of the bytes actually copied. `Ok(None)` if `src`
/// vanished (Chromium deleted it: the caller treats that as a change).
pub(crate) fn copy_hashed(src: &Path, dst: &Path) -> Result<Option<Seen>, BackupError> {
    let Some(meta) = stat(src)? else {
        return Ok(None);
    };
    let mut input = match fs::File::open(src) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BackupError::io("open", src, e)),
    };
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|e| BackupError::io("mkdir", parent, e))?;
    }
    let mut output = fs::File::create(dst).map_err(|e| BackupError::io("create", dst, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| BackupError::io("read", src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(|e| BackupError::io("write", dst, e))?;
        size += n as u64;
    }
    output
        .sync_all()
        .map_err(|e| BackupError::io("fsync", dst, e))?;
    // `size` is what we copied and `mtime` is from before the copy: if Chromium wrote to the
    // file meanwhile, the verification pass sees a different size or mtime.
    Ok(Some(Seen {
        size,
        mtime: meta.modified().ok(),
        sha256: Some(hex::encode(hasher.finalize())),
    }))
}

/// Hashes a file without copying it.
pub(crate) fn hash_file(path: &Path) -> Result<Option<String>, BackupError> {
    let mut input = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BackupError::io("open", path, e)),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| BackupError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Re-reads every file under `root` (the verification pass): size, mtime and sha256.
pub(crate) fn snapshot(root: &Path) -> Result<Snapshot, BackupError> {
    let mut snap = Snapshot::new();
    for (rel, abs) in list_files(root)? {
        let Some(meta) = stat(&abs)? else { continue };
        // A file deleted between listing and hashing is left out: the key sets then differ.
        let Some(sha256) = hash_file(&abs)? else {
            continue;
        };
        snap.insert(
            rel,
            Seen {
                size: meta.len(),
                mtime: meta.modified().ok(),
                sha256: Some(sha256),
            },
        );
    }
    Ok(snap)
}

/// True if `second` saw the same files as `first`, with the same size and mtime, and the same
/// sha256 wherever both passes hashed.
pub(crate) fn same(first: &Snapshot, second: &Snapshot) -> bool {
    first.len() == second.len()
        && first.iter().zip(second.iter()).all(|((ra, a), (rb, b))| {
            ra == rb
                && a.size == b.size
                && a.mtime == b.mtime
                && match (&a.sha256, &b.sha256) {
                    (Some(x), Some(y)) => x == y,
                    _ => true,
                }
        })
}
