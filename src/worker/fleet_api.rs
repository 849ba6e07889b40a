//! `GET /v1/sessions` on a worker (admin): every session this worker hosts, across its
//! workspaces. The router fans this route out to every shard and merges the answers into the
//! fleet-wide list the dashboard shows (`crate::router::fleet`).
//!
//! Only workspaces in phase `running` are listed (the others have no live session host to
//! ask); their phases are reported next to the list, so a caller can tell "no sessions" from
//! "still starting". A workspace whose listing fails is reported in `errors` and the others
//! are still listed: one broken workspace must not hide a shard.

use serde::Serialize;
use warp::{Filter, Reply};

use super::host::SessionInfo;
use super::ownership::Phase;
use super::request::{Api, auth_error, unavailable};
use crate::ids::WorkspaceId;

/// One workspace whose sessions could not be listed.
#[derive(Debug, Serialize)]
pub struct ListError {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Why (the session host's error, for operators).
    pub error: String,
}

/// The answer of `GET /v1/sessions` on a worker.
#[derive(Debug, Serialize)]
pub struct WorkerSessions {
    /// This worker's shard.
    pub shard: u32,
    /// Every session of every running workspace, ordered by workspace then session.
    pub sessions: Vec<SessionInfo>,
    /// Every workspace this worker handles, with its ownership phase.
    pub workspaces: std::collections::BTreeMap<WorkspaceId, Phase>,
    /// Workspaces whose listing failed.
    pub errors: Vec<ListError>,
}

/// The route, for [`super::http::filters`].
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::path!("v1" / "sessions")
        .and(warp::get())
        .and(warp::any().map(move || api.clone()))
        .and(warp::header::optional::<String>("authorization"))
        .and_then(list_all)
}

async fn list_all(
    api: Api,
    auth: Option<String>,
) -> Result<warp::reply::Response, warp::Rejection> {
    api.authority
        .authorize(auth.as_deref(), None)
        .map_err(|e| warp::reject::custom(auth_error(e)))?;
    let shard = api.shared.shard;
    let workspaces = {
        let status = api.shared.status.borrow();
        if status.fenced {
            return Err(warp::reject::custom(
                unavailable("fenced", "this worker lost its Consul session").with_shard(shard),
            ));
        }
        if !status.ready {
            return Err(warp::reject::custom(
                unavailable("not_ready", "this worker is not serving").with_shard(shard),
            ));
        }
        status.workspaces.clone()
    };
    let mut sessions = Vec::new();
    let mut errors = Vec::new();
    for (ws, phase) in &workspaces {
        if *phase != Phase::Running {
            continue;
        }
        match api.shared.host.list_sessions(ws).await {
            Ok(mut list) => {
                list.sort_by(|a, b| a.session.as_str().cmp(b.session.as_str()));
                sessions.extend(list);
            }
            Err(e) => errors.push(ListError {
                workspace: ws.clone(),
                error: e.to_string(),
            }),
        }
    }
    Ok(warp::reply::json(&WorkerSessions {
        shard,
        sessions,
        workspaces,
        errors,
    })
    .into_response())
}
