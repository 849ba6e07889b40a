//! The events around messages end to end (issue #12, item 1): consul-dev, the simulator (whose
//! reaction table, call collection, stanza sender and presence collection follow WhatsApp Web's
//! own modules, docs/wa-surface.md), a worker running real Chromium sessions, the router, and a
//! webhook receiver.
//!
//! Session `plain` (default events, calls left ringing): a contact's reaction, edit and revoke
//! each fire their event naming the right message, none of them is a second `message`; a call
//! fires `call` with `state: "offer"`; presence is not delivered (it is opt-in) even for a
//! subscribed chat. Session `guard` (`reject_calls: true`, events `call` + `presence`): the
//! call is rejected through the page (the simulator records the `reject` stanza) and the event
//! says `rejected: true`; presence of a subscribed chat arrives as `presence`.

use crate::support;

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::hooks::{Inbox, event, receiver};
use support::wa::{LONG, WaRig, get, of_session, post};
use support::wait_for;

const WS: &str = "events-ws";
const PHONE_A: &str = "4915550201";
const PHONE_B: &str = "4915550202";
const PEER: &str = "4915550203";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reactions_edits_revokes_calls_and_presence_arrive_as_their_events() {
    let rig = WaRig::start(WS, &[]).await;
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let hook = format!("http://{}/hook", receiver(inbox.clone()));
    rig.linked("plain", PHONE_A, json!({"webhook": {"url": hook}}))
        .await;

    // A message from PEER, then PEER reacts to it, edits it and deletes it for everyone.
    let (st, v) = post(
        &rig.sim("/sim/inbound"),
        json!({"to": PHONE_A, "from": PEER, "text": "first"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let wa_id = v["id"].as_str().unwrap().to_owned();
    event(&inbox, "the message", LONG, |v| {
        of_session(v, "plain", "message").is_some_and(|p| p["wa_id"] == wa_id.as_str())
    })
    .await;

    let (st, v) = post(
        &rig.sim("/sim/react"),
        json!({"to": PHONE_A, "from": PEER, "wa_id": wa_id, "emoji": "👍"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let reaction_id = v["id"].as_str().unwrap().to_owned();
    let (r, _, _) = event(&inbox, "message.reaction", LONG, |v| {
        of_session(v, "plain", "message.reaction").is_some()
    })
    .await;
    let p = &r["payload"];
    assert_eq!(p["target_wa_id"], wa_id.as_str(), "{p}");
    assert_eq!(p["wa_id"], reaction_id.as_str(), "{p}");
    assert_eq!(p["emoji"], "👍");
    assert_eq!(p["from"], format!("{PEER}@c.us"));
    assert_eq!(p["from_me"], false);
    // Removing the reaction is the same event with an empty emoji.
    let (st, v) = post(
        &rig.sim("/sim/react"),
        json!({"to": PHONE_A, "from": PEER, "wa_id": wa_id, "emoji": ""}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    event(&inbox, "reaction removed", LONG, |v| {
        of_session(v, "plain", "message.reaction").is_some_and(|p| p["emoji"] == "")
    })
    .await;

    let (st, v) = post(
        &rig.sim("/sim/edit"),
        json!({"to": PHONE_A, "from": PEER, "wa_id": wa_id, "text": "second"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (e, _, _) = event(&inbox, "message.edited", LONG, |v| {
        of_session(v, "plain", "message.edited").is_some()
    })
    .await;
    let p = &e["payload"];
    assert_eq!(p["wa_id"], wa_id.as_str(), "{p}");
    assert_eq!(p["text"], "second");
    assert_eq!(p["previous_text"], "first");
    assert_eq!(p["from"], format!("{PEER}@c.us"));

    let (st, v) = post(
        &rig.sim("/sim/revoke"),
        json!({"to": PHONE_A, "from": PEER, "wa_id": wa_id}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (rv, _, _) = event(&inbox, "message.revoked", LONG, |v| {
        of_session(v, "plain", "message.revoked").is_some()
    })
    .await;
    let p = &rv["payload"];
    assert_eq!(p["wa_id"], wa_id.as_str(), "{p}");
    assert_eq!(p["from_me"], false);

    // A call rings: `call`, left as an offer.
    let (st, v) = post(
        &rig.sim("/sim/call"),
        json!({"to": PHONE_A, "from": PEER, "video": true}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let call_id = v["call_id"].as_str().unwrap().to_owned();
    let (c, _, _) = event(&inbox, "call", LONG, |v| {
        of_session(v, "plain", "call").is_some()
    })
    .await;
    let p = &c["payload"];
    assert_eq!(p["call_id"], call_id.as_str(), "{p}");
    assert_eq!(
        (p["state"].as_str(), p["rejected"].as_bool()),
        (Some("offer"), Some(false))
    );
    assert_eq!(p["video"], true);
    assert_eq!(p["from"], format!("{PEER}@c.us"));

    // Bad input to the subscribe route is a documented 400.
    let (st, v) = post(
        &rig.session("plain", "/presence/subscribe"),
        json!({"chat": "not a chat"}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_chat")),
        "{v}"
    );
    // Presence of a subscribed chat: delivered to the page, but not an event without opt-in.
    let (st, v) = post(
        &rig.session("plain", "/presence/subscribe"),
        json!({"chat": format!("{PEER}@c.us")}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    wait_for("presence reaches the plain page", LONG, || async {
        let (_, v) = post(
            &rig.sim("/sim/presence"),
            json!({"to": PHONE_A, "from": PEER, "state": "available"}),
        )
        .await;
        (v["delivered"] == 1).then_some(())
    })
    .await;

    // Session `guard`: rejects calls, and opted in to presence.
    let inbox_b = Arc::new(Mutex::new(Inbox::default()));
    let hook_b = format!("http://{}/hook", receiver(inbox_b.clone()));
    rig.linked(
        "guard",
        PHONE_B,
        json!({"reject_calls": true, "webhook": {"url": hook_b, "events": ["call", "presence", "message"]}}),
    )
    .await;
    let (st, v) = post(&rig.sim("/sim/call"), json!({"to": PHONE_B, "from": PEER})).await;
    assert_eq!(st, 200, "{v}");
    let call_b = v["call_id"].as_str().unwrap().to_owned();
    let (c, _, _) = event(&inbox_b, "rejected call", LONG, |v| {
        of_session(v, "guard", "call").is_some()
    })
    .await;
    let p = &c["payload"];
    assert_eq!(p["call_id"], call_b.as_str(), "{p}");
    assert_eq!(
        (p["state"].as_str(), p["rejected"].as_bool()),
        (Some("rejected"), Some(true)),
        "{p}"
    );
    let (st, calls) = get(&rig.sim(&format!("/sim/calls?phone={PHONE_B}"))).await;
    assert_eq!(st, 200, "{calls}");
    let seen = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == call_b.as_str())
        .cloned()
        .expect("the call is recorded");
    assert_eq!(seen["state"], "rejected", "{seen}");
    assert!(seen["rejected_by"].is_string(), "{seen}");
    // The plain session's call was never rejected.
    let (_, calls_a) = get(&rig.sim(&format!("/sim/calls?phone={PHONE_A}"))).await;
    assert_eq!(calls_a[0]["state"], "offer", "{calls_a}");

    // Presence, opted in: PEER must be known (mapped) to the page first; a message does that.
    let (st, v) = post(
        &rig.sim("/sim/inbound"),
        json!({"to": PHONE_B, "from": PEER, "text": "hi B"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    event(&inbox_b, "B's message", LONG, |v| {
        of_session(v, "guard", "message").is_some()
    })
    .await;
    let (st, v) = post(
        &rig.session("guard", "/presence/subscribe"),
        json!({"chat": format!("{PEER}@c.us")}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let lid = v["chat"].as_str().unwrap().to_owned();
    assert!(lid.ends_with("@lid"), "subscribed by LID: {v}");
    wait_for("presence reaches the guard page", LONG, || async {
        let (_, v) = post(
            &rig.sim("/sim/presence"),
            json!({"to": PHONE_B, "from": PEER, "state": "typing"}),
        )
        .await;
        (v["delivered"] == 1).then_some(())
    })
    .await;
    let (pr, _, _) = event(&inbox_b, "presence", LONG, |v| {
        of_session(v, "guard", "presence").is_some_and(|p| p["state"] == "typing")
    })
    .await;
    assert_eq!(pr["payload"]["chat"], lid.as_str());
    assert_eq!(pr["payload"]["from"], format!("{PEER}@c.us"));

    // Nothing above was a second `message`, and the plain session got no presence.
    let all = inbox.lock().unwrap().events();
    let messages: Vec<&Value> = all
        .iter()
        .filter_map(|v| of_session(v, "plain", "message"))
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        !all.iter().any(|v| v["event"] == "presence"),
        "presence is opt-in"
    );
    let reactions = all
        .iter()
        .filter(|v| v["event"] == "message.reaction")
        .count();
    assert_eq!(reactions, 2, "one per change, none for read receipts");
}
