//! Tests of the pure session state machine (time driven by hand).

use super::*;

mod linking;

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
