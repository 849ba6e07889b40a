//! The shard store against a real SQLite file: idempotency, the transactional outbox, survival
//! across reopen, FIFO send queues, dead letters and event resume.

use serde_json::json;
use wafleet::ids::{SessionId, WorkspaceId};
use wafleet::store::{
    EnqueueRequest, Enqueued, IdempotencyKey, IdempotencyOutcome, MessageKind, MessageStatus,
    NewMessage, OutboxState, Store, StoreError, StoredResponse, request_hash,
};
use wafleet::webhook::{Envelope, events};

mod moves;

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}
fn sid(s: &str) -> SessionId {
    SessionId::new(s).unwrap()
}

fn msg(id: &str, w: &str, s: &str, text: &str) -> NewMessage {
    NewMessage {
        id: id.into(),
        workspace: ws(w),
        session: sid(s),
        to: "4915112345678".into(),
        kind: MessageKind::Text,
        body: json!({"to": "4915112345678", "text": text}),
    }
}

fn event(w: &str, s: &str, name: &str) -> Envelope {
    Envelope::new(name, &ws(w), &sid(s), 0, 1000, json!({}), json!(null))
}

async fn enqueue(store: &Store, m: &NewMessage, now: u64) -> Result<Enqueued, StoreError> {
    store
        .enqueue_message(EnqueueRequest {
            message: m,
            idempotency: None,
            queue_cap: 100,
            event: None,
            now_ms: now,
        })
        .await
}

async fn outbox_count(store: &Store, w: &str, s: &str) -> usize {
    store
        .events_after(&ws(w), &sid(s), None, 10_000)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn open_creates_the_shard_directory_and_uses_no_wal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_shard(dir.path(), 7).await.unwrap();
    let path = dir.path().join("shards/7/wafleet.db");
    assert!(path.exists());
    enqueue(&store, &msg("m1", "w", "s", "hi"), 1)
        .await
        .unwrap();
    store.close().await;
    // journal_mode=DELETE: no -wal / -shm files next to the database.
    assert!(!dir.path().join("shards/7/wafleet.db-wal").exists());
    assert!(!dir.path().join("shards/7/wafleet.db-shm").exists());
}

#[tokio::test]
async fn idempotency_same_body_replays_different_body_conflicts_expired_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let h1 = request_hash(&[b"POST", b"/v1/workspaces/w/sessions", br#"{"session":"a"}"#]);
    let h2 = request_hash(&[b"POST", b"/v1/workspaces/w/sessions", br#"{"session":"b"}"#]);
    let key = |hash: &str| IdempotencyKey {
        workspace: ws("w"),
        key: "create-1".into(),
        request_hash: hash.into(),
        expires_at: 10_000,
    };
    let first = StoredResponse {
        status: 201,
        body: br#"{"session":"a"}"#.to_vec(),
    };
    let other = StoredResponse {
        status: 201,
        body: b"{}".to_vec(),
    };
    assert_eq!(
        store
            .idempotency_put_if_absent(&key(&h1), &first, 1_000)
            .await
            .unwrap(),
        IdempotencyOutcome::Stored
    );
    // Same key, same request: the first response, not the new one.
    assert_eq!(
        store
            .idempotency_put_if_absent(&key(&h1), &other, 2_000)
            .await
            .unwrap(),
        IdempotencyOutcome::Replay(first.clone())
    );
    assert_eq!(
        store.idempotency_lookup(&key(&h1), 2_000).await.unwrap(),
        Some(first.clone())
    );
    // Same key, different request: conflict.
    assert!(matches!(
        store
            .idempotency_put_if_absent(&key(&h2), &other, 2_000)
            .await,
        Err(StoreError::IdempotencyConflict)
    ));
    // The key is per workspace.
    let mut elsewhere = key(&h2);
    elsewhere.workspace = ws("other");
    assert_eq!(
        store
            .idempotency_put_if_absent(&elsewhere, &other, 2_000)
            .await
            .unwrap(),
        IdempotencyOutcome::Stored
    );
    // Expired: absent, and may be reused with any request.
    assert_eq!(
        store.idempotency_lookup(&key(&h2), 10_000).await.unwrap(),
        None
    );
    let mut renewed = key(&h2);
    renewed.expires_at = 50_000;
    assert_eq!(
        store
            .idempotency_put_if_absent(&renewed, &other, 10_001)
            .await
            .unwrap(),
        IdempotencyOutcome::Stored
    );
    assert_eq!(
        store.idempotency_lookup(&renewed, 10_002).await.unwrap(),
        Some(other.clone())
    );
    // Purge removes expired records only ("other" workspace expired at 10_000).
    assert_eq!(store.purge_expired_idempotency(20_000).await.unwrap(), 1);
    assert_eq!(
        store.idempotency_lookup(&renewed, 20_000).await.unwrap(),
        Some(other)
    );
}

#[tokio::test]
async fn enqueue_with_idempotency_writes_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let key = IdempotencyKey {
        workspace: ws("w"),
        key: "send-1".into(),
        request_hash: request_hash(&[b"body-1"]),
        expires_at: 100_000,
    };
    let resp = StoredResponse {
        status: 202,
        body: br#"{"id":"m1","status":"queued"}"#.to_vec(),
    };
    let req = |m: &'static str| {
        let message = Box::leak(Box::new(msg(m, "w", "s", "hi")));
        EnqueueRequest {
            message,
            idempotency: Some((&key, &resp)),
            queue_cap: 10,
            event: None,
            now_ms: 1,
        }
    };
    assert_eq!(
        store.enqueue_message(req("m1")).await.unwrap(),
        Enqueued::Queued { queue_len: 1 }
    );
    assert_eq!(
        store.enqueue_message(req("m2")).await.unwrap(),
        Enqueued::Replay(resp.clone())
    );
    assert_eq!(store.queue_len(&ws("w"), &sid("s")).await.unwrap(), 1);
    assert!(store.message("m2").await.unwrap().is_none());
    let mut other = key.clone();
    other.request_hash = request_hash(&[b"body-2"]);
    let m3 = msg("m3", "w", "s", "other");
    let r = store
        .enqueue_message(EnqueueRequest {
            message: &m3,
            idempotency: Some((&other, &resp)),
            queue_cap: 10,
            event: None,
            now_ms: 2,
        })
        .await;
    assert!(matches!(r, Err(StoreError::IdempotencyConflict)));
    assert!(store.message("m3").await.unwrap().is_none());
}

#[tokio::test]
async fn status_change_and_outbox_event_commit_or_roll_back_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    enqueue(&store, &msg("m1", "w", "s", "hi"), 1)
        .await
        .unwrap();
    let existing = event("w", "s", events::SESSION_STATUS);
    store.record_event(&existing, 2).await.unwrap();
    assert_eq!(outbox_count(&store, "w", "s").await, 1);

    // The event insert fails (duplicate id): the status change must roll back with it.
    let r = store
        .update_message_status("m1", MessageStatus::Sent, None, Some("wa-1"), 3, |_| {
            Some(existing.clone())
        })
        .await;
    assert!(matches!(r, Err(StoreError::Db(_))), "{r:?}");
    let m = store.message("m1").await.unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Queued);
    assert_eq!(m.wa_id, None);
    assert_eq!(store.queue_len(&ws("w"), &sid("s")).await.unwrap(), 1);
    assert_eq!(outbox_count(&store, "w", "s").await, 1);

    // The same on enqueue: a failing event keeps the message out.
    let m2 = msg("m2", "w", "s", "two");
    let r = store
        .enqueue_message(EnqueueRequest {
            message: &m2,
            idempotency: None,
            queue_cap: 10,
            event: Some(&existing),
            now_ms: 4,
        })
        .await;
    assert!(matches!(r, Err(StoreError::Db(_))));
    assert!(store.message("m2").await.unwrap().is_none());
    assert_eq!(store.queue_len(&ws("w"), &sid("s")).await.unwrap(), 1);

    // And with a fresh event both happen.
    let sent = event("w", "s", events::MESSAGE_SENT);
    let updated = store
        .update_message_status("m1", MessageStatus::Sent, None, Some("wa-1"), 5, |m| {
            assert_eq!(m.status, MessageStatus::Sent);
            Some(sent.clone())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.wa_id.as_deref(), Some("wa-1"));
    assert_eq!(updated.sent_at, Some(5));
    assert_eq!(store.queue_len(&ws("w"), &sid("s")).await.unwrap(), 0);
    let evs = store
        .events_after(&ws("w"), &sid("s"), None, 10)
        .await
        .unwrap();
    assert_eq!(
        evs.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [existing.id.as_str(), sent.id.as_str()]
    );
    assert_eq!(evs[1].envelope, sent.to_json());

    // A transition that is not allowed writes nothing, not even the event.
    let late = event("w", "s", events::MESSAGE_ACK);
    store
        .update_message_status("m1", MessageStatus::Read, None, None, 6, |_| None)
        .await
        .unwrap();
    let none = store
        .update_message_status("m1", MessageStatus::Device, None, None, 7, |_| {
            Some(late.clone())
        })
        .await
        .unwrap();
    assert!(none.is_none());
    assert!(store.event(&late.id).await.unwrap().is_none());
    assert!(matches!(
        store
            .update_message_status("nope", MessageStatus::Sent, None, None, 8, |_| None)
            .await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn queues_are_fifo_per_session_capped_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shards/0/wafleet.db");
    let store = Store::open(&path).await.unwrap();
    // Interleave two sessions.
    for i in 0..5 {
        enqueue(&store, &msg(&format!("a{i}"), "w", "a", "x"), i)
            .await
            .unwrap();
        enqueue(&store, &msg(&format!("b{i}"), "w", "b", "x"), i)
            .await
            .unwrap();
    }
    let cap = store
        .enqueue_message(EnqueueRequest {
            message: &msg("a-over", "w", "a", "x"),
            idempotency: None,
            queue_cap: 5,
            event: None,
            now_ms: 9,
        })
        .await;
    assert!(matches!(cap, Err(StoreError::QueueFull { len: 5, cap: 5 })));
    let ev = event("w", "a", events::SESSION_STATUS);
    store.record_event(&ev, 10).await.unwrap();
    let key = IdempotencyKey {
        workspace: ws("w"),
        key: "k".into(),
        request_hash: "h".into(),
        expires_at: u64::MAX / 2,
    };
    let resp = StoredResponse {
        status: 202,
        body: b"{}".to_vec(),
    };
    store
        .idempotency_put_if_absent(&key, &resp, 10)
        .await
        .unwrap();
    store.close().await;
    drop(store);

    let store = Store::open(&path).await.unwrap();
    assert_eq!(
        store.sessions_with_queue().await.unwrap(),
        [(ws("w"), sid("a")), (ws("w"), sid("b"))]
    );
    for (s, prefix) in [("a", "a"), ("b", "b")] {
        let mut order = Vec::new();
        while let Some(head) = store.queue_head(&ws("w"), &sid(s)).await.unwrap() {
            order.push(head.message.id.clone());
            store
                .update_message_status(
                    &head.message.id,
                    MessageStatus::Sent,
                    None,
                    None,
                    20,
                    |_| None,
                )
                .await
                .unwrap();
        }
        let expected: Vec<String> = (0..5).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(order, expected);
    }
    assert!(store.event(&ev.id).await.unwrap().is_some());
    assert_eq!(
        store.idempotency_lookup(&key, 11).await.unwrap(),
        Some(resp)
    );
}

#[tokio::test]
async fn claims_releases_and_interrupted_sends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    enqueue(&store, &msg("m1", "w", "s", "x"), 1).await.unwrap();
    enqueue(&store, &msg("m2", "w", "s", "y"), 1).await.unwrap();
    store.claim_queued("m1", 2).await.unwrap();
    assert_eq!(store.interrupted_sends().await.unwrap(), ["m1"]);
    store.release_queued("m1", 500, false).await.unwrap();
    let head = store
        .queue_head(&ws("w"), &sid("s"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.message.id, "m1");
    assert_eq!(head.not_before, 500);
    assert_eq!(head.claimed_at, None);
    assert_eq!(head.message.attempts, 1);
    store.claim_queued("m1", 3).await.unwrap();
    store.release_queued("m1", 0, true).await.unwrap();
    let head = store
        .queue_head(&ws("w"), &sid("s"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.message.attempts, 1);
    assert!(store.interrupted_sends().await.unwrap().is_empty());
    // Retention never deletes queued messages, only finished old ones.
    assert_eq!(store.purge_messages(u64::MAX / 2).await.unwrap(), 0);
    store
        .update_message_status("m2", MessageStatus::Failed, Some("x"), None, 10, |_| None)
        .await
        .unwrap();
    assert_eq!(store.purge_messages(10).await.unwrap(), 0);
    assert_eq!(store.purge_messages(11).await.unwrap(), 1);
    assert!(store.message("m2").await.unwrap().is_none());
    assert!(store.message("m1").await.unwrap().is_some());
    assert!(matches!(
        store.claim_queued("unknown", 1).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn outbox_heads_dead_letters_replay_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db.sqlite")).await.unwrap();
    let a: Vec<Envelope> = (0..3).map(|_| event("w", "a", events::MESSAGE)).collect();
    let b: Vec<Envelope> = (0..2).map(|_| event("w", "b", events::MESSAGE)).collect();
    for (x, y) in a.iter().zip(b.iter()) {
        store.record_event(x, 1).await.unwrap();
        store.record_event(y, 1).await.unwrap();
    }
    store.record_event(&a[2], 1).await.unwrap();
    store.record_event(&a[2], 1).await.unwrap_err(); // ids are unique
    assert_eq!(store.outbox_backlog().await.unwrap(), 5, "unexpanded");
    // Expansion in event order: session a to targets t1 and t2, b to t1 only.
    let unfanned = store.outbox_unfanned(10).await.unwrap();
    assert_eq!(unfanned.len(), 5);
    for e in &unfanned {
        let targets: Vec<String> = if e.session.as_str() == "a" {
            vec!["t1".into(), "t2".into()]
        } else {
            vec!["t1".into()]
        };
        store.outbox_fan_out(&e.id, &targets, 1).await.unwrap();
        store.outbox_fan_out(&e.id, &[], 1).await.unwrap(); // twice: a no-op
    }
    assert!(store.outbox_unfanned(10).await.unwrap().is_empty());
    assert_eq!(store.outbox_backlog().await.unwrap(), 8);
    let key = |d: &wafleet::store::Delivery| (d.event.id.clone(), d.target.clone());
    let heads = store.delivery_heads(10).await.unwrap();
    assert_eq!(
        heads.iter().map(key).collect::<Vec<_>>(),
        [
            (a[0].id.clone(), "t1".to_owned()),
            (a[0].id.clone(), "t2".to_owned()),
            (b[0].id.clone(), "t1".to_owned()),
        ],
        "one head per (session, target), oldest first"
    );

    // a's t1 fails for good, t2 retries: each target on its own.
    store
        .delivery_dead(&a[0].id, "t1", Some(422), "non-retryable answer 422", 5)
        .await
        .unwrap();
    store
        .delivery_retry(&a[0].id, "t2", Some(500), "answer 500", 99)
        .await
        .unwrap();
    assert_eq!(
        store.event(&a[0].id).await.unwrap().unwrap().state,
        OutboxState::Pending,
        "pending while a target is"
    );
    let heads = store.delivery_heads(10).await.unwrap();
    assert_eq!(
        heads.iter().map(key).collect::<Vec<_>>(),
        [
            (a[0].id.clone(), "t2".to_owned()),
            (b[0].id.clone(), "t1".to_owned()),
            (a[1].id.clone(), "t1".to_owned()),
        ],
        "t1 of session a moved on; t2 waits behind its retrying head"
    );
    assert_eq!(heads[0].attempts, 1);
    assert_eq!(heads[0].next_attempt_at, 99);
    store
        .delivery_delivered(&a[0].id, "t2", 200, 6)
        .await
        .unwrap();
    let ev = store.event(&a[0].id).await.unwrap().unwrap();
    assert_eq!(ev.state, OutboxState::Dead, "dead at one target");
    store
        .delivery_delivered(&a[1].id, "t1", 200, 6)
        .await
        .unwrap();
    store.delivery_dropped(&a[1].id, "t2").await.unwrap();
    assert_eq!(
        store.event(&a[1].id).await.unwrap().unwrap().state,
        OutboxState::Delivered
    );
    store.delivery_dropped(&a[2].id, "t1").await.unwrap();
    store.delivery_dropped(&a[2].id, "t2").await.unwrap();
    assert_eq!(
        store.event(&a[2].id).await.unwrap().unwrap().state,
        OutboxState::Skipped,
        "no target took it"
    );
    for e in &b {
        store.delivery_delivered(&e.id, "t1", 200, 6).await.unwrap();
    }

    let dead = store.dead_letters(&ws("w"), None, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(key(&dead[0]), (a[0].id.clone(), "t1".to_owned()));
    assert_eq!(dead[0].state, wafleet::store::DeliveryState::Dead);
    assert_eq!(dead[0].last_status, Some(422));
    let api = dead[0].to_api_json();
    assert_eq!(api["envelope"]["id"], a[0].id.as_str());
    assert_eq!(api["target"], "t1");
    assert!(
        store
            .dead_letters(&ws("other"), None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.replay_dead(&ws("other"), &a[0].id, None, 7).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.replay_dead(&ws("w"), &a[0].id, Some("t2"), 7).await,
        Err(StoreError::NotFound)
    ));
    store
        .replay_dead(&ws("w"), &a[0].id, None, 7)
        .await
        .unwrap();
    let replayed = store.event(&a[0].id).await.unwrap().unwrap();
    assert_eq!(replayed.state, OutboxState::Pending);
    let d = store.delivery(&a[0].id, "t1").await.unwrap().unwrap();
    assert_eq!(
        (d.state, d.attempts),
        (wafleet::store::DeliveryState::Pending, 0)
    );
    assert_eq!(
        store.delivery(&a[0].id, "t2").await.unwrap().unwrap().state,
        wafleet::store::DeliveryState::Delivered,
        "only the dead target is re-armed"
    );
    assert!(
        store
            .dead_letters(&ws("w"), None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.replay_dead(&ws("w"), &a[0].id, None, 7).await,
        Err(StoreError::NotFound)
    ));
    store
        .delivery_dead(&a[0].id, "t1", Some(422), "again", 8)
        .await
        .unwrap();

    // Resume after an event; unknown ids fall back to ULID order.
    let after = store
        .events_after(&ws("w"), &sid("a"), Some(&a[0].id), 10)
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [a[1].id.clone(), a[2].id.clone()]
    );
    let unknown = "evt_00000000000000000000000000";
    assert_eq!(
        store
            .events_after(&ws("w"), &sid("a"), Some(unknown), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store.resume_seq(&ws("w"), &sid("a"), None).await.unwrap(),
        store.last_event_seq(&ws("w"), &sid("a")).await.unwrap()
    );
    // Retention keeps pending and dead events (a[0] is dead at t1); delivered and skipped go,
    // with their deliveries.
    assert_eq!(store.purge_outbox(u64::MAX / 2).await.unwrap(), 4);
    assert!(store.event(&a[0].id).await.unwrap().is_some());
    assert!(store.deliveries_of(&a[1].id).await.unwrap().is_empty());
    assert_eq!(store.deliveries_of(&a[0].id).await.unwrap().len(), 2);
}
