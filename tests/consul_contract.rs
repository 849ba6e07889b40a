//! Contract suite of the Consul client: Consul's semantics as seen through `wafleet::consul`,
//! run against the built-in agent (in-process, loopback, port 0) and, when
//! `CONSUL_HTTP_ADDR_REAL` names a real Consul, against that one too (same tests, unique key
//! prefixes and service names; fault and short-TTL tests run only against the built-in agent,
//! which offers fault injection and a configurable TTL minimum).

use std::time::Duration;

use wafleet::consul::registration::Registration;
use wafleet::consul::session::{self, FenceReason, SessionConfig, SessionKeeper};
use wafleet::consul::watch::{WatchOptions, WatchState, watch_health, watch_key, watch_prefix};
use wafleet::consul::*;
use wafleet::consul_dev::{AgentConfig, RunningAgent};
use wafleet::shutdown::{CancellationToken, TaskTracker};

// === targets ===

struct Target {
    name: &'static str,
    client: Client,
    /// The built-in agent (fault injection available), or None for a real Consul.
    dev: Option<RunningAgent>,
    /// Unique prefix for keys and service names of this run.
    prefix: String,
    cancel: CancellationToken,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn fast_agent() -> AgentConfig {
    AgentConfig {
        session_ttl_min: Duration::from_millis(100),
        ..AgentConfig::default()
    }
}

async fn dev_target_with(cfg: AgentConfig, token: Option<&str>) -> Target {
    let cancel = CancellationToken::new();
    let agent = wafleet::consul_dev::spawn(cfg, cancel.clone())
        .await
        .expect("agent starts");
    let mut config = Config::http(agent.http_addr());
    if let Some(t) = token {
        config = config.with_token(t);
    }
    Target {
        name: "built-in agent",
        client: Client::new(&config).unwrap(),
        dev: Some(agent),
        prefix: format!("t{}", ulid::Ulid::new().to_string().to_lowercase()),
        cancel,
    }
}

async fn dev_target() -> Target {
    dev_target_with(fast_agent(), None).await
}

fn real_target() -> Option<Target> {
    let addr = std::env::var("CONSUL_HTTP_ADDR_REAL")
        .ok()
        .filter(|v| !v.is_empty())?;
    let config = Config::from_lookup(|k| {
        if k == "CONSUL_HTTP_ADDR" {
            Some(addr.clone())
        } else {
            std::env::var(k).ok()
        }
    })
    .expect("CONSUL_HTTP_ADDR_REAL and CONSUL_* are usable");
    Some(Target {
        name: "real Consul",
        client: Client::new(&config).unwrap(),
        dev: None,
        prefix: format!(
            "wafleet-contract-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ),
        cancel: CancellationToken::new(),
    })
}

/// The built-in agent, plus the real Consul when configured.
async fn targets() -> Vec<Target> {
    let mut v = vec![dev_target().await];
    match real_target() {
        Some(t) => v.push(t),
        None => eprintln!("CONSUL_HTTP_ADDR_REAL is not set: the real-Consul run was skipped"),
    }
    v
}

fn fast_watch() -> WatchOptions {
    WatchOptions {
        wait: Duration::from_secs(5),
        limiter_burst: 2,
        limiter_refill: Duration::from_millis(5),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..WatchOptions::default()
    }
}

async fn fault(agent: &RunningAgent, path: &str, body: serde_json::Value) {
    let url = format!("{}/_dev/faults{}", agent.http_url(), path);
    let http = reqwest::Client::new();
    let resp = if path.is_empty() {
        http.delete(&url).send().await
    } else {
        http.post(&url).json(&body).send().await
    };
    let resp = resp.expect("fault request");
    assert!(
        resp.status().is_success(),
        "fault {path}: {}",
        resp.status()
    );
}

/// Polls `cond` until it holds (deadline 20 s).
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn value_of(c: &Client, key: &str) -> Option<Vec<u8>> {
    c.kv_get(key, &QueryOptions::default())
        .await
        .unwrap()
        .0
        .map(|p| p.value_bytes().to_vec())
}

fn plain() -> PutOptions {
    PutOptions::default()
}

fn session_req(name: &str, lock_delay: Duration, behavior: SessionBehavior) -> SessionRequest {
    SessionRequest {
        name: name.into(),
        ttl: None,
        behavior,
        lock_delay: Some(lock_delay),
        node_checks: None,
    }
}

// === KV ===

#[tokio::test]
async fn kv_semantics() {
    for t in targets().await {
        let c = &t.client;
        let p = &t.prefix;
        let q = QueryOptions::default();
        let mut indexes = Vec::new();
        let k = |s: &str| format!("{p}/{s}");

        let (none, m) = c.kv_get(&k("a"), &q).await.unwrap();
        assert!(none.is_none(), "{}", t.name);
        assert!(m.index >= 1, "{}: a 404 carries X-Consul-Index", t.name);
        indexes.push(m.index);

        assert!(c.kv_put(&k("a"), b"1", &plain()).await.unwrap());
        let (a, m) = c.kv_get(&k("a"), &q).await.unwrap();
        let a = a.unwrap();
        assert_eq!(a.value_bytes(), b"1");
        assert_eq!(a.create_index, a.modify_index);
        assert!(
            m.index >= a.modify_index,
            "{}: single-key index is the table index",
            t.name
        );
        indexes.push(m.index);

        // An identical write does not bump ModifyIndex.
        assert!(c.kv_put(&k("a"), b"1", &plain()).await.unwrap());
        let (a2, m) = c.kv_get(&k("a"), &q).await.unwrap();
        assert_eq!(a2.unwrap().modify_index, a.modify_index, "{}", t.name);
        indexes.push(m.index);

        // Empty body → Value null.
        assert!(
            c.kv_put(
                &k("empty"),
                b"",
                &PutOptions {
                    flags: Some(42),
                    ..plain()
                }
            )
            .await
            .unwrap()
        );
        let e = c.kv_get(&k("empty"), &q).await.unwrap().0.unwrap();
        assert_eq!(e.value, None, "{}: empty value is null", t.name);
        assert_eq!(e.flags, 42);

        // Single-key reads and deletes never touch siblings sharing the prefix.
        for s in ["foo", "foo2", "foobar/x", "foo/child"] {
            assert!(c.kv_put(&k(s), s.as_bytes(), &plain()).await.unwrap());
        }
        let (foo, _) = c.kv_get(&k("foo"), &q).await.unwrap();
        assert_eq!(foo.unwrap().key, k("foo"));
        let (greedy, m) = c.kv_list(&k("foo"), &q).await.unwrap();
        let names: Vec<_> = greedy.iter().map(|p| p.key.clone()).collect();
        assert_eq!(
            names,
            vec![k("foo"), k("foo/child"), k("foo2"), k("foobar/x")],
            "{}: recurse is a greedy prefix, sorted",
            t.name
        );
        indexes.push(m.index);
        let (folder, _) = c.kv_list(&k("foo/"), &q).await.unwrap();
        assert_eq!(folder.len(), 1);
        let (keys, _) = c.kv_keys(&format!("{p}/"), Some("/"), &q).await.unwrap();
        assert_eq!(
            keys,
            vec![
                k("a"),
                k("empty"),
                k("foo"),
                k("foo/"),
                k("foo2"),
                k("foobar/")
            ],
            "{}",
            t.name
        );
        let (no_keys, _) = c.kv_keys(&k("nothing-here/"), None, &q).await.unwrap();
        assert!(no_keys.is_empty());

        assert!(
            c.kv_delete(&k("foo"), &DeleteOptions::default())
                .await
                .unwrap()
        );
        assert!(value_of(c, &k("foo")).await.is_none());
        assert!(
            value_of(c, &k("foo2")).await.is_some(),
            "{}: single delete is not a prefix delete",
            t.name
        );
        assert!(value_of(c, &k("foo/child")).await.is_some());

        // CAS.
        assert!(
            !c.kv_put(
                &k("a"),
                b"x",
                &PutOptions {
                    cas: Some(0),
                    ..plain()
                }
            )
            .await
            .unwrap(),
            "{}: cas=0 on existing",
            t.name
        );
        assert!(
            c.kv_put(
                &k("new"),
                b"x",
                &PutOptions {
                    cas: Some(0),
                    ..plain()
                }
            )
            .await
            .unwrap()
        );
        let cur = c.kv_get(&k("a"), &q).await.unwrap().0.unwrap().modify_index;
        assert!(
            !c.kv_put(
                &k("a"),
                b"2",
                &PutOptions {
                    cas: Some(cur + 1000),
                    ..plain()
                }
            )
            .await
            .unwrap()
        );
        assert!(
            c.kv_put(
                &k("a"),
                b"2",
                &PutOptions {
                    cas: Some(cur),
                    ..plain()
                }
            )
            .await
            .unwrap()
        );
        let (a3, m) = c.kv_get(&k("a"), &q).await.unwrap();
        let a3 = a3.unwrap();
        assert!(a3.modify_index > cur);
        assert_eq!(a3.value_bytes(), b"2");
        indexes.push(m.index);
        assert!(
            !c.kv_delete(
                &k("a"),
                &DeleteOptions {
                    cas: Some(cur),
                    ..Default::default()
                }
            )
            .await
            .unwrap()
        );
        assert!(
            c.kv_delete(
                &k("a"),
                &DeleteOptions {
                    cas: Some(a3.modify_index),
                    ..Default::default()
                }
            )
            .await
            .unwrap()
        );
        assert!(
            c.kv_delete(
                &k("never-existed"),
                &DeleteOptions {
                    cas: Some(7),
                    ..Default::default()
                }
            )
            .await
            .unwrap(),
            "{}: CAS delete of a missing key answers true",
            t.name
        );

        // Recursive delete is greedy too; the list index does not go backwards (tombstones).
        let (_, before) = c.kv_list(&k("foo"), &q).await.unwrap();
        assert!(
            c.kv_delete(
                &k("foo"),
                &DeleteOptions {
                    recurse: true,
                    cas: None
                }
            )
            .await
            .unwrap()
        );
        let (gone, after) = c.kv_list(&k("foo"), &q).await.unwrap();
        assert!(gone.is_empty());
        assert!(
            after.index >= before.index,
            "{}: list index after delete {} < {}",
            t.name,
            after.index,
            before.index
        );
        indexes.push(after.index);
        let (_, m) = c.kv_get(&k("zzz"), &q).await.unwrap();
        indexes.push(m.index);
        assert!(
            indexes.windows(2).all(|w| w[0] <= w[1]),
            "{}: indexes {indexes:?}",
            t.name
        );

        // Keys with characters that need encoding round-trip.
        let odd = k("sp ace/q?u#e%ry/ç");
        assert!(c.kv_put(&odd, b"odd", &plain()).await.unwrap());
        assert_eq!(
            value_of(c, &odd).await.as_deref(),
            Some(&b"odd"[..]),
            "{}",
            t.name
        );

        assert!(
            c.kv_delete(
                &format!("{p}/"),
                &DeleteOptions {
                    recurse: true,
                    cas: None
                }
            )
            .await
            .unwrap()
        );
    }
}

#[tokio::test]
async fn bad_parameters_get_consuls_status_and_text() {
    for t in targets().await {
        let http = reqwest::Client::new();
        let base = t
            .client
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let token = std::env::var("CONSUL_HTTP_TOKEN").unwrap_or_default();
        let send = |m: reqwest::Method, path: String| {
            let mut rb = http.request(m, format!("{base}{path}"));
            if t.dev.is_none() && !token.is_empty() {
                rb = rb.header("X-Consul-Token", token.clone());
            }
            rb.send()
        };
        let r = send(
            reqwest::Method::PUT,
            format!("/v1/kv/{}/x?cas=0&acquire=abc", t.prefix),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "{}", t.name);
        assert!(r.text().await.unwrap().contains("Conflicting flags"));
        let r = send(
            reqwest::Method::GET,
            format!("/v1/kv/{}/x?index=1&wait=soon", t.prefix),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "{}", t.name);
        assert!(r.text().await.unwrap().contains("Invalid wait time"));
        let r = send(
            reqwest::Method::GET,
            "/v1/health/service/x?passing=maybe".into(),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "{}", t.name);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Invalid value for ?passing")
        );
        // The client refuses these before sending anything.
        let both = PutOptions {
            cas: Some(0),
            acquire: Some("s".into()),
            ..plain()
        };
        assert!(matches!(
            t.client.kv_put("k", b"", &both).await,
            Err(ConsulError::InvalidRequest(_))
        ));
        assert!(matches!(
            t.client.kv_get("../etc", &QueryOptions::default()).await,
            Err(ConsulError::InvalidKey { .. })
        ));
    }
}

#[tokio::test]
async fn acl_token_is_required_when_configured() {
    let cfg = AgentConfig {
        acl_token: Some("root-token".into()),
        ..fast_agent()
    };
    let with = dev_target_with(cfg.clone(), Some("root-token")).await;
    let agent = with.dev.as_ref().unwrap();
    let without = Client::new(&Config::http(agent.http_addr())).unwrap();
    let wrong = Client::new(&Config::http(agent.http_addr()).with_token("nope")).unwrap();
    assert!(matches!(
        without.kv_get("k", &QueryOptions::default()).await,
        Err(ConsulError::Status { status: 403, .. })
    ));
    assert!(matches!(
        wrong.kv_put("k", b"v", &plain()).await,
        Err(ConsulError::Status { status: 403, .. })
    ));
    assert!(with.client.kv_put("k", b"v", &plain()).await.unwrap());
    assert_eq!(
        value_of(&with.client, "k").await.as_deref(),
        Some(&b"v"[..])
    );
}

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

// === registration and health ===

fn worker_service(t: &Target, shard: u32, port: u16) -> ServiceRegistration {
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

async fn health(c: &Client, name: &str, passing: bool, filter: Option<&str>) -> Vec<HealthEntry> {
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

fn quick_session(name: &str) -> SessionConfig {
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
