//! Unit tests of `engine_host`.

use super::*;

#[test]
fn pairing_codes_get_their_dash() {
    assert_eq!(format_pairing_code("ABCDEFGH"), "ABCD-EFGH");
    assert_eq!(format_pairing_code("ABCD-EFGH"), "ABCD-EFGH");
    assert_eq!(format_pairing_code("ABC"), "ABC");
}

fn host(dir: &Path) -> Arc<EngineHost> {
    // A Chromium that cannot exist: sessions fail to launch, everything else is real.
    let engine = EngineConfig {
        chromium: "/nonexistent/chromium".into(),
        ..EngineConfig::default()
    };
    let supervisor = SupervisorConfig {
        memory_interval: None,
        ..SupervisorConfig::default()
    };
    EngineHost::with_supervisor(dir, 3, engine, supervisor)
}

fn config(s: &str) -> SessionConfig {
    SessionConfig {
        session: SessionId::new(s).unwrap(),
        webhook: None,
        webhooks: Vec::new(),
        metadata: BTreeMap::new(),
        pacing: None,
        desired: DesiredState::Running,
        created_at_ms: 1,
        reject_calls: false,
        media_download: Default::default(),
    }
}

#[tokio::test]
async fn sessions_are_persisted_announced_restored_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path());
    let ws = WorkspaceId::new("acme").unwrap();
    let mut events = h.subscribe();
    let gone = CancellationToken::new();
    gone.cancel();
    assert!(
        h.start_workspace(&ws, WorkspaceLease::new(ws.clone(), gone))
            .await
            .is_err(),
        "no start without a held lease"
    );
    assert!(matches!(
        h.create_session(&ws, config("a")).await,
        Err(HostError::NotRunning(_))
    ));
    let lease = CancellationToken::new();
    h.start_workspace(&ws, WorkspaceLease::new(ws.clone(), lease.clone()))
        .await
        .unwrap();
    let info = h.create_session(&ws, config("a")).await.unwrap();
    assert_eq!(info.shard, 3);
    assert!(dir.path().join("workspaces/acme/a/session.json").exists());
    assert!(matches!(
        h.create_session(&ws, config("a")).await,
        Err(HostError::Exists(_))
    ));
    assert!(h.handle(&ws, &SessionId::new("a").unwrap()).is_some());
    let first = events.recv().await.unwrap();
    assert!(
        matches!(&first, HostEvent::Created { session, .. } if session.as_str() == "a"),
        "{first:?}"
    );
    // The QR route has nothing to show for a session that is not scanning.
    assert!(matches!(
        h.qr(&ws, &SessionId::new("a").unwrap()).await,
        Err(HostError::WrongStatus {
            code: "not_scanning",
            ..
        })
    ));
    assert!(matches!(
        h.qr(&ws, &SessionId::new("nope").unwrap()).await,
        Err(HostError::NotFound(_))
    ));
    h.stop_workspace(&ws, StopMode::Immediate).await.unwrap();
    assert!(h.handle(&ws, &SessionId::new("a").unwrap()).is_none());

    // A later start (after a restart or a handoff) restores it from disk, and announces it.
    let mut events = h.subscribe();
    h.start_workspace(&ws, WorkspaceLease::new(ws.clone(), lease.clone()))
        .await
        .unwrap();
    assert_eq!(h.list_sessions(&ws).await.unwrap().len(), 1);
    loop {
        if let HostEvent::Created { session, .. } = events.recv().await.unwrap() {
            assert_eq!(session.as_str(), "a");
            break;
        }
    }
    h.delete_session(&ws, &SessionId::new("a").unwrap())
        .await
        .unwrap();
    assert!(!dir.path().join("workspaces/acme/a").exists());
    assert!(h.list_sessions(&ws).await.unwrap().is_empty());
    h.stop_workspace(&ws, StopMode::Graceful).await.unwrap();
    assert_eq!(h.overlaps(), 0);
}

#[test]
fn no_singleton_lock_means_no_owner() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(live_singleton_owner(dir.path()), None);
    // A lock naming a dead pid on this host is stale, not an owner.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::os::unix::fs::symlink(
        format!("{}-4294967", host.trim()),
        dir.path().join("SingletonLock"),
    )
    .unwrap();
    assert_eq!(live_singleton_owner(dir.path()), None);
}
