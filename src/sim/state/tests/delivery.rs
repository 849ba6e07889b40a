//! Delivery and robustness: inbound queued while offline and delivered on connect, reconnects
//! refused for a while after a dropped socket, the property test over random operations, malformed
//! keys.

use super::*;

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
pub(super) enum Op {
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

pub(super) fn phone() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just("4915550001".to_owned()),
        Just("4915550002".to_owned()),
        "[0-9a-z@,-]{0,24}",
    ]
}

pub(super) fn op() -> impl proptest::strategy::Strategy<Value = Op> {
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
