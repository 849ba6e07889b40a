//! Inbound media on the worker (docs/api.md "Inbound media", docs/worker.md "Inbound media
//! storage"): downloading a message's file through the session's WhatsApp Web
//! ([`crate::engine::media`]), keeping it in a [`MediaStore`] (the shard volume or an S3
//! bucket) indexed in the shard's SQLite, serving it ([`routes`]), downloading eagerly for
//! sessions that ask for it, and the janitor that applies the per-shard size cap and the
//! retention age.
//!
//! Lifecycle follows the shard store: [`MediaService::open`] when messaging opens a term (the
//! index lives in the shard's SQLite, single writer under the shard lock), [`MediaService::close`]
//! when it ends. Between terms the route answers `503 messaging_unavailable`.
//!
//! Media do not move with a workspace when the shard map moves it: the new shard downloads a
//! file again on request while WhatsApp still serves it, and the old shard's copies age out.

pub mod routes;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use store::{Blob, LocalStore, MediaStore, S3Config, S3Store, object_key};

use super::host::MediaDownload;
use crate::api::ApiError;
use crate::engine::media::{EXPIRED_PREFIX, NO_MEDIA_PREFIX, NOT_FOUND_PREFIX, RESTART_PREFIX};
use crate::engine::{EngineError, SessionCommandError, SessionHandle, Status};
use crate::ids::{SessionId, WorkspaceId};
use crate::store::{MediaRow, Store};

mod config;
pub use config::MediaConfig;

mod error;
pub use error::MediaError;
use error::{from_command, not_working};

/// Default per-shard size cap of stored media (10 GiB).
pub const DEFAULT_STORE_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;
/// Default retention (30 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default largest file downloaded (100 MiB; WhatsApp documents go up to 2 GB).
pub const DEFAULT_DOWNLOAD_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Default number of eager downloads at once per worker.
pub const DEFAULT_EAGER_CONCURRENCY: usize = 2;
/// Eager downloads waiting at most; more are dropped (logged) and stay lazy.
pub const EAGER_QUEUE: usize = 256;
/// Attempts of one eager download, with these waits between them.
pub const EAGER_BACKOFF: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(10),
    Duration::from_secs(60),
];
/// Rows the janitor handles per batch.
const JANITOR_BATCH: u32 = 200;

/// Finds the handle of a session running on this worker.
pub type SessionLookup =
    Arc<dyn Fn(&WorkspaceId, &SessionId) -> Option<SessionHandle> + Send + Sync>;

/// One eager download: workspace, session, message id.
type EagerJob = (WorkspaceId, SessionId, String);

/// What lives while a term holds the shard lock.
#[derive(Clone)]
struct Term {
    index: Store,
    eager: mpsc::Sender<EagerJob>,
    wake: Arc<Notify>,
}

/// A stored file ready to be served.
#[derive(Debug)]
pub struct Served {
    /// What the index says about it.
    pub row: MediaRow,
    /// Its bytes.
    pub blob: Blob,
}

/// The worker's inbound media (see the module doc). Shared behind an `Arc`.
pub struct MediaService {
    shard: u32,
    data: PathBuf,
    config: MediaConfig,
    blobs: Arc<dyn MediaStore>,
    sessions: RwLock<Option<SessionLookup>>,
    term: RwLock<Option<Term>>,
    modes: Mutex<HashMap<(WorkspaceId, SessionId), MediaDownload>>,
    /// One download per message at a time; later requests wait and find it stored.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for MediaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaService")
            .field("shard", &self.shard)
            .field("store", &self.blobs.describe())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl MediaService {
    /// The service for `shard` under `data` with `config`: files in
    /// `<data>/shards/<k>/media/` or the configured bucket.
    pub fn new(shard: u32, data: PathBuf, config: MediaConfig) -> Result<Self, MediaError> {
        let blobs: Arc<dyn MediaStore> = match &config.s3 {
            Some(s3) => Arc::new(S3Store::new(s3, shard)?),
            None => Arc::new(LocalStore::new(Self::local_root(&data, shard))),
        };
        Ok(Self::with_store(shard, data, config, blobs))
    }

    /// The service over a given store (tests).
    pub fn with_store(
        shard: u32,
        data: PathBuf,
        config: MediaConfig,
        blobs: Arc<dyn MediaStore>,
    ) -> Self {
        Self {
            shard,
            data,
            config,
            blobs,
            sessions: RwLock::new(None),
            term: RwLock::new(None),
            modes: Mutex::default(),
            inflight: Mutex::default(),
        }
    }

    /// `<data>/shards/<k>/media`: the shard volume's media directory.
    pub fn local_root(data: &std::path::Path, shard: u32) -> PathBuf {
        data.join("shards").join(shard.to_string()).join("media")
    }

    fn tmp_dir(&self) -> PathBuf {
        Self::local_root(&self.data, self.shard).join(".tmp")
    }

    /// The settings in force.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Connects the running sessions (downloads need their pages).
    pub fn set_sessions(&self, lookup: SessionLookup) {
        *self.sessions.write().unwrap_or_else(|p| p.into_inner()) = Some(lookup);
    }

    /// A session's download mode (from its `session.json`).
    pub fn set_mode(&self, ws: &WorkspaceId, s: &SessionId, mode: MediaDownload) {
        self.modes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((ws.clone(), s.clone()), mode);
    }

    fn mode(&self, ws: &WorkspaceId, s: &SessionId) -> MediaDownload {
        self.modes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(ws.clone(), s.clone()))
            .copied()
            .unwrap_or_default()
    }

    fn term(&self) -> Option<Term> {
        self.term.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn index(&self) -> Result<Store, MediaError> {
        self.term()
            .map(|t| t.index)
            .ok_or_else(|| MediaError::Unavailable("the shard store is not open".into()))
    }

    /// Starts a term over the shard's `index`: the eager download pool and the janitor, both
    /// ending with `stop`.
    pub fn open(self: &Arc<Self>, index: Store, tasks: &TaskTracker, stop: CancellationToken) {
        let (tx, rx) = mpsc::channel(EAGER_QUEUE);
        let wake = Arc::new(Notify::new());
        *self.term.write().unwrap_or_else(|p| p.into_inner()) = Some(Term {
            index: index.clone(),
            eager: tx,
            wake: wake.clone(),
        });
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..self.config.eager_concurrency {
            let (me, rx, stop) = (self.clone(), rx.clone(), stop.clone());
            tasks.spawn(async move { me.eager_worker(rx, stop).await });
        }
        let (me, stop) = (self.clone(), stop);
        tasks.spawn(async move { me.janitor(index, wake, stop).await });
        info!(shard = self.shard, store = %self.blobs.describe(), "inbound media open");
    }

    /// Ends the term (its tasks end with the term's stop token).
    pub fn close(&self) {
        *self.term.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A message arrived: for an eager session, queue its download (never waits; a full
    /// queue leaves the file to the first request).
    pub fn on_message(&self, ws: &WorkspaceId, s: &SessionId, wa_id: &str) {
        if self.mode(ws, s) != MediaDownload::Eager {
            return;
        }
        let Some(term) = self.term() else { return };
        if let Err(e) = term
            .eager
            .try_send((ws.clone(), s.clone(), wa_id.to_owned()))
        {
            warn!(workspace = %ws, session = %s, wa_id, error = %e, "eager media download not queued; it will download on request");
        }
    }

    async fn eager_worker(
        &self,
        rx: Arc<tokio::sync::Mutex<mpsc::Receiver<EagerJob>>>,
        stop: CancellationToken,
    ) {
        loop {
            let job = tokio::select! {
                _ = stop.cancelled() => return,
                job = async { rx.lock().await.recv().await } => job,
            };
            let Some((ws, s, wa_id)) = job else { return };
            let mut attempt = 0;
            loop {
                match self.ensure_stored(&ws, &s, &wa_id).await {
                    Ok(row) => {
                        debug!(workspace = %ws, session = %s, wa_id, size = row.size, "eager media download stored");
                        break;
                    }
                    Err(e) if e.retryable() && attempt < EAGER_BACKOFF.len() => {
                        warn!(workspace = %ws, session = %s, wa_id, error = %e, attempt, "eager media download failed; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(EAGER_BACKOFF[attempt]) => {}
                        }
                        attempt += 1;
                    }
                    Err(e) => {
                        warn!(workspace = %ws, session = %s, wa_id, error = %e, "eager media download given up; it will download on request");
                        break;
                    }
                }
            }
        }
    }

    /// The stored file of a message, downloading it first when it is not stored.
    pub async fn fetch(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        wa_id: &str,
    ) -> Result<Served, MediaError> {
        // A file the janitor deletes between the two steps is downloaded again.
        for _ in 0..2 {
            let row = self.ensure_stored(ws, s, wa_id).await?;
            if let Some(blob) = self.blobs.get(&object_key(ws, s, &row.sha256)?).await? {
                return Ok(Served { row, blob });
            }
            self.index()?
                .media_forget(&row)
                .await
                .map_err(|e| MediaError::Store(e.to_string()))?;
        }
        Err(MediaError::Store(
            "the file vanished from the store twice".into(),
        ))
    }

    async fn stored(
        &self,
        index: &Store,
        ws: &WorkspaceId,
        s: &SessionId,
        wa_id: &str,
    ) -> Result<Option<MediaRow>, MediaError> {
        index
            .media_get(ws, s, wa_id)
            .await
            .map_err(|e| MediaError::Store(e.to_string()))
    }

    /// The index row of a message's file, downloading and storing it when there is none.
    pub async fn ensure_stored(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        wa_id: &str,
    ) -> Result<MediaRow, MediaError> {
        let index = self.index()?;
        if let Some(row) = self.stored(&index, ws, s, wa_id).await? {
            return Ok(row);
        }
        let flight = format!("{ws}/{s}/{wa_id}");
        let lock = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(flight.clone())
            .or_default()
            .clone();
        let guard = lock.lock().await;
        let result = async {
            if let Some(row) = self.stored(&index, ws, s, wa_id).await? {
                return Ok(row);
            }
            self.download(&index, ws, s, wa_id).await
        }
        .await;
        drop(guard);
        {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&flight).is_some_and(|l| Arc::strong_count(l) <= 2) {
                map.remove(&flight);
            }
        }
        result
    }

    async fn download(
        &self,
        index: &Store,
        ws: &WorkspaceId,
        s: &SessionId,
        wa_id: &str,
    ) -> Result<MediaRow, MediaError> {
        let handle = self
            .sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|f| f(ws, s))
            .ok_or_else(|| not_working(Status::Stopped))?;
        let status = handle.status().status;
        if status != Status::Working {
            return Err(not_working(status));
        }
        let dir = self.tmp_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| MediaError::Store(format!("creating {}: {e}", dir.display())))?;
        let tmp = dir.join(ulid::Ulid::new().to_string());
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| MediaError::Store(format!("creating a temporary file: {e}")))?;
            let mut got = handle
                .download_media(wa_id, self.config.download_max_bytes, &mut file)
                .await;
            // The page may have dropped its copy mid-read (held too long): once more from 0.
            if let Err(SessionCommandError::Engine(EngineError::Adapter(m))) = &got
                && m.starts_with(RESTART_PREFIX)
            {
                file = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| MediaError::Store(format!("creating a temporary file: {e}")))?;
                got = handle
                    .download_media(wa_id, self.config.download_max_bytes, &mut file)
                    .await;
            }
            let got = got.map_err(from_command)?;
            file.sync_all()
                .await
                .map_err(|e| MediaError::Store(format!("writing a temporary file: {e}")))?;
            drop(file);
            let row = MediaRow {
                workspace: ws.to_string(),
                session: s.to_string(),
                wa_id: wa_id.to_owned(),
                sha256: got.sha256.clone(),
                size: got.size,
                mimetype: got.mimetype,
                filename: got.filename,
                stored_at: now_ms(),
            };
            self.keep(index, &row, &tmp).await?;
            Ok(row)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Puts a finished file into the store and its row into the index, then wakes the
    /// janitor (the cap may be exceeded now).
    pub async fn keep(
        &self,
        index: &Store,
        row: &MediaRow,
        file: &std::path::Path,
    ) -> Result<(), MediaError> {
        let ws = WorkspaceId::new(&row.workspace).map_err(|e| MediaError::Store(e.to_string()))?;
        let s = SessionId::new(&row.session).map_err(|e| MediaError::Store(e.to_string()))?;
        self.blobs
            .put(&object_key(&ws, &s, &row.sha256)?, file)
            .await?;
        index
            .media_put(row)
            .await
            .map_err(|e| MediaError::Store(e.to_string()))?;
        if let Some(t) = self.term() {
            t.wake.notify_one();
        }
        Ok(())
    }

    /// Removes one row, and its object when no other row shares it.
    async fn remove(&self, index: &Store, row: &MediaRow) -> Result<(), MediaError> {
        let shared = index
            .media_forget(row)
            .await
            .map_err(|e| MediaError::Store(e.to_string()))?;
        if !shared {
            let ws =
                WorkspaceId::new(&row.workspace).map_err(|e| MediaError::Store(e.to_string()))?;
            let s = SessionId::new(&row.session).map_err(|e| MediaError::Store(e.to_string()))?;
            self.blobs
                .delete(&object_key(&ws, &s, &row.sha256)?)
                .await?;
        }
        Ok(())
    }

    /// A session was deleted: its files go (from the store and the index).
    pub async fn delete_session(&self, ws: &WorkspaceId, s: &SessionId) {
        self.modes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ws.clone(), s.clone()));
        let Ok(index) = self.index() else {
            warn!(workspace = %ws, session = %s, "session deleted while the shard store is closed; its media stay until retention");
            return;
        };
        let rows = match index.media_of_session(ws, s).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(workspace = %ws, session = %s, error = %e, "listing a deleted session's media");
                return;
            }
        };
        for row in &rows {
            if let Err(e) = self.remove(&index, row).await {
                warn!(workspace = %ws, session = %s, error = %e, "deleting a deleted session's media");
            }
        }
        if !rows.is_empty() {
            info!(workspace = %ws, session = %s, files = rows.len(), "deleted session's media removed");
        }
    }

    /// Applies the retention age and then the size cap at `now` (Unix ms); returns the rows
    /// removed.
    pub async fn enforce(&self, index: &Store, now: u64) -> Result<usize, MediaError> {
        let db = |e: crate::store::StoreError| MediaError::Store(e.to_string());
        let mut removed = 0;
        if let Some(keep) = self.config.retention {
            let cutoff = now.saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
            loop {
                let rows = index
                    .media_older_than(cutoff, JANITOR_BATCH)
                    .await
                    .map_err(db)?;
                if rows.is_empty() {
                    break;
                }
                for row in &rows {
                    self.remove(index, row).await?;
                    removed += 1;
                }
            }
        }
        while index.media_total_bytes().await.map_err(db)? > self.config.store_max_bytes {
            let rows = index.media_oldest(JANITOR_BATCH).await.map_err(db)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                self.remove(index, row).await?;
                removed += 1;
                if index.media_total_bytes().await.map_err(db)? <= self.config.store_max_bytes {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// Runs [`MediaService::enforce`] when woken (a file was stored) and at least every
    /// hour (or every quarter of the retention, when shorter), until `stop`. Errors are
    /// logged and the next round tries again; it sleeps between rounds, never spins.
    async fn janitor(&self, index: Store, wake: Arc<Notify>, stop: CancellationToken) {
        let every = self
            .config
            .retention
            .map(|r| r / 4)
            .unwrap_or(Duration::from_secs(3600))
            .clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            match self.enforce(&index, now_ms()).await {
                Ok(0) => {}
                Ok(n) => info!(
                    shard = self.shard,
                    removed = n,
                    "media janitor removed files"
                ),
                Err(e) => warn!(shard = self.shard, error = %e, "media janitor round failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
