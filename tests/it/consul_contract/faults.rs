//! Faults, built-in agent only: watches through an index that goes backwards and error bursts, the
//! session keeper renewing and fencing, the registration keeper re-registering after the agent
//! forgets, TTL invalidation releasing locks.

use super::*;

// === faults (built-in agent only) ===

#[tokio::test]
async fn watch_survives_index_backwards_and_error_faults() {
    let t = dev_target().await;
    let agent = t.dev.as_ref().unwrap();
    let c = &t.client;
    let key = format!("{}/w", t.prefix);
    assert!(c.kv_put(&key, b"0", &plain()).await.unwrap());
    let cancel = CancellationToken::new();
    let mut rx = watch_key(c, &key, fast_watch(), cancel.clone()).unwrap();
    let has = |v: &'static [u8]| move |s: &WatchState<Option<KvPair>>| matches!(s.value(), Some(Some(p)) if p.value_bytes() == v);
    within("initial", rx.wait_for(has(b"0"))).await.unwrap();

    fault(agent, "/index-backwards", serde_json::json!({})).await;
    assert!(c.kv_put(&key, b"1", &plain()).await.unwrap());
    within("after index-backwards", rx.wait_for(has(b"1")))
        .await
        .unwrap();
    assert!(c.kv_put(&key, b"2", &plain()).await.unwrap());
    within("still following", rx.wait_for(has(b"2")))
        .await
        .unwrap();

    for status in [500u16, 429] {
        fault(
            agent,
            "/errors",
            serde_json::json!({"status": status, "count": 3}),
        )
        .await;
        let first = c.kv_get(&key, &QueryOptions::default()).await;
        match &first {
            Err(e @ ConsulError::Status { status: s, .. }) if *s == status => {
                assert!(e.is_transient())
            }
            other => panic!("expected an injected {status}, got {other:?}"),
        }
        let value = format!("after-{status}");
        // The write itself may meet an injected error: retry it like any caller would.
        eventually("write through injected errors", || {
            let value = value.clone();
            let key = key.clone();
            async move { c.kv_put(&key, value.as_bytes(), &plain()).await.is_ok() }
        })
        .await;
        within(
            "watch recovers",
            rx.wait_for(
                |s| matches!(s.value(), Some(Some(p)) if p.value_bytes() == value.as_bytes()),
            ),
        )
        .await
        .unwrap();
    }

    fault(agent, "/pause", serde_json::json!({"mode": "unavailable"})).await;
    match c.kv_get(&key, &QueryOptions::default()).await {
        Err(ConsulError::Status { status: 503, .. }) => {}
        other => panic!("expected 503, got {other:?}"),
    }
    assert!(
        rx.borrow().value().is_some(),
        "last value kept while unavailable"
    );
    fault(agent, "/resume", serde_json::json!({})).await;
    assert!(c.kv_put(&key, b"3", &plain()).await.unwrap());
    within("after unavailable", rx.wait_for(has(b"3")))
        .await
        .unwrap();
    cancel.cancel();
}

pub(super) fn quick_session(name: &str) -> SessionConfig {
    SessionConfig {
        renew_every: Some(Duration::from_millis(100)),
        fence_after: Some(Duration::from_millis(800)),
        ..SessionConfig::new(name, Duration::from_secs(2), Duration::ZERO)
    }
}

#[tokio::test]
async fn session_keeper_renews_and_fences() {
    let t = dev_target().await;
    let agent = t.dev.as_ref().unwrap();
    let c = &t.client;
    let tracker = TaskTracker::new();

    // Renewal keeps a short-TTL session alive well past 2×TTL (no fence while healthy).
    let healthy = SessionConfig {
        renew_every: Some(Duration::from_millis(100)),
        fence_after: Some(Duration::from_millis(1500)),
        ..SessionConfig::new("healthy", Duration::from_secs(2), Duration::ZERO)
    };
    let k = SessionKeeper::start(c, healthy, &tracker, t.cancel.child_token())
        .await
        .unwrap();
    let lock = format!("{}/locks/shards/0", t.prefix);
    assert!(session::acquire(c, &lock, k.id(), b"w0").await.unwrap());
    // Renewals are at least 100 ms apart, so 45 of them span more than 2×TTL (4 s).
    eventually("45 renewals (> 2×TTL)", || async { k.renewals() >= 45 }).await;
    assert!(!k.is_fenced());
    assert!(
        c.session_info(k.id(), &QueryOptions::default())
            .await
            .unwrap()
            .0
            .is_some()
    );
    assert_eq!(
        c.kv_get(&lock, &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap()
            .session
            .as_deref(),
        Some(k.id())
    );

    // Renew answering 404 (session destroyed behind its back) fences at once.
    c.session_destroy(k.id()).await.unwrap();
    within("fence on 404", k.fenced()).await;
    assert_eq!(k.fence_reason(), Some(FenceReason::SessionGone));
    assert_eq!(
        c.kv_get(&lock, &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap()
            .session,
        None
    );

    // Dropped renewals (connections closed) fence after the deadline; other traffic flows.
    let k = SessionKeeper::start(
        c,
        quick_session("dropped"),
        &tracker,
        t.cancel.child_token(),
    )
    .await
    .unwrap();
    fault(agent, "/drop", serde_json::json!({"session": k.id()})).await;
    assert!(
        c.kv_put(&format!("{}/other", t.prefix), b"ok", &plain())
            .await
            .unwrap()
    );
    within("fence on dropped renewals", k.fenced()).await;
    assert_eq!(k.fence_reason(), Some(FenceReason::DeadlineExceeded));
    fault(agent, "", serde_json::json!({})).await;

    // A hung agent fences too, and releases the session within 2×TTL once it is back.
    let k = SessionKeeper::start(c, quick_session("hung"), &tracker, t.cancel.child_token())
        .await
        .unwrap();
    let lock2 = format!("{}/locks/shards/1", t.prefix);
    assert!(session::acquire(c, &lock2, k.id(), b"w1").await.unwrap());
    fault(agent, "/pause", serde_json::json!({"mode": "hang"})).await;
    within("fence on hang", k.fenced()).await;
    assert_eq!(k.fence_reason(), Some(FenceReason::DeadlineExceeded));
    fault(agent, "/resume", serde_json::json!({})).await;
    within(
        "lock released after TTL invalidation",
        session::wait_until_free_with(c, &lock2, fast_watch(), &t.cancel),
    )
    .await
    .unwrap();
    assert!(matches!(
        c.session_renew(k.id()).await,
        Err(ConsulError::SessionNotFound(_))
    ));

    // destroy() stops renewal and removes the session.
    let k = SessionKeeper::start(
        c,
        quick_session("destroyed"),
        &tracker,
        t.cancel.child_token(),
    )
    .await
    .unwrap();
    let id = k.id().to_owned();
    let fence = k.fence_token();
    k.destroy().await.unwrap();
    assert!(fence.is_cancelled());
    assert!(
        c.session_info(&id, &QueryOptions::default())
            .await
            .unwrap()
            .0
            .is_none()
    );
    tracker.close();
    within("keeper tasks end", tracker.wait()).await;
}

#[tokio::test]
async fn registration_keeper_reregisters_after_agent_forgets() {
    let t = dev_target().await;
    let agent = t.dev.as_ref().unwrap();
    let c = &t.client;
    let tracker = TaskTracker::new();
    let svc = worker_service(&t, 2, 24002);
    let (id, name) = (svc.id.clone(), svc.name.clone());
    let mut reg = Registration::new(svc, Duration::from_secs(15));
    reg.pass_every = Some(Duration::from_millis(100));
    let keeper = RegistrationKeeper::start(c, reg, &tracker, t.cancel.child_token())
        .await
        .unwrap();
    assert_eq!(keeper.reregistrations(), 0);
    fault(agent, "/forget-services", serde_json::json!({})).await;
    eventually("re-registered", || async { keeper.reregistrations() >= 1 }).await;
    eventually("listed and passing again", || async {
        c.agent_services()
            .await
            .map(|s| s.contains_key(&id))
            .unwrap_or(false)
            && health(c, &name, true, None).await.len() == 1
    })
    .await;
    // Errors from the agent do not stop the keeper.
    fault(
        agent,
        "/errors",
        serde_json::json!({"status": 500, "count": 2}),
    )
    .await;
    fault(agent, "/forget-services", serde_json::json!({})).await;
    eventually("re-registered after errors", || async {
        keeper.reregistrations() >= 2
    })
    .await;
    // Cancelling the keeper's token deregisters too.
    t.cancel.cancel();
    tracker.close();
    within("keeper ends", tracker.wait()).await;
}

#[tokio::test]
async fn session_ttl_invalidation_releases_locks() {
    let t = dev_target().await;
    let c = &t.client;
    let req = SessionRequest {
        name: "short".into(),
        ttl: Some(Duration::from_millis(300)),
        lock_delay: Some(Duration::ZERO),
        ..Default::default()
    };
    let s = c.session_create(&req).await.unwrap();
    let lock = format!("{}/locks/ttl", t.prefix);
    assert!(session::acquire(c, &lock, &s, b"x").await.unwrap());
    // Not renewed: invalidated within 2×TTL, which releases the lock (a blocking wait sees it).
    within(
        "TTL invalidation",
        session::wait_until_free_with(c, &lock, fast_watch(), &t.cancel),
    )
    .await
    .unwrap();
    assert!(matches!(
        c.session_renew(&s).await,
        Err(ConsulError::SessionNotFound(_))
    ));
    let p = c
        .kv_get(&lock, &QueryOptions::default())
        .await
        .unwrap()
        .0
        .unwrap();
    assert_eq!(p.session, None);
    assert_eq!(p.value_bytes(), b"x", "release keeps the value");
}
