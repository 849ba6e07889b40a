//! The router's table on disk (`--table-file`): the last good shard map and each shard's
//! instances, rewritten whenever they change, so that a router (re)started while Consul cannot
//! be reached routes with what it knew instead of answering `503 not_ready` for everyone.
//!
//! Consul stays the truth: a table read from the file only seeds the router, and the first map
//! or resolution from Consul replaces it. A missing file is normal (first start); an unreadable
//! or invalid one is logged and ignored, never trusted in part. Instances from the file are
//! marked in `/v1/shards` (`error`) until Consul confirms them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::shard::ShardMap;

/// The `error` shown for a shard whose instances come from the table file.
pub const FROM_FILE: &str = "instances from the table file, not confirmed by Consul yet";

/// Why the table file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("table file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a table this router wrote.
    #[error("table file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OnDisk {
    /// When it was written (Unix ms), for operators.
    saved_at_ms: u64,
    /// The shard map, as stored in Consul KV.
    map: serde_json::Value,
    /// Shard → the healthy instances last resolved.
    instances: BTreeMap<u32, Vec<SocketAddr>>,
}

/// A table: the map and each shard's instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The shard map (validated).
    pub map: ShardMap,
    /// Shard → instances.
    pub instances: BTreeMap<u32, Vec<SocketAddr>>,
}

/// Reads the table at `path`; `Ok(None)` when there is no file yet.
pub fn load(path: &Path) -> Result<Option<Table>, SnapshotError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let invalid = |message: String| SnapshotError::Invalid {
        path: path.to_owned(),
        message,
    };
    let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let map_bytes = serde_json::to_vec(&disk.map).map_err(|e| invalid(e.to_string()))?;
    let map = ShardMap::from_json(&map_bytes).map_err(|e| invalid(format!("shard map: {e}")))?;
    Ok(Some(Table {
        map,
        instances: disk.instances,
    }))
}

/// Writes `table` to `path` atomically (a temporary file renamed over it), so a crash never
/// leaves half a table behind.
pub fn save(path: &Path, table: &Table, now_ms: u64) -> Result<(), SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    };
    let map = serde_json::from_slice(&table.map.to_json()).map_err(|e| SnapshotError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let disk = OnDisk {
        saved_at_ms: now_ms,
        map,
        instances: table.instances.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&disk)
        .map_err(std::io::Error::other)
        .map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    crate::worker::layout::write_atomic(path, &bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut map = ShardMap::uniform(3);
        map.version = 7;
        Table {
            map,
            instances: [
                (0, vec!["10.0.0.1:9000".parse().unwrap()]),
                (1, vec![]),
                (
                    2,
                    vec![
                        "10.0.0.2:9000".parse().unwrap(),
                        "[fd00::2]:9000".parse().unwrap(),
                    ],
                ),
            ]
            .into(),
        }
    }

    #[test]
    fn a_saved_table_loads_back_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/table.json");
        assert!(load(&path).unwrap().is_none());
        save(&path, &table(), 1).unwrap();
        assert_eq!(load(&path).unwrap(), Some(table()));
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn garbage_and_invalid_maps_are_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(load(&path), Err(SnapshotError::Invalid { .. })));
        // A well-formed file whose map does not validate (no shard).
        std::fs::write(
            &path,
            br#"{"saved_at_ms":1,"map":{"version":1,"shards":[]},"instances":{}}"#,
        )
        .unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("shard map"), "{err}");
    }
}
