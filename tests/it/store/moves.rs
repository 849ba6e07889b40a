//! Session status with its event, a workspace moved between shard stores whole and in order, and a
//! single-webhook database upgraded to per-target deliveries.

use super::*;

#[tokio::test]
async fn session_status_and_its_event_commit_together_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = Store::open(&path).await.unwrap();
    let ev = event("w", "s", events::SESSION_STATUS);
    assert_eq!(
        store
            .set_session_status(&ws("w"), &sid("s"), "STARTING", Some(&ev), 1)
            .await
            .unwrap(),
        None
    );
    // A duplicate event id fails the transaction: the status stays STARTING.
    assert!(
        store
            .set_session_status(&ws("w"), &sid("s"), "WORKING", Some(&ev), 2)
            .await
            .is_err()
    );
    let states = store.session_states().await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].status, "STARTING");
    let ev2 = event("w", "s", events::SESSION_STATUS);
    assert_eq!(
        store
            .set_session_status(&ws("w"), &sid("s"), "WORKING", Some(&ev2), 3)
            .await
            .unwrap()
            .as_deref(),
        Some("STARTING")
    );
    store.close().await;
    let store = Store::open(&path).await.unwrap();
    let states = store.session_states().await.unwrap();
    assert_eq!(
        (states[0].status.as_str(), states[0].updated_at),
        ("WORKING", 3)
    );
    assert_eq!(outbox_count(&store, "w", "s").await, 2);
    store
        .forget_session_state(&ws("w"), &sid("s"))
        .await
        .unwrap();
    assert!(store.session_states().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_workspace_moves_between_shard_stores_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let old = Store::open_shard(dir.path(), 0).await.unwrap();
    let new = Store::open_shard(dir.path(), 1).await.unwrap();
    // The old owner: a sent message, three queued (one of them claimed: in flight), an
    // idempotency record, a delivered and a pending event, a session state; and another
    // workspace that stays.
    enqueue(&old, &msg("m0", "w", "s", "sent"), 1)
        .await
        .unwrap();
    old.update_message_status("m0", MessageStatus::Sent, None, Some("wa0"), 2, |_| None)
        .await
        .unwrap();
    for (i, id) in ["m1", "m2", "m3"].into_iter().enumerate() {
        enqueue(&old, &msg(id, "w", "s", "queued"), 3 + i as u64)
            .await
            .unwrap();
    }
    old.claim_queued("m1", 10).await.unwrap();
    enqueue(&old, &msg("x1", "other", "s", "stays"), 4)
        .await
        .unwrap();
    let key = IdempotencyKey {
        workspace: ws("w"),
        key: "k1".into(),
        request_hash: "h".into(),
        expires_at: u64::MAX / 2,
    };
    let resp = StoredResponse {
        status: 202,
        body: vec![0, 159, 146, 150, b'{'],
    };
    old.idempotency_put_if_absent(&key, &resp, 5).await.unwrap();
    let delivered = event("w", "s", events::MESSAGE_SENT);
    let pending = event("w", "s", events::SESSION_STATUS);
    old.record_event(&delivered, 6).await.unwrap();
    old.record_event(&pending, 7).await.unwrap();
    // Delivered to target a, still retrying at target b: both move with the workspace.
    old.outbox_fan_out(&delivered.id, &["a".into(), "b".into()], 8)
        .await
        .unwrap();
    old.delivery_delivered(&delivered.id, "a", 200, 8)
        .await
        .unwrap();
    old.delivery_retry(&delivered.id, "b", Some(503), "answer 503", 50)
        .await
        .unwrap();
    old.set_session_status(&ws("w"), &sid("s"), "WORKING", None, 9)
        .await
        .unwrap();

    // The new owner holds stale rows of the workspace (a crash remnant): they are replaced.
    enqueue(&new, &msg("stale", "w", "s", "old copy"), 1)
        .await
        .unwrap();

    let record = old.export_workspace(&ws("w")).await.unwrap();
    assert_eq!(record.messages.len(), 4);
    assert_eq!(record.queued(), 3);
    assert_eq!(record.claimed(), ["m1"]);
    assert_eq!(record.pending_events(), 2);
    assert_eq!(record.deliveries.len(), 2);
    // Through JSON, as it travels in the handoff file.
    let record: wafleet::store::WorkspaceRecord =
        serde_json::from_slice(&serde_json::to_vec(&record).unwrap()).unwrap();
    old.forget_workspace(&ws("w")).await.unwrap();
    assert!(old.message("m2").await.unwrap().is_none());
    assert!(old.idempotency_lookup(&key, 11).await.unwrap().is_none());
    assert_eq!(outbox_count(&old, "w", "s").await, 0);
    assert!(
        old.message("x1").await.unwrap().is_some(),
        "other workspaces stay"
    );

    new.import_workspace(&record).await.unwrap();
    assert!(new.message("stale").await.unwrap().is_none());
    let sent = new.message("m0").await.unwrap().unwrap();
    assert_eq!(sent.status, MessageStatus::Sent);
    assert_eq!(
        new.message_by_wa_id(&ws("w"), &sid("s"), "wa0")
            .await
            .unwrap()
            .map(|m| m.id),
        Some("m0".into()),
        "acks of a message the old owner sent find it"
    );
    assert_eq!(new.idempotency_lookup(&key, 11).await.unwrap(), Some(resp));
    assert_eq!(new.interrupted_sends().await.unwrap(), ["m1"]);
    let mut order = Vec::new();
    while let Some(head) = new.queue_head(&ws("w"), &sid("s")).await.unwrap() {
        order.push(head.message.id.clone());
        new.update_message_status(
            &head.message.id,
            MessageStatus::Failed,
            Some("t"),
            None,
            20,
            |_| None,
        )
        .await
        .unwrap();
    }
    assert_eq!(order, ["m1", "m2", "m3"], "FIFO order is kept");
    let events = new
        .events_after(&ws("w"), &sid("s"), None, 100)
        .await
        .unwrap();
    let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, [delivered.id.clone(), pending.id.clone()]);
    assert_eq!(
        new.outbox_backlog().await.unwrap(),
        2,
        "the unexpanded event and the delivery to b"
    );
    let moved = new.deliveries_of(&delivered.id).await.unwrap();
    assert_eq!(moved.len(), 2);
    assert_eq!(
        (moved[0].target.as_str(), moved[0].state),
        ("a", wafleet::store::DeliveryState::Delivered)
    );
    assert_eq!(
        (
            moved[1].target.as_str(),
            moved[1].attempts,
            moved[1].next_attempt_at
        ),
        ("b", 1, 50),
        "attempts and schedule move too"
    );
    assert_eq!(new.outbox_unfanned(10).await.unwrap().len(), 1);
    let states = new.session_states().await.unwrap();
    assert!(
        states
            .iter()
            .any(|s| s.session.as_str() == "s" && s.status == "WORKING")
    );

    // Importing the same record again is harmless (a crash before the file was removed).
    new.import_workspace(&record).await.unwrap();
    assert_eq!(new.deliveries_of(&delivered.id).await.unwrap().len(), 2);

    // A record of a worker before per-target delivery: its pending event goes to the
    // session's first target (""), its delivered one stays delivered.
    let mut legacy = serde_json::to_value(&record).unwrap();
    legacy.as_object_mut().unwrap().remove("deliveries");
    for row in legacy["outbox"].as_array_mut().unwrap() {
        row.as_object_mut().unwrap().remove("fanned");
    }
    let legacy: wafleet::store::WorkspaceRecord = serde_json::from_value(legacy).unwrap();
    new.import_workspace(&legacy).await.unwrap();
    assert!(new.outbox_unfanned(10).await.unwrap().is_empty());
    let first = new.deliveries_of(&pending.id).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].target, wafleet::store::FIRST_TARGET);
    assert_eq!(
        new.deliveries_of(&delivered.id).await.unwrap().len(),
        1,
        "the pending summary of the old row becomes one delivery to the first target"
    );
    assert_eq!(
        new.message("m2").await.unwrap().unwrap().status,
        MessageStatus::Queued
    );
}

/// A database of the single-webhook schema upgrades: its pending and dead events become
/// deliveries to the session's first target (keeping attempts and schedule), delivered ones
/// stay as they are, and nothing is expanded a second time.
#[tokio::test]
async fn a_single_webhook_database_upgrades_to_per_target_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    // The first schema only, through sqlx's own migrator (same files, same checksums).
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).unwrap();
    let init = "20261128000001_init.sql";
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/store/migrations/20261128000001_init.sql"
        ),
        first.join(init),
    )
    .unwrap();
    {
        use sqlx::sqlite::SqliteConnectOptions;
        let pool = sqlx::SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::migrate::Migrator::new(first.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for (id, state, attempts) in [
            ("evt_pending", "pending", 3),
            ("evt_dead", "dead", 18),
            ("evt_done", "delivered", 1),
        ] {
            sqlx::query(
                "INSERT INTO outbox (id, workspace, session, event, envelope, state, attempts,
                                     next_attempt_at, created_at, last_status)
                 VALUES (?, 'w', 's', 'message', '{}', ?, ?, 77, 1, 503)",
            )
            .bind(id)
            .bind(state)
            .bind(attempts)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let store = Store::open(&path).await.unwrap();
    assert!(store.outbox_unfanned(10).await.unwrap().is_empty());
    let heads = store.delivery_heads(10).await.unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(
        (
            heads[0].event.id.as_str(),
            heads[0].target.as_str(),
            heads[0].attempts,
            heads[0].next_attempt_at
        ),
        ("evt_pending", wafleet::store::FIRST_TARGET, 3, 77)
    );
    let dead = store.dead_letters(&ws("w"), None, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.id, "evt_dead");
    assert_eq!(dead[0].to_api_json()["target"], serde_json::Value::Null);
    assert!(store.deliveries_of("evt_done").await.unwrap().is_empty());
    assert_eq!(
        store.event("evt_done").await.unwrap().unwrap().state,
        OutboxState::Delivered
    );
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);
}
