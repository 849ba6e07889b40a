//! Registration and health, transactions and the operator CLI, on every target (the built-in agent,
//! and a real Consul when one is configured).

use super::*;

// === registration and health ===

pub(super) fn worker_service(t: &Target, shard: u32, port: u16) -> ServiceRegistration {
    let mut s = ServiceRegistration {
        id: format!("{}-worker-{shard}", t.prefix),
        name: format!("{}-worker", t.prefix),
        port,
        tags: vec![format!("shard-{shard}")],
        ..Default::default()
    };
    s.meta.insert("shard".into(), shard.to_string());
    s.meta.insert("version".into(), "test".into());
    s
}

pub(super) async fn health(
    c: &Client,
    name: &str,
    passing: bool,
    filter: Option<&str>,
) -> Vec<HealthEntry> {
    let hq = HealthQuery {
        passing,
        tags: vec![],
        filter: filter.map(str::to_owned),
    };
    c.health_service(name, &hq, &QueryOptions::default())
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn registration_and_health() {
    for t in targets().await {
        let c = &t.client;
        let tracker = TaskTracker::new();
        let svc = worker_service(&t, 3, 24567);
        let name = svc.name.clone();
        let id = svc.id.clone();
        let mut reg = Registration::new(svc, Duration::from_secs(15));
        reg.pass_every = Some(Duration::from_millis(200));
        let keeper = RegistrationKeeper::start(c, reg, &tracker, t.cancel.child_token())
            .await
            .unwrap();

        let entries = health(c, &name, true, None).await;
        assert_eq!(entries.len(), 1, "{}: passing right after start", t.name);
        let e = &entries[0];
        assert_eq!(e.service.id, id);
        assert!(
            e.socket_addr().is_some(),
            "{}: empty Service.Address falls back to the node's",
            t.name
        );
        assert_eq!(e.socket_addr().unwrap().port(), 24567);
        assert!(
            e.checks.iter().any(|ch| ch.check_id == "serfHealth"),
            "{}: node checks included",
            t.name
        );
        assert!(
            e.checks
                .iter()
                .any(|ch| ch.check_id == format!("{id}:ttl") && ch.status == CheckStatus::Passing)
        );
        assert_eq!(
            health(c, &name, true, Some("Service.Meta.shard == \"3\""))
                .await
                .len(),
            1,
            "{}",
            t.name
        );
        assert_eq!(
            health(c, &name, true, Some("Service.Meta.shard == \"4\""))
                .await
                .len(),
            0,
            "{}",
            t.name
        );
        assert_eq!(
            health(c, &name, true, Some("\"shard-3\" in Service.Tags"))
                .await
                .len(),
            1,
            "{}",
            t.name
        );
        let tagged = HealthQuery {
            passing: false,
            tags: vec!["shard-3".into()],
            filter: None,
        };
        assert_eq!(
            c.health_service(&name, &tagged, &QueryOptions::default())
                .await
                .unwrap()
                .0
                .len(),
            1
        );
        let other_tag = HealthQuery {
            passing: false,
            tags: vec!["shard-9".into()],
            filter: None,
        };
        assert!(
            c.health_service(&name, &other_tag, &QueryOptions::default())
                .await
                .unwrap()
                .0
                .is_empty()
        );
        assert!(c.agent_services().await.unwrap().contains_key(&id));
        assert!(
            health(c, &format!("{}-nope", t.prefix), false, None)
                .await
                .is_empty(),
            "unknown service is []"
        );

        // A passing-only health watch (what the router runs) follows the instance.
        let hw_cancel = CancellationToken::new();
        let passing_only = HealthQuery {
            passing: true,
            tags: vec![],
            filter: None,
        };
        let mut hw = watch_health(c, &name, passing_only, fast_watch(), hw_cancel.clone());
        within(
            "health watch sees the instance",
            hw.wait_for(|s| s.value().is_some_and(|v| v.len() == 1)),
        )
        .await
        .unwrap();

        keeper.set_status(CheckStatus::Warning, Some("draining".into()));
        within(
            "health watch drops a non-passing instance",
            hw.wait_for(|s| s.value().is_some_and(|v| v.is_empty())),
        )
        .await
        .unwrap();
        eventually("warning is not passing", || async {
            health(c, &name, true, None).await.is_empty()
        })
        .await;
        let all = health(c, &name, false, None).await;
        assert_eq!(
            all[0].aggregated_status(),
            CheckStatus::Warning,
            "{}",
            t.name
        );
        keeper.set_status(CheckStatus::Critical, None);
        eventually("critical", || async {
            health(c, &name, false, None)
                .await
                .first()
                .map(|e| e.aggregated_status())
                == Some(CheckStatus::Critical)
        })
        .await;
        keeper.set_status(CheckStatus::Passing, None);
        eventually("passing again", || async {
            health(c, &name, true, None).await.len() == 1
        })
        .await;
        within(
            "health watch sees it passing again",
            hw.wait_for(|s| s.value().is_some_and(|v| v.len() == 1)),
        )
        .await
        .unwrap();
        hw_cancel.cancel();

        keeper.deregister().await.unwrap();
        assert!(!c.agent_services().await.unwrap().contains_key(&id));
        assert!(health(c, &name, false, None).await.is_empty(), "{}", t.name);
        tracker.close();
        within("keeper tasks end", tracker.wait()).await;
    }
}

// === txn ===

#[tokio::test]
async fn transactions() {
    for t in targets().await {
        let c = &t.client;
        let map = format!("{}/shardmap", t.prefix);
        let lock = format!("{}/locks/workspaces/acme", t.prefix);
        assert!(c.kv_put(&map, b"{\"version\":1}", &plain()).await.unwrap());
        let idx = c
            .kv_get(&map, &QueryOptions::default())
            .await
            .unwrap()
            .0
            .unwrap()
            .modify_index;
        let s = c
            .session_create(&session_req(
                "txn",
                Duration::ZERO,
                SessionBehavior::Release,
            ))
            .await
            .unwrap();
        let ops = [
            TxnKvOp::check_index(&map, idx),
            TxnKvOp::cas(&map, "{\"version\":2}", idx),
            TxnKvOp::lock(&lock, "w", &s),
            TxnKvOp::get(&map),
        ];
        match c.txn(&ops).await.unwrap() {
            TxnOutcome::Committed(results) => {
                assert_eq!(results.len(), 4, "{}", t.name);
                assert_eq!(
                    results[3].value_bytes(),
                    b"{\"version\":2}",
                    "{}: get returns the value",
                    t.name
                );
            }
            other => panic!("{}: {other:?}", t.name),
        }
        assert_eq!(
            c.kv_get(&lock, &QueryOptions::default())
                .await
                .unwrap()
                .0
                .unwrap()
                .session
                .as_deref(),
            Some(s.as_str())
        );
        // A stale index rolls the whole transaction back.
        let ops = [
            TxnKvOp::set(format!("{}/side", t.prefix), "x"),
            TxnKvOp::cas(&map, "{\"version\":3}", idx),
        ];
        match c.txn(&ops).await.unwrap() {
            TxnOutcome::RolledBack(errors) => assert_eq!(errors[0].op_index, 1, "{}", t.name),
            other => panic!("{}: {other:?}", t.name),
        }
        assert!(
            value_of(c, &format!("{}/side", t.prefix)).await.is_none(),
            "{}: nothing applied",
            t.name
        );
        c.session_destroy(&s).await.unwrap();
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

// === the operator CLI ===

#[tokio::test]
async fn operator_cli() {
    for t in targets().await {
        let c = &t.client;
        let key = format!("{}/cli/k", t.prefix);
        let run = |argv: Vec<String>| {
            let c = c.clone();
            async move {
                let mut out = Vec::new();
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let r = wafleet::consul::cli::run_for_test(&c, &argv, &mut out).await;
                (r, String::from_utf8(out).unwrap())
            }
        };
        let (r, out) = run(vec![
            "kv".into(),
            "put".into(),
            key.clone(),
            "hello".into(),
            "--cas".into(),
            "0".into(),
        ])
        .await;
        r.unwrap();
        assert!(out.contains("Success"));
        let (r, _) = run(vec![
            "kv".into(),
            "put".into(),
            key.clone(),
            "again".into(),
            "--cas".into(),
            "0".into(),
        ])
        .await;
        assert!(matches!(r, Err(ConsulError::Rejected(_))), "{}", t.name);
        let (r, out) = run(vec!["kv".into(), "get".into(), key.clone()]).await;
        r.unwrap();
        assert_eq!(out, "hello\n");
        let (r, out) = run(vec![
            "kv".into(),
            "get".into(),
            format!("{}/cli/", t.prefix),
            "--recurse".into(),
        ])
        .await;
        r.unwrap();
        assert_eq!(out, format!("{key}:hello\n"));
        let (r, _) = run(vec![
            "kv".into(),
            "delete".into(),
            format!("{}/cli/", t.prefix),
            "--recurse".into(),
        ])
        .await;
        r.unwrap();
        let (r, _) = run(vec!["kv".into(), "get".into(), key.clone()]).await;
        assert!(matches!(r, Err(ConsulError::NotFound(_))));
        let (r, _) = run(vec!["kv".into(), "get".into(), "/etc/passwd".into()]).await;
        assert!(matches!(r, Err(ConsulError::InvalidKey { .. })));
        let svc = worker_service(&t, 1, 4001);
        c.agent_service_register(&svc).await.unwrap();
        let (r, out) = run(vec!["services".into()]).await;
        r.unwrap();
        assert!(
            out.lines()
                .any(|l| l.starts_with(&svc.id) && l.contains(":4001") && l.contains("shard-1")),
            "{}: {out}",
            t.name
        );
        c.agent_service_deregister(&svc.id).await.unwrap();
    }
}
