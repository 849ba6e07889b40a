//! Owner records: who holds a shard (and runs a profile's browser), written on the shared
//! volume so that a successor can tell a dead owner from a live one.
//!
//! ```text
//! <data>/shards/<k>/owner.json                    the shard's holder and its lease
//! <data>/workspaces/<ws>/<s>/owner.json           who runs the browser on <s>/profile/
//! ```
//!
//! A record names one process exactly: host name, boot id (`/proc/sys/kernel/random/boot_id`),
//! pid and the process's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot),
//! so a reused pid is not mistaken for the owner. The shard record also carries the owner's
//! Consul session and a lease (`lease_until_ms`: last observed renewal + TTL, wall clock).
//!
//! Two uses (issue 13, items 6 and 10):
//! * **Takeover.** A worker restarted on the same host reads its shard's record; when the
//!   owner is *proven dead* ([`Liveness::Dead`]: same host and boot, and its pid is gone or
//!   belongs to another start time) it takes up the owner's still-valid Consul session instead
//!   of waiting TTL + lock delay for it to expire.
//! * **Profiles.** Before a browser starts on a profile (which removes a stale
//!   `SingletonLock`), the profile's record is checked: the profile is free when the record
//!   is missing or ours, its owner is proven dead, or the owner's lease has expired with a
//!   margin. The lease of a profile's owner is its shard record's, as long as that record still
//!   names it. A shard record is replaced only once the process it names is dead or its lease
//!   expired with the margin (see [`Verdict`]), so a profile owner no longer named by its
//!   shard's record has an expired lease.
//!
//! Why on the volume and not in Consul KV: the profile check must work from the volume alone
//! (it is the last line of defence when Consul's view and a frozen process disagree), lease
//! renewals would be Raft writes every few seconds per shard, and the record sits next to what
//! it protects (the shard's SQLite, the profiles), on the storage every successor mounts.
//!
//! The decisions ([`liveness`], [`verdict`], [`profile_verdict`]) are pure: they take the
//! record, this process's identity, a `/proc` probe and the time.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::write_atomic;

/// File name of a record (in `shards/<k>/` and in a session directory).
pub const OWNER_FILE: &str = "owner.json";

/// Why reading or writing a record failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// Filesystem error.
    #[error("owner record {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a record.
    #[error("owner record {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// `/proc` did not tell who this process is.
    #[error("cannot read this process's identity from /proc: {0}")]
    Identity(String),
}

/// One process, exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Host name (`/proc/sys/kernel/hostname`).
    pub host: String,
    /// Boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Process id.
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl Identity {
    /// This process.
    pub fn current() -> Result<Identity, OwnerError> {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| OwnerError::Identity(format!("{p}: {e}")))
        };
        let pid = std::process::id();
        let start_time = start_time_of(pid)
            .ok_or_else(|| OwnerError::Identity(format!("/proc/{pid}/stat unreadable")))?;
        Ok(Identity {
            host: read("/proc/sys/kernel/hostname")?,
            boot_id: read("/proc/sys/kernel/random/boot_id")?,
            pid,
            start_time,
        })
    }

    /// Whether `other` is a process of the same host and boot (so its pid means something
    /// here).
    pub fn same_boot(&self, other: &Identity) -> bool {
        self.host == other.host && self.boot_id == other.boot_id
    }
}

/// The start time (clock ticks since boot) of `pid` on this host, `None` when there is no such
/// process (or it is a zombie: a dead process that only waits to be reaped).
pub fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_start_time(&stat)
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line; `None` for a zombie (`Z`/`X`) or a
/// line that does not parse. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted after its last `)`.
pub fn parse_stat_start_time(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X") {
        return None;
    }
    // `rest` starts at field 3 (state); starttime is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

/// A shard's holder (`<data>/shards/<k>/owner.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The holding process.
    #[serde(flatten)]
    pub owner: Identity,
    /// Its shard.
    pub shard: u32,
    /// Its Consul session.
    pub session: String,
    /// Until when it may still run browsers: last observed renewal + TTL (Unix ms).
    pub lease_until_ms: u64,
    /// When the record was written (Unix ms), for operators.
    pub written_ms: u64,
}

/// Who runs the browser on a profile (`<data>/workspaces/<ws>/<s>/owner.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// The worker process that launches the profile's browsers.
    #[serde(flatten)]
    pub owner: Identity,
    /// Its shard (whose record holds its lease).
    pub shard: u32,
    /// When the record was written (Unix ms).
    pub written_ms: u64,
}

/// What `/proc` says about a recorded process, seen from `me`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The record names this very process.
    Me,
    /// Same host and boot, and its pid is gone or now belongs to another process.
    Dead,
    /// Same host and boot, and the process is alive (maybe frozen).
    Alive,
    /// Another host or another boot: nothing can be proven from here.
    Unknown,
}

/// Classifies `owner` from `me`, with `probe(pid)` giving a pid's start time (`None`: gone).
pub fn liveness(owner: &Identity, me: &Identity, probe: impl Fn(u32) -> Option<u64>) -> Liveness {
    if owner == me {
        return Liveness::Me;
    }
    if !me.same_boot(owner) {
        // A reboot of this host kills every process of the previous boot, but a boot id that
        // differs could also be another host with the same name: prove nothing.
        return Liveness::Unknown;
    }
    match probe(owner.pid) {
        Some(t) if t == owner.start_time => Liveness::Alive,
        _ => Liveness::Dead,
    }
}

/// Whether a resource recorded as owned by someone may be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nobody else: no record, or our own.
    Free,
    /// Its owner is proven dead.
    OwnerDead,
    /// Its owner's lease ran out (plus the margin) at this time (Unix ms).
    LeaseExpired,
    /// Its owner may still run browsers until this time (Unix ms): wait.
    Held {
        /// When the lease plus margin ends.
        until_ms: u64,
    },
}

impl Verdict {
    /// Whether the resource may be taken now.
    pub fn may_take(self) -> bool {
        !matches!(self, Verdict::Held { .. })
    }
}

/// The verdict on a shard record seen by `me` at `now_ms`, with a clock-skew `margin_ms`.
pub fn verdict(
    record: Option<&ShardRecord>,
    me: &Identity,
    now_ms: u64,
    margin_ms: u64,
    probe: impl Fn(u32) -> Option<u64>,
) -> Verdict {
    let Some(r) = record else {
        return Verdict::Free;
    };
    match liveness(&r.owner, me, probe) {
        Liveness::Me => Verdict::Free,
        Liveness::Dead => Verdict::OwnerDead,
        Liveness::Alive | Liveness::Unknown => {
            let until_ms = r.lease_until_ms.saturating_add(margin_ms);
            if now_ms >= until_ms {
                Verdict::LeaseExpired
            } else {
                Verdict::Held { until_ms }
            }
        }
    }
}

/// The verdict on a profile record: its owner's lease is the one in `shard_record` (the
/// record of the profile owner's shard) when that still names the owner; a shard record that
/// names someone else (or none) means the owner's lease has run out, because a shard record
/// is replaced only once its owner's lease expired or the owner died.
pub fn profile_verdict(
    record: Option<&ProfileRecord>,
    shard_record: Option<&ShardRecord>,
    me: &Identity,
    now_ms: u64,
    margin_ms: u64,
    probe: impl Fn(u32) -> Option<u64>,
) -> Verdict {
    let Some(p) = record else {
        return Verdict::Free;
    };
    match liveness(&p.owner, me, &probe) {
        Liveness::Me => Verdict::Free,
        Liveness::Dead => Verdict::OwnerDead,
        Liveness::Alive | Liveness::Unknown => match shard_record {
            Some(s) if s.owner == p.owner => {
                let until_ms = s.lease_until_ms.saturating_add(margin_ms);
                if now_ms >= until_ms {
                    Verdict::LeaseExpired
                } else {
                    Verdict::Held { until_ms }
                }
            }
            _ => Verdict::LeaseExpired,
        },
    }
}

/// `<data>/shards/<k>/owner.json`.
pub fn shard_record_path(data: &Path, shard: u32) -> PathBuf {
    data.join("shards").join(shard.to_string()).join(OWNER_FILE)
}

/// `<session dir>/owner.json`.
pub fn profile_record_path(session_dir: &Path) -> PathBuf {
    session_dir.join(OWNER_FILE)
}

/// `<data>/shards/<k>/process.lock`: held (an exclusive `flock`) by the live worker process of
/// shard k on this host for its whole life, and released by the kernel when it dies.
pub fn process_lock_path(data: &Path, shard: u32) -> PathBuf {
    data.join("shards")
        .join(shard.to_string())
        .join("process.lock")
}

/// Takes the shard's process lock without waiting: `Ok(Some(file))` while this process holds
/// it (keep the file open for the life of the process), `Ok(None)` when another live process
/// holds it. Only the holder may take over a dead predecessor's session, so two processes
/// started at once for one shard on one host can never both take it over.
pub fn try_process_lock(path: &Path) -> Result<Option<std::fs::File>, OwnerError> {
    let io = |source| OwnerError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Reads a record; `Ok(None)` when the file does not exist.
pub fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, OwnerError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| OwnerError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(OwnerError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a record atomically (temporary file and rename), creating its directory.
pub fn write<T: Serialize>(path: &Path, record: &T) -> Result<(), OwnerError> {
    let io = |source| OwnerError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let body = serde_json::to_vec_pretty(record).map_err(|e| io(std::io::Error::other(e)))?;
    write_atomic(path, &body).map_err(io)
}

/// Removes the record at `path` if it names `me` (a successor's record stays). Missing is fine.
pub fn remove_if_mine<T>(path: &Path, me: &Identity, owner_of: impl Fn(&T) -> &Identity)
where
    T: serde::de::DeserializeOwned,
{
    match read::<T>(path) {
        Ok(Some(r)) if owner_of(&r) == me => {
            if let Err(e) = std::fs::remove_file(path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove the owner record");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "owner record unreadable; left in place"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(host: &str, boot: &str, pid: u32, start: u64) -> Identity {
        Identity {
            host: host.into(),
            boot_id: boot.into(),
            pid,
            start_time: start,
        }
    }

    fn shard_rec(owner: Identity, lease_until_ms: u64) -> ShardRecord {
        ShardRecord {
            owner,
            shard: 3,
            session: "s-1".into(),
            lease_until_ms,
            written_ms: 0,
        }
    }

    #[test]
    fn stat_start_time_is_field_22_even_with_odd_command_names() {
        let line = "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_stat_start_time(line), Some(987654));
        let zombie =
            "4242 (chromium) Z 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_stat_start_time(zombie), None);
        assert_eq!(parse_stat_start_time("garbage"), None);
        // This process is alive and its own start time matches what Identity reads.
        let me = Identity::current().unwrap();
        assert_eq!(start_time_of(me.pid), Some(me.start_time));
    }

    #[test]
    fn a_dead_owner_is_proven_only_on_the_same_host_and_boot() {
        let me = id("h1", "b1", 100, 5000);
        let gone = |_| None;
        let reused = |_| Some(9999);
        let alive = |_| Some(4000);
        let prev = id("h1", "b1", 90, 4000);
        assert_eq!(liveness(&prev, &me, gone), Liveness::Dead);
        assert_eq!(liveness(&prev, &me, reused), Liveness::Dead);
        assert_eq!(liveness(&prev, &me, alive), Liveness::Alive);
        assert_eq!(liveness(&me, &me, alive), Liveness::Me);
        // Another host, or this host after a reboot: a missing pid proves nothing.
        assert_eq!(
            liveness(&id("h2", "b1", 90, 4000), &me, gone),
            Liveness::Unknown
        );
        assert_eq!(
            liveness(&id("h1", "b0", 90, 4000), &me, gone),
            Liveness::Unknown
        );
    }

    #[test]
    fn a_live_or_unknown_owner_holds_until_its_lease_and_margin_end() {
        let me = id("h1", "b1", 100, 5000);
        let other_host = id("h2", "b2", 90, 4000);
        let r = shard_rec(other_host.clone(), 10_000);
        let gone = |_| None;
        assert_eq!(
            verdict(Some(&r), &me, 9_000, 2_000, gone),
            Verdict::Held { until_ms: 12_000 }
        );
        assert_eq!(
            verdict(Some(&r), &me, 12_000, 2_000, gone),
            Verdict::LeaseExpired
        );
        assert_eq!(verdict(None, &me, 0, 2_000, gone), Verdict::Free);
        let mine = shard_rec(me.clone(), 0);
        assert_eq!(verdict(Some(&mine), &me, 1, 0, gone), Verdict::Free);
        // A frozen process on this host (alive) is not dead: its lease decides.
        let frozen = shard_rec(id("h1", "b1", 90, 4000), 10_000);
        assert_eq!(
            verdict(Some(&frozen), &me, 9_000, 0, |_| Some(4000)),
            Verdict::Held { until_ms: 10_000 }
        );
        assert_eq!(
            verdict(Some(&frozen), &me, 9_000, 0, gone),
            Verdict::OwnerDead
        );
        assert!(!Verdict::Held { until_ms: 1 }.may_take());
        assert!(Verdict::LeaseExpired.may_take());
    }

    #[test]
    fn a_profile_owner_leases_through_its_shard_record_while_it_names_it() {
        let me = id("h1", "b1", 100, 5000);
        let a = id("h2", "b2", 90, 4000);
        let p = ProfileRecord {
            owner: a.clone(),
            shard: 3,
            written_ms: 0,
        };
        let gone = |_| None;
        let held = shard_rec(a.clone(), 10_000);
        assert_eq!(
            profile_verdict(Some(&p), Some(&held), &me, 5_000, 1_000, gone),
            Verdict::Held { until_ms: 11_000 }
        );
        assert_eq!(
            profile_verdict(Some(&p), Some(&held), &me, 11_000, 1_000, gone),
            Verdict::LeaseExpired
        );
        // The shard record names a successor (or is gone): the owner's lease ran out.
        let succ = shard_rec(id("h3", "b3", 1, 1), u64::MAX / 2);
        assert_eq!(
            profile_verdict(Some(&p), Some(&succ), &me, 5_000, 1_000, gone),
            Verdict::LeaseExpired
        );
        assert_eq!(
            profile_verdict(Some(&p), None, &me, 5_000, 1_000, gone),
            Verdict::LeaseExpired
        );
        assert_eq!(
            profile_verdict(None, Some(&held), &me, 5_000, 1_000, gone),
            Verdict::Free
        );
        let mine = ProfileRecord {
            owner: me.clone(),
            shard: 3,
            written_ms: 0,
        };
        assert_eq!(
            profile_verdict(Some(&mine), Some(&held), &me, 0, 0, gone),
            Verdict::Free
        );
    }

    #[test]
    fn only_one_process_lock_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = process_lock_path(dir.path(), 2);
        let held = try_process_lock(&path).unwrap().expect("first holder");
        // A second open file description (another process, as far as flock is concerned).
        assert!(try_process_lock(&path).unwrap().is_none());
        drop(held);
        assert!(try_process_lock(&path).unwrap().is_some());
    }

    #[test]
    fn records_round_trip_and_are_removed_only_by_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = shard_record_path(dir.path(), 3);
        assert_eq!(read::<ShardRecord>(&path).unwrap(), None);
        let me = Identity::current().unwrap();
        let r = shard_rec(me.clone(), 42);
        write(&path, &r).unwrap();
        assert_eq!(read::<ShardRecord>(&path).unwrap(), Some(r));
        let other = id("elsewhere", "b", 1, 1);
        remove_if_mine::<ShardRecord>(&path, &other, |r| &r.owner);
        assert!(path.exists());
        remove_if_mine::<ShardRecord>(&path, &me, |r| &r.owner);
        assert!(!path.exists());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            read::<ShardRecord>(&path),
            Err(OwnerError::Corrupt { .. })
        ));
    }
}
