//! Several webhook targets of one session: each is delivered, retried and dead-lettered on its own.

use super::*;

/// Three targets on one session: one healthy, one that refuses for good (410), one that keeps
/// failing with a long backoff. The healthy one gets every event, in order, while the failing
/// one is still on its first event; the refusing one ends with one dead letter per event,
/// naming it; each target signs with its own secret. Removing the failing target drops its
/// backlog instead of leaving it to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_is_delivered_independently() {
    let _serial = SERIAL.lock().await;
    let shutdown = CancellationToken::new();
    let receiver = Arc::new(Receiver::default());
    let addr = start_receiver(receiver.clone(), shutdown.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_shard(dir.path(), 3).await.unwrap();
    let registry = Arc::new(Registry::new());
    let emitter = Emitter::new(store.clone(), registry.clone(), 3);
    let (w, s) = (ws("acme"), sid("pair"));
    let target = |id: &str, mode: &str, secret: &str| {
        WebhookConfig::simple(
            Url::parse(&format!("http://{addr}/hook/{mode}")).unwrap(),
            Some(WebhookSecret::new(secret.to_owned()).unwrap()),
        )
        .with_id(id)
    };
    let good = target("good", "ok", "good-secret");
    let gone = target("gone", "gone", "gone-secret");
    let stuck = target("stuck", "fail", "stuck-secret");
    registry.set_session(
        &w,
        &s,
        SessionHooks {
            webhooks: vec![good.clone(), gone.clone(), stuck.clone()],
            metadata: json!({}),
        },
    );
    let mut ids = Vec::new();
    for i in 0..4 {
        let env = emitter
            .emit(&w, &s, events::MESSAGE, json!({"n": i}), 1_000 + i)
            .await
            .unwrap();
        ids.push(env.id);
    }
    let config = DeliveryConfig {
        request_timeout: Duration::from_secs(2),
        max_attempts: 5,
        // The stuck target's second attempt would come only after a minute.
        backoff_base: Duration::from_secs(60),
        backoff_max: Duration::from_secs(60),
        jitter: 0.0,
        max_in_flight: 8,
        idle_poll: Duration::from_millis(100),
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(delivery::run(
        store.clone(),
        registry.clone(),
        config,
        stop.clone(),
    ));
    let hits_of = |mode: &str| -> Vec<Hit> {
        receiver
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.mode == mode)
            .cloned()
            .collect()
    };
    wait_for("the healthy target to get every event", || async {
        hits_of("ok").len() == 4
    })
    .await;
    wait_for(
        "a dead letter per event for the refusing target",
        || async { store.dead_letters(&w, None, None, 100).await.unwrap().len() == 4 },
    )
    .await;
    let ok: Vec<String> = hits_of("ok").into_iter().map(|h| h.id).collect();
    assert_eq!(ok, ids, "in order per target");
    let stuck_hits: Vec<String> = hits_of("fail").into_iter().map(|h| h.id).collect();
    assert_eq!(
        stuck_hits,
        [ids[0].clone()],
        "the failing target is still on its first event and held back nobody"
    );
    let dead = store.dead_letters(&w, None, None, 100).await.unwrap();
    assert!(dead.iter().all(|d| d.target == "gone"));
    let page = wafleet::webhook::api::list_dead_letters(&store, &w, &Default::default())
        .await
        .unwrap();
    assert_eq!(page["dead_letters"][0]["target"], "gone");
    // Own signature per target: same event, different secrets, different signatures.
    let sig = |mode: &str| {
        hits_of(mode)
            .into_iter()
            .find(|h| h.id == ids[0])
            .and_then(|h| h.signature)
            .unwrap()
    };
    assert_ne!(sig("ok"), sig("fail"));
    assert_eq!(
        store.event(&ids[0]).await.unwrap().unwrap().state,
        OutboxState::Pending,
        "pending while the stuck target still owes it"
    );

    // Remove the stuck target: its backlog is dropped at once, not retried in a minute.
    registry.set_session(
        &w,
        &s,
        SessionHooks {
            webhooks: vec![good.clone(), gone.clone()],
            metadata: json!({}),
        },
    );
    wait_for("the removed target's backlog to be dropped", || async {
        store.outbox_backlog().await.unwrap() == 0
    })
    .await;
    let d = store.delivery(&ids[0], "stuck").await.unwrap().unwrap();
    assert_eq!(d.state, wafleet::store::DeliveryState::Dropped);
    assert_eq!(
        store.event(&ids[1]).await.unwrap().unwrap().state,
        OutboxState::Dead,
        "delivered to good, dead at gone"
    );
    // A target added later gets the events from then on, not the old ones.
    let late = target("late", "ok", "late-secret");
    registry.set_session(
        &w,
        &s,
        SessionHooks {
            webhooks: vec![good, late],
            metadata: json!({}),
        },
    );
    let env = emitter
        .emit(&w, &s, events::MESSAGE, json!({"n": 9}), 2_000)
        .await
        .unwrap();
    wait_for("the new event at both targets", || async {
        hits_of("ok").iter().filter(|h| h.id == env.id).count() == 2
    })
    .await;
    assert_eq!(hits_of("ok").len(), 6, "4 old + the new one twice");
    assert!(store.delivery(&ids[0], "late").await.unwrap().is_none());

    stop.cancel();
    task.await.unwrap().unwrap();
    shutdown.cancel();
}
