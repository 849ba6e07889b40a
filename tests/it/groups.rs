//! Groups end to end with real parts (issue 12, item 4): consul-dev, the simulator (whose group
//! jobs and `gp2` notifications follow WhatsApp Web's own modules, docs/wa-surface.md), a
//! worker running a real Chromium session, the router in front, and a webhook receiver.
//!
//! One session creates a group, adds a participant and sees the `group.participants` event;
//! promotes, demotes and removes (each with its event); gets and resets the invite link; sets
//! subject and description; an admin's phone adds someone (a change made by someone else fires
//! the event too); the session leaves. Bad ids and bodies are `400` and change nothing; no `gp2`
//! notification is ever delivered as a `message`.

use crate::support;

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::hooks::{self, Inbox, receiver};
use support::wa::{LONG, WaRig, call, get, post, put};
use support::wait_for;

const PHONE: &str = "4915550301";
const PEER: &str = "4915550302";
const PEER2: &str = "4915550303";
const PEER3: &str = "4915550304";
const STRANGER: &str = "4915550399";
const WS: &str = "groups-ws";
const S: &str = "main";

fn wid(phone: &str) -> String {
    format!("{phone}@c.us")
}

/// The simulator's record of group `id`.
async fn sim_group(rig: &WaRig, id: &str) -> Value {
    let (st, v) = get(&rig.sim(&format!("/sim/groups/{id}"))).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Waits for the `group.participants` event of `group` with this action and participant.
async fn change(inbox: &Arc<Mutex<Inbox>>, group: &str, action: &str, who: &str) -> Value {
    let (env, _, _) = hooks::event(
        inbox,
        &format!("group.participants {action} {who}"),
        LONG,
        |v| {
            v["event"] == "group.participants"
                && v["payload"]["group"] == group
                && v["payload"]["action"] == action
                && v["payload"]["participants"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p == who))
        },
    )
    .await;
    env["payload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_through_the_router_with_participant_events() {
    let mut rig = WaRig::start(WS, &[]).await;
    let inbox: Arc<Mutex<Inbox>> = Arc::default();
    let hook = receiver(inbox.clone());
    rig.create(
        S,
        json!({"webhook": {"url": format!("http://{hook}/hook")}}),
    )
    .await;

    // Bad ids and bodies are refused before anything else, logged in or not.
    for (method, path, body, code) in [
        ("GET", "/groups/abc@g.us", None, "invalid_group_id"),
        ("GET", "/groups/49-1@c.us", None, "invalid_group_id"),
        (
            "GET",
            "/groups/49-1-2@g.us/invite",
            None,
            "invalid_group_id",
        ),
        (
            "POST",
            "/groups/x@g.us/participants/add",
            Some(json!({"participants": [PEER]})),
            "invalid_group_id",
        ),
        ("GET", "/groups?limit=0", None, "invalid_limit"),
        ("GET", "/groups?cursor=nope", None, "invalid_cursor"),
        (
            "POST",
            "/groups",
            Some(json!({"subject": "", "participants": [PEER]})),
            "invalid_subject",
        ),
        (
            "POST",
            "/groups",
            Some(json!({"subject": "x", "participants": ["12ab"]})),
            "invalid_participants",
        ),
        (
            "POST",
            "/groups",
            Some(json!({"subject": "x", "participants": []})),
            "invalid_participants",
        ),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (st, v) = call(&rig.session(S, path), m, body).await;
        assert_eq!((st, v["error"].as_str()), (400, Some(code)), "{path}: {v}");
    }
    // Valid but not logged in: 409.
    let (st, v) = get(&rig.session(S, "/groups")).await;
    assert_eq!((st, v["error"].as_str()), (409, Some("not_ready")), "{v}");

    let qr = rig.qr(S).await;
    rig.link(S, &qr, PHONE).await;
    for p in [PEER, PEER2, PEER3] {
        let (st, v) = post(&rig.sim("/sim/accounts"), json!({"phone": p})).await;
        assert_eq!(st, 200, "{v}");
    }

    // Create: PEER is added; STRANGER has no WhatsApp account and is reported as failed.
    let (st, created) = post(
        &rig.session(S, "/groups"),
        json!({"subject": "Support team", "participants": [format!("+{PEER}"), STRANGER]}),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let gid = created["id"].as_str().expect("id").to_owned();
    assert!(
        gid.starts_with(&format!("{PHONE}-")) && gid.ends_with("@g.us"),
        "{gid}"
    );
    assert_eq!(created["subject"], "Support team");
    assert_eq!(created["owner"], wid(PHONE));
    assert_eq!(
        created["failed_participants"],
        json!([{"id": wid(STRANGER), "code": 404, "status": "not_found"}]),
        "{created}"
    );
    assert!(
        created["participants"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": wid(PEER), "code": 200, "status": "ok"})),
        "{created}"
    );

    // Add a participant: the answer per participant, then the event.
    let (st, v) = post(
        &rig.session(S, &format!("/groups/{gid}/participants/add")),
        json!({"participants": [PEER2, PEER]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["participants"],
        json!([
            {"id": wid(PEER2), "code": 200, "status": "ok"},
            {"id": wid(PEER), "code": 409, "status": "conflict"},
        ]),
        "{v}"
    );
    let ev = change(&inbox, &gid, "add", &wid(PEER2)).await;
    assert_eq!(ev["author"], wid(PHONE), "{ev}");
    assert!(ev["timestamp"].as_i64().is_some_and(|t| t > 0), "{ev}");

    // Read it back: list (paged) and one group with its participants.
    let (st, list) = get(&rig.session(S, "/groups?limit=1")).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["groups"][0]["id"], gid.as_str(), "{list}");
    assert_eq!(list["groups"][0]["participants_count"], 3, "{list}");
    assert!(list["next_cursor"].is_null(), "one group, one page: {list}");
    let encoded = gid.replace('@', "%40");
    let (st, g) = get(&rig.session(S, &format!("/groups/{encoded}"))).await;
    assert_eq!(st, 200, "{g}");
    let me = g["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == wid(PHONE))
        .cloned()
        .expect("me in the group");
    assert_eq!(
        (me["admin"].as_bool(), me["super_admin"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        me["lid"],
        format!("{}@lid", wafleet::sim::state::lid_of(PHONE))
    );

    // Promote, demote, remove: each answers per participant and fires its event.
    for (action, who) in [("promote", PEER), ("demote", PEER), ("remove", PEER2)] {
        let (st, v) = post(
            &rig.session(S, &format!("/groups/{gid}/participants/{action}")),
            json!({"participants": [who]}),
        )
        .await;
        assert_eq!(st, 200, "{action}: {v}");
        assert_eq!(v["participants"][0]["status"], "ok", "{action}: {v}");
        change(&inbox, &gid, action, &wid(who)).await;
    }
    let state = sim_group(&rig, &gid).await;
    assert_eq!(state["participants"], json!([PHONE, PEER]), "{state}");
    assert_eq!(state["admins"], json!([PHONE]), "{state}");
    let (st, v) = post(
        &rig.session(S, &format!("/groups/{gid}/participants/remove")),
        json!({"participants": [PEER3]}),
    )
    .await;
    assert_eq!(
        (st, &v["participants"][0]["status"]),
        (200, &json!("not_found")),
        "{v}"
    );
    let (st, v) = post(
        &rig.session(S, &format!("/groups/{gid}/participants/kick")),
        json!({"participants": [PEER]}),
    )
    .await;
    assert_eq!(st, 404, "{v}");

    // Invite link: the same code until reset.
    let (st, inv) = get(&rig.session(S, &format!("/groups/{gid}/invite"))).await;
    assert_eq!(st, 200, "{inv}");
    let code = inv["code"].as_str().expect("code").to_owned();
    assert_eq!(inv["url"], format!("https://chat.whatsapp.com/{code}"));
    let (_, again) = get(&rig.session(S, &format!("/groups/{gid}/invite"))).await;
    assert_eq!(again["code"], code.as_str());
    let (st, reset) = post(
        &rig.session(S, &format!("/groups/{gid}/invite/reset")),
        json!({}),
    )
    .await;
    assert_eq!(st, 200, "{reset}");
    assert_ne!(reset["code"], code.as_str(), "{reset}");
    assert_eq!(sim_group(&rig, &gid).await["invite"], reset["code"]);

    // Subject and description.
    let (st, v) = put(
        &rig.session(S, &format!("/groups/{gid}/subject")),
        json!({"subject": "Support (EU)"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = put(
        &rig.session(S, &format!("/groups/{gid}/description")),
        json!({"description": "Opening hours:\n9 to 5"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = put(
        &rig.session(S, &format!("/groups/{gid}/subject")),
        json!({"subject": "x".repeat(101)}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_subject")),
        "{v}"
    );
    let g = wait_for("the new subject and description", LONG, || async {
        let (_, g) = get(&rig.session(S, &format!("/groups/{gid}"))).await;
        (g["subject"] == "Support (EU)" && g["description"] == "Opening hours:\n9 to 5")
            .then_some(g)
    })
    .await;
    assert_eq!(g["participants_count"], 2);

    // A change made by someone else: PEER, made admin again, adds PEER3 from the phone.
    let (st, v) = post(
        &rig.session(S, &format!("/groups/{gid}/participants/promote")),
        json!({"participants": [PEER]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(
        &rig.sim(&format!("/sim/groups/{gid}/participants")),
        json!({"action": "add", "participants": [PEER3], "by": PEER}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let ev = change(&inbox, &gid, "add", &wid(PEER3)).await;
    assert_eq!(ev["author"], wid(PEER), "{ev}");

    // Leave: the event names this account; the group no longer has it.
    let (st, v) = post(&rig.session(S, &format!("/groups/{gid}/leave")), json!({})).await;
    assert_eq!(st, 200, "{v}");
    let ev = change(&inbox, &gid, "leave", &wid(PHONE)).await;
    assert_eq!(ev["author"], wid(PHONE), "{ev}");
    let state = sim_group(&rig, &gid).await;
    assert!(
        !state["participants"]
            .as_array()
            .unwrap()
            .contains(&json!(PHONE)),
        "{state}"
    );
    // Not an admin any more: WhatsApp refuses the admin actions.
    let (st, v) = get(&rig.session(S, &format!("/groups/{gid}/invite"))).await;
    assert!(st == 403 || st == 404, "{st} {v}");

    // No group notification became a `message`.
    let events = inbox.lock().unwrap().events();
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "message" && e["payload"]["chat"] == gid.as_str()),
        "a gp2 notification was delivered as a message"
    );

    rig.worker.signal("TERM");
    rig.worker.wait_exit(LONG).await;
}
