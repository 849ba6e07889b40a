//! Unit and property tests of the state machine: every KV, lock, session, check and index rule
//! with explicit instants (no clock, no I/O).

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn state() -> State {
    State::new(StateConfig::default())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn session(st: &mut State, now: Instant, ttl: &str, delay: Duration, behavior: &str) -> String {
    st.session_create(
        SessionCreate {
            name: "t".into(),
            ttl: ttl.into(),
            lock_delay: Some(delay),
            behavior: behavior.into(),
            ..SessionCreate::default()
        },
        now,
    )
    .expect("session")
}

fn put(st: &mut State, key: &str, v: &str, mode: PutMode, now: Instant) -> bool {
    st.kv_put(key, v.as_bytes().to_vec(), 0, mode, now)
        .expect("put")
}

fn entry(st: &State, key: &str) -> KvEntry {
    st.kv_get(key).0.cloned().expect("entry")
}

// === KV ===

#[test]
fn set_get_and_identical_writes_do_not_move_indexes() {
    let mut st = state();
    let t = Instant::now();
    assert!(put(&mut st, "a", "1", PutMode::Set, t));
    let e = entry(&st, "a");
    assert_eq!(e.create_index, e.modify_index);
    assert_eq!(st.kv_index(), e.modify_index);
    assert!(put(&mut st, "a", "1", PutMode::Set, t));
    assert_eq!(entry(&st, "a").modify_index, e.modify_index);
    assert_eq!(st.index(), e.modify_index);
    assert!(put(&mut st, "a", "2", PutMode::Set, t));
    let e2 = entry(&st, "a");
    assert!(e2.modify_index > e.modify_index);
    assert_eq!(e2.create_index, e.create_index);
}

#[test]
fn plain_put_resets_flags_to_what_was_sent() {
    let mut st = state();
    let t = Instant::now();
    st.kv_put("f", b"v".to_vec(), 7, PutMode::Set, t).unwrap();
    assert_eq!(entry(&st, "f").flags, 7);
    st.kv_put("f", b"v".to_vec(), 0, PutMode::Set, t).unwrap();
    assert_eq!(entry(&st, "f").flags, 0);
}

#[test]
fn cas_zero_creates_only_and_cas_n_matches_modify_index() {
    let mut st = state();
    let t = Instant::now();
    assert!(put(&mut st, "c", "1", PutMode::Cas(0), t));
    assert!(!put(&mut st, "c", "2", PutMode::Cas(0), t));
    let mi = entry(&st, "c").modify_index;
    assert!(!put(&mut st, "c", "2", PutMode::Cas(mi + 1), t));
    assert!(!put(&mut st, "missing", "2", PutMode::Cas(5), t));
    assert!(put(&mut st, "c", "2", PutMode::Cas(mi), t));
    assert_eq!(entry(&st, "c").value, b"2");
}

#[test]
fn deletes_leave_tombstones_that_keep_indexes_moving_forward() {
    let mut st = state();
    let t = Instant::now();
    put(&mut st, "p/a", "1", PutMode::Set, t);
    put(&mut st, "p/b", "1", PutMode::Set, t);
    put(&mut st, "q", "1", PutMode::Set, t);
    let before = st.kv_index();
    let (_, list_before) = st.kv_list("p/");
    assert!(st.kv_delete("p/b", DeleteMode::Single).unwrap());
    assert!(st.kv_index() > before);
    let (entries, list_after) = st.kv_list("p/");
    assert_eq!(entries.len(), 1);
    assert!(
        list_after > list_before,
        "a list's index must not slide backwards"
    );
    // A non-CAS delete of a missing key still answers true and changes nothing.
    let idx = st.index();
    assert!(st.kv_delete("nope", DeleteMode::Single).unwrap());
    assert_eq!(st.index(), idx);
    assert_eq!(
        st.kv_delete("", DeleteMode::Single),
        Err(StateError::BadRequest("Missing key name".into()))
    );
}

#[test]
fn tree_delete_is_greedy_and_keys_roll_up_at_the_separator() {
    let mut st = state();
    let t = Instant::now();
    for k in ["foo", "foo2", "foobar/x", "foobar/y/z", "zed"] {
        put(&mut st, k, "v", PutMode::Set, t);
    }
    let (keys, _) = st.kv_keys("", Some("/"));
    assert_eq!(keys, vec!["foo", "foo2", "foobar/", "zed"]);
    let (keys, _) = st.kv_keys("foobar/", Some("/"));
    assert_eq!(keys, vec!["foobar/x", "foobar/y/"]);
    let (keys, _) = st.kv_keys("fo", None);
    assert_eq!(keys.len(), 4);
    st.kv_delete("foo", DeleteMode::Tree).unwrap();
    let (keys, _) = st.kv_keys("", None);
    assert_eq!(keys, vec!["zed"]);
}

#[test]
fn cas_delete_rules() {
    let mut st = state();
    let t = Instant::now();
    // Missing key: success, as kvsDeleteCASTxn.
    assert!(st.kv_delete("m", DeleteMode::Cas(3)).unwrap());
    put(&mut st, "m", "1", PutMode::Set, t);
    let mi = entry(&st, "m").modify_index;
    assert!(!st.kv_delete("m", DeleteMode::Cas(mi + 1)).unwrap());
    assert!(st.kv_delete("m", DeleteMode::Cas(mi)).unwrap());
    assert!(st.kv_get("m").0.is_none());
}

#[test]
fn oversized_values_and_empty_keys_are_refused() {
    let mut st = state();
    let t = Instant::now();
    let big = vec![0u8; MAX_KV_VALUE_BYTES + 1];
    assert_eq!(
        st.kv_put("k", big, 0, PutMode::Set, t)
            .unwrap_err()
            .status(),
        413
    );
    assert!(
        st.kv_put("k", vec![0u8; MAX_KV_VALUE_BYTES], 0, PutMode::Set, t)
            .unwrap()
    );
    assert_eq!(
        st.kv_put("", Vec::new(), 0, PutMode::Set, t)
            .unwrap_err()
            .status(),
        400
    );
}

// === locks ===

#[test]
fn acquire_release_and_lock_index() {
    let mut st = state();
    let t = Instant::now();
    let s1 = session(&mut st, t, "", Duration::ZERO, "");
    let s2 = session(&mut st, t, "", Duration::ZERO, "");
    assert_eq!(
        st.kv_put("l", Vec::new(), 0, PutMode::Acquire("ghost".into()), t),
        Err(StateError::Internal("invalid session \"ghost\"".into()))
    );
    assert!(put(&mut st, "l", "a", PutMode::Acquire(s1.clone()), t));
    let e = entry(&st, "l");
    assert_eq!((e.lock_index, e.session.as_deref()), (1, Some(s1.as_str())));
    // Same session again: contents updated, LockIndex unchanged.
    assert!(put(&mut st, "l", "b", PutMode::Acquire(s1.clone()), t));
    let e = entry(&st, "l");
    assert_eq!((e.lock_index, e.value.as_slice()), (1, b"b".as_slice()));
    // Another session: refused.
    assert!(!put(&mut st, "l", "c", PutMode::Acquire(s2.clone()), t));
    // Plain writes ignore the (advisory) lock: they keep the holder but, as Consul's
    // kvsSetTxn, reset LockIndex to the request's 0.
    assert!(put(&mut st, "l", "d", PutMode::Set, t));
    let e = entry(&st, "l");
    assert_eq!((e.lock_index, e.session.as_deref()), (0, Some(s1.as_str())));
    // Re-acquiring by the holder restores nothing: same session, LockIndex stays.
    assert!(put(&mut st, "l", "d", PutMode::Acquire(s1.clone()), t));
    assert_eq!(entry(&st, "l").lock_index, 0);
    // Only the holder releases.
    assert!(!put(&mut st, "l", "", PutMode::Release(s2.clone()), t));
    assert!(!put(
        &mut st,
        "missing",
        "",
        PutMode::Release(s1.clone()),
        t
    ));
    let before = entry(&st, "l").modify_index;
    assert!(put(&mut st, "l", "", PutMode::Release(s1.clone()), t));
    let e = entry(&st, "l");
    assert_eq!((e.lock_index, e.session.clone()), (0, None));
    assert!(e.modify_index > before);
    // A new acquisition increments LockIndex.
    assert!(put(&mut st, "l", "", PutMode::Acquire(s2.clone()), t));
    assert_eq!(entry(&st, "l").lock_index, 1);
    assert!(put(&mut st, "l", "", PutMode::Release(s2.clone()), t));
    assert!(put(&mut st, "l", "", PutMode::Acquire(s1.clone()), t));
    assert_eq!(entry(&st, "l").lock_index, 2);
}

// === sessions ===

#[test]
fn session_validation() {
    let mut st = state();
    let t = Instant::now();
    let mk = |ttl: &str, behavior: &str, delay: Option<Duration>| SessionCreate {
        ttl: ttl.into(),
        behavior: behavior.into(),
        lock_delay: delay,
        ..SessionCreate::default()
    };
    for bad in ["9s", "86401s", "1ms"] {
        let e = st.session_create(mk(bad, "", None), t).unwrap_err();
        assert!(e.to_string().starts_with("Invalid Session TTL"), "{e}");
        assert_eq!(e.status(), 500);
    }
    assert!(st.session_create(mk("soon", "", None), t).is_err());
    assert!(st.session_create(mk("10s", "", None), t).is_ok());
    assert!(st.session_create(mk("86400s", "delete", None), t).is_ok());
    assert!(st.session_create(mk("24h", "", None), t).is_ok());
    assert_eq!(
        st.session_create(mk("", "explode", None), t)
            .unwrap_err()
            .to_string(),
        "Invalid Behavior setting 'explode'"
    );
    assert!(st.session_create(mk("", "", Some(secs(61))), t).is_err());
    let id = st.session_create(mk("", "", None), t).unwrap();
    assert_eq!(st.session_info(&id).0[0].lock_delay, secs(15));
    assert!(
        st.session_create(
            SessionCreate {
                node: Some("elsewhere".into()),
                ..SessionCreate::default()
            },
            t
        )
        .is_err()
    );
}

#[test]
fn renew_unknown_is_not_found() {
    let mut st = state();
    assert_eq!(
        st.session_renew("abc", Instant::now()),
        Err(StateError::NotFound("Session id 'abc' not found".into()))
    );
}

#[test]
fn ttl_expiry_happens_after_ttl_and_by_twice_ttl_and_renew_resets_it() {
    let mut st = state();
    let t0 = Instant::now();
    let id = session(&mut st, t0, "10s", secs(15), "");
    st.tick(t0 + secs(10));
    assert!(st.has_session(&id), "not invalidated at TTL");
    st.session_renew(&id, t0 + secs(15)).unwrap();
    st.tick(t0 + secs(30));
    assert!(st.has_session(&id), "renewal restarted the timer");
    st.tick(t0 + secs(35));
    assert!(
        !st.has_session(&id),
        "invalidated by 2×TTL after the renewal"
    );
}

#[test]
fn invalidation_releases_locks_and_starts_the_lock_delay() {
    let mut st = state();
    let t0 = Instant::now();
    let s1 = session(&mut st, t0, "10s", secs(15), "release");
    let s2 = session(&mut st, t0, "", secs(15), "release");
    assert!(put(
        &mut st,
        "lock",
        "owner1",
        PutMode::Acquire(s1.clone()),
        t0
    ));
    let before = entry(&st, "lock");
    let t_inv = t0 + secs(20);
    assert!(st.tick(t_inv));
    let e = entry(&st, "lock");
    assert_eq!(e.session, None);
    assert_eq!(e.value, b"owner1");
    assert!(e.modify_index > before.modify_index);
    // During the lock delay an acquire answers false...
    assert!(!put(
        &mut st,
        "lock",
        "",
        PutMode::Acquire(s2.clone()),
        t_inv + secs(14)
    ));
    // ...and succeeds afterwards, with a new LockIndex.
    assert!(put(
        &mut st,
        "lock",
        "",
        PutMode::Acquire(s2.clone()),
        t_inv + secs(15)
    ));
    assert_eq!(entry(&st, "lock").lock_index, 2);
}

#[test]
fn delete_behavior_deletes_held_keys_and_destroy_starts_the_lock_delay() {
    let mut st = state();
    let t0 = Instant::now();
    let s1 = session(&mut st, t0, "", secs(5), "delete");
    let s2 = session(&mut st, t0, "", secs(5), "release");
    assert!(put(&mut st, "eph", "x", PutMode::Acquire(s1.clone()), t0));
    let idx = st.kv_index();
    assert!(st.session_destroy(&s1, t0));
    assert!(st.kv_get("eph").0.is_none());
    assert!(st.kv_index() > idx);
    assert!(!put(
        &mut st,
        "eph",
        "",
        PutMode::Acquire(s2.clone()),
        t0 + secs(4)
    ));
    assert!(put(
        &mut st,
        "eph",
        "",
        PutMode::Acquire(s2.clone()),
        t0 + secs(5)
    ));
    // Destroy is idempotent.
    assert!(st.session_destroy(&s1, t0));
}

#[test]
fn zero_lock_delay_allows_immediate_reacquire() {
    let mut st = state();
    let t0 = Instant::now();
    let s1 = session(&mut st, t0, "", Duration::ZERO, "");
    let s2 = session(&mut st, t0, "", Duration::ZERO, "");
    assert!(put(&mut st, "k", "", PutMode::Acquire(s1.clone()), t0));
    st.session_destroy(&s1, t0);
    assert!(put(&mut st, "k", "", PutMode::Acquire(s2), t0));
}

// === services and checks ===

fn register(st: &mut State, id: &str, tags: &[&str], checks: Vec<CheckDefinition>, now: Instant) {
    st.register_service(
        ServiceRegistration {
            id: Some(id.into()),
            name: "web".into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            port: 8080,
            checks,
            ..ServiceRegistration::default()
        },
        now,
    )
    .expect("register");
}

fn ttl_check(ttl: u64) -> CheckDefinition {
    CheckDefinition {
        ttl: Some(secs(ttl)),
        ..CheckDefinition::default()
    }
}

fn status_of(st: &State, id: &str) -> Status {
    st.checks().find(|c| c.id == id).expect("check").status
}

#[test]
fn checks_start_critical_pass_and_expire() {
    let mut st = state();
    let t0 = Instant::now();
    register(&mut st, "web-1", &[], vec![ttl_check(10)], t0);
    assert_eq!(status_of(&st, "service:web-1"), Status::Critical);
    st.update_ttl_check("service:web-1", Status::Passing, "ok", t0 + secs(1))
        .unwrap();
    assert_eq!(status_of(&st, "service:web-1"), Status::Passing);
    st.tick(t0 + secs(10));
    assert_eq!(status_of(&st, "service:web-1"), Status::Passing);
    st.tick(t0 + secs(11));
    assert_eq!(status_of(&st, "service:web-1"), Status::Critical);
    let c = st.checks().find(|c| c.id == "service:web-1").unwrap();
    assert_eq!(c.output, "TTL expired");
    assert_eq!(
        st.update_ttl_check("nope", Status::Passing, "", t0),
        Err(StateError::NotFound(
            "CheckID \"nope\" does not have associated TTL".into()
        ))
    );
}

#[test]
fn auto_check_ids_and_explicit_initial_status() {
    let mut st = state();
    let t0 = Instant::now();
    register(
        &mut st,
        "web-2",
        &[],
        vec![
            ttl_check(10),
            CheckDefinition {
                ttl: Some(secs(10)),
                status: Some(Status::Passing),
                ..CheckDefinition::default()
            },
        ],
        t0,
    );
    assert_eq!(status_of(&st, "service:web-2:1"), Status::Critical);
    assert_eq!(status_of(&st, "service:web-2:2"), Status::Passing);
    let c = st.checks().find(|c| c.id == "service:web-2:1").unwrap();
    assert_eq!(c.name, "Service 'web' check");
}

#[test]
fn reregistration_keeps_check_status() {
    let mut st = state();
    let t0 = Instant::now();
    register(&mut st, "w", &["a"], vec![ttl_check(30)], t0);
    st.update_ttl_check("service:w", Status::Passing, "", t0)
        .unwrap();
    let idx = st.health_service("web").1;
    register(&mut st, "w", &["a"], vec![ttl_check(30)], t0 + secs(1));
    assert_eq!(status_of(&st, "service:w"), Status::Passing);
    assert_eq!(
        st.health_service("web").1,
        idx,
        "an identical re-register changes nothing"
    );
}

#[test]
fn deregister_critical_service_after_is_clamped_to_the_minimum() {
    let mut st = state();
    let t0 = Instant::now();
    register(
        &mut st,
        "dying",
        &[],
        vec![CheckDefinition {
            ttl: Some(secs(10)),
            deregister_critical_after: Some(secs(5)),
            ..CheckDefinition::default()
        }],
        t0,
    );
    // Critical from the start; the minimum (1m) applies, not 5s.
    st.tick(t0 + secs(30));
    assert!(st.service("dying").is_some());
    st.tick(t0 + secs(60));
    assert!(st.service("dying").is_none());
    assert!(st.checks().next().is_none());
}

#[test]
fn passing_checks_are_not_reaped() {
    let mut st = state();
    let t0 = Instant::now();
    register(
        &mut st,
        "alive",
        &[],
        vec![CheckDefinition {
            ttl: Some(secs(100)),
            deregister_critical_after: Some(secs(60)),
            ..CheckDefinition::default()
        }],
        t0,
    );
    st.update_ttl_check("service:alive", Status::Passing, "", t0)
        .unwrap();
    st.tick(t0 + secs(90));
    assert!(st.service("alive").is_some());
}

#[test]
fn sessions_bound_to_a_check_die_when_it_turns_critical() {
    let mut st = state();
    let t0 = Instant::now();
    register(&mut st, "w", &[], vec![ttl_check(10)], t0);
    let err = st
        .session_create(
            SessionCreate {
                service_checks: vec!["service:w".into()],
                ..SessionCreate::default()
            },
            t0,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "Check 'service:w' is in critical state");
    st.update_ttl_check("service:w", Status::Passing, "", t0)
        .unwrap();
    let id = st
        .session_create(
            SessionCreate {
                service_checks: vec!["service:w".into()],
                lock_delay: Some(Duration::ZERO),
                ..SessionCreate::default()
            },
            t0,
        )
        .unwrap();
    assert!(put(&mut st, "k", "", PutMode::Acquire(id.clone()), t0));
    st.update_ttl_check("service:w", Status::Critical, "down", t0)
        .unwrap();
    assert!(!st.has_session(&id));
    assert_eq!(entry(&st, "k").session, None);
}

#[test]
fn health_includes_serf_health_and_indexes_are_per_service() {
    let mut st = state();
    let t0 = Instant::now();
    register(&mut st, "w1", &["shard-1"], vec![ttl_check(10)], t0);
    st.register_service(
        ServiceRegistration {
            name: "other".into(),
            checks: vec![ttl_check(10)],
            ..ServiceRegistration::default()
        },
        t0,
    )
    .unwrap();
    let (entries, web_idx) = st.health_service("web");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].checks[0].id, SERF_CHECK_ID);
    assert_eq!(entries[0].checks[0].status, Status::Passing);
    assert_eq!(entries[0].aggregated(), Status::Critical);
    st.update_ttl_check("service:other", Status::Passing, "", t0)
        .unwrap();
    assert_eq!(
        st.health_service("web").1,
        web_idx,
        "other service's change"
    );
    st.update_ttl_check("service:w1", Status::Passing, "", t0)
        .unwrap();
    let (entries, idx2) = st.health_service("web");
    assert!(idx2 > web_idx);
    assert_eq!(entries[0].aggregated(), Status::Passing);
    st.deregister_service("w1", t0);
    let (entries, idx3) = st.health_service("web");
    assert!(entries.is_empty());
    assert!(idx3 > idx2, "deregistration moves the index forward");
    let (catalog, _) = st.catalog_services();
    assert!(catalog.contains_key("other") && catalog.contains_key("consul"));
    assert!(!catalog.contains_key("web"));
}

#[test]
fn dns_instances_skip_critical_and_distinguish_unknown() {
    let mut st = state();
    let t0 = Instant::now();
    register(&mut st, "w1", &["shard-1"], vec![ttl_check(10)], t0);
    assert_eq!(st.dns_instances("web", None).map(|v| v.len()), Some(0));
    assert!(st.dns_instances("nope", None).is_none());
    st.update_ttl_check("service:w1", Status::Warning, "", t0)
        .unwrap();
    assert_eq!(
        st.dns_instances("WEB", Some("Shard-1")).map(|v| v.len()),
        Some(1)
    );
    assert_eq!(
        st.dns_instances("web", Some("shard-2")).map(|v| v.len()),
        Some(0)
    );
}

#[test]
fn forget_services_removes_everything_registered() {
    let mut st = state();
    let t0 = Instant::now();
    register(&mut st, "w1", &[], vec![ttl_check(10)], t0);
    st.forget_services(t0);
    assert!(st.services().next().is_none());
    assert!(st.checks().next().is_none());
}

// === txn ===

fn op(verb: &str, key: &str, value: &str) -> TxnKvOp {
    TxnKvOp {
        verb: verb.into(),
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
        index: 0,
        session: String::new(),
    }
}

#[test]
fn txn_is_all_or_nothing_with_one_index() {
    let mut st = state();
    let t = Instant::now();
    let res = st
        .txn(
            &[op("set", "a", "1"), op("set", "b", "2"), op("get", "a", "")],
            t,
        )
        .unwrap();
    assert_eq!(res.len(), 3);
    assert!(!res[0].with_value && res[2].with_value);
    assert_eq!(res[0].entry.modify_index, res[1].entry.modify_index);
    let before = st.clone();
    let errs = st
        .txn(
            &[
                op("set", "a", "changed"),
                TxnKvOp {
                    index: 999,
                    ..op("cas", "b", "x")
                },
                op("get", "zzz", ""),
            ],
            t,
        )
        .unwrap_err();
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].op_index, 1);
    assert_eq!(errs[0].what, "failed to set key \"b\", index is stale");
    assert_eq!(errs[1].what, "key \"zzz\" doesn't exist");
    assert_eq!(entry(&st, "a").value, b"1");
    assert_eq!(st.index(), before.index());
}

#[test]
fn txn_lock_unlock_and_checks() {
    let mut st = state();
    let t = Instant::now();
    let s = session(&mut st, t, "", Duration::ZERO, "");
    let lock = TxnKvOp {
        session: s.clone(),
        ..op("lock", "l", "v")
    };
    st.txn(std::slice::from_ref(&lock), t).unwrap();
    let check = TxnKvOp {
        session: s.clone(),
        ..op("check-session", "l", "")
    };
    st.txn(&[check], t).unwrap();
    let other = session(&mut st, t, "", Duration::ZERO, "");
    let errs = st
        .txn(
            &[TxnKvOp {
                session: other.clone(),
                ..op("lock", "l", "")
            }],
            t,
        )
        .unwrap_err();
    assert_eq!(
        errs[0].what,
        "failed to lock key \"l\", lock is already held"
    );
    let errs = st
        .txn(
            &[TxnKvOp {
                session: other,
                ..op("unlock", "l", "")
            }],
            t,
        )
        .unwrap_err();
    assert!(errs[0].what.starts_with("failed to unlock key"));
    assert!(st.txn(&[op("check-not-exists", "l", "")], t).is_err());
    assert!(st.txn(&[op("check-not-exists", "free", "")], t).is_ok());
    let mi = entry(&st, "l").modify_index;
    assert!(
        st.txn(
            &[TxnKvOp {
                index: mi,
                ..op("check-index", "l", "")
            }],
            t
        )
        .is_ok()
    );
    assert!(
        st.txn(
            &[TxnKvOp {
                index: mi,
                ..op("delete-cas", "l", "")
            }],
            t
        )
        .is_ok()
    );
    assert!(st.kv_get("l").0.is_none());
    assert!(st.txn(&[op("frobnicate", "x", "")], t).is_err());
}

// === property test ===

#[derive(Debug, Clone)]
enum Op {
    Create {
        slot: usize,
        ttl: bool,
        delay_s: u64,
        delete: bool,
    },
    Renew(usize),
    Destroy(usize),
    Acquire {
        slot: usize,
        key: usize,
    },
    Release {
        slot: usize,
        key: usize,
    },
    Set(usize),
    Cas {
        key: usize,
        stale: bool,
    },
    Delete(usize),
    Advance(u64),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, any::<bool>(), 0..20u64, any::<bool>()).prop_map(
            |(slot, ttl, delay_s, delete)| {
                Op::Create {
                    slot,
                    ttl,
                    delay_s,
                    delete,
                }
            }
        ),
        (0..3usize).prop_map(Op::Renew),
        (0..3usize).prop_map(Op::Destroy),
        (0..3usize, 0..3usize).prop_map(|(slot, key)| Op::Acquire { slot, key }),
        (0..3usize, 0..3usize).prop_map(|(slot, key)| Op::Release { slot, key }),
        (0..3usize).prop_map(Op::Set),
        (0..3usize, any::<bool>()).prop_map(|(key, stale)| Op::Cas { key, stale }),
        (0..3usize).prop_map(Op::Delete),
        (1..30u64).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_consul_invariants(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        let keys = ["k0", "k1", "k2"];
        let mut st = state();
        let t0 = Instant::now();
        let mut now = t0;
        let mut slots: [Option<String>; 3] = [None, None, None];
        let mut created: Vec<String> = Vec::new();
        // Model: key → end of the lock delay started by the last invalidation of its holder.
        let mut delay_until: std::collections::BTreeMap<String, Instant> = Default::default();
        let mut last_index = st.index();
        let mut last_kv_index = st.kv_index();
        let mut lock_index: std::collections::BTreeMap<String, u64> = Default::default();
        for op in ops {
            // Record which session holds which key, to model lock delays on invalidation.
            let holders: Vec<(String, String)> = st
                .kv_entries()
                .filter_map(|e| e.session.clone().map(|s| (e.key.clone(), s)))
                .collect();
            // Every session ever created, not just the ones still in a slot: a replaced
            // session can still hold locks and expire.
            let sessions_before: Vec<(String, Duration)> = created
                .iter()
                .filter_map(|id| st.session_info(id).0.first().map(|s| (s.id.clone(), s.lock_delay)))
                .collect();
            match op {
                Op::Create { slot, ttl, delay_s, delete } => {
                    let id = st.session_create(SessionCreate {
                        ttl: if ttl { "10s".into() } else { String::new() },
                        lock_delay: Some(secs(delay_s)),
                        behavior: if delete { "delete".into() } else { "release".into() },
                        ..SessionCreate::default()
                    }, now).unwrap();
                    created.push(id.clone());
                    slots[slot] = Some(id);
                }
                Op::Renew(slot) => {
                    if let Some(id) = &slots[slot] {
                        let alive = st.has_session(id);
                        prop_assert_eq!(st.session_renew(id, now).is_ok(), alive);
                    }
                }
                Op::Destroy(slot) => {
                    if let Some(id) = &slots[slot] {
                        st.session_destroy(id, now);
                    }
                }
                Op::Acquire { slot, key } => {
                    if let Some(id) = slots[slot].clone() {
                        let k = keys[key];
                        let held_by_other = st.kv_get(k).0.and_then(|e| e.session.clone()).is_some_and(|s| s != id);
                        let in_delay = delay_until.get(k).is_some_and(|t| now < *t);
                        match st.kv_put(k, vec![1], 0, PutMode::Acquire(id.clone()), now) {
                            Ok(true) => {
                                prop_assert!(!in_delay, "acquired {} during its lock delay", k);
                                prop_assert!(!held_by_other, "acquired {} held by another session", k);
                            }
                            Ok(false) => prop_assert!(in_delay || held_by_other),
                            Err(_) => prop_assert!(!st.has_session(&id)),
                        }
                    }
                }
                Op::Release { slot, key } => {
                    if let Some(id) = slots[slot].clone() {
                        let k = keys[key];
                        let holder = st.kv_get(k).0.and_then(|e| e.session.clone());
                        let ok = st.kv_put(k, vec![], 0, PutMode::Release(id.clone()), now).unwrap();
                        prop_assert_eq!(ok, holder.as_deref() == Some(id.as_str()));
                    }
                }
                Op::Set(key) => {
                    st.kv_put(keys[key], vec![2], 0, PutMode::Set, now).unwrap();
                    // Consul: a plain write resets LockIndex to 0.
                    lock_index.remove(keys[key]);
                }
                Op::Cas { key, stale } => {
                    let k = keys[key];
                    let cur = st.kv_get(k).0.map(|e| e.modify_index).unwrap_or(0);
                    let ok = st.kv_put(k, vec![3], 0, PutMode::Cas(if stale { cur + 1 } else { cur }), now).unwrap();
                    prop_assert_eq!(ok, !stale);
                    if ok {
                        lock_index.remove(k);
                    }
                }
                Op::Delete(key) => { st.kv_delete(keys[key], DeleteMode::Single).unwrap(); }
                Op::Advance(s) => {
                    now += secs(s);
                    st.tick(now);
                }
            }
            // Any session that disappeared started the lock delay on the keys it held.
            for (id, delay) in sessions_before {
                if !st.has_session(&id) {
                    for (k, holder) in &holders {
                        if *holder == id && !delay.is_zero() {
                            delay_until.insert(k.clone(), now + delay);
                        }
                    }
                }
            }
            // Invariants.
            prop_assert!(st.index() >= last_index, "global index went backwards");
            prop_assert!(st.kv_index() >= last_kv_index, "KV index went backwards");
            last_index = st.index();
            last_kv_index = st.kv_index();
            for e in st.kv_entries() {
                if let Some(s) = &e.session {
                    prop_assert!(st.has_session(s), "{} held by invalidated session {}", e.key, s);
                }
                prop_assert!(e.modify_index <= st.index());
                prop_assert!(e.create_index <= e.modify_index);
                let prev = lock_index.insert(e.key.clone(), e.lock_index).unwrap_or(0);
                prop_assert!(e.lock_index >= prev, "LockIndex went backwards on {}", e.key);
            }
            for k in keys {
                if st.kv_get(k).0.is_none() {
                    lock_index.remove(k);
                }
            }
            // No TTL session outlives 2×TTL since its last renewal: checked by expiring every
            // session deadline through tick, so none may have a deadline in the past.
            for id in slots.iter().flatten() {
                if let Some(s) = st.session_info(id).0.first() {
                    prop_assert!(s.expires_at.is_none_or(|t| t > now));
                }
            }
        }
    }
}

#[test]
fn node_checks_apply_to_every_service_and_service_checks_can_be_added() {
    let mut st = state();
    let t0 = Instant::now();
    register(&mut st, "w1", &[], vec![], t0);
    let (_, idx) = st.health_service("web");
    st.register_check(
        CheckDefinition {
            name: Some("node-ok".into()),
            ttl: Some(secs(10)),
            ..CheckDefinition::default()
        },
        None,
        t0,
    )
    .unwrap();
    let (entries, idx2) = st.health_service("web");
    assert!(idx2 > idx, "a node check wakes every service's watchers");
    assert_eq!(entries[0].checks.len(), 2);
    assert_eq!(entries[0].aggregated(), Status::Critical);
    assert_eq!(st.dns_instances("web", None).map(|v| v.len()), Some(0));
    st.update_ttl_check("node-ok", Status::Passing, "", t0)
        .unwrap();
    assert_eq!(st.dns_instances("web", None).map(|v| v.len()), Some(1));
    // A check attached to an existing service.
    st.register_check(
        CheckDefinition {
            check_id: Some("extra".into()),
            name: Some("Service 'web' check".into()),
            ttl: Some(secs(10)),
            ..CheckDefinition::default()
        },
        Some("w1"),
        t0,
    )
    .unwrap();
    let c = st.checks().find(|c| c.id == "extra").unwrap();
    assert_eq!(
        (c.service_id.as_str(), c.name.as_str()),
        ("w1", "Service 'web' check")
    );
    assert!(
        st.register_check(CheckDefinition::default(), None, t0)
            .is_err()
    );
    assert!(
        st.register_check(
            CheckDefinition {
                name: Some("x".into()),
                ..CheckDefinition::default()
            },
            Some("ghost"),
            t0
        )
        .is_err()
    );
    st.deregister_check("node-ok", t0);
    st.deregister_check("extra", t0);
    let (entries, _) = st.health_service("web");
    assert_eq!(entries[0].checks.len(), 1);
}

// === failure detection (serfHealth critical without a leave) ===

#[test]
fn a_failed_node_invalidates_only_the_sessions_that_include_serf_health() {
    let mut st = state();
    let t = Instant::now();
    let node = st.config().node.clone();
    let serf = session(&mut st, t, "10s", secs(5), "release");
    let ttl_only = st
        .session_create(
            SessionCreate {
                name: "ttl-only".into(),
                ttl: "10s".into(),
                node_checks: Some(Vec::new()),
                ..SessionCreate::default()
            },
            t,
        )
        .expect("ttl-only session");
    assert!(put(&mut st, "a", "1", PutMode::Acquire(serf.clone()), t));
    assert!(put(
        &mut st,
        "b",
        "1",
        PutMode::Acquire(ttl_only.clone()),
        t
    ));
    let before = st.index();

    assert_eq!(st.node_fail(&node, t), 1);
    assert!(
        st.index() > before,
        "the change is visible to blocking queries"
    );
    assert!(st.serf_critical(&node));
    let check = st.serf_check();
    assert_eq!(check.status, Status::Critical);
    assert_eq!(check.output, "Agent not live or unreachable");
    // The node stays registered (no leave); the serfHealth session is gone with its lock,
    // under the lock delay; the TTL-only session keeps its lock.
    assert!(st.has_node(&node));
    assert!(!st.has_session(&serf));
    assert!(st.has_session(&ttl_only));
    assert_eq!(entry(&st, "a").session, None);
    assert!(!put(
        &mut st,
        "a",
        "2",
        PutMode::Acquire(ttl_only.clone()),
        t + secs(1)
    ));
    assert_eq!(entry(&st, "b").session.as_deref(), Some(ttl_only.as_str()));
    assert!(st.session_renew(&ttl_only, t + secs(2)).is_ok());
    // While critical, a new session with serfHealth is refused, as Consul refuses a session on
    // a critical check; a TTL-only one is accepted.
    let refused = st.session_create(SessionCreate::default(), t + secs(2));
    assert!(
        matches!(&refused, Err(StateError::Internal(m)) if m.contains("critical")),
        "{refused:?}"
    );
    // Idempotent while failed.
    assert_eq!(st.node_fail(&node, t + secs(3)), 0);

    let before = st.index();
    st.node_alive(&node);
    assert!(st.index() > before);
    assert!(!st.serf_critical(&node));
    assert_eq!(st.serf_check().status, Status::Passing);
    assert!(
        st.session_create(SessionCreate::default(), t + secs(4))
            .is_ok()
    );
    // Alive twice changes nothing.
    let before = st.index();
    st.node_alive(&node);
    assert_eq!(st.index(), before);
}

#[test]
fn an_unknown_or_departed_node_cannot_fail() {
    let mut st = state();
    let t = Instant::now();
    let node = st.config().node.clone();
    assert_eq!(st.node_fail("nobody", t), 0);
    assert!(!st.serf_critical("nobody"));
    st.node_leave(&node, t);
    assert_eq!(st.node_fail(&node, t), 0);
    assert!(!st.serf_critical(&node));
    // Joining again starts healthy.
    st.node_join(&node);
    assert_eq!(st.serf_check().status, Status::Passing);
}
