//! The simulator's I/O: warp routes for the page, its websocket and the `/sim/…` control API, the
//! timer ticker and the state-file writer, around the pure [`Sim`](super::state::Sim).
//!
//! One `std::sync::Mutex` guards the `Sim`; it is held only for a synchronous core call and the
//! draining of its effects, never across an `.await`. Effects are then handed to each
//! connection's unbounded channel (a page that stops reading only grows its own queue, and the
//! websocket task ends when the page goes away).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::{Filter, Rejection, Reply};

use super::state::{
    ClientMsg, ConnId, Effect, Inbound, LinkOutcome, MAX_MEDIA_BYTES, MAX_UPLOAD_BYTES, NewGroup,
    PasskeyFault, Persisted, PhoneError, Sim,
};
use super::versions::VersionError;
use super::{SimConfig, SimError};
use crate::api::{ApiError, recover};

mod activity;
mod assets;
mod chats;
mod contacts;
mod faults;
mod groups;
mod page;
use assets::*;
use faults::{FaultsReq, apply_faults, fault_settings};
pub use faults::{MAX_MISSING_NAMES, MAX_SYNC_DELAY_MS};
use page::page_conn;

mod control;
use control::{
    LinkReq, PairReq, PasskeyReq, PhoneQuery, PhoneReq, RevokeReq, WebVersionReq, json_body,
    json_body_up_to, link_reply, phone_error, reply, web_version,
};

/// Control API bodies are small; media never goes through it.
pub const MAX_CONTROL_BODY_BYTES: u64 = 64 * 1024;
/// `/sim/inbound` may carry a file (`media.data`, base64 of at most `MAX_MEDIA_BYTES`).
pub const MAX_INBOUND_BODY_BYTES: u64 = (MAX_MEDIA_BYTES as u64).div_ceil(3) * 4 + 64 * 1024;
/// Largest websocket message a page may send: text messages and clipped fields only (media
/// bytes go to `/mms/…`).
const MAX_WS_MESSAGE_BYTES: usize = 1024 * 1024;
/// Upper bound of the slow-load fault.
pub const MAX_SLOW_LOAD_MS: u64 = 3_600_000;
/// Upper bound of the reconnect refusal after a dropped socket.
pub const MAX_REFUSE_MS: u64 = 3_600_000;

/// A simulator started by [`spawn`].
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), SimError>>,
}

impl RunningSim {
    /// The bound HTTP address; the page is `http://{addr}/`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL, `http://{addr}/`: what workers get as `--wa-url`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Waits until the simulator stopped (after its shutdown token was cancelled).
    pub async fn wait(self) -> Result<(), SimError> {
        self.task.await.map_err(|e| SimError::Task(e.to_string()))?
    }
}

/// Binds `config.listen` and runs the simulator in a background task until `shutdown`.
pub async fn spawn(config: SimConfig, shutdown: CancellationToken) -> Result<RunningSim, SimError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| SimError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Listen {
        addr: config.listen,
        source,
    })?;
    // Load the state file before returning so a bad file fails the caller, not a log line.
    let sim = load_sim(&config)?;
    let task = tokio::spawn(serve(listener, config, sim, shutdown));
    Ok(RunningSim { addr, task })
}

/// Runs the simulator on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: SimConfig,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let sim = load_sim(&config)?;
    serve(listener, config, sim, shutdown).await
}

fn load_sim(config: &SimConfig) -> Result<Sim, SimError> {
    let mut sim = Sim::new(config.timing(), rand::random());
    if let Some(path) = &config.state_file {
        match std::fs::read(path) {
            Ok(bytes) => {
                let state: Persisted =
                    serde_json::from_slice(&bytes).map_err(|e| SimError::StateFile {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                tracing::info!(path = %path.display(), devices = state.devices.len(), "restored linked devices");
                sim.restore(state);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SimError::StateFile {
                    path: path.clone(),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(sim)
}

async fn serve(
    listener: TcpListener,
    config: SimConfig,
    sim: Sim,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let tracker = TaskTracker::new();
    let (persist_tx, persist_rx) = watch::channel(sim.snapshot());
    let page_config = format!(
        "window.__simConfig = {};\n",
        serde_json::json!({ "ballast_mb": config.page_ballast_mb.min(super::MAX_PAGE_BALLAST_MB) })
    );
    let shared = Arc::new(Shared {
        sim: Mutex::new(sim),
        page_config,
        conns: Mutex::new(HashMap::new()),
        slow_load_ms: Mutex::new(0),
        missing: Mutex::new(MissingSurface::default()),
        held_loads: AtomicUsize::new(0),
        release_loads: Notify::new(),
        persist: persist_tx,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    });

    if let Some(path) = config.state_file.clone() {
        tracker.spawn(
            persist_loop(path, persist_rx, shutdown.clone())
                .instrument(tracing::info_span!("sim_persist")),
        );
    }
    tracker.spawn(
        tick_loop(
            shared.clone(),
            Duration::from_millis(config.tick_ms.max(1)),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("sim_tick")),
    );

    let routes = routes(shared.clone()).recover(recover);
    let stop = shutdown.clone();
    warp::serve(routes)
        .incoming(listener)
        .graceful(async move { stop.cancelled().await })
        .run()
        .await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

// === shared state ===

/// Modules and members the served builds lack, and whether they are July-2025 builds (faults).
#[derive(Debug, Clone, Default)]
struct MissingSurface {
    modules: Vec<String>,
    members: Vec<String>,
    legacy: bool,
}

enum Outbound {
    Text(String),
    Close,
}

struct Shared {
    sim: Mutex<Sim>,
    /// `wa-config.js`: settings the page reads at boot (rendered once at start).
    page_config: String,
    /// Senders to each connected page's websocket task; removed by that task when it ends.
    conns: Mutex<HashMap<ConnId, mpsc::UnboundedSender<Outbound>>>,
    slow_load_ms: Mutex<u64>,
    /// What the `missing_modules` / `missing_members` faults take out of the served builds.
    missing: Mutex<MissingSurface>,
    /// Chunk requests the slow-load fault is holding right now (visible in `/sim/faults`).
    held_loads: AtomicUsize,
    /// Wakes every held chunk request when the fault is lowered or cleared.
    release_loads: Notify,
    /// The latest linked-device snapshot; the persist loop writes whatever is newest.
    persist: watch::Sender<Persisted>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the core half-updated in a way that matters
    // more than stopping the whole simulator would; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    /// Runs a core call, then delivers its effects and publishes a new snapshot if needed.
    fn with<R>(&self, f: impl FnOnce(&mut Sim, u64) -> R) -> R {
        let (r, effects, snapshot) = {
            let mut sim = lock(&self.sim);
            let r = f(&mut sim, now_ms());
            let effects = sim.take_effects();
            let snapshot = sim.take_dirty().then(|| sim.snapshot());
            (r, effects, snapshot)
        };
        if !effects.is_empty() {
            let conns = lock(&self.conns);
            for e in effects {
                let (id, out) = match e {
                    Effect::Send(id, msg) => match serde_json::to_string(&msg) {
                        Ok(s) => (id, Outbound::Text(s)),
                        Err(err) => {
                            tracing::error!(%err, "cannot encode a server message");
                            continue;
                        }
                    },
                    Effect::Close(id) => (id, Outbound::Close),
                };
                if let Some(tx) = conns.get(&id) {
                    let _ = tx.send(out);
                }
            }
        }
        if let Some(s) = snapshot {
            self.persist.send_replace(s);
        }
        r
    }
}

async fn tick_loop(shared: Arc<Shared>, every: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => shared.with(|sim, now| sim.tick(now)),
        }
    }
}

async fn persist_loop(
    path: PathBuf,
    mut rx: watch::Receiver<Persisted>,
    shutdown: CancellationToken,
) {
    loop {
        let stop = tokio::select! {
            changed = rx.changed() => changed.is_err(),
            _ = shutdown.cancelled() => true,
        };
        let state = rx.borrow_and_update().clone();
        if let Err(e) = write_state(&path, &state).await {
            tracing::error!(path = %path.display(), error = %e, "cannot write the state file");
        }
        if stop {
            return;
        }
    }
}

/// Writes the file atomically (temp file, fsync, rename) so a crash never leaves half a file.
async fn write_state(path: &Path, state: &Persisted) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = tokio::fs::File::create(&tmp).await?;
    tokio::io::AsyncWriteExt::write_all(&mut f, &bytes).await?;
    f.sync_all().await?;
    drop(f);
    tokio::fs::rename(&tmp, path).await
}

// === routes ===

fn routes(shared: Arc<Shared>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let with = {
        let shared = shared.clone();
        warp::any().map(move || shared.clone())
    };

    let index = warp::path::end()
        .and(warp::get())
        .and(with.clone())
        .map(|shared: Arc<Shared>| {
            let live = shared.with(|sim, _| sim.web_versions().live.clone());
            asset(for_version(INDEX_HTML, &live), "text/html; charset=utf-8")
        });
    let phone = warp::path!("phone")
        .and(warp::get())
        .map(|| asset(PHONE_HTML, "text/html; charset=utf-8"));
    let statics = warp::path!("static" / String)
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with.clone())
        .and_then(static_chunk);
    let web_version_get = warp::path!("sim" / "web-version")
        .and(warp::get())
        .and(with.clone())
        .map(|shared: Arc<Shared>| {
            warp::reply::json(&shared.with(|sim, _| sim.web_versions().clone())).into_response()
        });
    let web_version_post = warp::path!("sim" / "web-version")
        .and(warp::post())
        .and(json_body::<WebVersionReq>())
        .and(with.clone())
        .map(|req: WebVersionReq, shared: Arc<Shared>| web_version(req, &shared));
    let health = warp::path!("healthz").and(warp::get()).map(|| "ok");
    let ws =
        warp::path!("ws")
            .and(warp::ws())
            .and(with.clone())
            .map(|ws: Ws, shared: Arc<Shared>| {
                ws.max_message_size(MAX_WS_MESSAGE_BYTES)
                    .max_frame_size(MAX_WS_MESSAGE_BYTES)
                    .on_upgrade(move |socket| {
                        let tracker = shared.tracker.clone();
                        // Tracked so shutdown waits for every page connection to close.
                        tracker.track_future(page_conn(socket, shared))
                    })
            });

    let link = warp::path!("sim" / "link")
        .and(warp::post())
        .and(json_body::<LinkReq>())
        .and(with.clone())
        .map(|req: LinkReq, shared: Arc<Shared>| {
            link_reply(
                shared.with(|sim, now| sim.link_qr(&req.qr, &req.phone, req.name.as_deref(), now)),
            )
        });
    let pair = warp::path!("sim" / "pair")
        .and(warp::post())
        .and(json_body::<PairReq>())
        .and(with.clone())
        .map(|req: PairReq, shared: Arc<Shared>| {
            link_reply(
                shared.with(|sim, now| sim.pair(&req.phone, &req.code, req.name.as_deref(), now)),
            )
        });
    let inbound = warp::path!("sim" / "inbound")
        .and(warp::post())
        .and(json_body_up_to::<Inbound>(MAX_INBOUND_BODY_BYTES))
        .and(with.clone())
        .map(|req: Inbound, shared: Arc<Shared>| {
            reply(
                shared
                    .with(|sim, now| sim.inbound(&req, now))
                    .map(|id| serde_json::json!({ "id": id })),
            )
        });
    let revoke = warp::path!("sim" / "revoke")
        .and(warp::post())
        .and(json_body::<RevokeReq>())
        .and(with.clone())
        .map(|req: RevokeReq, shared: Arc<Shared>| {
            reply(
                shared
                    .with(|sim, now| sim.revoke(&req.from, &req.to, &req.wa_id, now))
                    .map(|()| serde_json::json!({ "revoked": req.wa_id })),
            )
        });
    let groups = warp::path!("sim" / "groups")
        .and(warp::post())
        .and(json_body::<NewGroup>())
        .and(with.clone())
        .map(|req: NewGroup, shared: Arc<Shared>| {
            reply(
                shared
                    .with(|sim, now| sim.create_group(&req, now))
                    .map(|id| serde_json::json!({ "id": id })),
            )
        });
    let passkey = warp::path!("sim" / "passkey")
        .and(warp::post())
        .and(json_body::<PasskeyReq>())
        .and(with.clone())
        .map(|req: PasskeyReq, shared: Arc<Shared>| {
            reply(shared.with(|sim, now| sim.passkey(&req.phone, &req.action, now)))
        });
    let lid = warp::path!("sim" / "lid")
        .and(warp::get())
        .and(warp::query::<PhoneQuery>())
        .and(with.clone())
        .map(|q: PhoneQuery, shared: Arc<Shared>| {
            let phone = q.phone.unwrap_or_default();
            reply(
                shared
                    .with(|sim, _| sim.lid(&phone))
                    .map(|lid| serde_json::json!({ "phone": phone, "lid": lid })),
            )
        });
    // The media server (WhatsApp's mmg host): encrypted uploads, capped at MAX_UPLOAD_BYTES.
    let upload = warp::path!("mms" / String / String)
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_UPLOAD_BYTES as u64))
        .and(warp::body::bytes())
        .and(with.clone())
        .map(
            |kind: String, token: String, body: bytes::Bytes, shared: Arc<Shared>| {
                reply(
                    shared
                        .with(|sim, _| sim.upload(&kind, &token, body.to_vec()))
                        .map(|path| {
                            serde_json::json!({ "url": format!("https://mmg.whatsapp.net{path}"), "direct_path": path })
                        }),
                )
            },
        );
    // Downloads from the media server: `GET <direct path>?hash=<base64url sha256 of the
    // encrypted file>&mms-type=<type>`, as WhatsApp's download URLs name a file.
    let download = warp::path!("v" / String / String)
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with.clone())
        .map(
            |dir: String, file: String, q: HashMap<String, String>, shared: Arc<Shared>| {
                let path = format!("/v/{dir}/{file}");
                let token = q.get("hash").cloned().unwrap_or_default();
                // no-store: a browser may cache a 404/410 heuristically, and a fault that is
                // turned off must be seen by the next download.
                let mut resp = match shared.with(|sim, _| sim.media_download(&path, &token)) {
                    Ok(bytes) => {
                        warp::reply::with_header(bytes, "content-type", "application/octet-stream")
                            .into_response()
                    }
                    Err(code) => warp::reply::with_status(
                        "",
                        StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND),
                    )
                    .into_response(),
                };
                resp.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-store"),
                );
                resp
            },
        );
    let messages = warp::path!("sim" / "messages")
        .and(warp::get())
        .and(warp::query::<PhoneQuery>())
        .and(with.clone())
        .map(|q: PhoneQuery, shared: Arc<Shared>| {
            let phone = q.phone.unwrap_or_default();
            reply(shared.with(|sim, _| sim.messages(&phone)))
        });
    let unlink = warp::path!("sim" / "unlink")
        .and(warp::post())
        .and(json_body::<PhoneReq>())
        .and(with.clone())
        .map(|req: PhoneReq, shared: Arc<Shared>| {
            reply(
                shared
                    .with(|sim, _| sim.unlink(&req.phone))
                    .map(|n| serde_json::json!({ "unlinked": n })),
            )
        });
    let devices = warp::path!("sim" / "devices")
        .and(warp::get())
        .and(with.clone())
        .map(|shared: Arc<Shared>| reply(Ok::<_, PhoneError>(shared.with(|sim, _| sim.devices()))));
    let faults_get = warp::path!("sim" / "faults")
        .and(warp::get())
        .and(with.clone())
        .map(|shared: Arc<Shared>| warp::reply::json(&fault_settings(&shared)).into_response());
    let faults_post = warp::path!("sim" / "faults")
        .and(warp::post())
        .and(json_body::<FaultsReq>())
        .and(with)
        .map(|req: FaultsReq, shared: Arc<Shared>| apply_faults(req, &shared));

    // Boxed one by one (see `boxed`): the unboxed chain was one enormous nested type.
    let rest = [
        boxed(phone),
        boxed(statics),
        boxed(health),
        boxed(ws),
        boxed(link),
        boxed(pair),
        boxed(inbound),
        boxed(revoke),
        boxed(groups),
        boxed(passkey),
        boxed(lid),
        boxed(upload),
        boxed(download),
        boxed(messages),
        boxed(unlink),
        boxed(devices),
        boxed(faults_get),
        boxed(faults_post),
        boxed(web_version_get),
        boxed(web_version_post),
        boxed(contacts::routes(shared.clone())),
        boxed(chats::routes(shared.clone())),
        boxed(activity::routes(shared.clone())),
        boxed(self::groups::routes(shared)),
    ];
    let mut all = boxed(index);
    for route in rest {
        all = all.or(route).unify().boxed();
    }
    all
}

/// A route with its answer as a plain response, boxed: chaining boxed filters keeps the
/// composed type small (type-checking a long chain of unboxed warp filters costs minutes);
/// at run time it is one indirect call per route tried.
fn boxed<F, R>(f: F) -> warp::filters::BoxedFilter<(warp::reply::Response,)>
where
    F: Filter<Extract = (R,), Error = Rejection> + Clone + Send + Sync + 'static,
    R: Reply + 'static,
{
    f.map(|r: R| r.into_response()).boxed()
}
