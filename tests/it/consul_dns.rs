//! DNS through [`SrvResolver`] against the built-in agent's DNS interface (UDP on loopback):
//! SRV plus address for both target forms Consul uses, critical instances left out (warning
//! kept, as Consul does by default), unknown names as empty answers.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use wafleet::consul::dns::{SrvTarget, parse_target, shard_srv_name};
use wafleet::consul::registration::Registration;
use wafleet::consul::*;
use wafleet::consul_dev::{AgentConfig, RunningAgent};
use wafleet::shutdown::{CancellationToken, TaskTracker};

struct Fixture {
    client: Client,
    agent: RunningAgent,
    resolver: SrvResolver,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn fixture() -> Fixture {
    let cancel = CancellationToken::new();
    let agent = wafleet::consul_dev::spawn(AgentConfig::default(), cancel.clone())
        .await
        .unwrap();
    let dns = agent.dns_addr().to_string();
    Fixture {
        client: Client::new(&Config::http(agent.http_addr())).unwrap(),
        resolver: SrvResolver::from_lookup(|k| (k == "WAFLEET_CONSUL_DNS").then(|| dns.clone()))
            .unwrap(),
        agent,
        tracker: TaskTracker::new(),
        cancel,
    }
}

fn worker(id: &str, shard: u32, address: &str, port: u16) -> Registration {
    let svc = ServiceRegistration {
        id: id.into(),
        name: WORKER_SERVICE.into(),
        tags: vec![format!("shard-{shard}")],
        address: address.into(),
        port,
        ..Default::default()
    };
    let mut r = Registration::new(svc, Duration::from_secs(30));
    r.pass_every = Some(Duration::from_millis(200));
    r
}

async fn keep(f: &Fixture, r: Registration) -> RegistrationKeeper {
    RegistrationKeeper::start(&f.client, r, &f.tracker, f.cancel.child_token())
        .await
        .unwrap()
}

async fn eventually_resolves(f: &Fixture, shard: u32, want: &[SocketAddr]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut got = f.resolver.resolve_shard(shard).await.unwrap();
        got.sort();
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shard {shard}: got {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain hickory resolver on the agent, to look at the raw answer.
fn raw_resolver(agent: &RunningAgent) -> hickory_resolver::TokioResolver {
    let mut conn = ConnectionConfig::udp();
    conn.port = agent.dns_addr().port();
    let ns = NameServerConfig::new(agent.dns_addr().ip(), true, vec![conn]);
    hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn srv_with_node_and_addr_targets() {
    let f = fixture().await;
    // No service address: target is <node>.node.<dc>.consul. with the A record in ADDITIONAL.
    let _a = keep(&f, worker("wafleet-worker-1", 1, "", 5001)).await;
    // Explicit address: target is <hex-ip>.addr.<dc>.consul.
    let _b = keep(&f, worker("wafleet-worker-2", 2, "127.0.0.1", 5002)).await;
    eventually_resolves(&f, 1, &["127.0.0.1:5001".parse().unwrap()]).await;
    eventually_resolves(&f, 2, &["127.0.0.1:5002".parse().unwrap()]).await;

    let raw = raw_resolver(&f.agent);
    let one = raw.srv_lookup(shard_srv_name(1)).await.unwrap();
    let RData::SRV(srv) = &one.answers()[0].data else {
        panic!("not SRV")
    };
    let target = srv.target.to_ascii();
    assert!(
        matches!(parse_target(&target), SrvTarget::Node { ref datacenter, .. } if datacenter == "dc1"),
        "{target}"
    );
    assert!(
        one.additionals()
            .iter()
            .any(|r| matches!(r.data, RData::A(_))),
        "A record in ADDITIONAL"
    );
    assert_eq!(one.answers()[0].ttl, 0, "TTL 0");
    let two = raw.srv_lookup(shard_srv_name(2)).await.unwrap();
    let RData::SRV(srv) = &two.answers()[0].data else {
        panic!("not SRV")
    };
    assert_eq!(
        parse_target(&srv.target.to_ascii()),
        SrvTarget::Addr("127.0.0.1".parse().unwrap()),
        "{}",
        srv.target
    );
    assert_eq!(srv.port, 5002);
}

#[tokio::test]
async fn critical_instances_are_left_out() {
    let f = fixture().await;
    // Registered but never passed: new checks start critical, so DNS does not answer it.
    f.client
        .agent_service_register(&worker("wafleet-worker-3", 3, "", 5003).body())
        .await
        .unwrap();
    assert!(f.resolver.resolve_shard(3).await.unwrap().is_empty());
    f.client
        .agent_check_pass("wafleet-worker-3:ttl", None)
        .await
        .unwrap();
    eventually_resolves(&f, 3, &["127.0.0.1:5003".parse().unwrap()]).await;

    // Two instances of shard 4; one goes critical, then warning (still answered by default).
    let a = keep(&f, worker("wafleet-worker-4a", 4, "", 5041)).await;
    let _b = keep(&f, worker("wafleet-worker-4b", 4, "127.0.0.1", 5042)).await;
    eventually_resolves(
        &f,
        4,
        &[
            "127.0.0.1:5041".parse().unwrap(),
            "127.0.0.1:5042".parse().unwrap(),
        ],
    )
    .await;
    a.set_status(CheckStatus::Critical, Some("stopping".into()));
    eventually_resolves(&f, 4, &["127.0.0.1:5042".parse().unwrap()]).await;
    a.set_status(CheckStatus::Warning, None);
    eventually_resolves(
        &f,
        4,
        &[
            "127.0.0.1:5041".parse().unwrap(),
            "127.0.0.1:5042".parse().unwrap(),
        ],
    )
    .await;
    a.deregister().await.unwrap();
    eventually_resolves(&f, 4, &["127.0.0.1:5042".parse().unwrap()]).await;
}

#[tokio::test]
async fn unknown_names_are_empty_not_errors() {
    let f = fixture().await;
    assert!(f.resolver.resolve_shard(99).await.unwrap().is_empty());
    assert!(
        f.resolver
            .resolve("nothing.service.consul")
            .await
            .unwrap()
            .is_empty()
    );
}

/// A tiny DNS server on loopback UDP that answers SRV for `shard-5` *without* an ADDITIONAL
/// section (one node-form and one addr-form target) and A for the node name, counting the A
/// queries it receives.
async fn bare_dns() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use hickory_resolver::proto::op::{Message, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, SRV};
    use hickory_resolver::proto::rr::{Name, Record, RecordType};
    use std::sync::atomic::Ordering;

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let a_queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = a_queries.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.authoritative = true;
            r.add_queries(q.queries.clone());
            let Some(query) = q.queries.first() else {
                continue;
            };
            let name = query.name().to_ascii().to_ascii_lowercase();
            let node = Name::from_ascii("web1.node.dc1.consul.").unwrap();
            match (query.query_type(), name.as_str()) {
                (RecordType::SRV, "shard-5.wafleet-worker.service.consul.") => {
                    r.add_answer(Record::from_rdata(
                        query.name().clone(),
                        0,
                        RData::SRV(SRV::new(1, 1, 6005, node.clone())),
                    ));
                    let hex = Name::from_ascii("7f000001.addr.dc1.consul.").unwrap();
                    r.add_answer(Record::from_rdata(
                        query.name().clone(),
                        0,
                        RData::SRV(SRV::new(1, 1, 6006, hex)),
                    ));
                }
                (RecordType::A, "web1.node.dc1.consul.") => {
                    count.fetch_add(1, Ordering::SeqCst);
                    r.add_answer(Record::from_rdata(node, 0, RData::A(A::new(127, 0, 0, 1))));
                }
                _ => r.metadata.response_code = ResponseCode::NXDomain,
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, a_queries)
}

#[tokio::test]
async fn node_targets_without_additional_records_get_a_follow_up_a_query() {
    let (addr, a_queries) = bare_dns().await;
    let resolver = SrvResolver::new(addr).unwrap();
    let mut got = resolver.resolve_shard(5).await.unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![
            "127.0.0.1:6005".parse().unwrap(),
            "127.0.0.1:6006".parse().unwrap()
        ]
    );
    assert_eq!(
        a_queries.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one A query, for the node target only"
    );
    // Nothing is cached: a second resolution asks again.
    resolver.resolve_shard(5).await.unwrap();
    assert_eq!(a_queries.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(
        resolver.resolve_shard(6).await.unwrap().is_empty(),
        "NXDOMAIN is an empty answer"
    );
}
