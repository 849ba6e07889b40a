//! Fetching media given by URL in `POST …/messages` (`{"media": {"url": …}}`), safely.
//!
//! The worker fetches on behalf of a workspace, so the URL must not let a workspace reach the
//! fleet's internal network (SSRF): only `http`/`https`, the host is resolved once and every
//! address must be public (not loopback, private, link-local, unique-local, unspecified,
//! multicast or documentation) unless the operator's allow-list `WAFLEET_MEDIA_ALLOW` (same
//! syntax as `WAFLEET_WEBHOOK_ALLOW`: `host`, `*.suffix`, `10.0.0.0/8`, an IP) names the host;
//! the connection then goes to the address that was checked (no DNS rebinding). Redirects are
//! not followed; the size is capped while streaming (`WAFLEET_MEDIA_MAX_BYTES`, default
//! 16 MiB) and the whole fetch has a timeout (`WAFLEET_MEDIA_TIMEOUT_MS`, default 15 s).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt as _;
use http::StatusCode;
use url::Url;

use crate::api::ApiError;
use crate::webhook::UrlPolicy;

/// Default size cap (the engine's own limit).
pub const DEFAULT_MAX_BYTES: usize = crate::engine::driver::MAX_MEDIA_BYTES;
/// Default whole-fetch timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// How media URLs may be fetched.
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    /// Hosts or networks allowed even when they resolve to non-public addresses.
    pub allow: Option<UrlPolicy>,
    /// Size cap in bytes.
    pub max_bytes: usize,
    /// Timeout of the whole fetch.
    pub timeout: Duration,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        Self {
            allow: None,
            max_bytes: DEFAULT_MAX_BYTES,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl MediaPolicy {
    /// Reads `WAFLEET_MEDIA_ALLOW`, `WAFLEET_MEDIA_MAX_BYTES`, `WAFLEET_MEDIA_TIMEOUT_MS`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut p = Self::default();
        if let Some(list) = lookup("WAFLEET_MEDIA_ALLOW").filter(|v| !v.trim().is_empty()) {
            p.allow =
                Some(UrlPolicy::parse(&list).map_err(|e| format!("WAFLEET_MEDIA_ALLOW: {e}"))?);
        }
        if let Some(v) = lookup("WAFLEET_MEDIA_MAX_BYTES") {
            p.max_bytes = v
                .trim()
                .parse()
                .map_err(|_| format!("WAFLEET_MEDIA_MAX_BYTES: not a number: {v}"))?;
        }
        if let Some(v) = lookup("WAFLEET_MEDIA_TIMEOUT_MS") {
            let ms: u64 = v
                .trim()
                .parse()
                .map_err(|_| format!("WAFLEET_MEDIA_TIMEOUT_MS: not a number: {v}"))?;
            p.timeout = Duration::from_millis(ms.max(1));
        }
        Ok(p)
    }

    /// Fetches `url` under this policy: the bytes and the answer's content type.
    pub async fn fetch(&self, url: &str) -> Result<(bytes::Bytes, Option<String>), ApiError> {
        let bad = |m: String| ApiError::bad_request("invalid_media_url", m);
        let url = Url::parse(url).map_err(|e| bad(format!("media.url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("media.url must be http or https".into()));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad("media.url has no host".into()))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let allowed = self.allow.as_ref().is_some_and(|a| a.allows(&url));
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(self.timeout, tokio::net::lookup_host((host.as_str(), port)))
                .await
                .map_err(|_| bad("media.url: name resolution timed out".into()))?
                .map_err(|e| bad(format!("media.url: cannot resolve host: {e}")))?
                .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| bad("media.url: host has no address".into()))?;
        if !allowed && addrs.iter().any(|a| !is_public(a.ip())) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "media_url_forbidden",
                "media.url resolves to a non-public address (set WAFLEET_MEDIA_ALLOW to permit it)",
            ));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .resolve(&host, addr)
            .build()
            .map_err(|e| ApiError::internal(format!("media client: {e}")))?;
        let fetch = async {
            let resp = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| bad(format!("media.url: fetch failed: {e}")))?;
            if !resp.status().is_success() {
                return Err(bad(format!("media.url answered {}", resp.status())));
            }
            if resp
                .content_length()
                .is_some_and(|n| n > self.max_bytes as u64)
            {
                return Err(too_large(self.max_bytes));
            }
            let ctype = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
            let mut buf = bytes::BytesMut::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| bad(format!("media.url: reading failed: {e}")))?;
                if buf.len() + chunk.len() > self.max_bytes {
                    return Err(too_large(self.max_bytes));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok((buf.freeze(), ctype))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| bad("media.url: fetch timed out".into()))?
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "media_too_large",
        format!("media is larger than {max} bytes"),
    )
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 carrier-grade NAT
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[tokio::test]
    async fn loopback_refused_without_allow_list() {
        let p = MediaPolicy::default();
        let e = p.fetch("http://127.0.0.1:9/x.png").await.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = p.fetch("file:///etc/passwd").await.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    /// A loopback server: `/small` (5 bytes, image/png), `/big` (2 KiB), `/redirect`.
    async fn server() -> std::net::SocketAddr {
        use warp::Filter;
        let small = warp::path("small")
            .map(|| warp::reply::with_header(b"hello".to_vec(), "content-type", "image/png; x=1"));
        let big = warp::path("big").map(|| vec![7u8; 2048]);
        let redirect =
            warp::path("redirect").map(|| warp::redirect::found(http::Uri::from_static("/small")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            warp::serve(
                small
                    .map(warp::Reply::into_response)
                    .or(big.map(warp::Reply::into_response))
                    .unify()
                    .or(redirect.map(warp::Reply::into_response))
                    .unify(),
            )
            .incoming(listener)
            .run(),
        );
        addr
    }

    #[tokio::test]
    async fn allow_list_size_cap_and_no_redirects() {
        let addr = server().await;
        let p = MediaPolicy::from_lookup(|k| match k {
            "WAFLEET_MEDIA_ALLOW" => Some("127.0.0.1".into()),
            "WAFLEET_MEDIA_MAX_BYTES" => Some("1024".into()),
            _ => None,
        })
        .unwrap();
        let (data, ctype) = p.fetch(&format!("http://{addr}/small")).await.unwrap();
        assert_eq!(&data[..], b"hello");
        assert_eq!(ctype.as_deref(), Some("image/png"));
        let e = p.fetch(&format!("http://{addr}/big")).await.unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = p
            .fetch(&format!("http://{addr}/redirect"))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        // Without the allow-list the same loopback server is refused.
        let e = MediaPolicy::default()
            .fetch(&format!("http://{addr}/small"))
            .await
            .unwrap_err();
        assert_eq!(e.body.error, "media_url_forbidden");
    }
}
