//! Unit tests of `supervisor`.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::test]
async fn for_each_bounded_never_exceeds_its_bound_and_runs_everything() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    for_each_bounded(0..20, 3, |_| {
        let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Yield a few times so that other items get to start meanwhile.
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            running.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    assert_eq!(done.load(Ordering::SeqCst), 20);
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn start_answers_at_once_and_shutdown_is_not_held_up_by_a_launch_slot() {
    let engine = Engine::new(crate::engine::EngineConfig {
        chromium: "/nonexistent/chromium".into(),
        ..crate::engine::EngineConfig::default()
    });
    let limiter = LaunchLimiter::new(1);
    // Someone else holds the only launch slot for the whole test.
    let _slot = limiter.0.clone().acquire_owned().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn_session(
        engine.clone(),
        SessionSpec {
            workspace: WorkspaceId::new("ws").unwrap(),
            session: SessionId::new("s").unwrap(),
            profile_dir: dir.path().join("profile"),
            lock: None,
        },
        SupervisorConfig {
            limiter: Some(limiter.clone()),
            memory_interval: None,
            ..SupervisorConfig::default()
        },
        CancellationToken::new(),
    );
    let limit = Duration::from_secs(10);
    let status = tokio::time::timeout(limit, handle.start())
        .await
        .expect("start answers while the launch waits for a slot")
        .unwrap();
    assert_eq!(status.status, Status::Starting);
    tokio::time::timeout(limit, handle.shutdown())
        .await
        .expect("shutdown is not held up by the launch slot");
    assert!(matches!(
        handle.stop().await,
        Err(SessionCommandError::Gone)
    ));
    // The session never got the slot, so it is still the other holder's.
    assert_eq!(limiter.available(), 0);
}

#[tokio::test]
async fn launch_limiter_hands_out_at_most_its_permits() {
    let limiter = LaunchLimiter::new(2);
    let a = limiter.0.clone().acquire_owned().await.unwrap();
    let _b = limiter.0.clone().acquire_owned().await.unwrap();
    assert_eq!(limiter.available(), 0);
    assert!(limiter.0.clone().try_acquire_owned().is_err());
    drop(a);
    assert_eq!(limiter.available(), 1);
    assert_eq!(LaunchLimiter::new(0).available(), 1, "at least one");
}
