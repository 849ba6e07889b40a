//! The control API's request bodies and its shared answer helpers: capped JSON bodies, the web-
//! version request, and how the phone's results and errors become JSON replies.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebVersionReq {
    #[serde(default)]
    pub(super) version: Option<String>,
    #[serde(default)]
    pub(super) retire: Option<Vec<String>>,
}

pub(super) fn web_version(req: WebVersionReq, shared: &Shared) -> warp::reply::Response {
    let retire = req.retire.unwrap_or_default();
    if req.version.is_none() && retire.is_empty() {
        return ApiError::bad_request("invalid_body", "give version and/or retire").into_response();
    }
    match shared.with(|sim, _| sim.set_web_versions(req.version.as_deref(), &retire)) {
        Ok(v) => warp::reply::json(&v).into_response(),
        Err(e) => {
            let (status, code) = match &e {
                VersionError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_version"),
                VersionError::Unknown(_) => (StatusCode::NOT_FOUND, "unknown_version"),
                VersionError::Conflict(code, _) => (StatusCode::CONFLICT, *code),
                VersionError::TooMany => (StatusCode::CONFLICT, "too_many_versions"),
            };
            ApiError::new(status, code, e.to_string()).into_response()
        }
    }
}

pub(super) fn json_body<T: DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    json_body_up_to(MAX_CONTROL_BODY_BYTES)
}

/// A JSON body of at most `limit` bytes.
pub(super) fn json_body_up_to<T: DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(limit)
        .and(warp::body::bytes())
        .and_then(|bytes: bytes::Bytes| async move {
            serde_json::from_slice::<T>(&bytes).map_err(|e| {
                warp::reject::custom(ApiError::bad_request("invalid_body", e.to_string()))
            })
        })
}

/// 200 with the link, or 202 `{"passkey": "pending", "phone"}` while passkey linking holds it.
pub(super) fn link_reply(r: Result<LinkOutcome, PhoneError>) -> warp::reply::Response {
    match r {
        Ok(o @ LinkOutcome::Passkey { .. }) => {
            warp::reply::with_status(warp::reply::json(&o), StatusCode::ACCEPTED).into_response()
        }
        other => reply(other),
    }
}

pub(super) fn reply<T: serde::Serialize>(r: Result<T, PhoneError>) -> warp::reply::Response {
    match r {
        Ok(v) => warp::reply::json(&v).into_response(),
        Err(e) => phone_error(e).into_response(),
    }
}

pub(super) fn phone_error(e: PhoneError) -> ApiError {
    match e {
        PhoneError::Invalid(code, m) => ApiError::bad_request(code, m),
        PhoneError::NotFound(code, m) => ApiError::new(StatusCode::NOT_FOUND, code, m),
        PhoneError::Conflict(code, m) => ApiError::new(StatusCode::CONFLICT, code, m),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkReq {
    pub(super) qr: String,
    pub(super) phone: String,
    #[serde(default)]
    pub(super) name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PairReq {
    pub(super) phone: String,
    pub(super) code: String,
    #[serde(default)]
    pub(super) name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeReq {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) wa_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasskeyReq {
    pub(super) phone: String,
    pub(super) action: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PhoneReq {
    pub(super) phone: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct PhoneQuery {
    pub(super) phone: Option<String>,
}
