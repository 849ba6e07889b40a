//! The shared-volume sentinel: proof that a data directory is the fleet's shared volume.
//!
//! Workers keep every session profile under `--data`, which in production is an NFS mount
//! shared by all worker hosts. When the mount fails, the mount point is an empty local
//! directory: a worker started there would find no profiles, create fresh ones (new QR codes
//! for every workspace) and later diverge from the real volume. So the volume carries a
//! sentinel file, `<data>/.wafleet-volume`, written once when the volume is prepared (the
//! Ansible NFS role, or `wafleet volume init --data DIR` for `wafleet dev` and tests); the
//! worker and the backup job refuse to use a directory without it.
//!
//! The sentinel is one small JSON object: `{"kind":"wafleet-volume","id":"<volume id>"}`. The
//! id names the volume (an operator may pin it with `--expect-volume-id` / `WAFLEET_VOLUME_ID`
//! so a worker also refuses a *different* share mounted by mistake).

use std::path::{Path, PathBuf};

use clap::{Args as ClapArgs, Subcommand};
use serde::{Deserialize, Serialize};

/// File name of the sentinel inside the data directory.
pub const SENTINEL: &str = ".wafleet-volume";
/// Value of the sentinel's `kind` field.
pub const KIND: &str = "wafleet-volume";
/// Longest accepted volume id.
pub const MAX_ID_LEN: usize = 64;

/// Why a directory is not (or cannot be made) a wafleet volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No sentinel: most likely the shared volume is not mounted here.
    #[error(
        "{} has no {SENTINEL} sentinel: the shared volume is not mounted there (or was never initialised with `wafleet volume init`)",
        dir.display()
    )]
    Missing {
        /// The data directory.
        dir: PathBuf,
    },
    /// The sentinel exists but is not a valid one.
    #[error("{}: invalid volume sentinel: {reason}", path.display())]
    Invalid {
        /// The sentinel file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The sentinel names another volume than the expected one.
    #[error("{} holds volume {found:?}, expected {expected:?}", dir.display())]
    WrongVolume {
        /// The data directory.
        dir: PathBuf,
        /// Id in the sentinel.
        found: String,
        /// Id asked for.
        expected: String,
    },
    /// A volume id that cannot be used.
    #[error("invalid volume id {0:?}: use 1..=64 characters of [A-Za-z0-9._-]")]
    BadId(String),
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The sentinel's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sentinel {
    /// Always [`KIND`].
    pub kind: String,
    /// The volume id.
    pub id: String,
}

/// Whether `id` is a usable volume id (it appears in logs and metrics labels).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses a sentinel file's bytes (pure).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Sentinel, VolumeError> {
    let invalid = |reason: String| VolumeError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() > 4096 {
        return Err(invalid("larger than 4 KiB".into()));
    }
    let s: Sentinel = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if s.kind != KIND {
        return Err(invalid(format!("kind is {:?}, not {KIND:?}", s.kind)));
    }
    if !valid_id(&s.id) {
        return Err(invalid(format!("unusable id {:?}", s.id)));
    }
    Ok(s)
}

/// Checks that `dir` carries a valid sentinel (with id `expected`, when given) and returns it.
pub fn check(dir: &Path, expected: Option<&str>) -> Result<Sentinel, VolumeError> {
    let path = dir.join(SENTINEL);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VolumeError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        Err(source) => return Err(VolumeError::Io { path, source }),
    };
    let s = parse(&path, &bytes)?;
    if let Some(want) = expected
        && want != s.id
    {
        return Err(VolumeError::WrongVolume {
            dir: dir.to_path_buf(),
            found: s.id,
            expected: want.to_owned(),
        });
    }
    Ok(s)
}

/// Writes the sentinel into `dir` (created if missing). An existing valid sentinel is kept
/// (idempotent; returned as it is) unless it names another id than `id`, which is an error:
/// re-labelling a volume is a decision, not a side effect.
pub fn init(dir: &Path, id: Option<&str>) -> Result<Sentinel, VolumeError> {
    if let Some(id) = id
        && !valid_id(id)
    {
        return Err(VolumeError::BadId(id.to_owned()));
    }
    match check(dir, id) {
        Ok(s) => return Ok(s),
        Err(VolumeError::Missing { .. }) => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir).map_err(|source| VolumeError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let s = Sentinel {
        kind: KIND.to_owned(),
        id: id.map_or_else(random_id, str::to_owned),
    };
    let path = dir.join(SENTINEL);
    let tmp = dir.join(format!("{SENTINEL}.tmp-{}", std::process::id()));
    let body = serde_json::to_vec(&s).unwrap_or_default();
    // Write then rename, so a concurrent reader sees no sentinel or a whole one.
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| VolumeError::Io {
            path: path.clone(),
            source,
        })?;
    Ok(s)
}

fn random_id() -> String {
    format!("vol-{:016x}", rand::random::<u64>())
}

// === CLI ===

/// `wafleet volume …`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: VolumeCommand,
}

#[derive(Debug, Subcommand)]
enum VolumeCommand {
    /// Mark DIR as the fleet's shared volume (writes `<DIR>/.wafleet-volume`; idempotent).
    Init {
        /// The data directory (the shared volume's mount point).
        #[arg(long)]
        data: PathBuf,
        /// The volume id (default: a random one).
        #[arg(long)]
        id: Option<String>,
    },
    /// Check that DIR carries the sentinel; prints its id.
    Check {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Also require this id.
        #[arg(long, env = "WAFLEET_VOLUME_ID")]
        expect_id: Option<String>,
    },
}

/// Runs `wafleet volume`.
pub async fn run(args: Args) -> Result<(), VolumeError> {
    match args.command {
        VolumeCommand::Init { data, id } => {
            let s = init(&data, id.as_deref())?;
            println!(
                "{}",
                serde_json::json!({"data": data.display().to_string(), "id": s.id})
            );
        }
        VolumeCommand::Check { data, expect_id } => {
            let s = check(&data, expect_id.as_deref())?;
            println!(
                "{}",
                serde_json::json!({"data": data.display().to_string(), "id": s.id})
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_check_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert!(matches!(
            check(&data, None),
            Err(VolumeError::Missing { .. })
        ));
        let s = init(&data, Some("nfs-1")).unwrap();
        assert_eq!(s.id, "nfs-1");
        assert_eq!(check(&data, None).unwrap().id, "nfs-1");
        assert_eq!(check(&data, Some("nfs-1")).unwrap().id, "nfs-1");
        assert!(matches!(
            check(&data, Some("nfs-2")),
            Err(VolumeError::WrongVolume { .. })
        ));
        // Idempotent with the same id (or none); a different id is refused.
        assert_eq!(init(&data, None).unwrap().id, "nfs-1");
        assert!(init(&data, Some("nfs-2")).is_err());
        assert!(matches!(
            init(&data, Some("../x")),
            Err(VolumeError::BadId(_))
        ));
        // A corrupt sentinel is refused, not replaced.
        std::fs::write(data.join(SENTINEL), b"{\"kind\":\"other\",\"id\":\"x\"}").unwrap();
        assert!(matches!(
            check(&data, None),
            Err(VolumeError::Invalid { .. })
        ));
        assert!(init(&data, None).is_err());
        std::fs::write(data.join(SENTINEL), b"not json").unwrap();
        assert!(matches!(
            check(&data, None),
            Err(VolumeError::Invalid { .. })
        ));
    }

    #[test]
    fn random_ids_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let s = init(dir.path(), None).unwrap();
        assert!(valid_id(&s.id), "{}", s.id);
    }
}
