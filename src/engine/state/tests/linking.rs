//! Versions, passkeys and the history sync: unsupported and deprecated builds fail at once, the
//! passkey step and its grace, a link at the end of the QR window, a sync that never finishes,
//! CONNECTED that is not a link.

use super::*;

pub(super) fn state(m: &Machine, s: &str) -> Input {
    ev(m, EngineEvent::State { state: s.into() })
}

pub(super) fn ready(m: &Machine, version: Option<&str>) -> Input {
    ev(
        m,
        EngineEvent::Ready {
            me: Some("4915550001@c.us".into()),
            wa_version: version.map(str::to_string),
        },
    )
}

#[test]
fn an_unsupported_wa_web_fails_at_once_without_relaunches() {
    let now = t0();
    let mut m = Machine::new(timing(), now);
    m.handle(Input::Start, now);
    m.handle(
        ev(
            &m,
            EngineEvent::Version {
                version: "2.3000.9".into(),
            },
        ),
        now,
    );
    assert_eq!(m.snapshot().wa_version.as_deref(), Some("2.3000.9"));
    let actions = m.handle(
        ev(
            &m,
            EngineEvent::Unsupported {
                missing: vec!["WAWebX.member".into(), "WAWebY.z".into()],
                version: None,
            },
        ),
        now,
    );
    assert_eq!(actions, vec![Action::Close]);
    let snap = m.snapshot();
    assert_eq!(snap.status, Status::Failed);
    assert_eq!(
        snap.last_error.as_deref(),
        Some("unsupported_wa_web: missing WAWebX.member, WAWebY.z (WhatsApp Web 2.3000.9)")
    );
    // No relaunch is scheduled: nothing is due, however long we wait.
    assert_eq!(m.next_deadline(), None);
    assert!(
        m.handle(Input::Tick, now.plus(Duration::from_secs(3600)))
            .is_empty()
    );
    // A restart (e.g. after a version pin) tries again.
    assert_eq!(
        m.handle(Input::Restart, now),
        vec![Action::Launch { generation: 2 }]
    );
    assert_eq!(m.status(), Status::Starting);
}

#[test]
fn a_deprecated_version_fails_at_once_with_the_version_in_the_reason() {
    let now = t0();
    let mut m = Machine::new(timing(), now);
    m.handle(Input::Start, now);
    m.set_launch_plan(1, Some("2.3000.1".into()), None);
    assert_eq!(m.snapshot().wa_version.as_deref(), Some("2.3000.1"));
    assert_eq!(m.snapshot().wa_pinned.as_deref(), Some("2.3000.1"));
    m.handle(state(&m, "DEPRECATED_VERSION"), now);
    let actions = m.handle(ev(&m, EngineEvent::DeprecatedVersion), now);
    assert_eq!(actions, vec![Action::Close]);
    let snap = m.snapshot();
    assert_eq!(snap.status, Status::Failed);
    assert_eq!(
        snap.last_error.as_deref(),
        Some(
            "deprecated_version: WhatsApp Web 2.3000.1 is no longer accepted; pin a newer version or use latest"
        )
    );
    assert_eq!(m.next_deadline(), None);
    // A plan for another generation is ignored; a new launch forgets the old pin.
    m.set_launch_plan(7, Some("x".into()), None);
    assert_eq!(m.snapshot().wa_pinned.as_deref(), Some("2.3000.1"));
    m.handle(Input::Start, now);
    assert_eq!(m.snapshot().wa_pinned, None);
}

#[test]
fn passkey_step_is_shown_and_leaves_on_ready_or_a_new_qr() {
    let (now, limit) = (t0(), Duration::from_secs(100));
    let mut m = with_qr_limit(limit, now);
    m.handle(Input::Start, now);
    m.handle(qr(&m, "2@a,b,c,d,e"), now);
    let at = now.plus(Duration::from_secs(10));
    m.handle(
        ev(
            &m,
            EngineEvent::Passkey {
                state: "required".into(),
            },
        ),
        at,
    );
    let snap = m.snapshot();
    assert_eq!(snap.status, Status::PasskeyRequired);
    assert_eq!(snap.passkey.as_deref(), Some("required"));
    assert!(snap.qr.is_none(), "the QR was scanned");
    // Still bounded by the QR window of the launch.
    assert_eq!(m.next_deadline(), Some(now.mono + limit));
    // A new QR: back to SCAN_QR_CODE.
    m.handle(qr(&m, "2@b,b,c,d,e"), at);
    assert_eq!(m.status(), Status::ScanQrCode);
    assert_eq!(m.snapshot().passkey, None);
    // Passkey again, then ready: WORKING.
    m.handle(
        ev(
            &m,
            EngineEvent::Passkey {
                state: "confirmation".into(),
            },
        ),
        at,
    );
    assert_eq!(m.status(), Status::PasskeyRequired);
    m.handle(ready(&m, Some("2.3000.2")), at);
    let snap = m.snapshot();
    assert_eq!(snap.status, Status::Working);
    assert_eq!(snap.passkey, None);
}

#[test]
fn an_abandoned_passkey_step_ends_with_the_qr_window_but_gets_a_grace() {
    let (now, limit) = (t0(), Duration::from_secs(100));
    let mut m = with_qr_limit(limit, now);
    m.handle(Input::Start, now);
    m.handle(qr(&m, "2@a,b,c,d,e"), now);
    // Shown 10 s before the window ends: it still gets PASSKEY_GRACE.
    let late = now.plus(limit - Duration::from_secs(10));
    m.handle(
        ev(
            &m,
            EngineEvent::Passkey {
                state: "required".into(),
            },
        ),
        late,
    );
    assert_eq!(m.next_deadline(), Some(late.mono + PASSKEY_GRACE));
    assert!(m.handle(Input::Tick, now.plus(limit)).is_empty());
    assert_eq!(
        m.handle(Input::Tick, late.plus(PASSKEY_GRACE)),
        vec![Action::Close]
    );
    let snap = m.snapshot();
    assert_eq!(snap.status, Status::Stopped);
    assert!(
        snap.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(QR_TIMEOUT_ERROR))
    );
}

#[test]
fn a_link_at_the_end_of_the_qr_window_is_not_cut_off_during_sync() {
    let (now, limit) = (t0(), Duration::from_secs(100));
    let mut m = with_qr_limit(limit, now);
    m.handle(Input::Start, now);
    m.handle(qr(&m, "2@a,b,c,d,e"), now);
    // The phone links one second before the window ends.
    let linked = now.plus(limit - Duration::from_secs(1));
    m.handle(state(&m, "CONNECTED"), linked);
    let snap = m.snapshot();
    assert_eq!(snap.status, Status::Starting);
    assert!(snap.qr.is_none());
    assert!(m.syncing());
    m.handle(ev(&m, EngineEvent::Loading { percent: 40 }), linked);
    assert_eq!(m.snapshot().sync_percent, Some(40));
    // The QR window passes: nothing happens. The sync deadline is start_timeout after the link.
    assert!(m.handle(Input::Tick, now.plus(limit)).is_empty());
    assert_eq!(m.status(), Status::Starting);
    assert_eq!(
        m.next_deadline(),
        Some(linked.mono + Duration::from_secs(30))
    );
    m.handle(ready(&m, None), linked.plus(Duration::from_secs(29)));
    let snap = m.snapshot();
    assert_eq!(snap.status, Status::Working);
    assert_eq!(snap.sync_percent, None);
}

#[test]
fn a_sync_that_never_finishes_is_a_failure() {
    let now = t0();
    let mut m = Machine::new(timing(), now);
    m.handle(Input::Start, now);
    m.handle(qr(&m, "2@a,b,c,d,e"), now);
    let linked = now.plus(Duration::from_secs(50));
    m.handle(state(&m, "PAIRING"), linked);
    assert_eq!(m.status(), Status::Starting);
    // A pairing code asked again by the adapter does not bring the QR screen back.
    m.handle(
        ev(
            &m,
            EngineEvent::PairingCode {
                code: "ABCDEFGH".into(),
            },
        ),
        linked,
    );
    assert_eq!(m.status(), Status::Starting);
    let due = linked.plus(Duration::from_secs(30));
    assert!(m.handle(Input::Tick, due).contains(&Action::Close));
    let snap = m.snapshot();
    assert!(
        snap.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("history sync did not finish")),
        "{snap:?}"
    );
    // A relaunch follows with backoff (the profile is linked now).
    assert_eq!(m.status(), Status::Starting);
    assert!(!m.syncing());
    assert_eq!(
        m.handle(Input::Tick, due.plus(Duration::from_secs(1))),
        vec![Action::Launch { generation: 2 }]
    );
}

#[test]
fn connected_while_working_or_starting_is_not_a_link() {
    let now = t0();
    let mut m = Machine::new(timing(), now);
    m.handle(Input::Start, now);
    // A restored profile connects without a QR: the launch's own deadline stays.
    m.handle(state(&m, "CONNECTED"), now.plus(Duration::from_secs(10)));
    assert!(!m.syncing());
    assert_eq!(m.next_deadline(), Some(now.mono + Duration::from_secs(30)));
}
