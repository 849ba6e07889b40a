//! The DNS interface of the built-in agent (UDP and TCP, same port), with hickory-proto for the
//! wire format: SRV and A for `[<tag>.]<service>.service[.<dc>].consul`, the RFC 2782 form
//! `_<service>._<tag>[.service][.<dc>].consul`, A for `<node>.node[.<dc>].consul` and
//! `<hex-ip>.addr[.<dc>].consul`. TTL 0; instances with a critical check are left out; unknown
//! names get NXDOMAIN, known services without a usable instance an empty answer.
//!
//! The lookup itself ([`lookup`]) is a pure function of the state; the sockets only parse,
//! call it and answer. It is not a recursor and serves no other zone.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::state::State;
use super::{PauseMode, Shared};

/// Largest UDP answer without EDNS (RFC 1035).
const UDP_MAX_PLAIN: usize = 512;

/// Binds UDP and TCP on the same port (retrying a few ports when port 0 was asked and the
/// TCP side of the chosen port is taken).
pub(super) async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..8 {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("cannot bind DNS")))
}

/// The answer to one question.
#[derive(Debug, Default)]
pub struct Answer {
    /// Response code (NoError or NXDomain; Refused outside `consul.`).
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Additional section.
    pub additionals: Vec<Record>,
}

fn hex_ip(ip: Ipv4Addr) -> String {
    hex::encode(ip.octets())
}

fn a_record(name: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), 0, RData::A(A(ip)))
}

fn nx() -> Answer {
    Answer {
        rcode: ResponseCode::NXDomain,
        ..Answer::default()
    }
}

/// Answers one question from the state.
pub fn lookup(st: &State, qname: &Name, qtype: RecordType) -> Answer {
    let cfg = st.config();
    let lower = qname.to_ascii().to_ascii_lowercase();
    let labels: Vec<&str> = lower
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
        .collect();
    let Some((&"consul", rest)) = labels.split_last() else {
        return Answer {
            rcode: ResponseCode::Refused,
            ..Answer::default()
        };
    };
    let dc = cfg.datacenter.to_ascii_lowercase();
    // Strip an optional datacenter suffix: `<dc>` or `<dc>.dc`.
    let strip_dc = |r: &[&str]| -> Option<Vec<String>> {
        let r: Vec<String> = r.iter().map(|s| s.to_string()).collect();
        match r.as_slice() {
            [head @ .., d, last] if last == "dc" => (*d == dc).then(|| head.to_vec()),
            _ => Some(r),
        }
    };
    let Some(rest) = strip_dc(rest) else {
        return nx();
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    // Forms with a type label, optionally followed by the datacenter.
    let (kind, head): (&str, Vec<&str>) = match rest.as_slice() {
        [head @ .., k @ ("service" | "node" | "addr")] => (k, head.to_vec()),
        [head @ .., k @ ("service" | "node" | "addr"), d] if *d == dc => (k, head.to_vec()),
        // RFC 2782 without the `service` label: `_svc._tag[.dc].consul`.
        [s, t] if s.starts_with('_') && t.starts_with('_') => ("service", vec![s, t]),
        [s, t, d] if s.starts_with('_') && t.starts_with('_') && *d == dc => {
            ("service", vec![s, t])
        }
        _ => return nx(),
    };
    let node_addr: Ipv4Addr = cfg.address.parse().unwrap_or(Ipv4Addr::LOCALHOST);
    match kind {
        "node" => {
            if head.len() != 1 || head[0] != cfg.node.to_ascii_lowercase() {
                return nx();
            }
            let mut a = Answer::default();
            if matches!(qtype, RecordType::A | RecordType::ANY) {
                a.answers.push(a_record(qname, node_addr));
            }
            a
        }
        "addr" => {
            let [hex] = head.as_slice() else {
                return nx();
            };
            let ip = match hex::decode(hex) {
                Ok(b) if b.len() == 4 => Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                _ => return nx(),
            };
            let mut a = Answer::default();
            if matches!(qtype, RecordType::A | RecordType::ANY) {
                a.answers.push(a_record(qname, ip));
            }
            a
        }
        _ => {
            let (service, tag) = match head.as_slice() {
                [s] => (s.to_string(), None),
                [s, t] if s.starts_with('_') && t.starts_with('_') => {
                    let tag = t.trim_start_matches('_');
                    // `_tcp`/`_udp` name a protocol, not a tag.
                    let tag = (!matches!(tag, "tcp" | "udp")).then(|| tag.to_string());
                    (s.trim_start_matches('_').to_string(), tag)
                }
                [t, s] => (s.to_string(), Some(t.to_string())),
                _ => return nx(),
            };
            let Some(instances) = st.dns_instances(&service, tag.as_deref()) else {
                return nx();
            };
            let mut a = Answer::default();
            let node_target = Name::from_ascii(format!(
                "{}.node.{}.consul.",
                cfg.node.to_ascii_lowercase(),
                dc
            ));
            for inst in instances {
                let ip: Option<Ipv4Addr> = if inst.address.is_empty() {
                    Some(node_addr)
                } else {
                    inst.address.parse().ok()
                };
                let Some(ip) = ip else { continue };
                match qtype {
                    RecordType::SRV => {
                        let target = if inst.address.is_empty() {
                            node_target.clone()
                        } else {
                            Name::from_ascii(format!("{}.addr.{dc}.consul.", hex_ip(ip)))
                        };
                        let Ok(target) = target else { continue };
                        a.answers.push(Record::from_rdata(
                            qname.clone(),
                            0,
                            RData::SRV(SRV::new(1, 1, inst.port, target.clone())),
                        ));
                        a.additionals.push(a_record(&target, ip));
                    }
                    RecordType::A | RecordType::ANY => a.answers.push(a_record(qname, ip)),
                    _ => {}
                }
            }
            a
        }
    }
}

/// Builds the response message for a request.
fn respond(shared: &Shared, req: &Message) -> Message {
    let mut resp = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.authoritative = true;
    resp.queries = req.queries.clone();
    if req.metadata.op_code != OpCode::Query || req.queries.len() != 1 {
        resp.metadata.response_code = ResponseCode::NotImp;
        return resp;
    }
    let q = &req.queries[0];
    let mut answer = {
        let st = shared.state();
        lookup(&st, q.name(), q.query_type())
    };
    // Consul shuffles answers; SRV additionals follow their answers, so shuffle both together.
    let mut pairs: Vec<(Record, Option<Record>)> =
        if answer.additionals.len() == answer.answers.len() {
            answer
                .answers
                .drain(..)
                .zip(answer.additionals.drain(..).map(Some))
                .collect()
        } else {
            answer.answers.drain(..).map(|r| (r, None)).collect()
        };
    pairs.shuffle(&mut rand::rng());
    for (ans, add) in pairs {
        resp.answers.push(ans);
        if let Some(add) = add
            && !resp.additionals.contains(&add)
        {
            resp.additionals.push(add);
        }
    }
    resp.metadata.response_code = answer.rcode;
    // Negative answers carry Consul's SOA (minimum 0) so resolvers do not cache them: a shard
    // that comes back must be visible at once.
    if resp.answers.is_empty()
        && matches!(answer.rcode, ResponseCode::NoError | ResponseCode::NXDomain)
        && let Some(soa) = soa_record(&shared.state())
    {
        resp.authorities.push(soa);
    }
    resp
}

/// `consul. 0 IN SOA ns.consul. hostmaster.consul. <serial> 3600 600 86400 0`, as Consul's
/// `addSOA` with its default `soa.min_ttl` of 0.
fn soa_record(st: &State) -> Option<Record> {
    let zone = Name::from_ascii("consul.").ok()?;
    let mname = Name::from_ascii("ns.consul.").ok()?;
    let rname = Name::from_ascii("hostmaster.consul.").ok()?;
    // Consul uses the current Unix time; the state's index moves with every change, which
    // serves the same purpose without a clock here.
    let serial = u32::try_from(st.index() % u64::from(u32::MAX)).unwrap_or(0);
    Some(Record::from_rdata(
        zone,
        0,
        RData::SOA(SOA::new(mname, rname, serial, 3600, 600, 86400, 0)),
    ))
}

enum PauseAction {
    Answer,
    Ignore,
    ServFail,
}

fn pause_action(shared: &Shared) -> PauseAction {
    match shared.faults().pause {
        None => PauseAction::Answer,
        Some(PauseMode::Hang) => PauseAction::Ignore,
        Some(PauseMode::Unavailable) => PauseAction::ServFail,
    }
}

/// Serialises a response, truncating (TC) when it exceeds `max` bytes.
fn encode(resp: &Message, max: usize) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= max {
        return Some(bytes);
    }
    let mut t = resp.truncate();
    t.queries = resp.queries.clone();
    t.to_vec().ok()
}

fn handle_packet(shared: &Shared, buf: &[u8], max_plain: Option<usize>) -> Option<Vec<u8>> {
    // Anything that does not parse as a DNS message is ignored (never answered, never a panic).
    let req = Message::from_vec(buf).ok()?;
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let resp = match pause_action(shared) {
        PauseAction::Ignore => return None,
        PauseAction::ServFail => {
            let mut m = Message::error_msg(
                req.metadata.id,
                req.metadata.op_code,
                ResponseCode::ServFail,
            );
            m.queries = req.queries.clone();
            m
        }
        PauseAction::Answer => respond(shared, &req),
    };
    let max = match max_plain {
        Some(plain) => req
            .edns
            .as_ref()
            .map(|e| usize::from(e.max_payload()).max(plain))
            .unwrap_or(plain),
        None => usize::from(u16::MAX),
    };
    encode(&resp, max)
}

/// Serves DNS over UDP until `shutdown`.
pub(super) async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "consul-dev dns: recv failed");
                    continue;
                }
            },
        };
        if let Some(out) = handle_packet(&shared, &buf[..n], Some(UDP_MAX_PLAIN))
            && let Err(e) = sock.send_to(&out, peer).await
        {
            tracing::debug!(error = %e, "consul-dev dns: send failed");
        }
    }
}

/// Serves DNS over TCP until `shutdown`.
pub(super) async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "consul-dev dns: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = tcp_conn(stream, &shared) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "consul-dev dns: tcp connection ended");
                    }
                }
            }
        });
    }
}

async fn tcp_conn(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let len = match stream.read_u16().await {
            Ok(l) => usize::from(l),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await?;
        let Some(out) = handle_packet(shared, &buf, None) else {
            continue;
        };
        let Ok(out_len) = u16::try_from(out.len()) else {
            continue;
        };
        stream.write_u16(out_len).await?;
        stream.write_all(&out).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::consul_dev::state::{CheckDefinition, ServiceRegistration, StateConfig, Status};

    fn state() -> State {
        let mut st = State::new(StateConfig::default());
        let t = Instant::now();
        for (id, tag, addr, port) in [
            ("w-1", "shard-1", "127.0.0.1", 9001),
            ("w-2", "shard-2", "", 9002),
            ("w-3", "shard-3", "127.0.0.3", 9003),
        ] {
            st.register_service(
                ServiceRegistration {
                    id: Some(id.into()),
                    name: "wafleet-worker".into(),
                    tags: vec![tag.into()],
                    address: addr.into(),
                    port,
                    checks: vec![CheckDefinition {
                        check_id: Some(format!("{id}-ttl")),
                        ttl: Some(Duration::from_secs(15)),
                        ..CheckDefinition::default()
                    }],
                    ..ServiceRegistration::default()
                },
                t,
            )
            .unwrap();
        }
        st.update_ttl_check("w-1-ttl", Status::Passing, "", t)
            .unwrap();
        st.update_ttl_check("w-2-ttl", Status::Warning, "", t)
            .unwrap();
        st
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn srv_targets(a: &Answer) -> Vec<(u16, String)> {
        let mut v: Vec<(u16, String)> = a
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn srv_targets_use_addr_or_node_names_with_a_additionals() {
        let st = state();
        let a = lookup(
            &st,
            &name("wafleet-worker.service.consul."),
            RecordType::SRV,
        );
        assert_eq!(a.rcode, ResponseCode::NoError);
        // w-3 is critical: left out; w-2 is warning: kept.
        assert_eq!(
            srv_targets(&a),
            vec![
                (9001, "7f000001.addr.dc1.consul.".to_string()),
                (9002, "wafleet-dev.node.dc1.consul.".to_string())
            ]
        );
        assert_eq!(a.additionals.len(), 2);
        assert!(a.answers.iter().all(|r| r.ttl == 0));
    }

    #[test]
    fn tag_and_rfc2782_forms() {
        let st = state();
        for q in [
            "shard-1.wafleet-worker.service.consul.",
            "SHARD-1.wafleet-worker.service.dc1.consul.",
            "_wafleet-worker._shard-1.service.consul.",
            "_wafleet-worker._shard-1.consul.",
        ] {
            let a = lookup(&st, &name(q), RecordType::SRV);
            assert_eq!(srv_targets(&a).len(), 1, "{q}");
            assert_eq!(srv_targets(&a)[0].0, 9001, "{q}");
        }
        let a = lookup(
            &st,
            &name("_wafleet-worker._tcp.service.consul."),
            RecordType::SRV,
        );
        assert_eq!(srv_targets(&a).len(), 2);
    }

    #[test]
    fn critical_only_is_empty_and_unknown_is_nxdomain() {
        let st = state();
        let a = lookup(
            &st,
            &name("shard-3.wafleet-worker.service.consul."),
            RecordType::SRV,
        );
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        let a = lookup(&st, &name("nope.service.consul."), RecordType::SRV);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        let a = lookup(
            &st,
            &name("wafleet-worker.service.dc9.consul."),
            RecordType::SRV,
        );
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        let a = lookup(&st, &name("example.com."), RecordType::A);
        assert_eq!(a.rcode, ResponseCode::Refused);
    }

    #[test]
    fn a_records_for_services_nodes_and_addrs() {
        let st = state();
        let a = lookup(
            &st,
            &name("shard-1.wafleet-worker.service.consul."),
            RecordType::A,
        );
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::LOCALHOST)));
        let a = lookup(&st, &name("wafleet-dev.node.dc1.consul."), RecordType::A);
        assert_eq!(a.answers.len(), 1);
        let a = lookup(&st, &name("7f000003.addr.dc1.consul."), RecordType::A);
        assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::new(127, 0, 0, 3))));
        assert_eq!(
            lookup(&st, &name("zz.addr.dc1.consul."), RecordType::A).rcode,
            ResponseCode::NXDomain
        );
        assert_eq!(
            lookup(&st, &name("other.node.consul."), RecordType::A).rcode,
            ResponseCode::NXDomain
        );
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::consul_dev::state::StateConfig;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Arbitrary names and arbitrary packets never panic the DNS layer.
        #[test]
        fn lookups_never_panic(labels in proptest::collection::vec("[a-z0-9_-]{1,12}", 0..6), packet in proptest::collection::vec(any::<u8>(), 0..128)) {
            let st = State::new(StateConfig::default());
            let joined = format!("{}.consul.", labels.join("."));
            if let Ok(n) = Name::from_ascii(&joined) {
                for t in [RecordType::A, RecordType::SRV, RecordType::AAAA, RecordType::ANY] {
                    let _ = lookup(&st, &n, t);
                }
            }
            let _ = Message::from_vec(&packet);
        }
    }
}
