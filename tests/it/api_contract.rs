//! The HTTP contract: `docs/openapi.yaml` against the code, both ways.
//!
//! * every operation in the OpenAPI document is in [`ROUTES`] and every entry of [`ROUTES`] is
//!   documented (the list the worker filters are written against);
//! * every documented operation answers on a real worker and through a real router (consul-dev,
//!   worker, router as child processes) with something other than the "no such route" 404 or a
//!   405, with the JSON error body on errors and `X-Wafleet-Shard` on every worker answer;
//! * an undocumented path does get the "no such route" 404 (so the check above can fail).
//!
//! The document is written in the JSON subset of YAML, so it is parsed here with serde_json
//! after its leading `#` comment lines (no YAML crate needed); `scripts/test` may also check it
//! with a YAML parser.

use crate::support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{ADMIN_TOKEN, Fleet, http, put_map};
use wafleet::worker::messaging::routes::ROUTES;

fn openapi() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
        .expect("docs/openapi.yaml");
    let json: String = text
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).expect("openapi.yaml is JSON-compatible YAML")
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn openapi_document_is_well_formed_and_matches_routes() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = documented(&doc);
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(ROUTES.len(), routes.len(), "ROUTES has duplicates");
    let undocumented: Vec<_> = routes.difference(&ops).collect();
    let unrouted: Vec<_> = ops.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not in ROUTES: {unrouted:?}"
    );
    // Every $ref resolves, every operation has an id and responses.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/").skip(1) {
        let pointer = format!("/{}", r.split('"').next().unwrap_or_default());
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }
    let mut ids = BTreeSet::new();
    for (m, p) in &ops {
        let op = &doc["paths"][p][m.to_lowercase()];
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{m} {p}: operationId"));
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{m} {p}: responses"
        );
    }
    // The JSON error body is a documented schema.
    assert_eq!(
        doc["components"]["schemas"]["Error"]["required"],
        serde_json::json!(["error", "message"])
    );
}

/// A real YAML parser (PyYAML, when python3 has it) reads the same document as serde_json.
#[test]
fn openapi_is_valid_yaml_too() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            path,
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let via_yaml: Value = serde_json::from_slice(&o.stdout).expect("PyYAML output");
            assert_eq!(via_yaml, openapi());
        }
        // python3 or PyYAML missing: the JSON-subset parse in the other tests still holds.
        _ => eprintln!("python3 with PyYAML not available; YAML cross-check skipped"),
    }
}

/// Fills a path template with values that exist (or are at least well-formed).
fn concrete(path: &str) -> String {
    let id = if path.contains("/dead/") {
        "evt_01JD8X3V7Q2W9K4M6N8P0R2T4V"
    } else {
        "msg_01JD8X3V7Q2W9K4M6N8P0R2T4V"
    };
    path.replace("{ws}", "contract-ws")
        .replace("{s}", "main")
        .replace("{id}", id)
        .replace("{phone}", "4915550009")
        .replace("{lid}", "123456789012345@lid")
        .replace("{chat}", "4915550009@c.us")
        .replace("{group}", "4915550009-1700000000@g.us")
}

struct Seen {
    status: u16,
    shard: bool,
    body: Value,
    ctype: String,
}

async fn hit(base: &str, method: &str, path: &str) -> Seen {
    let url = format!("http://{base}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http()
        .request(method.clone(), &url)
        .bearer_auth(ADMIN_TOKEN);
    if method == reqwest::Method::POST || method == reqwest::Method::PATCH {
        req = req.json(&serde_json::json!({}));
    }
    if path.ends_with("/events") {
        // Only the head matters; the stream stays open.
        req = req.header("accept", "text/event-stream");
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let shard = resp.headers().contains_key("x-wafleet-shard");
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = if ctype.starts_with("application/json") {
        resp.json().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    Seen {
        status,
        shard,
        body,
        ctype,
    }
}

fn route_missing(s: &Seen) -> bool {
    (s.status == 404 && s.body["message"] == "no such route") || s.status == 405
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_on_worker_and_router() {
    let fleet = Fleet::start().await;
    put_map(fleet.consul_http(), &wafleet::shard::ShardMap::uniform(1)).await;
    let worker = fleet.worker(0).await;
    let router = fleet.router().await;
    let created = worker.create("contract-ws", "main").await.expect("create");
    assert_eq!(created.status, 201, "{:?}", created.body);
    let waddr = worker.addr.to_string();
    let raddr = router.addr.to_string();

    // DELETE last: it removes the session the other calls use.
    let mut ops: Vec<_> = ROUTES.to_vec();
    ops.sort_by_key(|(m, _, _)| *m == "DELETE");
    for (method, template, who) in ops {
        let path = concrete(template);
        let mut targets = Vec::new();
        if who != "router" {
            targets.push(("worker", waddr.as_str()));
        }
        if who != "worker" {
            targets.push(("router", raddr.as_str()));
        }
        for (name, base) in targets {
            let seen = hit(base, method, &path).await;
            assert!(
                !route_missing(&seen),
                "{method} {template} on the {name}: route missing ({} {:?})",
                seen.status,
                seen.body
            );
            assert!(
                // 501: the placeholder host has no browser (QR, pairing).
                seen.status < 500 || seen.status == 501 || seen.status == 503,
                "{method} {path} on the {name}: {}",
                seen.status
            );
            if seen.status >= 400 {
                assert!(
                    seen.body["error"].is_string() && seen.body["message"].is_string(),
                    "{method} {path} on the {name}: error body {:?} ({})",
                    seen.body,
                    seen.ctype
                );
            }
            if name == "worker" && template.starts_with("/v1/") {
                assert!(seen.shard, "{method} {path}: no X-Wafleet-Shard");
            }
        }
    }

    // The check can fail: an undocumented route is "no such route" on both.
    for base in [&waddr, &raddr] {
        let seen = hit(base, "GET", "/v1/workspaces/contract-ws/nonsense").await;
        assert!(
            route_missing(&seen),
            "{base}: {} {:?}",
            seen.status,
            seen.body
        );
    }
}
