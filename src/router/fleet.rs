//! `GET /v1/sessions` on the router (admin): every session of the fleet, across workspaces.
//!
//! The router asks every shard of the current map for its sessions (the worker route
//! `GET /v1/sessions`, `crate::worker::fleet_api`) concurrently, each with its own deadline,
//! and merges the answers. A shard that does not answer (no instance, refused connection,
//! timeout, an error status) is listed in `shards` with `"ok": false` and the answer is
//! `"partial": true` — never an error for everyone because one shard is down.
//!
//! During a handoff two workers may briefly both list a workspace; the copy from the shard the
//! map names as owner wins.

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::{self, HeaderMap};
use serde_json::{Value, json};

use super::State;
use crate::api::ApiError;
use crate::shard::ShardMap;

/// How long one shard gets to answer the fan-out.
pub const FANOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// The session statuses a `status` filter may name.
pub const STATUSES: [&str; 5] = ["STOPPED", "STARTING", "SCAN_QR_CODE", "WORKING", "FAILED"];

/// The filters of `GET /v1/sessions`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only these statuses (empty: all).
    pub status: Vec<String>,
    /// Case-insensitive substring of workspace, session or `me`.
    pub q: Option<String>,
}

impl Filter {
    /// Parses `status=A,B&q=text`; unknown statuses and parameters are `400 invalid_query`.
    pub fn parse(query: Option<&str>) -> Result<Filter, ApiError> {
        let mut f = Filter::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*k {
                "status" => {
                    for s in v.split(',').filter(|s| !s.is_empty()) {
                        if !STATUSES.contains(&s) {
                            return Err(ApiError::bad_request(
                                "invalid_query",
                                format!("status {s:?}: expected one of {}", STATUSES.join(", ")),
                            ));
                        }
                        f.status.push(s.to_owned());
                    }
                }
                "q" if v.len() <= 256 => {
                    f.q = Some(v.to_lowercase()).filter(|q| !q.is_empty());
                }
                other => {
                    return Err(ApiError::bad_request(
                        "invalid_query",
                        format!("unknown or oversized query parameter {other:?}"),
                    ));
                }
            }
        }
        Ok(f)
    }

    /// Whether a session (a worker's JSON) passes the filter.
    pub fn keeps(&self, s: &Value) -> bool {
        let status_ok = self.status.is_empty()
            || s["status"]
                .as_str()
                .is_some_and(|st| self.status.iter().any(|f| f == st));
        let q_ok = self.q.as_deref().is_none_or(|q| {
            ["workspace", "session", "me"]
                .iter()
                .any(|k| s[*k].as_str().is_some_and(|v| v.to_lowercase().contains(q)))
        });
        status_ok && q_ok
    }
}

/// What one shard answered.
#[derive(Debug)]
pub enum ShardAnswer {
    /// Its sessions (the worker's `sessions` array).
    Ok(Vec<Value>),
    /// It did not answer usably: a code and a sentence.
    Failed(&'static str, String),
}

/// PURE: merges the shards' answers under `map` into the route's body. Sessions are
/// de-duplicated by (workspace, session), preferring the map's owner; sorted by workspace,
/// then session.
pub fn merge(map: &ShardMap, answers: Vec<(u32, ShardAnswer)>, filter: &Filter) -> Value {
    let mut shards = Vec::new();
    let mut by_key: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut partial = false;
    for (k, answer) in answers {
        match answer {
            ShardAnswer::Ok(sessions) => {
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                for s in sessions {
                    let key = (
                        s["workspace"].as_str().unwrap_or_default().to_owned(),
                        s["session"].as_str().unwrap_or_default().to_owned(),
                    );
                    let owner = crate::ids::WorkspaceId::new(&key.0)
                        .ok()
                        .and_then(|ws| map.owner(&ws));
                    if owner != Some(k) && by_key.contains_key(&key) {
                        continue;
                    }
                    *counts
                        .entry(s["status"].as_str().unwrap_or("UNKNOWN").to_owned())
                        .or_default() += 1;
                    by_key.insert(key, s);
                }
                shards.push(json!({"id": k, "ok": true, "counts": counts}));
            }
            ShardAnswer::Failed(code, message) => {
                partial = true;
                shards.push(json!({"id": k, "ok": false, "error": code, "message": message}));
            }
        }
    }
    let sessions: Vec<Value> = by_key.into_values().filter(|s| filter.keeps(s)).collect();
    json!({
        "version": map.version,
        "partial": partial,
        "shards": shards,
        "sessions": sessions,
    })
}

/// The largest answer read from one shard's `GET /v1/sessions` (a shard hosts at most a few
/// thousand sessions of a few hundred bytes each).
const MAX_SHARD_ANSWER_BYTES: usize = 16 << 20;

/// Asks one shard for its sessions.
async fn ask(state: &State, shard: u32, auth: Option<&header::HeaderValue>) -> ShardAnswer {
    let addrs = match state.endpoints.get(shard).await {
        Ok(a) => a,
        Err(e) => return ShardAnswer::Failed("shard_unavailable", e.to_string()),
    };
    let Some(addr) = state.endpoints.pick(&addrs, None) else {
        return ShardAnswer::Failed(
            "shard_unavailable",
            format!("shard {shard} has no healthy instance"),
        );
    };
    let mut req = http::Request::new(super::proxy::UpBody::Full(None));
    match format!("http://{addr}/v1/sessions").parse::<http::Uri>() {
        Ok(u) => *req.uri_mut() = u,
        Err(e) => return ShardAnswer::Failed("upstream_unreachable", format!("{addr}: {e}")),
    }
    if let Some(a) = auth {
        req.headers_mut().insert(header::AUTHORIZATION, a.clone());
    }
    let resp = match tokio::time::timeout(FANOUT_TIMEOUT, state.client.request(req)).await {
        Err(_) => return ShardAnswer::Failed("upstream_timeout", format!("{addr} timed out")),
        Ok(Err(e)) => {
            if e.is_connect() {
                // Same as a proxied request: a refused connection re-resolves the shard.
                let _ = state.endpoints.refresh(shard).await;
            }
            return ShardAnswer::Failed("upstream_unreachable", format!("{addr}: {e}"));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let body = tokio::time::timeout(FANOUT_TIMEOUT, async {
        use http_body_util::BodyExt as _;
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_SHARD_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string())
    })
    .await;
    match body {
        Ok(Ok(v)) if status.is_success() => match v["sessions"].as_array() {
            Some(list) => ShardAnswer::Ok(list.clone()),
            None => ShardAnswer::Failed("bad_answer", format!("{addr}: no sessions array")),
        },
        Ok(Ok(v)) => ShardAnswer::Failed(
            "upstream_error",
            format!(
                "{addr} answered {status}: {}",
                v["message"].as_str().unwrap_or_default()
            ),
        ),
        Ok(Err(e)) => ShardAnswer::Failed("bad_answer", format!("{addr}: {e}")),
        Err(_) => ShardAnswer::Failed("upstream_timeout", format!("{addr} timed out")),
    }
}

/// `GET /v1/sessions` (auth already checked): fans out and merges.
pub async fn list(
    state: &State,
    map: &ShardMap,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Value, ApiError> {
    let filter = Filter::parse(query)?;
    let auth = headers.get(header::AUTHORIZATION);
    let ids: Vec<u32> = map.shard_ids().collect();
    let answers = futures::future::join_all(ids.iter().map(|&k| ask(state, k, auth))).await;
    Ok(merge(map, ids.into_iter().zip(answers).collect(), &filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(ws: &str, s: &str, status: &str) -> Value {
        json!({"workspace": ws, "session": s, "status": status, "me": null})
    }

    #[test]
    fn merge_marks_failed_shards_and_filters() {
        let map = ShardMap::uniform(3);
        let answers = vec![
            (
                0,
                ShardAnswer::Ok(vec![
                    session("a", "main", "WORKING"),
                    session("b", "x", "SCAN_QR_CODE"),
                ]),
            ),
            (1, ShardAnswer::Failed("shard_unavailable", "down".into())),
            (2, ShardAnswer::Ok(vec![session("c", "main", "FAILED")])),
        ];
        let all = merge(&map, answers, &Filter::default());
        assert_eq!(all["partial"], true);
        assert_eq!(all["sessions"].as_array().unwrap().len(), 3);
        assert_eq!(all["shards"][1]["ok"], false);
        assert_eq!(all["shards"][0]["counts"]["WORKING"], 1);
        let f = Filter::parse(Some("status=WORKING,FAILED&q=C")).unwrap();
        let some = merge(
            &map,
            vec![(2, ShardAnswer::Ok(vec![session("c", "main", "FAILED")]))],
            &f,
        );
        assert_eq!(some["partial"], false);
        assert_eq!(some["sessions"][0]["workspace"], "c");
        assert!(Filter::parse(Some("status=BOGUS")).is_err());
        assert!(Filter::parse(Some("limit=3")).is_err());
    }

    #[test]
    fn duplicates_prefer_the_owner() {
        let map = ShardMap::uniform(2);
        let ws = crate::ids::WorkspaceId::new("dup").unwrap();
        let owner = map.owner(&ws).unwrap();
        let other = 1 - owner;
        let mut answers = vec![
            (other, ShardAnswer::Ok(vec![session("dup", "s", "STOPPED")])),
            (owner, ShardAnswer::Ok(vec![session("dup", "s", "WORKING")])),
        ];
        answers.sort_by_key(|(k, _)| *k);
        let merged = merge(&map, answers, &Filter::default());
        assert_eq!(merged["sessions"].as_array().unwrap().len(), 1);
        assert_eq!(merged["sessions"][0]["status"], "WORKING");
    }
}
