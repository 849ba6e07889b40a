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
//! QR time limit: a session left in SCAN_QR_CODE (or PASSKEY_REQUIRED) for `qr_timeout`
//! (nobody scanned the QR, entered the pairing code or finished the passkey step) is closed and
//! STOPPED with a `qr_timeout:` error, so an abandoned link attempt does not keep a browser
//! forever — and after WhatsApp's own list of QR refs runs out, the page would only show an
//! expired code anyway. A start command opens a new window.
//!
//! Linking and history sync: once the socket reports `CONNECTED` or `PAIRING` while the session
//! shows a QR (or waits for the passkey), the phone has linked and WhatsApp Web syncs history.
//! The QR is cleared, the session goes back to STARTING and the QR time limit no longer applies
//! (a link at the end of the window must not be cut off); the sync is bounded by
//! `start_timeout` from the link instead.
//!
//! Incompatible WhatsApp Web (the adapter's `unsupported` report, or `DEPRECATED_VERSION`): the
//! session is FAILED at once, without the backoff relaunches, because relaunching the same
//! version cannot fix it; a start or restart (e.g. after a version pin) tries again.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::events::EngineEvent;

mod transitions;

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
    /// Gave up after repeated failures, or WhatsApp Web is incompatible; see `last_error`.
    Failed,
    /// The phone must finish a passkey step before the link completes (WAHA's name).
    PasskeyRequired,
}

impl Status {
    /// Every status, for gauges.
    pub const ALL: [Status; 6] = [
        Status::Stopped,
        Status::Starting,
        Status::ScanQrCode,
        Status::Working,
        Status::Failed,
        Status::PasskeyRequired,
    ];

    /// The wire name (`SCAN_QR_CODE`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Stopped => "STOPPED",
            Status::Starting => "STARTING",
            Status::ScanQrCode => "SCAN_QR_CODE",
            Status::Working => "WORKING",
            Status::Failed => "FAILED",
            Status::PasskeyRequired => "PASSKEY_REQUIRED",
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

/// `last_error` of a session whose WhatsApp Web lacks what the adapter needs starts with this.
pub const UNSUPPORTED_ERROR: &str = "unsupported_wa_web";

/// `last_error` of a session whose WhatsApp Web version the server refuses starts with this.
pub const DEPRECATED_ERROR: &str = "deprecated_version";

/// A passkey step shown near the end of the QR window still gets this long.
pub const PASSKEY_GRACE: Duration = Duration::from_secs(60);

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
    /// The WhatsApp Web version this launch pins (served from the cache); `None`: live.
    pub wa_pinned: Option<String>,
    /// Why this launch runs another WhatsApp Web than the fleet setting asks for (e.g. the
    /// pinned version is not in the cache), if it does.
    pub wa_note: Option<String>,
    /// The passkey step the phone must finish (`required`, `confirmation`), in PASSKEY_REQUIRED.
    pub passkey: Option<String>,
    /// History sync progress after a link (0..=100), until WORKING.
    pub sync_percent: Option<u8>,
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
    /// When the phone linked (history sync runs until `ready`).
    syncing_since: Option<Instant>,
    /// When the current passkey step was first shown.
    passkey_since: Option<Instant>,
    passkey: Option<String>,
    sync_percent: Option<u8>,
    wa_pinned: Option<String>,
    wa_note: Option<String>,
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
            syncing_since: None,
            passkey_since: None,
            passkey: None,
            sync_percent: None,
            wa_pinned: None,
            wa_note: None,
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
            wa_pinned: self.wa_pinned.clone(),
            wa_note: self.wa_note.clone(),
            passkey: self.passkey.clone(),
            sync_percent: self.sync_percent,
        }
    }

    /// Records how the browser of `generation` loads WhatsApp Web: `pinned` is the version
    /// served from the cache (shown as `wa_version` until the page reports its own), `note`
    /// says why the launch differs from the fleet setting. Ignored for another generation.
    pub fn set_launch_plan(
        &mut self,
        generation: u64,
        pinned: Option<String>,
        note: Option<String>,
    ) {
        if generation != self.generation {
            return;
        }
        if pinned.is_some() {
            self.wa_version = pinned.clone();
        }
        self.wa_pinned = pinned;
        self.wa_note = note;
    }

    /// Whether the phone has linked and history sync is running (STARTING until `ready`).
    pub fn syncing(&self) -> bool {
        self.syncing_since.is_some()
    }

    /// The next moment a [`Input::Tick`] may change something.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines = Vec::new();
        if let Some(at) = self.relaunch_at {
            deadlines.push(at.mono);
        }
        if let Some(at) = self.start_deadline() {
            deadlines.push(at);
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
}

/// The delay before relaunch number `failures` (1-based): `base · 2^(failures-1)`, capped.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << shift).min(max)
}

#[cfg(test)]
mod tests;
