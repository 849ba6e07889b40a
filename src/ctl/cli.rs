//! Arguments and entry points of `wafleet shards …`, `wafleet route` and `wafleet token`.
//!
//! Every change to the shard map is a read, an edit of the pure [`ShardMap`] (which bumps
//! `version` and validates), and a CAS write naming the ModifyIndex that was read, so two
//! operators can never overwrite each other silently. Each change prints the movement plan
//! over the workspaces the command can see: the keys under `<prefix>/locks/workspaces/` and
//! any `--workspaces-from FILE` (one id per line).

use std::path::PathBuf;

use serde_json::json;

use crate::auth::Authority;
use crate::consul::{Client, ConsulError, PutOptions, QueryOptions, SrvResolver};
use crate::ids::WorkspaceId;
use crate::shard::{Edit, MapError, Move, ShardMap};

/// Errors of the operator commands.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Token configuration is missing or wrong.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A token cannot be minted without a secret.
    #[error("WAFLEET_TOKEN_SECRET is not set; workspace tokens are minted from it")]
    NoSecret,
    /// Talking to Consul failed.
    #[error(transparent)]
    Consul(#[from] ConsulError),
    /// The resulting (or stored) map is invalid; nothing was written.
    #[error("refusing an invalid shard map: {0}")]
    Map(#[from] MapError),
    /// No map has been initialised.
    #[error("no shard map at {0}; run `wafleet shards init --count N` first")]
    NoMap(String),
    /// `init` without `--force` over an existing map.
    #[error("a shard map already exists at {key} (version {version}); use --force to replace it")]
    Exists {
        /// The key.
        key: String,
        /// The stored version.
        version: u64,
    },
    /// Someone else wrote the map between our read and our write.
    #[error(
        "CAS conflict: the shard map at {key} changed since it was read (read version {version}); nothing was written, run the command again"
    )]
    CasConflict {
        /// The key.
        key: String,
        /// The version that was read.
        version: u64,
    },
    /// `plan`/`apply` without any change requested.
    #[error("nothing to change: give --count, --drain, --undrain or --weight")]
    NoEdits,
    /// A flag value is malformed.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Options shared by every `wafleet shards` and `wafleet route` command.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The Consul KV prefix (keys `<prefix>/shardmap`, `<prefix>/locks/…`).
    #[arg(long, global = true, default_value = "wafleet")]
    pub kv_prefix: String,
}

/// Arguments of `wafleet shards`.
#[derive(Debug, clap::Args)]
pub struct ShardsArgs {
    /// Output and key options.
    #[command(flatten)]
    pub common: Common,
    /// What to do.
    #[command(subcommand)]
    pub command: ShardsCommand,
}

/// The `wafleet shards` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ShardsCommand {
    /// Create the map with N uniform shards (CAS create: refuses when one exists).
    Init {
        /// Number of shards (ids 0..N).
        #[arg(long)]
        count: u32,
        /// Replace an existing map (still a CAS write, version bumped).
        #[arg(long)]
        force: bool,
    },
    /// Print the stored map.
    Show,
    /// Print what a change would move, without writing.
    Plan(EditArgs),
    /// Write a change (CAS on the map that was read) and print what moves.
    Apply(EditArgs),
    /// Pin a workspace to a shard.
    Pin {
        /// The workspace.
        workspace: WorkspaceId,
        /// The shard.
        shard: u32,
        /// Extra workspaces to include in the plan (one id per line).
        #[arg(long)]
        workspaces_from: Option<PathBuf>,
    },
    /// Remove a workspace's pin.
    Unpin {
        /// The workspace.
        workspace: WorkspaceId,
        /// Extra workspaces to include in the plan (one id per line).
        #[arg(long)]
        workspaces_from: Option<PathBuf>,
    },
}

/// The changes `plan` and `apply` accept (several may be combined).
#[derive(Debug, Clone, clap::Args)]
pub struct EditArgs {
    /// Make the shards exactly 0..N (existing weights kept).
    #[arg(long)]
    pub count: Option<u32>,
    /// Drain shard K (repeatable).
    #[arg(long = "drain", value_name = "K")]
    pub drain: Vec<u32>,
    /// Undrain shard K (repeatable).
    #[arg(long = "undrain", value_name = "K")]
    pub undrain: Vec<u32>,
    /// Set the weight of shard K: `K=W` (repeatable).
    #[arg(long = "weight", value_name = "K=W")]
    pub weight: Vec<String>,
    /// Extra workspaces to include in the plan (one id per line).
    #[arg(long)]
    pub workspaces_from: Option<PathBuf>,
}

impl EditArgs {
    /// The edits in a fixed order: count, weights, undrain, drain.
    pub fn edits(&self) -> Result<Vec<Edit>, CtlError> {
        let mut edits = Vec::new();
        if let Some(n) = self.count {
            edits.push(Edit::Count(n));
        }
        for w in &self.weight {
            edits.push(parse_weight(w)?);
        }
        edits.extend(self.undrain.iter().map(|k| Edit::Undrain(*k)));
        edits.extend(self.drain.iter().map(|k| Edit::Drain(*k)));
        if edits.is_empty() {
            return Err(CtlError::NoEdits);
        }
        Ok(edits)
    }
}

/// Parses `K=W`.
pub fn parse_weight(s: &str) -> Result<Edit, CtlError> {
    let bad = || CtlError::Usage(format!("--weight {s}: expected K=W, e.g. 3=2.0"));
    let (k, w) = s.split_once('=').ok_or_else(bad)?;
    let k: u32 = k.trim().parse().map_err(|_| bad())?;
    let w: f64 = w.trim().parse().map_err(|_| bad())?;
    Ok(Edit::Weight(k, w))
}

/// The shard map's key under `prefix`.
pub(crate) fn map_key(prefix: &str) -> String {
    format!("{}/shardmap", prefix.trim_end_matches('/'))
}

fn consul() -> Result<Client, CtlError> {
    Ok(Client::new(&crate::consul::Config::from_env()?)?)
}

/// Reads `key` without blocking: the entry's value and ModifyIndex, `None` when absent.
async fn get(http: &Client, key: &str) -> Result<Option<(Vec<u8>, u64)>, CtlError> {
    let (pair, _) = http.kv_get(key, &QueryOptions::default()).await?;
    Ok(pair.map(|p| (p.value.unwrap_or_default(), p.modify_index)))
}

/// `PUT ?cas=<index>` (0: only if absent); whether it was written.
async fn put_cas(http: &Client, key: &str, value: &[u8], cas: u64) -> Result<bool, CtlError> {
    let opts = PutOptions {
        cas: Some(cas),
        ..PutOptions::default()
    };
    Ok(http.kv_put(key, value, &opts).await?)
}

/// Reads the stored map and its ModifyIndex; `None` when absent. A stored map that fails
/// validation is an error (the operator must fix it with `init --force`).
pub async fn read_map(http: &Client, prefix: &str) -> Result<Option<(ShardMap, u64)>, CtlError> {
    match get(http, &map_key(prefix)).await? {
        None => Ok(None),
        Some((value, index)) => Ok(Some((ShardMap::from_json(&value)?, index))),
    }
}

/// Writes `new` over `old` (read with ModifyIndex `modify_index`) with a CAS write; a map
/// that fails validation or a concurrent write is refused and nothing is written.
pub async fn write_map(
    http: &Client,
    prefix: &str,
    old: &ShardMap,
    modify_index: u64,
    new: &ShardMap,
) -> Result<(), CtlError> {
    new.validate()?;
    let key = map_key(prefix);
    if put_cas(http, &key, &new.to_json(), modify_index).await? {
        Ok(())
    } else {
        Err(CtlError::CasConflict {
            key,
            version: old.version,
        })
    }
}

/// The workspaces a plan considers: lock keys under `<prefix>/locks/workspaces/` plus a file.
pub async fn visible_workspaces(
    http: &Client,
    prefix: &str,
    file: Option<&PathBuf>,
) -> Result<Vec<WorkspaceId>, CtlError> {
    let lock_prefix = format!("{}/locks/workspaces/", prefix.trim_end_matches('/'));
    let (keys, _) = http
        .kv_keys(&lock_prefix, None, &QueryOptions::default())
        .await?;
    let mut out: Vec<WorkspaceId> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&lock_prefix))
        .filter_map(|ws| WorkspaceId::new(ws).ok())
        .collect();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| CtlError::Io {
            path: path.clone(),
            source,
        })?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match WorkspaceId::new(line) {
                Ok(ws) => out.push(ws),
                Err(e) => tracing::warn!(line, error = %e, "skipping an invalid workspace id"),
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The JSON report of a change (also the source of the text form).
pub fn change_report(
    old: &ShardMap,
    new: &ShardMap,
    moves: &[Move],
    considered: usize,
    applied: bool,
) -> serde_json::Value {
    json!({
        "applied": applied,
        "old_version": old.version,
        "new_version": new.version,
        "map": new,
        "workspaces_considered": considered,
        "moves": moves,
    })
}

fn print_map(map: &ShardMap, as_json: bool) {
    if as_json {
        println!("{}", json!({"map": map}));
        return;
    }
    println!("shard map version {}", map.version);
    for s in &map.shards {
        let drain = if map.is_draining(s.id) {
            "  draining"
        } else {
            ""
        };
        println!("  shard {:>4}  weight {}{drain}", s.id, s.weight);
    }
    if !map.pins.is_empty() {
        println!("pins:");
        for (ws, k) in &map.pins {
            println!("  {ws} -> shard {k}");
        }
    }
}

fn print_change(report: &serde_json::Value, old: &ShardMap, new: &ShardMap, moves: &[Move]) {
    let applied = report["applied"].as_bool().unwrap_or(false);
    let considered = report["workspaces_considered"].as_u64().unwrap_or(0);
    println!(
        "shard map version {} -> {}{}",
        old.version,
        new.version,
        if applied {
            " (applied)"
        } else {
            " (plan only, nothing written)"
        }
    );
    print_map(new, false);
    println!("{} of {} known workspaces move", moves.len(), considered);
    let fmt = |s: Option<u32>| s.map_or_else(|| "-".to_string(), |k| k.to_string());
    for m in moves {
        println!("  {}  {} -> {}", m.workspace, fmt(m.from), fmt(m.to));
    }
}

async fn change(
    common: &Common,
    edits: &[Edit],
    file: Option<&PathBuf>,
    extra: Option<&WorkspaceId>,
    write: bool,
) -> Result<(), CtlError> {
    let http = consul()?;
    let extra: Vec<WorkspaceId> = extra.into_iter().cloned().collect();
    let change = super::change::prepare(&http, &common.kv_prefix, edits, file, &extra).await?;
    if write {
        change.commit(&http, &common.kv_prefix).await?;
    }
    let report = change.report(write);
    if common.json {
        println!("{report}");
    } else {
        print_change(&report, &change.old, &change.new, &change.moves);
    }
    Ok(())
}

/// Runs `wafleet shards …`.
pub async fn shards(args: ShardsArgs) -> Result<(), CtlError> {
    let common = &args.common;
    match &args.command {
        ShardsCommand::Init { count, force } => {
            let http = consul()?;
            let key = map_key(&common.kv_prefix);
            let mut map = ShardMap::uniform(*count);
            map.validate()?;
            let (cas, old) = match read_map_lenient(&http, &key).await? {
                None => (0, None),
                Some((version, idx)) if *force => (idx, Some(version)),
                Some((version, _)) => return Err(CtlError::Exists { key, version }),
            };
            if let Some(v) = old {
                // `version` increases on every write, also across a forced re-init.
                map.version = v.saturating_add(1);
            }
            if !put_cas(&http, &key, &map.to_json(), cas).await? {
                return Err(CtlError::CasConflict {
                    key,
                    version: old.unwrap_or(0),
                });
            }
            if common.json {
                println!("{}", json!({"created": true, "map": map}));
            } else {
                println!("created the shard map at {key}");
                print_map(&map, false);
            }
            Ok(())
        }
        ShardsCommand::Show => {
            let http = consul()?;
            let (map, _) = read_map(&http, &common.kv_prefix)
                .await?
                .ok_or_else(|| CtlError::NoMap(map_key(&common.kv_prefix)))?;
            print_map(&map, common.json);
            Ok(())
        }
        ShardsCommand::Plan(e) => {
            change(common, &e.edits()?, e.workspaces_from.as_ref(), None, false).await
        }
        ShardsCommand::Apply(e) => {
            change(common, &e.edits()?, e.workspaces_from.as_ref(), None, true).await
        }
        ShardsCommand::Pin {
            workspace,
            shard,
            workspaces_from,
        } => {
            change(
                common,
                &[Edit::Pin(workspace.clone(), *shard)],
                workspaces_from.as_ref(),
                Some(workspace),
                true,
            )
            .await
        }
        ShardsCommand::Unpin {
            workspace,
            workspaces_from,
        } => {
            change(
                common,
                &[Edit::Unpin(workspace.clone())],
                workspaces_from.as_ref(),
                Some(workspace),
                true,
            )
            .await
        }
    }
}

/// Reads only the version and ModifyIndex of whatever is stored, valid or not, so that
/// `init --force` can replace a corrupt map.
async fn read_map_lenient(http: &Client, key: &str) -> Result<Option<(u64, u64)>, CtlError> {
    Ok(get(http, key).await?.map(|(value, index)| {
        let version = serde_json::from_slice::<serde_json::Value>(&value)
            .ok()
            .and_then(|v| v["version"].as_u64())
            .unwrap_or(0);
        (version, index)
    }))
}

/// Arguments of `wafleet route`.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Output and key options.
    #[command(flatten)]
    pub common: Common,
}

/// Runs `wafleet route <ws>`: its shard, the shard's instances (DNS) and the map version.
pub async fn route(args: RouteArgs) -> Result<(), CtlError> {
    let http = consul()?;
    let (map, _) = read_map(&http, &args.common.kv_prefix)
        .await?
        .ok_or_else(|| CtlError::NoMap(map_key(&args.common.kv_prefix)))?;
    // A validated map always has an owner for every workspace.
    let shard = map
        .owner(&args.workspace)
        .ok_or(CtlError::Map(MapError::AllDraining))?;
    let resolver = SrvResolver::from_lookup(|k| std::env::var(k).ok())?;
    let mut instances = resolver.resolve_shard(shard).await?;
    instances.sort();
    let pinned = map.pins.contains_key(&args.workspace);
    if args.common.json {
        println!(
            "{}",
            json!({"workspace": args.workspace, "shard": shard, "pinned": pinned,
                   "version": map.version, "instances": instances})
        );
    } else {
        let at = if instances.is_empty() {
            "no healthy instance".to_string()
        } else {
            instances
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{} -> shard {shard}{} at {at} (map version {})",
            args.workspace,
            if pinned { " (pinned)" } else { "" },
            map.version
        );
    }
    Ok(())
}

/// Arguments of `wafleet token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The workspace the token is for.
    pub workspace: WorkspaceId,
    /// Print `{"workspace","token"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `wafleet token <ws>`: prints a workspace token minted from `WAFLEET_TOKEN_SECRET`.
pub async fn token(args: TokenArgs) -> Result<(), CtlError> {
    let authority = Authority::from_env()?;
    let token = authority.mint(&args.workspace).ok_or(CtlError::NoSecret)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"workspace": args.workspace, "token": token})
        );
    } else {
        println!("{token}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse() {
        assert_eq!(parse_weight("3=2.5").unwrap(), Edit::Weight(3, 2.5));
        for bad in ["3", "x=1", "3=y", "=1"] {
            assert!(parse_weight(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn edits_need_at_least_one_change() {
        let e = EditArgs {
            count: None,
            drain: vec![],
            undrain: vec![],
            weight: vec![],
            workspaces_from: None,
        };
        assert!(matches!(e.edits(), Err(CtlError::NoEdits)));
        let e = EditArgs {
            count: Some(4),
            drain: vec![1],
            undrain: vec![2],
            weight: vec!["0=2".into()],
            ..e
        };
        assert_eq!(
            e.edits().unwrap(),
            vec![
                Edit::Count(4),
                Edit::Weight(0, 2.0),
                Edit::Undrain(2),
                Edit::Drain(1)
            ]
        );
    }
}
