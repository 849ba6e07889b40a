//! Contact lookups end to end with real parts (issue 12, item 4): consul-dev, the simulator
//! (whose `WAWebQueryExistsJob` and `WAWebApiContact` follow WhatsApp Web's own modules,
//! docs/wa-surface.md), a worker running a real Chromium session, and the router in front.
//!
//! * `exists` answers true (with the account's wa_id and LID) for a simulated account and false
//!   for an unknown number, and a second call is served from the session's cache: the
//!   simulator's query log shows one query per number;
//! * LID ↔ phone number both ways for a mapping WhatsApp Web learned, `404 lid_not_found` for
//!   one it does not know;
//! * bad input is `400`, a session that is not logged in `409 not_ready`, and the per-session
//!   bucket (configured small through `WAFLEET_EXISTS_BURST` / `WAFLEET_EXISTS_PER_MINUTE`)
//!   answers `429 rate_limited` with `Retry-After` without querying WhatsApp.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Fleet, Proc, Router, free_port, http, put_map, wait_for};

const PHONE: &str = "4915550101";
const PEER: &str = "4915550102";
const STRANGER: &str = "4915550199";
const WS: &str = "contacts-ws";
const S: &str = "main";
const LONG: Duration = Duration::from_secs(120);
/// The worker's bucket for this test: four uncached lookups, then one a minute.
const BURST: usize = 4;

struct Rig {
    sim: Proc,
    worker: Proc,
    router: Router,
    /// Its agent and temporary directory; declared last so it is dropped last.
    _fleet: Fleet,
}

/// (status, headers, body) of a call with the admin token (or none).
async fn call(
    url: &str,
    method: reqwest::Method,
    body: Option<Value>,
    token: bool,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = http().request(method, url);
    if token {
        r = r.bearer_auth(ADMIN_TOKEN);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    call(url, reqwest::Method::GET, None, true).await
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let (st, _, v) = call(url, reqwest::Method::POST, Some(body), true).await;
    (st, v)
}

impl Rig {
    async fn start() -> Rig {
        let fleet = Fleet::start().await;
        put_map(fleet.consul_http(), &wafleet::shard::ShardMap::uniform(1)).await;
        let args = ["sim", "--listen", "127.0.0.1:0"].map(String::from);
        let sim = Proc::spawn("sim", &args, &[], &fleet.logs()).await;
        let wargs = fleet.engine_worker_args(free_port(), sim.addr("http"));
        let mut env = fleet.env();
        env.push(("WAFLEET_EXISTS_BURST".into(), BURST.to_string()));
        env.push(("WAFLEET_EXISTS_PER_MINUTE".into(), "1".into()));
        let mut worker = Proc::start("worker", &wargs, &env, &fleet.logs());
        worker.wait_ready(support::READY_TIMEOUT).await;
        let router = fleet.router().await;
        Rig {
            sim,
            worker,
            router,
            _fleet: fleet,
        }
    }

    fn sim(&self, path: &str) -> String {
        format!("http://{}{path}", self.sim.addr("http"))
    }

    /// A URL of the session, through the router.
    fn session(&self, rest: &str) -> String {
        format!(
            "http://{}/v1/workspaces/{WS}/sessions/{S}{rest}",
            self.router.addr
        )
    }

    async fn status(&self) -> String {
        let (_, _, v) = get(&self.session("")).await;
        v["status"].as_str().unwrap_or_default().to_owned()
    }

    /// The exists queries the simulator saw from the linked phone's page.
    async fn queries(&self) -> Vec<Value> {
        let (st, _, v) = get(&self.sim(&format!("/sim/queries?phone={PHONE}"))).await;
        assert_eq!(st, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }

    async fn queries_for(&self, digits: &str) -> usize {
        self.queries()
            .await
            .iter()
            .filter(|q| q["query"] == digits)
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exists_and_lids_through_the_router_with_cache_and_rate_limit() {
    let mut rig = Rig::start().await;
    let (st, v) = post(
        &format!("http://{}/v1/workspaces/{WS}/sessions", rig.router.addr),
        json!({"session": S}),
    )
    .await;
    assert_eq!(st, 201, "{v}");

    // Not logged in yet: 409, and nothing reaches WhatsApp.
    let qr = wait_for("a QR", LONG, || async {
        let (st, _, v) = get(&rig.session("/qr?format=json")).await;
        (st == 200)
            .then(|| v["value"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    let (st, _, v) = get(&rig.session(&format!("/contacts/{PEER}/exists"))).await;
    assert_eq!((st, v["error"].as_str()), (409, Some("not_ready")), "{v}");
    let (st, _, v) = get(&rig.session(&format!("/lids/pn/{PEER}"))).await;
    assert_eq!((st, v["error"].as_str()), (409, Some("not_ready")), "{v}");

    let (st, v) = post(&rig.sim("/sim/link"), json!({"qr": qr, "phone": PHONE})).await;
    assert!(st < 300, "link: {st} {v}");
    wait_for("session WORKING", LONG, || async {
        (rig.status().await == "WORKING").then_some(())
    })
    .await;

    // PEER has a WhatsApp account; STRANGER has none.
    let (st, v) = post(&rig.sim("/sim/accounts"), json!({"phone": PEER})).await;
    assert_eq!(st, 200, "{v}");
    let peer_lid = v["lid"].as_str().expect("lid").to_owned();
    assert!(peer_lid.ends_with("@lid"), "{peer_lid}");
    assert!(rig.queries().await.is_empty());

    let (st, h, v) = get(&rig.session(&format!("/contacts/+{PEER}/exists"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"exists": true, "wa_id": format!("{PEER}@c.us"), "lid": peer_lid})
    );
    assert_eq!(h["wafleet-cache"], "miss");
    assert!(h.contains_key("x-wafleet-shard"));
    // The second answer comes from the cache: still one query in the simulator's log.
    let (st, h, again) = get(&rig.session(&format!("/contacts/{PEER}/exists"))).await;
    assert_eq!((st, &again), (200, &v));
    assert_eq!(h["wafleet-cache"], "hit");
    assert_eq!(rig.queries_for(PEER).await, 1, "{:?}", rig.queries().await);

    let (st, h, v) = get(&rig.session(&format!("/contacts/{STRANGER}/exists"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"exists": false, "wa_id": null, "lid": null}));
    assert_eq!(h["wafleet-cache"], "miss");
    let (_, h, _) = get(&rig.session(&format!("/contacts/{STRANGER}/exists"))).await;
    assert_eq!(h["wafleet-cache"], "hit", "negative answers are cached too");
    assert_eq!(rig.queries_for(STRANGER).await, 1);

    // LID <-> phone number: the exists query taught WhatsApp Web PEER's pair; the account's own
    // pair it knows from the link.
    let (st, _, v) = get(&rig.session(&format!("/lids/{peer_lid}"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"lid": peer_lid, "pn": format!("{PEER}@c.us")}));
    let encoded = peer_lid.replace('@', "%40");
    let (st, _, v2) = get(&rig.session(&format!("/lids/{encoded}"))).await;
    assert_eq!((st, v2), (200, v));
    let (st, _, v) = get(&rig.session(&format!("/lids/pn/{PEER}"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"pn": format!("{PEER}@c.us"), "lid": peer_lid}));
    let (st, _, v) = get(&rig.session(&format!("/lids/pn/{PHONE}"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["lid"],
        format!("{}@lid", wafleet::sim::state::lid_of(PHONE))
    );
    for unknown in [
        "/lids/999999999999999@lid".to_owned(),
        format!("/lids/pn/{STRANGER}"),
    ] {
        let (st, _, v) = get(&rig.session(&unknown)).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (404, Some("lid_not_found")),
            "{unknown}: {v}"
        );
    }

    // Bad input: 400 with the documented code, nothing asked.
    let before = rig.queries().await.len();
    for (path, code) in [
        ("/contacts/12ab45678/exists", "invalid_phone"),
        ("/contacts/1234/exists", "invalid_phone"),
        ("/lids/pn/49-x", "invalid_phone"),
        ("/lids/12345-678@lid", "invalid_lid"),
        ("/lids/4915550102@c.us", "invalid_lid"),
    ] {
        let (st, _, v) = get(&rig.session(path)).await;
        assert_eq!((st, v["error"].as_str()), (400, Some(code)), "{path}: {v}");
    }
    let (st, _, v) = call(
        &rig.session(&format!("/contacts/{PEER}/exists")),
        reqwest::Method::GET,
        None,
        false,
    )
    .await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(rig.queries().await.len(), before);

    // A WhatsApp server error (ServerStatusCodeError in the page) is 502 and is not cached:
    // the next call asks again.
    let flaky = "4915550188";
    let (st, v) = post(&rig.sim("/sim/faults"), json!({"usync_error": 500})).await;
    assert!(st < 300, "faults: {st} {v}");
    let (st, _, v) = get(&rig.session(&format!("/contacts/{flaky}/exists"))).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (502, Some("whatsapp_error")),
        "{v}"
    );
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains("500")),
        "{v}"
    );
    let (st, v) = post(&rig.sim("/sim/faults"), json!({"usync_error": 0})).await;
    assert!(st < 300, "faults: {st} {v}");
    let (st, h, v) = get(&rig.session(&format!("/contacts/{flaky}/exists"))).await;
    assert_eq!((st, v["exists"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(h["wafleet-cache"], "miss");
    assert_eq!(rig.queries_for(flaky).await, 2);

    // The bucket: every token is spent now (PEER, STRANGER, the flaky number twice); the session
    // is limited. Cached answers are still served, and a limited call asks nothing.
    let spent = rig.queries().await.len();
    assert_eq!(spent, BURST);
    let (st, h, v) = get(&rig.session("/contacts/4915550177/exists")).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    let retry: u64 = h["retry-after"]
        .to_str()
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let (st, h, _) = get(&rig.session(&format!("/contacts/{PEER}/exists"))).await;
    assert_eq!((st, &h["wafleet-cache"]), (200, &"hit".parse().unwrap()));
    assert_eq!(
        rig.queries().await.len(),
        spent,
        "a limited lookup queries nothing"
    );

    // A clean stop: the worker closes its browser.
    rig.worker.signal("TERM");
    rig.worker.wait_exit(LONG).await;
}

/// A WhatsApp Web build without `WAWebQueryExistsJob`: the session still logs in (the lookup is
/// not part of the boot probe), `exists` answers `501 not_supported` with the missing name, and
/// the LID lookups, whose modules are there, keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_without_the_exists_query_answers_not_supported() {
    let mut rig = Rig::start().await;
    let (st, v) = post(
        &rig.sim("/sim/faults"),
        json!({"missing_modules": ["WAWebQueryExistsJob"]}),
    )
    .await;
    assert!(st < 300, "faults: {st} {v}");
    let (st, v) = post(
        &format!("http://{}/v1/workspaces/{WS}/sessions", rig.router.addr),
        json!({"session": S}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let qr = wait_for("a QR", LONG, || async {
        let (st, _, v) = get(&rig.session("/qr?format=json")).await;
        (st == 200)
            .then(|| v["value"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    let (st, v) = post(&rig.sim("/sim/link"), json!({"qr": qr, "phone": PHONE})).await;
    assert!(st < 300, "link: {st} {v}");
    wait_for("session WORKING", LONG, || async {
        (rig.status().await == "WORKING").then_some(())
    })
    .await;

    let (st, _, v) = get(&rig.session(&format!("/contacts/{PEER}/exists"))).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (501, Some("not_supported")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("WAWebQueryExistsJob")),
        "{v}"
    );
    let (st, _, v) = get(&rig.session(&format!("/lids/pn/{PHONE}"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(rig.status().await, "WORKING", "the session keeps working");
    assert!(rig.queries().await.is_empty());

    rig.worker.signal("TERM");
    rig.worker.wait_exit(LONG).await;
}
