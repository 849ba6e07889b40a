//! The operator dashboard at `/ui/`: the built bundle of `assets/ui/` (`scripts/ui-build`),
//! embedded in the binary so the router needs no extra service, no Node and no files on disk.
//!
//! The page is a single HTML document plus one script and one stylesheet. Answers carry a
//! strict `Content-Security-Policy` (no inline script or style, same-origin connections only,
//! no framing), `nosniff`, `no-referrer`, an `ETag` (SHA-256 prefix of the content, also the
//! `?v=` cache-buster the build writes into `index.html`) and `Cache-Control`: the document is
//! revalidated on every load, an asset requested with its current `?v=` is immutable. No token
//! ever appears in a URL: the page keeps it in `sessionStorage` and sends it as
//! `Authorization: Bearer` on API calls (see docs/dashboard.md).

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use sha2::Digest;

use crate::api::ApiError;

/// The policy of every `/ui/` answer. `blob:` images are the QR codes (fetched with the token,
/// then shown from a blob URL); `data:` covers the inline SVG icons of the stylesheet.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../assets/ui/dist/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/ui/dist/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/ui/dist/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../assets/ui/dist/favicon.svg"),
    },
];

/// The ETag of each asset, in [`ASSETS`] order: the first 16 hex digits of its SHA-256, the
/// same value `scripts/ui-build` appends as `?v=` in `index.html`.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| hex::encode(sha2::Sha256::digest(a.bytes))[..16].to_owned())
        .collect()
});

/// Whether a path belongs to the dashboard (`/ui` or `/ui/…`).
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// Answers a `/ui` path. No token is needed: the bundle holds no data, every API call it makes
/// is authorised on its own.
pub fn serve(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<warp::reply::Response, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the dashboard is read with GET",
        ));
    }
    if path == "/ui" {
        let mut r = warp::reply::Response::new(Bytes::new().into());
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
        security_headers(r.headers_mut());
        return Ok(r);
    }
    let name = match path.strip_prefix("/ui/").unwrap_or_default() {
        "" => "index.html",
        other => other,
    };
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return Err(ApiError::not_found("no such dashboard file"));
    };
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let quoted = format!("\"{etag}\"");
    let versioned = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "v" && v == etag.as_str())
    });
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == quoted));
    let mut r = if fresh {
        let mut r = warp::reply::Response::new(Bytes::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if method == Method::HEAD {
        warp::reply::Response::new(Bytes::new().into())
    } else {
        warp::reply::Response::new(Bytes::from_static(asset.bytes).into())
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        h.insert(header::ETAG, v);
    }
    security_headers(h);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_references_every_asset_with_its_current_version() {
        let index = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        for (i, a) in ASSETS.iter().enumerate().skip(1) {
            let reference = format!("{}?v={}", a.name, ETAGS[i]);
            assert!(
                index.contains(&reference),
                "index.html lacks {reference}: run scripts/ui-build"
            );
        }
        assert!(
            !index.contains("<script>") && !index.contains("style="),
            "inline code would break the CSP"
        );
    }

    #[test]
    fn serves_with_types_caching_and_policy() {
        let h = HeaderMap::new();
        let r = serve(&Method::GET, "/ui/", None, &h).unwrap();
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let q = format!("v={}", ETAGS[1]);
        let r = serve(&Method::GET, "/ui/app.js", Some(&q), &h).unwrap();
        assert!(
            r.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"{}\"", ETAGS[1])).unwrap(),
        );
        let r = serve(&Method::GET, "/ui/app.js", None, &h).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = serve(&Method::GET, "/ui", None, &h).unwrap();
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert!(serve(&Method::GET, "/ui/../Cargo.toml", None, &h).is_err());
        assert!(serve(&Method::POST, "/ui/", None, &h).is_err());
    }
}
