//! The machine's transitions: how each engine event and each tick moves a session between states,
//! and the launch, close and failure steps they share (with the deadlines they set).

use super::*;

impl Machine {
    pub(super) fn on_event(&mut self, event: EngineEvent, now: Now, actions: &mut Vec<Action>) {
        match event {
            EngineEvent::State { state } => {
                if state == "CONNECTED" {
                    self.disconnected_since = None;
                } else if self.status == Status::Working
                    && matches!(
                        state.as_str(),
                        "TIMEOUT" | "OPENING" | "PAIRING" | "UNLAUNCHED"
                    )
                {
                    self.disconnected_since.get_or_insert(now.mono);
                }
                if matches!(self.status, Status::ScanQrCode | Status::PasskeyRequired)
                    && matches!(state.as_str(), "CONNECTED" | "PAIRING")
                {
                    // The phone linked: history sync runs until `ready`. Not bounded by the
                    // QR window any more, by `start_timeout` from now instead.
                    self.syncing_since = Some(now.mono);
                    self.clear_pairing();
                    self.set_status(Status::Starting, now);
                }
                self.wa_state = Some(state);
            }
            EngineEvent::Version { version } => self.wa_version = Some(version),
            EngineEvent::Loading { percent } => {
                if self.status != Status::Working {
                    self.sync_percent = Some(percent);
                }
            }
            EngineEvent::Passkey { state } => {
                if matches!(
                    self.status,
                    Status::Starting | Status::ScanQrCode | Status::PasskeyRequired
                ) {
                    self.qr = None;
                    self.pairing_code = None;
                    self.syncing_since = None;
                    self.passkey = Some(state);
                    self.passkey_since.get_or_insert(now.mono);
                    self.consecutive_failures = 0;
                    // The QR window covers the passkey step too (an abandoned one must end).
                    self.qr_since.get_or_insert(now.mono);
                    self.set_status(Status::PasskeyRequired, now);
                }
            }
            EngineEvent::Unsupported { missing, version } => {
                if version.is_some() {
                    self.wa_version = version;
                }
                let names = if missing.is_empty() {
                    "unknown modules".to_string()
                } else {
                    missing.join(", ")
                };
                let v = self.wa_version.as_deref().unwrap_or("of unknown version");
                let reason = format!("{UNSUPPORTED_ERROR}: missing {names} (WhatsApp Web {v})");
                self.fail_now(reason, now, actions);
            }
            EngineEvent::DeprecatedVersion => {
                let v = self.wa_version.as_deref().unwrap_or("(unknown version)");
                let reason = format!(
                    "{DEPRECATED_ERROR}: WhatsApp Web {v} is no longer accepted; pin a newer version or use latest"
                );
                self.fail_now(reason, now, actions);
            }
            EngineEvent::Qr { value } => {
                let lifetime = if self.qrs_this_launch == 0 {
                    self.timing.qr_first_lifetime
                } else {
                    self.timing.qr_next_lifetime
                };
                self.qrs_this_launch += 1;
                // A new QR: the link (or the passkey step) did not complete.
                self.syncing_since = None;
                self.passkey = None;
                self.passkey_since = None;
                self.qr = Some(QrInfo {
                    value,
                    received_unix_ms: now.unix_ms,
                    expires_unix_ms: now.unix_ms + lifetime.as_millis() as u64,
                });
                // A QR proves the browser and the page work.
                self.consecutive_failures = 0;
                self.set_status(Status::ScanQrCode, now);
            }
            EngineEvent::PairingCode { code } => {
                self.pairing_code = Some(code);
                self.consecutive_failures = 0;
                if self.status == Status::Starting && self.syncing_since.is_none() {
                    self.set_status(Status::ScanQrCode, now);
                }
            }
            EngineEvent::Ready { me, wa_version } => {
                if me.is_some() {
                    self.me = me;
                }
                if wa_version.is_some() {
                    self.wa_version = wa_version;
                }
                self.consecutive_failures = 0;
                self.disconnected_since = None;
                self.syncing_since = None;
                self.sync_percent = None;
                self.clear_pairing();
                self.set_status(Status::Working, now);
            }
            EngineEvent::LoggedOut { reason } => {
                // LocalAuth: a logged-out profile is worthless; start over with a fresh one.
                self.me = None;
                self.last_error = Some(format!("logged out: {reason}"));
                self.clear_pairing();
                self.close(actions);
                actions.push(Action::DeleteProfile);
                if self.desired_running {
                    self.launch(now, actions);
                } else {
                    self.set_status(Status::Stopped, now);
                }
            }
            EngineEvent::Crashed { reason } => {
                self.fail(format!("crashed: {reason}"), now, actions)
            }
            EngineEvent::Disconnected { reason } => {
                self.fail(format!("disconnected: {reason}"), now, actions)
            }
            EngineEvent::AdapterError { place, message } => {
                if place == "modules" {
                    self.fail(format!("page did not load: {message}"), now, actions);
                } else {
                    self.last_error = Some(format!("adapter {place}: {message}"));
                }
            }
            EngineEvent::Message(_)
            | EngineEvent::Ack { .. }
            | EngineEvent::Reaction(_)
            | EngineEvent::Edited(_)
            | EngineEvent::Revoked(_)
            | EngineEvent::Call(_)
            | EngineEvent::Presence(_) => {}
            EngineEvent::GroupParticipants(_) => {}
        }
    }

    /// When the QR time limit runs out, while in SCAN_QR_CODE or PASSKEY_REQUIRED (a passkey
    /// step gets at least [`PASSKEY_GRACE`]).
    pub(super) fn qr_deadline(&self) -> Option<Instant> {
        let (Some(since), Some(limit)) = (self.qr_since, self.timing.qr_timeout) else {
            return None;
        };
        match self.status {
            Status::ScanQrCode => Some(since + limit),
            Status::PasskeyRequired => {
                let grace = self.passkey_since.map(|p| p + PASSKEY_GRACE);
                Some((since + limit).max(grace.unwrap_or(since)))
            }
            _ => None,
        }
    }

    /// When STARTING runs out: `start_timeout` after the launch, or after the link while
    /// history sync runs.
    pub(super) fn start_deadline(&self) -> Option<Instant> {
        if self.status != Status::Starting || !self.browser_up {
            return None;
        }
        let from = self.syncing_since.or(self.launched.map(|l| l.mono))?;
        Some(from + self.timing.start_timeout)
    }

    pub(super) fn on_tick(&mut self, now: Now, actions: &mut Vec<Action>) {
        if let Some(at) = self.relaunch_at
            && now.mono >= at.mono
        {
            self.relaunch_at = None;
            if self.desired_running && !self.browser_up {
                self.restarts += 1;
                self.launch(now, actions);
            }
            return;
        }
        if self.start_deadline().is_some_and(|at| now.mono >= at) {
            let secs = self.timing.start_timeout.as_secs();
            let reason = if self.syncing_since.is_some() {
                format!("history sync did not finish within {secs} s of the link")
            } else {
                format!("stuck in STARTING for {secs} s")
            };
            self.fail(reason, now, actions);
            return;
        }
        if self.status == Status::Working
            && let Some(since) = self.disconnected_since
            && now.mono >= since + self.timing.disconnect_timeout
        {
            let state = self.wa_state.clone().unwrap_or_default();
            let secs = self.timing.disconnect_timeout.as_secs();
            self.fail(format!("disconnected ({state}) for {secs} s"), now, actions);
            return;
        }
        if self.qr_deadline().is_some_and(|at| now.mono >= at) {
            // Not a failure (nothing is broken): nobody linked. Stop for good, as a stop
            // command would; the browser and its memory go back to the worker.
            let secs = self.timing.qr_timeout.unwrap_or_default().as_secs();
            self.desired_running = false;
            self.relaunch_at = None;
            self.close(actions);
            self.clear_pairing();
            self.last_error = Some(format!(
                "{QR_TIMEOUT_ERROR}: not linked within {secs} s; start the session again for a new QR"
            ));
            self.set_status(Status::Stopped, now);
        }
    }

    pub(super) fn launch(&mut self, now: Now, actions: &mut Vec<Action>) {
        if self.browser_up {
            self.close(actions);
        }
        self.generation += 1;
        self.browser_up = true;
        self.launched = Some(now);
        self.qrs_this_launch = 0;
        self.qr_since = None;
        self.syncing_since = None;
        self.passkey_since = None;
        self.sync_percent = None;
        self.wa_pinned = None;
        self.wa_note = None;
        self.disconnected_since = None;
        self.wa_state = None;
        self.clear_pairing();
        self.set_status(Status::Starting, now);
        actions.push(Action::Launch {
            generation: self.generation,
        });
    }

    pub(super) fn close(&mut self, actions: &mut Vec<Action>) {
        if self.browser_up {
            actions.push(Action::Close);
            self.browser_up = false;
        }
        self.disconnected_since = None;
    }

    pub(super) fn fail(&mut self, reason: String, now: Now, actions: &mut Vec<Action>) {
        self.consecutive_failures += 1;
        self.last_error = Some(reason);
        self.syncing_since = None;
        self.close(actions);
        self.clear_pairing();
        if self.consecutive_failures >= self.timing.max_failures {
            self.relaunch_at = None;
            self.set_status(Status::Failed, now);
        } else {
            let delay = backoff(
                self.timing.backoff_base,
                self.timing.backoff_max,
                self.consecutive_failures,
            );
            self.relaunch_at = Some(now.plus(delay));
            self.set_status(Status::Starting, now);
        }
    }

    /// FAILED at once, without relaunches: WhatsApp Web itself is incompatible, so a relaunch
    /// of the same version cannot help. The desired state stays running; a start or restart
    /// tries again (after a version change, say).
    pub(super) fn fail_now(&mut self, reason: String, now: Now, actions: &mut Vec<Action>) {
        self.consecutive_failures += 1;
        self.last_error = Some(reason);
        self.relaunch_at = None;
        self.syncing_since = None;
        self.close(actions);
        self.clear_pairing();
        self.set_status(Status::Failed, now);
    }

    pub(super) fn clear_pairing(&mut self) {
        self.qr = None;
        self.pairing_code = None;
        self.passkey = None;
        self.passkey_since = None;
    }

    pub(super) fn set_status(&mut self, status: Status, now: Now) {
        if self.status != status {
            self.status = status;
            self.status_since_unix_ms = now.unix_ms;
            // The QR window opens once per launch: QR rotations do not extend it.
            if status == Status::ScanQrCode {
                self.qr_since.get_or_insert(now.mono);
            }
        }
    }
}
