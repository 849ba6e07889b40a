//! Settings updates of running sessions (`PATCH …/sessions/{s}`, [`SessionHost::update_session`]):
//! the new configuration replaces the old one in memory and in `session.json` while the
//! session's browser keeps running — no relaunch, no new QR, the profile untouched.
//!
//! Ordering: one update or delete of a session at a time (an async lock per session, held
//! across the durable write), and every `session.json` write re-reads the in-memory config
//! under one write lock, so whatever order a PATCH and a lifecycle change (start/stop, which
//! persist the desired state) run in, the file ends with both.
//!
//! [`SessionHost::update_session`]: crate::worker::host::SessionHost::update_session

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::EngineHost;
use crate::ids::{SessionId, WorkspaceId};
use crate::worker::host::{ConfigUpdate, HostError, SessionConfig, SessionInfo};
use crate::worker::layout::write_session_config;

/// The per-session update locks.
pub(super) type SettingsLocks =
    Mutex<HashMap<(WorkspaceId, SessionId), Arc<tokio::sync::Mutex<()>>>>;

impl EngineHost {
    /// The update lock of one session (created on first use).
    pub(super) fn settings_lock(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
    ) -> Arc<tokio::sync::Mutex<()>> {
        self.settings_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((ws.clone(), s.clone()))
            .or_default()
            .clone()
    }

    /// Drops a deleted session's lock (a waiter still holds its own reference).
    pub(super) fn forget_settings_lock(&self, ws: &WorkspaceId, s: &SessionId) {
        self.settings_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ws.clone(), s.clone()));
    }

    /// Writes the session's current in-memory config to `session.json` durably (see the
    /// module doc for why it re-reads it under the write lock).
    pub(super) fn persist_latest(&self, ws: &WorkspaceId, s: &SessionId) -> Result<(), HostError> {
        let _turn = self.config_writes.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.entry_handle(ws, s)?.1;
        write_session_config(&self.session_dir(ws, s), &config)
    }

    /// Replaces a session's settings (everything but its desired state) in memory.
    fn set_settings(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        config: &SessionConfig,
    ) -> Result<(), HostError> {
        let mut map = self.lock();
        let e = map
            .get_mut(ws)
            .ok_or_else(|| HostError::NotRunning(ws.clone()))?
            .sessions
            .get_mut(s)
            .ok_or_else(|| HostError::NotFound(s.clone()))?;
        let desired = e.config.desired;
        e.config = config.clone();
        e.config.desired = desired;
        Ok(())
    }

    /// [`crate::worker::host::SessionHost::update_session`] for the engine host.
    pub(super) async fn update_settings(
        &self,
        ws: &WorkspaceId,
        s: &SessionId,
        update: ConfigUpdate<'_>,
    ) -> Result<SessionInfo, HostError> {
        let lock = self.settings_lock(ws, s);
        let _turn = lock.lock().await;
        let before = self.entry_handle(ws, s)?.1;
        let mut next = (update.apply)(&before)?;
        next.session = before.session.clone();
        next.created_at_ms = before.created_at_ms;
        next.normalize();
        self.set_settings(ws, s, &next)?;
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| HostError::Other("host dropped".into()))?;
        let (w, id) = (ws.clone(), s.clone());
        let written = tokio::task::spawn_blocking(move || me.persist_latest(&w, &id))
            .await
            .unwrap_or_else(|e| Err(HostError::Other(e.to_string())));
        if let Err(e) = written {
            // Not durable: the old settings stay, in memory too.
            if let Err(undo) = self.set_settings(ws, s, &before) {
                tracing::warn!(workspace = %ws, session = %s, error = %undo, "restoring the settings after a failed write");
            }
            return Err(e);
        }
        (update.applied)(&next);
        self.current_info(ws, s)
    }
}
