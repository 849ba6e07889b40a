//! Unit tests of `events`.

use super::*;

#[test]
fn a_message_report_keeps_every_field_and_checks_the_untrusted_ones() {
    // base64 of 32 bytes 0x01..=0x20.
    let hash: Vec<u8> = (1..=32).collect();
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&hash)
    };
    let payload = serde_json::json!({
        "t": "message", "id": "false_123-456@g.us_3EB0AA_4915550002@c.us",
        "chat": "123-456@g.us", "from": "123-456@g.us", "author": "77001@lid",
        "author_pn": "4915550002@c.us", "push_name": "Ana", "from_me": false,
        "body": null, "caption": "look", "type": "image", "timestamp": 1700000000.0,
        "quoted_wa_id": "true_123-456@g.us_3EB0BB", "mentions": ["4915550003@c.us", 7],
        "forwarded": true, "mimetype": "image/png", "filename": null, "size": 1234.0,
        "filehash": b64,
    });
    let events = parse_report(&payload.to_string()).unwrap();
    let [EngineEvent::Message(m)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(m.chat.as_deref(), Some("123-456@g.us"));
    assert_eq!(m.author.as_deref(), Some("77001@lid"));
    assert_eq!(m.author_pn.as_deref(), Some("4915550002@c.us"));
    assert_eq!(m.push_name.as_deref(), Some("Ana"));
    assert_eq!(m.caption.as_deref(), Some("look"));
    assert_eq!(m.quoted_wa_id.as_deref(), Some("true_123-456@g.us_3EB0BB"));
    assert_eq!(
        m.mentions,
        vec!["4915550003@c.us".to_string()],
        "non-strings dropped"
    );
    assert!(m.forwarded);
    assert_eq!(m.size, Some(1234));
    assert_eq!(m.sha256.as_deref(), Some(hex::encode(&hash).as_str()));
    // A filehash that is not a SHA-256 is dropped, not passed on.
    let bad = parse_report(r#"{"t":"message","id":"x","filehash":"bm90IGEgaGFzaA=="}"#).unwrap();
    let [EngineEvent::Message(m)] = bad.as_slice() else {
        panic!("{bad:?}")
    };
    assert_eq!(m.sha256, None);
    assert_eq!(m.kind, "chat");
}

#[test]
fn parses_the_new_reports() {
    assert_eq!(
        parse_report(r#"{"t":"version","version":"2.3000.1017"}"#).unwrap(),
        vec![EngineEvent::Version {
            version: "2.3000.1017".into()
        }]
    );
    assert!(
        parse_report(r#"{"t":"version","version":"../x"}"#)
            .unwrap()
            .is_empty()
    );
    let long = format!(
        r#"{{"t":"unsupported","missing":["WAWebA.b","WAWebA.b","bad name!","{}",42,"WAWebC"],"version":"2.3000.5"}}"#,
        "x".repeat(200)
    );
    assert_eq!(
        parse_report(&long).unwrap(),
        vec![EngineEvent::Unsupported {
            missing: vec!["WAWebA.b".into(), "WAWebC".into()],
            version: Some("2.3000.5".into()),
        }]
    );
    let many: Vec<String> = (0..100).map(|i| format!("\"WAWebM{i}.x\"")).collect();
    let payload = format!(r#"{{"t":"unsupported","missing":[{}]}}"#, many.join(","));
    match &parse_report(&payload).unwrap()[0] {
        EngineEvent::Unsupported { missing, version } => {
            assert_eq!(missing.len(), MAX_MISSING_NAMES);
            assert_eq!(*version, None);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        parse_report(r#"{"t":"passkey","state":"confirmation"}"#).unwrap(),
        vec![EngineEvent::Passkey {
            state: "confirmation".into()
        }]
    );
    assert!(parse_report(r#"{"t":"passkey","state":"maybe"}"#).is_err());
    assert_eq!(
        parse_report(r#"{"t":"loading","percent":140}"#).unwrap(),
        vec![EngineEvent::Loading { percent: 100 }]
    );
    assert!(
        parse_report(r#"{"t":"loading"}"#).unwrap().is_empty(),
        "no percent, no event"
    );
    assert_eq!(
        parse_report(r#"{"t":"state","state":"DEPRECATED_VERSION"}"#).unwrap(),
        vec![
            EngineEvent::State {
                state: "DEPRECATED_VERSION".into()
            },
            EngineEvent::DeprecatedVersion
        ]
    );
    assert_eq!(split_missing("WAWebX.member.y"), ("WAWebX", "member.y"));
    assert_eq!(split_missing("WAWebX"), ("WAWebX", ""));
}

#[test]
fn qr_strings_have_five_or_six_non_empty_parts() {
    for ok in ["2@r,k1,k2,adv,WEB", "2@r,k1,k2,adv,WEB,extra"] {
        assert!(
            parse_report(&format!(r#"{{"t":"qr","value":"{ok}"}}"#)).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        "2@r,k1,k2,adv",
        "2@r,k1,,adv,WEB",
        "a,b,c,d,e,f,g",
        "2@r,k1,k2,adv,",
    ] {
        assert!(
            parse_report(&format!(r#"{{"t":"qr","value":"{bad}"}}"#)).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn versions_are_validated() {
    assert!(valid_version("2.3000.1017054950").is_some());
    assert!(valid_version("2.3000.1014590669-alpha").is_some());
    for bad in ["", ".", "..", "-x", "a/b", "a b", &"9".repeat(65)] {
        assert_eq!(valid_version(bad), None, "{bad}");
    }
}

#[test]
fn parses_each_report() {
    assert_eq!(
        parse_report(r#"{"t":"qr","value":"2@abc,k1,k2,adv,WEB"}"#).unwrap(),
        vec![EngineEvent::Qr {
            value: "2@abc,k1,k2,adv,WEB".into()
        }]
    );
    assert_eq!(
        parse_report(r#"{"t":"ready","me":"491@c.us","version":"2.3"}"#).unwrap(),
        vec![EngineEvent::Ready {
            me: Some("491@c.us".into()),
            wa_version: Some("2.3".into())
        }]
    );
    assert_eq!(
        parse_report(r#"{"t":"ack","id":"true_1@c.us_A","ack":2}"#).unwrap(),
        vec![EngineEvent::Ack {
            id: "true_1@c.us_A".into(),
            ack: 2
        }]
    );
    let msg = parse_report(
        r#"{"t":"message","id":"false_2@c.us_B","from":"2@c.us","to":"1@c.us","from_me":false,"body":"hi","type":"chat","timestamp":1700000000}"#,
    )
    .unwrap();
    match &msg[0] {
        EngineEvent::Message(m) => {
            assert_eq!(m.body.as_deref(), Some("hi"));
            assert_eq!(m.timestamp, Some(1_700_000_000));
            assert!(!m.from_me);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        parse_report(r#"{"t":"state","state":"CONFLICT"}"#).unwrap(),
        vec![
            EngineEvent::State {
                state: "CONFLICT".into()
            },
            EngineEvent::Disconnected {
                reason: "CONFLICT".into()
            }
        ]
    );
}

#[test]
fn rejects_malformed_reports() {
    assert!(parse_report("not json").is_err());
    assert!(parse_report(r#"{"t":"nope"}"#).is_err());
    assert!(parse_report(r#"{"t":"qr","value":"only,three,parts"}"#).is_err());
    assert!(parse_report(r#"{"t":"ack","id":"x","ack":99}"#).is_err());
    let huge = format!(r#"{{"t":"qr","value":"{}"}}"#, "a".repeat(MAX_REPORT_BYTES));
    assert!(matches!(parse_report(&huge), Err(ReportError::TooLarge(_))));
}
