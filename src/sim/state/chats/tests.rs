//! Unit tests of `chats` (apart so that the module itself stays readable).

use super::*;
use crate::sim::state::Timing;

fn seed(chat: &str, history: u32) -> ChatSeed {
    ChatSeed {
        phone: "4915550001".into(),
        chat: chat.into(),
        name: Some("Ann".into()),
        unread: 2,
        archived: false,
        pinned: true,
        muted: false,
        history,
        local: Some(3),
        ts: Some(1_000_000),
    }
}

#[test]
fn chats_are_seeded_with_a_history_and_checked() {
    let mut sim = Sim::new(Timing::default(), 1);
    let st = sim.seed_chat(seed("4915550002@c.us", 7), 0).unwrap();
    assert_eq!((st.history, st.unread_count, st.pinned), (7, 2, true));
    let c = &sim.chats["4915550001"].chats["4915550002@c.us"];
    // The page gets the newest three, oldest first, and learns that earlier ones exist.
    let v = c.view("4915550002@c.us");
    let bodies: Vec<&str> = v.msgs.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["history 4", "history 5", "history 6"]);
    assert!(v.earlier);
    assert_eq!(v.msgs[2].ts, 1_000_000);
    let ids: std::collections::BTreeSet<_> = c.history.iter().map(|m| &m.id).collect();
    assert_eq!(ids.len(), 7, "unique ids");
    for bad in ["x@c.us", "4915550002@example", "-1@g.us"] {
        assert!(sim.seed_chat(seed(bad, 1), 0).is_err(), "{bad}");
    }
    assert!(sim.seed_chat(seed("4915550002@c.us", 6_000), 0).is_err());
    assert_eq!(sim.chats_of("4915550001").unwrap().len(), 1);
    assert!(sim.chats_of("12").is_err());
}

#[test]
fn actions_change_the_chat_and_are_logged() {
    let mut sim = Sim::new(Timing::default(), 1);
    sim.seed_chat(seed("4915550002@c.us", 2), 0).unwrap();
    let phone = "4915550001";
    assert_eq!(
        sim.apply_chat_action(phone, "seen", "4915550002@c.us", None, 1),
        (200, None)
    );
    assert_eq!(
        sim.apply_chat_action(phone, "archive", "4915550002@c.us", None, 2),
        (200, None)
    );
    let st = &sim.chats_of(phone).unwrap()[0];
    assert_eq!(
        (st.unread_count, st.read_receipts, st.archived, st.pinned),
        (0, 1, true, false)
    );
    assert_eq!(
        sim.apply_chat_action(phone, "seen", "4915550009@c.us", None, 3)
            .0,
        404
    );
    let typing = Some("typing".to_owned());
    assert_eq!(
        sim.apply_chat_action(phone, "chatstate", "4915550002@c.us", typing, 4)
            .0,
        200
    );
    let bad = Some("composing".to_owned());
    assert_eq!(
        sim.apply_chat_action(phone, "chatstate", "4915550002@c.us", bad, 5)
            .0,
        400
    );
    assert_eq!(sim.chatstates_of(phone).unwrap().len(), 1);
    assert_eq!(
        sim.apply_chat_action(phone, "picture", "4915550002@c.us", None, 6)
            .0,
        404
    );
    sim.seed_contact(ContactSeed {
        phone: phone.into(),
        id: "4915550002@c.us".into(),
        name: None,
        pushname: None,
        is_my_contact: None,
        is_business: false,
        blocked: false,
        picture: true,
    })
    .unwrap();
    let (st, url) = sim.apply_chat_action(phone, "picture", "4915550002@c.us", None, 7);
    assert!(st == 200 && url.is_some_and(|u| u.starts_with("https://")));
    assert_eq!(
        sim.apply_chat_action(phone, "block", "4915550002@c.us", None, 8)
            .0,
        200
    );
    assert!(sim.contacts_of(phone).unwrap()[0].blocked);
    assert_eq!(
        sim.apply_chat_action(phone, "block", "123@g.us", None, 9).0,
        400
    );
}
