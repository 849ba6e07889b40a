//! Unit tests of `chats`.

use super::*;

#[test]
fn chat_ids_are_people_lids_or_groups() {
    for ok in [
        "4915550002@c.us",
        "123456789012345@lid",
        "120363025246125486@g.us",
        "4915550002-1600000000@g.us",
    ] {
        assert!(is_chat_id(ok), "{ok}");
    }
    for bad in [
        "",
        "1234@c.us",
        "49x5550002@c.us",
        "-123456@g.us",
        "12345-@g.us",
        "1-2-345678@g.us",
        "status@broadcast",
        "../etc@c.us",
        "123456@newsletter",
    ] {
        assert!(!is_chat_id(bad), "{bad}");
    }
    assert!(!is_contact_id("120363025246125486@g.us"));
}

#[test]
fn pages_are_checked() {
    let msg = json!({"id": "false_4915550002@c.us_3EB0AA", "chat": "4915550002@c.us", "from": "4915550002@c.us",
        "from_me": false, "body": "hi", "type": "chat", "timestamp": 1700000000, "mentions": []});
    let page = parse_chat_page(
        &json!({"chats": [{"id": "4915550002@c.us", "name": "Ann", "unread_count": 3,
        "archived": false, "pinned": true, "pin": 1700000001, "muted": false, "is_group": false,
        "timestamp": 1700000000, "last_message": msg}], "more": true}),
    )
    .unwrap();
    assert!(page.more);
    let c = &page.chats[0];
    assert_eq!((c.unread_count, c.pinned, c.pin), (3, true, 1_700_000_001));
    assert_eq!(c.last_message.as_ref().unwrap().body.as_deref(), Some("hi"));
    assert_eq!(c.cursor().t, 1_700_000_000);
    assert!(parse_chat_page(&json!({"chats": [{"id": "../x"}]})).is_err());
    assert!(parse_chat_page(&json!({"chats": "no"})).is_err());
    let h = parse_history(&json!({"messages": [msg], "more": false})).unwrap();
    assert_eq!(h.messages.len(), 1);
    assert!(parse_history(&json!({"messages": [{"body": 1}]})).is_err());
    let cp = parse_contact_page(
        &json!({"contacts": [{"id": "123456789012345@lid", "pn": "4915550002@c.us",
        "lid": "123456789012345@lid", "name": null, "push_name": "A", "is_blocked": true}]}),
    )
    .unwrap();
    assert!(cp.contacts[0].is_blocked && !cp.more);
    assert!(
        parse_contact_page(&json!({"contacts": [{"id": "4915550002@c.us", "pn": "x@lid"}]}))
            .is_err()
    );
}

#[test]
fn chat_states_round_trip() {
    for s in ["typing", "recording", "paused"] {
        assert_eq!(ChatState::parse(s).unwrap().as_str(), s);
    }
    assert_eq!(ChatState::parse("composing"), None);
}
