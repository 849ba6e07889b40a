//! The WhatsApp rig of the API tests: consul-dev, the simulator, one worker running real
//! Chromium sessions on it, and the router, with a one-shard map; plus the small JSON calls the
//! tests make and [`WaRig::linked`], which creates a session through the router and links it
//! by QR to a simulated phone (or its steps, [`WaRig::create`], [`WaRig::qr`] and
//! [`WaRig::link`], for a test that looks at the session in between).
//!
//! One copy for every test file that drives a session end to end (each had its own before);
//! what only one file needs (a simulator query, a file on the volume) stays in that file.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, Fleet, Proc, Router, free_port, http, put_map, wait_for};

/// Deadline for a session to show a QR, link, or for an event to arrive.
pub const LONG: Duration = Duration::from_secs(120);

/// One JSON call with bearer `token` (none: unauthenticated): status, headers and body (`null`
/// when not JSON).
pub async fn call_as(
    url: &str,
    method: reqwest::Method,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, HeaderMap, Value) {
    let mut r = http().request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// One JSON call with the admin token: status, headers and body (`null` when not JSON).
pub async fn call_with_headers(
    url: &str,
    method: reqwest::Method,
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    call_as(url, method, body, Some(ADMIN_TOKEN)).await
}

/// One JSON call with the admin token: status and body (`null` when not JSON).
pub async fn call(url: &str, method: reqwest::Method, body: Option<Value>) -> (u16, Value) {
    let (status, _, v) = call_with_headers(url, method, body).await;
    (status, v)
}

/// `POST` with a JSON body.
pub async fn post(url: &str, body: Value) -> (u16, Value) {
    call(url, reqwest::Method::POST, Some(body)).await
}

/// `PUT` with a JSON body.
pub async fn put(url: &str, body: Value) -> (u16, Value) {
    call(url, reqwest::Method::PUT, Some(body)).await
}

/// `PATCH` with a JSON body.
pub async fn patch(url: &str, body: Value) -> (u16, Value) {
    call(url, reqwest::Method::PATCH, Some(body)).await
}

/// `DELETE`.
pub async fn delete(url: &str) -> (u16, Value) {
    call(url, reqwest::Method::DELETE, None).await
}

/// `GET`.
pub async fn get(url: &str) -> (u16, Value) {
    call(url, reqwest::Method::GET, None).await
}

/// `GET` with the answer's headers.
pub async fn get_with_headers(url: &str) -> (u16, HeaderMap, Value) {
    call_with_headers(url, reqwest::Method::GET, None).await
}

/// The running rig. Dropping it kills every process.
pub struct WaRig {
    /// The workspace the tests use.
    pub ws: String,
    /// The simulator.
    pub sim: Proc,
    /// The worker (a test may stop it: `rig.worker.signal("TERM")`).
    pub worker: Proc,
    /// The router.
    pub router: Router,
    /// Consul, the data directory and the logs; declared last so it is dropped last.
    pub fleet: Fleet,
}

impl WaRig {
    /// Starts everything for workspace `ws`; `sim_args` are extra simulator flags.
    pub async fn start(ws: &str, sim_args: &[&str]) -> WaRig {
        WaRig::start_with_env(ws, sim_args, &[]).await
    }

    /// [`WaRig::start`] with `worker_env` added to the worker's environment (limits, timings,
    /// the media store).
    pub async fn start_with_env(ws: &str, sim_args: &[&str], worker_env: &[(&str, &str)]) -> WaRig {
        let fleet = Fleet::start().await;
        put_map(fleet.consul_http(), &wafleet::shard::ShardMap::uniform(1)).await;
        let mut args: Vec<String> = ["sim", "--listen", "127.0.0.1:0"].map(String::from).into();
        args.extend(sim_args.iter().map(|a| a.to_string()));
        let sim = Proc::spawn("sim", &args, &[], &fleet.logs()).await;
        let wargs = fleet.engine_worker_args(free_port(), sim.addr("http"));
        let mut env = fleet.env();
        env.extend(
            worker_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut worker = Proc::start("worker", &wargs, &env, &fleet.logs());
        worker.wait_ready(super::READY_TIMEOUT).await;
        let router = fleet.router().await;
        WaRig {
            ws: ws.to_owned(),
            sim,
            worker,
            router,
            fleet,
        }
    }

    /// A simulator URL.
    pub fn sim(&self, path: &str) -> String {
        format!("http://{}{path}", self.sim.addr("http"))
    }

    /// A URL through the router (`path` starts with `/`).
    pub fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.router.addr)
    }

    /// The workspace's session collection through the router (`POST` creates a session).
    pub fn sessions(&self) -> String {
        self.api(&format!("/v1/workspaces/{}/sessions", self.ws))
    }

    /// A session URL through the router (`rest` starts with `/` or is empty).
    pub fn session(&self, s: &str, rest: &str) -> String {
        format!("{}/{s}{rest}", self.sessions())
    }

    /// The shared data directory the worker runs on (sessions' files, local media).
    pub fn data(&self) -> PathBuf {
        self.fleet.data()
    }

    /// Session `s`'s `status` as the router shows it (empty when there is none).
    pub async fn status(&self, s: &str) -> String {
        let (_, v) = get(&self.session(s, "")).await;
        v["status"].as_str().unwrap_or_default().to_owned()
    }

    /// Creates session `s` through the router with `extra` merged into its body; asserts `201`
    /// and answers the body.
    pub async fn create(&self, s: &str, extra: Value) -> Value {
        let mut body = json!({"session": s});
        for (k, v) in extra.as_object().expect("extra is an object") {
            body[k] = v.clone();
        }
        let (st, v) = post(&self.sessions(), body).await;
        assert_eq!(st, 201, "{v}");
        v
    }

    /// Waits for session `s` to show a QR; answers its value.
    pub async fn qr(&self, s: &str) -> String {
        wait_for("a QR", LONG, || async {
            let (st, v) = get(&self.session(s, "/qr?format=json")).await;
            (st == 200)
                .then(|| v["value"].as_str().map(str::to_owned))
                .flatten()
        })
        .await
    }

    /// Scans `qr` of session `s` with `phone` at the simulator; returns when the session is
    /// `WORKING`.
    pub async fn link(&self, s: &str, qr: &str, phone: &str) {
        let (st, v) = post(&self.sim("/sim/link"), json!({"qr": qr, "phone": phone})).await;
        assert!(st < 300, "link: {st} {v}");
        wait_for("session WORKING", LONG, || async {
            (self.status(s).await == "WORKING").then_some(())
        })
        .await;
    }

    /// Creates session `s` with `extra` merged into its body and links it to `phone`; returns
    /// when it is `WORKING`.
    pub async fn linked(&self, s: &str, phone: &str, extra: Value) {
        self.create(s, extra).await;
        let qr = self.qr(s).await;
        self.link(s, &qr, phone).await;
    }
}

/// The payload of `v` when it is event `name` of session `s`.
pub fn of_session<'a>(v: &'a Value, s: &str, name: &str) -> Option<&'a Value> {
    (v["session"] == s && v["event"] == name).then(|| &v["payload"])
}
