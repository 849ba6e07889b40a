//! The typed async Consul HTTP client (reqwest + rustls) and its configuration.
//!
//! One [`Client`] per process is enough (it is `Clone` and pools connections). It speaks the
//! exact subset wafleet needs: KV, sessions, agent services and TTL checks, health, txn. Flag
//! parameters are sent as presence flags only when set (`?recurse`, never `?recurse=false`,
//! which real Consul reads as "recurse"), keys are validated and then URL-encoded per segment,
//! and every non-success answer becomes a [`ConsulError`] that keeps the status and Consul's
//! plain-text body. The ACL token goes in `X-Consul-Token` and is never logged or printed.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::ConsulError;
use super::duration::format_go_duration;
use super::key::{validate_key, validate_prefix};
use super::types::*;

mod agent;
mod config;

use config::parse_address;
pub use config::{Config, DEFAULT_HTTP_ADDR};

/// Timeout of a request that does not block.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Extra time allowed beyond `wait + wait/16` for a blocking query (network slack).
const BLOCKING_SLACK: Duration = Duration::from_secs(5);

/// Consul's maximum `wait` (longer values are capped by the server anyway).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// Consul's documented transaction limit in current KV docs.
pub const MAX_TXN_OPS: usize = 64;

// === query options ===

/// Blocking and consistency options of a read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// `?index=`: block until the result's index is greater (0/None = do not block).
    pub index: Option<u64>,
    /// `?wait=`: how long to block at most (Consul's default is 5 min, max 10 min).
    pub wait: Option<Duration>,
    /// `?stale`: any server may answer (cheaper; for discovery reads).
    pub stale: bool,
    /// `?consistent`.
    pub consistent: bool,
}

impl QueryOptions {
    /// A blocking read at `index` for at most `wait`.
    pub fn blocking(index: u64, wait: Duration) -> Self {
        QueryOptions {
            index: Some(index),
            wait: Some(wait),
            ..Default::default()
        }
    }
}

// === impl Client ===

/// The Consul HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<Arc<str>>,
    /// `Authorization: Basic …` (`CONSUL_HTTP_AUTH`), marked sensitive.
    basic_auth: Option<reqwest::header::HeaderValue>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Every certificate in the files of `dir` (`CONSUL_CAPATH`), as Consul's `go-rootcerts` reads
/// a CA directory: each regular file is PEM; files holding no certificate are skipped, a
/// directory without any certificate is an error.
fn load_ca_dir(dir: &PathBuf) -> Result<Vec<reqwest::Certificate>, ConsulError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConsulError::Config(format!("CONSUL_CAPATH {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let pem = read_file(&p, "CONSUL_CAPATH file")?;
        if let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem) {
            out.extend(certs);
        }
    }
    if out.is_empty() {
        return Err(ConsulError::Config(format!(
            "CONSUL_CAPATH {} holds no certificate",
            dir.display()
        )));
    }
    Ok(out)
}

fn read_file(path: &PathBuf, what: &str) -> Result<Vec<u8>, ConsulError> {
    std::fs::read(path)
        .map_err(|e| ConsulError::Config(format!("cannot read {what} {}: {e}", path.display())))
}

impl Client {
    /// Builds a client (loads TLS material from files).
    pub fn new(config: &Config) -> Result<Client, ConsulError> {
        let base = match &config.address {
            Some(u) => u.clone(),
            None => parse_address(DEFAULT_HTTP_ADDR)?,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(ca) = &config.ca_cert {
            let pem = read_file(ca, "CONSUL_CACERT")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ConsulError::Config(format!("CONSUL_CACERT: {e}")))?;
            if certs.is_empty() {
                return Err(ConsulError::Config(
                    "CONSUL_CACERT holds no certificate".into(),
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
            let mut pem = read_file(cert, "CONSUL_CLIENT_CERT")?;
            pem.push(b'\n');
            pem.extend(read_file(key, "CONSUL_CLIENT_KEY")?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| ConsulError::Config(format!("client certificate/key: {e}")))?;
            builder = builder.identity(id);
        }
        if let Some(dir) = &config.ca_path {
            for c in load_ca_dir(dir)? {
                builder = builder.add_root_certificate(c);
            }
        }
        if config.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let mut base = base;
        if let Some(name) = &config.tls_server_name
            && base.scheme() == "https"
            && base.host_str() != Some(name.as_str())
        {
            // reqwest verifies (and sends as SNI) the URL's host. To check the certificate
            // against another name, address that name and pin it to the configured host's
            // addresses, resolved once here.
            let host = base.host_str().unwrap_or_default().to_owned();
            let port = base.port_or_known_default().unwrap_or(443);
            let addrs: Vec<std::net::SocketAddr> = {
                use std::net::ToSocketAddrs;
                let h = host.trim_start_matches('[').trim_end_matches(']');
                (h, port)
                    .to_socket_addrs()
                    .map_err(|e| ConsulError::Config(format!("CONSUL_HTTP_ADDR host {host}: {e}")))?
                    .collect()
            };
            base.set_host(Some(name)).map_err(|e| {
                ConsulError::Config(format!("CONSUL_TLS_SERVER_NAME {name:?}: {e}"))
            })?;
            builder = builder.resolve_to_addrs(name, &addrs);
        }
        let http = builder
            .build()
            .map_err(|e| ConsulError::Config(format!("HTTP client: {e}")))?;
        if let Some(t) = &config.token
            && reqwest::header::HeaderValue::from_str(t).is_err()
        {
            return Err(ConsulError::Config(
                "the ACL token contains characters not allowed in an HTTP header".into(),
            ));
        }
        let basic_auth = match &config.basic_auth {
            Some((user, pass)) => {
                use base64::Engine;
                let raw = format!("{user}:{}", pass.as_deref().unwrap_or(""));
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                let mut v = reqwest::header::HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| ConsulError::Config("CONSUL_HTTP_AUTH is not usable".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Client {
            http,
            base,
            token: config.token.as_deref().map(Arc::from),
            basic_auth,
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    // --- URL building (pure, unit-tested) ---

    /// `base` + fixed path segments + (optionally) a KV key or prefix, each key segment
    /// percent-encoded on its own so `/` stays a separator and nothing else is interpreted.
    pub(crate) fn url(&self, fixed: &[&str], key: Option<&str>) -> Url {
        let mut url = self.base.clone();
        {
            // http(s) URLs always have a path, so path_segments_mut cannot fail here; fall
            // back to the unmodified URL rather than panic.
            if let Ok(mut segs) = url.path_segments_mut() {
                segs.pop_if_empty();
                segs.extend(fixed);
                if let Some(k) = key {
                    segs.extend(k.split('/'));
                }
            }
        }
        url
    }

    fn request(&self, method: Method, url: Url, q: Option<&QueryOptions>) -> RequestBuilder {
        let mut url = url;
        let mut timeout = DEFAULT_REQUEST_TIMEOUT;
        if let Some(q) = q {
            let mut pairs = url.query_pairs_mut();
            if let Some(i) = q.index.filter(|i| *i > 0) {
                pairs.append_pair("index", &i.to_string());
            }
            if let Some(w) = q.wait {
                let w = w.min(MAX_WAIT);
                pairs.append_pair("wait", &format_go_duration(w));
                // Consul adds up to wait/16 of jitter; the HTTP timeout must exceed it.
                timeout = w + w / 16 + BLOCKING_SLACK;
            }
            if q.stale {
                append_flag(&mut pairs, "stale");
            }
            if q.consistent {
                append_flag(&mut pairs, "consistent");
            }
        }
        // `query_pairs_mut` leaves a dangling '?' when nothing was added.
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut rb = self.http.request(method, url).timeout(timeout);
        if let Some(auth) = &self.basic_auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        if let Some(t) = &self.token {
            // Marked sensitive so no Debug output of the request shows it. A token that is not
            // a valid header value was refused by `Client::new`.
            if let Ok(mut v) = reqwest::header::HeaderValue::from_str(t) {
                v.set_sensitive(true);
                rb = rb.header("X-Consul-Token", v);
            }
        }
        rb
    }

    async fn send(rb: RequestBuilder) -> Result<Response, ConsulError> {
        rb.send().await.map_err(ConsulError::Transport)
    }

    async fn error_from(resp: Response) -> ConsulError {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        ConsulError::Status { status, body }
    }

    async fn expect_ok(resp: Response) -> Result<Response, ConsulError> {
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(Self::error_from(resp).await)
        }
    }

    async fn json<T: DeserializeOwned>(
        resp: Response,
        what: &'static str,
    ) -> Result<T, ConsulError> {
        let bytes = resp.bytes().await.map_err(ConsulError::Transport)?;
        serde_json::from_slice(&bytes).map_err(|e| ConsulError::Decode {
            what,
            detail: e.to_string(),
        })
    }

    async fn bool_body(resp: Response) -> Result<bool, ConsulError> {
        let resp = Self::expect_ok(resp).await?;
        let text = resp.text().await.map_err(ConsulError::Transport)?;
        match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(ConsulError::Decode {
                what: "boolean answer",
                detail: format!("expected true or false, got {other:?}"),
            }),
        }
    }

    fn meta(resp: &Response) -> QueryMeta {
        let h = resp.headers();
        QueryMeta {
            index: h
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            known_leader: h
                .get("X-Consul-KnownLeader")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "true"),
        }
    }

    // === KV ===

    /// `GET /v1/kv/<key>`: the entry, or `None` on 404 (the meta is set either way, so a
    /// blocking watch on a key that does not exist yet works).
    pub async fn kv_get(
        &self,
        key: &str,
        q: &QueryOptions,
    ) -> Result<(Option<KvPair>, QueryMeta), ConsulError> {
        validate_key(key)?;
        let resp =
            Self::send(self.request(Method::GET, self.url(&["v1", "kv"], Some(key)), Some(q)))
                .await?;
        let meta = Self::meta(&resp);
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok((None, meta));
        }
        let resp = Self::expect_ok(resp).await?;
        let list: Vec<KvPair> = Self::json(resp, "KV entry").await?;
        // The answer is always an array; a single-key read holds at most the key itself.
        Ok((list.into_iter().find(|p| p.key == key), meta))
    }

    /// `GET /v1/kv/<prefix>?recurse`: every entry under the prefix (empty on 404).
    pub async fn kv_list(
        &self,
        prefix: &str,
        q: &QueryOptions,
    ) -> Result<(Vec<KvPair>, QueryMeta), ConsulError> {
        validate_prefix(prefix)?;
        let mut url = self.url(&["v1", "kv"], Some(prefix));
        append_flag(&mut url.query_pairs_mut(), "recurse");
        let resp = Self::send(self.request(Method::GET, url, Some(q))).await?;
        let meta = Self::meta(&resp);
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok((Vec::new(), meta));
        }
        let resp = Self::expect_ok(resp).await?;
        Ok((Self::json(resp, "KV list").await?, meta))
    }

    /// `GET /v1/kv/<prefix>?keys[&separator=]`: key names under the prefix (empty on 404).
    pub async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        q: &QueryOptions,
    ) -> Result<(Vec<String>, QueryMeta), ConsulError> {
        validate_prefix(prefix)?;
        let mut url = self.url(&["v1", "kv"], Some(prefix));
        {
            let mut p = url.query_pairs_mut();
            append_flag(&mut p, "keys");
            if let Some(s) = separator {
                p.append_pair("separator", s);
            }
        }
        let resp = Self::send(self.request(Method::GET, url, Some(q))).await?;
        let meta = Self::meta(&resp);
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok((Vec::new(), meta));
        }
        let resp = Self::expect_ok(resp).await?;
        let keys: Option<Vec<String>> = Self::json(resp, "KV keys").await?;
        Ok((keys.unwrap_or_default(), meta))
    }

    /// `PUT /v1/kv/<key>` with the raw value; returns Consul's `true`/`false` (meaningful for
    /// `cas`, `acquire`, `release`; a plain put answers `true`).
    pub async fn kv_put(
        &self,
        key: &str,
        value: &[u8],
        opts: &PutOptions,
    ) -> Result<bool, ConsulError> {
        validate_key(key)?;
        let exclusive = [
            opts.cas.is_some(),
            opts.acquire.is_some(),
            opts.release.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if exclusive > 1 {
            return Err(ConsulError::InvalidRequest(
                "cas, acquire and release are mutually exclusive".into(),
            ));
        }
        let mut url = self.url(&["v1", "kv"], Some(key));
        {
            let mut p = url.query_pairs_mut();
            if let Some(c) = opts.cas {
                p.append_pair("cas", &c.to_string());
            }
            if let Some(s) = &opts.acquire {
                p.append_pair("acquire", s);
            }
            if let Some(s) = &opts.release {
                p.append_pair("release", s);
            }
            if let Some(f) = opts.flags {
                p.append_pair("flags", &f.to_string());
            }
        }
        let rb = self.request(Method::PUT, url, None).body(value.to_vec());
        Self::bool_body(Self::send(rb).await?).await
    }

    /// `DELETE /v1/kv/<key>` (single, `recurse`, or `cas`). Returns Consul's boolean. With
    /// `recurse` the key is a prefix (greedy: end it with `/` to mean a folder).
    pub async fn kv_delete(&self, key: &str, opts: &DeleteOptions) -> Result<bool, ConsulError> {
        if opts.recurse {
            validate_prefix(key)?;
            if key.is_empty() {
                return Err(ConsulError::InvalidKey {
                    key: String::new(),
                    reason: "refusing to delete the whole KV store",
                });
            }
            if opts.cas.is_some() {
                return Err(ConsulError::InvalidRequest(
                    "recurse and cas conflict".into(),
                ));
            }
        } else {
            validate_key(key)?;
        }
        if opts.cas == Some(0) {
            return Err(ConsulError::InvalidRequest(
                "a delete cas index must be > 0".into(),
            ));
        }
        let mut url = self.url(&["v1", "kv"], Some(key));
        {
            let mut p = url.query_pairs_mut();
            if opts.recurse {
                append_flag(&mut p, "recurse");
            }
            if let Some(c) = opts.cas {
                p.append_pair("cas", &c.to_string());
            }
        }
        Self::bool_body(Self::send(self.request(Method::DELETE, url, None)).await?).await
    }

    // === sessions ===

    /// `PUT /v1/session/create` → the session id.
    pub async fn session_create(&self, req: &SessionRequest) -> Result<String, ConsulError> {
        let rb = self
            .request(
                Method::PUT,
                self.url(&["v1", "session", "create"], None),
                None,
            )
            .json(req);
        let resp = Self::expect_ok(Self::send(rb).await?).await?;
        Ok(Self::json::<IdResponse>(resp, "session create").await?.id)
    }

    /// `PUT /v1/session/renew/<id>` → the session (its TTL may be larger than requested).
    /// 404 is [`ConsulError::SessionNotFound`].
    pub async fn session_renew(&self, id: &str) -> Result<SessionInfo, ConsulError> {
        let url = self.url(&["v1", "session", "renew", id], None);
        let resp = Self::send(self.request(Method::PUT, url, None)).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(ConsulError::SessionNotFound(id.to_owned()));
        }
        let resp = Self::expect_ok(resp).await?;
        let list: Option<Vec<SessionInfo>> = Self::json(resp, "session renew").await?;
        list.unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| ConsulError::SessionNotFound(id.to_owned()))
    }

    /// `PUT /v1/session/destroy/<id>` (idempotent).
    pub async fn session_destroy(&self, id: &str) -> Result<bool, ConsulError> {
        let url = self.url(&["v1", "session", "destroy", id], None);
        Self::bool_body(Self::send(self.request(Method::PUT, url, None)).await?).await
    }

    /// `GET /v1/session/info/<id>`: `None` when unknown.
    pub async fn session_info(
        &self,
        id: &str,
        q: &QueryOptions,
    ) -> Result<(Option<SessionInfo>, QueryMeta), ConsulError> {
        let url = self.url(&["v1", "session", "info", id], None);
        let resp =
            Self::expect_ok(Self::send(self.request(Method::GET, url, Some(q))).await?).await?;
        let meta = Self::meta(&resp);
        let list: Option<Vec<SessionInfo>> = Self::json(resp, "session info").await?;
        Ok((list.unwrap_or_default().into_iter().next(), meta))
    }
}

impl Client {
    // === txn ===

    /// `PUT /v1/txn` with KV operations (at most 64). 409 is a [`TxnOutcome::RolledBack`].
    pub async fn txn(&self, ops: &[TxnKvOp]) -> Result<TxnOutcome, ConsulError> {
        if ops.is_empty() || ops.len() > MAX_TXN_OPS {
            return Err(ConsulError::InvalidRequest(format!(
                "a transaction needs 1..={MAX_TXN_OPS} operations, got {}",
                ops.len()
            )));
        }
        for op in ops {
            match op.verb {
                TxnVerb::GetTree | TxnVerb::DeleteTree => validate_prefix(&op.key)?,
                _ => validate_key(&op.key)?,
            }
        }
        let wire: Vec<TxnOpWire<'_>> = ops.iter().map(|kv| TxnOpWire { kv }).collect();
        let rb = self
            .request(Method::PUT, self.url(&["v1", "txn"], None), None)
            .json(&wire);
        let resp = Self::send(rb).await?;
        match resp.status() {
            StatusCode::OK => {
                let body: TxnResponseWire = Self::json(resp, "txn answer").await?;
                Ok(TxnOutcome::Committed(
                    body.results.into_iter().filter_map(|r| r.kv).collect(),
                ))
            }
            StatusCode::CONFLICT => {
                let body: TxnResponseWire = Self::json(resp, "txn answer").await?;
                Ok(TxnOutcome::RolledBack(body.errors))
            }
            _ => Err(Self::error_from(resp).await),
        }
    }
}

/// Appends a presence flag (`?recurse`, no `=value`): Consul only checks that the parameter
/// is present, so `recurse=false` would mean "recurse".
fn append_flag(pairs: &mut url::form_urlencoded::Serializer<'_, url::UrlQuery<'_>>, name: &str) {
    pairs.append_key_only(name);
}

#[cfg(test)]
mod tests;
