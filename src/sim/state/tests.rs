//! Unit tests of the pure core.

use super::*;

fn keys(seed: u8) -> DeviceKeys {
    let b = |x: u8| base64::engine::general_purpose::STANDARD.encode([x; 32]);
    DeviceKeys {
        noise: b(seed),
        identity: b(seed.wrapping_add(1)),
        adv: b(seed.wrapping_add(2)),
        platform: "WEB".into(),
    }
}

fn timing() -> Timing {
    Timing {
        qr_first_ms: 60_000,
        qr_next_ms: 20_000,
        qr_max_rotations: 2,
        ack_device_ms: 100,
        ack_read_ms: 200,
        sync_ms: 0,
    }
}

fn qr_of(sim: &Sim, conn: ConnId) -> String {
    let c = &sim.conns[&conn];
    let k = c.keys.as_ref().unwrap();
    format!(
        "{},{},{},{},{}",
        c.reference.as_ref().unwrap(),
        k.noise,
        k.identity,
        k.adv,
        k.platform
    )
}

fn fresh(sim: &mut Sim, seed: u8, now: u64) -> ConnId {
    let c = sim.connect();
    sim.handle(
        c,
        ClientMsg::Hello {
            keys: keys(seed),
            creds: None,
            version: None,
        },
        now,
    );
    c
}

fn token_of(effects: &[Effect]) -> Creds {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Send(_, ServerMsg::Paired { device, token, .. }) => Some(Creds {
                device: device.clone(),
                token: token.clone(),
            }),
            _ => None,
        })
        .unwrap()
}

#[test]
fn qr_rotates_after_first_period_then_every_next_and_goes_idle() {
    let mut sim = Sim::new(timing(), 1);
    let c = fresh(&mut sim, 1, 0);
    let first = sim.conns[&c].reference.clone().unwrap();
    sim.take_effects();
    sim.tick(59_999);
    assert!(sim.take_effects().is_empty());
    sim.tick(60_000);
    let second = sim.conns[&c].reference.clone().unwrap();
    assert_ne!(first, second);
    assert!(matches!(
        sim.take_effects()[..],
        [Effect::Send(_, ServerMsg::Qr { .. })]
    ));
    sim.tick(79_999);
    assert!(sim.take_effects().is_empty());
    sim.tick(80_000);
    assert!(matches!(
        sim.take_effects()[..],
        [Effect::Send(_, ServerMsg::Qr { .. })]
    ));
    sim.tick(100_000);
    assert_eq!(sim.take_effects(), vec![Effect::Send(c, ServerMsg::Idle)]);
    assert_eq!(sim.devices()[0].state, "UNPAIRED_IDLE");
    // An idle ref cannot be linked; refreshQR starts over.
    let dead = qr_of(&sim, c);
    assert!(matches!(
        sim.link_qr(&dead, "4915550001", None, 100_001),
        Err(PhoneError::Conflict("qr_expired", _))
    ));
    sim.handle(c, ClientMsg::RefreshQr, 100_002);
    assert_eq!(sim.devices()[0].state, "UNPAIRED");
    let fresh_qr = qr_of(&sim, c);
    assert!(sim.link_qr(&fresh_qr, "4915550001", None, 100_003).is_ok());
}

#[test]
fn retired_versions_are_turned_away_linked_or_not() {
    let mut sim = Sim::new(timing(), 21);
    let old = sim.web_versions().live.clone();
    let c = fresh(&mut sim, 3, 0);
    let qr = qr_of(&sim, c);
    sim.take_effects();
    let w = sim
        .set_web_versions(Some("2.3000.2-sim"), std::slice::from_ref(&old))
        .unwrap();
    assert_eq!(
        (w.live.as_str(), w.retired.clone()),
        ("2.3000.2-sim", vec![old.clone()])
    );
    assert!(sim.take_dirty());
    // The page showing a QR on the old build is told so and closed; its QR is dead.
    assert_eq!(
        sim.take_effects(),
        vec![
            Effect::Send(
                c,
                ServerMsg::Deprecated {
                    version: old.clone()
                }
            ),
            Effect::Close(c)
        ]
    );
    assert_eq!(sim.devices()[0].state, "DEPRECATED_VERSION");
    assert!(sim.link_qr(&qr, "4915550001", None, 1).is_err());
    // A page booted from a cached old index.html later: no QR either.
    let c2 = sim.connect();
    sim.handle(
        c2,
        ClientMsg::Hello {
            keys: keys(4),
            creds: None,
            version: Some(old.clone()),
        },
        2,
    );
    assert!(matches!(
        sim.take_effects()[..],
        [
            Effect::Send(_, ServerMsg::Deprecated { .. }),
            Effect::Close(_)
        ]
    ));
    // The live build still links, and the versions survive a restart.
    let c3 = sim.connect();
    sim.handle(
        c3,
        ClientMsg::Hello {
            keys: keys(5),
            creds: None,
            version: Some("2.3000.2-sim".into()),
        },
        3,
    );
    let qr3 = qr_of(&sim, c3);
    assert!(sim.link_qr(&qr3, "4915550001", None, 4).is_ok());
    let mut again = Sim::new(timing(), 22);
    again.restore(sim.snapshot());
    assert_eq!(again.web_versions(), sim.web_versions());
    // A malformed version is a protocol error.
    let c4 = sim.connect();
    sim.take_effects();
    sim.handle(
        c4,
        ClientMsg::Hello {
            keys: keys(6),
            creds: None,
            version: Some("<script>".into()),
        },
        5,
    );
    assert!(matches!(
        sim.take_effects()[..],
        [Effect::Send(_, ServerMsg::Error { .. }), Effect::Close(_)]
    ));
}

#[test]
fn link_checks_every_part_and_tells_expired_from_unknown() {
    let mut sim = Sim::new(timing(), 2);
    let c = fresh(&mut sim, 7, 0);
    let qr = qr_of(&sim, c);
    let tampered = qr.replace(",WEB", ",IOS");
    assert!(matches!(
        sim.link_qr(&tampered, "4915550001", None, 1),
        Err(PhoneError::Invalid("invalid_qr", _))
    ));
    assert!(matches!(
        sim.link_qr("a,b,c", "4915550001", None, 1),
        Err(PhoneError::Invalid("invalid_qr", _))
    ));
    assert!(matches!(
        sim.link_qr("2@nope,a,b,c,d", "4915550001", None, 1),
        Err(PhoneError::NotFound("unknown_qr", _))
    ));
    assert!(matches!(
        sim.link_qr(&qr, "12ab", None, 1),
        Err(PhoneError::Invalid("invalid_phone", _))
    ));
    sim.tick(60_000);
    assert!(matches!(
        sim.link_qr(&qr, "4915550001", None, 60_001),
        Err(PhoneError::Conflict("qr_expired", _))
    ));
    let qr2 = qr_of(&sim, c);
    let linked = sim
        .link_qr(&qr2, "4915550001", None, 60_002)
        .unwrap()
        .linked()
        .unwrap();
    assert_eq!(linked.wid, "4915550001@c.us");
    assert!(sim.take_dirty());
    assert_eq!(sim.devices()[0].state, "CONNECTED");
}

#[test]
fn stored_credentials_reconnect_until_the_phone_unlinks() {
    let mut sim = Sim::new(timing(), 3);
    let c = fresh(&mut sim, 1, 0);
    let qr = qr_of(&sim, c);
    sim.link_qr(&qr, "4915550001", Some("Ann"), 1).unwrap();
    let creds = token_of(&sim.take_effects());
    sim.disconnect(c);
    assert_eq!(sim.devices()[0].state, "OFFLINE");

    // A restarted browser, and a restarted simulator restored from the snapshot.
    let mut sim2 = Sim::new(timing(), 4);
    sim2.restore(sim.snapshot());
    let c2 = sim2.connect();
    sim2.handle(
        c2,
        ClientMsg::Hello {
            keys: keys(1),
            creds: Some(creds.clone()),
            version: None,
        },
        10,
    );
    assert_eq!(
        sim2.take_effects(),
        vec![Effect::Send(
            c2,
            ServerMsg::Connected {
                wid: "4915550001@c.us".into(),
                pushname: "Ann".into(),
                platform: PHONE_PLATFORM.into(),
                sync_ms: 0,
                lid: format!("{}@lid", lid_of("4915550001")),
                groups: vec![],
                checkpoint: None,
            }
        )]
    );
    // A wrong token is refused.
    let c3 = sim2.connect();
    let mut bad = creds.clone();
    bad.token = "00".into();
    sim2.handle(
        c3,
        ClientMsg::Hello {
            keys: keys(1),
            creds: Some(bad),
            version: None,
        },
        11,
    );
    assert!(matches!(
        sim2.take_effects()[..],
        [Effect::Send(_, ServerMsg::LoggedOut { .. })]
    ));
    assert_eq!(sim2.unlink("4915550001"), Ok(1));
    assert_eq!(
        sim2.take_effects(),
        vec![Effect::Send(
            c2,
            ServerMsg::LoggedOut {
                reason: "unlinked".into()
            }
        )]
    );
    assert!(sim2.snapshot().devices.is_empty());
    assert!(matches!(
        sim2.unlink("4915550001"),
        Err(PhoneError::NotFound(..))
    ));
}

#[test]
fn second_browser_with_same_credentials_puts_first_in_conflict() {
    let mut sim = Sim::new(timing(), 5);
    let c = fresh(&mut sim, 1, 0);
    let qr = qr_of(&sim, c);
    sim.link_qr(&qr, "4915550001", None, 1).unwrap();
    let creds = token_of(&sim.take_effects());
    let c2 = sim.connect();
    sim.handle(
        c2,
        ClientMsg::Hello {
            keys: keys(1),
            creds: Some(creds),
            version: None,
        },
        2,
    );
    let eff = sim.take_effects();
    assert!(eff.contains(&Effect::Send(c, ServerMsg::Conflict)));
    sim.handle(c, ClientMsg::Takeover, 3);
    let eff = sim.take_effects();
    assert!(eff.contains(&Effect::Send(c2, ServerMsg::Conflict)));
}

#[test]
fn pairing_code_links_only_for_the_requested_phone() {
    let mut sim = Sim::new(timing(), 6);
    let c = fresh(&mut sim, 1, 0);
    sim.take_effects();
    sim.handle(
        c,
        ClientMsg::PairCodeRequest {
            req: 9,
            phone: "4915550002".into(),
        },
        1,
    );
    let code = match &sim.take_effects()[..] {
        [Effect::Send(_, ServerMsg::PairCode { req: 9, code })] => code.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(code.len(), 8);
    let dashed = format!("{}-{}", &code[..4], code[4..].to_lowercase());
    assert!(matches!(
        sim.pair("4915550003", &dashed, None, 2),
        Err(PhoneError::NotFound("unknown_code", _))
    ));
    assert!(matches!(
        sim.pair("4915550002", "ABC", None, 2),
        Err(PhoneError::Invalid("invalid_code", _))
    ));
    assert_eq!(
        sim.pair("4915550002", &dashed, None, 2)
            .unwrap()
            .linked()
            .unwrap()
            .phone,
        "4915550002"
    );
}

#[test]
fn sent_messages_are_recorded_and_acks_advance_to_read() {
    let mut sim = Sim::new(timing(), 7);
    let c = fresh(&mut sim, 1, 0);
    let qr = qr_of(&sim, c);
    sim.link_qr(&qr, "4915550001", None, 1).unwrap();
    sim.take_effects();
    let msg = OutMsg {
        id: "true_4915550009@c.us_3EB0AA".into(),
        to: "4915550009@c.us".into(),
        kind: "chat".into(),
        body: Some("hi".into()),
        from: Some("4915550001@c.us".into()),
        ..OutMsg::default()
    };
    sim.handle(c, ClientMsg::Send { msg: msg.clone() }, 1000);
    assert_eq!(
        sim.take_effects(),
        vec![Effect::Send(
            c,
            ServerMsg::Ack {
                id: msg.id.clone(),
                ack: 1
            }
        )]
    );
    // Resending the same id does not duplicate it.
    sim.handle(c, ClientMsg::Send { msg: msg.clone() }, 1001);
    sim.take_effects();
    sim.tick(1100);
    sim.tick(1299);
    sim.tick(1300);
    let acks: Vec<u8> = sim
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send(_, ServerMsg::Ack { ack, .. }) => Some(ack),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![2, 3]);
    let list = sim.messages("4915550001").unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].to, "4915550009");
    assert_eq!(list[0].ack, 3);
    assert_eq!(list[0].text.as_deref(), Some("hi"));

    // Media: inline bytes are refused (and recorded as refused); an upload is accepted and
    // its size and hash come from the decrypted upload.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let inline = OutMsg {
        id: "true_4915550009@c.us_3EB0BA".into(),
        to: "4915550009@c.us".into(),
        from: Some("4915550001@c.us".into()),
        kind: "document".into(),
        mimetype: Some("application/pdf".into()),
        data: Some(b64(b"abc")),
        ..OutMsg::default()
    };
    sim.handle(c, ClientMsg::Send { msg: inline }, 2000);
    assert!(matches!(
        sim.take_effects()[..],
        [Effect::Send(_, ServerMsg::SendError { .. })]
    ));
    let key = [9u8; 32];
    let file = media::encrypt(b"abc", &key, "document").unwrap();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&file));
    let path = sim.upload("document", &token, file.clone()).unwrap();
    let media = OutMsg {
        id: "true_4915550009@c.us_3EB0BB".into(),
        to: "4915550009@c.us".into(),
        from: Some("4915550001@c.us".into()),
        kind: "document".into(),
        mimetype: Some("application/pdf".into()),
        filename: Some("a.pdf".into()),
        direct_path: Some(path),
        media_key: Some(b64(&key)),
        enc_filehash: Some(b64(&Sha256::digest(&file))),
        filehash: Some(b64(&Sha256::digest(b"abc"))),
        ..OutMsg::default()
    };
    sim.handle(c, ClientMsg::Send { msg: media }, 2000);
    let list = sim.messages("4915550001").unwrap();
    assert!(list[1].refused.as_deref().unwrap().contains("inline"));
    assert_eq!(list[1].ack, 0);
    let m = list[2].media.clone().unwrap();
    assert_eq!(m.size, Some(3));
    assert_eq!(
        m.sha256.as_deref(),
        Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert_eq!(list[2].uploaded, Some(true));
    // The refused one never gets acks.
    sim.tick(10_000);
    sim.tick(20_000);
    assert_eq!(sim.messages("4915550001").unwrap()[1].ack, 0);

    // Bad messages are refused with a reason.
    for bad in [
        OutMsg {
            id: "true_x@c.us_1".into(),
            to: "x@c.us".into(),
            body: Some("a".into()),
            ..OutMsg::default()
        },
        OutMsg {
            id: "false_4915550009@c.us_1".into(),
            to: "4915550009@c.us".into(),
            body: Some("a".into()),
            ..OutMsg::default()
        },
        OutMsg {
            id: "true_4915550009@c.us_1".into(),
            to: "4915550009@c.us".into(),
            kind: "image".into(),
            ..OutMsg::default()
        },
    ] {
        sim.take_effects();
        sim.handle(c, ClientMsg::Send { msg: bad }, 3000);
        assert!(matches!(
            sim.take_effects()[..],
            [Effect::Send(_, ServerMsg::SendError { .. })]
        ));
    }
}

#[test]
fn inbound_is_queued_while_offline_and_delivered_on_connect() {
    let mut sim = Sim::new(timing(), 8);
    let c = fresh(&mut sim, 1, 0);
    let qr = qr_of(&sim, c);
    sim.link_qr(&qr, "4915550001", None, 1).unwrap();
    let creds = token_of(&sim.take_effects());
    assert!(matches!(
        sim.inbound(&Inbound::text("4915550002", "4915550009", "x"), 2),
        Err(PhoneError::NotFound("unknown_phone", _))
    ));
    let id = sim
        .inbound(&Inbound::text("4915550001", "4915550009", "hello"), 2)
        .unwrap();
    assert!(id.starts_with("false_4915550009@c.us_3EB0"));
    assert!(matches!(
        sim.take_effects()[..],
        [Effect::Send(_, ServerMsg::Msg { .. })]
    ));
    sim.disconnect(c);
    sim.inbound(&Inbound::text("4915550001", "4915550009", "later"), 3)
        .unwrap();
    assert!(sim.take_effects().is_empty());
    let c2 = sim.connect();
    sim.handle(
        c2,
        ClientMsg::Hello {
            keys: keys(1),
            creds: Some(creds),
            version: None,
        },
        4,
    );
    let eff = sim.take_effects();
    assert!(eff.iter().any(|e| matches!(e,
        Effect::Send(_, ServerMsg::Msg { body, .. }) if body == "later")));
}

#[test]
fn drop_socket_refuses_reconnects_for_a_while() {
    let mut sim = Sim::new(timing(), 9);
    let c = fresh(&mut sim, 1, 0);
    let qr = qr_of(&sim, c);
    sim.link_qr(&qr, "4915550001", None, 1).unwrap();
    let creds = token_of(&sim.take_effects());
    assert_eq!(sim.drop_socket("4915550001", 1000, 10), Ok(1));
    assert_eq!(sim.take_effects(), vec![Effect::Close(c)]);
    sim.disconnect(c);
    let hello = |sim: &mut Sim, now| {
        let c = sim.connect();
        sim.handle(
            c,
            ClientMsg::Hello {
                keys: keys(1),
                creds: Some(creds.clone()),
                version: None,
            },
            now,
        );
        (c, sim.take_effects())
    };
    let (c2, eff) = hello(&mut sim, 500);
    assert_eq!(eff, vec![Effect::Close(c2)]);
    sim.disconnect(c2);
    let (_, eff) = hello(&mut sim, 1010);
    assert!(matches!(
        eff[..],
        [Effect::Send(_, ServerMsg::Connected { .. })]
    ));
    assert!(matches!(
        sim.crash("4915550001", "boom"),
        Err(PhoneError::Invalid(..))
    ));
    assert_eq!(sim.crash("4915550001", "hang"), Ok(1));
}

proptest::proptest! {
    /// Whatever pages and phones do, in any order and with any input, the core never
    /// panics, only addresses connections it knows, and persists only valid phones.
    #[test]
    fn never_panics_and_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut sim = Sim::new(timing(), 42);
        let mut now = 0u64;
        let mut conns: Vec<ConnId> = Vec::new();
        for o in ops {
            now += 37;
            let pick = |i: usize, conns: &Vec<ConnId>| conns.get(i % conns.len().max(1)).copied();
            match o {
                Op::Connect => conns.push(sim.connect()),
                Op::Disconnect(i) => {
                    if let Some(c) = pick(i, &conns) {
                        sim.disconnect(c);
                        conns.retain(|x| *x != c);
                    }
                }
                Op::Msg(i, m) => if let Some(c) = pick(i, &conns) { sim.handle(c, *m, now) },
                Op::LinkShown(i, phone) => {
                    if let Some(q) = sim.devices().get(i % 4).and_then(|d| d.qr.clone()) {
                        let _ = sim.link_qr(&q, &phone, None, now);
                    }
                }
                Op::Link(qr, phone) => { let _ = sim.link_qr(&qr, &phone, None, now); }
                Op::Pair(phone, code) => { let _ = sim.pair(&phone, &code, None, now); }
                Op::Inbound(to, from, text) => { let _ = sim.inbound(&Inbound::text(&to, &from, &text), now); }
                Op::Unlink(phone) => { let _ = sim.unlink(&phone); }
                Op::Drop(phone, ms) => { let _ = sim.drop_socket(&phone, ms, now); }
                Op::Crash(phone, mode) => { let _ = sim.crash(&phone, &mode); }
                Op::Tick(ms) => { now += ms; sim.tick(now); }
            }
            let _ = sim.messages("4915550001");
            for e in sim.take_effects() {
                let id = match e { Effect::Send(id, _) | Effect::Close(id) => id };
                proptest::prop_assert!(conns.contains(&id), "effect for unknown conn {id}");
            }
            for d in sim.snapshot().devices {
                proptest::prop_assert!(valid_phone(&d.phone));
            }
        }
    }
}

// Generated test operations, never stored in bulk: boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Op {
    Connect,
    Disconnect(usize),
    Msg(usize, Box<ClientMsg>),
    LinkShown(usize, String),
    Link(String, String),
    Pair(String, String),
    Inbound(String, String, String),
    Unlink(String),
    Drop(String, u64),
    Crash(String, String),
    Tick(u64),
}

fn phone() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just("4915550001".to_owned()),
        Just("4915550002".to_owned()),
        "[0-9a-z@,-]{0,24}",
    ]
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let keys = prop_oneof![
        Just(keys(1)),
        Just(keys(9)),
        ("[A-Za-z0-9+/=]{0,50}").prop_map(|s| {
            let mut k = keys(3);
            k.noise = s;
            k
        })
    ];
    let creds = proptest::option::of(
        ("[0-9a-f]{0,16}", "[0-9a-f]{0,64}").prop_map(|(device, token)| Creds { device, token }),
    );
    let out = (
        "[a-z0-9_@.]{0,40}",
        "[a-z0-9@.]{0,20}",
        "[a-z]{0,8}",
        proptest::option::of(".{0,10}"),
        proptest::option::of("[A-Za-z0-9+/=]{0,12}"),
        proptest::option::of(0u64..1 << 40),
    )
        .prop_map(|(id, to, kind, body, data, size)| OutMsg {
            id,
            to,
            kind,
            body,
            data,
            size,
            mimetype: Some("image/png".into()),
            ..OutMsg::default()
        });
    let msg = prop_oneof![
        (keys, creds).prop_map(|(keys, creds)| ClientMsg::Hello {
            keys,
            creds,
            version: None
        }),
        Just(ClientMsg::RefreshQr),
        (any::<u64>(), phone()).prop_map(|(req, phone)| ClientMsg::PairCodeRequest { req, phone }),
        out.prop_map(|msg| ClientMsg::Send { msg }),
        Just(ClientMsg::Logout { reason: None }),
        Just(ClientMsg::Takeover),
    ];
    prop_oneof![
        Just(Op::Connect),
        any::<usize>().prop_map(Op::Disconnect),
        (any::<usize>(), msg).prop_map(|(i, m)| Op::Msg(i, Box::new(m))),
        (any::<usize>(), phone()).prop_map(|(i, p)| Op::LinkShown(i, p)),
        (".{0,80}", phone()).prop_map(|(q, p)| Op::Link(q, p)),
        (phone(), "[A-Za-z0-9-]{0,10}").prop_map(|(p, c)| Op::Pair(p, c)),
        (phone(), phone(), ".{0,20}").prop_map(|(a, b, t)| Op::Inbound(a, b, t)),
        phone().prop_map(Op::Unlink),
        (phone(), 0u64..5_000).prop_map(|(p, ms)| Op::Drop(p, ms)),
        (phone(), "hang|oom|x").prop_map(|(p, m)| Op::Crash(p, m)),
        (0u64..200_000).prop_map(Op::Tick),
    ]
}

#[test]
fn malformed_keys_close_the_connection() {
    let mut sim = Sim::new(timing(), 10);
    let c = sim.connect();
    let mut k = keys(1);
    k.noise = "short".into();
    sim.handle(
        c,
        ClientMsg::Hello {
            keys: k,
            creds: None,
            version: None,
        },
        0,
    );
    assert!(sim.take_effects().contains(&Effect::Close(c)));
}

// --- exists queries (usync) ---

fn linked(sim: &mut Sim, phone: &str) -> ConnId {
    let c = fresh(sim, 7, 0);
    let qr = qr_of(sim, c);
    assert!(sim.link_qr(&qr, phone, None, 1).is_ok());
    sim.take_effects();
    c
}

fn exists_answer(sim: &mut Sim) -> ServerMsg {
    let effects = sim.take_effects();
    match &effects[..] {
        [Effect::Send(_, m @ (ServerMsg::Exists { .. } | ServerMsg::ExistsError { .. }))] => {
            m.clone()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exists_queries_answer_accounts_only_and_are_logged() {
    let mut sim = Sim::new(timing(), 1);
    let c = linked(&mut sim, "4915550001");
    let query = |phone: Option<&str>, lid: Option<&str>| ClientMsg::QueryExists {
        req: 1,
        phone: phone.map(str::to_owned),
        lid: lid.map(str::to_owned),
    };
    // Nobody registered this number.
    sim.handle(c, query(Some("+4915550002"), None), 5);
    assert_eq!(
        exists_answer(&mut sim),
        ServerMsg::Exists {
            req: 1,
            result: None
        }
    );
    let lid = sim.add_account("4915550002").unwrap();
    assert_eq!(lid, format!("{}@lid", lid_of("4915550002")));
    let pair = Mapping {
        pn: "4915550002@c.us".into(),
        lid: lid.clone(),
    };
    sim.handle(c, query(Some("+4915550002"), None), 6);
    assert_eq!(
        exists_answer(&mut sim),
        ServerMsg::Exists {
            req: 1,
            result: Some(pair.clone())
        }
    );
    sim.handle(c, query(None, Some(&lid)), 7);
    assert_eq!(
        exists_answer(&mut sim),
        ServerMsg::Exists {
            req: 1,
            result: Some(pair)
        }
    );
    // The linked phone itself is an account; an unknown LID is not.
    sim.handle(c, query(Some("4915550001"), None), 8);
    assert!(matches!(
        exists_answer(&mut sim),
        ServerMsg::Exists {
            result: Some(_),
            ..
        }
    ));
    sim.handle(c, query(None, Some("999999999999999@lid")), 9);
    assert_eq!(
        exists_answer(&mut sim),
        ServerMsg::Exists {
            req: 1,
            result: None
        }
    );
    sim.handle(c, query(Some("1"), Some("2@lid")), 10);
    assert!(matches!(
        exists_answer(&mut sim),
        ServerMsg::ExistsError { code: 400, .. }
    ));
    let log = sim.queries("4915550001").unwrap();
    let seen: Vec<(&str, bool)> = log.iter().map(|q| (q.kind.as_str(), q.found)).collect();
    assert_eq!(
        seen,
        [
            ("phone", false),
            ("phone", true),
            ("lid", true),
            ("phone", true),
            ("lid", false)
        ]
    );
    assert_eq!(log[0].query, "4915550002");
    assert!(sim.queries("4915550002").unwrap().is_empty());
    assert!(sim.queries("x").is_err());
    assert!(sim.add_account("12").is_err());
}

#[test]
fn exists_queries_need_a_linked_page() {
    let mut sim = Sim::new(timing(), 1);
    let c = fresh(&mut sim, 1, 0);
    sim.take_effects();
    sim.handle(
        c,
        ClientMsg::QueryExists {
            req: 4,
            phone: Some("4915550002".into()),
            lid: None,
        },
        1,
    );
    assert!(matches!(
        exists_answer(&mut sim),
        ServerMsg::ExistsError {
            req: 4,
            code: 401,
            ..
        }
    ));
}

// --- groups ---

fn group_answer(sim: &mut Sim, conn: ConnId) -> Result<serde_json::Value, u16> {
    let effects = sim.take_effects();
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Send(c, ServerMsg::GroupResult { result, .. }) if *c == conn => {
                Some(Ok(result.clone()))
            }
            Effect::Send(c, ServerMsg::GroupError { code, .. }) if *c == conn => Some(Err(*code)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no group answer in {effects:?}"))
}

fn iq(op: &str, group: Option<&str>, participants: &[&str], value: Option<&str>) -> ClientMsg {
    ClientMsg::GroupIq {
        req: 1,
        op: op.into(),
        group: group.map(str::to_owned),
        participants: participants.iter().map(|p| (*p).to_owned()).collect(),
        value: value.map(str::to_owned),
    }
}

#[test]
fn group_iqs_follow_whatsapps_rules_and_notify_members() {
    let mut sim = Sim::new(timing(), 1);
    let owner = linked(&mut sim, "4915550001");
    let peer = {
        let c = fresh(&mut sim, 8, 0);
        let qr = qr_of(&sim, c);
        assert!(sim.link_qr(&qr, "4915550002", None, 1).is_ok());
        sim.take_effects();
        c
    };
    assert!(sim.add_account("4915550003").is_ok());
    sim.handle(
        owner,
        iq(
            "create",
            None,
            &["4915550002@c.us", "4915550009@c.us"],
            Some("Team"),
        ),
        5_000,
    );
    let created = group_answer(&mut sim, owner).unwrap();
    let gid = created["wid"].as_str().unwrap().to_owned();
    // 4915550009 has no account: reported apart, not added.
    assert_eq!(
        created["invitedOutContacts"][0]["phoneNumberWid"],
        "4915550009@c.us"
    );
    // A non-admin may not add, nor see the invite code.
    sim.handle(
        peer,
        iq("add", Some(&gid), &["4915550003@c.us"], None),
        6_000,
    );
    assert_eq!(group_answer(&mut sim, peer), Err(403));
    sim.handle(peer, iq("invite", Some(&gid), &[], None), 6_000);
    assert_eq!(group_answer(&mut sim, peer), Err(401));
    // The admin adds: per participant codes, and every member's page gets the notice.
    sim.handle(
        owner,
        iq(
            "add",
            Some(&gid),
            &["4915550003@c.us", "4915550002@c.us"],
            None,
        ),
        7_000,
    );
    let effects = sim.take_effects();
    let notices: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(
                c,
                ServerMsg::GroupNotice {
                    subtype,
                    recipients,
                    ..
                },
            ) => Some((*c, subtype.clone(), recipients.clone())),
            _ => None,
        })
        .collect();
    assert!(
        notices.contains(&(peer, "add".into(), vec!["4915550003@c.us".into()])),
        "{notices:?}"
    );
    assert!(notices.iter().any(|(c, _, _)| *c == owner));
    let codes = effects
        .iter()
        .find_map(|e| match e {
            Effect::Send(c, ServerMsg::GroupResult { result, .. }) if *c == owner => {
                Some(result["participants"].clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(codes[0]["code"], "200");
    assert_eq!(codes[1]["code"], "409");
    // The owner cannot be removed; subjects over 100 characters are not acceptable.
    sim.handle(
        owner,
        iq("remove", Some(&gid), &["4915550001@c.us"], None),
        8_000,
    );
    assert_eq!(
        group_answer(&mut sim, owner).unwrap()["participants"][0]["code"],
        "403"
    );
    sim.handle(
        owner,
        iq("subject", Some(&gid), &[], Some(&"x".repeat(101))),
        8_000,
    );
    assert_eq!(group_answer(&mut sim, owner), Err(406));
    // The phone side: an admin's phone removes someone; a non-admin's phone may not.
    assert!(
        sim.phone_change_members(
            &gid,
            "remove",
            &["4915550003".into()],
            Some("4915550002"),
            9_000
        )
        .is_err()
    );
    let r = sim
        .phone_change_members(&gid, "remove", &["4915550003".into()], None, 9_000)
        .unwrap();
    assert_eq!(r[0].code, 200);
    assert_eq!(
        sim.group_state(&gid).unwrap().group.participants,
        vec!["4915550001".to_string(), "4915550002".to_string()]
    );
}
