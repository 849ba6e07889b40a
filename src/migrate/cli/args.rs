//! The commands' arguments (clap) and the per-row report, apart from the loop that runs them
//! (`cli.rs`).

use std::path::PathBuf;

use serde::Serialize;

use super::*;

/// Where the profiles go (or come from): a live fleet or a data directory.
#[derive(Debug, Clone, clap::Args)]
pub struct Destination {
    /// The router's base URL (a live fleet), e.g. http://127.0.0.1:8080.
    #[arg(
        long,
        env = "WAFLEET_ROUTER",
        conflicts_with = "data",
        required_unless_present = "data"
    )]
    pub router: Option<String>,
    /// A stopped shard's data directory (offline; no worker may run on it).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Bearer token: the admin token or the workspace's token (default: WAFLEET_ADMIN_TOKEN,
    /// then the file named by WAFLEET_ADMIN_TOKEN_FILE).
    #[arg(long, env = "WAFLEET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `wafleet import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// What to import.
    #[command(subcommand)]
    pub command: ImportCommand,
}

/// The `wafleet import` sources.
#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// whatsapp-web.js LocalAuth sessions (`<dataPath>/session-<clientId>/`), by a CSV map.
    Wwebjs(WwebjsArgs),
    /// One session from a tar made by `wafleet export`.
    Tar(TarArgs),
}

/// Arguments of `wafleet import wwebjs`.
#[derive(Debug, clap::Args)]
pub struct WwebjsArgs {
    /// LocalAuth's dataPath (default `.wwebjs_auth`): holds `session-<clientId>/` directories.
    #[arg(long)]
    pub from: PathBuf,
    /// CSV `clientId,workspace,session`, header line optional.
    #[arg(long)]
    pub map: PathBuf,
    /// Say what would happen per row; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// After each upload, wait up to this many seconds for WORKING (0: do not wait). A
    /// session that asks for a QR instead fails the row.
    #[arg(long, default_value_t = 0)]
    pub wait_secs: u64,
    /// Destination and output.
    #[command(flatten)]
    pub dest: Destination,
}

/// Arguments of `wafleet import tar`.
#[derive(Debug, clap::Args)]
pub struct TarArgs {
    /// The tar file.
    #[arg(long)]
    pub file: PathBuf,
    /// Target workspace.
    #[arg(long)]
    pub workspace: WorkspaceId,
    /// Target session.
    #[arg(long)]
    pub session: SessionId,
    /// Destination and output.
    #[command(flatten)]
    pub dest: Destination,
}

/// Arguments of `wafleet export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Workspace.
    #[arg(long)]
    pub workspace: WorkspaceId,
    /// Session.
    #[arg(long)]
    pub session: SessionId,
    /// Where to write the tar (written as `<out>.partial`, renamed when verified).
    #[arg(long)]
    pub out: PathBuf,
    /// Stop the session first if it runs (an export needs a closed browser), and start it
    /// again afterwards unless --keep-stopped.
    #[arg(long)]
    pub stop: bool,
    /// With --stop: leave the session stopped (a rollback: the profile moves elsewhere).
    #[arg(long, requires = "stop")]
    pub keep_stopped: bool,
    /// Source and output.
    #[command(flatten)]
    pub dest: Destination,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RowReport {
    /// Map file line (0 for `import tar`).
    pub line: usize,
    /// whatsapp-web.js client id (empty for a tar).
    pub client_id: String,
    /// Target workspace.
    pub workspace: WorkspaceId,
    /// Target session.
    pub session: SessionId,
    /// What happened (in a dry run: what would happen).
    pub result: Outcome,
    /// Files sent (or to send).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Bytes sent (or to send).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The owning shard, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u64>,
    /// The session's status after the import, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why (skips, conflicts, failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl RowReport {
    pub(super) fn text(&self) -> String {
        let mut s = if self.client_id.is_empty() {
            format!("{}/{}: ", self.workspace, self.session)
        } else {
            format!(
                "line {} {} -> {}/{}: ",
                self.line, self.client_id, self.workspace, self.session
            )
        };
        s.push_str(if self.dry_run {
            match self.result {
                Outcome::Imported => "would import",
                Outcome::Skipped => "would skip",
                Outcome::Conflict => "conflict",
                Outcome::Failed => "would fail",
            }
        } else {
            self.result.as_str()
        });
        let mut details = Vec::new();
        if let (Some(f), Some(b)) = (self.files, self.bytes) {
            details.push(format!("{f} files, {}", human(b)));
        }
        if let Some(k) = self.shard {
            details.push(format!("shard {k}"));
        }
        if let Some(st) = &self.status {
            details.push(st.clone());
        }
        if !details.is_empty() {
            s.push_str(&format!(" ({})", details.join(", ")));
        }
        if let Some(m) = &self.message {
            s.push_str(&format!(": {m}"));
        }
        s
    }
}

/// `1536` → `1.5 KiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}
