//! Unit tests of `check`.

use super::*;
use crate::model::{Kind, SessionSnap};

fn outcome(t: u64, ws: &str, status: Option<u16>) -> Outcome {
    Outcome {
        t_ms: t,
        latency_ms: 1,
        ws: ws.into(),
        kind: Kind::Status,
        status,
        error: None,
        shard: Some(0),
        sessions: vec![("default".into(), "WORKING".into())],
    }
}

fn worker(pid: u32, session: &str, ws: &[&str]) -> WorkerSnap {
    WorkerSnap {
        shard: pid % 10,
        pid,
        session: Some(session.into()),
        term: 1,
        ready: true,
        fenced: false,
        may_run: ws.iter().map(|s| (*s).to_owned()).collect(),
        overlaps: 0,
    }
}

#[test]
fn requests_in_flight_at_the_fault_go_to_the_faulted_shard_only() {
    let mut a = outcome(90, "a", None); // on the faulted shard, answered after the fault
    a.latency_ms = 20;
    let mut b = outcome(95, "b", None); // unaffected workspace, in flight too
    b.latency_ms = 20;
    let mut c = outcome(50, "a", Some(500)); // faulted shard, done before the fault
    c.latency_ms = 10;
    let faulted: BTreeSet<String> = ["a".to_owned()].into();
    let kept = attribute_in_flight(&[a, b, c], 100, &faulted);
    let kept: Vec<(u64, &str)> = kept.iter().map(|o| (o.t_ms, o.ws.as_str())).collect();
    assert_eq!(kept, [(95, "b"), (50, "a")]);
    // The pre-fault window then sees only b's error (and c's): a is not blamed on others.
    let v = unaffected_errors(
        &attribute_in_flight(
            &[outcome(90, "a", None), outcome(95, "b", None)].map(|mut o| {
                o.latency_ms = 20;
                o
            }),
            100,
            &faulted,
        ),
        &BTreeSet::new(),
        0,
        99,
    );
    assert_eq!(v.iter().map(|v| v.t_ms).collect::<Vec<_>>(), [95]);
}

#[test]
fn unaffected_errors_only_outside_the_affected_set_and_window() {
    let affected: BTreeSet<String> = ["a".to_owned()].into();
    let o = vec![
        outcome(5, "b", Some(503)),  // before window
        outcome(10, "a", Some(503)), // affected
        outcome(11, "b", Some(200)), // fine
        outcome(12, "b", None),      // transport error on unaffected
        outcome(13, "c", Some(502)), // unaffected
        outcome(99, "c", Some(502)), // after window
    ];
    let mut o = o;
    // An unaffected session leaving WORKING is an error too, even with a 200.
    let mut starting = outcome(14, "c", Some(200));
    starting.sessions = vec![("default".into(), "STARTING".into())];
    o.push(starting);
    let v = unaffected_errors(&o, &affected, 10, 50);
    assert_eq!(v.iter().map(|v| v.t_ms).collect::<Vec<_>>(), [12, 13, 14]);
    assert!(v[0].what.contains("no answer"));
    assert!(v[2].what.contains("STARTING"), "{}", v[2].what);
}

#[test]
fn two_runners_need_confirmation_in_both_rounds() {
    let locks: BTreeMap<String, String> = [("x".to_owned(), "s1".to_owned())].into();
    // Handoff race: A runs x in round 1 only, B in round 2 only → fine.
    let r1 = [worker(1, "s1", &["x"]), worker(2, "s2", &[])];
    let r2 = [worker(1, "s1", &[]), worker(2, "s2", &["x"])];
    assert!(runners(0, &r1, &locks, &r2).is_empty());
    // Both rounds both run it → violation (and B runs it under A's lock).
    let r1 = [worker(1, "s1", &["x"]), worker(2, "s2", &["x"])];
    let v = runners(7, &r1, &locks, &r1);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].what.contains("2 worker processes"));
    assert!(v[1].what.contains("held by session s1"));
    assert_eq!(v[0].t_ms, 7);
}

#[test]
fn runner_under_a_foreign_lock_is_a_violation_but_a_free_lock_is_only_counted() {
    let r = [worker(1, "s1", &["x", "y"])];
    let locks: BTreeMap<String, String> = [("x".to_owned(), "s9".to_owned())].into();
    let v = runners(0, &r, &locks, &r);
    assert_eq!(v.len(), 1);
    assert!(v[0].what.contains("workspace x"));
    assert_eq!(runs_without_lock(&r, &locks, &r), ["y".to_owned()]);
    assert_eq!(runner_pairs(&r, &r), 2);
    // A new term (new session) in round 2 is not the same runner: no confirmation.
    let r2 = [worker(1, "s2", &["x"])];
    assert!(runners(0, &r, &locks, &r2).is_empty());
}

#[test]
fn free_lock_fails_only_when_it_lasts_the_grace() {
    let w = [worker(1, "s1", &["x"])];
    let x = vec!["x".to_owned()];
    let mut since = BTreeMap::new();
    assert!(free_lock_too_long(1000, 1000, &mut since, &x, &w).is_empty());
    // A second round moments later (the first read hung on a frozen worker): not yet.
    assert!(free_lock_too_long(1010, 1000, &mut since, &x, &w).is_empty());
    let v = free_lock_too_long(2000, 1000, &mut since, &x, &w);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].evidence["workers"][0]["pid"], 1);
    assert_eq!(v[0].evidence["first_seen_ms"], 1000);
    // Reported once per episode.
    assert!(free_lock_too_long(3000, 1000, &mut since, &x, &w).is_empty());
    // Gone, then back: a new episode with a new start.
    assert!(free_lock_too_long(3500, 1000, &mut since, &[], &w).is_empty());
    assert!(free_lock_too_long(4000, 1000, &mut since, &x, &w).is_empty());
    assert_eq!(free_lock_too_long(5000, 1000, &mut since, &x, &w).len(), 1);
}

#[test]
fn overlap_counter_growth_is_reported() {
    let mut a = worker(1, "s", &[]);
    let b = a.clone();
    a.overlaps = 2;
    assert_eq!(overlap_growth(0, std::slice::from_ref(&b), &[a]).len(), 1);
    assert!(overlap_growth(0, std::slice::from_ref(&b), std::slice::from_ref(&b)).is_empty());
}

#[test]
fn browser_main_process_and_profile_from_cmdline() {
    let main = b"/usr/lib/chromium/chromium\0--headless\0--user-data-dir=/d/workspaces/a/s/profile\0about:blank\0";
    assert_eq!(
        browser_profile(main).as_deref(),
        Some("/d/workspaces/a/s/profile")
    );
    let child = b"/usr/lib/chromium/chromium\0--type=renderer\0--user-data-dir=/d/p\0";
    assert_eq!(browser_profile(child), None);
    assert_eq!(browser_profile(b"/bin/bash\0-c\0ls\0"), None);
}

#[test]
fn duplicates_by_normalised_profile() {
    let p = |pid, prof: &str| BrowserProc {
        pid,
        start_time: 1,
        profile: prof.into(),
    };
    let d = duplicate_browsers(&[
        p(1, "/d/a/profile"),
        p(2, "/d/a/./profile/"),
        p(3, "/d/b/profile"),
    ]);
    assert_eq!(d.len(), 1);
    assert_eq!(d["/d/a/profile"].len(), 2);
    assert_eq!(browser_violations(3, &d).len(), 1);
    assert!(duplicate_browsers(&[p(1, "/x"), p(2, "/y")]).is_empty());
    // Only a duplicate with the same two processes in two scans lasts.
    assert_eq!(persistent_duplicates(&d, &d).len(), 1);
    let refused = duplicate_browsers(&[p(1, "/d/a/profile"), p(4, "/d/a/profile")]);
    assert!(persistent_duplicates(&d, &refused).is_empty());
    assert!(persistent_duplicates(&BTreeMap::new(), &d).is_empty());
}

#[test]
fn sessions_must_come_back_working_with_the_same_phone_and_no_qr() {
    let snap = |st: &str, me: Option<&str>| SessionSnap {
        status: st.into(),
        me: me.map(str::to_owned),
    };
    let key = ("a".to_owned(), "default".to_owned());
    let before: SessionTable = [(key.clone(), snap("WORKING", Some("1@c.us")))].into();
    let same = before.clone();
    assert!(sessions_restored(0, &before, &same, &[]).is_empty());
    let other: SessionTable = [(key.clone(), snap("WORKING", Some("2@c.us")))].into();
    assert_eq!(sessions_restored(0, &before, &other, &[]).len(), 1);
    assert_eq!(
        sessions_restored(0, &before, &SessionTable::new(), &[]).len(),
        1
    );
    let mut qr = outcome(4, "a", Some(200));
    qr.sessions = vec![("default".into(), "SCAN_QR_CODE".into())];
    let v = sessions_restored(9, &before, &same, &[qr]);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].t_ms, 4);
    // A session that was not WORKING before is not held to it.
    let starting: SessionTable = [(key, snap("STARTING", None))].into();
    assert!(sessions_restored(0, &starting, &SessionTable::new(), &[]).is_empty());
}

fn acc(t: u64, id: &str, text: &str) -> Accepted {
    Accepted {
        t_ms: t,
        ws: "a".into(),
        session: "default".into(),
        id: id.into(),
        text: text.into(),
    }
}

#[test]
fn message_tally_delayed_failed_lost() {
    let accepted = [
        acc(0, "m1", "t1"),
        acc(0, "m2", "t2"),
        acc(0, "m3", "t3"),
        acc(0, "m4", "t4"),
    ];
    let delivered: BTreeMap<String, u64> =
        [("t1".to_owned(), 100), ("t2".to_owned(), 9_000)].into();
    let failed: BTreeSet<String> = ["m3".to_owned()].into();
    let (t, v) = messages(1, &accepted, &delivered, &failed, 5_000);
    assert_eq!(
        t,
        MessageTally {
            accepted: 4,
            delivered: 2,
            delayed: 1,
            failed: 1,
            lost: 1
        }
    );
    assert_eq!(v.len(), 1);
    assert!(v[0].what.contains("m4"));
}

#[test]
fn webhook_tally_matches_by_message_id() {
    let accepted = [acc(0, "m1", "t1"), acc(0, "m2", "t2")];
    let r = Received {
        t_ms: 20_000,
        id: "evt_1".into(),
        event: "message.sent".into(),
        workspace: "a".into(),
        message_id: Some("m1".into()),
        deliveries: 2,
    };
    let (t, v) = webhooks(0, &accepted, &[r], 5_000);
    assert_eq!(
        t,
        WebhookTally {
            expected: 2,
            delivered: 1,
            delayed: 1,
            duplicated: 1,
            lost: 1
        }
    );
    assert!(v[0].what.contains("m2"));
}
