//! KV, locks and sessions over HTTP: 404 with index headers, flags and bad parameters, CAS,
//! blocking queries, ACL tokens and injected errors.

use super::*;

#[tokio::test]
async fn missing_key_is_404_with_index_and_leader_headers() {
    let a = Agent::start().await;
    let r = a.get("/v1/kv/wafleet/shardmap").await;
    assert_eq!(r.status(), 404);
    assert!(index_of(&r) >= 1);
    assert_eq!(r.headers()["x-consul-knownleader"], "true");
    assert_eq!(r.headers()["x-consul-lastcontact"], "0");
    assert_eq!(r.text().await.unwrap(), "");
}

#[tokio::test]
async fn kv_put_get_roundtrip_with_flags_and_null_value() {
    let a = Agent::start().await;
    assert_eq!(
        a.put_text("/v1/kv/a/b?flags=42", "test").await,
        (200, "true".into())
    );
    let r = a.get("/v1/kv/a/b").await;
    assert_eq!(r.status(), 200);
    let idx = index_of(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["Key"], "a/b");
    assert_eq!(v[0]["Value"], "dGVzdA==");
    assert_eq!(v[0]["Flags"], 42);
    assert_eq!(v[0]["ModifyIndex"].as_u64(), Some(idx));
    assert!(v[0].get("Session").is_none());
    a.put("/v1/kv/empty", "").await;
    let v: Value = a.get("/v1/kv/empty").await.json().await.unwrap();
    assert!(v[0]["Value"].is_null());
    let raw = a.get("/v1/kv/a/b?raw").await;
    assert_eq!(raw.headers()["content-type"], "text/plain");
    assert_eq!(raw.text().await.unwrap(), "test");
}

#[tokio::test]
async fn presence_flags_count_whatever_their_value() {
    let a = Agent::start().await;
    for k in ["foo", "foo2", "foobar/x", "other"] {
        a.put(&format!("/v1/kv/{k}"), "v").await;
    }
    // `recurse=false` is still a prefix read, as in Consul.
    let v: Value = a
        .get("/v1/kv/foo?recurse=false")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    let keys: Value = a
        .get("/v1/kv/?keys&separator=/")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys, json!(["foo", "foo2", "foobar/", "other"]));
    // And `recurse=false` on DELETE is a subtree delete.
    assert_eq!(
        a.delete("/v1/kv/foo?recurse=false")
            .await
            .text()
            .await
            .unwrap(),
        "true"
    );
    let keys: Value = a.get("/v1/kv/?keys").await.json().await.unwrap();
    assert_eq!(keys, json!(["other"]));
    assert_eq!(a.get("/v1/kv/nothing/?keys").await.status(), 404);
}

#[tokio::test]
async fn conflicting_flags_and_bad_parameters_are_400() {
    let a = Agent::start().await;
    let (s, t) = a.put_text("/v1/kv/k?cas=0&acquire=x", "v").await;
    assert_eq!(s, 400);
    assert_eq!(t, "Conflicting flags: acquire=x&cas=0\n");
    assert_eq!(a.delete("/v1/kv/k?recurse&cas=3").await.status(), 400);
    let r = a.get("/v1/kv/k?index=1&wait=forever").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Invalid wait time");
    // Consul hands strconv's error back as a 500.
    assert_eq!(
        a.put_text("/v1/kv/k?flags=x", "v").await,
        (
            500,
            "strconv.ParseUint: parsing \"x\": invalid syntax".to_string()
        )
    );
    assert_eq!(a.put_text("/v1/kv/k?cas", "v").await.0, 500);
    let r = a.get("/v1/kv/").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Missing key name");
    // reqwest normalises `..` away, so speak HTTP by hand for the traversal case.
    assert_eq!(raw_status(&a, "GET /v1/kv/a/../b").await, 400);
    assert_eq!(raw_status(&a, "GET /v1/kv/a/%2e%2e/b").await, 400);
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"TTL":"10s","Status":"meh"}}"#,
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "Status for checks must 'passing', 'warning', 'critical'"
    );
    assert_eq!(
        a.get("/v1/health/service/x?passing=maybe").await.status(),
        400
    );
    let r = a.put("/v1/session/create", "{not json").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().starts_with("Request decode failed"));
}

#[tokio::test]
async fn cas_rules() {
    let a = Agent::start().await;
    assert_eq!(a.put_text("/v1/kv/m?cas=0", "1").await.1, "true");
    assert_eq!(a.put_text("/v1/kv/m?cas=0", "2").await.1, "false");
    let v: Value = a.get("/v1/kv/m").await.json().await.unwrap();
    let mi = v[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        a.put_text(&format!("/v1/kv/m?cas={}", mi + 100), "3")
            .await
            .1,
        "false"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/m?cas={mi}"), "3").await.1,
        "true"
    );
    assert_eq!(
        a.delete(&format!("/v1/kv/m?cas={mi}"))
            .await
            .text()
            .await
            .unwrap(),
        "false"
    );
    let v: Value = a.get("/v1/kv/m").await.json().await.unwrap();
    let mi = v[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        a.delete(&format!("/v1/kv/m?cas={mi}"))
            .await
            .text()
            .await
            .unwrap(),
        "true"
    );
    assert_eq!(a.get("/v1/kv/m").await.status(), 404);
}

#[tokio::test]
async fn deleting_a_key_advances_the_kv_index() {
    let a = Agent::start().await;
    a.put("/v1/kv/x", "1").await;
    let i1 = index_of(&a.get("/v1/kv/x").await);
    a.delete("/v1/kv/x").await;
    let r = a.get("/v1/kv/x").await;
    assert_eq!(r.status(), 404);
    assert!(index_of(&r) > i1);
}

#[tokio::test]
async fn locks_sessions_and_lock_index() {
    let a = Agent::start().await;
    let s1 = a
        .session(json!({"Name": "one", "TTL": "10s", "LockDelay": "0s"}))
        .await;
    let s2 = a.session(json!({"Name": "two", "LockDelay": 0})).await;
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?acquire={s1}"), "a").await.1,
        "true"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?acquire={s1}"), "b").await.1,
        "true"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?acquire={s2}"), "c").await.1,
        "false"
    );
    let v: Value = a.get("/v1/kv/l").await.json().await.unwrap();
    assert_eq!(v[0]["LockIndex"], 1);
    assert_eq!(v[0]["Session"], s1.as_str());
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?release={s2}"), "").await.1,
        "false"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?release={s1}"), "").await.1,
        "true"
    );
    assert_eq!(
        a.put_text(&format!("/v1/kv/l?acquire={s2}"), "").await.1,
        "true"
    );
    let v: Value = a.get("/v1/kv/l").await.json().await.unwrap();
    assert_eq!(v[0]["LockIndex"], 2);
    let (s, t) = a.put_text("/v1/kv/l?acquire=nope", "").await;
    assert_eq!((s, t.as_str()), (500, "invalid session \"nope\""));
    // Session endpoints.
    let info: Value = a
        .get(&format!("/v1/session/info/{s1}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info[0]["TTL"], "10s");
    assert_eq!(info[0]["LockDelay"], 0);
    assert_eq!(info[0]["Behavior"], "release");
    let r = a.put("/v1/session/renew/unknown", "").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "Session id 'unknown' not found");
    let renewed: Value = a
        .put(&format!("/v1/session/renew/{s1}"), "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renewed[0]["ID"], s1.as_str());
    let list: Value = a.get("/v1/session/list").await.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(
        a.put_text(&format!("/v1/session/destroy/{s2}"), "").await.1,
        "true"
    );
    let v: Value = a.get("/v1/kv/l").await.json().await.unwrap();
    assert!(v[0].get("Session").is_none());
    let empty: Value = a
        .get(&format!("/v1/session/info/{s2}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty, json!([]));
    // TTL validation.
    let r = a.put("/v1/session/create", r#"{"TTL":"5s"}"#).await;
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap().starts_with("Invalid Session TTL"));
}

#[tokio::test]
async fn blocking_query_returns_on_change() {
    let a = Agent::start().await;
    let r = a.get("/v1/kv/watched").await;
    let idx = index_of(&r);
    let url = a.url(&format!("/v1/kv/watched?index={idx}&wait=30s"));
    let client = a.http.clone();
    let waiter = tokio::spawn(async move { client.get(url).send().await });
    wait_parked(&a, 1).await;
    assert!(
        !waiter.is_finished(),
        "nothing changed: the query must still block"
    );
    // An unrelated change elsewhere in KV moves the table index: Consul wakes the single-key
    // watch too (its index is the whole table's), so write the watched key itself.
    a.put("/v1/kv/watched", "now").await;
    let r = waiter.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert!(index_of(&r) > idx);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["Value"], "bm93");
}

#[tokio::test]
async fn blocking_query_times_out_at_wait_with_the_same_index() {
    let a = Agent::start().await;
    a.put("/v1/kv/still", "x").await;
    let idx = index_of(&a.get("/v1/kv/still").await);
    let r = a.get(&format!("/v1/kv/still?index={idx}&wait=100ms")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(index_of(&r), idx);
}

#[tokio::test]
async fn acl_token_is_required_when_configured() {
    let a = Agent::with(AgentConfig {
        acl_token: Some("s3cret".into()),
        ..AgentConfig::default()
    })
    .await;
    let r = a.get("/v1/kv/x").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), "Permission denied");
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .header("X-Consul-Token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), "ACL not found");
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .header("X-Consul-Token", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(a.get("/v1/kv/x?token=s3cret").await.status(), 404);
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn injected_errors_then_recovery() {
    let a = Agent::start().await;
    assert_eq!(
        a.post("/_dev/faults/errors", json!({"status": 429, "count": 2}))
            .await
            .status(),
        200
    );
    assert_eq!(a.get("/v1/kv/x").await.status(), 429);
    assert_eq!(a.get("/v1/kv/x").await.status(), 429);
    assert_eq!(a.get("/v1/kv/x").await.status(), 404);
}
