//! The WhatsApp rig of the API tests: consul-dev, the simulator, one worker running real
//! Chromium sessions on it, and the router, with a one-shard map; plus the small JSON calls the
//! tests make and [`WaRig::linked`], which creates a session through the router and links it
//! by QR to a simulated phone.
//!
//! One copy for every test file that drives a session end to end (each had its own before).

use std::time::Duration;

use serde_json::{Value, json};

use super::{ADMIN_TOKEN, Fleet, Proc, Router, free_port, http, put_map, wait_for};

/// Deadline for a session to show a QR, link, or for an event to arrive.
pub const LONG: Duration = Duration::from_secs(120);

/// One JSON call with the admin token: status and body (`null` when not JSON).
pub async fn call(url: &str, method: reqwest::Method, body: Option<Value>) -> (u16, Value) {
    let mut r = http().request(method, url).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `POST` with a JSON body.
pub async fn post(url: &str, body: Value) -> (u16, Value) {
    call(url, reqwest::Method::POST, Some(body)).await
}

/// `GET`.
pub async fn get(url: &str) -> (u16, Value) {
    call(url, reqwest::Method::GET, None).await
}

/// The running rig. Dropping it kills every process.
pub struct WaRig {
    /// The workspace the tests use.
    pub ws: String,
    /// The simulator.
    pub sim: Proc,
    /// The worker (kept alive by this field).
    #[allow(dead_code)]
    pub worker: Proc,
    /// The router.
    pub router: Router,
    /// Consul and the logs (kept alive by this field).
    #[allow(dead_code)]
    pub fleet: Fleet,
}

impl WaRig {
    /// Starts everything for workspace `ws`; `sim_args` are extra simulator flags.
    pub async fn start(ws: &str, sim_args: &[&str]) -> WaRig {
        let fleet = Fleet::start().await;
        put_map(fleet.consul_http(), &wafleet::shard::ShardMap::uniform(1)).await;
        let mut args: Vec<String> = ["sim", "--listen", "127.0.0.1:0"].map(String::from).into();
        args.extend(sim_args.iter().map(|a| a.to_string()));
        let sim = Proc::spawn("sim", &args, &[], &fleet.logs()).await;
        let wargs = fleet.engine_worker_args(free_port(), sim.addr("http"));
        let mut worker = Proc::start("worker", &wargs, &fleet.env(), &fleet.logs());
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

    /// A session URL through the router (`rest` starts with `/` or is empty).
    pub fn session(&self, s: &str, rest: &str) -> String {
        format!(
            "http://{}/v1/workspaces/{}/sessions/{s}{rest}",
            self.router.addr, self.ws
        )
    }

    /// Creates session `s` with `extra` merged into its body and links it to `phone`; returns
    /// when it is `WORKING`.
    pub async fn linked(&self, s: &str, phone: &str, extra: Value) {
        let mut body = json!({"session": s});
        for (k, v) in extra.as_object().expect("extra is an object") {
            body[k] = v.clone();
        }
        let url = format!(
            "http://{}/v1/workspaces/{}/sessions",
            self.router.addr, self.ws
        );
        let (st, v) = post(&url, body).await;
        assert_eq!(st, 201, "{v}");
        let qr = wait_for("a QR", LONG, || async {
            let (st, v) = get(&self.session(s, "/qr?format=json")).await;
            (st == 200)
                .then(|| v["value"].as_str().map(str::to_owned))
                .flatten()
        })
        .await;
        let (st, v) = post(&self.sim("/sim/link"), json!({"qr": qr, "phone": phone})).await;
        assert!(st < 300, "link: {st} {v}");
        wait_for("session WORKING", LONG, || async {
            let (_, v) = get(&self.session(s, "")).await;
            (v["status"] == "WORKING").then_some(())
        })
        .await;
    }
}

/// The payload of `v` when it is event `name` of session `s`.
pub fn of_session<'a>(v: &'a Value, s: &str, name: &str) -> Option<&'a Value> {
    (v["session"] == s && v["event"] == name).then(|| &v["payload"])
}
