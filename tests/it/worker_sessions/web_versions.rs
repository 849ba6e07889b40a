//! An unlinked session stopped by the QR time limit, and WhatsApp Web versions cached, pinned,
//! rolled back and overridden per shard through the wafleet wa-web commands.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_session_stops_after_the_qr_time_limit() {
    let env = Env::start().await;
    let _w0 = env
        .worker_with(0, free_port(), &["--qr-timeout-secs", "8"])
        .await;
    let router = env.fleet.router().await;
    let profile = profile_dir(&env.fleet.data()).display().to_string();

    let created = wait_for("create answered", DEADLINE, || async {
        let a = post(&router, "", Some(json!({"session": S}))).await;
        (a.status != 503).then_some(a)
    })
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    wait_status(&router, "SCAN_QR_CODE", None).await;
    assert!(browsers_by_profile().contains_key(&profile));

    // Nobody scans: the engine stops the session, says why, and keeps it stopped.
    let stopped = wait_status(&router, "STOPPED", None).await;
    let error = stopped.body["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("qr_timeout"), "{}", stopped.body);
    wait_for("the browser to close", DEADLINE, || async {
        (!browsers_by_profile().contains_key(&profile)).then_some(())
    })
    .await;
    wait_for("desired state stopped", DEADLINE, || async {
        let a = session(&router).await?;
        (a.body["desired"] == "stopped").then_some(())
    })
    .await;

    // A start opens a new QR window.
    let started = post(&router, &format!("/{S}/start"), None).await;
    assert!(started.status < 300, "{:?}", started.body);
    wait_status(&router, "SCAN_QR_CODE", None).await;
    let a = session(&router).await.expect("router answers");
    assert_eq!(a.body["desired"], "running", "{}", a.body);
}

/// Runs the real `wafleet` binary against the test agent; (success, stdout, stderr).
pub(super) async fn wafleet(env: &Env, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wafleet"));
    cmd.args(args);
    for (k, v) in env.fleet.env() {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `wafleet wa-web show --json`.
pub(super) async fn wa_web_show(env: &Env) -> Value {
    let data = env.fleet.data().display().to_string();
    let (ok, out, err) = wafleet(env, &["wa-web", "--json", "show", "--data", &data]).await;
    assert!(ok, "{out}{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Waits until the worker has seen the current WhatsApp Web setting (its watch logs each one
/// it loads): the setting applies at the next session start *after* the worker has it, and a
/// restart sent right after `wafleet wa-web …` could otherwise race the blocking query.
pub(super) async fn setting_seen(env: &Env, log: &std::path::Path) {
    let n = wa_web_show(env).await["setting"]["version"]
        .as_u64()
        .expect("a stored setting");
    let needle = format!("WaWebSetting {{ version: {n},");
    wait_for(
        &format!("the worker to load setting {n}"),
        DEADLINE,
        || async {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains(&needle)
                .then_some(())
        },
    )
    .await;
}

/// Restarts the session and waits until it is WORKING again on `version`.
pub(super) async fn restart_on(router: &support::Router, version: &str) -> Answer {
    let before = session(router).await.unwrap().body["restarts"]
        .as_u64()
        .unwrap_or(0);
    let r = post(router, &format!("/{S}/restart"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_for(&format!("WORKING on {version}"), DEADLINE, || async {
        let a = session(router).await?;
        (a.status == 200
            && a.body["status"] == "WORKING"
            && a.body["restarts"].as_u64().unwrap_or(0) > before
            && a.body["wa_version"] == version)
            .then_some(a)
    })
    .await
}

/// The WhatsApp Web version story: a live session caches its index.html and records
/// last-good; `wafleet wa-web pin` makes the next start serve the cached version (while the
/// simulator is live on another one), `latest` goes live again, `rollback` restores the pin,
/// `--shards` changes only the named shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wa_web_versions_are_cached_pinned_rolled_back_and_overridden_per_shard() {
    let env = Env::start().await;
    let w0 = env.worker(0, free_port()).await;
    let router = env.fleet.router().await;
    let cache = env.fleet.data().join("wa-web");

    let created = wait_for("create answered", DEADLINE, || async {
        let a = post(&router, "", Some(json!({"session": S}))).await;
        (a.status != 503).then_some(a)
    })
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let qr = wait_for("a QR to scan", DEADLINE, || qr_json(&router)).await;
    let (code, body) = env
        .sim_post("/sim/link", json!({"qr": qr["value"], "phone": PHONE}))
        .await;
    assert_eq!(code, 200, "{body}");
    let working = wait_status(&router, "WORKING", None).await;
    let v1 = working.body["wa_version"].as_str().unwrap().to_string();

    // The live version proved good: cached once, recorded as last-good.
    wait_for("V1 cached and last-good", DEADLINE, || async {
        let html = cache.join(format!("{v1}.html"));
        let good = std::fs::read_to_string(cache.join("last-good")).unwrap_or_default();
        (html.is_file() && good.trim() == v1).then_some(())
    })
    .await;
    let shown = wa_web_show(&env).await;
    assert_eq!(shown["last_good"], v1.as_str(), "{shown}");
    assert_eq!(shown["cached"][0]["version"], v1.as_str(), "{shown}");

    // Move the simulator's live page to V2 (a simulator without versioned pages answers 404:
    // then the pin is proven by the version alone, not against another live one).
    let v2 = "2.3000.1099999999-sim";
    let (moved, body) = env
        .sim_post("/sim/web-version", json!({"version": v2}))
        .await;
    let have_v2 = moved == 200;
    if !have_v2 {
        eprintln!("simulator has no versioned pages ({moved} {body}); live stays {v1}");
    }
    let live = if have_v2 { v2 } else { v1.as_str() };

    // Pin V1: the next start is served from the cache.
    let (ok, out, err) = wafleet(&env, &["wa-web", "pin", &v1]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(wa_web_show(&env).await["setting"]["default"], v1.as_str());
    setting_seen(&env, &w0.proc.log).await;
    restart_on(&router, &v1).await;
    let log = std::fs::read_to_string(&w0.proc.log).unwrap_or_default();
    assert!(
        !log.contains("is not in this worker's cache")
            && log.contains("launching on a pinned WhatsApp Web version"),
        "the pin was served from the cache"
    );

    // Latest: live again.
    let (ok, out, err) = wafleet(&env, &["wa-web", "latest"]).await;
    assert!(ok, "{out}{err}");
    setting_seen(&env, &w0.proc.log).await;
    restart_on(&router, live).await;
    if have_v2 {
        wait_for("V2 cached and last-good", DEADLINE, || async {
            let good = std::fs::read_to_string(cache.join("last-good")).unwrap_or_default();
            (cache.join(format!("{v2}.html")).is_file() && good.trim() == v2).then_some(())
        })
        .await;
    }

    // Rollback: the pin of V1 again, in one command.
    let (ok, out, err) = wafleet(&env, &["wa-web", "rollback"]).await;
    assert!(ok, "{out}{err}");
    let shown = wa_web_show(&env).await;
    assert_eq!(shown["setting"]["default"], v1.as_str(), "{shown}");
    setting_seen(&env, &w0.proc.log).await;
    restart_on(&router, &v1).await;

    // A per-shard override changes only that shard: shard 0 (ours) stays on V1.
    let (ok, out, err) = wafleet(&env, &["wa-web", "latest", "--shards", "1"]).await;
    assert!(ok, "{out}{err}");
    let shown = wa_web_show(&env).await;
    assert_eq!(shown["shards"]["0"], v1.as_str(), "{shown}");
    assert_eq!(shown["shards"]["1"], "latest", "{shown}");
    setting_seen(&env, &w0.proc.log).await;
    restart_on(&router, &v1).await;

    // Bad input is refused and nothing is written.
    let before = wa_web_show(&env).await["setting"]["version"].clone();
    for bad in [
        vec!["wa-web", "pin", "../etc/passwd"],
        vec!["wa-web", "pin", "latest"],
        vec!["wa-web", "latest", "--shards", "x"],
    ] {
        let (ok, out, err) = wafleet(&env, &bad).await;
        assert!(!ok, "{bad:?} must fail: {out}{err}");
    }
    assert_eq!(wa_web_show(&env).await["setting"]["version"], before);
}
