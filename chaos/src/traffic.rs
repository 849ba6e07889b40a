//! I/O: the workload. Creates the workspaces' sessions (and links them through the simulator
//! when the worker runs real sessions), then keeps steady, bounded-rate traffic on every
//! workspace through the router — a status read every tick, a send every few ticks when the
//! fleet supports sends — recording every outcome with its instant.
//!
//! Every loop stops on the cancellation token or at its own deadline, whichever comes first.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::{Accepted, Kind, Outcome, SessionSnap, SessionTable};

/// Shared, append-only record of the run.
pub struct Recorder {
    start: Instant,
    /// Request outcomes.
    pub outcomes: Mutex<Vec<Outcome>>,
    /// Messages accepted with 202.
    pub accepted: Mutex<Vec<Accepted>>,
    seq: AtomicU64,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            outcomes: Mutex::new(Vec::new()),
            accepted: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn push(&self, o: Outcome) {
        if let Ok(mut v) = self.outcomes.lock() {
            v.push(o);
        }
    }

    /// A copy of the outcomes so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// A copy of the accepted messages so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// What the workload needs to reach the fleet.
#[derive(Clone)]
pub struct Target {
    /// HTTP client.
    pub http: reqwest::Client,
    /// Router base URL.
    pub router: String,
    /// Admin token.
    pub admin: String,
}

/// How a workspace's traffic runs.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// Interval between two status reads of one workspace.
    pub interval: Duration,
    /// Send a message every `send_every` ticks (0 = never).
    pub send_every: u64,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Hard stop.
    pub max_duration: Duration,
    /// Session id used in every workspace.
    pub session: String,
    /// Run id plus a per-process random nonce: message texts and idempotency keys stay unique
    /// even when a fixed `--run-id` is reused against the same fleet.
    pub run_id: String,
}

/// One status read; parses the shard, the error code and the sessions.
pub async fn status_read(t: &Target, rec: &Recorder, ws: &str, timeout: Duration) -> Outcome {
    let t_ms = rec.now_ms();
    let started = Instant::now();
    let resp = t
        .http
        .get(format!("{}/v1/workspaces/{ws}/sessions", t.router))
        .bearer_auth(&t.admin)
        .timeout(timeout)
        .send()
        .await;
    let mut o = Outcome {
        t_ms,
        latency_ms: 0,
        ws: ws.to_owned(),
        kind: Kind::Status,
        status: None,
        error: None,
        shard: None,
        sessions: Vec::new(),
    };
    match resp {
        Err(e) => o.error = Some(transport(&e)),
        Ok(r) => {
            o.status = Some(r.status().as_u16());
            o.shard = shard_header(&r);
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if o.ok() {
                o.sessions = body
                    .get("sessions")
                    .and_then(|s| s.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| {
                                Some((
                                    s.get("session")?.as_str()?.to_owned(),
                                    s.get("status")?.as_str()?.to_owned(),
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
            } else {
                o.error = body
                    .get("error")
                    .and_then(|e| e.as_str())
                    .map(str::to_owned);
                if o.shard.is_none() {
                    o.shard = body.get("shard").and_then(|s| s.as_u64()).map(|s| s as u32);
                }
            }
        }
    }
    o.latency_ms = started.elapsed().as_millis() as u64;
    o
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

fn shard_header(r: &reqwest::Response) -> Option<u32> {
    r.headers()
        .get("x-wafleet-shard")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The phone number the simulator links workspace number `i` to.
pub fn phone_for(i: usize) -> String {
    format!("4915{:08}", 10_000_000 + i)
}

/// One send; records the outcome and, on 202, the accepted message.
async fn send(t: &Target, rec: &Recorder, cfg: &TrafficConfig, ws: &str) {
    let n = rec.seq.fetch_add(1, Ordering::Relaxed);
    let text = format!("chaos {} {ws} #{n}", cfg.run_id);
    let t_ms = rec.now_ms();
    let started = Instant::now();
    let resp = t
        .http
        .post(format!(
            "{}/v1/workspaces/{ws}/sessions/{}/messages",
            t.router, cfg.session
        ))
        .bearer_auth(&t.admin)
        .header("idempotency-key", format!("{}-{n}", cfg.run_id))
        .json(&serde_json::json!({"to": "491700000000", "text": text}))
        .timeout(cfg.request_timeout)
        .send()
        .await;
    let mut o = Outcome {
        t_ms,
        latency_ms: 0,
        ws: ws.to_owned(),
        kind: Kind::Send,
        status: None,
        error: None,
        shard: None,
        sessions: Vec::new(),
    };
    match resp {
        Err(e) => o.error = Some(transport(&e)),
        Ok(r) => {
            o.status = Some(r.status().as_u16());
            o.shard = shard_header(&r);
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if o.status == Some(202) {
                if let Some(id) = body.get("id").and_then(|i| i.as_str())
                    && let Ok(mut v) = rec.accepted.lock()
                {
                    v.push(Accepted {
                        t_ms,
                        ws: ws.to_owned(),
                        session: cfg.session.clone(),
                        id: id.to_owned(),
                        text,
                    });
                }
            } else {
                o.error = body
                    .get("error")
                    .and_then(|e| e.as_str())
                    .map(str::to_owned);
            }
        }
    }
    o.latency_ms = started.elapsed().as_millis() as u64;
    rec.push(o);
}

/// Steady traffic on one workspace until `stop` or `cfg.max_duration`.
pub async fn workspace_loop(
    t: Target,
    rec: std::sync::Arc<Recorder>,
    cfg: TrafficConfig,
    ws: String,
    offset: Duration,
    stop: CancellationToken,
) {
    let deadline = Instant::now() + cfg.max_duration;
    let mut tick = tokio::time::interval_at(Instant::now() + offset, cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => return,
        }
        let o = status_read(&t, &rec, &ws, cfg.request_timeout).await;
        rec.push(o);
        n += 1;
        if cfg.send_every > 0 && n.is_multiple_of(cfg.send_every) {
            send(&t, &rec, &cfg, &ws).await;
        }
    }
}

/// Creates session `session` in `ws` (201, or 409 when it exists), retrying 503 until
/// `timeout`.
pub async fn create_session(
    t: &Target,
    ws: &str,
    session: &str,
    webhook: Option<&str>,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + timeout;
    // Chaos traffic sends faster than the anti-ban default pacing (one message per 3 s), so with
    // the defaults a backlog builds up and outlasts every recovery deadline: the run would measure
    // pacing, not failover. Against the simulator nobody is banned, so the sessions send briskly.
    let mut body = serde_json::json!({
        "session": session,
        "pacing": {"interval_ms": 100, "jitter_ms": 20, "burst": 10, "typing": false, "send_seen": false},
    });
    if let Some(url) = webhook {
        body["webhook"] =
            serde_json::json!({"url": url, "secret": "chaos-webhook-secret", "events": []});
    }
    loop {
        let r = t
            .http
            .post(format!("{}/v1/workspaces/{ws}/sessions", t.router))
            .bearer_auth(&t.admin)
            .json(&body)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        let last = match r {
            Ok(r) if r.status().is_success() || r.status().as_u16() == 409 => {
                return Ok(r.json().await.unwrap_or_default());
            }
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("create {ws}/{session}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Reads every workspace's sessions (retrying failures until `timeout`) into a table.
pub async fn session_table(t: &Target, workspaces: &[String], timeout: Duration) -> SessionTable {
    let reads = workspaces.iter().map(|ws| async move {
        let deadline = Instant::now() + timeout;
        loop {
            let r = t
                .http
                .get(format!("{}/v1/workspaces/{ws}/sessions", t.router))
                .bearer_auth(&t.admin)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(r) = r
                && r.status().is_success()
                && let Ok(v) = r.json::<serde_json::Value>().await
            {
                return parse_sessions(ws, &v);
            }
            if Instant::now() >= deadline {
                return Vec::new();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn parse_sessions(ws: &str, v: &serde_json::Value) -> Vec<((String, String), SessionSnap)> {
    v.get("sessions")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    Some((
                        (ws.to_owned(), s.get("session")?.as_str()?.to_owned()),
                        SessionSnap {
                            status: s.get("status")?.as_str()?.to_owned(),
                            me: s.get("me").and_then(|m| m.as_str()).map(str::to_owned),
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every session in `workspaces` has one of `statuses`; returns the table.
pub async fn wait_sessions(
    t: &Target,
    workspaces: &[String],
    statuses: &[&str],
    timeout: Duration,
) -> Result<SessionTable, SessionTable> {
    let deadline = Instant::now() + timeout;
    loop {
        let table = session_table(t, workspaces, Duration::from_secs(5)).await;
        let all = workspaces.iter().all(|ws| {
            let mine: Vec<_> = table.iter().filter(|((w, _), _)| w == ws).collect();
            !mine.is_empty()
                && mine
                    .iter()
                    .all(|(_, s)| statuses.contains(&s.status.as_str()))
        });
        if all {
            return Ok(table);
        }
        if Instant::now() >= deadline {
            return Err(table);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Links a session through the simulator: reads its raw QR and "scans" it with `phone`.
pub async fn link(
    t: &Target,
    sim: &str,
    ws: &str,
    session: &str,
    phone: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let qr = t
            .http
            .get(format!(
                "{}/v1/workspaces/{ws}/sessions/{session}/qr",
                t.router
            ))
            .bearer_auth(&t.admin)
            .header("accept", "application/json")
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let last = match qr {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                match v.get("value").and_then(|x| x.as_str()) {
                    Some(value) => {
                        let l = t
                            .http
                            .post(format!("{sim}/sim/link"))
                            .json(&serde_json::json!({"qr": value, "phone": phone}))
                            .timeout(Duration::from_secs(5))
                            .send()
                            .await;
                        match l {
                            Ok(l) if l.status().is_success() => return Ok(()),
                            Ok(l) => format!("sim link: {}", l.status()),
                            Err(e) => format!("sim link: {e}"),
                        }
                    }
                    None => "qr answer without value".into(),
                }
            }
            Ok(r) => format!("qr: {}", r.status()),
            Err(e) => format!("qr: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(format!("link {ws}/{session}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Probes whether the fleet accepts sends: one `POST …/messages` on `ws`. `Some(true)` on
/// 202, `Some(false)` when the route does not exist (404 `not_found`/405), `None` otherwise.
pub async fn probe_send(t: &Target, ws: &str, session: &str) -> Option<bool> {
    let r = t
        .http
        .post(format!(
            "{}/v1/workspaces/{ws}/sessions/{session}/messages",
            t.router
        ))
        .bearer_auth(&t.admin)
        .json(&serde_json::json!({"to": "491700000000", "text": "chaos probe"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    match r.status().as_u16() {
        202 => Some(true),
        404 | 405 => Some(false),
        _ => None,
    }
}

/// Messages the simulator lists for `phone`: text → first seen (ms since run start).
pub async fn sim_messages(
    http: &reqwest::Client,
    sim: &str,
    phone: &str,
    rec: &Recorder,
    seen: &mut BTreeMap<String, u64>,
) {
    let Ok(r) = http
        // Phones are digits only (phone_for), so no query escaping is needed.
        .get(format!("{sim}/sim/messages?phone={phone}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    else {
        return;
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let now = rec.now_ms();
    for m in v.as_array().into_iter().flatten() {
        if let Some(text) = m.get("text").and_then(|x| x.as_str()) {
            seen.entry(text.to_owned()).or_insert(now);
        }
    }
}

/// A message's status through the API (`queued`, `sent`, …, `failed`).
pub async fn message_status(t: &Target, a: &Accepted) -> Option<String> {
    let url = format!(
        "{}/v1/workspaces/{}/sessions/{}/messages/{}",
        t.router, a.ws, a.session, a.id
    );
    let v = crate::fleet::get_json(&t.http, &url, &t.admin, Duration::from_secs(5)).await?;
    v.get("status").and_then(|s| s.as_str()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_list_parsing() {
        let v = serde_json::json!({"workspace":"a","shard":1,"sessions":[
            {"session":"default","status":"WORKING","me":"1@c.us"},
            {"session":"x","status":"STARTING","me":null},
            {"bad":true}]});
        let p = parse_sessions("a", &v);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].1.me.as_deref(), Some("1@c.us"));
        assert_eq!(p[1].0, ("a".to_owned(), "x".to_owned()));
        assert!(parse_sessions("a", &serde_json::json!({})).is_empty());
    }

    #[test]
    fn phones_are_distinct_digits() {
        assert_ne!(phone_for(1), phone_for(2));
        assert!(phone_for(7).chars().all(|c| c.is_ascii_digit()));
    }
}
