//! The session supervisor on real Chromium: pairing by code, recovery from a killed and a hung
//! browser, logout, the watchdog on a stuck start and a long disconnect, and the memory budget's
//! clean restart without a QR.

use super::*;

/// A workspace lock that the test holds for the whole session.
pub(super) struct HeldLock(WorkspaceId);
impl WorkspaceLockGuard for HeldLock {
    fn workspace(&self) -> &WorkspaceId {
        &self.0
    }
    fn is_held(&self) -> bool {
        true
    }
}

pub(super) async fn wait_status(
    handle: &wafleet::engine::SessionHandle,
    what: &str,
    pred: impl Fn(&wafleet::engine::SessionStatus) -> bool,
) -> wafleet::engine::SessionStatus {
    let mut watch = handle.watch_status();
    let result = tokio::time::timeout(DEADLINE, watch.wait_for(|s| pred(s))).await;
    match result {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("timed out waiting for {what}; status {:?}", handle.status()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_pairs_by_code_recovers_from_kill_and_hang_and_logs_out() {
    // The process-wide recorder, installed before any metric is recorded.
    let prometheus = wafleet::telemetry::prometheus();
    let (sim, cancel) = start_sim(fast_acks()).await;
    let engine = Engine::new(engine_config(&sim));
    let dir = tempfile::tempdir().unwrap();
    let ws = WorkspaceId::new("ws1").unwrap();
    let profile: PathBuf =
        wafleet::engine::config::profile_dir(dir.path(), &ws, &SessionId::new("s1").unwrap());
    let spec = SessionSpec {
        workspace: ws.clone(),
        session: SessionId::new("s1").unwrap(),
        profile_dir: profile.clone(),
        lock: Some(Arc::new(HeldLock(ws.clone()))),
    };
    let config = SupervisorConfig {
        timing: Timing {
            backoff_base: Duration::from_millis(200),
            ..Timing::default()
        },
        memory_interval: Some(Duration::from_secs(1)),
        limiter: Some(wafleet::engine::LaunchLimiter::new(1)),
        versions: None,
    };
    let session_cancel = CancellationToken::new();
    let handle = spawn_session(engine.clone(), spec, config, session_cancel.clone());
    assert_eq!(handle.status().status, Status::Stopped);
    let mut events = handle.subscribe();

    // Start: a QR shows; pairing by code logs the session in instead.
    let status = handle.start().await.unwrap();
    assert_eq!(status.status, Status::Starting);
    let status = wait_status(&handle, "SCAN_QR_CODE", |s| s.status == Status::ScanQrCode).await;
    let qr = status.qr.unwrap();
    assert_eq!(qr.value.split(',').count(), 5);
    assert!(qr.expires_unix_ms > qr.received_unix_ms);
    assert!(matches!(
        handle.send_text("4915550002", "x").await,
        Err(wafleet::engine::SessionCommandError::WrongStatus(
            Status::ScanQrCode
        ))
    ));
    let phone = "4915550010";
    let code = handle.request_pairing_code(phone).await.unwrap();
    assert_eq!(code.len(), 8, "{code}");
    let pretty = format!("{}-{}", &code[..4], &code[4..]);
    let (s, body) = post(&sim, "/sim/pair", json!({"phone": phone, "code": pretty})).await;
    assert_eq!(s, 200, "{body}");
    let status = wait_status(&handle, "WORKING", |s| s.status == Status::Working).await;
    assert_eq!(status.me.as_deref(), Some("4915550010@c.us"));
    assert!(status.wa_version.as_deref().unwrap().ends_with("-sim"));
    let pid = status.pid.unwrap();
    let procs = tree(pid);
    // The PairingCode event reached subscribers.
    let deadline = Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(SessionEvent::Engine(EngineEvent::PairingCode { code: c }))) => {
                assert_eq!(c, code);
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("no pairing code event: {other:?}"),
        }
    }

    // Memory of the process tree is sampled.
    let status = wait_status(&handle, "a PSS sample", |s| s.memory_bytes.is_some()).await;
    assert!(status.memory_bytes.unwrap() > 10 << 20, "{status:?}");

    // Sending through the handle works while WORKING.
    let sent = handle
        .send_text("4915550002", "via supervisor")
        .await
        .unwrap();
    assert!(sent.id.starts_with("true_"));

    // kill -9 the browser: detected as a crash, relaunched, back to WORKING without a QR
    // (the profile and a stale SingletonLock survive the kill).
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_status(&handle, "the crash to be seen", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("crashed"))
    })
    .await;
    assert!(status.restarts <= 1, "{status:?}");
    let status = wait_status(&handle, "WORKING again", |s| {
        s.status == Status::Working && s.restarts >= 1 && s.pid.is_some_and(|p| p != pid)
    })
    .await;
    assert_eq!(status.me.as_deref(), Some("4915550010@c.us"));
    // The killed browser is reaped and its helpers are gone too.
    assert_gone(&procs, Path::new("/nonexistent")).await;
    let procs = tree(status.pid.unwrap());

    // A renderer stuck in an endless loop answers nothing: the heartbeat reports it, the
    // supervisor relaunches, and the session is WORKING again.
    let hung_pid = status.pid.unwrap();
    let (s, body) = post(&sim, "/sim/faults", json!({"crash": phone, "mode": "hang"})).await;
    assert_eq!(s, 200, "{body}");
    let status = wait_status(&handle, "WORKING after the hang", |s| {
        s.status == Status::Working && s.pid.is_some_and(|p| p != hung_pid)
    })
    .await;
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unresponsive")),
        "{status:?}"
    );
    assert!(status.restarts >= 2, "{status:?}");
    assert_gone(&procs, Path::new("/nonexistent")).await;
    let procs = tree(status.pid.unwrap());

    // Logout: unlinked, closed, profile deleted, STOPPED.
    let status = handle.logout().await.unwrap();
    assert_eq!(status.status, Status::Stopped);
    assert_gone(&procs, &profile).await;
    assert!(!profile.exists(), "profile deleted on logout");
    let devices = get(&sim, "/sim/devices").await;
    assert!(
        !devices
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["phone"] == phone && d["state"] == "CONNECTED"),
        "{devices}"
    );

    handle.shutdown().await;
    assert!(matches!(
        handle.start().await,
        Err(wafleet::engine::SessionCommandError::Gone)
    ));
    // Every task of every browser this engine launched has ended (what a drain waits for).
    engine.tracker().close();
    tokio::time::timeout(DEADLINE, engine.tracker().wait())
        .await
        .expect("engine tasks end once their browsers are gone");

    // The metrics the dashboards use were recorded.
    let text = prometheus.render();
    for needle in [
        "wafleet_sessions{status=\"STOPPED\"}",
        "wafleet_session_memory_bytes{workspace=\"ws1\",session=\"s1\"}",
        "wafleet_session_restarts_total",
        "wafleet_qr_latency_seconds_bucket",
        "wafleet_send_latency_seconds_bucket",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_handles_a_stuck_start_and_a_long_disconnect() {
    let (sim, cancel) = start_sim(SimConfig::default()).await;
    // Every page load stalls: WhatsApp Web never boots.
    let (s, body) = post(&sim, "/sim/faults", json!({"slow_load_ms": 600_000})).await;
    assert_eq!(s, 200, "{body}");
    let engine = Engine::new(engine_config(&sim));
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    let spec = SessionSpec {
        workspace: WorkspaceId::new("ws2").unwrap(),
        session: SessionId::new("stuck").unwrap(),
        profile_dir: profile.clone(),
        lock: None,
    };
    let config = SupervisorConfig {
        timing: Timing {
            start_timeout: Duration::from_secs(5),
            disconnect_timeout: Duration::from_secs(3),
            backoff_base: Duration::from_millis(100),
            max_failures: 2,
            ..Timing::default()
        },
        memory_interval: None,
        limiter: None,
        versions: None,
    };
    let handle = spawn_session(engine, spec, config, CancellationToken::new());
    handle.start().await.unwrap();
    let status = wait_status(&handle, "FAILED", |s| s.status == Status::Failed).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("stuck in STARTING"),
        "{status:?}"
    );
    assert_eq!(status.consecutive_failures, 2);
    assert_eq!(status.restarts, 1, "one relaunch before giving up");
    assert_eq!(status.pid, None);
    wait_for("no browser on the profile", || async {
        processes_on(&profile).is_empty().then_some(())
    })
    .await;

    // Once the fault is gone, a start command recovers it.
    let (s, _) = post(&sim, "/sim/faults", json!({"clear": true})).await;
    assert_eq!(s, 200);
    handle.start().await.unwrap();
    let status = wait_status(&handle, "SCAN_QR_CODE", |s| s.status == Status::ScanQrCode).await;
    let phone = "4915550020";
    let (s, body) = post(
        &sim,
        "/sim/link",
        json!({"qr": status.qr.unwrap().value, "phone": phone}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let status = wait_status(&handle, "WORKING", |s| s.status == Status::Working).await;
    let restarts = status.restarts;

    // The socket drops and reconnects are refused beyond the disconnect deadline: the
    // watchdog relaunches, and once the phone's server answers again the session is back.
    let (s, body) = post(
        &sim,
        "/sim/faults",
        json!({"drop_socket": phone, "refuse_ms": 4_000}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let status = wait_status(&handle, "the disconnect to be acted on", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("disconnected"))
    })
    .await;
    assert!(status.restarts <= restarts + 1, "{status:?}");
    let status = wait_status(&handle, "WORKING after the relaunch", |s| {
        s.status == Status::Working && s.restarts > restarts
    })
    .await;
    assert_eq!(status.me.as_deref(), Some("4915550020@c.us"));
    handle.shutdown().await;
    wait_for("no browser on the profile", || async {
        processes_on(&profile).is_empty().then_some(())
    })
    .await;
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_restarts_a_working_session_cleanly_without_a_qr() {
    let (sim, cancel) = start_sim(fast_acks()).await;
    let mut config = engine_config(&sim);
    // Every browser tree is far above 1 MiB: the first sample while WORKING is over budget.
    config.memory_budget_mb = Some(1);
    let engine = Engine::new(config);
    let dir = tempfile::tempdir().unwrap();
    let ws = WorkspaceId::new("ws1").unwrap();
    let spec = SessionSpec {
        workspace: ws.clone(),
        session: SessionId::new("budget").unwrap(),
        profile_dir: dir.path().join("profile"),
        lock: Some(Arc::new(HeldLock(ws))),
    };
    let config = SupervisorConfig {
        memory_interval: Some(Duration::from_secs(1)),
        limiter: None,
        ..SupervisorConfig::default()
    };
    let session_cancel = CancellationToken::new();
    let handle = spawn_session(engine.clone(), spec, config, session_cancel.clone());
    let mut events = handle.subscribe();
    handle.start().await.unwrap();
    let status = wait_status(&handle, "SCAN_QR_CODE", |s| s.status == Status::ScanQrCode).await;
    let phone = "4915550077";
    let (s, body) = post(
        &sim,
        "/sim/link",
        json!({"qr": status.qr.unwrap().value, "phone": phone}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let first = wait_status(&handle, "WORKING", |s| s.status == Status::Working).await;
    let first_pid = first.pid.unwrap();

    // Over the budget: a clean restart (new browser, same profile), WORKING again, no QR.
    let status = wait_status(&handle, "WORKING after the budget restart", |s| {
        s.status == Status::Working && s.restarts >= 1 && s.pid.is_some_and(|p| p != first_pid)
    })
    .await;
    assert_eq!(status.me.as_deref(), Some("4915550077@c.us"));
    // Restarts are spaced: the new browser is sampled (and over budget too) without another.
    let new_pid = status.pid;
    let status = wait_status(&handle, "a PSS sample of the new browser", |s| {
        s.memory_bytes.is_some() && s.pid == new_pid
    })
    .await;
    assert_eq!(status.restarts, 1, "{status:?}");
    let mut logged_in = false;
    loop {
        match events.try_recv() {
            Ok(SessionEvent::Status(s)) => {
                logged_in |= s.status == Status::Working;
                assert!(
                    !(logged_in && s.status == Status::ScanQrCode),
                    "a QR after the login: {s:?}"
                );
            }
            Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    assert!(logged_in);
    handle.shutdown().await;
    cancel.cancel();
}
