//! Fault injection and hostile input over HTTP: oversized values, pause and hang, dropped
//! connections, an index that goes backwards, forgotten services, and requests no parser expects.

use super::*;

#[tokio::test]
async fn kv_values_over_512_kib_are_413() {
    let a = Agent::start().await;
    let r = a.put("/v1/kv/big", vec![b'x'; 512 * 1024 + 1]).await;
    assert_eq!(r.status(), 413);
    let r = a.put("/v1/kv/big", vec![b'x'; 512 * 1024]).await;
    assert_eq!(r.status(), 200);
}

// === faults ===

#[tokio::test]
async fn pause_hang_and_unavailable_then_resume() {
    let a = Agent::start().await;
    a.post("/_dev/faults/pause", json!({"mode": "unavailable"}))
        .await;
    assert_eq!(a.get("/v1/kv/x").await.status(), 503);
    a.post("/_dev/faults/pause", json!({"mode": "hang"})).await;
    let hung = a
        .http
        .get(a.url("/v1/kv/x"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    // A request parked by the pause is answered after resume.
    let url = a.url("/v1/kv/x");
    let client = a.http.clone();
    let parked = tokio::spawn(async move { client.get(url).send().await });
    a.post("/_dev/faults/resume", json!({})).await;
    assert_eq!(parked.await.unwrap().unwrap().status(), 404);
    assert_eq!(a.get("/v1/kv/x").await.status(), 404);
}

#[tokio::test]
async fn drop_by_session_closes_the_connection_without_an_answer() {
    let a = Agent::start().await;
    let s = a.session(json!({})).await;
    a.post("/_dev/faults/drop", json!({"session": s})).await;
    let r = a
        .http
        .put(a.url(&format!("/v1/session/renew/{s}")))
        .send()
        .await;
    let e = r.expect_err("the connection is closed without a response");
    assert!(!e.is_timeout() && e.status().is_none(), "{e:?}");
    // The session ID in a query parameter counts too.
    let r = a
        .http
        .put(a.url(&format!("/v1/kv/k?acquire={s}")))
        .send()
        .await;
    assert!(r.is_err());
    // Unrelated requests are still answered.
    assert_eq!(a.get("/v1/kv/k").await.status(), 404);
    assert_eq!(a.delete("/_dev/faults").await.status(), 200);
    assert_eq!(
        a.put(&format!("/v1/session/renew/{s}"), "").await.status(),
        200
    );
}

#[tokio::test]
async fn drop_by_token() {
    let a = Agent::start().await;
    a.post("/_dev/faults/drop", json!({"token": "t1"})).await;
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .header("X-Consul-Token", "t1")
        .send()
        .await;
    assert!(r.is_err());
    let r = a
        .http
        .get(a.url("/v1/kv/x"))
        .header("X-Consul-Token", "t2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn index_goes_backwards_once() {
    let a = Agent::start().await;
    for i in 0..4 {
        a.put("/v1/kv/i", i.to_string()).await;
    }
    let idx = index_of(&a.get("/v1/kv/i").await);
    // A parked blocking query is woken by the fault and sees the lower index.
    let url = a.url(&format!("/v1/kv/i?index={idx}&wait=30s"));
    let client = a.http.clone();
    let waiter = tokio::spawn(async move { client.get(url).send().await });
    wait_parked(&a, 1).await;
    a.post("/_dev/faults/index-backwards", json!({})).await;
    let r = waiter.await.unwrap().unwrap();
    assert!(index_of(&r) < idx);
    assert_eq!(index_of(&a.get("/v1/kv/i").await), idx);
}

#[tokio::test]
async fn forget_services_as_after_an_agent_restart() {
    let a = Agent::start().await;
    register(&a, json!({"Name": "svc"})).await;
    a.post("/_dev/faults/forget-services", json!({})).await;
    let services: Value = a.get("/v1/agent/services").await.json().await.unwrap();
    assert_eq!(services, json!({}));
    let faults: Value = a.get("/_dev/faults").await.json().await.unwrap();
    assert!(faults["pause"].is_null());
}

// === DNS ===

mod dns {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::*;

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m
    }

    async fn udp(a: &Agent, name: &str, qtype: RecordType) -> Message {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&query(name, qtype).to_vec().unwrap(), a.agent.dns_addr())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("a DNS answer")
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    async fn tcp(a: &Agent, name: &str, qtype: RecordType) -> Message {
        let mut s = tokio::net::TcpStream::connect(a.agent.dns_addr())
            .await
            .unwrap();
        let bytes = query(name, qtype).to_vec().unwrap();
        s.write_u16(u16::try_from(bytes.len()).unwrap())
            .await
            .unwrap();
        s.write_all(&bytes).await.unwrap();
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    }

    async fn worker(a: &Agent, k: u32, pass: bool) {
        register(
            a,
            json!({"ID": format!("wafleet-worker-{k}"), "Name": "wafleet-worker",
                   "Tags": [format!("shard-{k}")], "Address": "127.0.0.1", "Port": 7000 + k,
                   "Check": {"CheckID": format!("ttl-{k}"), "TTL": "30s"}}),
        )
        .await;
        if pass {
            a.put(&format!("/v1/agent/check/pass/ttl-{k}"), "").await;
        }
    }

    #[tokio::test]
    async fn srv_with_address_in_additional_section_over_udp_and_tcp() {
        let a = Agent::start().await;
        worker(&a, 1, true).await;
        worker(&a, 2, false).await;
        for resp in [
            udp(
                &a,
                "shard-1.wafleet-worker.service.consul.",
                RecordType::SRV,
            )
            .await,
            tcp(
                &a,
                "shard-1.wafleet-worker.service.consul.",
                RecordType::SRV,
            )
            .await,
            udp(
                &a,
                "_wafleet-worker._shard-1.service.consul.",
                RecordType::SRV,
            )
            .await,
        ] {
            assert_eq!(resp.metadata.id, 4242);
            assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
            assert_eq!(resp.answers.len(), 1);
            assert_eq!(resp.answers[0].ttl, 0);
            let RData::SRV(srv) = &resp.answers[0].data else {
                panic!("not SRV")
            };
            assert_eq!(srv.port, 7001);
            assert_eq!(srv.target.to_ascii(), "7f000001.addr.dc1.consul.");
            assert_eq!(resp.additionals.len(), 1);
            assert_eq!(&resp.additionals[0].name, &srv.target);
        }
        // Shard 2's only instance is critical: an empty answer, not NXDOMAIN.
        let resp = udp(
            &a,
            "shard-2.wafleet-worker.service.consul.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.answers.is_empty());
        let resp = udp(&a, "nothing.service.consul.", RecordType::SRV).await;
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        // Negative answers carry an SOA with minimum 0 (no negative caching).
        let RData::SOA(soa) = &resp.authorities[0].data else {
            panic!("no SOA in the authority section")
        };
        assert_eq!(soa.minimum, 0);
        let resp = udp(&a, "wafleet-worker.service.consul.", RecordType::A).await;
        assert_eq!(resp.answers.len(), 1);
        // Passing the check of shard 2 makes it answer.
        a.put("/v1/agent/check/pass/ttl-2", "").await;
        let resp = udp(&a, "wafleet-worker.service.consul.", RecordType::SRV).await;
        assert_eq!(resp.answers.len(), 2);
    }

    #[tokio::test]
    async fn pause_affects_dns_and_garbage_is_ignored() {
        let a = Agent::start().await;
        worker(&a, 1, true).await;
        // Garbage first: no answer, no crash; the next real query is answered.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(b"\x00\x01garbage", a.agent.dns_addr())
            .await
            .unwrap();
        a.post("/_dev/faults/pause", json!({"mode": "unavailable"}))
            .await;
        let resp = udp(&a, "wafleet-worker.service.consul.", RecordType::SRV).await;
        assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
        a.post("/_dev/faults/pause", json!({"mode": "hang"})).await;
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(
            &query("wafleet-worker.service.consul.", RecordType::SRV)
                .to_vec()
                .unwrap(),
            a.agent.dns_addr(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 512];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf))
                .await
                .is_err(),
            "a paused agent does not answer"
        );
        a.delete("/_dev/faults").await;
        let resp = udp(&a, "wafleet-worker.service.consul.", RecordType::SRV).await;
        assert_eq!(resp.answers.len(), 1);
    }
}

#[tokio::test]
async fn hostile_inputs_always_get_an_answer() {
    let a = Agent::start().await;
    let cases: Vec<(reqwest::Method, &str, &str)> = vec![
        (reqwest::Method::GET, "/v1/kv/%ff%fe%00", ""),
        (reqwest::Method::PUT, "/v1/kv/a?cas=-1", "x"),
        (
            reqwest::Method::PUT,
            "/v1/kv/a?flags=99999999999999999999999",
            "x",
        ),
        (reqwest::Method::GET, "/v1/kv/?recurse&index=abc", ""),
        (
            reqwest::Method::GET,
            "/v1/kv/?recurse&index=18446744073709551615&wait=1ms",
            "",
        ),
        (reqwest::Method::PUT, "/v1/session/create", "null"),
        (reqwest::Method::PUT, "/v1/session/create", r#"{"TTL": 5}"#),
        (
            reqwest::Method::PUT,
            "/v1/session/create",
            r#"{"LockDelay": -1}"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/session/create",
            r#"{"Checks": ["nope"]}"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"TTL":"99999999h"}}"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"HTTP":"http://127.0.0.1:1/","Interval":"0s"}}"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/agent/service/register",
            r#"{"Name":"x","Checks":[{"Status":"bogus"}]}"#,
        ),
        (reqwest::Method::GET, "/v1/health/service/x?filter=((((", ""),
        (
            reqwest::Method::PUT,
            "/v1/txn",
            r#"[{"KV":{"Verb":"lock","Key":"a","Session":""}}]"#,
        ),
        (
            reqwest::Method::PUT,
            "/v1/txn",
            r#"[{"KV":{"Verb":"set","Key":"","Value":null}}]"#,
        ),
        (reqwest::Method::PUT, "/v1/agent/check/update/x", "[]"),
        (
            reqwest::Method::POST,
            "/_dev/faults/pause",
            r#"{"mode":"sideways"}"#,
        ),
        (
            reqwest::Method::POST,
            "/_dev/faults/errors",
            r#"{"status":99}"#,
        ),
        (reqwest::Method::POST, "/_dev/faults/drop", "{}"),
        (reqwest::Method::PATCH, "/v1/kv/a", ""),
        (reqwest::Method::GET, "/v1/kv/a?dc=elsewhere", ""),
    ];
    for (method, path, body) in cases {
        let r = a
            .http
            .request(method.clone(), a.url(path))
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        assert!(
            r.status().is_client_error() || r.status().is_server_error() || r.status().is_success(),
            "{method} {path}: {}",
            r.status()
        );
        if path.contains("register") || path.contains("session/create") && body != "null" {
            assert!(!r.status().is_success(), "{method} {path} {body}: accepted");
        }
    }
    // Still serving.
    assert_eq!(a.get("/v1/kv/zzz").await.status(), 404);
}
