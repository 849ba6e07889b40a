//! In-process tests of the driver and the HTTP surface over an in-memory coordinator (the fake
//! implements the same [`Coordinator`] trait as the Consul adapter) and the placeholder host.
//! The real-process tests with the built-in Consul agent are in `tests/it/fleet.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::coordinator::{CoordError, Coordinator};
use super::driver::{Connector, DriverConfig, Shared, run_terms};
use super::host::{HostError, SessionConfig, SessionHost, SessionInfo, StopMode, WorkspaceLease};
use super::http::filters;
use super::placeholder::PlaceholderHost;
use super::request::Api;
use crate::auth::Authority;
use crate::ids::SessionId;
use crate::ids::WorkspaceId;
use crate::shard::ShardMap;
use crate::shutdown::CancellationToken;

/// Lock table shared by every term: key → term id.
#[derive(Default)]
struct MemStore {
    locks: Mutex<HashMap<String, u64>>,
    next: AtomicU64,
    fences: Mutex<HashMap<u64, CancellationToken>>,
}

impl MemStore {
    fn try_take(&self, key: &str, term: u64) -> bool {
        let mut l = self.locks.lock().unwrap();
        match l.get(key) {
            Some(h) if *h != term => false,
            _ => {
                l.insert(key.to_owned(), term);
                true
            }
        }
    }
    fn holder(&self, key: &str) -> Option<u64> {
        self.locks.lock().unwrap().get(key).copied()
    }
    /// The session of `term` expired: its locks are free.
    fn expire(&self, term: u64) {
        self.locks.lock().unwrap().retain(|_, h| *h != term);
    }
}

struct MemConnector(Arc<MemStore>);

impl Connector for MemConnector {
    fn connect(&self) -> BoxFuture<'_, Result<Arc<dyn Coordinator>, CoordError>> {
        let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
        let fence = CancellationToken::new();
        self.0.fences.lock().unwrap().insert(id, fence.clone());
        let term = MemTerm {
            id,
            store: self.0.clone(),
            fence,
        };
        async move { Ok(Arc::new(term) as Arc<dyn Coordinator>) }.boxed()
    }
}

struct MemTerm {
    id: u64,
    store: Arc<MemStore>,
    fence: CancellationToken,
}

impl Coordinator for MemTerm {
    fn session_id(&self) -> String {
        format!("term-{}", self.id)
    }
    fn acquire_shard(&self) -> BoxFuture<'_, Result<(), CoordError>> {
        async move {
            while !self.store.try_take("shard", self.id) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        }
        .boxed()
    }
    fn acquire_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<bool, CoordError>> {
        async move {
            if self.fence.is_cancelled() {
                return Err(CoordError::SessionLost);
            }
            let ok = self.store.try_take(ws.as_str(), self.id);
            if !ok {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(ok)
        }
        .boxed()
    }
    fn release_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<(), CoordError>> {
        async move {
            let mut l = self.store.locks.lock().unwrap();
            if l.get(ws.as_str()) == Some(&self.id) {
                l.remove(ws.as_str());
            }
            Ok(())
        }
        .boxed()
    }
    fn register(&self) -> BoxFuture<'_, Result<(), CoordError>> {
        async { Ok(()) }.boxed()
    }
    fn deregister(&self) -> BoxFuture<'_, Result<(), CoordError>> {
        async { Ok(()) }.boxed()
    }
    fn fenced(&self) -> BoxFuture<'static, ()> {
        self.fence.clone().cancelled_owned().boxed()
    }
    fn term_token(&self) -> CancellationToken {
        self.fence.clone()
    }
    fn abandon(&self) {}
    fn close(&self) -> BoxFuture<'_, Result<(), CoordError>> {
        async move {
            self.store.expire(self.id);
            Ok(())
        }
        .boxed()
    }
}

/// The placeholder host, remembering every lease it was handed.
struct Recording {
    inner: PlaceholderHost,
    leases: Mutex<Vec<WorkspaceLease>>,
}

impl Recording {
    fn held(&self, w: &str) -> Vec<bool> {
        let leases = self.leases.lock().unwrap();
        leases
            .iter()
            .filter(|l| l.workspace().as_str() == w)
            .map(WorkspaceLease::is_held)
            .collect()
    }
}

impl SessionHost for Recording {
    fn start_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        lease: WorkspaceLease,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        self.leases.lock().unwrap().push(lease.clone());
        self.inner.start_workspace(ws, lease)
    }
    fn stop_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        mode: StopMode,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        self.inner.stop_workspace(ws, mode)
    }
    fn create_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        config: SessionConfig,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        self.inner.create_session(ws, config)
    }
    fn list_sessions<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, HostError>> {
        self.inner.list_sessions(ws)
    }
    fn get_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<Option<SessionInfo>, HostError>> {
        self.inner.get_session(ws, session)
    }
    fn overlaps(&self) -> u64 {
        self.inner.overlaps()
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}

/// A served API on 127.0.0.1:0 and a client for it.
struct Served {
    base: String,
    client: reqwest::Client,
}

async fn serve(api: Api, stop: CancellationToken) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        warp::serve(filters(api))
            .incoming(listener)
            .graceful(stop.cancelled_owned())
            .run(),
    );
    Served {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
    }
}

async fn request(
    api: &Served,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Option<String>, serde_json::Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = api
        .client
        .request(method, format!("{}{path}", api.base))
        .header("authorization", "Bearer admin");
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = r.send().await.unwrap();
    let shard = resp
        .headers()
        .get("x-wafleet-shard")
        .map(|v| v.to_str().unwrap().to_owned());
    let code = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (code, shard, body)
}

#[tokio::test]
async fn create_handoff_fencing_and_drain_through_the_driver() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::default());
    let (map_tx, map_rx) = watch::channel(Some(Arc::new(ShardMap::uniform(1))));
    let host = Arc::new(Recording {
        inner: PlaceholderHost::new(dir.path(), 0),
        leases: Mutex::new(Vec::new()),
    });
    let shared = Shared::new(0, dir.path().to_path_buf(), host.clone(), map_rx);
    let api = Api {
        shared: shared.clone(),
        authority: Arc::new(
            Authority::new(Some("admin".into()), vec!["0123456789abcdef0123".into()]).unwrap(),
        ),
        profile_max_bytes: crate::migrate::profile::DEFAULT_MAX_PROFILE_BYTES,
    };
    let shutdown = CancellationToken::new();
    let api_authority = api.authority.clone();
    let api = serve(api, shutdown.clone()).await;
    let ready = Arc::new(AtomicU64::new(0));
    let r2 = ready.clone();
    let runner = tokio::spawn(run_terms(
        shared.clone(),
        Arc::new(MemConnector(store.clone())),
        DriverConfig {
            restore_concurrency: 2,
            drain_grace: Duration::from_secs(10),
            on_first_ready: Some(Arc::new(move || {
                r2.fetch_add(1, Ordering::SeqCst);
            })),
            volume: None,
            owner: None,
        },
        shutdown.clone(),
    ));
    eventually("ready", || shared.status.borrow().ready).await;
    assert_eq!(ready.load(Ordering::SeqCst), 1);

    // Unknown workspace: 200, empty. Create: 201, lock held, running.
    let (code, shard, body) = request(&api, "GET", "/v1/workspaces/acme/sessions", None).await;
    assert_eq!((code, shard.as_deref()), (200, Some("0")));
    assert_eq!(body["sessions"], serde_json::json!([]));
    let (code, _, body) = request(
        &api,
        "POST",
        "/v1/workspaces/acme/sessions",
        Some(r#"{"session":"s1","metadata":{"k":"v"}}"#),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["session"], "s1");
    assert_eq!(store.holder("acme"), Some(1));
    let (code, _, body) = request(&api, "GET", "/v1/workspaces/acme/sessions/s1", None).await;
    assert_eq!((code, body["metadata"]["k"].as_str()), (200, Some("v")));
    // A session's own pacing is validated, then kept in its session.json.
    let (code, _, body) = request(
        &api,
        "POST",
        "/v1/workspaces/acme/sessions",
        Some(r#"{"session":"paced","pacing":{"interval_ms":1000,"jitter_ms":2000}}"#),
    )
    .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("invalid_pacing"))
    );
    let (code, _, body) = request(
        &api,
        "POST",
        "/v1/workspaces/acme/sessions",
        Some(r#"{"session":"paced","pacing":{"interval_ms":8000,"typing":false}}"#),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("workspaces/acme/paced/session.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["pacing"]["interval_ms"], 8000);
    assert_eq!(saved["pacing"]["typing"], false);
    // Workspace tokens: their own workspace only; no token: 401.
    let token = api_authority.mint(&ws("acme")).unwrap();
    let with = |path: &str, t: &str| {
        api.client
            .get(format!("{}{path}", api.base))
            .header("authorization", format!("Bearer {t}"))
    };
    let r = with("/v1/workspaces/acme/sessions", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = with("/v1/workspaces/other/sessions", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = with("/v1/worker/state", &token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = api
        .client
        .get(format!("{}/v1/workspaces/acme/sessions", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["x-wafleet-shard"], "0");
    let (code, _, body) = request(
        &api,
        "POST",
        "/v1/workspaces/acme/sessions",
        Some(r#"{"session":"../x"}"#),
    )
    .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("invalid_session"))
    );

    // The map moves acme away: stopped, released, 421 naming the new owner.
    let mut two = ShardMap::uniform(2);
    two.version = 2;
    two.pins.insert(ws("acme"), 1);
    map_tx.send_replace(Some(Arc::new(two)));
    eventually("acme released", || store.holder("acme").is_none()).await;
    assert_eq!(
        host.held("acme"),
        vec![false],
        "the lease ends before the release"
    );
    assert!(
        host.list_sessions(&ws("acme")).await.is_err(),
        "still running"
    );
    let (code, _, body) = request(&api, "GET", "/v1/workspaces/acme/sessions", None).await;
    assert_eq!(
        (code, body["error"].as_str(), body["shard"].as_u64()),
        (421, Some("not_owner"), Some(1))
    );

    // And back, while another term holds the lock: waits, then takes it when it is free.
    store.locks.lock().unwrap().insert("acme".into(), 99);
    let mut three = ShardMap::uniform(1);
    three.version = 3;
    map_tx.send_replace(Some(Arc::new(three)));
    eventually("acme acquiring", || {
        shared.status.borrow().workspaces.get(&ws("acme"))
            == Some(&super::ownership::Phase::Acquiring)
    })
    .await;
    let (code, _, body) = request(&api, "GET", "/v1/workspaces/acme/sessions", None).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (503, Some("workspace_unavailable"))
    );
    store.expire(99);
    eventually("acme running again", || store.holder("acme") == Some(1)).await;
    eventually("acme running", || {
        shared.status.borrow().workspaces.get(&ws("acme"))
            == Some(&super::ownership::Phase::Running)
    })
    .await;

    // Fencing: stops at once, keeps the locks (they die with the session), answers 503.
    let fence = store.fences.lock().unwrap()[&1].clone();
    assert_eq!(host.held("acme"), vec![false, true]);
    fence.cancel();
    assert_eq!(
        host.held("acme"),
        vec![false, false],
        "fencing ends every lease at once"
    );
    eventually("fenced", || shared.status.borrow().fenced).await;
    eventually("stopped", || {
        shared.status.borrow().workspaces.is_empty() || shared.status.borrow().term == 2
    })
    .await;
    assert!(
        host.list_sessions(&ws("acme")).await.is_err(),
        "fenced worker still runs acme"
    );
    assert_eq!(
        store.holder("acme"),
        Some(1),
        "a fenced term released a lock"
    );
    let (code, _, body) = request(&api, "GET", "/v1/workspaces/acme/sessions", None).await;
    assert_eq!((code, body["error"].as_str()), (503, Some("fenced")));
    let (code, _, _) = request(&api, "GET", "/readyz", None).await;
    assert_eq!(code, 503);
    // Term 2 waits for the shard lock until term 1's session expires.
    eventually("term 2 opened", || shared.status.borrow().term == 2).await;
    assert!(!shared.status.borrow().ready);
    store.expire(1);
    eventually("ready again", || shared.status.borrow().ready).await;
    eventually("acme back", || store.holder("acme") == Some(2)).await;
    assert_eq!(
        ready.load(Ordering::SeqCst),
        1,
        "readiness line printed once"
    );

    // Drain: every lock released, runner returns true.
    shutdown.cancel();
    assert!(runner.await.unwrap());
    assert!(store.locks.lock().unwrap().is_empty());
    assert_eq!(host.overlaps(), 0);
}

/// A host whose starts take a while (to observe the restore concurrency) and whose stops can be
/// made to hang (to exceed the drain grace).
struct Slow {
    running: Mutex<std::collections::HashSet<WorkspaceId>>,
    starting: AtomicU64,
    max_starting: AtomicU64,
    hang_stops: bool,
}

impl SessionHost for Slow {
    fn start_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        _lease: WorkspaceLease,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        async move {
            let now = self.starting.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_starting.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.starting.fetch_sub(1, Ordering::SeqCst);
            self.running.lock().unwrap().insert(ws.clone());
            Ok(())
        }
        .boxed()
    }
    fn stop_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        _mode: StopMode,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        async move {
            if self.hang_stops {
                futures::future::pending::<()>().await;
            }
            self.running.lock().unwrap().remove(ws);
            Ok(())
        }
        .boxed()
    }
    fn create_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        _config: SessionConfig,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        async move { Err(HostError::NotRunning(ws.clone())) }.boxed()
    }
    fn list_sessions<'a>(
        &'a self,
        _ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, HostError>> {
        async move { Ok(Vec::new()) }.boxed()
    }
    fn get_session<'a>(
        &'a self,
        _ws: &'a WorkspaceId,
        _session: &'a SessionId,
    ) -> BoxFuture<'a, Result<Option<SessionInfo>, HostError>> {
        async move { Ok(None) }.boxed()
    }
}

async fn slow_fleet(
    hang_stops: bool,
    grace: Duration,
) -> (
    Arc<Slow>,
    Arc<MemStore>,
    Arc<Shared>,
    CancellationToken,
    tokio::task::JoinHandle<bool>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::create_dir_all(dir.path().join(format!("workspaces/ws-{i}"))).unwrap();
    }
    let host = Arc::new(Slow {
        running: Mutex::new(Default::default()),
        starting: AtomicU64::new(0),
        max_starting: AtomicU64::new(0),
        hang_stops,
    });
    let store = Arc::new(MemStore::default());
    let (_tx, map_rx) = watch::channel(Some(Arc::new(ShardMap::uniform(1))));
    // The map sender lives in the runner task, so the map watch stays open until it ends.
    let shared = Shared::new(0, dir.path().to_path_buf(), host.clone(), map_rx);
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn({
        let (shared, store, shutdown) = (shared.clone(), store.clone(), shutdown.clone());
        async move {
            let _keep = _tx;
            run_terms(
                shared,
                Arc::new(MemConnector(store)),
                DriverConfig {
                    restore_concurrency: 3,
                    drain_grace: grace,
                    on_first_ready: None,
                    volume: None,
                    owner: None,
                },
                shutdown,
            )
            .await
        }
    });
    (host, store, shared, shutdown, runner, dir)
}

#[tokio::test]
async fn restores_are_staggered_by_the_restore_concurrency() {
    let (host, store, shared, shutdown, runner, _dir) =
        slow_fleet(false, Duration::from_secs(10)).await;
    eventually("20 workspaces found on disk and running", || {
        host.running.lock().unwrap().len() == 20
    })
    .await;
    assert!(shared.status.borrow().ready);
    let max = host.max_starting.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&max),
        "{max} starts at once with a concurrency of 3"
    );
    shutdown.cancel();
    assert!(runner.await.unwrap(), "clean drain");
    assert!(host.running.lock().unwrap().is_empty());
    assert!(store.locks.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_drain_past_its_grace_gives_up_without_releasing_locks() {
    let (host, store, _shared, shutdown, runner, _dir) =
        slow_fleet(true, Duration::from_millis(200)).await;
    eventually("running", || host.running.lock().unwrap().len() == 20).await;
    shutdown.cancel();
    assert!(
        !runner.await.unwrap(),
        "the drain reports it ran out of grace"
    );
    // Browsers may still run: their locks must stay with the session, which expires on its own.
    assert_eq!(
        store.locks.lock().unwrap().len(),
        21,
        "shard lock + 20 workspace locks kept"
    );
}
