//! The model-based property test: random sequences of KV, CAS, lock, release and session operations
//! keep the state equal to a model of Consul's rules, with a monotonic index.

use super::*;

// === property test ===

#[derive(Debug, Clone)]
pub(super) enum Op {
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

pub(super) fn op_strategy() -> impl Strategy<Value = Op> {
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
