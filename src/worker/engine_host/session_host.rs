//! The worker's SessionHost contract on Chromium: what the worker's routes and ownership driver
//! call (start and stop a workspace, create, list, act on, update and delete sessions, QR and
//! pairing code), mapped onto the engine's supervisors, and the engine's errors mapped onto the
//! host's.

use super::*;

/// A STOPPED status the engine reached by itself because nobody linked within the QR time
/// limit (a stop command gives STOPPED too, but then the desired state is already stopped).
pub(super) fn stopped_by_qr_timeout(status: &crate::engine::SessionStatus) -> bool {
    status.status == Status::Stopped
        && status
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(crate::engine::QR_TIMEOUT_ERROR))
}

pub(super) fn map_status(s: Status) -> SessionStatus {
    match s {
        Status::Stopped => SessionStatus::Stopped,
        Status::Starting => SessionStatus::Starting,
        Status::ScanQrCode => SessionStatus::ScanQrCode,
        Status::Working => SessionStatus::Working,
        Status::Failed => SessionStatus::Failed,
        Status::PasskeyRequired => SessionStatus::PasskeyRequired,
    }
}

pub(super) fn command_error(e: SessionCommandError) -> HostError {
    match e {
        SessionCommandError::WrongStatus(s) => HostError::WrongStatus {
            code: if s == Status::Working {
                "wrong_status"
            } else {
                "not_ready"
            },
            message: format!("session is {}", s.as_str()),
        },
        SessionCommandError::Engine(crate::engine::EngineError::Invalid(m)) => {
            HostError::WrongStatus {
                code: "invalid",
                message: m,
            }
        }
        other => HostError::Other(other.to_string()),
    }
}

impl SessionHost for EngineHost {
    fn start_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        lease: WorkspaceLease,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        async move {
            if !lease.is_held() || lease.workspace() != ws {
                return Err(HostError::Other(format!("lock for {ws} not held")));
            }
            let dir = workspace_dir(&self.data, ws);
            let configs = read_session_configs(&dir)?;
            let stopped = CancellationToken::new();
            let generation = self.generations.fetch_add(1, Ordering::Relaxed);
            let mut sessions = BTreeMap::new();
            for config in &configs {
                // A browser left behind by a worker killed with SIGKILL (or frozen) may still run
                // on the profile; with the lock held here it must be gone before a new one
                // starts, or two browsers would share the profile.
                let profile = self.session_dir(ws, &config.session).join(PROFILE_DIR);
                if let Some(pid) = live_singleton_owner(&profile)
                    && is_foreign(pid)
                {
                    tracing::warn!(workspace = %ws, session = %config.session, pid, "killing a previous browser on the profile");
                    kill_tree(pid);
                    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                    while live_singleton_owner(&profile).is_some() {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(HostError::Other(format!(
                                "a previous browser (pid {pid}) on {ws}/{} did not exit",
                                config.session
                            )));
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
            for config in &configs {
                if !self.claim_profile(ws, &config.session, &lease).await {
                    return Err(HostError::Other(format!("lock for {ws} lost while waiting for a profile's previous owner")));
                }
            }
            for config in configs {
                let entry = self.spawn_entry(ws, &lease, config);
                sessions.insert(entry.config.session.clone(), entry);
            }
            let starts: Vec<(SessionHandle, SessionConfig)> = sessions
                .values()
                .map(|e| (e.handle.clone(), e.config.clone()))
                .collect();
            let old = self.lock().insert(
                ws.clone(),
                Running {
                    generation,
                    lease: lease.clone(),
                    stopped: stopped.clone(),
                    sessions,
                },
            );
            if let Some(old) = old {
                // A start without a stop in between should not happen; never leak browsers.
                tracing::warn!(workspace = %ws, "workspace started twice; stopping the old sessions");
                old.stopped.cancel();
                Self::shutdown_entries(old.sessions.into_values().collect(), false).await;
            }
            // Browsers that outlive the lease (fencing with a stop that came too late) are
            // killed: the lock is what makes running them safe.
            if let Some(me) = self.me.upgrade() {
                let (w, l, st) = (ws.clone(), lease.clone(), stopped.clone());
                self.tracker.spawn(async move {
                    tokio::select! {
                        _ = st.cancelled() => {}
                        _ = l.lost() => {
                            let entries = {
                                let mut map = me.lock();
                                match map.get(&w) {
                                    Some(r) if r.generation == generation => map
                                        .remove(&w)
                                        .map(|r| r.sessions.into_values().collect())
                                        .unwrap_or_default(),
                                    _ => Vec::new(),
                                }
                            };
                            if !entries.is_empty() {
                                tracing::warn!(workspace = %w, "lease lost with browsers running; killing them");
                                let ids: Vec<SessionId> = entries.iter().map(|e| e.config.session.clone()).collect();
                                EngineHost::shutdown_entries(entries, true).await;
                                me.release_profiles(&w, ids).await;
                            }
                        }
                    }
                });
            }
            for (handle, config) in starts {
                self.emit(HostEvent::Created {
                    workspace: ws.clone(),
                    session: config.session.clone(),
                    config: config.clone(),
                });
                if config.desired == DesiredState::Running {
                    // Not awaited: a start returns once the browser has launched, and the
                    // launches are bounded by the engine's launch limiter already. Awaiting
                    // here would hold the driver's restore slot for every launch, so after a
                    // restart the workspaces without a browser (or whose sessions are
                    // stopped) would queue behind every Chromium launch before answering.
                    let ws = ws.clone();
                    self.tracker.spawn(async move {
                        if let Err(e) = handle.start().await {
                            tracing::warn!(workspace = %ws, session = %config.session, error = %e, "session start");
                        }
                    });
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn stop_workspace<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        mode: StopMode,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        async move {
            let removed = self.lock().remove(ws);
            if let Some(r) = removed {
                r.stopped.cancel();
                let n = r.sessions.len();
                let ids: Vec<SessionId> = r.sessions.keys().cloned().collect();
                Self::shutdown_entries(
                    r.sessions.into_values().collect(),
                    mode == StopMode::Immediate,
                )
                .await;
                self.release_profiles(ws, ids).await;
                tracing::debug!(workspace = %ws, ?mode, sessions = n, "workspace stopped");
            }
            Ok(())
        }
        .boxed()
    }

    fn create_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        config: SessionConfig,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        async move {
            let lease = self.lease_for_new(ws, &config.session)?;
            let path = self.session_dir(ws, &config.session).join(SESSION_FILE);
            if path.exists() {
                return Err(HostError::Exists(config.session.clone()));
            }
            self.persist(ws, &config)?;
            self.register(ws, &lease, config).await
        }
        .boxed()
    }

    fn list_sessions<'a>(
        &'a self,
        ws: &'a WorkspaceId,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, HostError>> {
        async move {
            let map = self.lock();
            let r = map
                .get(ws)
                .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
            Ok(r.sessions.values().map(|e| self.info(ws, e)).collect())
        }
        .boxed()
    }

    fn get_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<Option<SessionInfo>, HostError>> {
        async move {
            let map = self.lock();
            let r = map
                .get(ws)
                .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
            Ok(r.sessions.get(session).map(|e| self.info(ws, e)))
        }
        .boxed()
    }

    fn session_action<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
        action: SessionAction,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        async move {
            let (handle, config) = self.entry_handle(ws, session)?;
            match action {
                SessionAction::Start => {
                    self.set_desired(ws, session, DesiredState::Running)?;
                    if config.desired == DesiredState::Stopped {
                        // After a logout the messaging side forgot it; tell it again.
                        let mut config = config.clone();
                        config.desired = DesiredState::Running;
                        self.emit(HostEvent::Created {
                            workspace: ws.clone(),
                            session: session.clone(),
                            config,
                        });
                    }
                    handle.start().await.map_err(command_error)?;
                }
                SessionAction::Stop => {
                    self.set_desired(ws, session, DesiredState::Stopped)?;
                    handle.stop().await.map_err(command_error)?;
                }
                SessionAction::Restart => {
                    self.set_desired(ws, session, DesiredState::Running)?;
                    handle.restart().await.map_err(command_error)?;
                }
                SessionAction::Logout => {
                    self.set_desired(ws, session, DesiredState::Stopped)?;
                    handle.logout().await.map_err(command_error)?;
                    self.emit(HostEvent::Deleted {
                        workspace: ws.clone(),
                        session: session.clone(),
                    });
                }
            }
            self.current_info(ws, session)
        }
        .boxed()
    }

    fn update_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
        update: super::super::host::ConfigUpdate<'a>,
    ) -> BoxFuture<'a, Result<SessionInfo, HostError>> {
        self.update_settings(ws, session, update).boxed()
    }

    fn delete_session<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<(), HostError>> {
        async move {
            // Not while a settings update of the session is being written.
            let settings = self.settings_lock(ws, session);
            let _turn = settings.lock().await;
            let (entry, lease) = {
                let mut map = self.lock();
                let r = map
                    .get_mut(ws)
                    .ok_or_else(|| HostError::NotRunning(ws.clone()))?;
                let e = r
                    .sessions
                    .remove(session)
                    .ok_or_else(|| HostError::NotFound(session.clone()))?;
                (e, r.lease.clone())
            };
            Self::shutdown_entries(vec![entry], false).await;
            if !lease.is_held() {
                return Err(HostError::NotRunning(ws.clone()));
            }
            let dir = self.session_dir(ws, session);
            match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(HostError::Other(e.to_string())),
            }
            self.emit(HostEvent::Deleted {
                workspace: ws.clone(),
                session: session.clone(),
            });
            self.forget_settings_lock(ws, session);
            Ok(())
        }
        .boxed()
    }

    fn qr<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
    ) -> BoxFuture<'a, Result<SessionQr, HostError>> {
        async move {
            let (handle, _) = self.entry_handle(ws, session)?;
            let st = handle.status();
            match (st.status, st.qr) {
                (Status::ScanQrCode, Some(qr)) => Ok(SessionQr {
                    value: qr.value,
                    expires_at: qr.expires_unix_ms,
                }),
                (s, _) => Err(HostError::WrongStatus {
                    code: "not_scanning",
                    message: format!("session is {}, no QR to show", s.as_str()),
                }),
            }
        }
        .boxed()
    }

    fn pairing_code<'a>(
        &'a self,
        ws: &'a WorkspaceId,
        session: &'a SessionId,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<String, HostError>> {
        async move {
            let (handle, _) = self.entry_handle(ws, session)?;
            let code = handle
                .request_pairing_code(phone)
                .await
                .map_err(|e| match e {
                    SessionCommandError::WrongStatus(s) => HostError::WrongStatus {
                        code: "not_scanning",
                        message: format!("session is {}, not waiting for a link", s.as_str()),
                    },
                    other => command_error(other),
                })?;
            Ok(format_pairing_code(&code))
        }
        .boxed()
    }

    fn engine_host(&self) -> Option<Arc<EngineHost>> {
        self.me.upgrade()
    }

    fn overlaps(&self) -> u64 {
        self.overlaps.load(Ordering::Relaxed)
    }
}
