//! PURE: the fleet's WhatsApp Web version setting (one Consul KV value, `<prefix>/wa-web`), its
//! per-shard resolution and the operator's edits (pin, latest, last-good, rollback).
//!
//! ```json
//! {"version": 4, "default": "latest", "shards": {"3": "2.3000.1017054950"},
//!  "previous": {"default": "latest", "shards": {}}, "updated_at_ms": 1764600000000}
//! ```
//!
//! A choice is `"latest"` (load WhatsApp Web live), `"last-good"` (the newest version a live
//! session on this worker's volume reached WORKING on) or an exact version string. `shards`
//! overrides the default for single shards (rollouts); `previous` is the selection before the
//! last edit, so one command rolls back; `version` increases on every write. A missing key means
//! `latest` everywhere.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::events::valid_version;

/// Which WhatsApp Web a launch loads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Choice {
    /// Live, whatever WhatsApp serves today.
    #[default]
    Latest,
    /// The last version proven good on a live load (recorded in the cache).
    LastGood,
    /// This exact version, served from the cache.
    Version(String),
}

/// The reserved word for [`Choice::Latest`].
pub const LATEST: &str = "latest";
/// The reserved word for [`Choice::LastGood`].
pub const LAST_GOOD: &str = "last-good";

/// Why a setting or an edit was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingError {
    /// Not `latest`, `last-good` or a valid version string.
    #[error(
        "{0:?} is not a WhatsApp Web version (1 to 64 characters of [0-9A-Za-z._-], starting with a letter or digit) nor latest/last-good"
    )]
    BadChoice(String),
    /// The stored JSON is not a setting.
    #[error("malformed WhatsApp Web setting: {0}")]
    Malformed(String),
    /// Rollback without a previous setting.
    #[error("nothing to roll back to: the setting has no previous value")]
    NoPrevious,
}

impl Choice {
    /// Parses `latest`, `last-good` or a version string.
    pub fn parse(s: &str) -> Result<Choice, SettingError> {
        match s {
            LATEST => Ok(Choice::Latest),
            LAST_GOOD => Ok(Choice::LastGood),
            v => valid_version(v)
                .map(Choice::Version)
                .ok_or_else(|| SettingError::BadChoice(v.chars().take(80).collect())),
        }
    }

    /// The wire form.
    pub fn as_str(&self) -> &str {
        match self {
            Choice::Latest => LATEST,
            Choice::LastGood => LAST_GOOD,
            Choice::Version(v) => v,
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Choice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Choice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Choice::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A default and per-shard overrides.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Selection {
    /// For every shard without an override.
    #[serde(default)]
    pub default: Choice,
    /// Overrides by shard id.
    #[serde(default)]
    pub shards: BTreeMap<u32, Choice>,
}

impl Selection {
    /// The choice for `shard`.
    pub fn choice_for(&self, shard: u32) -> &Choice {
        self.shards.get(&shard).unwrap_or(&self.default)
    }
}

/// The stored setting.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WaWebSetting {
    /// Increases on every write.
    #[serde(default)]
    pub version: u64,
    /// For every shard without an override.
    #[serde(default)]
    pub default: Choice,
    /// Overrides by shard id.
    #[serde(default)]
    pub shards: BTreeMap<u32, Choice>,
    /// The selection before the last edit (what `rollback` restores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Selection>,
    /// When it was last written (Unix ms).
    #[serde(default)]
    pub updated_at_ms: u64,
}

/// Largest stored setting accepted (a few thousand shards' overrides at most).
pub const MAX_SETTING_BYTES: usize = 256 << 10;

impl WaWebSetting {
    /// Parses the stored JSON (size-capped; every choice validated).
    pub fn from_json(bytes: &[u8]) -> Result<WaWebSetting, SettingError> {
        if bytes.len() > MAX_SETTING_BYTES {
            return Err(SettingError::Malformed(format!(
                "{} bytes is larger than {MAX_SETTING_BYTES}",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| SettingError::Malformed(e.to_string()))
    }

    /// The JSON to store.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The current selection.
    pub fn selection(&self) -> Selection {
        Selection {
            default: self.default.clone(),
            shards: self.shards.clone(),
        }
    }

    /// The choice for `shard`.
    pub fn choice_for(&self, shard: u32) -> &Choice {
        self.shards.get(&shard).unwrap_or(&self.default)
    }

    /// Sets `choice` for the whole fleet (`shards` = `None`: the default, every override
    /// removed) or for the given shards only (an override equal to the default is dropped).
    /// The old selection becomes `previous`; `version` is bumped.
    pub fn with_choice(&self, choice: Choice, shards: Option<&[u32]>, now_ms: u64) -> WaWebSetting {
        let mut next = self.clone();
        next.previous = Some(self.selection());
        match shards {
            None => {
                next.default = choice;
                next.shards.clear();
            }
            Some(list) => {
                for k in list {
                    next.shards.insert(*k, choice.clone());
                }
            }
        }
        let default = next.default.clone();
        next.shards.retain(|_, c| *c != default);
        next.version = self.version.saturating_add(1);
        next.updated_at_ms = now_ms;
        next
    }

    /// Restores `previous` (and keeps the current selection as the new `previous`, so a second
    /// rollback undoes the first).
    pub fn rolled_back(&self, now_ms: u64) -> Result<WaWebSetting, SettingError> {
        let previous = self.previous.clone().ok_or(SettingError::NoPrevious)?;
        Ok(WaWebSetting {
            version: self.version.saturating_add(1),
            default: previous.default,
            shards: previous.shards,
            previous: Some(self.selection()),
            updated_at_ms: now_ms,
        })
    }
}

/// Parses `--shards 0,3` (ids, comma-separated, at least one).
pub fn parse_shards(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let k: u32 = part
            .parse()
            .map_err(|_| format!("--shards {s:?}: expected shard ids like 0,3"))?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Choice {
        Choice::Version(s.into())
    }

    #[test]
    fn choices_parse_and_round_trip() {
        assert_eq!(Choice::parse("latest").unwrap(), Choice::Latest);
        assert_eq!(Choice::parse("last-good").unwrap(), Choice::LastGood);
        assert_eq!(Choice::parse("2.3000.1017").unwrap(), v("2.3000.1017"));
        for bad in ["", "../x", "a b", ".hidden"] {
            assert!(Choice::parse(bad).is_err(), "{bad}");
        }
        let s = WaWebSetting::default().with_choice(v("2.3000.1"), Some(&[3]), 5);
        let back = WaWebSetting::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        let text = String::from_utf8(s.to_json()).unwrap();
        assert!(text.contains(r#""shards":{"3":"2.3000.1"}"#), "{text}");
        assert!(WaWebSetting::from_json(br#"{"default":"../etc"}"#).is_err());
        assert!(WaWebSetting::from_json(b"nope").is_err());
        // Everything is optional: `{}` is latest everywhere.
        assert_eq!(
            WaWebSetting::from_json(b"{}").unwrap().choice_for(0),
            &Choice::Latest
        );
    }

    #[test]
    fn shard_overrides_apply_only_to_their_shards() {
        let s = WaWebSetting::default()
            .with_choice(v("V1"), None, 1)
            .with_choice(v("V2"), Some(&[0, 3]), 2);
        assert_eq!(s.choice_for(0), &v("V2"));
        assert_eq!(s.choice_for(3), &v("V2"));
        assert_eq!(s.choice_for(1), &v("V1"));
        assert_eq!(s.version, 2);
        // The whole fleet: overrides go.
        let all = s.with_choice(Choice::Latest, None, 3);
        assert!(all.shards.is_empty());
        assert_eq!(all.choice_for(3), &Choice::Latest);
        // An override equal to the default is dropped.
        let same = all.with_choice(Choice::Latest, Some(&[2]), 4);
        assert!(same.shards.is_empty());
    }

    #[test]
    fn rollback_restores_the_previous_selection_and_can_be_undone() {
        let pinned = WaWebSetting::default().with_choice(v("V1"), None, 1);
        let rolled_out = pinned.with_choice(v("V2"), Some(&[1]), 2);
        let back = rolled_out.rolled_back(3).unwrap();
        assert_eq!(back.choice_for(1), &v("V1"));
        assert_eq!(back.version, 3);
        let again = back.rolled_back(4).unwrap();
        assert_eq!(again.choice_for(1), &v("V2"));
        assert_eq!(
            WaWebSetting::default().rolled_back(1),
            Err(SettingError::NoPrevious)
        );
    }

    #[test]
    fn shard_lists_parse() {
        assert_eq!(parse_shards("0,3").unwrap(), vec![0, 3]);
        assert_eq!(parse_shards(" 2 , 2").unwrap(), vec![2]);
        for bad in ["", "a", "1,,2", "-1"] {
            assert!(parse_shards(bad).is_err(), "{bad}");
        }
    }
}
