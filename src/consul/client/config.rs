//! How to reach Consul ([`Config`]): read from Consul's own environment variables
//! (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_SSL`, `CONSUL_HTTP_TOKEN`, `CONSUL_CACERT` …).

use std::fmt;
use std::path::PathBuf;

use url::Url;

use crate::consul::ConsulError;

/// The address used when `CONSUL_HTTP_ADDR` is unset.
pub const DEFAULT_HTTP_ADDR: &str = "http://127.0.0.1:8500";

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

pub(super) fn parse_address(raw: &str) -> Result<Url, ConsulError> {
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
