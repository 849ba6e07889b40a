//! Requests and responses of the built-in agent: parsing with Consul's presence flags and
//! percent-decoding, body limits, and Consul's plain-text errors and index headers.

use super::*;

// === request ===

/// A parsed request.
pub(super) struct Req {
    pub(super) method: Method,
    /// Percent-decoded path.
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Req {
    /// Presence flag: any value counts (`?recurse=false` is a recurse).
    pub(super) fn has(&self, k: &str) -> bool {
        self.query.iter().any(|(n, _)| n == k)
    }

    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn all(&self, k: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(super) fn token(&self) -> Option<String> {
        if let Some(t) = self
            .headers
            .get("x-consul-token")
            .and_then(|v| v.to_str().ok())
        {
            return Some(t.to_string());
        }
        if let Some(t) = self
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return Some(t.trim().to_string());
        }
        self.get("token").map(str::to_string)
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept literally, as Go's path handling does for
/// raw paths it cannot decode is not reached here: hyper already rejected malformed URIs).
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) async fn read_body<S, B>(body: S, limit: usize) -> Result<Bytes, Resp>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            text(
                StatusCode::BAD_REQUEST,
                &format!("Failed to read request body: {e}"),
            )
        })?;
        while chunk.has_remaining() {
            let part = chunk.chunk();
            if out.len() + part.len() > limit {
                return Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("Request body too large, max size: {limit} bytes"),
                ));
            }
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(out))
}

// === responses ===

pub(super) fn text(status: StatusCode, body: &str) -> Resp {
    let mut resp = http::Response::new(body.as_bytes().to_vec());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.into_response()
}

pub(super) fn status_code(n: u16) -> StatusCode {
    StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(super) fn state_error(e: &StateError) -> Resp {
    text(status_code(e.status()), &e.to_string())
}

pub(super) fn json_resp(status: StatusCode, v: &Value, pretty: bool) -> Resp {
    let body = if pretty {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v)
    }
    .unwrap_or_else(|_| b"null".to_vec());
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.into_response()
}

pub(super) fn empty_ok() -> Resp {
    http::Response::new(Vec::new()).into_response()
}

/// Adds `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`.
pub(super) fn with_meta(mut resp: Resp, index: u64) -> Resp {
    let h = resp.headers_mut();
    h.insert("x-consul-index", HeaderValue::from(index));
    h.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    resp
}
