//! The JSON error body and the rejection handling shared by the router and the worker.
//!
//! Every error answer is `{"error": "<code>", "message": "…"}` (DESIGN §7). Handlers return
//! [`ApiError`]; [`recover`] turns any warp rejection, ours or warp's own, into that body so a
//! client never sees warp's plain-text defaults.

use std::convert::Infallible;

use http::StatusCode;
use serde::Serialize;
use warp::Reply;

/// Request bodies larger than this are refused with 413 unless a route sets its own cap.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// Media uploads may be larger than ordinary bodies.
pub const MAX_MEDIA_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// The error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// A stable machine-readable code such as `invalid_workspace` or `shard_unavailable`.
    pub error: String,
    /// A sentence for people.
    pub message: String,
    /// The shard concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shard: Option<u32>,
}

/// An error answer: a status and the JSON body, plus optional extra headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
    /// Extra headers such as `Retry-After`.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: code.to_owned(),
                message: message.into(),
                shard: None,
            },
            headers: Vec::new(),
        }
    }

    /// 400 with the given code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal`; the message should not leak secrets.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Sets the `shard` field.
    pub fn with_shard(mut self, shard: u32) -> Self {
        self.body.shard = Some(shard);
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Turns the error into a warp response.
    pub fn into_response(self) -> warp::reply::Response {
        let mut resp =
            warp::reply::with_status(warp::reply::json(&self.body), self.status).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        ApiError::into_response(self)
    }
}

impl From<crate::ids::IdError> for ApiError {
    fn from(e: crate::ids::IdError) -> Self {
        let code = if e.to_string().starts_with("session") {
            "invalid_session"
        } else {
            "invalid_workspace"
        };
        ApiError::bad_request(code, e.to_string())
    }
}

/// Maps every rejection to the JSON error body. Attach with `.recover(api::recover)`.
pub async fn recover(rej: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(e) = rej.find::<ApiError>() {
        return Ok(e.clone().into_response());
    }
    let err = if rej.is_not_found() {
        ApiError::not_found("no such route")
    } else if rej.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large",
        )
    } else if let Some(e) = rej.find::<warp::filters::body::BodyDeserializeError>() {
        ApiError::bad_request("invalid_body", e.to_string())
    } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    } else if rej.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send a JSON body with Content-Type: application/json",
        )
    } else if let Some(e) = rej.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request("missing_header", e.to_string())
    } else if let Some(e) = rej.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request("invalid_header", e.to_string())
    } else if let Some(e) = rej.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request("invalid_query", e.to_string())
    } else if rej.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "Content-Length is required",
        )
    } else {
        tracing::warn!(rejection = ?rej, "unhandled rejection");
        ApiError::internal("unhandled error")
    };
    Ok(err.into_response())
}
