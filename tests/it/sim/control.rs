//! The simulator's control API over HTTP (every route's bad input answered with a JSON error) and
//! its command line (one readiness line, a clean stop on SIGTERM).

use super::*;

// === control API over HTTP ===

#[tokio::test]
async fn control_api_answers_bad_input_with_json_errors() {
    let (sim, cancel) = start(SimConfig::default()).await;
    let base = format!("http://{}", sim.addr());

    let (s, b) = post(
        &base,
        "/sim/link",
        json!({"qr": "2@x,a,b,c,d", "phone": "12ab"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_phone")));
    let (s, b) = post(
        &base,
        "/sim/link",
        json!({"qr": "a,b", "phone": "4915550001"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_qr")));
    let (s, b) = post(
        &base,
        "/sim/link",
        json!({"qr": "2@x,a,b,c,d", "phone": "4915550001"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_qr")));
    let (s, b) = post(
        &base,
        "/sim/link",
        json!({"qr": "x", "phone": "1", "extra": 1}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_body")));
    let (s, b) = post(
        &base,
        "/sim/pair",
        json!({"phone": "4915550001", "code": "ABCD-EFGH"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_code")));
    let (s, b) = post(
        &base,
        "/sim/pair",
        json!({"phone": "4915550001", "code": "AB"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_code")));
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": "4915550001", "from": "4915550002", "text": "hi"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_phone")));
    let (s, b) = post(&base, "/sim/unlink", json!({"phone": "4915550001"})).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_phone")));
    let (s, b) = get(&base, "/sim/messages?phone=abc").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_phone")));
    let (s, b) = get(&base, "/sim/messages").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_phone")));
    let (s, b) = get(&base, "/sim/messages?phone=4915550001").await;
    assert_eq!((s, b), (200, json!([])));
    let (s, b) = get(&base, "/sim/devices").await;
    assert_eq!((s, b), (200, json!([])));

    // Faults: validated before anything is applied.
    let (s, b) = post(&base, "/sim/faults", json!({})).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_fault")));
    let (s, _) = post(&base, "/sim/faults", json!({"slow_load_ms": 99_999_999u64})).await;
    assert_eq!(s, 400);
    let (s, b) = post(&base, "/sim/faults", json!({"drop_socket": "4915550001"})).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_online")));
    let (s, b) = post(
        &base,
        "/sim/faults",
        json!({"crash": "4915550001", "mode": "boom"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_mode")));
    let (s, b) = post(&base, "/sim/faults", json!({"slow_load_ms": 250})).await;
    assert_eq!((s, b["slow_load_ms"].as_u64()), (200, Some(250)));
    let (_, b) = get(&base, "/sim/faults").await;
    assert_eq!(b["slow_load_ms"].as_u64(), Some(250));
    let (s, b) = post(&base, "/sim/faults", json!({"clear": true})).await;
    assert_eq!((s, b["slow_load_ms"].as_u64()), (200, Some(0)));
    let (s, b) = post(&base, "/sim/faults", json!({"usync_error": 200})).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_fault")));
    let (s, b) = post(&base, "/sim/faults", json!({"usync_error": 503})).await;
    assert_eq!((s, b["usync_error"].as_u64()), (200, Some(503)));
    let (_, b) = post(&base, "/sim/faults", json!({"usync_error": 0})).await;
    assert!(b.get("usync_error").is_none(), "{b}");

    // Accounts and the exists-query log.
    let (s, b) = post(&base, "/sim/accounts", json!({"phone": "12ab"})).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_phone")));
    let (s, b) = post(&base, "/sim/accounts", json!({"phone": "4915550002"})).await;
    assert_eq!(s, 200);
    assert_eq!(
        b["lid"],
        format!("{}@lid", wafleet::sim::state::lid_of("4915550002"))
    );
    let (s, b) = get(&base, "/sim/queries?phone=4915550001").await;
    assert_eq!((s, b), (200, json!([])));
    let (s, b) = get(&base, "/sim/queries").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_phone")));

    // Not JSON, too large, unknown routes: JSON errors too.
    let r = client()
        .post(format!("{base}/sim/link"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Control bodies are capped at 64 KiB; /sim/inbound takes more (it carries media inline),
    // so an over-long text there is refused by the phone's own text limit instead.
    let big = "x".repeat(100 * 1024);
    let (s, b) = post(&base, "/sim/link", json!({"phone": big})).await;
    assert_eq!((s, b["error"].as_str()), (413, Some("payload_too_large")));
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": "4915550001", "from": "4915550002", "text": big}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("text_too_long")));
    let (s, b) = get(&base, "/sim/nope").await;
    assert_eq!((s, b["error"].as_str()), (404, Some("not_found")));

    // The page and its chunks.
    let html = client().get(&base).send().await.unwrap();
    assert_eq!(html.status().as_u16(), 200);
    assert!(html.text().await.unwrap().contains("/static/wa-runtime.js"));
    let js = client()
        .get(format!("{base}/static/wa-models.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status().as_u16(), 200);
    assert!(js.text().await.unwrap().contains("WAWebBaseModel"));
    let chat = client()
        .get(format!("{base}/static/wa-chat.js"))
        .send()
        .await
        .unwrap();
    assert!(
        chat.text()
            .await
            .unwrap()
            .contains("WAWebSendMsgChatAction")
    );
    let cfg = client()
        .get(format!("{base}/static/wa-config.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        cfg.text().await.unwrap().trim(),
        r#"window.__simConfig = {"ballast_mb":0};"#
    );
    let (s, _) = get(&base, "/static/other.js").await;
    assert_eq!(s, 404);

    cancel.cancel();
    sim.wait().await.unwrap();
}

#[tokio::test]
async fn cli_prints_one_readiness_line_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wafleet"))
        .args(["sim", "--listen", "127.0.0.1:0", "--state-file"])
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("readiness line in time")
        .unwrap()
        .expect("a line");
    let ready: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["ready"], json!(true));
    let addr = ready["http"].as_str().unwrap().to_owned();
    let (s, b) = get(&format!("http://{addr}"), "/sim/devices").await;
    assert_eq!((s, b), (200, json!([])));
    let pid = child.id().unwrap() as i32;
    sigterm(pid);
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        lines.next_line().await.unwrap().is_none(),
        "only one stdout line"
    );
}

/// Sends SIGTERM to a child we started, through `kill(1)` (no unsafe code needed).
pub(super) fn sigterm(pid: i32) {
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}
