//! `wafleet backup` and `wafleet restore`: argument parsing and the one-line JSON report.
//!
//! The work is blocking filesystem code (`run.rs`), so it runs on tokio's blocking pool.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{BackupError, BackupOptions, local_hostname};
use crate::ids::{SessionId, WorkspaceId};

/// Backups kept by default: two days of hourly runs.
pub const DEFAULT_KEEP: u32 = 48;
/// Copies tried per session before it is reported as skipped.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Pause between two attempts on a profile that was changing.
pub const DEFAULT_RETRY_WAIT_SECS: u64 = 2;

/// Arguments of `wafleet backup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The data directory (`<data>/workspaces/<ws>/<session>/profile`), e.g. the NFS volume.
    #[arg(long)]
    pub data: PathBuf,
    /// Where timestamped backup directories are written (a directory or a mounted bucket).
    #[arg(long)]
    pub dest: PathBuf,
    /// Keep only the newest N completed backups under --dest.
    #[arg(long, default_value_t = DEFAULT_KEEP, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// Copies tried per profile before it is reported as skipped.
    #[arg(long, default_value_t = DEFAULT_ATTEMPTS)]
    pub attempts: u32,
    /// Seconds to wait before retrying a profile that changed during the copy.
    #[arg(long, default_value_t = DEFAULT_RETRY_WAIT_SECS)]
    pub retry_wait_secs: u64,
}

/// Runs `wafleet backup`: prints one JSON report line; fails if any session was skipped.
pub async fn run(args: Args) -> Result<(), BackupError> {
    crate::volume::check(&args.data, None)?;
    let opts = BackupOptions {
        keep: usize::try_from(args.keep).unwrap_or(usize::MAX),
        attempts: args.attempts,
        retry_wait: Duration::from_secs(args.retry_wait_secs),
        hostname: local_hostname(),
        between_passes: None,
    };
    let report = tokio::task::spawn_blocking(move || {
        super::backup(&args.data, &args.dest, &opts, SystemTime::now())
    })
    .await
    .map_err(|e| BackupError::Task(e.to_string()))??;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    if report.skipped.is_empty() {
        Ok(())
    } else {
        Err(BackupError::Incomplete {
            skipped: report.skipped.len(),
            backup: report.backup,
        })
    }
}

/// Arguments of `wafleet restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A backup directory (`…/wafleet-backup-<UTC>`), or the backup root: then the newest backup
    /// holding the session is used.
    #[arg(long)]
    pub backup: PathBuf,
    /// The data directory to restore into.
    #[arg(long)]
    pub data: PathBuf,
    /// Workspace id.
    #[arg(long)]
    pub workspace: WorkspaceId,
    /// Session id.
    #[arg(long)]
    pub session: SessionId,
}

/// Runs `wafleet restore`: prints one JSON report line.
pub async fn restore(args: RestoreArgs) -> Result<(), BackupError> {
    let report = tokio::task::spawn_blocking(move || {
        super::restore(
            &args.backup,
            &args.data,
            &args.workspace,
            &args.session,
            &local_hostname(),
        )
    })
    .await
    .map_err(|e| BackupError::Task(e.to_string()))??;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(())
}
