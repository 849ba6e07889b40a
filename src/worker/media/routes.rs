//! `GET /v1/workspaces/{ws}/sessions/{s}/messages/{wa_id}/media` (docs/api.md "Inbound media"):
//! the decrypted file of an inbound message, with `Content-Type` (the message's mimetype),
//! `Content-Length`, `Content-Disposition` (its file name, quoted safely), `ETag` and
//! `X-Wafleet-Sha256` (hex SHA-256 of the bytes).
//!
//! The gate (ids, token, readiness, ownership) comes first, then the message id is checked
//! (`400 invalid_wa_id`), then the store is asked; only a file not stored yet needs the session
//! WORKING (`409 not_ready`).
//!
//! The body is streamed from the store (64 KiB pieces from disk, S3's own chunks), so a large
//! file is never held whole in the worker's memory.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::Stream;
use http::{HeaderValue, StatusCode};
use warp::{Filter, Reply};

use super::MediaService;
use crate::api::ApiError;
use crate::engine::media::valid_wa_id;
use crate::worker::request::{Api, reject, running_session, unavailable};

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// The header carrying the hex SHA-256 of the file.
pub const SHA256_HEADER: &str = "x-wafleet-sha256";

/// Makes the store's `Send` stream `Sync`, as warp's streaming body asks; the mutex is only
/// ever reached through `&mut`, so it never blocks.
struct SyncStream<S>(Mutex<S>);

impl<S: Stream + Unpin> Stream for SyncStream<S> {
    type Item = S::Item;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        Pin::new(this.0.get_mut().unwrap_or_else(PoisonError::into_inner)).poll_next(cx)
    }
}

/// The media route.
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    warp::path!("v1" / "workspaces" / String / "sessions" / String / "messages" / String / "media")
        .and(warp::get())
        .and(with)
        .and(warp::header::optional::<String>("authorization"))
        .and_then(get_media)
}

/// The message id as clients send it: `@` may arrive as `%40`.
pub fn parse_wa_id(raw: &str) -> Result<String, ApiError> {
    let id = raw
        .replace("%40", "@")
        .replace("%3A", ":")
        .replace("%3a", ":");
    if valid_wa_id(&id) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(
            "invalid_wa_id",
            "wa_id is a serialized message key such as false_4915550002@c.us_3EB0… (at most 256 characters)",
        ))
    }
}

/// A `Content-Disposition` value for `filename`: an ASCII fallback with every unsafe
/// character replaced, and the exact name percent-encoded as RFC 8187 `filename*`.
pub fn content_disposition(filename: Option<&str>, sha256: &str) -> String {
    let name = filename
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| n.to_owned())
        .unwrap_or_else(|| sha256.chars().take(16).collect());
    let ascii: String = name
        .chars()
        .take(200)
        .map(|c| {
            if (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | ';' | '%')) || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes().take(600) {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn service(api: &Api) -> Result<Arc<MediaService>, ApiError> {
    api.shared
        .messaging
        .get()
        .map(|m| m.inbound_media().clone())
        .ok_or_else(|| unavailable("messaging_unavailable", "messaging is not configured"))
}

async fn get_media(ws: String, s: String, wa_id: String, api: Api, auth: Option<String>) -> Resp {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref()).map_err(reject)?;
    let wa_id = parse_wa_id(&wa_id).map_err(reject)?;
    let media = service(&api).map_err(reject)?;
    let served = media
        .fetch(&ws, &s, &wa_id)
        .await
        .map_err(|e| reject(e.api()))?;
    let row = served.row;
    let size = served.blob.size;
    let mut resp = warp::reply::stream(SyncStream(Mutex::new(served.blob.body))).into_response();
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(size));
    let mimetype = row
        .mimetype
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    h.insert(http::header::CONTENT_TYPE, mimetype);
    if let Ok(v) = HeaderValue::from_str(&content_disposition(row.filename.as_deref(), &row.sha256))
    {
        h.insert(http::header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", row.sha256)) {
        h.insert(http::header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&row.sha256) {
        h.insert(SHA256_HEADER, v);
    }
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wa_ids_are_validated_and_decoded() {
        assert_eq!(
            parse_wa_id("false_4915550002%40c.us_3EB0AA").unwrap(),
            "false_4915550002@c.us_3EB0AA"
        );
        for bad in ["nope", "false_a/b", "false_..%2F..", ""] {
            assert!(parse_wa_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_disposition_quotes_safely() {
        let v = content_disposition(Some("a\"b\r\n;c/ü.pdf"), &"ab".repeat(32));
        assert!(
            v.starts_with("attachment; filename=\"a_b___c__.pdf\""),
            "{v}"
        );
        assert!(
            v.contains("filename*=UTF-8''a%22b%0D%0A%3Bc%2F%C3%BC.pdf"),
            "{v}"
        );
        assert!(HeaderValue::from_str(&v).is_ok());
        assert!(content_disposition(None, &"ab".repeat(32)).contains("abababababababab"));
    }
}
