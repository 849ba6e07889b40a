//! Chats and the contact list end to end with real parts (issue 12, item 4): consul-dev, the
//! simulator (whose chat modules follow WhatsApp Web's own, docs/wa-surface.md "Chats"), a
//! worker running a real Chromium session, and the router in front.
//!
//! * the chat list shows seeded chats with their unread counts, pinned first, and pages with an
//!   opaque cursor without gaps or duplicates;
//! * a history longer than the page holds pages back in order with no gaps or duplicates, and
//!   the simulator saw the page load earlier messages (`WAWebChatLoadMessages`);
//! * read / seen / archive / unarchive change what the simulator and the list show; typing,
//!   recording and paused reach the simulator as the protocol's chat states;
//! * the contact list (search, paging), profile pictures (cached), block / unblock;
//! * bad ids, cursors, limits and bodies are `400`, unknown chats `404`.

use crate::support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::wa::{LONG, WaRig, call_with_headers, get, post};
use support::wait_for;

const PHONE: &str = "4915550301";
const ANN: &str = "4915550302";
const BOB: &str = "4915550303";
const CAROL: &str = "4915550304";
const WS: &str = "chats-ws";
const S: &str = "main";
/// Messages of Ann's history: far more than the 10 the page gets with the chat.
const HISTORY: usize = 120;

/// What the simulator and the chat list of session `S` show.
trait Chats {
    /// Chat `id` as the simulator holds it for PHONE (`null` when there is none).
    async fn sim_chat(&self, id: &str) -> Value;
    /// Contact `id` as the simulator holds it for PHONE (`null` when there is none).
    async fn sim_contact(&self, id: &str) -> Value;
    /// Every chat of the list, paging with `limit`.
    async fn all_chats(&self, limit: usize) -> Vec<Value>;
    /// Chat `id` of the list (`null` when it is not there).
    async fn chat(&self, id: &str) -> Value;
}

impl Chats for WaRig {
    async fn sim_chat(&self, id: &str) -> Value {
        let (st, v) = get(&self.sim(&format!("/sim/chats?phone={PHONE}"))).await;
        assert_eq!(st, 200, "{v}");
        v.as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id).cloned())
            .unwrap_or(Value::Null)
    }

    async fn sim_contact(&self, id: &str) -> Value {
        let (st, v) = get(&self.sim(&format!("/sim/contacts?phone={PHONE}"))).await;
        assert_eq!(st, 200, "{v}");
        v.as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id).cloned())
            .unwrap_or(Value::Null)
    }

    async fn all_chats(&self, limit: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            let q = cursor
                .as_ref()
                .map_or(String::new(), |c| format!("&cursor={c}"));
            let (st, v) = get(&self.session(S, &format!("/chats?limit={limit}{q}"))).await;
            assert_eq!(st, 200, "{v}");
            out.extend(v["chats"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("the chat list does not end");
    }

    async fn chat(&self, id: &str) -> Value {
        self.all_chats(100)
            .await
            .into_iter()
            .find(|c| c["id"] == id)
            .unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chats_history_actions_and_contacts_through_the_router() {
    let mut rig = WaRig::start_with_env(WS, &[], &[("WAFLEET_CONTACT_ACTIONS_BURST", "50")]).await;
    rig.create(S, json!({})).await;
    let qr = rig.qr(S).await;
    // Not logged in: 409, as every other command.
    let (st, v) = get(&rig.session(S, "/chats")).await;
    assert_eq!((st, v["error"].as_str()), (409, Some("not_ready")), "{v}");
    rig.link(S, &qr, PHONE).await;

    // Ann: a long history, 3 unread. Bob: pinned, 1 unread. Carol: archived, older.
    let ann = format!("{ANN}@c.us");
    let bob = format!("{BOB}@c.us");
    let carol = format!("{CAROL}@c.us");
    let now = 1_800_000_000u64;
    for (seed, what) in [
        (
            json!({"phone": PHONE, "chat": ann, "name": "Ann", "unread": 3, "history": HISTORY, "ts": now}),
            "ann",
        ),
        (
            json!({"phone": PHONE, "chat": bob, "name": "Bob", "unread": 1, "history": 2, "pinned": true, "ts": now - 600}),
            "bob",
        ),
        (
            json!({"phone": PHONE, "chat": carol, "name": "Carol", "history": 1, "archived": true, "muted": true, "ts": now - 1200}),
            "carol",
        ),
    ] {
        let (st, v) = post(&rig.sim("/sim/chats"), seed).await;
        assert_eq!(st, 200, "{what}: {v}");
    }

    // The list: all three, pinned Bob first, then by activity; paging one at a time gives the
    // same list, no gaps, no duplicates.
    let chats = wait_for("the seeded chats", LONG, || async {
        let chats = rig.all_chats(100).await;
        (chats.len() == 3).then_some(chats)
    })
    .await;
    let ids: Vec<&str> = chats.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [bob.as_str(), ann.as_str(), carol.as_str()]);
    let a = &chats[1];
    assert_eq!(
        (
            &a["name"],
            &a["unread_count"],
            &a["archived"],
            &a["pinned"],
            &a["is_group"]
        ),
        (
            &json!("Ann"),
            &json!(3),
            &json!(false),
            &json!(false),
            &json!(false)
        )
    );
    assert_eq!(a["timestamp"], now);
    assert_eq!(
        a["last_message"]["text"],
        format!("history {}", HISTORY - 1),
        "{a}"
    );
    assert_eq!(chats[0]["pinned"], true);
    assert_eq!(
        (&chats[2]["archived"], &chats[2]["muted"]),
        (&json!(true), &json!(true))
    );
    let paged = rig.all_chats(1).await;
    assert_eq!(paged, chats);

    // History: pages of 25 back to the first message, newest first, in order, no gaps or
    // duplicates; the page held 10, so it loaded earlier messages from the server.
    let mut bodies = Vec::new();
    let mut ids_seen = BTreeSet::new();
    let mut before: Option<String> = None;
    for _ in 0..20 {
        let q = before
            .as_ref()
            .map_or(String::new(), |b| format!("&before={b}"));
        let (st, v) = get(&rig.session(S, &format!("/chats/{ann}/messages?limit=25{q}"))).await;
        assert_eq!(st, 200, "{v}");
        let page = v["messages"].as_array().cloned().unwrap_or_default();
        assert!(page.len() <= 25);
        for m in &page {
            assert!(
                ids_seen.insert(m["wa_id"].as_str().expect("wa_id").to_owned()),
                "duplicate {m}"
            );
            assert_eq!(m["chat"], ann.as_str(), "{m}");
            bodies.push(m["text"].as_str().expect("text").to_owned());
        }
        match v["next_before"].as_str() {
            Some(b) => before = Some(b.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..HISTORY).rev().map(|i| format!("history {i}")).collect();
    assert_eq!(bodies, expected);
    let loads = rig.sim_chat(&ann).await["loads"].as_u64().unwrap_or(0);
    assert!(loads >= 2, "the page loaded earlier pages: {loads}");
    // A message of Ann's chat as the `message` event carries it.
    let (_, v) = get(&rig.session(S, &format!("/chats/{ann}/messages?limit=1"))).await;
    let m = &v["messages"][0];
    assert_eq!(m["type"], "text");
    // History alternates inbound and outbound; the newest (index 119) is outbound.
    assert_eq!(m["from_me"], true, "{m}");

    // Read: the unread count goes to 0 on the servers and in the list.
    assert_eq!(rig.sim_chat(&ann).await["read_receipts"], 0);
    let (st, v) = post(&rig.session(S, &format!("/chats/{ann}/read")), json!({})).await;
    assert_eq!((st, &v["unread_count"]), (200, &json!(0)), "{v}");
    let sim_ann = rig.sim_chat(&ann).await;
    assert_eq!(
        (&sim_ann["unread_count"], &sim_ann["read_receipts"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(rig.chat(&ann).await["unread_count"], 0);
    // Seen on Bob's chat sends his read receipt too; a chat with nothing unread sends none.
    let (st, v) = post(&rig.session(S, &format!("/chats/{bob}/seen")), json!({})).await;
    assert_eq!((st, &v["unread_count"]), (200, &json!(0)), "{v}");
    assert_eq!(rig.sim_chat(&bob).await["read_receipts"], 1);
    let (st, _) = post(&rig.session(S, &format!("/chats/{bob}/seen")), json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(rig.sim_chat(&bob).await["read_receipts"], 1);

    // Archive and unarchive (both idempotent).
    for (verb, archived) in [("archive", true), ("archive", true), ("unarchive", false)] {
        let (st, v) = post(&rig.session(S, &format!("/chats/{ann}/{verb}")), json!({})).await;
        assert_eq!((st, &v["archived"]), (200, &json!(archived)), "{verb}: {v}");
        assert_eq!(rig.sim_chat(&ann).await["archived"], archived, "{verb}");
        assert_eq!(rig.chat(&ann).await["archived"], archived, "{verb}");
    }

    // Chat states reach the servers under the protocol's names.
    for state in ["typing", "recording", "paused"] {
        let (st, v) = post(
            &rig.session(S, &format!("/chats/{ann}/presence")),
            json!({"state": state}),
        )
        .await;
        assert_eq!((st, &v["state"]), (200, &json!(state)), "{v}");
    }
    let (st, v) = get(&rig.sim(&format!("/sim/chatstates?phone={PHONE}"))).await;
    assert_eq!(st, 200, "{v}");
    let states: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["chat"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            (ann.as_str(), "typing"),
            (ann.as_str(), "recording_audio"),
            (ann.as_str(), "idle")
        ]
    );

    // Contacts: Ann with a picture, Bob blocked and without one.
    for seed in [
        json!({"phone": PHONE, "id": ann, "name": "Ann", "pushname": "annie", "picture": true}),
        json!({"phone": PHONE, "id": bob, "name": "Bob", "is_business": true, "blocked": true}),
    ] {
        let (st, v) = post(&rig.sim("/sim/contacts"), seed).await;
        assert_eq!(st, 200, "{v}");
    }
    let listed = wait_for("the seeded contacts", LONG, || async {
        let (st, v) = get(&rig.session(S, "/contacts?q=ann")).await;
        (st == 200 && v["contacts"].as_array().is_some_and(|a| a.len() == 1)).then_some(v)
    })
    .await;
    let c = &listed["contacts"][0];
    assert_eq!(
        (
            &c["id"],
            &c["pn"],
            &c["name"],
            &c["push_name"],
            &c["is_blocked"],
            &c["is_my_contact"]
        ),
        (
            &json!(ann),
            &json!(ann),
            &json!("Ann"),
            &json!("annie"),
            &json!(false),
            &json!(true)
        ),
        "{c}"
    );
    let (_, v) = get(&rig.session(S, "/contacts?q=BOB")).await;
    let b = &v["contacts"][0];
    assert_eq!(
        (&b["is_blocked"], &b["is_business"]),
        (&json!(true), &json!(true)),
        "{v}"
    );
    // Paging by one: every contact once (Carol's chat made her a contact too).
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let q = cursor
            .as_ref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let (st, v) = get(&rig.session(S, &format!("/contacts?limit=1{q}"))).await;
        assert_eq!(st, 200, "{v}");
        seen.extend(
            v["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "{seen:?}");
    for id in [&ann, &bob, &carol] {
        assert!(unique.contains(id.as_str()), "{id} in {seen:?}");
    }

    // Pictures: Ann's URL (then from the cache), none for Bob.
    let (st, h, v) = call_with_headers(
        &rig.session(S, &format!("/contacts/{ANN}/picture")),
        reqwest::Method::GET,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["url"].as_str().is_some_and(|u| u.starts_with("https://")),
        "{v}"
    );
    assert_eq!(h["wafleet-cache"], "miss");
    let (_, h, again) = call_with_headers(
        &rig.session(S, &format!("/contacts/{ann}/picture")),
        reqwest::Method::GET,
        None,
    )
    .await;
    assert_eq!((again, &h["wafleet-cache"]), (v, &"hit".parse().unwrap()));
    let (st, v) = get(&rig.session(S, &format!("/contacts/{bob}/picture"))).await;
    assert_eq!((st, &v["url"]), (200, &Value::Null), "{v}");

    // Block and unblock Ann.
    for (verb, blocked) in [("block", true), ("unblock", false)] {
        let (st, v) = post(
            &rig.session(S, &format!("/contacts/{ann}/{verb}")),
            json!({}),
        )
        .await;
        assert_eq!((st, &v["blocked"]), (200, &json!(blocked)), "{verb}: {v}");
        assert_eq!(rig.sim_contact(&ann).await["blocked"], blocked, "{verb}");
        let (_, v) = get(&rig.session(S, "/contacts?q=annie")).await;
        assert_eq!(v["contacts"][0]["is_blocked"], blocked, "{verb}: {v}");
    }

    // Bad input: 400 with the documented code; unknown chats 404.
    for (path, code) in [
        ("/chats?cursor=bm9wZQ".to_owned(), "invalid_cursor"),
        ("/chats?cursor=%21%21".to_owned(), "invalid_cursor"),
        ("/chats?limit=0".to_owned(), "invalid_limit"),
        ("/chats?limit=101".to_owned(), "invalid_limit"),
        ("/chats/12ab@c.us/messages".to_owned(), "invalid_chat_id"),
        (
            "/chats/4915550302@example/messages".to_owned(),
            "invalid_chat_id",
        ),
        (
            format!("/chats/{ann}/messages?before=nope"),
            "invalid_before",
        ),
        (
            format!("/chats/{ann}/messages?before=false_{bob}_3EB0AA"),
            "invalid_before",
        ),
        ("/contacts?cursor=xyz".to_owned(), "invalid_cursor"),
        ("/contacts/12ab/picture".to_owned(), "invalid_contact_id"),
    ] {
        let (st, v) = get(&rig.session(S, &path)).await;
        assert_eq!((st, v["error"].as_str()), (400, Some(code)), "{path}: {v}");
    }
    let (st, v) = post(
        &rig.session(S, &format!("/chats/{ann}/presence")),
        json!({"state": "dancing"}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_body")),
        "{v}"
    );
    let (st, v) = post(
        &rig.session(S, "/contacts/120363025246125486@g.us/block"),
        json!({}),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_contact_id")),
        "{v}"
    );
    let (st, v) = get(&rig.session(S, "/chats/4915550399@c.us/messages")).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (404, Some("chat_not_found")),
        "{v}"
    );
    let (st, v) = post(&rig.session(S, "/chats/4915550399@c.us/read"), json!({})).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (404, Some("chat_not_found")),
        "{v}"
    );
    let (st, v) = get(&rig.session(
        S,
        &format!("/chats/{ann}/messages?before=false_{ann}_3EB0FFFFFF"),
    ))
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (404, Some("message_not_found")),
        "{v}"
    );

    rig.worker.signal("TERM");
    rig.worker.wait_exit(LONG).await;
}
