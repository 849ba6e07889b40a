//! Property test: random sequences of KV, lock and session operations, run through the client
//! against the built-in agent, agree with a model of Consul's rules after every step:
//! the index never goes backwards, each key has at most the one holder the model expects,
//! locks are released (or keys deleted) when their session is invalidated, and the lock delay
//! refuses acquisition after an invalidation. Few cases (CI has 2 cores).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};
use wafleet::consul::session;
use wafleet::consul::*;
use wafleet::shutdown::CancellationToken;

const KEYS: usize = 3;
const SLOTS: usize = 3;
const DEAD: &str = "00000000-0000-0000-0000-00000000dead";

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: usize,
        value: u8,
    },
    CasPut {
        key: usize,
        stale: bool,
        value: u8,
    },
    Delete {
        key: usize,
    },
    Create {
        slot: usize,
        delay: bool,
        delete: bool,
    },
    Acquire {
        key: usize,
        slot: usize,
        value: u8,
    },
    Release {
        key: usize,
        slot: usize,
    },
    Destroy {
        slot: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    let s = 0..SLOTS;
    prop_oneof![
        1 => (k.clone(), any::<u8>()).prop_map(|(key, value)| Op::Put { key, value }),
        1 => (k.clone(), any::<bool>(), any::<u8>()).prop_map(|(key, stale, value)| Op::CasPut {
            key,
            stale,
            value
        }),
        1 => k.clone().prop_map(|key| Op::Delete { key }),
        3 => (s.clone(), any::<bool>(), any::<bool>()).prop_map(|(slot, delay, delete)| Op::Create {
            slot,
            delay,
            delete
        }),
        5 => (k.clone(), s.clone(), any::<u8>()).prop_map(|(key, slot, value)| Op::Acquire {
            key,
            slot,
            value
        }),
        2 => (k.clone(), s.clone()).prop_map(|(key, slot)| Op::Release { key, slot }),
        2 => s.prop_map(|slot| Op::Destroy { slot }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct KeyModel {
    value: Vec<u8>,
    holder: Option<String>,
    lock_index: u64,
}

#[derive(Debug, Clone)]
struct SessionModel {
    id: String,
    delay: bool,
    delete: bool,
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<usize, KeyModel>,
    sessions: [Option<SessionModel>; SLOTS],
    delayed: BTreeSet<usize>,
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

async fn run_case(c: &Client, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let prefix = format!("prop/{}", ulid::Ulid::new().to_string().to_lowercase());
    let key = |i: usize| format!("{prefix}/k{i}");
    let mut m = Model::default();
    let mut last_index = 0u64;
    let q = QueryOptions::default();
    let e = |e: ConsulError| fail(format!("unexpected error: {e}"));
    for (step, op) in ops.iter().enumerate() {
        match op.clone() {
            Op::Put { key: k, value } => {
                prop_assert!(
                    c.kv_put(&key(k), &[value], &PutOptions::default())
                        .await
                        .map_err(e)?
                );
                let entry = m.keys.entry(k).or_insert(KeyModel {
                    value: vec![],
                    holder: None,
                    lock_index: 0,
                });
                entry.value = vec![value];
                // kvsSetTxn takes LockIndex from the request: 0 for a plain write.
                entry.lock_index = 0;
            }
            Op::CasPut {
                key: k,
                stale,
                value,
            } => {
                let current = c
                    .kv_get(&key(k), &q)
                    .await
                    .map_err(e)?
                    .0
                    .map(|p| p.modify_index);
                let cas = match (current, stale) {
                    (Some(i), false) => i,
                    (Some(i), true) => i + 1000,
                    (None, false) => 0,
                    (None, true) => 12_345,
                };
                let ok = c
                    .kv_put(
                        &key(k),
                        &[value],
                        &PutOptions {
                            cas: Some(cas),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(e)?;
                prop_assert_eq!(ok, !stale, "step {}: {:?}", step, op);
                if ok {
                    let entry = m.keys.entry(k).or_insert(KeyModel {
                        value: vec![],
                        holder: None,
                        lock_index: 0,
                    });
                    entry.value = vec![value];
                    // kvsSetTxn takes LockIndex from the request: 0 for a plain write.
                    entry.lock_index = 0;
                }
            }
            Op::Delete { key: k } => {
                prop_assert!(
                    c.kv_delete(&key(k), &DeleteOptions::default())
                        .await
                        .map_err(e)?
                );
                m.keys.remove(&k);
            }
            Op::Create {
                slot,
                delay,
                delete,
            } => {
                if m.sessions[slot].is_none() {
                    let req = SessionRequest {
                        name: format!("prop-{slot}"),
                        ttl: None,
                        behavior: if delete {
                            SessionBehavior::Delete
                        } else {
                            SessionBehavior::Release
                        },
                        lock_delay: Some(if delay {
                            Duration::from_secs(60)
                        } else {
                            Duration::ZERO
                        }),
                        node_checks: None,
                    };
                    let id = c.session_create(&req).await.map_err(e)?;
                    m.sessions[slot] = Some(SessionModel { id, delay, delete });
                }
            }
            Op::Acquire {
                key: k,
                slot,
                value,
            } => {
                let sid = m.sessions[slot].as_ref().map(|s| s.id.clone());
                let r =
                    session::acquire(c, &key(k), sid.as_deref().unwrap_or(DEAD), &[value]).await;
                match sid {
                    // Consul checks the lock delay (on the leader, before raft) ahead of the
                    // session (in the FSM): a dead session is refused with `false` during the
                    // delay and with 500 "invalid session" after it.
                    None if m.delayed.contains(&k) => {
                        prop_assert!(matches!(r, Ok(false)), "step {}: {:?}", step, r)
                    }
                    None => prop_assert!(
                        matches!(r, Err(ConsulError::Status { status: 500, .. })),
                        "step {}: dead session acquire gave {:?}",
                        step,
                        r
                    ),
                    Some(sid) => {
                        let got = r.map_err(e)?;
                        let holder = m.keys.get(&k).and_then(|km| km.holder.clone());
                        let expected = match &holder {
                            Some(h) => *h == sid,
                            None => !m.delayed.contains(&k),
                        };
                        prop_assert_eq!(
                            got,
                            expected,
                            "step {}: {:?} holder {:?} delayed {}",
                            step,
                            op,
                            holder,
                            m.delayed.contains(&k)
                        );
                        if got {
                            let entry = m.keys.entry(k).or_insert(KeyModel {
                                value: vec![],
                                holder: None,
                                lock_index: 0,
                            });
                            if entry.holder.is_none() {
                                entry.lock_index += 1;
                            }
                            entry.holder = Some(sid);
                            entry.value = vec![value];
                        }
                    }
                }
            }
            Op::Release { key: k, slot } => {
                let sid = m.sessions[slot]
                    .as_ref()
                    .map(|s| s.id.clone())
                    .unwrap_or_else(|| DEAD.to_owned());
                let got = session::release(c, &key(k), &sid).await.map_err(e)?;
                let expected = m
                    .keys
                    .get(&k)
                    .is_some_and(|km| km.holder.as_deref() == Some(sid.as_str()));
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
                if got {
                    let entry = m.keys.get_mut(&k).expect("held key exists");
                    entry.holder = None;
                    entry.value = vec![];
                }
            }
            Op::Destroy { slot } => {
                if let Some(s) = m.sessions[slot].take() {
                    prop_assert!(c.session_destroy(&s.id).await.map_err(e)?);
                    let held: Vec<usize> = m
                        .keys
                        .iter()
                        .filter(|(_, km)| km.holder.as_deref() == Some(s.id.as_str()))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in held {
                        if s.delay {
                            m.delayed.insert(k);
                        }
                        if s.delete {
                            m.keys.remove(&k);
                        } else if let Some(km) = m.keys.get_mut(&k) {
                            km.holder = None;
                        }
                    }
                }
            }
        }
        // Invariants after every step: the store equals the model; the index never goes back.
        let (list, meta) = c.kv_list(&format!("{prefix}/"), &q).await.map_err(e)?;
        let (_, single) = c.kv_get(&key(0), &q).await.map_err(e)?;
        prop_assert!(
            single.index >= last_index,
            "step {}: index went backwards {} -> {}",
            step,
            last_index,
            single.index
        );
        last_index = single.index;
        let mut seen = BTreeMap::new();
        for p in &list {
            prop_assert!(p.modify_index <= single.index);
            prop_assert!(
                meta.index >= p.modify_index,
                "list index below an entry's ModifyIndex"
            );
            let i: usize = p
                .key
                .rsplit('k')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| fail(format!("odd key {}", p.key)))?;
            seen.insert(
                i,
                KeyModel {
                    value: p.value_bytes().to_vec(),
                    holder: p.session.clone(),
                    lock_index: p.lock_index,
                },
            );
        }
        prop_assert_eq!(&seen, &m.keys, "step {}: after {:?}", step, op);
    }
    for s in m.sessions.iter().flatten() {
        c.session_destroy(&s.id).await.map_err(e)?;
    }
    Ok(())
}

#[test]
fn kv_lock_session_sequences_keep_consuls_invariants() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let agent = rt
        .block_on(wafleet::consul_dev::spawn(
            wafleet::consul_dev::AgentConfig::default(),
            cancel.clone(),
        ))
        .unwrap();
    let client = Client::new(&Config::http(agent.http_addr())).unwrap();
    let mut runner = TestRunner::new(PtConfig {
        cases: 40,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        rt.block_on(run_case(&client, ops))
    });
    cancel.cancel();
    if let Err(e) = result {
        panic!("{e}");
    }
}
