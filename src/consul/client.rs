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

/// The address used when `CONSUL_HTTP_ADDR` is unset.
pub const DEFAULT_HTTP_ADDR: &str = "http://127.0.0.1:8500";

/// Timeout of a request that does not block.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Extra time allowed beyond `wait + wait/16` for a blocking query (network slack).
const BLOCKING_SLACK: Duration = Duration::from_secs(5);

/// Consul's maximum `wait` (longer values are capped by the server anyway).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// Consul's documented transaction limit in current KV docs.
pub const MAX_TXN_OPS: usize = 64;

// === impl Config ===

/// How to reach Consul: read from Consul's own environment variables.
#[derive(Clone, Default)]
pub struct Config {
    /// Base URL (`http://` or `https://`).
    pub address: Option<Url>,
    /// ACL token sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// `CONSUL_CACERT`: PEM file of CA certificates to trust (in addition to the system's).
    pub ca_cert: Option<PathBuf>,
    /// `CONSUL_CLIENT_CERT`: PEM client certificate (mutual TLS).
    pub client_cert: Option<PathBuf>,
    /// `CONSUL_CLIENT_KEY`: PEM private key of the client certificate.
    pub client_key: Option<PathBuf>,
    /// `CONSUL_CAPATH`: a directory whose files hold PEM CA certificates to trust.
    pub ca_path: Option<PathBuf>,
    /// `CONSUL_HTTP_SSL_VERIFY=false`: do not verify the server's certificate (as Consul's CLI;
    /// for a first bootstrap only).
    pub insecure_skip_verify: bool,
    /// `CONSUL_TLS_SERVER_NAME`: the name the server certificate must carry (and the SNI), when
    /// it differs from the host in the address (e.g. `server.dc1.consul` on `127.0.0.1`).
    pub tls_server_name: Option<String>,
    /// `CONSUL_HTTP_AUTH`: `user[:password]` for HTTP basic authentication.
    pub basic_auth: Option<(String, Option<String>)>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: show only whether one is set.
        f.debug_struct("Config")
            .field("address", &self.address.as_ref().map(Url::as_str))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("ca_path", &self.ca_path)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("tls_server_name", &self.tls_server_name)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .finish()
    }
}

/// Go's `strconv.ParseBool`, which Consul's CLI uses for its boolean variables.
fn parse_go_bool(name: &str, v: &str) -> Result<bool, ConsulError> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(ConsulError::Config(format!(
            "{name} {other:?} is not a boolean (true or false)"
        ))),
    }
}

impl Config {
    /// Reads Consul's own variables, as its CLI and Go API client do:
    ///
    /// * `CONSUL_HTTP_ADDR` (default `http://127.0.0.1:8500`; a bare `host:port` means http,
    ///   or https with `CONSUL_HTTP_SSL=true`);
    /// * `CONSUL_HTTP_TOKEN` (else the first line of `CONSUL_HTTP_TOKEN_FILE`);
    /// * `CONSUL_HTTP_AUTH` (`user[:password]`, basic authentication);
    /// * `CONSUL_HTTP_SSL` (`true` switches the scheme to https), `CONSUL_HTTP_SSL_VERIFY`
    ///   (`false` skips certificate verification);
    /// * `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`,
    ///   `CONSUL_TLS_SERVER_NAME`.
    ///
    /// Empty values count as unset; a boolean that is not one of Go's spellings is an error.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConsulError> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut address =
            parse_address(&get("CONSUL_HTTP_ADDR").unwrap_or(DEFAULT_HTTP_ADDR.into()))?;
        let ssl = match get("CONSUL_HTTP_SSL") {
            Some(v) => parse_go_bool("CONSUL_HTTP_SSL", &v)?,
            None => false,
        };
        // As in Consul's API client: `true` forces https; `false` leaves an explicit
        // `https://` address alone.
        if ssl && address.scheme() == "http" {
            // http → https keeps a valid URL; the port stays as written (a missing one now
            // means 443, as for the Go client).
            let _ = address.set_scheme("https");
        }
        let verify = match get("CONSUL_HTTP_SSL_VERIFY") {
            Some(v) => parse_go_bool("CONSUL_HTTP_SSL_VERIFY", &v)?,
            None => true,
        };
        let basic_auth = get("CONSUL_HTTP_AUTH").map(|v| match v.split_once(':') {
            Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
            None => (v, None),
        });
        let tls_server_name = get("CONSUL_TLS_SERVER_NAME");
        if let Some(n) = &tls_server_name
            && url::Host::parse(n).is_err()
        {
            return Err(ConsulError::Config(format!(
                "CONSUL_TLS_SERVER_NAME {n:?} is not a host name"
            )));
        }
        let cfg = Config {
            address: Some(address),
            token: match get("CONSUL_HTTP_TOKEN") {
                Some(t) => Some(t),
                None => match get("CONSUL_HTTP_TOKEN_FILE") {
                    Some(path) => Some(read_token_file(&path)?),
                    None => None,
                },
            },
            ca_cert: get("CONSUL_CACERT").map(PathBuf::from),
            client_cert: get("CONSUL_CLIENT_CERT").map(PathBuf::from),
            client_key: get("CONSUL_CLIENT_KEY").map(PathBuf::from),
            ca_path: get("CONSUL_CAPATH").map(PathBuf::from),
            insecure_skip_verify: !verify,
            tls_server_name,
            basic_auth,
        };
        if cfg.client_cert.is_some() != cfg.client_key.is_some() {
            return Err(ConsulError::Config(
                "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together".into(),
            ));
        }
        Ok(cfg)
    }

    /// Reads the process environment (for `main` and CLIs; library code takes a lookup).
    pub fn from_env() -> Result<Config, ConsulError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Plain HTTP to `addr` (tests and the built-in agent).
    pub fn http(addr: std::net::SocketAddr) -> Config {
        Config {
            // A SocketAddr always formats to a valid URL authority.
            address: Url::parse(&format!("http://{addr}")).ok(),
            ..Config::default()
        }
    }

    /// The same settings (token, TLS, basic auth) for another endpoint of the datacenter:
    /// `raw` is `host:port` or a URL, as `CONSUL_HTTP_ADDR`; a bare `host:port` takes this
    /// config's scheme (so `CONSUL_HTTP_SSL=true` covers it too).
    pub fn for_address(&self, raw: &str) -> Result<Config, ConsulError> {
        let raw = raw.trim();
        let mut url = parse_address(raw)?;
        if !raw.contains("://") && self.address.as_ref().is_some_and(|a| a.scheme() == "https") {
            // http → https keeps a valid URL.
            let _ = url.set_scheme("https");
        }
        Ok(Config {
            address: Some(url),
            ..self.clone()
        })
    }

    /// Sets the ACL token.
    pub fn with_token(mut self, token: impl Into<String>) -> Config {
        self.token = Some(token.into());
        self
    }
}

fn read_token_file(path: &str) -> Result<String, ConsulError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| ConsulError::Config(format!("CONSUL_HTTP_TOKEN_FILE {path}: {e}")))?;
    let token = raw.trim().to_owned();
    if token.is_empty() {
        return Err(ConsulError::Config(format!(
            "CONSUL_HTTP_TOKEN_FILE {path} is empty"
        )));
    }
    Ok(token)
}

fn parse_address(raw: &str) -> Result<Url, ConsulError> {
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| ConsulError::Config(format!("CONSUL_HTTP_ADDR {raw:?}: {e}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(ConsulError::Config(format!(
                "CONSUL_HTTP_ADDR scheme {other:?} is not supported (use http or https)"
            )));
        }
    }
    if url.host().is_none() {
        return Err(ConsulError::Config(format!(
            "CONSUL_HTTP_ADDR {raw:?} has no host"
        )));
    }
    Ok(url)
}

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

    // === agent ===

    /// `PUT /v1/agent/service/register`.
    pub async fn agent_service_register(
        &self,
        reg: &ServiceRegistration,
    ) -> Result<(), ConsulError> {
        let rb = self
            .request(
                Method::PUT,
                self.url(&["v1", "agent", "service", "register"], None),
                None,
            )
            .json(reg);
        Self::expect_ok(Self::send(rb).await?).await.map(drop)
    }

    /// `PUT /v1/agent/service/deregister/<id>` (a no-op for an unknown id).
    pub async fn agent_service_deregister(&self, id: &str) -> Result<(), ConsulError> {
        let url = self.url(&["v1", "agent", "service", "deregister", id], None);
        Self::expect_ok(Self::send(self.request(Method::PUT, url, None)).await?)
            .await
            .map(drop)
    }

    /// `PUT /v1/agent/check/{pass|warn|fail}/<id>[?note=]`: updates a TTL check.
    pub async fn agent_check_update(
        &self,
        check_id: &str,
        status: CheckStatus,
        note: Option<&str>,
    ) -> Result<(), ConsulError> {
        let verb = match status {
            CheckStatus::Passing => "pass",
            CheckStatus::Warning => "warn",
            CheckStatus::Critical | CheckStatus::Unknown => "fail",
        };
        let mut url = self.url(&["v1", "agent", "check", verb, check_id], None);
        if let Some(n) = note {
            url.query_pairs_mut().append_pair("note", n);
        }
        Self::expect_ok(Self::send(self.request(Method::PUT, url, None)).await?)
            .await
            .map(drop)
    }

    /// `PUT /v1/agent/check/pass/<id>`.
    pub async fn agent_check_pass(
        &self,
        check_id: &str,
        note: Option<&str>,
    ) -> Result<(), ConsulError> {
        self.agent_check_update(check_id, CheckStatus::Passing, note)
            .await
    }

    /// `PUT /v1/agent/check/warn/<id>`.
    pub async fn agent_check_warn(
        &self,
        check_id: &str,
        note: Option<&str>,
    ) -> Result<(), ConsulError> {
        self.agent_check_update(check_id, CheckStatus::Warning, note)
            .await
    }

    /// `PUT /v1/agent/check/fail/<id>`.
    pub async fn agent_check_fail(
        &self,
        check_id: &str,
        note: Option<&str>,
    ) -> Result<(), ConsulError> {
        self.agent_check_update(check_id, CheckStatus::Critical, note)
            .await
    }

    /// `GET /v1/agent/services`: the services registered on this agent, by id.
    pub async fn agent_services(&self) -> Result<AgentServices, ConsulError> {
        let url = self.url(&["v1", "agent", "services"], None);
        let resp = Self::expect_ok(Self::send(self.request(Method::GET, url, None)).await?).await?;
        let map: Option<AgentServices> = Self::json(resp, "agent services").await?;
        Ok(map.unwrap_or_default())
    }

    // === health ===

    /// `GET /v1/health/service/<name>` with `passing`, `tag`, `filter` and blocking options.
    pub async fn health_service(
        &self,
        name: &str,
        hq: &HealthQuery,
        q: &QueryOptions,
    ) -> Result<(Vec<HealthEntry>, QueryMeta), ConsulError> {
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
            return Err(ConsulError::InvalidRequest(format!(
                "bad service name {name:?}"
            )));
        }
        let mut url = self.url(&["v1", "health", "service", name], None);
        {
            let mut p = url.query_pairs_mut();
            if hq.passing {
                append_flag(&mut p, "passing");
            }
            for t in &hq.tags {
                p.append_pair("tag", t);
            }
            if let Some(f) = &hq.filter {
                p.append_pair("filter", f);
            }
        }
        let resp =
            Self::expect_ok(Self::send(self.request(Method::GET, url, Some(q))).await?).await?;
        let meta = Self::meta(&resp);
        let list: Option<Vec<HealthEntry>> = Self::json(resp, "health service").await?;
        Ok((list.unwrap_or_default(), meta))
    }

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
mod tests {
    use super::*;

    #[test]
    fn a_fallback_address_keeps_the_token_and_the_scheme() {
        let main = Config::from_lookup(|k| match k {
            "CONSUL_HTTP_ADDR" => Some("127.0.0.1:8500".into()),
            "CONSUL_HTTP_SSL" => Some("true".into()),
            "CONSUL_HTTP_TOKEN" => Some("secret".into()),
            _ => None,
        })
        .unwrap();
        let f = main.for_address(" 10.0.0.2:8501 ").unwrap();
        assert_eq!(
            f.address.as_ref().map(Url::as_str),
            Some("https://10.0.0.2:8501/")
        );
        assert_eq!(f.token.as_deref(), Some("secret"));
        let f = main.for_address("http://10.0.0.3:8500").unwrap();
        assert_eq!(
            f.address.as_ref().map(Url::as_str),
            Some("http://10.0.0.3:8500/")
        );
        for bad in ["", "ftp://x:1", "http://"] {
            assert!(main.for_address(bad).is_err(), "{bad:?}");
        }
    }

    fn client() -> Client {
        Client::new(&Config::http("127.0.0.1:8500".parse().unwrap())).unwrap()
    }

    #[test]
    fn config_defaults_and_env() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.address.unwrap().as_str(), "http://127.0.0.1:8500/");
        assert!(c.token.is_none());
        let c = Config::from_lookup(|k| match k {
            "CONSUL_HTTP_ADDR" => Some("https://consul.example:8501".into()),
            "CONSUL_HTTP_TOKEN" => Some("s3cr3t".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.address.as_ref().unwrap().scheme(), "https");
        assert_eq!(c.token.as_deref(), Some("s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let bare =
            Config::from_lookup(|k| (k == "CONSUL_HTTP_ADDR").then(|| "10.0.0.1:8500".into()))
                .unwrap();
        assert_eq!(bare.address.unwrap().as_str(), "http://10.0.0.1:8500/");
        assert!(
            Config::from_lookup(|k| (k == "CONSUL_HTTP_ADDR").then(|| "unix:///x".into())).is_err()
        );
        assert!(
            Config::from_lookup(|k| (k == "CONSUL_CLIENT_CERT").then(|| "/c.pem".into())).is_err()
        );
        let dir = tempfile::tempdir().unwrap();
        let tf = dir.path().join("token");
        std::fs::write(&tf, "from-file\n").unwrap();
        let tfs = tf.to_str().unwrap().to_owned();
        let c =
            Config::from_lookup(|k| (k == "CONSUL_HTTP_TOKEN_FILE").then(|| tfs.clone())).unwrap();
        assert_eq!(c.token.as_deref(), Some("from-file"));
        let both = Config::from_lookup(|k| match k {
            "CONSUL_HTTP_TOKEN" => Some("env-wins".into()),
            "CONSUL_HTTP_TOKEN_FILE" => Some(tfs.clone()),
            _ => None,
        })
        .unwrap();
        assert_eq!(both.token.as_deref(), Some("env-wins"));
        assert!(
            Config::from_lookup(
                |k| (k == "CONSUL_HTTP_TOKEN_FILE").then(|| "/nonexistent/t".into())
            )
            .is_err()
        );
        let bad_token = Config::http("127.0.0.1:1".parse().unwrap()).with_token("a\nb");
        assert!(matches!(
            Client::new(&bad_token),
            Err(ConsulError::Config(_))
        ));
        let missing_ca =
            Config::from_lookup(|k| (k == "CONSUL_CACERT").then(|| "/nonexistent/ca.pem".into()))
                .unwrap();
        assert!(matches!(
            Client::new(&missing_ca),
            Err(ConsulError::Config(_))
        ));
        let debug = format!(
            "{:?}",
            Client::new(&Config::http("127.0.0.1:1".parse().unwrap()).with_token("tok-xyz"))
                .unwrap()
        );
        assert!(!debug.contains("tok-xyz"));
    }

    #[test]
    fn urls_encode_each_segment() {
        let c = client();
        assert_eq!(
            c.url(&["v1", "kv"], Some("wafleet/locks/shards/7"))
                .as_str(),
            "http://127.0.0.1:8500/v1/kv/wafleet/locks/shards/7"
        );
        assert_eq!(
            c.url(&["v1", "kv"], Some("a b/c?d#e%f")).as_str(),
            "http://127.0.0.1:8500/v1/kv/a%20b/c%3Fd%23e%25f"
        );
        assert_eq!(
            c.url(&["v1", "kv"], Some("wafleet/")).as_str(),
            "http://127.0.0.1:8500/v1/kv/wafleet/"
        );
        let with_path = Client::new(&Config {
            address: Url::parse("http://h:1/consul/").ok(),
            ..Config::default()
        })
        .unwrap();
        assert_eq!(
            with_path.url(&["v1", "kv"], Some("k")).as_str(),
            "http://h:1/consul/v1/kv/k"
        );
    }

    #[test]
    fn flags_are_presence_only_and_blocking_params_set_timeout() {
        let c = client();
        let mut url = c.url(&["v1", "kv"], Some("p/"));
        append_flag(&mut url.query_pairs_mut(), "recurse");
        let req = c
            .request(
                Method::GET,
                url,
                Some(&QueryOptions::blocking(42, Duration::from_secs(16))),
            )
            .build()
            .unwrap();
        assert_eq!(req.url().query(), Some("recurse&index=42&wait=16s"));
        assert!(req.timeout().unwrap() > &Duration::from_secs(17));
        let plain = c
            .request(
                Method::GET,
                c.url(&["v1", "kv"], Some("k")),
                Some(&QueryOptions::default()),
            )
            .build()
            .unwrap();
        assert_eq!(plain.url().query(), None);
        let zero = c
            .request(
                Method::GET,
                c.url(&["v1", "kv"], Some("k")),
                Some(&QueryOptions {
                    index: Some(0),
                    ..Default::default()
                }),
            )
            .build()
            .unwrap();
        assert_eq!(zero.url().query(), None, "index=0 is never sent");
    }

    #[tokio::test]
    async fn invalid_keys_are_refused_before_any_request() {
        // Port 1 on loopback: any request would fail with a transport error instead.
        let c = Client::new(&Config::http("127.0.0.1:1".parse().unwrap())).unwrap();
        for k in ["", "/a", "a//b", "a/../b", "a\nb"] {
            assert!(
                matches!(
                    c.kv_get(k, &QueryOptions::default()).await,
                    Err(ConsulError::InvalidKey { .. })
                ),
                "{k:?}"
            );
            assert!(
                matches!(
                    c.kv_put(k, b"v", &PutOptions::default()).await,
                    Err(ConsulError::InvalidKey { .. })
                ),
                "{k:?}"
            );
            assert!(
                matches!(
                    c.kv_delete(k, &DeleteOptions::default()).await,
                    Err(ConsulError::InvalidKey { .. })
                ),
                "{k:?}"
            );
        }
        assert!(matches!(
            c.kv_delete(
                "",
                &DeleteOptions {
                    recurse: true,
                    cas: None
                }
            )
            .await,
            Err(ConsulError::InvalidKey { .. })
        ));
        let both = PutOptions {
            cas: Some(1),
            acquire: Some("s".into()),
            ..Default::default()
        };
        assert!(matches!(
            c.kv_put("k", b"", &both).await,
            Err(ConsulError::InvalidRequest(_))
        ));
        assert!(matches!(
            c.txn(&[TxnKvOp::set("a//b", "x")]).await,
            Err(ConsulError::InvalidKey { .. })
        ));
        assert!(matches!(
            c.kv_get("ok", &QueryOptions::default()).await,
            Err(ConsulError::Transport(_))
        ));
    }
}
