//! Unit and property tests of the state machine: every KV, lock, session, check and index rule
//! with explicit instants (no clock, no I/O).

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

mod failure;

mod props;

mod services;

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
