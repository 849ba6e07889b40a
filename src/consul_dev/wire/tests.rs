//! Unit tests of `wire`.

use super::*;

#[test]
fn lock_delay_numbers_below_1000_are_seconds() {
    let s = decode_session_create(br#"{"LockDelay": 15}"#).unwrap();
    assert_eq!(s.lock_delay, Some(Duration::from_secs(15)));
    let s = decode_session_create(br#"{"LockDelay": 15000000000}"#).unwrap();
    assert_eq!(s.lock_delay, Some(Duration::from_secs(15)));
    let s = decode_session_create(br#"{"LockDelay": "2s", "TTL": "10s"}"#).unwrap();
    assert_eq!(s.lock_delay, Some(Duration::from_secs(2)));
    assert_eq!(s.ttl, "10s");
    assert!(decode_session_create(b"").unwrap().lock_delay.is_none());
    assert!(decode_session_create(b"{nope").is_err());
    assert!(decode_session_create(br#"{"LockDelay": "soon"}"#).is_err());
}

#[test]
fn registration_accepts_both_spellings_and_both_check_fields() {
    let r = decode_service_registration(
        br#"{"name":"web","id":"web-1","Port":80,"Check":{"TTL":"15s"},
             "Checks":[{"HTTP":"http://127.0.0.1:1/h","Interval":"5s","CheckID":"h"}],
             "Unknown": 1}"#,
    )
    .unwrap();
    assert_eq!(r.name, "web");
    assert_eq!(r.id.as_deref(), Some("web-1"));
    assert_eq!(r.checks.len(), 2);
    assert_eq!(r.checks[0].ttl, Some(Duration::from_secs(15)));
    assert_eq!(r.checks[1].check_id.as_deref(), Some("h"));
    assert!(decode_service_registration(br#"{"Name":"x","Port":70000}"#).is_err());
    assert!(decode_service_registration(b"[]").is_err());
}

#[test]
fn kv_value_is_null_when_empty() {
    let e = KvEntry {
        key: "k".into(),
        create_index: 1,
        modify_index: 2,
        lock_index: 0,
        flags: 0,
        value: Vec::new(),
        session: None,
    };
    let v = kv_json(&e, true);
    assert!(v["Value"].is_null());
    assert!(v.get("Session").is_none());
    let v = kv_json(
        &KvEntry {
            value: b"test".to_vec(),
            session: Some("s".into()),
            ..e
        },
        true,
    );
    assert_eq!(v["Value"], "dGVzdA==");
    assert_eq!(v["Session"], "s");
}

#[test]
fn txn_decoding() {
    let ops = decode_txn(br#"[{"KV":{"Verb":"set","Key":"a","Value":"dGVzdA=="}}]"#).unwrap();
    assert_eq!(ops[0].value, b"test");
    assert!(decode_txn(br#"[{"Node":{}}]"#).is_err());
    assert!(decode_txn(br#"{"KV":1}"#).is_err());
    assert!(decode_txn(br#"[{"KV":{"Verb":"set","Key":"a","Value":"!!"}}]"#).is_err());
}
