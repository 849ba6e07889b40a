//! Backup, retention and restore over a data directory (blocking filesystem code; the CLI runs
//! it on a blocking thread).
//!
//! Consistency rule: a session is accepted into a backup only if a second pass over its source
//! files, after the copy, sees exactly what the copy saw (names, sizes, mtimes, and for a profile
//! a Chromium may hold, sha256). See the module docs in `mod.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::manifest::{
    self, FileEntry, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, SessionEntry, SkippedEntry,
};
use super::profile::{self, Holder, Snapshot};
use super::{BackupError, EXCLUDED_DIRS, EXCLUDED_FILES};
use crate::ids::{SessionId, WorkspaceId};
// The session configuration file copied beside the profile.
use crate::worker::layout::SESSION_FILE;

/// Prefix of every completed backup directory (`wafleet-backup-20261128T200000Z`).
pub const BACKUP_PREFIX: &str = "wafleet-backup-";

/// A hook called with the session directory between the copy and the verification pass.
pub type BetweenPasses = Arc<dyn Fn(&Path) + Send + Sync>;

/// How a backup runs.
#[derive(Clone)]
pub struct BackupOptions {
    /// Completed backups to keep under the destination (the newest ones); at least 1.
    pub keep: usize,
    /// Copies tried per session before it is reported as skipped.
    pub attempts: u32,
    /// Pause between two attempts on one session, so a busy Chromium can settle.
    pub retry_wait: Duration,
    /// This host's name, to read `SingletonLock` ([`super::local_hostname`]).
    pub hostname: String,
    /// Called between the copy and the verification pass (observability and tests, which use it
    /// to play a Chromium writing to the profile at the worst moment).
    pub between_passes: Option<BetweenPasses>,
}

impl std::fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOptions")
            .field("keep", &self.keep)
            .field("attempts", &self.attempts)
            .field("retry_wait", &self.retry_wait)
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// What a backup did; printed as one JSON line by `wafleet backup`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The completed backup directory.
    pub backup: PathBuf,
    /// Sessions copied.
    pub sessions: usize,
    /// Files copied.
    pub files: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Sessions left out (still changing after every attempt, or unreadable).
    pub skipped: Vec<SkippedEntry>,
    /// Older backups removed by retention.
    pub pruned: Vec<PathBuf>,
}

/// What a restore did; printed as one JSON line by `wafleet restore`.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup directory the profile came from.
    pub backup: PathBuf,
    /// The restored profile directory.
    pub profile: PathBuf,
    /// Files restored.
    pub files: usize,
    /// Bytes restored.
    pub bytes: u64,
    /// Where the profile that was there before now is (kept, not deleted).
    pub previous: Option<PathBuf>,
    /// Whether `session.json` was restored too (only when the data directory had none).
    pub session_json: bool,
}

/// Backs up every session profile under `<data>/workspaces/` into a new timestamped directory
/// under `dest`, then keeps only the newest `opts.keep` backups. `now` names the directory.
pub fn backup(
    data: &Path,
    dest: &Path,
    opts: &BackupOptions,
    now: SystemTime,
) -> Result<BackupReport, BackupError> {
    if opts.keep == 0 {
        return Err(BackupError::Invalid("--keep must be at least 1".into()));
    }
    fs::create_dir_all(dest).map_err(|e| BackupError::io("mkdir", dest, e))?;
    let name = unique_name(dest, now);
    let partial = dest.join(format!(".{name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| BackupError::io("remove", &partial, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| BackupError::io("mkdir", &partial, e))?;

    let mut sessions = Vec::new();
    let mut skipped = Vec::new();
    for (ws, s) in list_sessions(data)? {
        let src = data.join("workspaces").join(ws.as_str()).join(s.as_str());
        let dst = partial
            .join("workspaces")
            .join(ws.as_str())
            .join(s.as_str());
        match backup_session(&src, &dst, opts) {
            Ok((mode, files)) => sessions.push(SessionEntry {
                workspace: ws,
                session: s,
                mode,
                files,
            }),
            Err(reason) => {
                let _ = fs::remove_dir_all(&dst);
                tracing::warn!(workspace = %ws, session = %s, %reason, "profile skipped");
                skipped.push(SkippedEntry {
                    workspace: ws,
                    session: s,
                    reason,
                });
            }
        }
    }

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        created_at: manifest::rfc3339(now),
        created_unix_ms: manifest::unix_ms(now),
        host: opts.hostname.clone(),
        sessions,
        skipped,
        excluded: EXCLUDED_DIRS
            .iter()
            .chain(EXCLUDED_FILES)
            .map(|s| (*s).to_owned())
            .collect(),
    };
    manifest.write(&partial)?;
    let done = dest.join(&name);
    fs::rename(&partial, &done).map_err(|e| BackupError::io("rename", &partial, e))?;
    sync_dir(dest);

    let pruned = prune(dest, opts.keep)?;
    let files = manifest.sessions.iter().map(|s| s.files.len()).sum();
    let bytes = manifest
        .sessions
        .iter()
        .flat_map(|s| &s.files)
        .map(|f| f.size)
        .sum();
    Ok(BackupReport {
        backup: done,
        sessions: manifest.sessions.len(),
        files,
        bytes,
        skipped: manifest.skipped,
        pruned,
    })
}

/// Copies one session directory (profile and `session.json`) into `dst`, retrying while its files
/// change. `Err` is the reason it was skipped (still changing, or an I/O error on every try).
fn backup_session(
    src: &Path,
    dst: &Path,
    opts: &BackupOptions,
) -> Result<(String, Vec<FileEntry>), String> {
    let profile_dir = src.join("profile");
    let attempts = opts.attempts.max(1);
    let mut last_holder = Holder::Nobody;
    let mut last_error: Option<String> = None;
    for attempt in 1..=attempts {
        if attempt > 1 && !opts.retry_wait.is_zero() {
            std::thread::sleep(opts.retry_wait);
        }
        if dst.exists()
            && let Err(e) = fs::remove_dir_all(dst)
        {
            return Err(format!("cannot clear {}: {e}", dst.display()));
        }
        let before = profile::holder(&profile_dir, &opts.hostname);
        let live = before != Holder::Nobody;
        let copied = match copy_pass(src, dst) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(path = %src.display(), error = %e, attempt, "copy failed");
                last_error = Some(e.to_string());
                continue;
            }
        };
        if let Some(hook) = &opts.between_passes {
            hook(src);
        }
        // Always hash in the verification pass: a Chromium in another pid namespace looks
        // dead to `holder`, and only the content proves that nothing was written meanwhile.
        let verified = match verify_pass(src) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(path = %src.display(), error = %e, attempt, "verification failed");
                last_error = Some(e.to_string());
                continue;
            }
        };
        let after = profile::holder(&profile_dir, &opts.hostname);
        if profile::same(&copied, &verified) && before == after {
            let files = copied
                .into_iter()
                .map(|(path, seen)| FileEntry {
                    path,
                    size: seen.size,
                    // copy_pass always hashes; an empty string would fail every restore.
                    sha256: seen.sha256.unwrap_or_default(),
                })
                .collect();
            let mode = if live { "live-verified" } else { "quiescent" };
            return Ok((mode.to_owned(), files));
        }
        tracing::info!(path = %src.display(), attempt, holder = %after, "profile changed during copy; retrying");
        last_error = None;
        last_holder = after;
    }
    Err(match last_error {
        Some(e) => format!("error on the last of {attempts} attempts: {e}"),
        None => format!(
            "files changed during each of {attempts} copies (held by {last_holder}); retry later"
        ),
    })
}

/// Copies the profile and `session.json`; returns what was copied (always hashed).
fn copy_pass(src: &Path, dst: &Path) -> Result<Snapshot, BackupError> {
    let mut snap = Snapshot::new();
    let profile_src = src.join("profile");
    if profile_src.is_dir() {
        for (rel, abs) in profile::list_files(&profile_src)? {
            let to = dst.join("profile").join(&rel);
            if let Some(seen) = profile::copy_hashed(&abs, &to)? {
                snap.insert(format!("profile/{rel}"), seen);
            }
        }
    }
    let sj = src.join(SESSION_FILE);
    if sj.is_file()
        && let Some(seen) = profile::copy_hashed(&sj, &dst.join(SESSION_FILE))?
    {
        snap.insert(SESSION_FILE.to_owned(), seen);
    }
    Ok(snap)
}

/// Re-reads the source after the copy: names, sizes, mtimes and sha256.
fn verify_pass(src: &Path) -> Result<Snapshot, BackupError> {
    let mut snap = Snapshot::new();
    let profile_src = src.join("profile");
    if profile_src.is_dir() {
        for (rel, seen) in profile::snapshot(&profile_src)? {
            snap.insert(format!("profile/{rel}"), seen);
        }
    }
    let sj = src.join(SESSION_FILE);
    if let Ok(meta) = fs::symlink_metadata(&sj)
        && meta.is_file()
    {
        let sha256 = profile::hash_file(&sj)?;
        snap.insert(
            SESSION_FILE.to_owned(),
            profile::Seen {
                size: meta.len(),
                mtime: meta.modified().ok(),
                sha256,
            },
        );
    }
    Ok(snap)
}

/// Every `(workspace, session)` directory under `<data>/workspaces`, sorted; names that are not
/// valid ids are ignored (nothing but validated ids reaches a path).
fn list_sessions(data: &Path) -> Result<Vec<(WorkspaceId, SessionId)>, BackupError> {
    let root = data.join("workspaces");
    let mut out = Vec::new();
    for ws_name in sorted_dir_names(&root)? {
        let Ok(ws) = WorkspaceId::new(ws_name.clone()) else {
            tracing::warn!(name = %ws_name, "ignoring directory that is not a workspace id");
            continue;
        };
        for s_name in sorted_dir_names(&root.join(&ws_name))? {
            match SessionId::new(s_name.clone()) {
                Ok(s) => out.push((ws.clone(), s)),
                Err(_) => {
                    tracing::warn!(name = %s_name, "ignoring directory that is not a session id")
                }
            }
        }
    }
    Ok(out)
}

/// Names of the sub-directories of `dir`, sorted; an absent `dir` has none.
fn sorted_dir_names(dir: &Path) -> Result<Vec<String>, BackupError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackupError::io("list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| BackupError::io("list", dir, e))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && let Ok(name) = entry.file_name().into_string()
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A backup directory name for `now` that does not exist yet under `dest`.
fn unique_name(dest: &Path, now: SystemTime) -> String {
    let base = format!("{BACKUP_PREFIX}{}", manifest::compact(now));
    let mut name = base.clone();
    let mut n = 1;
    while dest.join(&name).exists() || dest.join(format!(".{name}.partial")).exists() {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// Completed backups under `dest` (directories named `wafleet-backup-*` holding a manifest),
/// oldest first. Names embed a UTC timestamp, so name order is time order.
pub fn list_backups(dest: &Path) -> Result<Vec<PathBuf>, BackupError> {
    Ok(sorted_dir_names(dest)?
        .into_iter()
        .filter(|n| n.starts_with(BACKUP_PREFIX))
        .map(|n| dest.join(n))
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect())
}

/// Keeps the newest `keep` completed backups under `dest` and removes the others, plus any
/// `.wafleet-backup-*.partial` left by an interrupted run (runs never overlap: the Nomad job
/// sets `prohibit_overlap`). Returns what was removed.
pub fn prune(dest: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let backups = list_backups(dest)?;
    let excess = backups.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for old in backups.into_iter().take(excess) {
        fs::remove_dir_all(&old).map_err(|e| BackupError::io("remove", &old, e))?;
        removed.push(old);
    }
    for n in sorted_dir_names(dest)? {
        if n.starts_with(&format!(".{BACKUP_PREFIX}")) && n.ends_with(".partial") {
            let p = dest.join(n);
            fs::remove_dir_all(&p).map_err(|e| BackupError::io("remove", &p, e))?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Restores one session's profile from `backup` (a backup directory, or a backup root whose
/// newest backup holding the session is used) into `<data>/workspaces/<ws>/<s>/profile`.
///
/// Refuses when a Chromium may hold the current profile; verifies every sha256 while copying into
/// a temporary directory beside the target; then moves the current profile aside
/// (`profile.before-restore-<ulid>`, kept for the operator) and renames the new one into place.
pub fn restore(
    backup: &Path,
    data: &Path,
    ws: &WorkspaceId,
    s: &SessionId,
    hostname: &str,
) -> Result<RestoreReport, BackupError> {
    let (dir, manifest) = find_backup(backup, ws, s)?;
    // An entry without profile files (the session had no profile yet) would replace a profile
    // with an empty one: treat it as absent.
    let Some(entry) = manifest
        .session(ws, s)
        .filter(|e| e.files.iter().any(|f| f.path.starts_with("profile/")))
    else {
        return Err(not_in_backup(backup, ws, s));
    };
    let session_dir = data.join("workspaces").join(ws.as_str()).join(s.as_str());
    let profile_dir = session_dir.join("profile");
    check_free(&profile_dir, hostname)?;
    fs::create_dir_all(&session_dir).map_err(|e| BackupError::io("mkdir", &session_dir, e))?;

    let tmp = session_dir.join(format!(".profile.restore-{}", ulid::Ulid::new()));
    let src_root = dir.join("workspaces").join(ws.as_str()).join(s.as_str());
    let copied = copy_verified(entry, &src_root, &tmp, "profile");
    let (files, bytes) = match copied {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    fs::create_dir_all(&tmp).map_err(|e| BackupError::io("mkdir", &tmp, e))?;
    // A session may have been started while we copied: look again right before the swap.
    if let Err(e) = check_free(&profile_dir, hostname) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let previous = if profile_dir.exists() {
        let aside = session_dir.join(format!("profile.before-restore-{}", ulid::Ulid::new()));
        fs::rename(&profile_dir, &aside).map_err(|e| BackupError::io("rename", &profile_dir, e))?;
        Some(aside)
    } else {
        None
    };
    fs::rename(&tmp, &profile_dir).map_err(|e| BackupError::io("rename", &tmp, e))?;
    sync_dir(&session_dir);

    // session.json holds the session's live configuration; only fill it in when it is missing,
    // never overwrite what the worker wrote since the backup.
    let mut session_json = false;
    let sj = session_dir.join(SESSION_FILE);
    if !sj.exists()
        && let Some(f) = entry.files.iter().find(|f| f.path == SESSION_FILE)
    {
        let tmp_sj = session_dir.join(format!(".{SESSION_FILE}.restore-{}", ulid::Ulid::new()));
        match copy_one_verified(f, &src_root, &tmp_sj) {
            Ok(()) => {
                fs::rename(&tmp_sj, &sj).map_err(|e| BackupError::io("rename", &tmp_sj, e))?;
                session_json = true;
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp_sj);
                return Err(e);
            }
        }
    }
    Ok(RestoreReport {
        backup: dir,
        profile: profile_dir,
        files,
        bytes,
        previous,
        session_json,
    })
}

fn not_in_backup(backup: &Path, ws: &WorkspaceId, s: &SessionId) -> BackupError {
    BackupError::NotInBackup {
        workspace: ws.to_string(),
        session: s.to_string(),
        backup: backup.to_path_buf(),
    }
}

/// `backup` itself if it holds a manifest, else the newest backup under it holding the session.
fn find_backup(
    backup: &Path,
    ws: &WorkspaceId,
    s: &SessionId,
) -> Result<(PathBuf, Manifest), BackupError> {
    if backup.join(MANIFEST_FILE).is_file() {
        return Ok((backup.to_path_buf(), Manifest::read(backup)?));
    }
    for dir in list_backups(backup)?.into_iter().rev() {
        let m = Manifest::read(&dir)?;
        if m.session(ws, s).is_some() {
            return Ok((dir, m));
        }
    }
    Err(not_in_backup(backup, ws, s))
}

/// Refuses if a Chromium may hold `profile`.
fn check_free(profile: &Path, hostname: &str) -> Result<(), BackupError> {
    match profile::holder(profile, hostname) {
        Holder::Nobody => Ok(()),
        h => Err(BackupError::InUse {
            path: profile.to_path_buf(),
            holder: h.to_string(),
        }),
    }
}

/// Copies every manifest file under `prefix/` from `src_root` into `to`, verifying size and
/// sha256 of the bytes copied. Returns (files, bytes).
fn copy_verified(
    entry: &SessionEntry,
    src_root: &Path,
    to: &Path,
    prefix: &str,
) -> Result<(usize, u64), BackupError> {
    let mut files = 0;
    let mut bytes = 0;
    for f in &entry.files {
        let rel = f.rel_path()?;
        let Ok(inner) = rel.strip_prefix(prefix) else {
            continue;
        };
        if inner.as_os_str().is_empty() {
            continue;
        }
        let seen = profile::copy_hashed(&src_root.join(&rel), &to.join(inner))?;
        check_seen(f, &src_root.join(&rel), seen)?;
        files += 1;
        bytes += f.size;
    }
    Ok((files, bytes))
}

fn copy_one_verified(f: &FileEntry, src_root: &Path, to: &Path) -> Result<(), BackupError> {
    let rel = f.rel_path()?;
    let seen = profile::copy_hashed(&src_root.join(&rel), to)?;
    check_seen(f, &src_root.join(&rel), seen)
}

fn check_seen(f: &FileEntry, path: &Path, seen: Option<profile::Seen>) -> Result<(), BackupError> {
    let Some(seen) = seen else {
        return Err(BackupError::io(
            "read",
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "file listed in manifest is missing",
            ),
        ));
    };
    let actual = seen.sha256.unwrap_or_default();
    if actual != f.sha256 || seen.size != f.size {
        return Err(BackupError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: f.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// fsyncs a directory so a rename in it survives a crash (best effort: not every filesystem
/// supports it, and the data itself is already synced).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
