//! Integration tests for `wafleet backup` / `wafleet restore` on real files in temp dirs:
//! round trip, checksum mismatch, retention, in-use refusal and changing-file detection.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wafleet::backup::{self, BackupError, BackupOptions, MANIFEST_FILE, Manifest};
use wafleet::ids::{SessionId, WorkspaceId};

const HOST: &str = "backup-test-host";

fn opts(keep: usize) -> BackupOptions {
    BackupOptions {
        keep,
        attempts: 3,
        retry_wait: Duration::ZERO,
        hostname: HOST.to_owned(),
        between_passes: None,
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn ids(ws: &str, s: &str) -> (WorkspaceId, SessionId) {
    (WorkspaceId::new(ws).unwrap(), SessionId::new(s).unwrap())
}

fn session_dir(data: &Path, ws: &str, s: &str) -> PathBuf {
    data.join("workspaces").join(ws).join(s)
}

fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A profile shaped like Chromium's: LevelDB/IndexedDB files worth keeping, caches and singleton
/// files that must be left out, and a session.json beside it.
fn make_profile(data: &Path, ws: &str, s: &str) -> PathBuf {
    let dir = session_dir(data, ws, s);
    let p = dir.join("profile");
    write(&p.join("Local State"), b"{\"local\":true}");
    write(
        &p.join("Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb/000003.log"),
        &vec![7u8; 200_000],
    );
    write(
        &p.join("Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb/CURRENT"),
        b"MANIFEST-000001\n",
    );
    write(&p.join("Default/Local Storage/leveldb/000005.ldb"), b"ls");
    write(
        &p.join("Default/Cookies"),
        format!("cookies of {ws}/{s}").as_bytes(),
    );
    write(
        &p.join("Default/Cache/Cache_Data/data_0"),
        &vec![1u8; 50_000],
    );
    write(&p.join("Default/Code Cache/js/index"), b"code cache");
    write(&p.join("GPUCache/data_1"), b"gpu");
    write(
        &p.join("Default/Service Worker/CacheStorage/abc/index"),
        b"sw cache",
    );
    write(&p.join("Default/Service Worker/Database/CURRENT"), b"sw db");
    write(&p.join("SingletonSocket"), b"");
    write(&dir.join("session.json"), b"{\"webhook\":null}");
    p
}

/// Relative path → sha256 of every regular file under `root` (hashes keep failure output short).
fn tree(root: &Path) -> Vec<(String, String)> {
    use sha2::{Digest, Sha256};
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(root, &e.path(), out);
            } else if ft.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let digest = Sha256::digest(fs::read(e.path()).unwrap());
                out.push((rel, hex::encode(digest)));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn lock_profile(profile: &Path, target: &str) {
    symlink(target, profile.join("SingletonLock")).unwrap();
}

#[test]
fn backup_then_restore_round_trips_profile_without_caches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dest = tmp.path().join("backups");
    let profile = make_profile(&data, "acme", "main");
    make_profile(&data, "acme", "second");
    make_profile(&data, "globex", "s1");
    let original = tree(&profile);

    let report = backup::backup(&data, &dest, &opts(5), at(1_795_896_187)).unwrap();
    assert_eq!(report.sessions, 3);
    assert!(report.skipped.is_empty());
    assert_eq!(
        report.backup.file_name().unwrap(),
        "wafleet-backup-20261128T200307Z"
    );
    let manifest = Manifest::read(&report.backup).unwrap();
    let (ws, s) = ids("acme", "main");
    let entry = manifest.session(&ws, &s).unwrap();
    assert_eq!(entry.mode, "quiescent");
    let paths: Vec<&str> = entry.files.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"profile/Default/Cookies"), "{paths:?}");
    assert!(paths.contains(&"profile/Default/Service Worker/Database/CURRENT"));
    assert!(paths.contains(&"session.json"));
    for excluded in [
        "Cache/",
        "Code Cache/",
        "GPUCache/",
        "CacheStorage/",
        "Singleton",
    ] {
        assert!(
            !paths.iter().any(|p| p.contains(excluded)),
            "{excluded} was backed up: {paths:?}"
        );
    }

    // Restore into an empty data dir: exactly the kept files come back.
    let fresh = tmp.path().join("fresh");
    let r = backup::restore(&report.backup, &fresh, &ws, &s, HOST).unwrap();
    assert!(r.previous.is_none());
    assert!(r.session_json);
    let restored = tree(&fresh.join("workspaces/acme/main/profile"));
    let expected: Vec<_> = original
        .iter()
        .filter(|(p, _)| {
            !(p.contains("Cache/")
                || p.contains("CacheStorage/")
                || p.starts_with("GPUCache")
                || p.starts_with("Singleton"))
        })
        .cloned()
        .collect();
    assert_eq!(restored, expected);
    assert_eq!(
        fs::read(fresh.join("workspaces/acme/main/session.json")).unwrap(),
        b"{\"webhook\":null}"
    );

    // Restore over a changed profile, naming only the backup root: the current profile is kept
    // aside and the backup's content takes its place.
    write(
        &profile.join("Default/Cookies"),
        b"changed after the backup",
    );
    let r = backup::restore(&dest, &data, &ws, &s, HOST).unwrap();
    let aside = r.previous.expect("previous profile kept");
    assert_eq!(
        fs::read(aside.join("Default/Cookies")).unwrap(),
        b"changed after the backup"
    );
    assert_eq!(
        fs::read(profile.join("Default/Cookies")).unwrap(),
        b"cookies of acme/main"
    );
    assert!(
        !r.session_json,
        "existing session.json must not be overwritten"
    );
    let leftovers: Vec<_> = fs::read_dir(session_dir(&data, "acme", "main"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".profile.restore"))
        .collect();
    assert!(leftovers.is_empty(), "temp dirs left: {leftovers:?}");
}

#[test]
fn restore_detects_checksum_mismatch_and_leaves_target_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dest = tmp.path().join("backups");
    let profile = make_profile(&data, "acme", "main");
    let report = backup::backup(&data, &dest, &opts(5), at(1_000)).unwrap();

    // Bit rot in the backup copy, same size.
    let copy = report
        .backup
        .join("workspaces/acme/main/profile/Default/Cookies");
    let mut bytes = fs::read(&copy).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&copy, &bytes).unwrap();

    write(&profile.join("Default/Cookies"), b"current");
    let before = tree(&session_dir(&data, "acme", "main"));
    let (ws, s) = ids("acme", "main");
    let err = backup::restore(&report.backup, &data, &ws, &s, HOST).unwrap_err();
    assert!(
        matches!(err, BackupError::ChecksumMismatch { ref path, .. } if path.ends_with("Default/Cookies")),
        "{err}"
    );
    assert_eq!(tree(&session_dir(&data, "acme", "main")), before);
    let names: Vec<_> = fs::read_dir(session_dir(&data, "acme", "main"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with('.') || n.contains("before-restore")),
        "{names:?}"
    );
}

#[test]
fn retention_keeps_newest_backups_and_removes_partials() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dest = tmp.path().join("backups");
    make_profile(&data, "acme", "main");
    // Leftover of an interrupted run.
    fs::create_dir_all(dest.join(".wafleet-backup-19700101T000000Z.partial/x")).unwrap();
    // Something that is not ours is never touched.
    fs::create_dir_all(dest.join("unrelated")).unwrap();

    let mut made = Vec::new();
    for (i, secs) in [3_600u64, 7_200, 10_800, 14_400].into_iter().enumerate() {
        let r = backup::backup(&data, &dest, &opts(2), at(secs)).unwrap();
        made.push(r.backup.clone());
        if i == 0 {
            assert_eq!(r.pruned.len(), 1, "the stale partial is removed");
        }
    }
    let left = backup::list_backups(&dest).unwrap();
    assert_eq!(left, made[2..].to_vec());
    assert!(dest.join("unrelated").is_dir());
    assert!(
        !dest
            .join(".wafleet-backup-19700101T000000Z.partial")
            .exists()
    );

    // Two backups in the same second get distinct names.
    let a = backup::backup(&data, &dest, &opts(10), at(20_000)).unwrap();
    let b = backup::backup(&data, &dest, &opts(10), at(20_000)).unwrap();
    assert_ne!(a.backup, b.backup);
    assert!(b.backup.join(MANIFEST_FILE).is_file());

    assert!(matches!(
        backup::backup(&data, &dest, &opts(0), at(30_000)),
        Err(BackupError::Invalid(_))
    ));
}

#[test]
fn restore_refuses_a_profile_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dest = tmp.path().join("backups");
    let profile = make_profile(&data, "acme", "main");
    let report = backup::backup(&data, &dest, &opts(5), at(1_000)).unwrap();
    let (ws, s) = ids("acme", "main");
    write(&profile.join("Default/Cookies"), b"live");

    // A live Chromium on this host: our own pid stands in for it.
    lock_profile(&profile, &format!("{HOST}-{}", std::process::id()));
    let err = backup::restore(&report.backup, &data, &ws, &s, HOST).unwrap_err();
    assert!(matches!(err, BackupError::InUse { .. }), "{err}");
    assert_eq!(fs::read(profile.join("Default/Cookies")).unwrap(), b"live");

    // A Chromium on another host sharing the NFS volume: cannot be checked, so refused.
    fs::remove_file(profile.join("SingletonLock")).unwrap();
    lock_profile(&profile, "other-host-4242");
    let err = backup::restore(&report.backup, &data, &ws, &s, HOST).unwrap_err();
    assert!(matches!(err, BackupError::InUse { ref holder, .. } if holder.contains("other-host")));

    // A stale lock (no such pid on this host; above any pid_max) does not block the restore.
    fs::remove_file(profile.join("SingletonLock")).unwrap();
    lock_profile(&profile, &format!("{HOST}-2147483647"));
    backup::restore(&report.backup, &data, &ws, &s, HOST).unwrap();
    assert_eq!(
        fs::read(profile.join("Default/Cookies")).unwrap(),
        b"cookies of acme/main"
    );
    assert!(!profile.join("SingletonLock").exists());
}

#[test]
fn live_profile_is_copied_only_when_two_passes_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dest = tmp.path().join("backups");
    let busy = make_profile(&data, "acme", "busy");
    let idle = make_profile(&data, "acme", "idle");
    let once = make_profile(&data, "acme", "once");
    for p in [&busy, &idle, &once] {
        lock_profile(p, &format!("{HOST}-{}", std::process::id()));
    }

    // Play a Chromium that writes between the copy and the verification pass: always for
    // "busy" (content only, same size: only the checksum can tell), only the first time for
    // "once".
    let once_calls = Arc::new(AtomicU32::new(0));
    let calls = once_calls.clone();
    let mut o = opts(5);
    o.between_passes = Some(Arc::new(move |dir: &Path| {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let log = dir.join(
            "profile/Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb/000003.log",
        );
        match name.as_str() {
            "busy" => {
                let mut b = fs::read(&log).unwrap();
                b[10] = b[10].wrapping_add(1);
                let mtime = fs::metadata(&log).unwrap().modified().unwrap();
                fs::write(&log, &b).unwrap();
                // Keep the mtime too, as a coarse-mtime filesystem would: only sha256 can tell.
                fs::File::options()
                    .write(true)
                    .open(&log)
                    .unwrap()
                    .set_modified(mtime)
                    .unwrap();
            }
            "once" if calls.fetch_add(1, Ordering::SeqCst) == 0 => {
                write(&dir.join("profile/Default/Cookies"), b"rotated cookie");
            }
            _ => {}
        }
    }));
    let report = backup::backup(&data, &dest, &o, at(5_000)).unwrap();

    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert_eq!(report.skipped[0].session.as_str(), "busy");
    assert!(report.skipped[0].reason.contains("changed"));
    assert_eq!(once_calls.load(Ordering::SeqCst), 2, "retried once");

    let m = Manifest::read(&report.backup).unwrap();
    assert!(
        m.session(&ids("acme", "busy").0, &ids("acme", "busy").1)
            .is_none()
    );
    assert!(!report.backup.join("workspaces/acme/busy").exists());
    let idle_entry = m
        .session(&ids("acme", "idle").0, &ids("acme", "idle").1)
        .unwrap();
    assert_eq!(idle_entry.mode, "live-verified");
    let once_entry = m
        .session(&ids("acme", "once").0, &ids("acme", "once").1)
        .unwrap();
    let cookie = once_entry
        .files
        .iter()
        .find(|f| f.path == "profile/Default/Cookies")
        .unwrap();
    assert_eq!(cookie.size, b"rotated cookie".len() as u64);
}

#[test]
fn quiescent_profile_that_changes_during_copy_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dest = tmp.path().join("backups");
    make_profile(&data, "acme", "main");
    let mut o = opts(5);
    o.attempts = 2;
    // No SingletonLock, but a Chromium starts and writes: size changes, every time.
    o.between_passes = Some(Arc::new(|dir: &Path| {
        let p = dir.join("profile/Default/Cookies");
        let mut b = fs::read(&p).unwrap();
        b.push(b'!');
        fs::write(&p, b).unwrap();
    }));
    let report = backup::backup(&data, &dest, &o, at(6_000)).unwrap();
    assert_eq!(report.sessions, 0);
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].reason.contains("2 copies"));
}

#[test]
fn cli_backup_and_restore_print_json_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dest = tmp.path().join("backups");
    let profile = make_profile(&data, "acme", "main");
    let bin = env!("CARGO_BIN_EXE_wafleet");

    // Without the volume sentinel the data directory may be an empty mount point: refused.
    let out = Command::new(bin)
        .args(["backup", "--data"])
        .arg(&data)
        .arg("--dest")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(".wafleet-volume"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dest.exists(),
        "nothing is written when the volume is refused"
    );
    let out = Command::new(bin)
        .args(["volume", "init", "--id", "test-vol", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(bin)
        .args(["backup", "--data"])
        .arg(&data)
        .arg("--dest")
        .arg(&dest)
        .args(["--keep", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sessions"], 1);
    assert!(
        report["backup"]
            .as_str()
            .unwrap()
            .contains("wafleet-backup-")
    );

    fs::remove_dir_all(&profile).unwrap();
    let out = Command::new(bin)
        .args(["restore", "--backup"])
        .arg(&dest)
        .arg("--data")
        .arg(&data)
        .args(["--workspace", "acme", "--session", "main"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["files"].as_u64().unwrap() > 0);
    assert_eq!(
        fs::read(profile.join("Default/Cookies")).unwrap(),
        b"cookies of acme/main"
    );

    // A session that had no profile yet is not restorable from that backup.
    let empty = session_dir(&data, "acme", "fresh");
    fs::create_dir_all(&empty).unwrap();
    write(&empty.join("session.json"), b"{}");
    let only_json = backup::backup(&data, &tmp.path().join("b2"), &opts(5), at(9_000)).unwrap();
    let (ws, s) = ids("acme", "fresh");
    assert!(matches!(
        backup::restore(&only_json.backup, &data, &ws, &s, HOST),
        Err(BackupError::NotInBackup { .. })
    ));

    // Invalid ids never reach a path.
    let out = Command::new(bin)
        .args(["restore", "--backup"])
        .arg(&dest)
        .arg("--data")
        .arg(&data)
        .args(["--workspace", "../etc", "--session", "main"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // --keep 0 is refused by the parser.
    let out = Command::new(bin)
        .args(["backup", "--data"])
        .arg(&data)
        .arg("--dest")
        .arg(&dest)
        .args(["--keep", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
