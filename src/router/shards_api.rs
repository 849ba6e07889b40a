//! The router's shard-map admin routes (admin token only), the HTTP face of
//! `wafleet shards plan/apply/pin/unpin`:
//!
//! * `POST /v1/shards/plan` — a proposed change → the movement plan; writes nothing;
//! * `PUT /v1/shards` — the same change plus the `version` it was planned against → written
//!   with a CAS on the map's ModifyIndex; `409 version_conflict` when the map moved on;
//! * `PUT /v1/shards/pins/{ws}` `{"shard", "version"?}` and `DELETE /v1/shards/pins/{ws}`.
//!
//! Every route calls [`crate::ctl::change`], the code the CLI runs, so both make exactly the
//! same change and the same plan. The router needs a Consul client for this
//! ([`ShardAdmin`]); a router built without one (in-memory tests) answers `501`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use crate::api::ApiError;
use crate::consul::Client;
use crate::ctl::change::{Change, prepare};
use crate::ctl::cli::CtlError;
use crate::ids::WorkspaceId;
use crate::shard::Edit;

/// At most this many extra workspaces in one plan request.
pub const MAX_PLAN_WORKSPACES: usize = 100_000;

/// What the admin routes need to change the map: the Consul client and the KV prefix.
#[derive(Debug, Clone)]
pub struct ShardAdmin {
    /// Consul (KV reads and CAS writes).
    pub consul: Client,
    /// The KV prefix (`<prefix>/shardmap`, `<prefix>/locks/workspaces/`).
    pub kv_prefix: String,
}

/// The body of `POST /v1/shards/plan` and `PUT /v1/shards`: the same edits as the CLI flags,
/// applied in the CLI's order (count, weights, undrain, drain, then pins and unpins).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// `PUT`: the map version the change was planned against (required); `plan`: ignored
    /// unless given, then it must match too.
    #[serde(default)]
    pub version: Option<u64>,
    /// Make the shards exactly `0..count`.
    #[serde(default)]
    pub count: Option<u32>,
    /// Shard → new weight.
    #[serde(default)]
    pub weight: BTreeMap<u32, f64>,
    /// Shards to undrain.
    #[serde(default)]
    pub undrain: Vec<u32>,
    /// Shards to drain.
    #[serde(default)]
    pub drain: Vec<u32>,
    /// Workspace → shard pins to set.
    #[serde(default)]
    pub pin: BTreeMap<WorkspaceId, u32>,
    /// Pins to remove.
    #[serde(default)]
    pub unpin: Vec<WorkspaceId>,
    /// More workspaces to include in the plan (besides those with a lock in Consul).
    #[serde(default)]
    pub workspaces: Vec<WorkspaceId>,
}

impl ChangeRequest {
    /// The edits, in the CLI's order; `invalid_body` when there is none.
    pub fn edits(&self) -> Result<Vec<Edit>, ApiError> {
        let mut edits = Vec::new();
        edits.extend(self.count.map(Edit::Count));
        edits.extend(self.weight.iter().map(|(k, w)| Edit::Weight(*k, *w)));
        edits.extend(self.undrain.iter().map(|k| Edit::Undrain(*k)));
        edits.extend(self.drain.iter().map(|k| Edit::Drain(*k)));
        edits.extend(self.pin.iter().map(|(ws, k)| Edit::Pin(ws.clone(), *k)));
        edits.extend(self.unpin.iter().cloned().map(Edit::Unpin));
        if edits.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_body",
                "nothing to change: give count, weight, drain, undrain, pin or unpin",
            ));
        }
        Ok(edits)
    }

    /// The workspaces the plan must include besides Consul's: the extra list and every pinned
    /// or unpinned workspace (a pin always shows up in its own plan, as with the CLI).
    fn extra(&self) -> Vec<WorkspaceId> {
        let mut out = self.workspaces.clone();
        out.extend(self.pin.keys().cloned());
        out.extend(self.unpin.iter().cloned());
        out
    }
}

/// The body of `PUT /v1/shards/pins/{ws}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinRequest {
    shard: u32,
    #[serde(default)]
    version: Option<u64>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
}

fn admin(admin: Option<&ShardAdmin>) -> Result<&ShardAdmin, ApiError> {
    admin.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported",
            "this router has no Consul client to change the shard map with",
        )
    })
}

/// Maps the CLI's errors onto the API's.
fn ctl_error(e: CtlError) -> ApiError {
    match e {
        CtlError::Map(m) => ApiError::bad_request("invalid_change", m.to_string()),
        CtlError::NoMap(key) => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_shard_map",
            format!("no shard map at {key}; run `wafleet shards init` first"),
        ),
        CtlError::CasConflict { version, .. } => version_conflict(format!(
            "the shard map changed since version {version} was read; nothing was written, plan again"
        )),
        CtlError::NoEdits => ApiError::bad_request("invalid_body", e.to_string()),
        CtlError::Consul(c) => {
            tracing::warn!(error = %c, "shard map admin: consul");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "consul_unavailable",
                "Consul did not answer; nothing was written",
            )
            .with_header(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("2"),
            )
        }
        other => ApiError::internal(other.to_string()),
    }
}

fn version_conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "version_conflict", message)
}

/// Refuses a change planned against another version than the stored one.
fn check_version(change: &Change, expected: Option<u64>) -> Result<(), ApiError> {
    match expected {
        Some(v) if v != change.old.version => Err(version_conflict(format!(
            "the shard map is at version {}, not {v}; nothing was written, plan again",
            change.old.version
        ))),
        _ => Ok(()),
    }
}

async fn run(
    admin: &ShardAdmin,
    edits: &[Edit],
    extra: &[WorkspaceId],
    version: Option<u64>,
    write: bool,
) -> Result<serde_json::Value, ApiError> {
    let change = prepare(&admin.consul, &admin.kv_prefix, edits, None, extra)
        .await
        .map_err(ctl_error)?;
    check_version(&change, version)?;
    if write {
        change
            .commit(&admin.consul, &admin.kv_prefix)
            .await
            .map_err(ctl_error)?;
        tracing::info!(
            old = change.old.version,
            new = change.new.version,
            moves = change.moves.len(),
            "shard map changed through the admin API"
        );
    }
    Ok(change.report(write))
}

fn check_extra(req: &ChangeRequest) -> Result<(), ApiError> {
    if req.workspaces.len() > MAX_PLAN_WORKSPACES {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("at most {MAX_PLAN_WORKSPACES} workspaces per plan"),
        ));
    }
    Ok(())
}

/// `POST /v1/shards/plan`: the report of the change, `"applied": false`; nothing written.
pub async fn plan(
    admin_: Option<&ShardAdmin>,
    body: &Bytes,
) -> Result<serde_json::Value, ApiError> {
    let admin = admin(admin_)?;
    let req: ChangeRequest = parse(body)?;
    check_extra(&req)?;
    run(admin, &req.edits()?, &req.extra(), req.version, false).await
}

/// `PUT /v1/shards`: writes the change planned against `version` (required).
pub async fn apply(
    admin_: Option<&ShardAdmin>,
    body: &Bytes,
) -> Result<serde_json::Value, ApiError> {
    let admin = admin(admin_)?;
    let req: ChangeRequest = parse(body)?;
    check_extra(&req)?;
    let version = req.version.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_body",
            "version is required: the map version the change was planned against",
        )
    })?;
    run(admin, &req.edits()?, &req.extra(), Some(version), true).await
}

/// `PUT /v1/shards/pins/{ws}`: pins the workspace (CAS write; `version` checked when given).
pub async fn pin(
    admin_: Option<&ShardAdmin>,
    ws: WorkspaceId,
    body: &Bytes,
) -> Result<serde_json::Value, ApiError> {
    let admin = admin(admin_)?;
    let req: PinRequest = parse(body)?;
    let edits = [Edit::Pin(ws.clone(), req.shard)];
    run(admin, &edits, &[ws], req.version, true).await
}

/// `DELETE /v1/shards/pins/{ws}`: removes the pin; `404 pin_not_found` when there is none.
pub async fn unpin(
    admin_: Option<&ShardAdmin>,
    ws: WorkspaceId,
) -> Result<serde_json::Value, ApiError> {
    let admin = admin(admin_)?;
    let edits = [Edit::Unpin(ws.clone())];
    let change = prepare(
        &admin.consul,
        &admin.kv_prefix,
        &edits,
        None,
        std::slice::from_ref(&ws),
    )
    .await
    .map_err(ctl_error)?;
    if !change.old.pins.contains_key(&ws) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "pin_not_found",
            format!("workspace {ws} is not pinned"),
        ));
    }
    change
        .commit(&admin.consul, &admin.kv_prefix)
        .await
        .map_err(ctl_error)?;
    Ok(change.report(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_turn_into_the_clis_edits_in_order() {
        let req: ChangeRequest = serde_json::from_str(
            r#"{"count":4,"drain":[1],"undrain":[2],"weight":{"0":2.5},"pin":{"acme":3},"unpin":["old"]}"#,
        )
        .unwrap();
        let ws = |s: &str| WorkspaceId::new(s).unwrap();
        assert_eq!(
            req.edits().unwrap(),
            vec![
                Edit::Count(4),
                Edit::Weight(0, 2.5),
                Edit::Undrain(2),
                Edit::Drain(1),
                Edit::Pin(ws("acme"), 3),
                Edit::Unpin(ws("old")),
            ]
        );
        assert_eq!(req.extra(), vec![ws("acme"), ws("old")]);
        assert!(ChangeRequest::default().edits().is_err());
        for bad in [
            r#"{"count":-1}"#,
            r#"{"pin":{"a/b":1}}"#,
            r#"{"weight":{"x":1}}"#,
            r#"{"nonsense":1}"#,
        ] {
            assert!(parse::<ChangeRequest>(&Bytes::from(bad)).is_err(), "{bad}");
        }
    }
}
