//! The HTTP side of the commands: the few router calls an import or an export makes.
//!
//! Reads (`GET /v1/route/{ws}`, `GET …/sessions/{s}`) are retried while the answer is a 503
//! with `Retry-After` (a workspace being taken or handed over), up to a deadline. An upload is
//! retried the same way, with a fresh body each time, because the worker refuses a 503 before
//! reading the body.

use std::time::Duration;

use serde_json::Value;

use super::MigrateError;
use crate::ids::{SessionId, WorkspaceId};

/// How long reads and uploads keep retrying 503 answers.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
/// Timeout of one small call (a stop waits for the browser to close).
const CALL_TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));

/// A router (or worker) base URL and the token to call it with.
#[derive(Clone)]
pub struct RouterClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for RouterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A non-2xx answer: status, `error` code and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The `error` code of the JSON body (empty if none).
    pub code: String,
    /// The `message` (or the raw body).
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

fn http_err(e: reqwest::Error) -> MigrateError {
    MigrateError::Http(crate::router::consul::error_chain(&e))
}

async fn refusal(resp: reqwest::Response) -> Refusal {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => Refusal {
            status,
            code: v["error"].as_str().unwrap_or_default().to_owned(),
            message: v["message"].as_str().unwrap_or_default().to_owned(),
        },
        Err(_) => Refusal {
            status,
            code: String::new(),
            message: text.chars().take(300).collect(),
        },
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    if resp.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let secs = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(secs.clamp(1, 10)))
}

impl RouterClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`) with a bearer `token`.
    pub fn new(base: &str, token: &str) -> Result<Self, MigrateError> {
        let url = url::Url::parse(base)
            .map_err(|e| MigrateError::Invalid(format!("--router {base}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(MigrateError::Invalid(format!(
                "--router {base}: expected an http(s) URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(http_err)?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    fn session_url(&self, ws: &WorkspaceId, s: &SessionId) -> String {
        format!("{}/v1/workspaces/{ws}/sessions/{s}", self.base)
    }

    /// A GET (or POST without body) retried on 503 + `Retry-After` until [`RETRY_FOR`].
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, MigrateError> {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(&self.token);
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            let resp = req.send().await.map_err(http_err)?;
            match retry_after(&resp) {
                Some(wait) if tokio::time::Instant::now() + wait < deadline => {
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(resp),
            }
        }
    }

    /// The shard that owns `ws` (`GET /v1/route/{ws}`, admin only); `None` when the token may
    /// not ask (a workspace token).
    pub async fn route(&self, ws: &WorkspaceId) -> Result<Option<u64>, MigrateError> {
        let resp = self
            .call(
                reqwest::Method::GET,
                &format!("{}/v1/route/{ws}", self.base),
                CALL_TIMEOUT,
            )
            .await?;
        if resp.status() == reqwest::StatusCode::FORBIDDEN {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(MigrateError::Http(refusal(resp).await.to_string()));
        }
        let v: Value = resp.json().await.map_err(http_err)?;
        Ok(v["shard"].as_u64())
    }

    /// The session (`GET …/sessions/{s}`), `None` when it does not exist.
    pub async fn session(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
    ) -> Result<Option<Value>, MigrateError> {
        let resp = self
            .call(reqwest::Method::GET, &self.session_url(ws, s), CALL_TIMEOUT)
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(MigrateError::Http(refusal(resp).await.to_string()));
        }
        Ok(Some(resp.json().await.map_err(http_err)?))
    }

    /// `POST …/sessions/{s}/<action>` (`stop`, `start`); the session afterwards.
    pub async fn action(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        action: &str,
    ) -> Result<Value, MigrateError> {
        let url = format!("{}/{action}", self.session_url(ws, s));
        let resp = self.call(reqwest::Method::POST, &url, CALL_TIMEOUT).await?;
        if !resp.status().is_success() {
            return Err(MigrateError::Http(refusal(resp).await.to_string()));
        }
        resp.json().await.map_err(http_err)
    }

    /// `PUT …/sessions/{s}/profile` with a body made by `body()` (called again for a retry
    /// after a 503). `Ok(Ok(session))` on 201, `Ok(Err(refusal))` on any other answer.
    pub async fn put_profile(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        headers: &[(&'static str, String)],
        body: impl Fn() -> reqwest::Body,
    ) -> Result<Result<Value, Refusal>, MigrateError> {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let url = format!("{}/profile", self.session_url(ws, s));
        loop {
            let mut req = self
                .http
                .put(&url)
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/x-tar");
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let resp = req.body(body()).send().await.map_err(http_err)?;
            if let Some(wait) = retry_after(&resp)
                && tokio::time::Instant::now() + wait < deadline
            {
                tokio::time::sleep(wait).await;
                continue;
            }
            if resp.status() == reqwest::StatusCode::CREATED {
                return Ok(Ok(resp.json().await.map_err(http_err)?));
            }
            return Ok(Err(refusal(resp).await));
        }
    }

    /// `GET …/sessions/{s}/profile`: the streaming answer, or the refusal.
    pub async fn get_profile(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
    ) -> Result<Result<reqwest::Response, Refusal>, MigrateError> {
        let url = format!("{}/profile", self.session_url(ws, s));
        // No overall timeout: the body is the whole profile.
        let resp = self.call(reqwest::Method::GET, &url, None).await?;
        if resp.status().is_success() {
            Ok(Ok(resp))
        } else {
            Ok(Err(refusal(resp).await))
        }
    }
}
