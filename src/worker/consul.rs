//! The Consul adapter: [`Connector`] and [`Coordinator`] over `crate::consul`, and the shard map
//! watch. Thin on purpose: the policy lives in `ownership.rs` and `driver.rs`.
//!
//! Keys (DESIGN §3, prefix from `--kv-prefix`): `<prefix>/locks/shards/<k>`,
//! `<prefix>/locks/workspaces/<ws>`, `<prefix>/shardmap`. Lock values are small JSON records
//! (`{"shard","addr","pid"}`) for operators; ownership is the key's `Session`, nothing else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::coordinator::{CoordError, Coordinator};
use super::driver::Connector;
use crate::consul::session::{self as locks, SessionConfig as ConsulSessionConfig};
use crate::consul::{
    Client, ConsulError, Registration, RegistrationKeeper, ServiceRegistration, SessionKeeper,
    WORKER_SERVICE, WatchOptions, WatchState,
};
use crate::ids::WorkspaceId;
use crate::shard::ShardMap;
use crate::shutdown::{CancellationToken, TaskTracker};

/// How long one workspace acquire attempt waits for the holder to go away before reporting
/// "busy" (the ownership machine then retries, re-checking whether it still wants the lock).
pub const WORKSPACE_WAIT_SECS: u64 = 5;
/// Pause after a refused acquire on a free key (the lock delay is running).
pub const LOCK_DELAY_RETRY_MS: u64 = 400;
/// Consul's minimum `DeregisterCriticalServiceAfter`.
pub const DEREGISTER_CRITICAL_AFTER_SECS: u64 = 60;

/// Where and how a worker coordinates through Consul.
#[derive(Debug, Clone)]
pub struct ConsulSettings {
    /// The client (configured from `CONSUL_HTTP_ADDR` and friends).
    pub client: Client,
    /// KV prefix, `wafleet` by default.
    pub prefix: String,
    /// This worker's shard.
    pub shard: u32,
    /// Address and port registered in the catalog (`--advertise`).
    pub advertise_host: String,
    /// Port registered in the catalog.
    pub advertise_port: u16,
    /// Session TTL (also the TTL check's).
    pub session_ttl: Duration,
    /// Session lock delay.
    pub lock_delay: Duration,
    /// Other agents or servers of the datacenter the session keeper renews through while the
    /// local agent does not answer (`--consul-fallback-addr`).
    pub fallbacks: Vec<Client>,
    /// Tie the session to the local agent's `serfHealth` (`--session-serf-health`): a lost
    /// host then frees its locks within seconds, but an agent restart longer than the
    /// servers' failure detection (~5 s) invalidates the session. Off: the session lives by its
    /// TTL only (a lost host's locks free after TTL…2×TTL plus the lock delay).
    pub serf_health: bool,
}

impl ConsulSettings {
    fn shard_key(&self) -> String {
        format!("{}/locks/shards/{}", self.prefix, self.shard)
    }

    fn workspace_key(&self, ws: &WorkspaceId) -> String {
        format!("{}/locks/workspaces/{}", self.prefix, ws)
    }

    fn lock_value(&self) -> Vec<u8> {
        serde_json::json!({
            "shard": self.shard,
            "addr": format!("{}:{}", self.advertise_host, self.advertise_port),
            "pid": std::process::id(),
        })
        .to_string()
        .into_bytes()
    }

    fn wait_options(&self, wait: Duration) -> WatchOptions {
        WatchOptions {
            wait,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            ..WatchOptions::default()
        }
    }
}

/// Opens terms on Consul.
#[derive(Debug, Clone)]
pub struct ConsulConnector {
    settings: Arc<ConsulSettings>,
    tracker: TaskTracker,
}

impl ConsulConnector {
    /// A connector spawning its keepers through `tracker`.
    pub fn new(settings: ConsulSettings, tracker: TaskTracker) -> Self {
        Self {
            settings: Arc::new(settings),
            tracker,
        }
    }
}

impl ConsulConnector {
    fn session_config(&self) -> ConsulSessionConfig {
        let s = &self.settings;
        let mut c = ConsulSessionConfig::new(
            format!("wafleet-worker-{}", s.shard),
            s.session_ttl,
            s.lock_delay,
        );
        // `None` is Consul's default (`serfHealth`); `[]` makes the TTL the session's only
        // clock, so the session survives its local agent's restart (docs/worker.md, fencing).
        c.node_checks = (!s.serf_health).then(Vec::new);
        c.fallbacks = s.fallbacks.clone();
        c
    }

    fn term(&self, keeper: SessionKeeper, cancel: CancellationToken) -> Arc<dyn Coordinator> {
        Arc::new(ConsulTerm {
            settings: self.settings.clone(),
            tracker: self.tracker.clone(),
            session: keeper.id().to_owned(),
            fence: keeper.fence_token(),
            keeper: Mutex::new(Some(keeper)),
            registration: tokio::sync::Mutex::new(None),
            cancel,
        })
    }
}

impl Connector for ConsulConnector {
    fn connect(&self) -> BoxFuture<'_, Result<Arc<dyn Coordinator>, CoordError>> {
        async move {
            let cancel = CancellationToken::new();
            let keeper = SessionKeeper::start(
                &self.settings.client,
                self.session_config(),
                &self.tracker,
                cancel.clone(),
            )
            .await
            .map_err(store)?;
            Ok(self.term(keeper, cancel))
        }
        .boxed()
    }

    fn resume<'a>(
        &'a self,
        session: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Coordinator>, CoordError>> {
        async move {
            let cancel = CancellationToken::new();
            let keeper = SessionKeeper::resume(
                &self.settings.client,
                session,
                self.session_config(),
                &self.tracker,
                cancel.clone(),
            )
            .await
            .map_err(store)?;
            Ok(self.term(keeper, cancel))
        }
        .boxed()
    }
}

fn store(e: ConsulError) -> CoordError {
    match e {
        ConsulError::SessionNotFound(_) => CoordError::SessionLost,
        ConsulError::Cancelled => CoordError::Cancelled,
        other => CoordError::Store(other.to_string()),
    }
}

/// One Consul session and what hangs off it.
struct ConsulTerm {
    settings: Arc<ConsulSettings>,
    tracker: TaskTracker,
    session: String,
    /// Cancelled by the session keeper when it fences.
    fence: CancellationToken,
    /// Taken by `close` (destroy consumes the keeper).
    keeper: Mutex<Option<SessionKeeper>>,
    registration: tokio::sync::Mutex<Option<RegistrationKeeper>>,
    /// Stops this term's keepers (`abandon`).
    cancel: CancellationToken,
}

impl Coordinator for ConsulTerm {
    fn session_id(&self) -> String {
        self.session.clone()
    }

    fn acquire_shard(&self) -> BoxFuture<'_, Result<(), CoordError>> {
        async move {
            let s = &self.settings;
            // Cancelled when the term fences or is abandoned (the keeper fences when its
            // token is cancelled); the caller also drops this future on shutdown, which stops
            // the watch through its drop guard.
            let cancel = self.fence.child_token();
            let _guard = cancel.clone().drop_guard();
            locks::acquire_wait(
                &s.client,
                &s.shard_key(),
                &self.session,
                &s.lock_value(),
                s.wait_options(Duration::from_secs(30)),
                &cancel,
            )
            .await
            .map_err(store)
        }
        .boxed()
    }

    fn acquire_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<bool, CoordError>> {
        async move {
            let s = &self.settings;
            let key = s.workspace_key(ws);
            let value = s.lock_value();
            if locks::acquire(&s.client, &key, &self.session, &value)
                .await
                .map_err(store)?
            {
                return Ok(true);
            }
            // Held elsewhere (handoff in progress) or lock delay: wait a bounded time for the
            // key to be free, then try once more.
            let cancel = self.fence.child_token();
            let _guard = cancel.clone().drop_guard();
            let wait = Duration::from_secs(WORKSPACE_WAIT_SECS);
            let _ = tokio::time::timeout(
                wait,
                locks::wait_until_free_with(&s.client, &key, s.wait_options(wait), &cancel),
            )
            .await;
            if locks::acquire(&s.client, &key, &self.session, &value)
                .await
                .map_err(store)?
            {
                return Ok(true);
            }
            let jitter = rand::random::<u64>() % LOCK_DELAY_RETRY_MS;
            tokio::time::sleep(Duration::from_millis(LOCK_DELAY_RETRY_MS + jitter)).await;
            Ok(false)
        }
        .boxed()
    }

    fn release_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<(), CoordError>> {
        async move {
            let s = &self.settings;
            locks::release(&s.client, &s.workspace_key(ws), &self.session)
                .await
                .map(drop)
                .map_err(store)
        }
        .boxed()
    }

    fn register(&self) -> BoxFuture<'_, Result<(), CoordError>> {
        async move {
            let s = &self.settings;
            let mut meta = BTreeMap::new();
            meta.insert("shard".to_owned(), s.shard.to_string());
            meta.insert("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
            let service = ServiceRegistration {
                id: format!("{WORKER_SERVICE}-{}", s.shard),
                name: WORKER_SERVICE.to_owned(),
                tags: vec![format!("shard-{}", s.shard)],
                address: s.advertise_host.clone(),
                port: s.advertise_port,
                meta,
                checks: Vec::new(),
            };
            let mut reg = Registration::new(service, s.session_ttl);
            reg.deregister_critical_after =
                Some(Duration::from_secs(DEREGISTER_CRITICAL_AFTER_SECS));
            let mut delay = Duration::from_millis(200);
            loop {
                match RegistrationKeeper::start(
                    &s.client,
                    reg.clone(),
                    &self.tracker,
                    self.cancel.child_token(),
                )
                .await
                {
                    Ok(keeper) => {
                        *self.registration.lock().await = Some(keeper);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "service registration failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.fence.cancelled() => return Err(CoordError::SessionLost),
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        .boxed()
    }

    fn deregister(&self) -> BoxFuture<'_, Result<(), CoordError>> {
        async move {
            let keeper = self.registration.lock().await.take();
            match keeper {
                Some(k) => k.deregister().await.map_err(store),
                None => Ok(()),
            }
        }
        .boxed()
    }

    fn fenced(&self) -> BoxFuture<'static, ()> {
        self.fence.clone().cancelled_owned().boxed()
    }

    fn term_token(&self) -> CancellationToken {
        // The keeper cancels it when it fences and when it is stopped (abandon, close).
        self.fence.clone()
    }

    fn resumable(&self) -> bool {
        self.keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(SessionKeeper::fence_reason)
            == Some(crate::consul::session::FenceReason::DeadlineExceeded)
    }

    fn resume_window(&self) -> Duration {
        // The fence came 2/3 TTL after the last renewal and Consul drops a session at most
        // 2 × TTL after it: 2 × TTL from the fence covers the session's whole possible life.
        self.settings.session_ttl * 2
    }

    fn renewals(&self) -> u64 {
        self.keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, SessionKeeper::renewals)
    }

    fn abandon(&self) {
        self.cancel.cancel();
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CoordError>> {
        async move {
            let s = &self.settings;
            if let Err(e) = self.deregister().await {
                tracing::warn!(error = %e, "deregister on close failed");
            }
            if let Err(e) = locks::release(&s.client, &s.shard_key(), &self.session).await {
                tracing::warn!(error = %e, "shard lock release failed; destroying the session releases it");
            }
            let keeper = self
                .keeper
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let r = match keeper {
                Some(k) => k.destroy().await.map_err(store),
                None => Ok(()),
            };
            self.cancel.cancel();
            r
        }
        .boxed()
    }
}

/// Watches `<prefix>/shardmap` and publishes the latest *valid* map. A corrupt value (bad JSON
/// or a map that fails validation) is refused with a logged error and the last good map kept;
/// a deleted key keeps the last good map too. The returned receiver closes when `cancel` fires.
pub fn watch_shard_map(
    client: &Client,
    prefix: &str,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<watch::Receiver<Option<Arc<ShardMap>>>, ConsulError> {
    let key = format!("{prefix}/shardmap");
    let opts = WatchOptions {
        wait: Duration::from_secs(60),
        tracker: Some(tracker.clone()),
        ..WatchOptions::default()
    };
    let mut raw = crate::consul::watch::watch_key(client, &key, opts, cancel.clone())?;
    let (tx, rx) = watch::channel(None::<Arc<ShardMap>>);
    tracker.spawn(async move {
        loop {
            let pair = match &*raw.borrow_and_update() {
                WatchState::Loading => None,
                WatchState::Ready { value, .. } => Some(value.clone()),
            };
            match pair {
                None => {}
                Some(None) => {
                    if tx.borrow().is_some() {
                        tracing::warn!(key = %key, "shard map key deleted; keeping the last good map");
                    } else {
                        tracing::info!(key = %key, "no shard map yet (run `wafleet shards init`)");
                    }
                }
                Some(Some(pair)) => match ShardMap::from_json(pair.value_bytes()) {
                    Ok(map) => {
                        let changed = tx.borrow().as_deref() != Some(&map);
                        if changed {
                            tracing::info!(version = map.version, "shard map loaded");
                            tx.send_replace(Some(Arc::new(map)));
                        }
                    }
                    Err(e) => {
                        tracing::error!(key = %key, error = %e, "refusing a corrupt shard map; keeping the last good one");
                    }
                },
            }
            tokio::select! {
                r = raw.changed() => if r.is_err() { return },
                _ = cancel.cancelled() => return,
            }
        }
    });
    Ok(rx)
}
