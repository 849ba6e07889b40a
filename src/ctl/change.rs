//! One change to the shard map, as both `wafleet shards plan/apply/pin/unpin` and the router's
//! admin routes (`POST /v1/shards/plan`, `PUT /v1/shards`, `PUT`/`DELETE /v1/shards/pins/{ws}`)
//! make it: read the map and its ModifyIndex, apply the edits to the pure [`ShardMap`] (which
//! bumps `version` and validates), plan the moves over the workspaces Consul knows, and — only
//! when asked — write with `?cas=<ModifyIndex>`. Keeping this in one place means the dashboard
//! and the CLI can never disagree on what a change does.

use std::path::PathBuf;

use crate::consul::Client;
use crate::ids::WorkspaceId;
use crate::shard::{Edit, Move, ShardMap, plan};

use super::cli::{CtlError, change_report, map_key, read_map, visible_workspaces, write_map};

/// A planned change: the map that was read, the map it becomes, and what moves.
#[derive(Debug, Clone)]
pub struct Change {
    /// The stored map when the change was planned.
    pub old: ShardMap,
    /// Its ModifyIndex (the CAS index of the write).
    pub modify_index: u64,
    /// The map after the edits (version bumped, validated).
    pub new: ShardMap,
    /// How many workspaces the plan looked at.
    pub considered: usize,
    /// The workspaces whose owner changes.
    pub moves: Vec<Move>,
}

/// Reads the map under `prefix`, applies `edits` and plans the moves over the workspaces
/// Consul knows (workspace lock keys), the ids in `file` and `extra`. Writes nothing.
pub async fn prepare(
    http: &Client,
    prefix: &str,
    edits: &[Edit],
    file: Option<&PathBuf>,
    extra: &[WorkspaceId],
) -> Result<Change, CtlError> {
    let (old, modify_index) = read_map(http, prefix)
        .await?
        .ok_or_else(|| CtlError::NoMap(map_key(prefix)))?;
    let new = old.edited(edits)?;
    let mut workspaces = visible_workspaces(http, prefix, file).await?;
    for ws in extra {
        if !workspaces.contains(ws) {
            workspaces.push(ws.clone());
        }
    }
    let moves = plan(&old, &new, &workspaces);
    Ok(Change {
        old,
        modify_index,
        new,
        considered: workspaces.len(),
        moves,
    })
}

// === impl Change ===

impl Change {
    /// Writes the new map with a CAS on the ModifyIndex that was read: a concurrent write in
    /// between is [`CtlError::CasConflict`] and nothing is written.
    pub async fn commit(&self, http: &Client, prefix: &str) -> Result<(), CtlError> {
        write_map(http, prefix, &self.old, self.modify_index, &self.new).await
    }

    /// The JSON report (`{"applied","old_version","new_version","map","workspaces_considered","moves"}`).
    pub fn report(&self, applied: bool) -> serde_json::Value {
        change_report(&self.old, &self.new, &self.moves, self.considered, applied)
    }
}
