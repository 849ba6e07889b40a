//! A session's webhook targets as the registry sees them: read from its configuration (or its
//! `session.json`, for events of a session not restored yet) and checked against the URL policy
//! as on create.

use std::path::Path;

use serde_json::{Value, json};
use tracing::warn;

use crate::ids::{SessionId, WorkspaceId};
use crate::webhook::{SessionHooks, UrlPolicy, WebhookConfig, WebhookRequest};
use crate::worker::host::SessionConfig;
use crate::worker::layout::session_file;

/// The registry's view of a session's configuration. A webhook the policy refuses is logged
/// and left out (create refuses it before it is ever written).
pub(super) fn hooks_of(
    ws: &WorkspaceId,
    config: &SessionConfig,
    policy: &UrlPolicy,
) -> SessionHooks {
    let webhooks = config
        .targets()
        .iter()
        .filter_map(|w| match validated_target(w, policy) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(workspace = %ws, session = %config.session, target = %w.id, error = %e, "session webhook refused");
                None
            }
        })
        .collect();
    let metadata = serde_json::to_value(&config.metadata).unwrap_or(Value::Null);
    let metadata = if metadata.is_object() {
        metadata
    } else {
        json!({})
    };
    SessionHooks { webhooks, metadata }
}

/// Validates one stored or requested target against the URL policy (as on create).
pub(crate) fn validated_target(
    w: &crate::worker::host::WebhookConfig,
    policy: &UrlPolicy,
) -> Result<WebhookConfig, crate::webhook::ConfigError> {
    let req = WebhookRequest {
        url: w.url.clone(),
        secret: w.secret.clone(),
        events: (!w.events.is_empty()).then(|| w.events.clone()),
        headers: (!w.headers.is_empty()).then(|| w.headers.clone()),
    };
    WebhookConfig::from_request(&req, policy).map(|c| c.with_id(w.id.clone()))
}

/// Reads a session's hooks from its `session.json`, for events whose session is not restored
/// yet (see [`crate::webhook::Registry`]). Unreadable or corrupt files count as no session.
pub(super) fn load_hooks(
    data: &Path,
    ws: &WorkspaceId,
    s: &SessionId,
    policy: &UrlPolicy,
) -> Option<SessionHooks> {
    let path = session_file(data, ws, s);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "reading a session configuration for its webhooks failed");
            return None;
        }
    };
    match serde_json::from_slice::<SessionConfig>(&bytes) {
        Ok(config) => Some(hooks_of(ws, &config, policy)),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "corrupt session configuration");
            None
        }
    }
}
