//! The contact lookup route (docs/api.md "Contacts and LIDs"), and the path-segment decoding
//! and lookup errors the LID routes ([`crate::worker::lids`]) and chat routes share:
//!
//! * `GET /v1/workspaces/{ws}/sessions/{s}/contacts/{phone}/exists` →
//!   `{"exists", "wa_id", "lid"}`, cached and rate-limited per session ([`super::Lookups`]).
//!
//! It starts with the worker's gate for a per-session route (ids, token, readiness,
//! ownership), then validates its parameter, then needs the session WORKING (`409 not_ready`,
//! as every other command to a session that is not logged in).

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use serde_json::json;
use warp::{Filter, Reply};

use super::{Admission, ContactsConfig, Lookups};
use crate::api::ApiError;
use crate::engine::contacts::{SERVER_ERROR_PREFIX, UNSUPPORTED_PREFIX};
use crate::engine::{EngineError, SessionCommandError, SessionHandle, Status};
use crate::ids::{SessionId, WorkspaceId};
use crate::worker::layout::now_ms;
use crate::worker::request::{Api, parse_phone, reject, running_session};

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// The header saying whether an exists answer came from the cache (`hit`) or from WhatsApp
/// (`miss`).
pub const CACHE_HEADER: &str = "wafleet-cache";

/// The exists route, with the lookup state it keeps (settings from the environment,
/// [`ContactsConfig::from_lookup`]).
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let lookups = Arc::new(Lookups::new(ContactsConfig::from_lookup(|k| {
        std::env::var(k).ok()
    })));
    let with = warp::any().map(move || api.clone());
    let with_lookups = warp::any().map(move || lookups.clone());
    let auth = warp::header::optional::<String>("authorization");
    warp::path!("v1" / "workspaces" / String / "sessions" / String / "contacts" / String / "exists")
        .and(warp::get())
        .and(with)
        .and(with_lookups)
        .and(auth)
        .and_then(exists)
}

/// A path segment as clients send it: `+` may arrive as `%2B`, spaces as `%20`, `@` as `%40`.
pub(crate) fn decode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).unwrap_or_default();
        match code.to_ascii_uppercase().as_str() {
            "2B" => out.push('+'),
            "20" => out.push(' '),
            "40" => out.push('@'),
            // Anything else stays as it is, and the validation refuses it.
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

/// The handle of a WORKING session: 501 without a browser host, 404 for no such session, 409
/// `not_ready` while it is not logged in.
pub(crate) fn working(
    api: &Api,
    ws: &WorkspaceId,
    s: &SessionId,
) -> Result<SessionHandle, ApiError> {
    crate::worker::request::working_session(api, ws, s, "contact lookups")
}

fn not_working(status: Status) -> ApiError {
    crate::worker::request::not_working("contact lookups", status)
}

/// The documented error for a failed lookup.
pub(crate) fn lookup_error(ws: &WorkspaceId, s: &SessionId, e: SessionCommandError) -> ApiError {
    match e {
        SessionCommandError::WrongStatus(status) => not_working(status),
        SessionCommandError::Engine(EngineError::Closed) | SessionCommandError::Gone => {
            not_working(Status::Stopped)
        }
        SessionCommandError::Engine(EngineError::Invalid(m)) => {
            ApiError::bad_request("invalid_body", m)
        }
        SessionCommandError::Engine(EngineError::Adapter(m))
            if m.starts_with(UNSUPPORTED_PREFIX) =>
        {
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_supported", m)
        }
        SessionCommandError::Engine(EngineError::Adapter(m))
            if m.starts_with(SERVER_ERROR_PREFIX) =>
        {
            ApiError::new(StatusCode::BAD_GATEWAY, "whatsapp_error", m)
        }
        SessionCommandError::Engine(EngineError::Timeout(what)) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "lookup_timeout",
            format!("WhatsApp Web did not answer the {what} in time"),
        ),
        other => {
            tracing::warn!(workspace = %ws, session = %s, error = %other, "contact lookup failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "whatsapp_error",
                format!("the lookup failed in WhatsApp Web: {other}"),
            )
        }
    }
}

async fn exists(
    ws: String,
    s: String,
    phone: String,
    api: Api,
    lookups: Arc<Lookups>,
    auth: Option<String>,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let digits = parse_phone(&decode_segment(&phone)).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let (answer, hit) = match lookups.admit(&ws, &s, &digits, now_ms()) {
        Admission::Cached(answer) => (answer, true),
        Admission::Limited(wait_ms) => {
            let secs = wait_ms.div_ceil(1000).max(1);
            return Err(reject(
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "this session looks up at most {} numbers a minute (burst {}); retry in {secs} s",
                        lookups.config().per_minute,
                        lookups.config().burst
                    ),
                )
                .with_header(http::header::RETRY_AFTER, HeaderValue::from(secs)),
            ));
        }
        Admission::Query => {
            let answer = handle
                .query_exists(&digits)
                .await
                .map_err(|e| reject(lookup_error(&ws, &s, e)))?;
            lookups.remember(&ws, &s, &digits, &answer, now_ms());
            (answer, false)
        }
    };
    let mut resp = warp::reply::json(&json!({
        "exists": answer.exists,
        "wa_id": answer.wa_id,
        "lid": answer.lid,
    }))
    .into_response();
    resp.headers_mut().insert(
        CACHE_HEADER,
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_decoded_only_where_clients_encode() {
        assert_eq!(decode_segment("%2B49%201555"), "+49 1555");
        assert_eq!(decode_segment("123%40lid"), "123@lid");
        assert_eq!(decode_segment("12%2F34"), "12%2F34");
        assert_eq!(decode_segment("%"), "%");
        assert_eq!(decode_segment("9%4"), "9%4");
        assert!(parse_phone(&decode_segment("%2B4915550002")).is_ok());
        assert!(parse_phone(&decode_segment("..%2F..%2Fetc")).is_err());
    }
}
