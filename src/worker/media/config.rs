//! The worker's media settings (MediaConfig): which store (the shard volume or an S3-compatible
//! bucket), its size cap and retention, download limits and the eager downloaders, read from the
//! environment.

use super::*;

/// Where and how much (environment, docs/worker.md "Inbound media storage").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// `None`: the shard volume; `Some`: an S3-compatible bucket.
    pub s3: Option<S3Config>,
    /// Per-shard cap on stored bytes; the oldest files go first beyond it.
    pub store_max_bytes: u64,
    /// Files older than this go; `None`: kept until the cap needs the room.
    pub retention: Option<Duration>,
    /// Largest file downloaded.
    pub download_max_bytes: u64,
    /// Eager downloads at once.
    pub eager_concurrency: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            s3: None,
            store_max_bytes: DEFAULT_STORE_MAX_BYTES,
            retention: Some(DEFAULT_RETENTION),
            download_max_bytes: DEFAULT_DOWNLOAD_MAX_BYTES,
            eager_concurrency: DEFAULT_EAGER_CONCURRENCY,
        }
    }
}

pub(super) fn number(
    lookup: &impl Fn(&str) -> Option<String>,
    key: &str,
) -> Result<Option<u64>, String> {
    match lookup(key).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{key} must be a whole number, got {v:?}")),
    }
}

impl MediaConfig {
    /// Reads `WAFLEET_MEDIA_STORE` (`local` | `s3`), `WAFLEET_MEDIA_STORE_MAX_BYTES`,
    /// `WAFLEET_MEDIA_RETENTION_SECS` (0: no age limit), `WAFLEET_MEDIA_DOWNLOAD_MAX_BYTES`,
    /// `WAFLEET_MEDIA_EAGER_CONCURRENCY` and, for S3, `WAFLEET_MEDIA_S3_BUCKET`, `_ENDPOINT`,
    /// `_REGION`, `_PREFIX`, `_ALLOW_HTTP` with the credentials in `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut c = MediaConfig::default();
        if let Some(v) = number(&lookup, "WAFLEET_MEDIA_STORE_MAX_BYTES")? {
            c.store_max_bytes = v;
        }
        if let Some(v) = number(&lookup, "WAFLEET_MEDIA_RETENTION_SECS")? {
            c.retention = (v > 0).then(|| Duration::from_secs(v));
        }
        if let Some(v) = number(&lookup, "WAFLEET_MEDIA_DOWNLOAD_MAX_BYTES")? {
            if v == 0 {
                return Err("WAFLEET_MEDIA_DOWNLOAD_MAX_BYTES must be positive".into());
            }
            c.download_max_bytes = v;
        }
        if let Some(v) = number(&lookup, "WAFLEET_MEDIA_EAGER_CONCURRENCY")? {
            if !(1..=16).contains(&v) {
                return Err("WAFLEET_MEDIA_EAGER_CONCURRENCY is 1 to 16".into());
            }
            c.eager_concurrency = v as usize;
        }
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        match get("WAFLEET_MEDIA_STORE").as_deref().map(str::trim) {
            None | Some("local") => {}
            Some("s3") => {
                let bucket = get("WAFLEET_MEDIA_S3_BUCKET")
                    .ok_or("WAFLEET_MEDIA_STORE=s3 needs WAFLEET_MEDIA_S3_BUCKET")?;
                let allow_http = match get("WAFLEET_MEDIA_S3_ALLOW_HTTP").as_deref() {
                    None | Some("false") | Some("0") => false,
                    Some("true") | Some("1") => true,
                    Some(v) => {
                        return Err(format!(
                            "WAFLEET_MEDIA_S3_ALLOW_HTTP is true or false, got {v:?}"
                        ));
                    }
                };
                c.s3 = Some(S3Config {
                    bucket,
                    endpoint: get("WAFLEET_MEDIA_S3_ENDPOINT"),
                    region: get("WAFLEET_MEDIA_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
                    prefix: get("WAFLEET_MEDIA_S3_PREFIX").unwrap_or_else(|| "wafleet".into()),
                    allow_http,
                    access_key_id: get("AWS_ACCESS_KEY_ID"),
                    secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
                    session_token: get("AWS_SESSION_TOKEN"),
                });
            }
            Some(v) => return Err(format!("WAFLEET_MEDIA_STORE is local or s3, got {v:?}")),
        }
        Ok(c)
    }
}
