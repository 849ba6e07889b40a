//! The inbound `message` event for every kind of message a contact can send (issue #12 items 1
//! and 6): the simulator's `/sim/inbound` `type`, `location`, `contact`, `poll` and `quoted`
//! reach a real Chromium session as WhatsApp Web's message model holds them, and the webhook's
//! `message` carries the API type and its fields. Bad `/sim/inbound` bodies are refused with a
//! 400 that says why. Messages written on the phone itself and sent through the API reach a
//! target that opts in to `message.any`.

use crate::support;

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{Value, json};
use support::hooks::{Inbox, event, receiver};
use support::wa::{LONG, WaRig, of_session, post};

const PHONE: &str = "4915550301";
const PEER: &str = "4915550302";

async fn inbound(rig: &WaRig, body: Value) -> String {
    let (st, v) = post(&rig.sim("/sim/inbound"), body.clone()).await;
    assert_eq!(st, 200, "{body} -> {v}");
    v["id"].as_str().expect("id").to_owned()
}

async fn message_of(inbox: &Arc<Mutex<Inbox>>, wa_id: &str) -> Value {
    let (v, _, _) = event(inbox, &format!("message {wa_id}"), LONG, |v| {
        of_session(v, "main", "message").is_some_and(|p| p["wa_id"] == wa_id)
    })
    .await;
    v["payload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_inbound_type_arrives_with_its_fields() {
    let rig = WaRig::start("inbound-ws", &[]).await;
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let hook = format!("http://{}/hook", receiver(inbox.clone()));
    rig.linked("main", PHONE, json!({"webhook": {"url": hook}}))
        .await;

    let first = inbound(&rig, json!({"to": PHONE, "from": PEER, "text": "menu?"})).await;
    let p = message_of(&inbox, &first).await;
    assert_eq!(
        (p["type"].as_str(), p["text"].as_str()),
        (Some("text"), Some("menu?"))
    );
    assert!(
        p["quoted_wa_id"].is_null() && p["location"].is_null(),
        "{p}"
    );

    // A reply quoting the first message.
    let reply = inbound(
        &rig,
        json!({"to": PHONE, "from": PEER, "type": "text", "text": "this one", "quoted": first}),
    )
    .await;
    let p = message_of(&inbox, &reply).await;
    assert_eq!(p["quoted_wa_id"], first.as_str(), "{p}");
    assert_eq!(p["text"], "this one");

    let loc = inbound(
        &rig,
        json!({"to": PHONE, "from": PEER, "type": "location",
               "location": {"latitude": 52.52, "longitude": 13.405, "name": "Office", "address": "Main St 1"}}),
    )
    .await;
    let p = message_of(&inbox, &loc).await;
    assert_eq!(
        (p["type"].as_str(), p["wa_type"].as_str()),
        (Some("location"), Some("location"))
    );
    assert_eq!(
        p["location"],
        json!({"latitude": 52.52, "longitude": 13.405, "name": "Office", "address": "Main St 1"})
    );

    let card = inbound(
        &rig,
        json!({"to": PHONE, "from": PEER, "type": "contact",
               "contact": {"name": "Ana Lima", "phones": ["4915550399"]}}),
    )
    .await;
    let p = message_of(&inbox, &card).await;
    assert_eq!(p["type"], "contact", "{p}");
    assert_eq!(p["contact"]["name"], "Ana Lima");
    assert_eq!(p["contact"]["phones"], json!(["4915550399"]));
    assert!(
        p["contact"]["vcards"][0]
            .as_str()
            .unwrap()
            .starts_with("BEGIN:VCARD")
    );

    let poll = inbound(
        &rig,
        json!({"to": PHONE, "from": PEER, "type": "poll",
               "poll": {"name": "Lunch?", "options": ["pizza", "salad"], "multiple": true}}),
    )
    .await;
    let p = message_of(&inbox, &poll).await;
    assert_eq!(p["type"], "poll", "{p}");
    assert_eq!(
        p["poll"],
        json!({"name": "Lunch?", "options": ["pizza", "salad"], "multiple": true})
    );

    // A voice note: audio the phone sends as `ptt`.
    let ogg = base64::engine::general_purpose::STANDARD.encode(b"OggS not really opus");
    let voice = inbound(
        &rig,
        json!({"to": PHONE, "from": PEER, "type": "voice",
               "media": {"mimetype": "audio/ogg; codecs=opus", "data": ogg}}),
    )
    .await;
    let p = message_of(&inbox, &voice).await;
    assert_eq!(
        (p["type"].as_str(), p["wa_type"].as_str()),
        (Some("voice"), Some("ptt")),
        "{p}"
    );
    assert!(p["media"]["url"].is_string(), "{p}");

    // Bodies the simulator refuses, each with a reason.
    for (body, code) in [
        (
            json!({"to": PHONE, "from": PEER, "type": "gif", "text": "x"}),
            "invalid_type",
        ),
        (
            json!({"to": PHONE, "from": PEER, "type": "image", "text": "x"}),
            "invalid_body",
        ),
        (
            json!({"to": PHONE, "from": PEER, "type": "location"}),
            "invalid_body",
        ),
        (
            json!({"to": PHONE, "from": PEER, "location": {"latitude": 99, "longitude": 0}}),
            "invalid_body",
        ),
        (
            json!({"to": PHONE, "from": PEER, "type": "poll", "poll": {"name": "q", "options": ["a"]}}),
            "invalid_body",
        ),
        (
            json!({"to": PHONE, "from": PEER, "text": "x", "quoted": "false_1@c.us_NOPE"}),
            "invalid_body",
        ),
    ] {
        let (st, v) = post(&rig.sim("/sim/inbound"), body.clone()).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (400, Some(code)),
            "{body} -> {v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let (st, v) = post(
        &rig.sim("/sim/inbound"),
        json!({"to": PHONE, "from": PEER, "text": "x", "quoted": format!("false_{PEER}@c.us_UNKNOWN")}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (404, Some("unknown_message")),
        "{v}"
    );
}

/// `message.any` (opt-in): a target that lists only it gets every message of the session, those
/// written on the phone itself and those sent through the API (`from_me: true`) as well as the
/// contacts' (`from_me: false`), and never a `message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_from_the_phone_and_the_api_arrive_as_message_any() {
    let rig = WaRig::start("any-ws", &[]).await;
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let hook = format!("http://{}/hook", receiver(inbox.clone()));
    rig.linked(
        "main",
        PHONE,
        json!({"webhook": {"url": hook, "events": ["message.any"]}}),
    )
    .await;
    let any_with = |text: &'static str| {
        move |v: &Value| of_session(v, "main", "message.any").is_some_and(|p| p["text"] == text)
    };

    // Written on the phone: the linked session sees its own message in the chat with PEER.
    let mine = inbound(
        &rig,
        json!({"to": PHONE, "from": PEER, "from_me": true, "text": "typed on the phone"}),
    )
    .await;
    assert!(mine.starts_with(&format!("true_{PEER}@c.us_")), "{mine}");
    let (v, _, _) = event(
        &inbox,
        "message.any from the phone",
        LONG,
        any_with("typed on the phone"),
    )
    .await;
    let p = &v["payload"];
    assert_eq!(p["wa_id"], mine.as_str(), "{p}");
    assert_eq!(p["from_me"], true, "{p}");
    assert_eq!(p["chat"], format!("{PEER}@c.us"), "{p}");

    // A contact's message.
    let theirs = inbound(&rig, json!({"to": PHONE, "from": PEER, "text": "a reply"})).await;
    let (v, _, _) = event(
        &inbox,
        "message.any from the contact",
        LONG,
        any_with("a reply"),
    )
    .await;
    assert_eq!(v["payload"]["wa_id"], theirs.as_str());
    assert_eq!(v["payload"]["from_me"], false);

    // Sent through the API.
    let (st, sent) = post(
        &rig.session("main", "/messages"),
        json!({"to": PEER, "text": "sent by the API"}),
    )
    .await;
    assert_eq!(st, 202, "{sent}");
    let (v, _, _) = event(
        &inbox,
        "message.any of the API send",
        LONG,
        any_with("sent by the API"),
    )
    .await;
    assert_eq!(v["payload"]["from_me"], true, "{v}");

    // Deliveries keep their order per target: the plain `message` of the contact's text would
    // have come before the API send's message.any.
    let names: Vec<String> = inbox
        .lock()
        .unwrap()
        .events()
        .iter()
        .filter(|v| v["session"] == "main")
        .map(|v| v["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "message"), "{names:?}");

    // From the phone, an author has no place.
    let (st, v) = post(
        &rig.sim("/sim/inbound"),
        json!({"to": PHONE, "from": PEER, "from_me": true, "author": PEER, "text": "x"}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_body")),
        "{v}"
    );
}
