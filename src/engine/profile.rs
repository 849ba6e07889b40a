//! Session profile directories (LocalAuth semantics) and stale Chromium lock removal.
//!
//! A Chromium profile is guarded by `SingletonLock` (a symlink to `<hostname>-<pid>`),
//! `SingletonSocket` and `SingletonCookie`. After a crash or a kill they stay behind and the next
//! launch fails with "The browser is already running" (reference whatsapp-web.md §1.10). On
//! shared storage, the same files are also the only trace of a browser that another host may
//! still be running, so removing them is safe only for whoever holds the workspace lock: the
//! lock guarantees no other worker runs that workspace's browsers. [`remove_stale_singletons`]
//! therefore takes a [`WorkspaceLockGuard`] and refuses to act without a held one.

use std::path::{Path, PathBuf};

use crate::ids::WorkspaceId;

/// The files Chromium uses to keep one browser per profile.
pub const SINGLETON_FILES: &[&str] = &["SingletonLock", "SingletonSocket", "SingletonCookie"];

/// Proof that the caller holds a workspace's lock (implemented by the worker's Consul lock
/// guard). Stale lock removal and profile deletion take one so they cannot be called without it.
pub trait WorkspaceLockGuard: Send + Sync {
    /// The workspace this lock is for.
    fn workspace(&self) -> &WorkspaceId;
    /// Whether the lock is still held right now (a lost Consul session means it is not).
    fn is_held(&self) -> bool;
}

/// Why a profile operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The guard is for another workspace or no longer held.
    #[error("workspace lock for {expected} not held")]
    LockNotHeld {
        /// The workspace whose lock was needed.
        expected: String,
    },
    /// A browser on this host is running on this profile right now.
    #[error("profile in use by running process {pid}")]
    InUse {
        /// Its pid.
        pid: u32,
    },
    /// Filesystem error.
    #[error("profile I/O on {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn check_guard(
    workspace: &WorkspaceId,
    guard: &dyn WorkspaceLockGuard,
) -> Result<(), ProfileError> {
    if guard.workspace() != workspace || !guard.is_held() {
        return Err(ProfileError::LockNotHeld {
            expected: workspace.to_string(),
        });
    }
    Ok(())
}

/// Parses a `SingletonLock` target `<hostname>-<pid>` (hostnames may contain `-`).
pub fn parse_singleton_lock(target: &str) -> Option<(&str, u32)> {
    let (host, pid) = target.rsplit_once('-')?;
    Some((host, pid.parse().ok()?))
}

fn this_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether process `pid` on this host is a browser running on `profile` (its command line has
/// `--user-data-dir=<profile>`).
fn live_browser_on(pid: u32, profile: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let wanted = format!("--user-data-dir={}", profile.display());
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == wanted.as_bytes())
}

/// Removes stale `Singleton*` files from `profile` of `workspace`, given proof of the workspace
/// lock. Refuses when a browser on this host still runs on the profile (that is a live lock,
/// not a stale one). Returns the files removed.
pub fn remove_stale_singletons(
    profile: &Path,
    workspace: &WorkspaceId,
    guard: &dyn WorkspaceLockGuard,
) -> Result<Vec<PathBuf>, ProfileError> {
    check_guard(workspace, guard)?;
    let lock = profile.join("SingletonLock");
    if let Ok(target) = std::fs::read_link(&lock)
        && let Some((host, pid)) = target.to_str().and_then(parse_singleton_lock)
        && this_hostname().as_deref() == Some(host)
        && live_browser_on(pid, profile)
    {
        return Err(ProfileError::InUse { pid });
    }
    let mut removed = Vec::new();
    for name in SINGLETON_FILES {
        let path = profile.join(name);
        // symlink_metadata: these are usually dangling symlinks, which `exists()` calls absent.
        if std::fs::symlink_metadata(&path).is_ok() {
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ProfileError::Io { path, source }),
            }
        }
    }
    Ok(removed)
}

/// Deletes a session's profile (logout: the profile is the session). Missing is fine.
pub fn delete_profile(profile: &Path) -> Result<(), ProfileError> {
    match std::fs::remove_dir_all(profile) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ProfileError::Io {
            path: profile.to_path_buf(),
            source,
        }),
    }
}

/// Creates the profile directory (owner-only: it holds the session's credentials).
pub fn ensure_profile(profile: &Path) -> Result<(), ProfileError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(profile)
        .map_err(|source| ProfileError::Io {
            path: profile.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Guard(WorkspaceId, AtomicBool);
    impl WorkspaceLockGuard for Guard {
        fn workspace(&self) -> &WorkspaceId {
            &self.0
        }
        fn is_held(&self) -> bool {
            self.1.load(Ordering::SeqCst)
        }
    }

    fn stale_profile() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        // As a killed Chromium leaves them: dangling symlinks.
        std::os::unix::fs::symlink("otherhost-4242", dir.path().join("SingletonLock")).unwrap();
        std::os::unix::fs::symlink("/tmp/nowhere/socket", dir.path().join("SingletonSocket"))
            .unwrap();
        std::os::unix::fs::symlink("123456", dir.path().join("SingletonCookie")).unwrap();
        std::fs::write(dir.path().join("Local State"), "{}").unwrap();
        dir
    }

    #[test]
    fn removes_only_with_a_held_lock_for_the_workspace() {
        let dir = stale_profile();
        let ws = WorkspaceId::new("ws1").unwrap();
        let other = Guard(WorkspaceId::new("ws2").unwrap(), AtomicBool::new(true));
        assert!(matches!(
            remove_stale_singletons(dir.path(), &ws, &other),
            Err(ProfileError::LockNotHeld { .. })
        ));
        let lost = Guard(ws.clone(), AtomicBool::new(false));
        assert!(matches!(
            remove_stale_singletons(dir.path(), &ws, &lost),
            Err(ProfileError::LockNotHeld { .. })
        ));
        assert!(std::fs::symlink_metadata(dir.path().join("SingletonLock")).is_ok());

        let held = Guard(ws.clone(), AtomicBool::new(true));
        let removed = remove_stale_singletons(dir.path(), &ws, &held).unwrap();
        assert_eq!(removed.len(), 3);
        for name in SINGLETON_FILES {
            assert!(std::fs::symlink_metadata(dir.path().join(name)).is_err());
        }
        // The rest of the profile is untouched.
        assert!(dir.path().join("Local State").exists());
        // Idempotent.
        assert!(
            remove_stale_singletons(dir.path(), &ws, &held)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn refuses_when_a_local_process_holds_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        ensure_profile(&profile).unwrap();
        // A live process on this host whose command line names the profile (the shell stays
        // alive because of the `; true`, and keeps its extra arguments in its cmdline).
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 30; true")
            .arg("wafleet-test")
            .arg(format!("--user-data-dir={}", profile.display()))
            .spawn()
            .unwrap();
        // Until the child has exec'd, its cmdline is still this test binary's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !live_browser_on(child.id(), &profile) {
            assert!(std::time::Instant::now() < deadline, "child never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let host = this_hostname().unwrap();
        std::os::unix::fs::symlink(
            format!("{host}-{}", child.id()),
            profile.join("SingletonLock"),
        )
        .unwrap();
        let ws = WorkspaceId::new("ws1").unwrap();
        let held = Guard(ws.clone(), AtomicBool::new(true));
        let result = remove_stale_singletons(&profile, &ws, &held);
        let _ = child.kill();
        let _ = child.wait();
        match result {
            Err(ProfileError::InUse { pid }) => assert_eq!(pid, child.id()),
            other => panic!("expected InUse, got {other:?}"),
        }
        // Once that process is gone the same lock is stale and goes.
        assert_eq!(
            remove_stale_singletons(&profile, &ws, &held).unwrap().len(),
            1
        );
    }

    #[test]
    fn parses_lock_targets() {
        assert_eq!(
            parse_singleton_lock("my-host-1-123"),
            Some(("my-host-1", 123))
        );
        assert_eq!(parse_singleton_lock("nohyphen"), None);
    }

    #[test]
    fn deletes_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("a/b/profile");
        ensure_profile(&profile).unwrap();
        std::fs::write(profile.join("x"), "y").unwrap();
        delete_profile(&profile).unwrap();
        assert!(!profile.exists());
        delete_profile(&profile).unwrap();
    }
}
