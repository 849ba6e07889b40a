//! Unit tests of the pure core.

use super::*;

mod queries;

mod delivery;

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

// --- exists queries (usync) ---
