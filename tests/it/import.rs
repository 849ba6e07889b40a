//! Importing whatsapp-web.js sessions and moving profiles, end to end with real processes:
//! `wafleet consul-dev`, `wafleet sim`, one `wafleet worker` on the engine host (real headless
//! Chromium) and `wafleet router`, plus a plain Chromium playing the whatsapp-web.js app.
//!
//! One story keeps the browser count small (2-core CI): a plain Chromium links a LocalAuth-style
//! profile (`<dataPath>/session-acme`) through the simulator and closes → `wafleet import wwebjs
//! --dry-run` changes nothing → the import reaches WORKING with no QR ever shown and sends a
//! message → a re-run skips it without a restart → a conflicting target gets 409 and keeps its
//! files → truncated and oversized tars are refused leaving nothing behind → export (with
//! `--stop --keep-stopped`) and an offline `import tar` into another data directory give
//! identical files → the session starts again without a QR.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chromiumoxide::{Browser, BrowserConfig};
use futures::StreamExt;
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Fleet, Proc, call, free_port, put_map, wait_for};
use wafleet::migrate::profile::list_profile;
use wafleet::shard::ShardMap;

mod chromium;
use chromium::link_plain_chromium;

/// Chromium start plus page boot on a loaded shared machine.
const DEADLINE: Duration = Duration::from_secs(120);
const WS: &str = "acme-ws";
const PHONE: &str = "4915550042";
/// The worker's upload cap in this test (small, so the oversize case is cheap).
const CAP: u64 = 48 * 1024 * 1024;

/// Runs `wafleet <args>` to completion; (exit success, stdout, stderr).
async fn wafleet(args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(support::bin());
    cmd.args(args)
        .env_remove("WAFLEET_TOKEN")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("wafleet finished in time")
        .expect("run wafleet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every regular file under a profile (caches excluded) with its content.
fn files_of(profile: &Path) -> BTreeMap<String, Vec<u8>> {
    list_profile(profile)
        .expect("list profile")
        .entries
        .into_iter()
        .filter(|e| matches!(e.kind, wafleet::migrate::tar::Kind::File { .. }))
        .map(|e| (e.rel, std::fs::read(&e.abs).expect("read")))
        .collect()
}

/// A staging directory or a session directory left in the workspace.
fn leftovers(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("workspaces").join(WS))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

struct Env {
    fleet: Fleet,
    sim: Proc,
    worker: support::Worker,
    router: support::Router,
}

impl Env {
    async fn start() -> Env {
        let fleet = Fleet::start().await;
        let sim = Proc::spawn(
            "sim",
            &["sim", "--listen", "127.0.0.1:0"].map(String::from),
            &[],
            &fleet.logs(),
        )
        .await;
        put_map(fleet.consul_http(), &ShardMap::uniform(1)).await;
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = fleet.worker_args(0, &listen);
        for a in args.iter_mut() {
            if a == "placeholder" {
                *a = "engine".into();
            }
        }
        args.extend([
            "--wa-url".to_string(),
            format!("http://{}/", sim.addr("http")),
            "--profile-max-bytes".into(),
            CAP.to_string(),
        ]);
        let mut proc = Proc::start("worker-0", &args, &fleet.env(), &fleet.logs());
        proc.wait_ready(support::READY_TIMEOUT).await;
        let worker = support::Worker {
            shard: 0,
            addr: listen.parse().unwrap(),
            proc,
        };
        let router = fleet.router().await;
        Env {
            fleet,
            sim,
            worker,
            router,
        }
    }

    fn sim_url(&self) -> String {
        format!("http://{}", self.sim.addr("http"))
    }

    fn router_url(&self) -> String {
        format!("http://{}", self.router.addr)
    }

    fn session_url(&self, s: &str) -> String {
        format!("{}/v1/workspaces/{WS}/sessions/{s}", self.router_url())
    }

    async fn session(&self, s: &str) -> support::Answer {
        call(reqwest::Method::GET, &self.session_url(s), None)
            .await
            .expect("answer")
    }

    async fn devices(&self) -> Vec<Value> {
        support::http()
            .get(format!("{}/sim/devices", self.sim_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn cli_env(&self) -> Vec<(String, String)> {
        vec![("WAFLEET_ADMIN_TOKEN".into(), ADMIN_TOKEN.into())]
    }
}

/// Uploads `body` to `PUT …/sessions/{s}/profile` at `base` announcing `files`/`bytes`.
async fn put_raw(base: &str, s: &str, files: u64, bytes: u64, body: reqwest::Body) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/workspaces/{WS}/sessions/{s}/profile"))
        .bearer_auth(ADMIN_TOKEN)
        .header("wafleet-profile-files", files)
        .header("wafleet-profile-bytes", bytes)
        .body(body)
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        // The worker may close the connection right after refusing a body it did not read.
        Err(e) => (0, json!({"transport": e.to_string()})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wwebjs_sessions_are_imported_without_a_qr_and_profiles_round_trip() {
    let env = Env::start().await;
    let wwebjs = env.fleet.dir.path().join("wwebjs_auth");
    let profile = wwebjs.join("session-acme");
    link_plain_chromium(&profile, &env.sim_url(), PHONE).await;
    assert!(
        std::fs::symlink_metadata(profile.join("SingletonLock")).is_err(),
        "a clean close removes the lock"
    );
    let linked = env.devices().await;
    assert_eq!(
        linked.iter().filter(|d| d["phone"] == PHONE).count(),
        1,
        "{linked:?}"
    );

    let map = env.fleet.dir.path().join("map.csv");
    std::fs::write(
        &map,
        "clientId,workspace,session\nghost,acme-ws,ghost\nacme,acme-ws,main\n",
    )
    .unwrap();
    let (from, map_s, router) = (
        wwebjs.display().to_string(),
        map.display().to_string(),
        env.router_url(),
    );
    let import = [
        "import", "wwebjs", "--from", &from, "--map", &map_s, "--router", &router, "--json",
    ];

    // Dry run: what would happen, per row; nothing changes.
    let mut dry = import.to_vec();
    dry.push("--dry-run");
    let (ok, out, err) = wafleet(&dry, &env.cli_env()).await;
    assert!(
        !ok,
        "a row would fail, so the exit code says so\n{out}\n{err}"
    );
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows[0]["client_id"], "ghost");
    assert_eq!(rows[0]["result"], "failed");
    assert_eq!(rows[1]["result"], "imported");
    assert_eq!(rows[1]["dry_run"], true);
    assert_eq!(rows[1]["shard"], 0);
    assert!(rows[1]["files"].as_u64() > Some(0), "{out}");
    assert_eq!(rows[2]["summary"]["imported"], 1, "{out}");
    assert_eq!(env.session("main").await.status, 404);

    // The import: the ghost row fails, acme is imported anyway.
    let (ok, out, err) = wafleet(&import, &env.cli_env()).await;
    assert!(!ok, "{out}\n{err}");
    let rows = json_lines(&out);
    assert_eq!(rows[0]["result"], "failed", "{out}");
    assert!(
        rows[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("session-ghost")
    );
    assert_eq!(rows[1]["result"], "imported", "{out}\n{err}");
    assert_eq!(
        rows[2]["summary"],
        json!({"imported": 1, "skipped": 0, "conflict": 0, "failed": 1})
    );

    // WORKING from the profile alone: the session never shows a QR and the simulator never
    // sees a page asking to be linked.
    let seen = std::sync::Mutex::new(Vec::<String>::new());
    let info = wait_for("the imported session WORKING", DEADLINE, || {
        let seen = &seen;
        let env = &env;
        async move {
            let a = env.session("main").await;
            let status = a.body["status"].as_str().unwrap_or_default().to_owned();
            for d in env.devices().await {
                assert!(
                    !matches!(d["state"].as_str(), Some("UNPAIRED" | "UNPAIRED_IDLE")),
                    "a page asked for a QR: {d}"
                );
            }
            let mut seen = seen.lock().unwrap();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            (status == "WORKING").then_some(a.body)
        }
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(!seen.iter().any(|s| s == "SCAN_QR_CODE"), "{seen:?}");
    assert_eq!(info["me"], format!("{PHONE}@c.us"));
    assert_eq!(info["metadata"]["wafleet_import"]["client_id"], "acme");
    assert_eq!(info["metadata"]["wafleet_import"]["source"], "wwebjs");
    let devices = env.devices().await;
    assert_eq!(
        devices.iter().filter(|d| d["phone"] == PHONE).count(),
        1,
        "the same linked device, no new link: {devices:?}"
    );

    // It sends.
    let sent = call(
        reqwest::Method::POST,
        &format!("{}/messages", env.session_url("main")),
        Some(json!({"to": "4915550999", "text": "moved to wafleet"})),
    )
    .await
    .unwrap();
    assert_eq!(sent.status, 202, "{:?}", sent.body);
    let sim = env.sim_url();
    wait_for("the message at the simulator", DEADLINE, || {
        let url = format!("{sim}/sim/messages?phone={PHONE}");
        async move {
            let v: Value = support::http()
                .get(url)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v.as_array()?
                .iter()
                .any(|m| m["text"] == "moved to wafleet")
                .then_some(())
        }
    })
    .await;

    // Re-running skips what was imported; nothing restarts.
    let before = env.session("main").await.body;
    let (ok, out, err) = wafleet(&import, &env.cli_env()).await;
    assert!(!ok, "the ghost row still fails\n{out}\n{err}");
    let rows = json_lines(&out);
    assert_eq!(rows[1]["result"], "skipped", "{out}");
    let after = env.session("main").await.body;
    assert_eq!(after["status"], "WORKING");
    assert_eq!(after["restarts"], before["restarts"]);
    assert_eq!(after["updated_at_ms"], before["updated_at_ms"]);

    // A conflicting target: the CLI reports it, the worker answers 409, nothing is overwritten.
    let created = call(
        reqwest::Method::POST,
        &format!("{}/v1/workspaces/{WS}/sessions", env.router_url()),
        Some(json!({"session": "taken", "metadata": {"tenant": 7}})),
    )
    .await
    .unwrap();
    assert_eq!(created.status, 201, "{:?}", created.body);
    let data = env.fleet.data();
    let taken_json = data.join("workspaces").join(WS).join("taken/session.json");
    let taken_before = std::fs::read(&taken_json).unwrap();
    std::fs::write(&map, "acme,acme-ws,taken\n").unwrap();
    let (ok, out, _) = wafleet(&import, &env.cli_env()).await;
    assert!(!ok);
    assert_eq!(json_lines(&out)[0]["result"], "conflict", "{out}");
    let listing = list_profile(&profile).unwrap();
    let tar = wafleet::migrate::profile::tar_stream(listing.clone());
    let (status, body) = put_raw(
        &env.router_url(),
        "taken",
        listing.files,
        listing.bytes,
        reqwest::Body::wrap_stream(tar),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("session_exists")),
        "{body}"
    );
    assert_eq!(std::fs::read(&taken_json).unwrap(), taken_before);
    assert!(!leftovers(&data).iter().any(|n| n.starts_with(".import-")));

    // Truncated and oversized tars are refused and leave nothing behind.
    let full: Vec<u8> = wafleet::migrate::profile::tar_stream(listing.clone())
        .map(|c| c.unwrap())
        .collect::<Vec<_>>()
        .await
        .concat();
    let cut = full[..full.len() / 2].to_vec();
    let (status, body) = put_raw(
        &env.router_url(),
        "cut",
        listing.files,
        listing.bytes,
        cut.into(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_profile")),
        "{body}"
    );
    // Complete but not what was announced.
    let (status, body) = put_raw(
        &env.router_url(),
        "cut",
        listing.files + 1,
        listing.bytes,
        full.clone().into(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("profile_mismatch")),
        "{body}"
    );
    // Announced over the cap: refused before reading.
    let (status, body) = put_raw(&env.router_url(), "big", 1, CAP + 1, Vec::new().into()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    // Announced small, streamed large (chunked, no length): cut off at the cap, on the worker.
    let filler = {
        let size = CAP + 1024 * 1024;
        let mut v = wafleet::migrate::tar::header(
            "filler",
            wafleet::migrate::tar::Kind::File { size },
            0o600,
            0,
        )
        .unwrap();
        v.resize(v.len() + size as usize, 7);
        v
    };
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = filler
        .chunks(1024 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let worker = format!("http://{}", env.worker.addr);
    let (status, body) = put_raw(
        &worker,
        "big",
        1,
        1,
        reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
    )
    .await;
    assert!(
        status == 413 || status == 0,
        "oversized stream: {status} {body}"
    );
    for s in ["cut", "big"] {
        assert_eq!(env.session(s).await.status, 404, "{s}");
    }
    let names = leftovers(&data);
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".import-") || n == "cut" || n == "big"),
        "{names:?}"
    );

    // Export (stopping the session, leaving it stopped), offline import elsewhere: same files.
    let out_tar = env.fleet.dir.path().join("main.tar");
    let out_s = out_tar.display().to_string();
    let export = [
        "export",
        "--router",
        &router,
        "--workspace",
        WS,
        "--session",
        "main",
        "--out",
        &out_s,
        "--stop",
        "--keep-stopped",
        "--json",
    ];
    let (ok, out, err) = wafleet(&export, &env.cli_env()).await;
    assert!(ok, "{out}\n{err}");
    let report: Value = serde_json::from_str(out.trim()).expect("export report");
    assert_eq!(env.session("main").await.body["status"], "STOPPED");
    // Without --stop a running session is refused by the worker (409 session_running).
    let other = tempfile::tempdir().unwrap();
    let other_s = other.path().display().to_string();
    let (ok, out, err) = wafleet(
        &[
            "import",
            "tar",
            "--file",
            &out_s,
            "--workspace",
            WS,
            "--session",
            "copy",
            "--data",
            &other_s,
            "--json",
        ],
        &[],
    )
    .await;
    assert!(ok, "{out}\n{err}");
    assert_eq!(json_lines(&out)[0]["result"], "imported", "{out}");
    let live = data.join("workspaces").join(WS).join("main/profile");
    let copy = other
        .path()
        .join("workspaces")
        .join(WS)
        .join("copy/profile");
    let (a, b) = (files_of(&live), files_of(&copy));
    assert_eq!(a.len() as u64, report["files"].as_u64().unwrap());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a == b, "identical file contents");
    let copied: Value = serde_json::from_slice(
        &std::fs::read(copy.parent().unwrap().join("session.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(copied["metadata"]["wafleet_import"]["source"], "tar");
    // Importing the same tar again into the same place: the session exists, nothing changes.
    let (ok, out, _) = wafleet(
        &[
            "import",
            "tar",
            "--file",
            &out_s,
            "--workspace",
            WS,
            "--session",
            "copy",
            "--data",
            &other_s,
            "--json",
        ],
        &[],
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(json_lines(&out)[0]["result"], "skipped", "{out}");

    // A running session is not exported without --stop.
    let started = call(
        reqwest::Method::POST,
        &format!("{}/start", env.session_url("main")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(started.status, 200, "{:?}", started.body);
    let e = &env;
    wait_for(
        "WORKING again from the same profile",
        DEADLINE,
        || async move {
            let a = e.session("main").await;
            assert_ne!(a.body["status"], "SCAN_QR_CODE");
            (a.body["status"] == "WORKING").then_some(())
        },
    )
    .await;
    let (status, body) = {
        let r = support::http()
            .get(format!("{}/profile", env.session_url("main")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("session_running")),
        "{body}"
    );
}
