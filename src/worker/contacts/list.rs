//! `GET /v1/workspaces/{ws}/sessions/{s}/contacts?limit=&cursor=&q=` → `{"contacts": [...],
//! "next_cursor"}`: the contacts WhatsApp Web holds (people only, by id), optionally those whose
//! id, number, name or push name contains `q`. Local to the page: no server query, no bucket.

use std::collections::HashMap;

use serde_json::json;
use warp::{Filter, Reply};

use super::routes::working;
use crate::worker::chats::routes::command_error;
use crate::worker::chats::{
    decode_contact_cursor, encode_contact_cursor, parse_limit, parse_search,
};
use crate::worker::request::{Api, reject, running_session};

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// The contact list route.
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    warp::path!("v1" / "workspaces" / String / "sessions" / String / "contacts")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with)
        .and(warp::header::optional::<String>("authorization"))
        .and_then(list)
}

async fn list(
    ws: String,
    s: String,
    query: HashMap<String, String>,
    api: Api,
    auth: Option<String>,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let limit = parse_limit(&query).map_err(reject)?;
    let after = match query.get("cursor") {
        Some(c) => Some(decode_contact_cursor(c).map_err(reject)?),
        None => None,
    };
    let q = parse_search(&query).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let page = handle
        .list_contacts(after.as_deref(), limit, q.as_deref())
        .await
        .map_err(|e| reject(command_error(&ws, &s, e)))?;
    let next = page
        .more
        .then(|| page.contacts.last().map(|c| encode_contact_cursor(&c.id)))
        .flatten();
    Ok(
        warp::reply::json(&json!({ "contacts": page.contacts, "next_cursor": next }))
            .into_response(),
    )
}
