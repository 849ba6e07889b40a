//! The LID routes (docs/api.md "Contacts and LIDs"): WhatsApp Web's own LID ↔ phone number
//! mapping of one session.
//!
//! * `GET /v1/workspaces/{ws}/sessions/{s}/lids/{lid}` → `{"lid", "pn"}`;
//! * `GET …/sessions/{s}/lids/pn/{phone}` → `{"pn", "lid"}`;
//! * `404 lid_not_found` when WhatsApp Web has no mapping.
//!
//! Like the contact routes they start with the worker's gate for a per-session route (ids,
//! token, readiness, ownership), validate the parameter, then need the session WORKING.

use http::StatusCode;
use serde_json::json;
use warp::{Filter, Reply};

use crate::api::ApiError;
use crate::worker::contacts::routes::{decode_segment, lookup_error, working};
use crate::worker::request::{Api, parse_phone, reject, running_session};

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// The LID routes (compose them into the worker filter before its `recover`).
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    let auth = warp::header::optional::<String>("authorization");
    let lid = warp::path!("v1" / "workspaces" / String / "sessions" / String / "lids" / String)
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and_then(phone_for_lid);
    let pn =
        warp::path!("v1" / "workspaces" / String / "sessions" / String / "lids" / "pn" / String)
            .and(warp::get())
            .and(with)
            .and(auth)
            .and_then(lid_for_phone);
    pn.or(lid).unify()
}

/// Validates a LID parameter: `<digits>@lid` or the bare digits (5 to 64); answers `<digits>@lid`.
pub fn parse_lid(raw: &str) -> Result<String, ApiError> {
    let decoded = decode_segment(raw);
    let user = decoded.strip_suffix("@lid").unwrap_or(&decoded);
    if (5..=64).contains(&user.len()) && user.bytes().all(|b| b.is_ascii_digit()) {
        Ok(format!("{user}@lid"))
    } else {
        Err(ApiError::bad_request(
            "invalid_lid",
            "lid must be <digits>@lid (5 to 64 digits)",
        ))
    }
}

fn lid_not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "lid_not_found",
        format!("WhatsApp Web knows no LID mapping for {what}"),
    )
}

async fn phone_for_lid(ws: String, s: String, lid: String, api: Api, auth: Option<String>) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let lid = parse_lid(&lid).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let pn = handle
        .phone_for_lid(&lid)
        .await
        .map_err(|e| reject(lookup_error(&ws, &s, e)))?
        .ok_or_else(|| reject(lid_not_found(&lid)))?;
    Ok(warp::reply::json(&json!({ "lid": lid, "pn": pn })).into_response())
}

async fn lid_for_phone(
    ws: String,
    s: String,
    phone: String,
    api: Api,
    auth: Option<String>,
) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let digits = parse_phone(&decode_segment(&phone)).map_err(reject)?;
    let handle = working(&api, &ws, &s).map_err(reject)?;
    let pn = format!("{digits}@c.us");
    let lid = handle
        .lid_for_phone(&digits)
        .await
        .map_err(|e| reject(lookup_error(&ws, &s, e)))?
        .ok_or_else(|| reject(lid_not_found(&pn)))?;
    Ok(warp::reply::json(&json!({ "pn": pn, "lid": lid })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lids_are_digits_at_lid() {
        assert_eq!(
            parse_lid("123456789012345@lid").unwrap(),
            "123456789012345@lid"
        );
        assert_eq!(
            parse_lid("123456789012345%40lid").unwrap(),
            "123456789012345@lid"
        );
        assert_eq!(parse_lid("123456789012345").unwrap(), "123456789012345@lid");
        for bad in [
            "",
            "1234@lid",
            "12345@c.us",
            "abcde@lid",
            "12345-678@lid",
            "pn",
        ] {
            assert!(parse_lid(bad).is_err(), "{bad}");
        }
    }
}
