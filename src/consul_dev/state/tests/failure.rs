//! Failure detection: a node whose serfHealth check turns critical without a leave invalidates only
//! the sessions that include serfHealth; unknown or departed nodes cannot fail.

use super::*;

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
