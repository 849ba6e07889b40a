//! The router's admin routes behind the dashboard, against real processes: the built-in Consul
//! agent, placeholder workers and the `wafleet router` binary (`tests/support`).
//!
//! * `GET /v1/sessions` fans out to every shard: with one shard down the answer is partial
//!   (that shard marked, the others listed), never an error; admin only.
//! * `POST /v1/shards/plan` answers the movement plan and writes nothing (same ModifyIndex);
//!   `PUT /v1/shards` with a stale version is `409` and writes nothing; with the planned one it
//!   writes; pins are set and removed through `PUT`/`DELETE /v1/shards/pins/{ws}`.
//! * `/ui/` is served from the binary with its content types and security headers.
//!
//! The browser test of the dashboard itself is `assets/ui/tests/dashboard.test.mjs`
//! (`scripts/test.d/dashboard`).

use crate::support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Fleet, TOKEN_SECRET, call, http, kv_get, kv_put, put_map, wait_for};
use wafleet::ids::WorkspaceId;
use wafleet::shard::ShardMap;

const LONG: Duration = Duration::from_secs(60);

/// The first workspace named `<prefix>-<i>` that `map` gives to `shard`.
fn workspace_on(map: &ShardMap, shard: u32, prefix: &str) -> String {
    (0..1000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|w| map.owner(&WorkspaceId::new(w).expect("id")) == Some(shard))
        .expect("some workspace lands on the shard")
}

fn workspace_token(ws: &str) -> String {
    let authority =
        wafleet::auth::Authority::new(None, vec![TOKEN_SECRET.to_owned()]).expect("authority");
    authority
        .mint(&WorkspaceId::new(ws).expect("id"))
        .expect("token")
}

/// The stored map and its ModifyIndex.
async fn stored_map(consul: std::net::SocketAddr) -> (ShardMap, u64) {
    let e = kv_get(consul, "wafleet/shardmap").await.expect("map key");
    let value = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        e["Value"].as_str().expect("value"),
    )
    .expect("base64");
    (
        ShardMap::from_json(&value).expect("valid map"),
        e["ModifyIndex"].as_u64().expect("index"),
    )
}

async fn with_token(method: Method, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = http().request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("answer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_list_fans_out_and_marks_a_down_shard_as_partial() {
    let fleet = Fleet::start().await;
    let map = ShardMap::uniform(2);
    put_map(fleet.consul_http(), &map).await;
    let w0 = fleet.worker(0).await;
    let router = fleet.router().await;
    let ws0 = workspace_on(&map, 0, "fan");
    let ws1 = workspace_on(&map, 1, "fan");
    for s in ["main", "second"] {
        let a = w0.create(&ws0, s).await.expect("create");
        assert_eq!(a.status, 201, "{:?}", a.body);
    }
    let url = format!("http://{}/v1/sessions", router.addr);

    // Shard 1 has no worker at all: its sessions are missing, it is marked, the rest is there.
    let a = call(Method::GET, &url, None).await.expect("answer");
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["partial"], true, "{:?}", a.body);
    let shards = a.body["shards"].as_array().expect("shards");
    let down = shards.iter().find(|s| s["id"] == 1).expect("shard 1");
    assert_eq!(down["ok"], false);
    assert!(down["error"].is_string(), "{down}");
    assert_eq!(shards.iter().find(|s| s["id"] == 0).expect("0")["ok"], true);
    let listed: Vec<(String, String)> = a.body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| {
            (
                s["workspace"].as_str().unwrap_or_default().to_owned(),
                s["session"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (ws0.clone(), "main".to_owned()),
            (ws0.clone(), "second".to_owned())
        ]
    );
    // The status the list shows is the session's own.
    let one = w0.list(&ws0).await.expect("list");
    assert_eq!(
        one.body["sessions"][0]["status"],
        a.body["sessions"][0]["status"]
    );

    // Filters, and their validation.
    let status = a.body["sessions"][0]["status"]
        .as_str()
        .expect("status")
        .to_owned();
    let f = call(
        Method::GET,
        &format!("{url}?status={status}&q=SECOND"),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(
        f.body["sessions"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        f.body
    );
    let bad = call(Method::GET, &format!("{url}?status=ASLEEP"), None)
        .await
        .expect("answer");
    assert_eq!(
        (bad.status, bad.body["error"].as_str()),
        (400, Some("invalid_query"))
    );

    // Admin only, on the router and on the worker.
    let token = workspace_token(&ws0);
    for base in [router.addr, w0.addr] {
        let (s, body) = with_token(
            Method::GET,
            &format!("http://{base}/v1/sessions"),
            &token,
            None,
        )
        .await;
        assert_eq!(s, 403, "{base}: {body}");
        let (s, _) = with_token(
            Method::GET,
            &format!("http://{base}/v1/sessions"),
            "nope",
            None,
        )
        .await;
        assert_eq!(s, 401);
    }

    // Shard 1 comes up: the answer becomes complete.
    let w1 = fleet.worker(1).await;
    let a = w1.create(&ws1, "main").await.expect("create");
    assert_eq!(a.status, 201, "{:?}", a.body);
    let full = wait_for("a complete fleet-wide list", LONG, || {
        let url = url.clone();
        async move {
            let a = call(Method::GET, &url, None).await?;
            (a.body["partial"] == false && a.body["sessions"].as_array()?.len() == 3)
                .then_some(a.body)
        }
    })
    .await;
    assert!(
        full["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|s| s["workspace"] == ws1.as_str() && s["shard"] == 1),
        "{full}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_map_changes_are_planned_without_writing_and_applied_with_cas() {
    let fleet = Fleet::start().await;
    let consul = fleet.consul_http();
    let map = ShardMap::uniform(2);
    put_map(consul, &map).await;
    // Workspaces Consul knows (as the CLI sees them: their lock keys).
    for i in 0..60 {
        kv_put(consul, &format!("wafleet/locks/workspaces/known-{i}"), "").await;
    }
    let router = fleet.router().await;
    let base = format!("http://{}", router.addr);
    let (before, index) = stored_map(consul).await;

    // Plan: the moves of adding a shard, and nothing written.
    let plan = call(
        Method::POST,
        &format!("{base}/v1/shards/plan"),
        Some(json!({"count": 3})),
    )
    .await
    .expect("plan");
    assert_eq!(plan.status, 200, "{:?}", plan.body);
    assert_eq!(plan.body["applied"], false);
    assert_eq!(
        (
            plan.body["old_version"].as_u64(),
            plan.body["new_version"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(plan.body["workspaces_considered"], 60);
    let moves = plan.body["moves"].as_array().expect("moves");
    assert!(!moves.is_empty() && moves.len() < 60, "{moves:?}");
    assert!(moves.iter().all(|m| m["to"] == 2), "{moves:?}");
    assert_eq!(
        stored_map(consul).await,
        (before.clone(), index),
        "plan wrote"
    );

    // The CLI's refusals are the API's 400s; a workspace token may not change the map.
    for bad in [
        json!({}),
        json!({"drain": [9]}),
        json!({"count": 2, "bogus": 1}),
    ] {
        let a = call(
            Method::POST,
            &format!("{base}/v1/shards/plan"),
            Some(bad.clone()),
        )
        .await
        .expect("answer");
        assert_eq!(a.status, 400, "{bad}: {:?}", a.body);
        assert!(a.body["error"].is_string() && a.body["message"].is_string());
    }
    let (s, _) = with_token(
        Method::POST,
        &format!("{base}/v1/shards/plan"),
        &workspace_token("known-1"),
        Some(json!({"count": 3})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = with_token(
        Method::PUT,
        &format!("{base}/v1/shards"),
        &workspace_token("known-1"),
        Some(json!({"count": 3, "version": 1})),
    )
    .await;
    assert_eq!(s, 403);

    // Apply with a stale version: 409, nothing written. Without a version: 400.
    let stale = call(
        Method::PUT,
        &format!("{base}/v1/shards"),
        Some(json!({"count": 3, "version": 0})),
    )
    .await
    .expect("answer");
    assert_eq!(
        (stale.status, stale.body["error"].as_str()),
        (409, Some("version_conflict")),
        "{:?}",
        stale.body
    );
    let none = call(
        Method::PUT,
        &format!("{base}/v1/shards"),
        Some(json!({"count": 3})),
    )
    .await
    .expect("answer");
    assert_eq!(none.status, 400);
    assert_eq!(
        stored_map(consul).await,
        (before.clone(), index),
        "refused applies wrote"
    );

    // Apply with the planned version: written, the same moves as planned.
    let applied = call(
        Method::PUT,
        &format!("{base}/v1/shards"),
        Some(json!({"count": 3, "version": 1})),
    )
    .await
    .expect("answer");
    assert_eq!(applied.status, 200, "{:?}", applied.body);
    assert_eq!(applied.body["applied"], true);
    assert_eq!(applied.body["moves"], plan.body["moves"]);
    let (after, index2) = stored_map(consul).await;
    assert_eq!(
        after,
        before
            .edited(&[wafleet::shard::Edit::Count(3)])
            .expect("edit")
    );
    assert!(index2 > index);
    // The same apply again is stale now.
    let again = call(
        Method::PUT,
        &format!("{base}/v1/shards"),
        Some(json!({"count": 3, "version": 1})),
    )
    .await
    .expect("answer");
    assert_eq!(again.status, 409);

    // Pin, visible in the router's table; unpin; unpin again is 404.
    let ws = workspace_on(&after, 0, "pinned");
    let pin = call(
        Method::PUT,
        &format!("{base}/v1/shards/pins/{ws}"),
        Some(json!({"shard": 2, "version": 2})),
    )
    .await
    .expect("answer");
    assert_eq!(pin.status, 200, "{:?}", pin.body);
    assert_eq!(
        pin.body["moves"],
        json!([{"workspace": ws, "from": 0, "to": 2}])
    );
    let (pinned, _) = stored_map(consul).await;
    assert_eq!(
        pinned.pins.get(&WorkspaceId::new(&ws).expect("id")),
        Some(&2)
    );
    let route_url = format!("{base}/v1/route/{ws}");
    wait_for("the router sees the pin", LONG, || {
        let u = route_url.clone();
        async move {
            let a = call(Method::GET, &u, None).await?;
            (a.body["pinned"] == true && a.body["shard"] == 2).then_some(())
        }
    })
    .await;
    let stale_pin = call(
        Method::PUT,
        &format!("{base}/v1/shards/pins/{ws}"),
        Some(json!({"shard": 1, "version": 2})),
    )
    .await
    .expect("answer");
    assert_eq!(stale_pin.status, 409);
    let unknown = call(
        Method::PUT,
        &format!("{base}/v1/shards/pins/{ws}"),
        Some(json!({"shard": 7})),
    )
    .await
    .expect("answer");
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    let unpin = call(Method::DELETE, &format!("{base}/v1/shards/pins/{ws}"), None)
        .await
        .expect("answer");
    assert_eq!(unpin.status, 200, "{:?}", unpin.body);
    assert!(stored_map(consul).await.0.pins.is_empty());
    let unpin = call(Method::DELETE, &format!("{base}/v1/shards/pins/{ws}"), None)
        .await
        .expect("answer");
    assert_eq!(
        (unpin.status, unpin.body["error"].as_str()),
        (404, Some("pin_not_found"))
    );
    let bad_id = call(
        Method::DELETE,
        &format!("{base}/v1/shards/pins/a%2Fb"),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(bad_id.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let fleet = Fleet::start().await;
    put_map(fleet.consul_http(), &ShardMap::uniform(1)).await;
    let router = fleet.router().await;
    // Redirects are checked, not followed.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |path: &str| client.get(format!("http://{}{path}", router.addr)).send();

    let r = get("/ui/").await.expect("index");
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    let index = r.text().await.expect("body");
    let js = index
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("script reference")
        .to_owned();
    assert!(js.starts_with("app.js?v="), "{js}");
    let r = get(&format!("/ui/{js}")).await.expect("app.js");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .expect("cc")
            .contains("immutable")
    );
    let etag = r.headers()["etag"].clone();
    let r = client
        .get(format!("http://{}/ui/app.js", router.addr))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(r.status(), 304);
    let r = get("/ui").await.expect("redirect");
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/ui/");
    let r = get("/ui/missing.js").await.expect("missing");
    assert_eq!(r.status(), 404);
    // The page never needs a token itself; the API still does.
    let r = get("/v1/sessions").await.expect("api");
    assert_eq!(r.status(), 401);
}
