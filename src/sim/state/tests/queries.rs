//! The phone's answers to the page's queries: usync exists lookups (accounts only, logged, need a
//! linked page) and group IQs under WhatsApp's rules, with member notifications.

use super::*;

pub(super) fn linked(sim: &mut Sim, phone: &str) -> ConnId {
    let c = fresh(sim, 7, 0);
    let qr = qr_of(sim, c);
    assert!(sim.link_qr(&qr, phone, None, 1).is_ok());
    sim.take_effects();
    c
}

pub(super) fn exists_answer(sim: &mut Sim) -> ServerMsg {
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

pub(super) fn group_answer(sim: &mut Sim, conn: ConnId) -> Result<serde_json::Value, u16> {
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

pub(super) fn iq(
    op: &str,
    group: Option<&str>,
    participants: &[&str],
    value: Option<&str>,
) -> ClientMsg {
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
