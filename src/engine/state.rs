//! PURE: the session state machine, its watchdog and backoff. No I/O; time is passed in.
//!
//! Statuses are WAHA's: `STOPPED → STARTING → SCAN_QR_CODE → WORKING`, and `FAILED`. The machine
//! takes [`Input`]s (commands, launch results, engine events tagged with the launch generation,
//! ticks) and answers with [`Action`]s for the supervisor to carry out, in order. Events from an
//! older browser (a stale generation) are ignored, so a late report from a browser being closed
//! can never move the current one.
//!
//! Watchdog: a launch that has shown neither a QR nor a login within `start_timeout` is a
//! failure ("stuck in STARTING"), and so is a WORKING session whose WhatsApp socket has been away
//! from `CONNECTED` for `disconnect_timeout`; crashes and launch errors are failures too. A
//! failure closes the browser and relaunches it after an exponential backoff; after
//! `max_failures` consecutive failures the session is FAILED with the reason and stays so until
//! a start or restart command. A QR or a login resets the count.
//!
//! QR time limit: a session left in SCAN_QR_CODE for `qr_timeout` (nobody scanned the QR or
//! entered the pairing code) is closed and STOPPED with a `qr_timeout:` error, so an abandoned
//! link attempt does not keep a browser forever — and after WhatsApp's own list of QR refs
//! runs out, the page would only show an expired code anyway. A start command opens a new window.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::events::EngineEvent;

/// A session's status (WAHA's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Not running, by request.
    Stopped,
    /// A browser is being launched (or relaunched after a failure).
    Starting,
    /// Waiting for the phone: a QR or pairing code is shown.
    ScanQrCode,
    /// Logged in: can send and receive.
    Working,
    /// Gave up after repeated failures; see `last_error`.
    Failed,
}

impl Status {
    /// Every status, for gauges.
    pub const ALL: [Status; 5] = [
        Status::Stopped,
        Status::Starting,
        Status::ScanQrCode,
        Status::Working,
        Status::Failed,
    ];

    /// The wire name (`SCAN_QR_CODE`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Stopped => "STOPPED",
            Status::Starting => "STARTING",
            Status::ScanQrCode => "SCAN_QR_CODE",
            Status::Working => "WORKING",
            Status::Failed => "FAILED",
        }
    }
}

/// The present moment, monotonic (for deadlines) and wall-clock (for status timestamps).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// The real present moment.
    pub fn system() -> Now {
        Now {
            mono: Instant::now(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// This moment plus `d` (for tests and schedules).
    pub fn plus(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            unix_ms: self.unix_ms + d.as_millis() as u64,
        }
    }
}

/// Watchdog and backoff settings.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long a launch may take to show a QR or log in.
    pub start_timeout: Duration,
    /// How long a WORKING session may stay away from `CONNECTED`.
    pub disconnect_timeout: Duration,
    /// First relaunch delay; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// Largest relaunch delay.
    pub backoff_max: Duration,
    /// Consecutive failures that end in FAILED.
    pub max_failures: u32,
    /// Validity of the first QR of a launch (WhatsApp: 60 s).
    pub qr_first_lifetime: Duration,
    /// Validity of each later QR (WhatsApp: 20 s).
    pub qr_next_lifetime: Duration,
    /// How long a session may wait in SCAN_QR_CODE before it is stopped (`None`: forever).
    pub qr_timeout: Option<Duration>,
}

/// `last_error` of a session stopped by the QR time limit starts with this.
pub const QR_TIMEOUT_ERROR: &str = "qr_timeout";

/// The default QR time limit: the first QR's 60 s plus a dozen rotations, room for a person
/// who has to find their phone, not for a tab left open overnight.
pub const DEFAULT_QR_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for Timing {
    fn default() -> Self {
        Timing {
            start_timeout: Duration::from_secs(90),
            disconnect_timeout: Duration::from_secs(120),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            max_failures: 5,
            qr_first_lifetime: Duration::from_secs(60),
            qr_next_lifetime: Duration::from_secs(20),
            qr_timeout: Some(DEFAULT_QR_TIMEOUT),
        }
    }
}

/// What happens to the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Command: run the session.
    Start,
    /// Command: stop it (the profile stays).
    Stop,
    /// Command: close and relaunch now.
    Restart,
    /// Command: unlink the device and delete the profile.
    Logout,
    /// The browser of `generation` could not be launched.
    LaunchFailed {
        /// The launch generation.
        generation: u64,
        /// Why.
        error: String,
    },
    /// An event of the browser of `generation`.
    Event {
        /// The launch generation.
        generation: u64,
        /// The event.
        event: EngineEvent,
    },
    /// Time passed (a deadline may be due).
    Tick,
}

/// What the supervisor must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Launch a browser for this generation (closing any previous one first).
    Launch {
        /// The generation its events must carry.
        generation: u64,
    },
    /// Ask WhatsApp Web to unlink this device (best effort, before closing).
    LogoutBrowser,
    /// Close the current browser cleanly (if any).
    Close,
    /// Delete the profile directory (the session's credentials).
    DeleteProfile,
}

/// The current QR and its validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QrInfo {
    /// The raw QR string.
    pub value: String,
    /// When it was shown (Unix ms).
    pub received_unix_ms: u64,
    /// When WhatsApp will rotate it away (Unix ms, estimated from WhatsApp's 60 s / 20 s).
    pub expires_unix_ms: u64,
}

/// A snapshot of a session for the API and webhooks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionStatus {
    /// The status.
    pub status: Status,
    /// The linked account's Wid once logged in.
    pub me: Option<String>,
    /// WhatsApp Web's `Debug.VERSION`.
    pub wa_version: Option<String>,
    /// WhatsApp Web's last socket state (`CONNECTED`, `TIMEOUT`, …).
    pub wa_state: Option<String>,
    /// The QR to show while in SCAN_QR_CODE.
    pub qr: Option<QrInfo>,
    /// The last pairing code, while pairing.
    pub pairing_code: Option<String>,
    /// The last error (kept after recovery, for operators).
    pub last_error: Option<String>,
    /// When the status last changed (Unix ms).
    pub status_since_unix_ms: u64,
    /// When the current browser was launched (Unix ms).
    pub launched_unix_ms: Option<u64>,
    /// When the next relaunch is due, while backing off (Unix ms).
    pub next_attempt_unix_ms: Option<u64>,
    /// Failures since the last QR or login.
    pub consecutive_failures: u32,
    /// Relaunches so far (watchdog, crash, restart command).
    pub restarts: u64,
    /// The browser's pid while one runs (set by the supervisor).
    pub pid: Option<u32>,
    /// The last PSS sample of the browser's process tree in bytes (set by the supervisor).
    pub memory_bytes: Option<u64>,
}

/// The per-session state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    timing: Timing,
    status: Status,
    status_since_unix_ms: u64,
    desired_running: bool,
    generation: u64,
    browser_up: bool,
    launched: Option<Now>,
    qrs_this_launch: u32,
    /// When the current launch entered SCAN_QR_CODE (for the QR time limit).
    qr_since: Option<Instant>,
    relaunch_at: Option<Now>,
    disconnected_since: Option<Instant>,
    consecutive_failures: u32,
    restarts: u64,
    last_error: Option<String>,
    me: Option<String>,
    wa_version: Option<String>,
    wa_state: Option<String>,
    qr: Option<QrInfo>,
    pairing_code: Option<String>,
}

// === impl Machine ===

impl Machine {
    /// A stopped session.
    pub fn new(timing: Timing, now: Now) -> Machine {
        Machine {
            timing,
            status: Status::Stopped,
            status_since_unix_ms: now.unix_ms,
            desired_running: false,
            generation: 0,
            browser_up: false,
            launched: None,
            qrs_this_launch: 0,
            qr_since: None,
            relaunch_at: None,
            disconnected_since: None,
            consecutive_failures: 0,
            restarts: 0,
            last_error: None,
            me: None,
            wa_version: None,
            wa_state: None,
            qr: None,
            pairing_code: None,
        }
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The generation of the current (or last) launch.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the current browser was launched.
    pub fn launched_at(&self) -> Option<Instant> {
        self.launched.map(|n| n.mono)
    }

    /// QRs shown since the current launch (1 right after the first).
    pub fn qrs_this_launch(&self) -> u32 {
        self.qrs_this_launch
    }

    /// Relaunches so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Whether a browser is (supposed to be) running.
    pub fn browser_up(&self) -> bool {
        self.browser_up
    }

    /// The snapshot for the API.
    pub fn snapshot(&self) -> SessionStatus {
        SessionStatus {
            status: self.status,
            me: self.me.clone(),
            wa_version: self.wa_version.clone(),
            wa_state: self.wa_state.clone(),
            qr: self.qr.clone(),
            pairing_code: self.pairing_code.clone(),
            last_error: self.last_error.clone(),
            status_since_unix_ms: self.status_since_unix_ms,
            launched_unix_ms: self.launched.map(|n| n.unix_ms),
            next_attempt_unix_ms: self.relaunch_at.map(|n| n.unix_ms),
            consecutive_failures: self.consecutive_failures,
            restarts: self.restarts,
            pid: None,
            memory_bytes: None,
        }
    }

    /// The next moment a [`Input::Tick`] may change something.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines = Vec::new();
        if let Some(at) = self.relaunch_at {
            deadlines.push(at.mono);
        }
        if self.status == Status::Starting
            && self.browser_up
            && let Some(l) = self.launched
        {
            deadlines.push(l.mono + self.timing.start_timeout);
        }
        if self.status == Status::Working
            && let Some(since) = self.disconnected_since
        {
            deadlines.push(since + self.timing.disconnect_timeout);
        }
        if let Some(at) = self.qr_deadline() {
            deadlines.push(at);
        }
        deadlines.into_iter().min()
    }

    /// Feeds one input; returns what to do.
    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Start => {
                self.desired_running = true;
                if matches!(self.status, Status::Stopped | Status::Failed) {
                    self.consecutive_failures = 0;
                    self.relaunch_at = None;
                    self.launch(now, &mut actions);
                }
            }
            Input::Stop => {
                self.desired_running = false;
                self.relaunch_at = None;
                self.close(&mut actions);
                self.clear_pairing();
                self.set_status(Status::Stopped, now);
            }
            Input::Restart => {
                self.desired_running = true;
                self.consecutive_failures = 0;
                self.relaunch_at = None;
                self.restarts += 1;
                self.close(&mut actions);
                self.launch(now, &mut actions);
            }
            Input::Logout => {
                self.desired_running = false;
                self.relaunch_at = None;
                if self.browser_up && self.status == Status::Working {
                    actions.push(Action::LogoutBrowser);
                }
                self.close(&mut actions);
                actions.push(Action::DeleteProfile);
                self.me = None;
                self.clear_pairing();
                self.set_status(Status::Stopped, now);
            }
            Input::LaunchFailed { generation, error } => {
                if generation == self.generation && self.browser_up {
                    // The driver cleaned up after itself; nothing to close.
                    self.browser_up = false;
                    self.fail(format!("launch failed: {error}"), now, &mut actions);
                }
            }
            Input::Event { generation, event } => {
                if generation == self.generation && self.browser_up {
                    self.on_event(event, now, &mut actions);
                }
            }
            Input::Tick => self.on_tick(now, &mut actions),
        }
        actions
    }

    fn on_event(&mut self, event: EngineEvent, now: Now, actions: &mut Vec<Action>) {
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
                self.wa_state = Some(state);
            }
            EngineEvent::Qr { value } => {
                let lifetime = if self.qrs_this_launch == 0 {
                    self.timing.qr_first_lifetime
                } else {
                    self.timing.qr_next_lifetime
                };
                self.qrs_this_launch += 1;
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
                if self.status == Status::Starting {
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
            EngineEvent::Message(_) | EngineEvent::Ack { .. } => {}
        }
    }

    /// When the QR time limit runs out, while in SCAN_QR_CODE.
    fn qr_deadline(&self) -> Option<Instant> {
        match (self.status, self.qr_since, self.timing.qr_timeout) {
            (Status::ScanQrCode, Some(since), Some(limit)) => Some(since + limit),
            _ => None,
        }
    }

    fn on_tick(&mut self, now: Now, actions: &mut Vec<Action>) {
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
        if self.status == Status::Starting
            && self.browser_up
            && let Some(l) = self.launched
            && now.mono >= l.mono + self.timing.start_timeout
        {
            let secs = self.timing.start_timeout.as_secs();
            self.fail(format!("stuck in STARTING for {secs} s"), now, actions);
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

    fn launch(&mut self, now: Now, actions: &mut Vec<Action>) {
        if self.browser_up {
            self.close(actions);
        }
        self.generation += 1;
        self.browser_up = true;
        self.launched = Some(now);
        self.qrs_this_launch = 0;
        self.qr_since = None;
        self.disconnected_since = None;
        self.wa_state = None;
        self.clear_pairing();
        self.set_status(Status::Starting, now);
        actions.push(Action::Launch {
            generation: self.generation,
        });
    }

    fn close(&mut self, actions: &mut Vec<Action>) {
        if self.browser_up {
            actions.push(Action::Close);
            self.browser_up = false;
        }
        self.disconnected_since = None;
    }

    fn fail(&mut self, reason: String, now: Now, actions: &mut Vec<Action>) {
        self.consecutive_failures += 1;
        self.last_error = Some(reason);
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

    fn clear_pairing(&mut self) {
        self.qr = None;
        self.pairing_code = None;
    }

    fn set_status(&mut self, status: Status, now: Now) {
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

/// The delay before relaunch number `failures` (1-based): `base · 2^(failures-1)`, capped.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Now {
        Now {
            mono: Instant::now(),
            unix_ms: 1_700_000_000_000,
        }
    }

    fn timing() -> Timing {
        Timing {
            start_timeout: Duration::from_secs(30),
            disconnect_timeout: Duration::from_secs(20),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            max_failures: 3,
            ..Timing::default()
        }
    }

    fn ev(m: &Machine, event: EngineEvent) -> Input {
        Input::Event {
            generation: m.generation(),
            event,
        }
    }

    fn qr(m: &Machine, value: &str) -> Input {
        ev(
            m,
            EngineEvent::Qr {
                value: value.into(),
            },
        )
    }

    fn with_qr_limit(limit: Duration, now: Now) -> Machine {
        Machine::new(
            Timing {
                qr_timeout: Some(limit),
                ..timing()
            },
            now,
        )
    }

    #[test]
    fn an_unscanned_qr_stops_the_session_after_the_time_limit() {
        let (now, limit) = (t0(), Duration::from_secs(100));
        let mut m = with_qr_limit(limit, now);
        m.handle(Input::Start, now);
        let shown = now.plus(Duration::from_secs(5));
        m.handle(qr(&m, "2@a"), shown);
        assert_eq!(m.next_deadline(), Some(shown.mono + limit));
        // Rotations do not extend the window.
        m.handle(qr(&m, "2@b"), shown.plus(Duration::from_secs(60)));
        assert_eq!(m.next_deadline(), Some(shown.mono + limit));
        assert!(
            m.handle(Input::Tick, shown.plus(limit - Duration::from_millis(1)))
                .is_empty()
        );
        assert_eq!(m.status(), Status::ScanQrCode);
        assert_eq!(
            m.handle(Input::Tick, shown.plus(limit)),
            vec![Action::Close]
        );
        let snap = m.snapshot();
        assert_eq!(snap.status, Status::Stopped);
        assert!(snap.qr.is_none());
        assert!(
            snap.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with(QR_TIMEOUT_ERROR)),
            "{snap:?}"
        );
        assert!(!m.browser_up());
        // Stopped for good: no relaunch is scheduled, nothing is due.
        assert_eq!(m.next_deadline(), None);
        assert!(m.handle(Input::Tick, shown.plus(limit * 10)).is_empty());
        // A start opens a new window.
        let again = shown.plus(limit * 10);
        assert_eq!(
            m.handle(Input::Start, again),
            vec![Action::Launch { generation: 2 }]
        );
        m.handle(qr(&m, "2@c"), again);
        assert_eq!(m.next_deadline(), Some(again.mono + limit));
    }

    #[test]
    fn linking_in_time_or_no_limit_keeps_the_session() {
        let (now, limit) = (t0(), Duration::from_secs(100));
        let mut m = with_qr_limit(limit, now);
        m.handle(Input::Start, now);
        m.handle(qr(&m, "2@a"), now);
        m.handle(
            ev(
                &m,
                EngineEvent::Ready {
                    me: Some("4915550001@c.us".into()),
                    wa_version: None,
                },
            ),
            now.plus(Duration::from_secs(99)),
        );
        assert!(m.handle(Input::Tick, now.plus(limit * 2)).is_empty());
        assert_eq!(m.status(), Status::Working);

        let mut forever = Machine::new(
            Timing {
                qr_timeout: None,
                ..timing()
            },
            now,
        );
        forever.handle(Input::Start, now);
        forever.handle(qr(&forever, "2@a"), now);
        assert_eq!(forever.next_deadline(), None);
        assert!(
            forever
                .handle(Input::Tick, now.plus(Duration::from_secs(86_400)))
                .is_empty()
        );
        assert_eq!(forever.status(), Status::ScanQrCode);
    }

    #[test]
    fn start_qr_ready_stop() {
        let now = t0();
        let mut m = Machine::new(timing(), now);
        assert_eq!(m.status(), Status::Stopped);
        assert_eq!(
            m.handle(Input::Start, now),
            vec![Action::Launch { generation: 1 }]
        );
        assert_eq!(m.status(), Status::Starting);
        // Start again is idempotent.
        assert!(m.handle(Input::Start, now).is_empty());

        let qr = "2@r,a,b,c,WEB".to_string();
        let at = now.plus(Duration::from_secs(3));
        m.handle(ev(&m, EngineEvent::Qr { value: qr.clone() }), at);
        assert_eq!(m.status(), Status::ScanQrCode);
        let snap = m.snapshot();
        let info = snap.qr.unwrap();
        assert_eq!(info.value, qr);
        assert_eq!(info.expires_unix_ms, at.unix_ms + 60_000);
        // Later QRs live 20 s.
        m.handle(
            ev(
                &m,
                EngineEvent::Qr {
                    value: "2@s,a,b,c,WEB".into(),
                },
            ),
            at,
        );
        assert_eq!(
            m.snapshot().qr.unwrap().expires_unix_ms,
            at.unix_ms + 20_000
        );

        m.handle(
            ev(
                &m,
                EngineEvent::Ready {
                    me: Some("4915550001@c.us".into()),
                    wa_version: Some("2.3000.1".into()),
                },
            ),
            at,
        );
        let snap = m.snapshot();
        assert_eq!(snap.status, Status::Working);
        assert_eq!(snap.me.as_deref(), Some("4915550001@c.us"));
        assert_eq!(snap.wa_version.as_deref(), Some("2.3000.1"));
        assert!(snap.qr.is_none());
        assert_eq!(m.next_deadline(), None);

        assert_eq!(m.handle(Input::Stop, at), vec![Action::Close]);
        assert_eq!(m.status(), Status::Stopped);
        // Stopped sessions have no deadlines and ignore late events of the old browser.
        assert_eq!(m.next_deadline(), None);
        m.handle(
            Input::Event {
                generation: 1,
                event: EngineEvent::Crashed { reason: "x".into() },
            },
            at,
        );
        assert_eq!(m.status(), Status::Stopped);
        assert!(
            m.handle(Input::Tick, at.plus(Duration::from_secs(3600)))
                .is_empty()
        );
    }

    #[test]
    fn stuck_starting_backs_off_then_fails() {
        let now = t0();
        let mut m = Machine::new(timing(), now);
        m.handle(Input::Start, now);
        assert_eq!(m.next_deadline(), Some(now.mono + Duration::from_secs(30)));
        // Not yet.
        assert!(
            m.handle(Input::Tick, now.plus(Duration::from_secs(29)))
                .is_empty()
        );

        // Failure 1: close, relaunch after 1 s.
        let t1 = now.plus(Duration::from_secs(30));
        assert_eq!(m.handle(Input::Tick, t1), vec![Action::Close]);
        assert_eq!(m.status(), Status::Starting);
        let snap = m.snapshot();
        assert!(snap.last_error.unwrap().contains("stuck in STARTING"));
        assert_eq!(snap.consecutive_failures, 1);
        assert_eq!(snap.next_attempt_unix_ms, Some(t1.unix_ms + 1_000));
        assert_eq!(m.next_deadline(), Some(t1.mono + Duration::from_secs(1)));
        assert_eq!(
            m.handle(Input::Tick, t1.plus(Duration::from_secs(1))),
            vec![Action::Launch { generation: 2 }]
        );
        assert_eq!(m.restarts(), 1);

        // Failure 2 (a launch error): relaunch after 2 s.
        let t2 = t1.plus(Duration::from_secs(5));
        assert!(
            m.handle(
                Input::LaunchFailed {
                    generation: 2,
                    error: "no chromium".into()
                },
                t2
            )
            .is_empty()
        );
        assert_eq!(m.next_deadline(), Some(t2.mono + Duration::from_secs(2)));
        assert_eq!(
            m.handle(Input::Tick, t2.plus(Duration::from_secs(2))),
            vec![Action::Launch { generation: 3 }]
        );

        // Failure 3 (crash): FAILED, no more launches.
        let t3 = t2.plus(Duration::from_secs(10));
        assert_eq!(
            m.handle(
                ev(
                    &m,
                    EngineEvent::Crashed {
                        reason: "chromium exited".into()
                    }
                ),
                t3
            ),
            vec![Action::Close]
        );
        assert_eq!(m.status(), Status::Failed);
        assert!(m.snapshot().last_error.unwrap().contains("chromium exited"));
        assert_eq!(m.next_deadline(), None);
        assert!(
            m.handle(Input::Tick, t3.plus(Duration::from_secs(999)))
                .is_empty()
        );

        // A start command re-arms it.
        assert_eq!(
            m.handle(Input::Start, t3),
            vec![Action::Launch { generation: 4 }]
        );
        assert_eq!(m.snapshot().consecutive_failures, 0);
    }

    #[test]
    fn qr_resets_failures_and_stale_generations_are_ignored() {
        let now = t0();
        let mut m = Machine::new(timing(), now);
        m.handle(Input::Start, now);
        m.handle(ev(&m, EngineEvent::Crashed { reason: "a".into() }), now);
        m.handle(Input::Tick, now.plus(Duration::from_secs(1)));
        assert_eq!(m.generation(), 2);
        // A late event of generation 1 does nothing.
        m.handle(
            Input::Event {
                generation: 1,
                event: EngineEvent::Ready {
                    me: None,
                    wa_version: None,
                },
            },
            now,
        );
        assert_eq!(m.status(), Status::Starting);
        m.handle(
            ev(
                &m,
                EngineEvent::Qr {
                    value: "q,a,b,c,d".into(),
                },
            ),
            now,
        );
        assert_eq!(m.snapshot().consecutive_failures, 0);
    }

    #[test]
    fn disconnected_beyond_deadline_restarts() {
        let now = t0();
        let mut m = Machine::new(timing(), now);
        m.handle(Input::Start, now);
        m.handle(
            ev(
                &m,
                EngineEvent::Ready {
                    me: Some("1@c.us".into()),
                    wa_version: None,
                },
            ),
            now,
        );
        m.handle(
            ev(
                &m,
                EngineEvent::State {
                    state: "TIMEOUT".into(),
                },
            ),
            now,
        );
        assert_eq!(m.next_deadline(), Some(now.mono + Duration::from_secs(20)));
        // Reconnecting in time clears the deadline.
        let t1 = now.plus(Duration::from_secs(10));
        m.handle(
            ev(
                &m,
                EngineEvent::State {
                    state: "CONNECTED".into(),
                },
            ),
            t1,
        );
        assert_eq!(m.next_deadline(), None);
        // Away again, this time for too long.
        m.handle(
            ev(
                &m,
                EngineEvent::State {
                    state: "OPENING".into(),
                },
            ),
            t1,
        );
        let t2 = t1.plus(Duration::from_secs(20));
        assert_eq!(m.handle(Input::Tick, t2), vec![Action::Close]);
        assert!(m.snapshot().last_error.unwrap().contains("OPENING"));
        assert_eq!(
            m.handle(Input::Tick, t2.plus(Duration::from_secs(1))),
            vec![Action::Launch { generation: 2 }]
        );
    }

    #[test]
    fn logout_command_and_logout_from_phone() {
        let now = t0();
        let mut m = Machine::new(timing(), now);
        m.handle(Input::Start, now);
        m.handle(
            ev(
                &m,
                EngineEvent::Ready {
                    me: Some("1@c.us".into()),
                    wa_version: None,
                },
            ),
            now,
        );
        // From the phone: the profile goes, a fresh browser shows a new QR.
        assert_eq!(
            m.handle(
                ev(
                    &m,
                    EngineEvent::LoggedOut {
                        reason: "logout".into()
                    }
                ),
                now
            ),
            vec![
                Action::Close,
                Action::DeleteProfile,
                Action::Launch { generation: 2 }
            ]
        );
        assert_eq!(m.status(), Status::Starting);
        assert_eq!(m.snapshot().me, None);
        m.handle(
            ev(
                &m,
                EngineEvent::Ready {
                    me: Some("1@c.us".into()),
                    wa_version: None,
                },
            ),
            now,
        );
        // Our command: unlink, close, delete; stays stopped.
        assert_eq!(
            m.handle(Input::Logout, now),
            vec![Action::LogoutBrowser, Action::Close, Action::DeleteProfile]
        );
        assert_eq!(m.status(), Status::Stopped);
        // Logout of a stopped session only deletes the profile.
        assert_eq!(m.handle(Input::Logout, now), vec![Action::DeleteProfile]);
    }

    #[test]
    fn restart_relaunches_and_counts() {
        let now = t0();
        let mut m = Machine::new(timing(), now);
        m.handle(Input::Start, now);
        assert_eq!(
            m.handle(Input::Restart, now),
            vec![Action::Close, Action::Launch { generation: 2 }]
        );
        assert_eq!(m.restarts(), 1);
        // Restart of a stopped session just launches.
        m.handle(Input::Stop, now);
        assert_eq!(
            m.handle(Input::Restart, now),
            vec![Action::Launch { generation: 3 }]
        );
    }

    #[test]
    fn terminal_states_and_missing_modules_are_failures() {
        let now = t0();
        let mut m = Machine::new(timing(), now);
        m.handle(Input::Start, now);
        assert_eq!(
            m.handle(
                ev(
                    &m,
                    EngineEvent::AdapterError {
                        place: "modules".into(),
                        message: "gone".into()
                    }
                ),
                now
            ),
            vec![Action::Close]
        );
        m.handle(Input::Tick, now.plus(Duration::from_secs(1)));
        m.handle(
            ev(
                &m,
                EngineEvent::Disconnected {
                    reason: "CONFLICT".into(),
                },
            ),
            now,
        );
        assert_eq!(m.snapshot().consecutive_failures, 2);
        // Other adapter errors are only recorded.
        m.handle(Input::Tick, now.plus(Duration::from_secs(10)));
        m.handle(
            ev(
                &m,
                EngineEvent::AdapterError {
                    place: "qr".into(),
                    message: "x".into(),
                },
            ),
            now,
        );
        assert_eq!(m.status(), Status::Starting);
        assert!(m.browser_up());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(b, max, 1), Duration::from_secs(2));
        assert_eq!(backoff(b, max, 2), Duration::from_secs(4));
        assert_eq!(backoff(b, max, 5), Duration::from_secs(32));
        assert_eq!(backoff(b, max, 6), max);
        assert_eq!(backoff(b, max, u32::MAX), max);
    }
}
