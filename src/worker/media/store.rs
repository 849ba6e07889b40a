//! Where inbound media bytes live: the [`MediaStore`] trait and its two implementations, the
//! shard volume ([`LocalStore`]) and an S3-compatible bucket ([`S3Store`], through
//! `object_store`).
//!
//! Keys are `<ws>/<s>/<sha256 hex>`, built only from validated ids and a hash
//! ([`object_key`]), so a key never climbs out of its root or prefix. A store only keeps
//! bytes; what is stored for which message, and what must go, is the shard index
//! (`crate::store::MediaRow`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::{ObjectStore, ObjectStoreExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::MediaError;
use crate::ids::{SessionId, WorkspaceId};

/// A stored file being read.
pub struct Blob {
    /// Its size in bytes.
    pub size: u64,
    /// Its bytes, in pieces.
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob").field("size", &self.size).finish()
    }
}

/// Keeps and serves media files by key.
pub trait MediaStore: Send + Sync + 'static {
    /// Stores the complete file at `file` under `key` (replacing any), and removes `file`.
    /// Readers see the old object or the new one, never a part.
    fn put<'a>(&'a self, key: &'a str, file: &'a Path) -> BoxFuture<'a, Result<(), MediaError>>;
    /// The object under `key`, or `None`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Blob>, MediaError>>;
    /// Deletes the object under `key` (absent is fine).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), MediaError>>;
    /// What it is, for logs (never credentials).
    fn describe(&self) -> String;
}

/// The key of a session's file with content hash `sha256` (64 hex digits).
pub fn object_key(ws: &WorkspaceId, s: &SessionId, sha256: &str) -> Result<String, MediaError> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(MediaError::Store(format!("not a sha256: {sha256:?}")));
    }
    Ok(format!("{ws}/{s}/{}", sha256.to_ascii_lowercase()))
}

fn io(what: &str, e: impl std::fmt::Display) -> MediaError {
    MediaError::Store(format!("{what}: {e}"))
}

// === LocalStore ===

/// Files under a directory of the shard volume: `<root>/<ws>/<s>/<sha256>`. A put renames a
/// finished temporary file from the same volume into place (atomic on POSIX file systems,
/// NFS included).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store under `root` (created on first put).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

impl MediaStore for LocalStore {
    fn put<'a>(&'a self, key: &'a str, file: &'a Path) -> BoxFuture<'a, Result<(), MediaError>> {
        Box::pin(async move {
            let dest = self.path(key);
            if let Some(dir) = dest.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| io("creating the media directory", e))?;
            }
            tokio::fs::rename(file, &dest)
                .await
                .map_err(|e| io("moving the media file into place", e))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Blob>, MediaError>> {
        Box::pin(async move {
            let mut f = match tokio::fs::File::open(self.path(key)).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io("opening a media file", e)),
            };
            let size = f
                .metadata()
                .await
                .map_err(|e| io("reading a media file", e))?
                .len();
            let body = async_stream::try_stream! {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    yield Bytes::copy_from_slice(&buf[..n]);
                }
            };
            Ok(Some(Blob {
                size,
                body: body.boxed(),
            }))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), MediaError>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(key)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io("deleting a media file", e)),
            }
        })
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }
}

// === S3Store ===

/// How to reach the bucket (`WAFLEET_MEDIA_S3_*`; credentials come from the standard `AWS_*`
/// variables and are never logged).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// Endpoint URL for an S3-compatible service (MinIO, Ceph, moto…); `None`: AWS.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: String,
    /// Key prefix inside the bucket (default `wafleet`); the shard is appended.
    pub prefix: String,
    /// Allow a plain-http endpoint (test servers only).
    pub allow_http: bool,
    /// Access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret (`AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Session token (`AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("allow_http", &self.allow_http)
            .field("credentials", &self.access_key_id.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Objects in an S3-compatible bucket under `<prefix>/shards/<k>/`. Uploads are multipart
/// through `object_store`'s buffered writer, so a large file is never held in memory whole;
/// S3 makes an object visible only once its upload completes.
#[derive(Debug, Clone)]
pub struct S3Store {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
}

impl S3Store {
    /// A store for shard `shard` in the configured bucket. Builds the client only; the bucket
    /// is reached at the first call.
    pub fn new(config: &S3Config, shard: u32) -> Result<Self, MediaError> {
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http);
        if let Some(e) = &config.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(k) = &config.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &config.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        if let Some(t) = &config.session_token {
            b = b.with_token(t);
        }
        let store = b
            .build()
            .map_err(|e| MediaError::Store(format!("S3 configuration: {e}")))?;
        let prefix = format!("{}/shards/{shard}", config.prefix.trim_matches('/'));
        Ok(Self {
            store: Arc::new(store),
            describe: format!(
                "s3://{}/{prefix} ({})",
                config.bucket,
                config.endpoint.as_deref().unwrap_or("aws")
            ),
            prefix,
        })
    }

    fn path(&self, key: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{}/{key}", self.prefix))
    }
}

impl MediaStore for S3Store {
    fn put<'a>(&'a self, key: &'a str, file: &'a Path) -> BoxFuture<'a, Result<(), MediaError>> {
        Box::pin(async move {
            let mut src = tokio::fs::File::open(file)
                .await
                .map_err(|e| io("opening the downloaded media", e))?;
            let mut w = object_store::buffered::BufWriter::new(self.store.clone(), self.path(key));
            let copied = tokio::io::copy(&mut src, &mut w).await;
            match copied {
                Ok(_) => w.shutdown().await.map_err(|e| io("S3 upload", e))?,
                Err(e) => {
                    // Aborts the multipart upload so no parts linger in the bucket.
                    let _ = w.abort().await;
                    return Err(io("S3 upload", e));
                }
            }
            let _ = tokio::fs::remove_file(file).await;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Blob>, MediaError>> {
        Box::pin(async move {
            match self.store.get(&self.path(key)).await {
                Ok(r) => {
                    let size = r.meta.size;
                    let body = r.into_stream().map_err(std::io::Error::other).boxed();
                    Ok(Some(Blob { size, body }))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io("S3 read", e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), MediaError>> {
        Box::pin(async move {
            match self.store.delete(&self.path(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(io("S3 delete", e)),
            }
        })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_objects_are_put_read_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("media"));
        let ws = WorkspaceId::new("acme").unwrap();
        let s = SessionId::new("default").unwrap();
        let key = object_key(&ws, &s, &"ab".repeat(32)).unwrap();
        assert!(object_key(&ws, &s, "../etc").is_err());
        let tmp = dir.path().join("tmp");
        tokio::fs::write(&tmp, b"hello").await.unwrap();
        store.put(&key, &tmp).await.unwrap();
        assert!(!tmp.exists(), "the temporary file was moved");
        let blob = store.get(&key).await.unwrap().unwrap();
        assert_eq!(blob.size, 5);
        let bytes: Vec<Bytes> = blob.body.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), b"hello");
        store.delete(&key).await.unwrap();
        assert!(store.get(&key).await.unwrap().is_none());
        store.delete(&key).await.unwrap();
    }

    #[test]
    fn s3_config_debug_hides_credentials() {
        let c = S3Config {
            bucket: "b".into(),
            endpoint: None,
            region: "us-east-1".into(),
            prefix: "wafleet".into(),
            allow_http: false,
            access_key_id: Some("AKIDSECRET".into()),
            secret_access_key: Some("verysecret".into()),
            session_token: None,
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("AKIDSECRET") && !shown.contains("verysecret"));
    }
}
