//! Services and checks in the state machine: registration, check status and expiry, reaping,
//! sessions bound to checks, health views per service, DNS instances and node checks.

use super::*;

// === services and checks ===

pub(super) fn register(
    st: &mut State,
    id: &str,
    tags: &[&str],
    checks: Vec<CheckDefinition>,
    now: Instant,
) {
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

pub(super) fn ttl_check(ttl: u64) -> CheckDefinition {
    CheckDefinition {
        ttl: Some(secs(ttl)),
        ..CheckDefinition::default()
    }
}

pub(super) fn status_of(st: &State, id: &str) -> Status {
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
