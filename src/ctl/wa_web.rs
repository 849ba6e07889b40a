//! `wafleet wa-web …`: show and change the fleet's WhatsApp Web version setting
//! (`<prefix>/wa-web`, [`crate::webver::setting`]).
//!
//! Every change is a read, a pure edit of [`WaWebSetting`] (which keeps the previous selection
//! for `rollback` and bumps `version`) and a CAS write naming the ModifyIndex that was read
//! (`?cas=0` when the key is absent), as `wafleet shards` does, so two operators never
//! overwrite each other silently. Workers apply the setting at each session's next start.

use std::path::PathBuf;

use serde_json::json;

use crate::consul::{Client, ConsulError, PutOptions, QueryOptions};
use crate::webver::setting::parse_shards;
use crate::webver::{CacheError, Choice, SettingError, WaWebSetting, WebCache, setting_key};

/// Errors of `wafleet wa-web`.
#[derive(Debug, thiserror::Error)]
pub enum WaWebError {
    /// Talking to Consul failed.
    #[error(transparent)]
    Consul(#[from] ConsulError),
    /// The choice, the edit or the stored value is invalid; nothing was written.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// The cache could not be read.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Someone else wrote the setting between our read and our write.
    #[error(
        "CAS conflict: the WhatsApp Web setting at {key} changed since it was read (read version {version}); nothing was written, run the command again"
    )]
    CasConflict {
        /// The key.
        key: String,
        /// The version that was read.
        version: u64,
    },
    /// A flag value is malformed.
    #[error("{0}")]
    Usage(String),
}

/// Arguments of `wafleet wa-web`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output and key options.
    #[command(flatten)]
    pub common: super::cli::Common,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which shards a change applies to.
#[derive(Debug, Clone, clap::Args)]
pub struct Shards {
    /// Only these shards (comma-separated ids, e.g. `0,3`): per-shard overrides for a rollout.
    /// Without it the whole fleet, and every override is removed.
    #[arg(long)]
    pub shards: Option<String>,
}

/// The `wafleet wa-web` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the setting, the choice of every shard, and the cached versions with `--data`.
    Show {
        /// The data directory whose cache (`<data>/wa-web/`) to list.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Pin an exact version (served from each worker's cache at the next session start).
    Pin {
        /// The WhatsApp Web version, e.g. `2.3000.1017054950`.
        version: String,
        /// Shards.
        #[command(flatten)]
        shards: Shards,
    },
    /// Load WhatsApp Web live.
    Latest {
        /// Shards.
        #[command(flatten)]
        shards: Shards,
    },
    /// Use the last version a live session proved good.
    LastGood {
        /// Shards.
        #[command(flatten)]
        shards: Shards,
    },
    /// Restore the setting before the last change.
    Rollback,
}

fn consul() -> Result<Client, WaWebError> {
    Ok(Client::new(&crate::consul::Config::from_env()?)?)
}

/// Reads the setting and its ModifyIndex (`None` when the key is absent).
pub async fn read_setting(
    http: &Client,
    prefix: &str,
) -> Result<Option<(WaWebSetting, u64)>, WaWebError> {
    let (pair, _) = http
        .kv_get(&setting_key(prefix), &QueryOptions::default())
        .await?;
    match pair {
        None => Ok(None),
        Some(p) => Ok(Some((
            WaWebSetting::from_json(p.value_bytes())?,
            p.modify_index,
        ))),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn change(
    common: &super::cli::Common,
    edit: impl FnOnce(&WaWebSetting) -> Result<WaWebSetting, WaWebError>,
) -> Result<(), WaWebError> {
    let http = consul()?;
    let key = setting_key(&common.kv_prefix);
    let (old, cas) = read_setting(&http, &common.kv_prefix)
        .await?
        .unwrap_or((WaWebSetting::default(), 0));
    let new = edit(&old)?;
    let opts = PutOptions {
        cas: Some(cas),
        ..PutOptions::default()
    };
    if !http.kv_put(&key, &new.to_json(), &opts).await? {
        return Err(WaWebError::CasConflict {
            key,
            version: old.version,
        });
    }
    if common.json {
        println!("{}", json!({"applied": true, "key": key, "setting": new}));
    } else {
        println!(
            "WhatsApp Web setting version {} -> {} (applied at each session's next start)",
            old.version, new.version
        );
        print_setting(&new);
    }
    Ok(())
}

fn print_setting(s: &WaWebSetting) {
    println!("  default: {}", s.default);
    for (k, c) in &s.shards {
        println!("  shard {k:>4}: {c}");
    }
    if let Some(p) = &s.previous {
        let overrides: Vec<String> = p.shards.iter().map(|(k, c)| format!("{k}={c}")).collect();
        println!(
            "  previous: default {}{}",
            p.default,
            if overrides.is_empty() {
                String::new()
            } else {
                format!(", shards {}", overrides.join(" "))
            }
        );
    }
}

fn shard_list(shards: &Shards) -> Result<Option<Vec<u32>>, WaWebError> {
    shards
        .shards
        .as_deref()
        .map(|s| parse_shards(s).map_err(WaWebError::Usage))
        .transpose()
}

/// Runs `wafleet wa-web …`.
pub async fn run(args: Args) -> Result<(), WaWebError> {
    let common = &args.common;
    let set = |choice: Choice, shards: &Shards| -> Result<_, WaWebError> {
        let list = shard_list(shards)?;
        Ok(move |old: &WaWebSetting| Ok(old.with_choice(choice, list.as_deref(), now_ms())))
    };
    match &args.command {
        Command::Show { data } => show(common, data.as_ref()).await,
        Command::Pin { version, shards } => {
            let choice = match Choice::parse(version)? {
                c @ Choice::Version(_) => c,
                _ => {
                    return Err(WaWebError::Usage(format!(
                        "pin takes a version; use `wafleet wa-web {version}` for {version:?}"
                    )));
                }
            };
            change(common, set(choice, shards)?).await
        }
        Command::Latest { shards } => change(common, set(Choice::Latest, shards)?).await,
        Command::LastGood { shards } => change(common, set(Choice::LastGood, shards)?).await,
        Command::Rollback => change(common, |old| Ok(old.rolled_back(now_ms())?)).await,
    }
}

async fn show(common: &super::cli::Common, data: Option<&PathBuf>) -> Result<(), WaWebError> {
    let http = consul()?;
    let setting = read_setting(&http, &common.kv_prefix)
        .await?
        .map(|(s, _)| s);
    let effective = setting.clone().unwrap_or_default();
    // The shard ids come from the shard map when there is one.
    let shard_ids: Vec<u32> = match super::cli::read_map(&http, &common.kv_prefix).await {
        Ok(Some((map, _))) => map.shards.iter().map(|s| s.id).collect(),
        _ => effective.shards.keys().copied().collect(),
    };
    let per_shard: Vec<(u32, String)> = shard_ids
        .iter()
        .map(|k| (*k, effective.choice_for(*k).to_string()))
        .collect();
    let (cached, last_good) = match data {
        Some(d) => {
            let cache = WebCache::new(d);
            (Some(cache.list()?), cache.last_good()?)
        }
        None => (None, None),
    };
    if common.json {
        let shards: serde_json::Map<String, serde_json::Value> = per_shard
            .iter()
            .map(|(k, c)| (k.to_string(), json!(c)))
            .collect();
        println!(
            "{}",
            json!({"key": setting_key(&common.kv_prefix), "setting": setting,
                   "shards": shards, "cached": cached, "last_good": last_good})
        );
        return Ok(());
    }
    match &setting {
        None => println!(
            "no WhatsApp Web setting at {} (latest everywhere)",
            setting_key(&common.kv_prefix)
        ),
        Some(s) => {
            println!("WhatsApp Web setting version {}", s.version);
            print_setting(s);
        }
    }
    if !per_shard.is_empty() {
        println!("per shard:");
        for (k, c) in &per_shard {
            println!("  shard {k:>4}: {c}");
        }
    }
    if let Some(list) = cached {
        println!(
            "cached in {}: {}",
            data.map(|d| d
                .join(crate::webver::cache::CACHE_DIR)
                .display()
                .to_string())
                .unwrap_or_default(),
            if list.is_empty() { "none" } else { "" }
        );
        for c in list {
            println!("  {}  {} bytes", c.version, c.bytes);
        }
        println!("last-good: {}", last_good.as_deref().unwrap_or("none"));
    }
    Ok(())
}
