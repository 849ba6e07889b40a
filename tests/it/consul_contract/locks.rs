//! Sessions and locks on every target: LockIndex, advisory writes, lock delay, behaviors, blocking
//! queries and wait_until_free.

use super::*;

// === sessions and locks ===

#[tokio::test]
async fn locks_and_sessions() {
    for t in targets().await {
        let c = &t.client;
        let k = |s: &str| format!("{}/locks/{s}", t.prefix);
        let s1 = c
            .session_create(&session_req("s1", Duration::ZERO, SessionBehavior::Release))
            .await
            .unwrap();
        let s2 = c
            .session_create(&session_req("s2", Duration::ZERO, SessionBehavior::Release))
            .await
            .unwrap();

        assert!(session::acquire(c, &k("a"), &s1, b"one").await.unwrap());
        let a = c
            .kv_get(&k("a"), &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap();
        assert_eq!(
            (a.lock_index, a.session.as_deref()),
            (1, Some(s1.as_str())),
            "{}",
            t.name
        );
        assert!(
            session::acquire(c, &k("a"), &s1, b"one-again")
                .await
                .unwrap(),
            "re-acquire by the holder"
        );
        let a = c
            .kv_get(&k("a"), &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap();
        assert_eq!(a.lock_index, 1, "{}: same holder keeps LockIndex", t.name);
        assert_eq!(a.value_bytes(), b"one-again");
        assert!(
            !session::acquire(c, &k("a"), &s2, b"two").await.unwrap(),
            "{}: held by s1",
            t.name
        );
        assert!(
            !session::release(c, &k("a"), &s2).await.unwrap(),
            "only the holder releases"
        );
        assert!(!session::release(c, &k("missing"), &s1).await.unwrap());
        // Locks are advisory: a plain write succeeds and keeps the holder, but (Consul's
        // `kvsSetTxn` takes `LockIndex` from the request, 0 for a plain PUT) resets LockIndex.
        assert!(session::acquire(c, &k("adv"), &s1, b"held").await.unwrap());
        assert!(c.kv_put(&k("adv"), b"plain", &plain()).await.unwrap());
        let adv = c
            .kv_get(&k("adv"), &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap();
        assert_eq!(
            (adv.session.as_deref(), adv.lock_index, adv.value_bytes()),
            (Some(s1.as_str()), 0, &b"plain"[..]),
            "{}",
            t.name
        );
        let before = c
            .kv_get(&k("a"), &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap()
            .modify_index;
        assert!(session::release(c, &k("a"), &s1).await.unwrap());
        let a = c
            .kv_get(&k("a"), &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap();
        assert_eq!(
            (a.lock_index, a.session.as_deref()),
            (1, None),
            "{}",
            t.name
        );
        assert!(a.modify_index > before);
        assert!(session::acquire(c, &k("a"), &s2, b"two").await.unwrap());
        assert_eq!(
            c.kv_get(&k("a"), &QueryOptions::default())
                .await
                .unwrap()
                .0
                .unwrap()
                .lock_index,
            2
        );

        // Unknown session: an RPC error (500).
        let unknown = "00000000-0000-0000-0000-00000000dead";
        match session::acquire(c, &k("b"), unknown, b"").await {
            Err(ConsulError::Status { status: 500, body }) => {
                assert!(body.contains("invalid session"), "{}: {body}", t.name)
            }
            other => panic!("{}: {other:?}", t.name),
        }

        // Lock delay: after invalidation of a holder with a lock delay, nobody can acquire.
        let s3 = c
            .session_create(&session_req(
                "s3",
                Duration::from_secs(30),
                SessionBehavior::Release,
            ))
            .await
            .unwrap();
        assert!(session::acquire(c, &k("delayed"), &s3, b"x").await.unwrap());
        assert!(c.session_destroy(&s3).await.unwrap());
        let d = c
            .kv_get(&k("delayed"), &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap();
        assert_eq!(
            d.session, None,
            "{}: destroy releases (behavior release)",
            t.name
        );
        assert!(
            !session::acquire(c, &k("delayed"), &s2, b"y").await.unwrap(),
            "{}: lock delay",
            t.name
        );
        // Without a lock delay the key is free at once.
        let s4 = c
            .session_create(&session_req("s4", Duration::ZERO, SessionBehavior::Release))
            .await
            .unwrap();
        assert!(session::acquire(c, &k("free"), &s4, b"x").await.unwrap());
        assert!(c.session_destroy(&s4).await.unwrap());
        assert!(
            session::acquire(c, &k("free"), &s2, b"y").await.unwrap(),
            "{}",
            t.name
        );

        // Behavior delete: held keys are deleted.
        let s5 = c
            .session_create(&session_req("s5", Duration::ZERO, SessionBehavior::Delete))
            .await
            .unwrap();
        assert!(
            session::acquire(c, &k("ephemeral"), &s5, b"x")
                .await
                .unwrap()
        );
        assert!(c.session_destroy(&s5).await.unwrap());
        assert!(value_of(c, &k("ephemeral")).await.is_none(), "{}", t.name);

        // Info, renew, destroy.
        let (info, _) = c.session_info(&s1, &QueryOptions::default()).await.unwrap();
        let info = info.unwrap();
        assert_eq!(
            (info.name.as_str(), info.lock_delay, info.behavior),
            ("s1", Duration::ZERO, SessionBehavior::Release)
        );
        let (info, _) = c.session_info(&s5, &QueryOptions::default()).await.unwrap();
        assert!(info.is_none());
        assert!(matches!(
            c.session_renew(&s5).await,
            Err(ConsulError::SessionNotFound(_))
        ));
        assert!(c.session_renew(&s1).await.is_ok());
        for s in [&s1, &s2] {
            assert!(c.session_destroy(s).await.unwrap());
        }
        assert!(
            c.session_destroy(&s1).await.unwrap(),
            "destroy is idempotent"
        );
        c.kv_delete(
            &format!("{}/", t.prefix),
            &DeleteOptions {
                recurse: true,
                cas: None,
            },
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn blocking_queries_and_wait_until_free() {
    for t in targets().await {
        let c = &t.client;
        let key = format!("{}/block/k", t.prefix);
        // A watch on a key that does not exist yet.
        let cancel = CancellationToken::new();
        let mut rx = watch_key(c, &key, fast_watch(), cancel.clone()).unwrap();
        within(
            "first load",
            rx.wait_for(|s| matches!(s, WatchState::Ready { value: None, .. })),
        )
        .await
        .unwrap();
        assert!(c.kv_put(&key, b"v1", &plain()).await.unwrap());
        within(
            "value published",
            rx.wait_for(|s| matches!(s.value(), Some(Some(p)) if p.value_bytes() == b"v1")),
        )
        .await
        .unwrap();

        // A prefix watch publishes whole lists.
        let mut pw = watch_prefix(
            c,
            &format!("{}/block/", t.prefix),
            fast_watch(),
            cancel.clone(),
        )
        .unwrap();
        within(
            "prefix watch",
            pw.wait_for(|s| s.value().is_some_and(|v| v.len() == 1)),
        )
        .await
        .unwrap();
        assert!(
            c.kv_put(&format!("{}/block/k2", t.prefix), b"x", &plain())
                .await
                .unwrap()
        );
        within(
            "prefix watch sees the new key",
            pw.wait_for(|s| s.value().is_some_and(|v| v.len() == 2)),
        )
        .await
        .unwrap();
        assert!(
            c.kv_delete(&format!("{}/block/k2", t.prefix), &DeleteOptions::default())
                .await
                .unwrap()
        );
        within(
            "prefix watch sees the delete",
            pw.wait_for(|s| s.value().is_some_and(|v| v.len() == 1)),
        )
        .await
        .unwrap();

        // A raw blocking read returns after a write with a greater index.
        let (_, m) = c.kv_get(&key, &QueryOptions::default()).await.unwrap();
        let c2 = c.clone();
        let k2 = key.clone();
        let blocked = tokio::spawn(async move {
            c2.kv_get(
                &k2,
                &QueryOptions::blocking(m.index, Duration::from_secs(30)),
            )
            .await
        });
        assert!(c.kv_put(&key, b"v2", &plain()).await.unwrap());
        let (p, m2) = within("blocking read", blocked).await.unwrap().unwrap();
        assert!(m2.index > m.index, "{}", t.name);
        assert_eq!(p.unwrap().value_bytes(), b"v2");
        // A wait that expires returns the unchanged result (not an error).
        let (p, m3) = c
            .kv_get(
                &key,
                &QueryOptions::blocking(m2.index, Duration::from_millis(300)),
            )
            .await
            .unwrap();
        assert_eq!(p.unwrap().value_bytes(), b"v2", "{}", t.name);
        // Unchanged on the built-in agent; a shared real cluster may have written elsewhere.
        assert!(m3.index >= m2.index, "{}", t.name);
        assert!(t.dev.is_none() || m3.index == m2.index, "{}", t.name);
        within(
            "watch follows",
            rx.wait_for(|s| matches!(s.value(), Some(Some(p)) if p.value_bytes() == b"v2")),
        )
        .await
        .unwrap();

        // wait_until_free returns once the holder's session is destroyed.
        let s = c
            .session_create(&session_req(
                "holder",
                Duration::ZERO,
                SessionBehavior::Release,
            ))
            .await
            .unwrap();
        let lock = format!("{}/block/lock", t.prefix);
        assert!(session::acquire(c, &lock, &s, b"h").await.unwrap());
        let (c3, l3, cancel3) = (c.clone(), lock.clone(), cancel.clone());
        let waiter = tokio::spawn(async move {
            session::wait_until_free_with(&c3, &l3, fast_watch(), &cancel3).await
        });
        assert!(c.session_destroy(&s).await.unwrap());
        within("wait_until_free", waiter).await.unwrap().unwrap();
        // Cancellation ends a wait on a held key.
        let s = c
            .session_create(&session_req(
                "holder2",
                Duration::ZERO,
                SessionBehavior::Release,
            ))
            .await
            .unwrap();
        assert!(session::acquire(c, &lock, &s, b"h").await.unwrap());
        let stop = CancellationToken::new();
        let (c4, l4, stop4) = (c.clone(), lock.clone(), stop.clone());
        let waiter = tokio::spawn(async move {
            session::wait_until_free_with(&c4, &l4, fast_watch(), &stop4).await
        });
        stop.cancel();
        assert!(matches!(
            within("cancelled wait", waiter).await.unwrap(),
            Err(ConsulError::Cancelled)
        ));
        // acquire_wait takes the lock once it is released.
        let s2 = c
            .session_create(&session_req(
                "waiter",
                Duration::ZERO,
                SessionBehavior::Release,
            ))
            .await
            .unwrap();
        let (c5, l5, s2c, cancel5) = (c.clone(), lock.clone(), s2.clone(), cancel.clone());
        let acq = tokio::spawn(async move {
            session::acquire_wait(&c5, &l5, &s2c, b"w", fast_watch(), &cancel5).await
        });
        assert!(session::release(c, &lock, &s).await.unwrap());
        within("acquire_wait", acq).await.unwrap().unwrap();
        assert_eq!(
            c.kv_get(&lock, &QueryOptions::default())
                .await
                .unwrap()
                .0
                .unwrap()
                .session
                .as_deref(),
            Some(s2.as_str())
        );
        cancel.cancel();
        for id in [&s, &s2] {
            c.session_destroy(id).await.unwrap();
        }
        c.kv_delete(
            &format!("{}/", t.prefix),
            &DeleteOptions {
                recurse: true,
                cas: None,
            },
        )
        .await
        .unwrap();
    }
}
