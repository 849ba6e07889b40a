//! Unit tests of `send_types` (apart so that the module itself stays readable).

use super::*;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn err(v: Value) -> (String, String) {
    let e = parse(&obj(v), "4915550002").unwrap_err();
    (e.body.error.clone(), e.body.message.clone())
}

const TARGET: &str = "true_4915550002@c.us_3EB0ABCDEF012345";

#[test]
fn text_stays_the_default_and_old_bodies_parse_as_before() {
    let p = parse(&obj(json!({"to": "x", "text": "hi"})), "4915550002").unwrap();
    assert_eq!(p.kind, "text");
    assert_eq!(p.stored["text"], "hi");
    let p = parse(
        &obj(
            json!({"to": "x", "media": {"data": "aGk=", "mimetype": "image/png", "caption": "c"}}),
        ),
        "4915550002",
    )
    .unwrap();
    assert_eq!((p.kind, p.stored["caption"].as_str()), ("media", Some("c")));
    assert_eq!(err(json!({"to": "x"})).0, "invalid_body");
    assert_eq!(
        err(json!({"to": "x", "text": "a", "media": {}})).0,
        "invalid_body"
    );
    assert_eq!(err(json!({"to": "x", "text": ""})).0, "invalid_text");
}

#[test]
fn mentions_are_rendered_into_the_text() {
    let p = parse(
        &obj(json!({"to": "x", "text": "hi @4915550003", "mentions": ["+49 1555 0003", "4915550004@c.us"], "reply_to": TARGET})),
        "4915550002",
    )
    .unwrap();
    assert_eq!(p.stored["text"], "hi @4915550003 @4915550004");
    assert_eq!(
        p.stored["mentions"],
        json!(["4915550003@c.us", "4915550004@c.us"])
    );
    assert_eq!(p.stored["reply_to"], TARGET);
    // @491555000 is a prefix of another number, not a mention of it.
    let p = parse(
        &obj(json!({"to": "x", "text": "@49155500031", "mentions": ["4915550003"]})),
        "4915550002",
    )
    .unwrap();
    assert_eq!(p.stored["text"], "@49155500031 @4915550003");
}

#[test]
fn message_keys_are_checked() {
    // Other chat, not own.
    let other = "true_4915550009@c.us_3EB0ABCDEF012345";
    assert!(
        err(json!({"to": "x", "type": "reaction", "wa_id": other, "emoji": "👍"}))
            .1
            .contains("wa_id")
    );
    let theirs = "false_4915550002@c.us_3EB0ABCDEF012345";
    assert!(
        err(json!({"to": "x", "type": "delete", "wa_id": theirs}))
            .1
            .contains("sent")
    );
    assert!(
        parse(
            &obj(json!({"to": "x", "type": "reaction", "wa_id": theirs, "emoji": ""})),
            "4915550002"
        )
        .is_ok()
    );
    assert!(
        parse(
            &obj(json!({"to": "x", "type": "forward", "wa_id": other})),
            "4915550002"
        )
        .is_ok()
    );
}

#[test]
fn every_bad_field_is_named() {
    let cases = [
        (json!({"type": "fax"}), "type"),
        (
            json!({"type": "location", "location": {"latitude": 91, "longitude": 0}}),
            "location.latitude",
        ),
        (
            json!({"type": "location", "location": {"latitude": 1, "longitude": -180.5}}),
            "location.longitude",
        ),
        (
            json!({"type": "location", "location": {"latitude": 1, "longitude": 1, "city": "x"}}),
            "location.city",
        ),
        (
            json!({"type": "contact", "contact": {"name": "", "phones": ["4915550003"]}}),
            "contact.name",
        ),
        (
            json!({"type": "contact", "contact": {"name": "A", "phones": []}}),
            "contact.phones",
        ),
        (
            json!({"type": "contact", "contact": {"name": "A", "phones": ["12"]}}),
            "contact.phones[0]",
        ),
        (
            json!({"type": "poll", "poll": {"name": "Q", "options": ["a"]}}),
            "poll.options",
        ),
        (
            json!({"type": "poll", "poll": {"name": "Q", "options": ["a", "a"]}}),
            "poll.options[1]",
        ),
        (
            json!({"type": "poll", "poll": {"name": "Q", "options": ["a", "b"], "multiple": "yes"}}),
            "poll.multiple",
        ),
        (
            json!({"type": "reaction", "wa_id": TARGET, "emoji": "ok"}),
            "emoji",
        ),
        (
            json!({"type": "reaction", "wa_id": "nope", "emoji": "👍"}),
            "wa_id",
        ),
        (json!({"type": "edit", "wa_id": TARGET}), "text"),
        (
            json!({"type": "text", "text": "a", "mentions": ["x"]}),
            "mentions[0]",
        ),
        (
            json!({"type": "text", "text": "a", "link_preview": 1}),
            "link_preview",
        ),
        (json!({"type": "text", "text": "a", "colour": 1}), "colour"),
        (
            json!({"type": "voice", "media": {"data": "aGk="}, "caption": "c"}),
            "caption",
        ),
        (
            json!({"type": "image", "media": {"data": "aGk=", "size": 1}}),
            "media.size",
        ),
    ];
    for (body, field) in cases {
        let mut body = obj(body);
        body.insert("to".into(), json!("x"));
        let e = parse(&body, "4915550002").unwrap_err();
        assert!(
            e.body.message.contains(field),
            "{body:?}: {} does not name {field}",
            e.body.message
        );
    }
    let ok = obj(
        json!({"to": "x", "type": "poll", "poll": {"name": "Q", "options": ["a", "b"], "multiple": true}}),
    );
    assert_eq!(
        parse(&ok, "4915550002").unwrap().stored["poll"]["multiple"],
        true
    );
}

#[test]
fn contact_cards_carry_the_vcard() {
    let p = parse(
        &obj(json!({"to": "x", "type": "contact", "contact": {"name": "Ann", "phones": ["+49 1555 0003"]}})),
        "4915550002",
    )
    .unwrap();
    assert!(
        p.stored["vcard"]
            .as_str()
            .unwrap()
            .contains("waid=4915550003:+4915550003")
    );
}
