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

use serde_json::{Value, json};
use support::wa::{LONG, WaRig, call_as, get, get_with_headers, post};

const PHONE: &str = "4915550101";
const PEER: &str = "4915550102";
const STRANGER: &str = "4915550199";
const WS: &str = "contacts-ws";
const S: &str = "main";
/// The worker's bucket for this test: four uncached lookups, then one a minute.
const BURST: usize = 4;

/// The rig of both tests: the per-session exists bucket is `BURST` lookups, then one a minute.
async fn start() -> WaRig {
    let burst = BURST.to_string();
    WaRig::start_with_env(
        WS,
        &[],
        &[
            ("WAFLEET_EXISTS_BURST", burst.as_str()),
            ("WAFLEET_EXISTS_PER_MINUTE", "1"),
        ],
    )
    .await
}

/// The exists queries the simulator saw.
trait Queries {
    /// The exists queries the simulator saw from the linked phone's page.
    async fn queries(&self) -> Vec<Value>;
    /// How many of them asked for `digits`.
    async fn queries_for(&self, digits: &str) -> usize;
}

impl Queries for WaRig {
    async fn queries(&self) -> Vec<Value> {
        let (st, v) = get(&self.sim(&format!("/sim/queries?phone={PHONE}"))).await;
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
    let mut rig = start().await;
    rig.create(S, json!({})).await;

    // Not logged in yet: 409, and nothing reaches WhatsApp.
    let qr = rig.qr(S).await;
    let (st, v) = get(&rig.session(S, &format!("/contacts/{PEER}/exists"))).await;
    assert_eq!((st, v["error"].as_str()), (409, Some("not_ready")), "{v}");
    let (st, v) = get(&rig.session(S, &format!("/lids/pn/{PEER}"))).await;
    assert_eq!((st, v["error"].as_str()), (409, Some("not_ready")), "{v}");

    rig.link(S, &qr, PHONE).await;

    // PEER has a WhatsApp account; STRANGER has none.
    let (st, v) = post(&rig.sim("/sim/accounts"), json!({"phone": PEER})).await;
    assert_eq!(st, 200, "{v}");
    let peer_lid = v["lid"].as_str().expect("lid").to_owned();
    assert!(peer_lid.ends_with("@lid"), "{peer_lid}");
    assert!(rig.queries().await.is_empty());

    let (st, h, v) = get_with_headers(&rig.session(S, &format!("/contacts/+{PEER}/exists"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"exists": true, "wa_id": format!("{PEER}@c.us"), "lid": peer_lid})
    );
    assert_eq!(h["wafleet-cache"], "miss");
    assert!(h.contains_key("x-wafleet-shard"));
    // The second answer comes from the cache: still one query in the simulator's log.
    let (st, h, again) =
        get_with_headers(&rig.session(S, &format!("/contacts/{PEER}/exists"))).await;
    assert_eq!((st, &again), (200, &v));
    assert_eq!(h["wafleet-cache"], "hit");
    assert_eq!(rig.queries_for(PEER).await, 1, "{:?}", rig.queries().await);

    let (st, h, v) =
        get_with_headers(&rig.session(S, &format!("/contacts/{STRANGER}/exists"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"exists": false, "wa_id": null, "lid": null}));
    assert_eq!(h["wafleet-cache"], "miss");
    let (_, h, _) =
        get_with_headers(&rig.session(S, &format!("/contacts/{STRANGER}/exists"))).await;
    assert_eq!(h["wafleet-cache"], "hit", "negative answers are cached too");
    assert_eq!(rig.queries_for(STRANGER).await, 1);

    // LID <-> phone number: the exists query taught WhatsApp Web PEER's pair; the account's own
    // pair it knows from the link.
    let (st, v) = get(&rig.session(S, &format!("/lids/{peer_lid}"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"lid": peer_lid, "pn": format!("{PEER}@c.us")}));
    let encoded = peer_lid.replace('@', "%40");
    let (st, v2) = get(&rig.session(S, &format!("/lids/{encoded}"))).await;
    assert_eq!((st, v2), (200, v));
    let (st, v) = get(&rig.session(S, &format!("/lids/pn/{PEER}"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"pn": format!("{PEER}@c.us"), "lid": peer_lid}));
    let (st, v) = get(&rig.session(S, &format!("/lids/pn/{PHONE}"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["lid"],
        format!("{}@lid", wafleet::sim::state::lid_of(PHONE))
    );
    for unknown in [
        "/lids/999999999999999@lid".to_owned(),
        format!("/lids/pn/{STRANGER}"),
    ] {
        let (st, v) = get(&rig.session(S, &unknown)).await;
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
        let (st, v) = get(&rig.session(S, path)).await;
        assert_eq!((st, v["error"].as_str()), (400, Some(code)), "{path}: {v}");
    }
    let (st, _, v) = call_as(
        &rig.session(S, &format!("/contacts/{PEER}/exists")),
        reqwest::Method::GET,
        None,
        None,
    )
    .await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(rig.queries().await.len(), before);

    // A WhatsApp server error (ServerStatusCodeError in the page) is 502 and is not cached:
    // the next call asks again.
    let flaky = "4915550188";
    let (st, v) = post(&rig.sim("/sim/faults"), json!({"usync_error": 500})).await;
    assert!(st < 300, "faults: {st} {v}");
    let (st, v) = get(&rig.session(S, &format!("/contacts/{flaky}/exists"))).await;
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
    let (st, h, v) = get_with_headers(&rig.session(S, &format!("/contacts/{flaky}/exists"))).await;
    assert_eq!((st, v["exists"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(h["wafleet-cache"], "miss");
    assert_eq!(rig.queries_for(flaky).await, 2);

    // The bucket: every token is spent now (PEER, STRANGER, the flaky number twice); the session
    // is limited. Cached answers are still served, and a limited call asks nothing.
    let spent = rig.queries().await.len();
    assert_eq!(spent, BURST);
    let (st, h, v) = get_with_headers(&rig.session(S, "/contacts/4915550177/exists")).await;
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
    let (st, h, _) = get_with_headers(&rig.session(S, &format!("/contacts/{PEER}/exists"))).await;
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
    let mut rig = start().await;
    let (st, v) = post(
        &rig.sim("/sim/faults"),
        json!({"missing_modules": ["WAWebQueryExistsJob"]}),
    )
    .await;
    assert!(st < 300, "faults: {st} {v}");
    rig.linked(S, PHONE, json!({})).await;

    let (st, v) = get(&rig.session(S, &format!("/contacts/{PEER}/exists"))).await;
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
    let (st, v) = get(&rig.session(S, &format!("/lids/pn/{PHONE}"))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(rig.status(S).await, "WORKING", "the session keeps working");
    assert!(rig.queries().await.is_empty());

    rig.worker.signal("TERM");
    rig.worker.wait_exit(LONG).await;
}
