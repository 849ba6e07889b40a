//! Golden tests: real Consul response bodies (from the API docs and live outputs, plus
//! unknown extra fields, `null` lists, an empty `Service.Address`, `Value: null`, `LockDelay`
//! in nanoseconds) stored in `tests/data/consul/`, parsed both directly and through the
//! client, served by a scripted HTTP server on loopback that also records what the client
//! sent (presence flags, URL encoding, token header).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wafleet::consul::*;
use warp::Filter;

fn golden(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/consul")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One recorded request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    token: Option<String>,
    body: Vec<u8>,
}

type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// A scripted server: `script` answers each request; every request is recorded.
async fn serve(
    script: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let log = seen.clone();
    let filter = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("x-consul-token"))
        .and(warp::body::bytes())
        .map(
            move |m: warp::http::Method,
                  p: warp::path::FullPath,
                  q: String,
                  token: Option<String>,
                  b: Bytes| {
                let s = Seen {
                    method: m.to_string(),
                    path: p.as_str().to_owned(),
                    query: q,
                    token,
                    body: b.to_vec(),
                };
                log.lock().unwrap().push(s.clone());
                let (status, headers, body) = script(&s);
                let mut r = warp::http::Response::builder().status(status);
                for (k, v) in headers {
                    r = r.header(k, v);
                }
                r.body(body).unwrap()
            },
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(filter).incoming(listener).run());
    (addr, seen)
}

fn meta(index: u64) -> Vec<(&'static str, String)> {
    vec![
        ("X-Consul-Index", index.to_string()),
        ("X-Consul-KnownLeader", "true".into()),
        ("X-Consul-LastContact", "0".into()),
        ("Content-Type", "application/json".into()),
    ]
}

fn script(s: &Seen) -> Answer {
    match (s.method.as_str(), s.path.as_str()) {
        ("GET", "/v1/kv/zip") => (200, meta(200), golden("kv_get_locked.json")),
        ("GET", "/v1/kv/empty") => (200, meta(21), golden("kv_get_null_value.json")),
        ("GET", "/v1/kv/missing") => (404, meta(77), vec![]),
        ("GET", "/v1/kv/secret") => (
            403,
            vec![],
            b"Permission denied: token with AccessorID '00000000' lacks permission 'key:read'"
                .to_vec(),
        ),
        ("GET", "/v1/kv/wafleet/") => (200, meta(50), golden("kv_recurse.json")),
        ("GET", "/v1/kv/web/") => (200, meta(9), golden("kv_keys.json")),
        ("GET", "/v1/kv/nothing/") => (404, meta(3), vec![]),
        ("PUT", p) if p.starts_with("/v1/kv/") => (
            200,
            vec![],
            if s.query.contains("cas=5") {
                b"false".to_vec()
            } else {
                b"true".to_vec()
            },
        ),
        ("DELETE", p) if p.starts_with("/v1/kv/") => (200, vec![], b"true".to_vec()),
        ("PUT", "/v1/session/create") => (200, vec![], golden("session_create.json")),
        ("PUT", "/v1/session/renew/gone") => (404, vec![], b"Session id 'gone' not found".to_vec()),
        ("PUT", p) if p.starts_with("/v1/session/renew/") => {
            (200, meta(77), golden("session_renew_larger_ttl.json"))
        }
        ("GET", "/v1/session/info/unknown") => (200, meta(5), b"[]".to_vec()),
        ("GET", p) if p.starts_with("/v1/session/info/") => {
            (200, meta(1086449), golden("session_info.json"))
        }
        ("GET", "/v1/health/service/redis") => (200, meta(300), golden("health_service.json")),
        ("GET", "/v1/health/service/wafleet-worker") => {
            (200, meta(301), golden("health_service_empty_address.json"))
        }
        ("GET", "/v1/health/service/nope") => {
            (200, meta(302), golden("health_service_unknown.json"))
        }
        ("GET", "/v1/agent/services") => (200, vec![], golden("agent_services.json")),
        ("PUT", "/v1/txn") if String::from_utf8_lossy(&s.body).contains("\"cas\"") => {
            (409, vec![], golden("txn_rolled_back.json"))
        }
        ("PUT", "/v1/txn") => (200, vec![], golden("txn_committed.json")),
        _ => (500, vec![], b"rpc error: unexpected request".to_vec()),
    }
}

async fn client() -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (addr, seen) = serve(script).await;
    (
        Client::new(&Config::http(addr).with_token("golden-token")).unwrap(),
        seen,
    )
}

fn last(seen: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    seen.lock()
        .unwrap()
        .last()
        .cloned()
        .expect("a request was sent")
}

const SID: &str = "adf4238a-882b-9ddc-4a9d-5b6758e4159e";

#[test]
fn raw_bodies_parse_with_the_public_types() {
    let kv: Vec<KvPair> = serde_json::from_slice(&golden("kv_get_locked.json")).unwrap();
    assert_eq!(kv[0].value.as_deref(), Some(&b"test"[..]));
    assert_eq!(
        (kv[0].create_index, kv[0].modify_index, kv[0].lock_index),
        (100, 200, 200)
    );
    assert_eq!(kv[0].session.as_deref(), Some(SID));
    let kv: Vec<KvPair> = serde_json::from_slice(&golden("kv_get_null_value.json")).unwrap();
    assert_eq!(kv[0].value, None, "Value: null");
    assert_eq!(kv[0].value_bytes(), b"");
    assert_eq!(kv[0].session, None);
    let list: Vec<KvPair> = serde_json::from_slice(&golden("kv_recurse.json")).unwrap();
    assert_eq!(list[1].session, None, "empty Session string means unlocked");
    assert_eq!(
        list[1].value,
        Some(vec![]),
        "empty base64 string is an empty value"
    );
    assert_eq!(list[1].flags, 7);

    let s: Vec<SessionInfo> = serde_json::from_slice(&golden("session_info.json")).unwrap();
    assert_eq!(
        s[0].lock_delay,
        Duration::from_secs(15),
        "LockDelay is nanoseconds"
    );
    assert_eq!(s[0].ttl, Some(Duration::from_secs(30)));
    assert_eq!(s[0].behavior, SessionBehavior::Release);
    assert_eq!(s[0].node_checks, vec!["serfHealth".to_string()]);
    let s: Vec<SessionInfo> =
        serde_json::from_slice(&golden("session_renew_larger_ttl.json")).unwrap();
    assert_eq!(
        s[0].ttl,
        Some(Duration::from_secs(60)),
        "Go formats 1 minute as 1m0s"
    );
    assert_eq!(s[0].behavior, SessionBehavior::Delete);
    assert!(s[0].node_checks.is_empty(), "null NodeChecks");

    let h: Vec<HealthEntry> = serde_json::from_slice(&golden("health_service.json")).unwrap();
    assert_eq!(h[0].socket_addr(), Some("10.1.10.12:8000".parse().unwrap()));
    assert_eq!(h[0].checks.len(), 2, "node checks (serfHealth) included");
    assert_eq!(h[0].aggregated_status(), CheckStatus::Passing);
    let h: Vec<HealthEntry> =
        serde_json::from_slice(&golden("health_service_empty_address.json")).unwrap();
    assert_eq!(
        h[0].address(),
        "10.0.0.13",
        "empty Service.Address falls back to Node.Address"
    );
    assert_eq!(h[0].socket_addr(), Some("10.0.0.13:24567".parse().unwrap()));
    assert!(h[0].service.tags.is_empty(), "null Tags");
    assert_eq!(
        h[0].service.meta.get("shard").map(String::as_str),
        Some("3")
    );
    assert_eq!(h[0].aggregated_status(), CheckStatus::Warning);
    assert_eq!(h[1].address(), "10.0.0.99");
    assert_eq!(
        h[1].checks[1].status,
        CheckStatus::Unknown,
        "maintenance is not a status we know"
    );
    assert_eq!(h[1].aggregated_status(), CheckStatus::Critical);

    let svc: AgentServices = serde_json::from_slice(&golden("agent_services.json")).unwrap();
    assert_eq!(svc["redis1"].tags, vec!["primary", "v1"]);
    assert!(svc["wafleet-worker-0"].meta.is_empty());
}

#[tokio::test]
async fn kv_reads_through_the_client() {
    let (c, seen) = client().await;
    let q = QueryOptions::default();
    let (pair, m) = c.kv_get("zip", &q).await.unwrap();
    assert_eq!(pair.unwrap().value_bytes(), b"test");
    assert_eq!(
        m,
        QueryMeta {
            index: 200,
            known_leader: true
        }
    );
    let s = last(&seen);
    assert_eq!(
        s.query, "",
        "a single-key read sends no recurse flag at all"
    );
    assert_eq!(s.token.as_deref(), Some("golden-token"));

    let (pair, _) = c.kv_get("empty", &q).await.unwrap();
    assert_eq!(pair.unwrap().value, None);

    let (none, m) = c
        .kv_get(
            "missing",
            &QueryOptions::blocking(5, Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert!(none.is_none());
    assert_eq!(m.index, 77, "a 404 still carries X-Consul-Index");
    assert_eq!(last(&seen).query, "index=5&wait=2s");

    match c.kv_get("secret", &q).await {
        Err(ConsulError::Status { status: 403, body }) => {
            assert!(body.starts_with("Permission denied"))
        }
        other => panic!("expected 403, got {other:?}"),
    }

    let (list, m) = c.kv_list("wafleet/", &q).await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(m.index, 50);
    assert_eq!(last(&seen).query, "recurse");
    let (keys, _) = c.kv_keys("web/", Some("/"), &q).await.unwrap();
    assert_eq!(keys, vec!["/web/bar", "/web/foo", "/web/subdir/"]);
    assert_eq!(last(&seen).query, "keys&separator=%2F");
    let (empty, m) = c.kv_list("nothing/", &q).await.unwrap();
    assert!(empty.is_empty());
    assert_eq!(m.index, 3);
}

#[tokio::test]
async fn kv_writes_send_presence_flags_and_raw_bodies() {
    let (c, seen) = client().await;
    assert!(
        c.kv_put("a b/c", b"raw \x00 bytes", &PutOptions::default())
            .await
            .unwrap()
    );
    let s = last(&seen);
    assert_eq!(
        (s.method.as_str(), s.path.as_str(), s.query.as_str()),
        ("PUT", "/v1/kv/a%20b/c", "")
    );
    assert_eq!(s.body, b"raw \x00 bytes");
    assert!(
        !c.kv_put(
            "k",
            b"v",
            &PutOptions {
                cas: Some(5),
                ..Default::default()
            }
        )
        .await
        .unwrap()
    );
    assert_eq!(last(&seen).query, "cas=5");
    let opts = PutOptions {
        acquire: Some(SID.into()),
        flags: Some(3),
        ..Default::default()
    };
    assert!(c.kv_put("k", b"v", &opts).await.unwrap());
    assert_eq!(last(&seen).query, format!("acquire={SID}&flags=3"));
    assert!(c.kv_delete("k", &DeleteOptions::default()).await.unwrap());
    assert_eq!(last(&seen).query, "", "never recurse=false");
    assert!(
        c.kv_delete(
            "wafleet/",
            &DeleteOptions {
                recurse: true,
                cas: None
            }
        )
        .await
        .unwrap()
    );
    assert_eq!(last(&seen).query, "recurse");
    assert!(
        c.kv_delete(
            "k",
            &DeleteOptions {
                recurse: false,
                cas: Some(9)
            }
        )
        .await
        .unwrap()
    );
    assert_eq!(last(&seen).query, "cas=9");
}

#[tokio::test]
async fn sessions_through_the_client() {
    let (c, seen) = client().await;
    let req = SessionRequest {
        name: "w".into(),
        ttl: Some(Duration::from_secs(15)),
        behavior: SessionBehavior::Release,
        lock_delay: Some(Duration::from_millis(1500)),
        node_checks: Some(vec![]),
    };
    assert_eq!(c.session_create(&req).await.unwrap(), SID);
    let body: serde_json::Value = serde_json::from_slice(&last(&seen).body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"Name":"w","TTL":"15s","Behavior":"release","LockDelay":"1500ms","NodeChecks":[]})
    );
    let info = c.session_renew(SID).await.unwrap();
    assert_eq!(info.ttl, Some(Duration::from_secs(60)));
    assert!(
        matches!(c.session_renew("gone").await, Err(ConsulError::SessionNotFound(id)) if id == "gone")
    );
    let (info, m) = c.session_info(SID, &QueryOptions::default()).await.unwrap();
    assert_eq!(info.unwrap().lock_delay, Duration::from_secs(15));
    assert_eq!(m.index, 1086449);
    assert!(
        c.session_info("unknown", &QueryOptions::default())
            .await
            .unwrap()
            .0
            .is_none()
    );
}

#[tokio::test]
async fn health_agent_and_txn_through_the_client() {
    let (c, seen) = client().await;
    let hq = HealthQuery {
        passing: true,
        tags: vec!["shard-3".into()],
        filter: Some("Service.Meta.shard == \"3\"".into()),
    };
    let (entries, m) = c
        .health_service("wafleet-worker", &hq, &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(m.index, 301);
    assert_eq!(
        entries[0].socket_addr(),
        Some("10.0.0.13:24567".parse().unwrap())
    );
    assert_eq!(
        last(&seen).query,
        "passing&tag=shard-3&filter=Service.Meta.shard+%3D%3D+%223%22"
    );
    assert!(
        c.health_service("nope", &HealthQuery::default(), &QueryOptions::default())
            .await
            .unwrap()
            .0
            .is_empty()
    );

    let services = c.agent_services().await.unwrap();
    assert_eq!(services.len(), 2);

    match c
        .txn(&[
            TxnKvOp::check_index("wafleet/shardmap", 10),
            TxnKvOp::lock("wafleet/locks/workspaces/acme", "x", SID),
        ])
        .await
        .unwrap()
    {
        TxnOutcome::Committed(results) => {
            assert_eq!(results.len(), 2);
            assert_eq!(results[1].session.as_deref(), Some(SID));
        }
        other => panic!("{other:?}"),
    }
    let sent: serde_json::Value = serde_json::from_slice(&last(&seen).body).unwrap();
    assert_eq!(
        sent[1],
        serde_json::json!({"KV": {"Verb": "lock", "Key": "wafleet/locks/workspaces/acme", "Value": "eA==", "Session": SID}})
    );
    match c
        .txn(&[TxnKvOp::cas("wafleet/shardmap", "{}", 9)])
        .await
        .unwrap()
    {
        TxnOutcome::RolledBack(errors) => {
            assert_eq!(errors[0].op_index, 0);
            assert!(errors[0].what.contains("index is stale"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.txn(&[]).await,
        Err(ConsulError::InvalidRequest(_))
    ));
    let too_many: Vec<_> = (0..65).map(|i| TxnKvOp::get(format!("k{i}"))).collect();
    assert!(matches!(
        c.txn(&too_many).await,
        Err(ConsulError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn agent_registration_and_check_urls() {
    let (c, seen) = client().await;
    // The scripted server answers 500 for these; what matters here is what was sent.
    let _ = c
        .agent_check_pass("wafleet-worker-3:ttl", Some("ok now"))
        .await;
    let s = last(&seen);
    assert_eq!(
        (s.method.as_str(), s.path.as_str(), s.query.as_str()),
        (
            "PUT",
            "/v1/agent/check/pass/wafleet-worker-3:ttl",
            "note=ok+now"
        )
    );
    let mut svc = ServiceRegistration {
        id: "wafleet-worker-3".into(),
        name: "wafleet-worker".into(),
        port: 24567,
        ..Default::default()
    };
    svc.tags.push("shard-3".into());
    svc.meta.insert("shard".into(), "3".into());
    let mut reg = Registration::new(svc, Duration::from_secs(15));
    reg.deregister_critical_after = Some(Duration::from_secs(60));
    reg.http_check = Some((
        "http://10.0.0.13:24567/health".into(),
        Duration::from_secs(5),
        Duration::from_secs(2),
    ));
    let body = serde_json::to_value(reg.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "ID": "wafleet-worker-3", "Name": "wafleet-worker", "Tags": ["shard-3"], "Port": 24567,
            "Meta": {"shard": "3"},
            "Checks": [
                {"CheckID": "wafleet-worker-3:ttl", "Name": "wafleet-worker TTL", "TTL": "15s", "DeregisterCriticalServiceAfter": "60s"},
                {"CheckID": "wafleet-worker-3:http", "Name": "wafleet-worker HTTP", "HTTP": "http://10.0.0.13:24567/health", "Interval": "5s", "Timeout": "2s", "DeregisterCriticalServiceAfter": "60s"}
            ]
        }),
        "empty Address is omitted so Consul uses the node address"
    );
}
