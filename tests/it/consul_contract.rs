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

mod faults;

mod health;
use health::{health, worker_service};

mod locks;

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
