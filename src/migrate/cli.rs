//! `wafleet import wwebjs`, `wafleet import tar` and `wafleet export`: arguments, the per-row
//! loop and the report.
//!
//! Every command works against a live fleet (`--router URL`, the profile travels through the
//! router to the owning worker) or offline against a stopped shard's volume (`--data DIR`, same
//! staging and verification, no network). Rows are independent: a failed row is reported and
//! the next one runs; the exit code is non-zero if any row failed or conflicted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::client::RouterClient;
use super::map::{MapRow, parse_map};
use super::plan::{Action, ImportRecord, Local, Outcome, Summary, Target, decide};
use super::profile::{self, DEFAULT_MAX_PROFILE_BYTES, Listing, UnpackLimits};
use super::tar::{Event, Kind, TarReader};
use super::{BYTES_HEADER, CLIENT_ID_HEADER, FILES_HEADER, MigrateError, SOURCE_HEADER, stage};
use crate::ids::{SessionId, WorkspaceId};
use crate::worker::host::{DesiredState, SessionConfig};

mod args;
pub use args::*;

fn token(dest: &Destination) -> Result<String, MigrateError> {
    if let Some(t) = dest.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(t.to_owned());
    }
    if let Ok(t) = std::env::var(crate::auth::ENV_ADMIN_TOKEN)
        && !t.is_empty()
    {
        return Ok(t);
    }
    if let Ok(path) = std::env::var(crate::auth::ENV_ADMIN_TOKEN_FILE) {
        return std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| {
                MigrateError::Invalid(format!("cannot read admin token file {path}: {e}"))
            });
    }
    Err(MigrateError::Invalid(
        "no token: pass --token or set WAFLEET_TOKEN (or WAFLEET_ADMIN_TOKEN)".into(),
    ))
}

/// A live fleet or a data directory, ready to use.
enum Dest {
    Router(RouterClient),
    Data(PathBuf),
}

fn dest(d: &Destination) -> Result<Dest, MigrateError> {
    match (&d.router, &d.data) {
        (Some(url), None) => Ok(Dest::Router(RouterClient::new(url, &token(d)?)?)),
        (None, Some(dir)) => {
            if !dir.is_dir() {
                return Err(MigrateError::Invalid(format!(
                    "--data {}: not a directory",
                    dir.display()
                )));
            }
            Ok(Dest::Data(dir.clone()))
        }
        _ => Err(MigrateError::Invalid(
            "give exactly one of --router and --data".into(),
        )),
    }
}

/// What the source profile looks like (a whatsapp-web.js LocalAuth directory).
fn local_facts(dir: &Path) -> (Local, Option<Listing>) {
    if !dir.is_dir() {
        return (
            Local::Unusable(format!("no profile directory {}", dir.display())),
            None,
        );
    }
    match crate::backup::holder(dir, &crate::backup::local_hostname()) {
        crate::backup::Holder::Nobody => {}
        h => {
            return (
                Local::Unusable(format!(
                    "{} is in use by {h}; stop the whatsapp-web.js client first",
                    dir.display()
                )),
                None,
            );
        }
    }
    match profile::list_profile(dir) {
        Ok(l) => (
            Local::Ready {
                files: l.files,
                bytes: l.bytes,
            },
            Some(l),
        ),
        Err(e) => (Local::Unusable(e.to_string()), None),
    }
}

/// What the target looks like: through the router, or on disk.
async fn target_facts(dest: &Dest, ws: &WorkspaceId, s: &SessionId) -> Target {
    match dest {
        Dest::Router(c) => match c.session(ws, s).await {
            Ok(None) => Target::Absent,
            Ok(Some(v)) => Target::Exists {
                metadata: v["metadata"].clone(),
                status: v["status"].as_str().unwrap_or("?").to_owned(),
            },
            Err(e) => Target::Unknown(e.to_string()),
        },
        Dest::Data(data) => {
            let dir = stage::session_dir(data, ws, s);
            if std::fs::symlink_metadata(&dir).is_err() {
                return Target::Absent;
            }
            let metadata = std::fs::read(dir.join(crate::worker::layout::SESSION_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .map(|v| v["metadata"].clone())
                .unwrap_or(Value::Null);
            Target::Exists {
                metadata,
                status: "on disk".into(),
            }
        }
    }
}

/// Where the profile bytes come from.
#[derive(Clone)]
enum Source {
    Dir(Listing),
    TarFile(PathBuf),
}

impl Source {
    fn stream(
        &self,
    ) -> std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, MigrateError>> + Send>>
    {
        match self {
            Source::Dir(l) => Box::pin(profile::tar_stream(l.clone())),
            Source::TarFile(p) => Box::pin(profile::file_stream(p.clone())),
        }
    }
}

/// Sends one profile; answers the outcome, the status and a message.
async fn send(
    dest: &Dest,
    ws: &WorkspaceId,
    s: &SessionId,
    source: &Source,
    record: &ImportRecord,
) -> (Outcome, Option<String>, Option<String>) {
    match dest {
        Dest::Router(c) => {
            let headers = [
                (FILES_HEADER, record.files.to_string()),
                (BYTES_HEADER, record.bytes.to_string()),
                (SOURCE_HEADER, record.source.clone()),
                (CLIENT_ID_HEADER, record.client_id.clone()),
            ];
            let headers: Vec<_> = headers.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            let body = || reqwest::Body::wrap_stream(source.stream());
            match c.put_profile(ws, s, &headers, body).await {
                Ok(Ok(v)) => (
                    Outcome::Imported,
                    v["status"].as_str().map(str::to_owned),
                    None,
                ),
                Ok(Err(r)) if r.status == 409 && r.code == "session_exists" => {
                    (Outcome::Conflict, None, Some(r.to_string()))
                }
                Ok(Err(r)) => (Outcome::Failed, None, Some(r.to_string())),
                Err(e) => (Outcome::Failed, None, Some(e.to_string())),
            }
        }
        Dest::Data(data) => {
            let limits = UnpackLimits {
                max_bytes: u64::MAX,
                ..UnpackLimits::default()
            };
            let staged = match stage::stage(
                data,
                ws,
                s,
                source.stream(),
                limits,
                record.files,
                record.bytes,
            )
            .await
            {
                Ok(st) => st,
                Err(MigrateError::Exists(m)) => return (Outcome::Conflict, None, Some(m)),
                Err(e) => return (Outcome::Failed, None, Some(e.to_string())),
            };
            let mut metadata = std::collections::BTreeMap::new();
            metadata.insert(
                super::plan::IMPORT_METADATA_KEY.to_owned(),
                serde_json::to_value(record).unwrap_or_default(),
            );
            let config = SessionConfig {
                session: s.clone(),
                webhook: None,
                webhooks: Vec::new(),
                metadata,
                pacing: None,
                desired: DesiredState::Running,
                created_at_ms: record.at_ms,
                reject_calls: false,
                media_download: Default::default(),
            };
            match staged.commit(&config).await {
                Ok(_) => (Outcome::Imported, Some("on disk".into()), None),
                Err(MigrateError::Exists(m)) => (Outcome::Conflict, None, Some(m)),
                Err(e) => (Outcome::Failed, None, Some(e.to_string())),
            }
        }
    }
}

/// Waits for WORKING after an upload (`--wait-secs`).
async fn wait_working(
    c: &RouterClient,
    ws: &WorkspaceId,
    s: &SessionId,
    secs: u64,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let status = match c.session(ws, s).await {
            Ok(Some(v)) => v["status"].as_str().unwrap_or_default().to_owned(),
            Ok(None) => return Err("the session disappeared".into()),
            Err(e) => return Err(e.to_string()),
        };
        match status.as_str() {
            "WORKING" => return Ok(status),
            "SCAN_QR_CODE" => {
                return Err("the session asks for a QR: the profile did not log in".into());
            }
            "FAILED" => return Err("the session FAILED (see its last_error)".into()),
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("not WORKING within {secs} s (status {status})"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One row from facts to report.
#[allow(clippy::too_many_arguments)]
async fn run_row(
    dest: &Dest,
    row: &MapRow,
    source_name: &str,
    local: Local,
    source: Option<Source>,
    dry_run: bool,
    wait_secs: u64,
) -> RowReport {
    let (ws, s) = (&row.workspace, &row.session);
    let target = target_facts(dest, ws, s).await;
    let cap = match dest {
        Dest::Router(_) => DEFAULT_MAX_PROFILE_BYTES,
        Dest::Data(_) => 0,
    };
    let shard = match dest {
        Dest::Router(c) if dry_run => c.route(ws).await.ok().flatten(),
        _ => None,
    };
    let mut report = RowReport {
        line: row.line,
        client_id: row.client_id.clone(),
        workspace: ws.clone(),
        session: s.clone(),
        result: Outcome::Failed,
        files: None,
        bytes: None,
        shard,
        status: None,
        message: None,
        dry_run,
    };
    if let Local::Ready { files, bytes } = local {
        report.files = Some(files);
        report.bytes = Some(bytes);
    }
    match decide(source_name, &row.client_id, &local, &target, cap) {
        Action::Skip(m) => {
            report.result = Outcome::Skipped;
            report.message = Some(m);
        }
        Action::Conflict(m) => {
            report.result = Outcome::Conflict;
            report.message = Some(m);
        }
        Action::Fail(m) => report.message = Some(m),
        Action::Import { .. } if dry_run => report.result = Outcome::Imported,
        Action::Import { files, bytes } => {
            let Some(source) = source else {
                report.message = Some("no source".into());
                return report;
            };
            let record = ImportRecord {
                source: source_name.to_owned(),
                client_id: row.client_id.clone(),
                files,
                bytes,
                at_ms: crate::worker::layout::now_ms(),
            };
            let (outcome, status, message) = send(dest, ws, s, &source, &record).await;
            report.result = outcome;
            report.status = status;
            report.message = message;
            if outcome == Outcome::Imported
                && wait_secs > 0
                && let Dest::Router(c) = dest
            {
                match wait_working(c, ws, s, wait_secs).await {
                    Ok(st) => report.status = Some(st),
                    Err(m) => {
                        report.result = Outcome::Failed;
                        report.message = Some(format!("imported, but {m}"));
                    }
                }
            }
        }
    }
    report
}

fn print_row(r: &RowReport, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    } else {
        println!("{}", r.text());
    }
}

fn finish(summary: Summary, dry_run: bool, as_json: bool) -> Result<(), MigrateError> {
    if as_json {
        println!("{}", json!({"summary": summary, "dry_run": dry_run}));
    } else {
        println!(
            "{}{} imported, {} skipped, {} conflict, {} failed",
            if dry_run { "dry run: " } else { "" },
            summary.imported,
            summary.skipped,
            summary.conflict,
            summary.failed
        );
    }
    if summary.ok() {
        Ok(())
    } else {
        Err(MigrateError::Failed(format!(
            "{} row(s) failed, {} in conflict",
            summary.failed, summary.conflict
        )))
    }
}

/// Runs `wafleet import …`.
pub async fn import(args: ImportArgs) -> Result<(), MigrateError> {
    match args.command {
        ImportCommand::Wwebjs(a) => import_wwebjs(a).await,
        ImportCommand::Tar(a) => import_tar(a).await,
    }
}

async fn import_wwebjs(args: WwebjsArgs) -> Result<(), MigrateError> {
    let text = std::fs::read_to_string(&args.map).map_err(|e| MigrateError::Io {
        op: "read",
        path: args.map.clone(),
        source: e,
    })?;
    let rows = parse_map(&text).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        MigrateError::Invalid(format!(
            "{}: {} bad line(s), nothing imported:\n  {}",
            args.map.display(),
            errs.len(),
            lines.join("\n  ")
        ))
    })?;
    let dest = dest(&args.dest)?;
    let mut summary = Summary::default();
    for row in &rows {
        let dir = args.from.join(format!("session-{}", row.client_id));
        let (local, listing) = tokio::task::spawn_blocking(move || local_facts(&dir))
            .await
            .unwrap_or_else(|e| (Local::Unusable(e.to_string()), None));
        let report = run_row(
            &dest,
            row,
            "wwebjs",
            local,
            listing.map(Source::Dir),
            args.dry_run,
            args.wait_secs,
        )
        .await;
        summary.add(report.result);
        print_row(&report, args.dest.json);
    }
    finish(summary, args.dry_run, args.dest.json)
}

async fn import_tar(args: TarArgs) -> Result<(), MigrateError> {
    let dest = dest(&args.dest)?;
    let file = args.file.clone();
    let local = match tokio::task::spawn_blocking(move || profile::scan_tar(&file)).await {
        Ok(Ok(got)) => Local::Ready {
            files: got.files,
            bytes: got.bytes,
        },
        Ok(Err(e)) => Local::Unusable(format!("{}: {e}", args.file.display())),
        Err(e) => Local::Unusable(e.to_string()),
    };
    let row = MapRow {
        line: 0,
        client_id: String::new(),
        workspace: args.workspace.clone(),
        session: args.session.clone(),
    };
    let report = run_row(
        &dest,
        &row,
        "tar",
        local,
        Some(Source::TarFile(args.file.clone())),
        false,
        0,
    )
    .await;
    let mut summary = Summary::default();
    summary.add(report.result);
    print_row(&report, args.dest.json);
    finish(summary, false, args.dest.json)
}

/// Writes a tar stream to `out` through `<out>.partial`, checking it as it goes (a complete
/// archive, only accepted entries) and against the announced totals; renamed when good.
async fn write_verified<S>(
    mut stream: S,
    out: &Path,
    files: Option<u64>,
    bytes: Option<u64>,
) -> Result<profile::Unpacked, MigrateError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, MigrateError>> + Unpin,
{
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let io = |op, e| MigrateError::Io {
        op,
        path: partial.clone(),
        source: e,
    };
    let result = async {
        let mut f = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| io("create", e))?;
        let mut reader = TarReader::new();
        let mut got = profile::Unpacked::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            f.write_all(&chunk).await.map_err(|e| io("write", e))?;
            for ev in reader.feed(chunk)? {
                if let Event::Entry {
                    kind: Kind::File { size },
                    ..
                } = ev
                {
                    got.files += 1;
                    got.bytes += size;
                }
            }
        }
        reader.finish()?;
        if let (Some(fl), Some(b)) = (files, bytes) {
            profile::verify(got, fl, b)?;
        }
        f.sync_all().await.map_err(|e| io("fsync", e))?;
        tokio::fs::rename(&partial, out)
            .await
            .map_err(|e| io("rename", e))?;
        Ok(got)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// Runs `wafleet export`.
pub async fn export(args: ExportArgs) -> Result<(), MigrateError> {
    let dest = dest(&args.dest)?;
    let (ws, s) = (&args.workspace, &args.session);
    let got = match &dest {
        Dest::Data(data) => {
            let dir = stage::session_dir(data, ws, s).join(crate::worker::engine_host::PROFILE_DIR);
            let d = dir.clone();
            let listing = tokio::task::spawn_blocking(move || {
                match crate::backup::holder(&d, &crate::backup::local_hostname()) {
                    crate::backup::Holder::Nobody => profile::list_profile(&d),
                    h => Err(MigrateError::InUse {
                        path: d.clone(),
                        holder: h.to_string(),
                    }),
                }
            })
            .await
            .map_err(|e| MigrateError::Invalid(e.to_string()))??;
            let (files, bytes) = (listing.files, listing.bytes);
            write_verified(
                Box::pin(profile::tar_stream(listing)),
                &args.out,
                Some(files),
                Some(bytes),
            )
            .await?
        }
        Dest::Router(c) => {
            let session = c
                .session(ws, s)
                .await?
                .ok_or_else(|| MigrateError::Invalid(format!("no session {ws}/{s}")))?;
            let status = session["status"].as_str().unwrap_or_default().to_owned();
            let running = !matches!(status.as_str(), "STOPPED" | "FAILED");
            let restart = running && args.stop && !args.keep_stopped;
            if running {
                if !args.stop {
                    return Err(MigrateError::Invalid(format!(
                        "session {ws}/{s} is {status}; an export needs it stopped: pass --stop"
                    )));
                }
                c.action(ws, s, "stop").await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let st = c.session(ws, s).await?.unwrap_or_default();
                    if st["status"] == "STOPPED" {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(MigrateError::Failed(format!(
                            "{ws}/{s} did not stop within 60 s (status {})",
                            st["status"]
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            let result = async {
                let resp = match c.get_profile(ws, s).await? {
                    Ok(r) => r,
                    Err(r) => return Err(MigrateError::Http(r.to_string())),
                };
                let (files, bytes) = (
                    header_u64(&resp, FILES_HEADER),
                    header_u64(&resp, BYTES_HEADER),
                );
                let stream = resp
                    .bytes_stream()
                    .map(|r| r.map_err(|e| MigrateError::Http(e.to_string())));
                write_verified(Box::pin(stream), &args.out, files, bytes).await
            }
            .await;
            if restart && let Err(e) = c.action(ws, s, "start").await {
                eprintln!("wafleet: could not start {ws}/{s} again: {e}");
            }
            result?
        }
    };
    let report = json!({
        "workspace": ws, "session": s, "out": args.out.display().to_string(),
        "files": got.files, "bytes": got.bytes,
    });
    if args.dest.json {
        println!("{report}");
    } else {
        println!(
            "exported {ws}/{s} to {} ({} files, {})",
            args.out.display(),
            got.files,
            human(got.bytes)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
