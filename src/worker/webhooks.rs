//! The webhook routes of a workspace (docs/api.md "Webhooks"): its dead letters, the events
//! whose delivery gave up, and their replay.
//!
//! * `GET /v1/workspaces/{ws}/webhooks/dead[?session=&after=&limit=]` → a page of dead letters;
//! * `POST /v1/workspaces/{ws}/webhooks/dead/{id}/replay` → `202 {"id", "state": "pending"}`.
//!
//! Both start with the worker's gate (ids, token, readiness, ownership) and answer
//! `503 messaging_unavailable` while the shard store is not open. The delivery itself is
//! [`crate::webhook`]; a session's webhook settings are its `PATCH` ([`super::settings`]).

use http::StatusCode;
use warp::{Filter, Reply};

use crate::webhook::api::{DeadLetterQuery, list_dead_letters, replay_dead_letter};
use crate::worker::layout::now_ms;
use crate::worker::messaging::routes::messaging;
use crate::worker::request::{Api, gate, reject};

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// The webhook routes (compose them into the worker filter before its `recover`).
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    let auth = warp::header::optional::<String>("authorization");
    let dead = warp::path!("v1" / "workspaces" / String / "webhooks" / "dead")
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and(warp::query::<DeadLetterQuery>())
        .and_then(dead_letters);
    let replay =
        warp::path!("v1" / "workspaces" / String / "webhooks" / "dead" / String / "replay")
            .and(warp::post())
            .and(with)
            .and(auth)
            .and_then(replay);
    dead.or(replay).unify()
}

async fn dead_letters(ws: String, api: Api, auth: Option<String>, q: DeadLetterQuery) -> Resp {
    let ws = gate(&api, &ws, auth.as_deref()).map_err(reject)?;
    let (_, active) = messaging(&api).map_err(reject)?;
    let v = list_dead_letters(&active.store, &ws, &q)
        .await
        .map_err(reject)?;
    Ok(warp::reply::json(&v).into_response())
}

async fn replay(ws: String, id: String, api: Api, auth: Option<String>) -> Resp {
    let ws = gate(&api, &ws, auth.as_deref()).map_err(reject)?;
    let (_, active) = messaging(&api).map_err(reject)?;
    let v = replay_dead_letter(&active.store, &ws, &id, now_ms())
        .await
        .map_err(reject)?;
    Ok(warp::reply::with_status(warp::reply::json(&v), StatusCode::ACCEPTED).into_response())
}
