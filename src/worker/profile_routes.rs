//! The profile routes: `PUT …/sessions/{s}/profile` adopts a session from a tar of a Chromium
//! profile (a whatsapp-web.js LocalAuth directory, or an export), `GET …/sessions/{s}/profile`
//! exports one (docs/migration.md).
//!
//! **Import.** The worker takes the workspace (its lock) first, refuses an existing session
//! (409 `session_exists`, after reading out and dropping the body so the answer arrives), then
//! unpacks the stream into a staging directory next to the target ([`crate::migrate::stage`])
//! with the size cap (`--profile-max-bytes`, 413), a stall timeout (408) and the tar entry
//! rules (400 `invalid_profile`), checks the files and bytes the client announced in `Wafleet-Profile-Files`
//! / `Wafleet-Profile-Bytes` (400 `profile_mismatch`), removes stale `Singleton*` files under the
//! workspace lease, writes `session.json` (with the `wafleet_import` record in its metadata) and
//! renames it into place, then starts the session. It logs in from the profile, without a QR.
//!
//! **Export.** Only a session whose browser is closed (`STOPPED` or `FAILED`) is exported,
//! else 409 `session_running`: a running Chromium rewrites its LevelDB files, and a copy taken
//! meanwhile may not open. The stream is cut (the client sees a truncated tar and refuses it)
//! if the session starts while it is being read or a file changes size.

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use warp::{Filter, Reply};

use super::host::{DesiredState, SessionConfig, SessionStatus};
use super::layout::now_ms;
use super::request::{Api, gate, host_error, running_session, take_workspace, unavailable};
use crate::api::ApiError;
use crate::engine::Status;
use crate::ids::SessionId;
use crate::migrate::map::validate_client_id;
use crate::migrate::plan::{IMPORT_METADATA_KEY, ImportRecord};
use crate::migrate::profile::{self, UnpackLimits};
use crate::migrate::{
    BYTES_HEADER, CLIENT_ID_HEADER, FILES_HEADER, MigrateError, SOURCE_HEADER, stage,
};

/// `PUT` and `GET /v1/workspaces/{ws}/sessions/{s}/profile`.
pub fn routes(
    api: Api,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || api.clone());
    let auth = warp::header::optional::<String>("authorization");
    let put = warp::path!("v1" / "workspaces" / String / "sessions" / String / "profile")
        .and(warp::put())
        .and(with.clone())
        .and(auth)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and_then(|ws, s, api, auth, headers, body| async move {
            put_profile(ws, s, api, auth, headers, body)
                .await
                .map_err(warp::reject::custom)
        });
    let get = warp::path!("v1" / "workspaces" / String / "sessions" / String / "profile")
        .and(warp::get())
        .and(with)
        .and(auth)
        .and_then(|ws, s, api, auth| async move {
            get_profile(ws, s, api, auth)
                .await
                .map_err(warp::reject::custom)
        });
    put.or(get).unify()
}

/// Maps a migration error to the API's JSON error.
fn migrate_error(e: MigrateError) -> ApiError {
    match e {
        MigrateError::Tar(t) => ApiError::bad_request("invalid_profile", t.to_string()),
        MigrateError::Invalid(m) => ApiError::bad_request("invalid_profile", m),
        MigrateError::Mismatch { .. } => ApiError::bad_request("profile_mismatch", e.to_string()),
        MigrateError::TooLarge(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
        ),
        MigrateError::Stalled(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            e.to_string(),
        ),
        MigrateError::Body(m) => ApiError::bad_request("invalid_body", m),
        MigrateError::Exists(_) => {
            ApiError::new(StatusCode::CONFLICT, "session_exists", e.to_string())
        }
        other => {
            tracing::error!(error = %other, "profile transfer");
            ApiError::internal("profile storage error")
        }
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<u64, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_manifest",
                format!("header {name} (a decimal count) is required"),
            )
        })
}

/// What the client says about the upload: totals, source and client id.
fn manifest(headers: &HeaderMap, cap: u64) -> Result<(u64, u64, ImportRecord), ApiError> {
    let files = header_u64(headers, FILES_HEADER)?;
    let bytes = header_u64(headers, BYTES_HEADER)?;
    let too_large = |n: u64| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the profile ({n} bytes) is larger than this worker's cap of {cap} bytes"),
        )
    };
    if bytes > cap {
        return Err(too_large(bytes));
    }
    if let Some(n) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && n > cap
    {
        return Err(too_large(n));
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let source = text(SOURCE_HEADER).unwrap_or_else(|| "tar".into());
    if source.is_empty()
        || source.len() > 32
        || !source
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ApiError::bad_request(
            "invalid_manifest",
            format!("{SOURCE_HEADER} must be 1-32 of [a-z0-9-]"),
        ));
    }
    let client_id = text(CLIENT_ID_HEADER).unwrap_or_default();
    if !client_id.is_empty() {
        validate_client_id(&client_id).map_err(|m| ApiError::bad_request("invalid_manifest", m))?;
    }
    Ok((
        files,
        bytes,
        ImportRecord {
            source,
            client_id,
            files,
            bytes,
            at_ms: now_ms(),
        },
    ))
}

/// How long a refused upload is read before the connection is given up (see [`drain`]).
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The checks that come before a byte of the body is read: the workspace is ours, the session
/// does not exist yet, and this worker runs the engine host.
async fn admit(
    api: &Api,
    ws: &crate::ids::WorkspaceId,
    s: &SessionId,
) -> Result<std::sync::Arc<super::engine_host::EngineHost>, ApiError> {
    take_workspace(api, ws).await?;
    if api
        .shared
        .host
        .get_session(ws, s)
        .await
        .map_err(|e| host_error(ws, e))?
        .is_some()
        || stage::session_exists(&api.shared.data, ws, s)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "session_exists",
            format!("session {s} already exists in workspace {ws}; not overwritten"),
        ));
    }
    api.engine().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported",
            "profile import needs the engine session host",
        )
    })
}

/// Reads and drops the rest of a refused upload, up to `cap` bytes and `deadline`.
///
/// Answering before the body is read and then closing leaves unread bytes in the socket, and
/// the kernel resets a connection closed with unread data: the reset can overtake the answer,
/// and a proxy in front (the router) then sees a reset instead of the 409. Reading the body
/// out first lets the answer arrive; the cap and the deadline bound what a refusal costs.
async fn drain<S, B>(mut body: S, cap: u64, deadline: std::time::Duration)
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send,
    B: Buf,
{
    let read = async {
        let mut seen: u64 = 0;
        while let Some(Ok(chunk)) = body.next().await {
            seen = seen.saturating_add(chunk.remaining() as u64);
            if seen > cap {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(deadline, read).await;
}

async fn put_profile<S, B>(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
    headers: HeaderMap,
    body: S,
) -> Result<warp::reply::Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send,
    B: Buf,
{
    let ws = gate(&api, &ws, auth.as_deref())?;
    let s = SessionId::new(s)?;
    let (files, bytes, record) = manifest(&headers, api.profile_max_bytes)?;
    // From here the client is authenticated and its announced size is within the cap: a
    // refusal reads (and drops) what it still sends, so the answer reaches it (see `drain`).
    let engine = match admit(&api, &ws, &s).await {
        Ok(engine) => engine,
        Err(e) => {
            drain(body, api.profile_max_bytes, DRAIN_DEADLINE).await;
            return Err(e);
        }
    };
    let limits = UnpackLimits {
        max_bytes: api.profile_max_bytes,
        ..UnpackLimits::default()
    };
    let body = body.map(|r| r.map(|mut b| b.copy_to_bytes(b.remaining())));
    let staged = stage::stage(&api.shared.data, &ws, &s, body, limits, files, bytes)
        .await
        .map_err(|e| {
            tracing::warn!(workspace = %ws, session = %s, error = %e, "profile import refused");
            migrate_error(e)
        })?;
    // The workspace lock is what makes removing Chromium's lock files safe (DESIGN §5).
    let Some(lease) = engine.lease(&ws).filter(|l| l.is_held()) else {
        staged.abort().await;
        return Err(unavailable(
            "workspace_unavailable",
            &format!("workspace {ws} is being handed over; retry"),
        ));
    };
    if let Err(e) = crate::engine::profile::remove_stale_singletons(&staged.profile(), &ws, &lease)
    {
        staged.abort().await;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "profile_in_use",
            e.to_string(),
        ));
    }
    let unpacked = staged.unpacked;
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert(
        IMPORT_METADATA_KEY.to_owned(),
        serde_json::to_value(&record).unwrap_or_default(),
    );
    let config = SessionConfig {
        session: s.clone(),
        webhook: None,
        webhooks: Vec::new(),
        metadata,
        pacing: None,
        desired: DesiredState::Running,
        created_at_ms: now_ms(),
        reject_calls: false,
        media_download: Default::default(),
    };
    staged.commit(&config).await.map_err(migrate_error)?;
    tracing::info!(workspace = %ws, session = %s, files = unpacked.files, bytes = unpacked.bytes,
        source = %record.source, "profile imported");
    let info = engine
        .adopt_session(&ws, config)
        .await
        .map_err(|e| host_error(&ws, e))?;
    Ok(warp::reply::with_status(warp::reply::json(&info), StatusCode::CREATED).into_response())
}

async fn get_profile(
    ws: String,
    s: String,
    api: Api,
    auth: Option<String>,
) -> Result<warp::reply::Response, ApiError> {
    let (ws, s) = running_session(&api, &ws, &s, auth.as_deref())?;
    let info = api
        .shared
        .host
        .get_session(&ws, &s)
        .await
        .map_err(|e| host_error(&ws, e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "session_not_found",
                format!("no session {s} in workspace {ws}"),
            )
        })?;
    if !matches!(info.status, SessionStatus::Stopped | SessionStatus::Failed) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "session_running",
            format!(
                "session is {}; stop it first (POST …/sessions/{s}/stop) so its profile is flushed",
                info.status.as_str()
            ),
        ));
    }
    let engine = api.engine().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported",
            "profile export needs the engine session host",
        )
    })?;
    let handle = engine
        .handle(&ws, &s)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "session_not_found", "session gone"))?;
    let dir = stage::session_dir(&api.shared.data, &ws, &s).join(super::engine_host::PROFILE_DIR);
    let listing = tokio::task::spawn_blocking(move || profile::list_profile(&dir))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            MigrateError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "profile_not_found",
                    "the session has no profile (logged out)",
                )
            }
            other => migrate_error(other),
        })?;
    let (files, bytes) = (listing.files, listing.bytes);
    // Cut the stream if the browser comes back while the profile is read.
    let stream = profile::tar_stream(listing).map(move |chunk| {
        let st = handle.status();
        if !matches!(st.status, Status::Stopped | Status::Failed) {
            tracing::warn!("session started during an export; cutting the stream");
            return Err(MigrateError::Changed("the session (it started)".into()));
        }
        chunk
    });
    let stream = SyncStream(std::sync::Mutex::new(Box::pin(
        stream.map(|r: Result<Bytes, MigrateError>| r.map_err(std::io::Error::other)),
    )));
    let mut resp = warp::reply::stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(FILES_HEADER, HeaderValue::from(files));
    h.insert(BYTES_HEADER, HeaderValue::from(bytes));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// Makes a `Send` stream `Sync`, as warp's streaming body asks, without real locking: the mutex
/// is only reached through `&mut`.
struct SyncStream<S>(std::sync::Mutex<std::pin::Pin<Box<S>>>);

impl<S: Stream> Stream for SyncStream<S> {
    type Item = S::Item;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        self.get_mut()
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
            .poll_next(cx)
    }
}
