//! `POST /v1/workspaces/{ws}/sessions` as the worker serves it: the checks around the session
//! handler ([`super::create_session`]) that need the shard store. The webhook URL must pass the
//! allow-list, and an `Idempotency-Key` replays the first answer.

use http::StatusCode;
use serde::Deserialize;

use crate::api::ApiError;
use crate::ids::SessionId;
use crate::store::{IDEMPOTENCY_TTL, IdempotencyKey, request_hash, validate_idempotency_key};
use crate::worker::layout::now_ms;
use crate::worker::messaging::routes::{messaging, stored_reply};
use crate::worker::request::{Api, gate, reject};

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// The parts of a create-session body this wrapper checks (the handler parses it fully).
#[derive(Debug, Default, Deserialize)]
struct CreateProbe {
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    webhook: Option<crate::webhook::WebhookRequest>,
}

/// `POST /v1/workspaces/{ws}/sessions` with the messaging checks around the session handler:
/// the webhook URL must pass the allow-list (`WAFLEET_WEBHOOK_ALLOW`, 400 at configuration
/// time), and an `Idempotency-Key` makes a repeat with the same body answer the first 201
/// (`Idempotent-Replayed: true`) and another body under the key 422 `idempotency_conflict`.
pub async fn create(
    ws: String,
    api: Api,
    auth: Option<String>,
    idem: Option<String>,
    body: bytes::Bytes,
) -> Resp {
    let wsid = gate(&api, &ws, auth.as_deref()).map_err(reject)?;
    let probe: CreateProbe = if body.iter().all(u8::is_ascii_whitespace) {
        CreateProbe::default()
    } else {
        // Malformed bodies are the handler's to refuse, with its error.
        serde_json::from_slice(&body).unwrap_or_default()
    };
    if let (Some(w), Some(m)) = (&probe.webhook, api.shared.messaging.get()) {
        crate::webhook::WebhookConfig::from_request(w, m.url_policy())
            .map_err(|e| reject(ApiError::bad_request(e.code(), e.to_string())))?;
    }
    let Some(k) = idem else {
        return super::create_session(ws, api, auth, body).await;
    };
    if !validate_idempotency_key(&k) {
        return Err(reject(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )));
    }
    let (_, active) = messaging(&api).map_err(reject)?;
    let key = IdempotencyKey {
        workspace: wsid.clone(),
        request_hash: request_hash(&[
            b"POST",
            format!("/v1/workspaces/{wsid}/sessions").as_bytes(),
            &body,
        ]),
        key: k,
        expires_at: now_ms() + IDEMPOTENCY_TTL.as_millis() as u64,
    };
    match active.store.idempotency_lookup(&key, now_ms()).await {
        Ok(Some(stored)) => return Ok(stored_reply(stored, true)),
        Ok(None) => {}
        Err(e) => return Err(reject(e.to_api_error())),
    }
    let resp = super::create_session(ws, api.clone(), auth, body).await?;
    if resp.status() == StatusCode::CREATED {
        let session = probe
            .session
            .unwrap_or_else(|| crate::worker::host::DEFAULT_SESSION.to_owned());
        if let Ok(s) = SessionId::new(session)
            && let Ok(Some(info)) = api.shared.host.get_session(&wsid, &s).await
        {
            let stored = crate::store::StoredResponse {
                status: 201,
                body: serde_json::to_vec(&info).unwrap_or_default(),
            };
            if let Err(e) = active
                .store
                .idempotency_put_if_absent(&key, &stored, now_ms())
                .await
            {
                tracing::warn!(error = %e, "storing the create answer under its Idempotency-Key");
            }
        }
    }
    Ok(resp)
}
