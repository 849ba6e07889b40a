//! Linking on the page in a real Chromium: QR and pairing code, sending, receiving and restoring
//! without a QR, QR rotation and idling, a renderer killed by the OOM fault, a slow load, and two
//! browsers on copies of one profile.

use super::*;

#[tokio::test]
async fn page_links_by_qr_sends_receives_and_restores_without_a_qr() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    let state_file = dir.path().join("sim.json");
    let config = SimConfig {
        ack_device_ms: 200,
        ack_read_ms: 200,
        tick_ms: 50,
        state_file: Some(state_file.clone()),
        ..SimConfig::default()
    };
    let (sim, cancel) = start(config.clone()).await;
    let addr = sim.addr();
    let base = format!("http://{addr}");
    let phone = "4915550001";

    // 1. Fresh profile: the page shows a QR.
    let chrome = Chrome::launch(&profile).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;
    let version: String = eval(&page, "window.Debug.VERSION").await;
    assert!(
        version.starts_with("2.3000.") && version.ends_with("-sim"),
        "{version}"
    );
    assert!(eval::<bool>(&page, LISTEN_JS).await);
    let qr: String = eval(&page, QR_JS).await;
    let parts: Vec<&str> = qr.split(',').collect();
    assert_eq!(parts.len(), 5, "{qr}");
    assert!(parts[0].starts_with("2@"));
    for p in &parts[1..4] {
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        assert_eq!(bytes.len(), 32);
    }
    let (_, devices) = get(&base, "/sim/devices").await;
    assert_eq!(devices[0]["qr"].as_str(), Some(qr.as_str()));
    assert_eq!(devices[0]["state"].as_str(), Some("UNPAIRED"));

    // 2. The phone scans it.
    let (s, b) = post(&base, "/sim/link", json!({"qr": qr, "phone": phone})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["wid"].as_str(), Some("4915550001@c.us"));
    let lid = b["lid"].as_str().unwrap().to_owned();
    wait_js(&page, &state_is("CONNECTED")).await;
    // Me comes from WAWebUserPrefsMeUser; Conn.wid stays unset as in multi-device builds.
    assert_eq!(
        eval::<Vec<Value>>(
            &page,
            "(() => { const M = window.require('WAWebUserPrefsMeUser'); \
             return [M.getMaybeMePnUser()._serialized, M.getMaybeMeLidUser()._serialized, \
             window.require('WAWebConnModel').Conn.wid === undefined]; })()"
        )
        .await,
        vec![json!("4915550001@c.us"), json!(lid), json!(true)]
    );
    assert!(eval::<bool>(&page, "window.require('WAWebSocketModel').Socket.hasSynced").await);
    let states: Vec<Value> = eval(&page, "window.__ev.filter(e => e[0] === 'state')").await;
    assert_eq!(
        states,
        vec![json!(["state", "PAIRING"]), json!(["state", "CONNECTED"])]
    );
    // The same QR cannot be used twice.
    let (s, _) = post(&base, "/sim/link", json!({"qr": qr, "phone": phone})).await;
    assert_eq!(s, 409);

    // 3. Send a text and a document; the sim records them and acks go 1 → 2 → 3.
    let sent: Value = eval(
        &page,
        &send_js("4915550009@c.us", "{body: 'hello from wafleet'}"),
    )
    .await;
    assert_eq!(sent["result"], json!("OK"));
    let text_id = sent["id"].as_str().unwrap().to_owned();
    assert!(
        text_id.starts_with("true_4915550009@c.us_3EB0"),
        "{text_id}"
    );
    let pdf = b"%PDF-1.4 wafleet test document";
    let media: Value = eval(
        &page,
        &pipeline_js(
            "4915550009@c.us",
            "application/pdf",
            "a.pdf",
            pdf,
            "{asDocument: true}",
            "the doc",
        ),
    )
    .await;
    assert_eq!(media["result"], json!("OK"), "{media}");
    let media_id = media["id"].as_str().unwrap().to_owned();
    let list = wait_for("both messages read", || async {
        let list = messages(&base, phone).await;
        (list.len() == 2 && list.iter().all(|m| m["ack"] == json!(3))).then_some(list)
    })
    .await;
    assert_eq!(list[0]["id"].as_str(), Some(text_id.as_str()));
    assert_eq!(list[0]["to"], json!("4915550009"));
    assert_eq!(list[0]["text"], json!("hello from wafleet"));
    assert!(list[0].get("media").is_none());
    assert_eq!(list[1]["id"].as_str(), Some(media_id.as_str()));
    assert_eq!(list[1]["text"], json!("the doc"));
    assert_eq!(
        list[1]["media"],
        json!({"mimetype": "application/pdf", "filename": "a.pdf", "size": pdf.len(),
               "sha256": hex::encode(Sha256::digest(pdf))})
    );
    assert_eq!(
        (
            &list[1]["uploaded"],
            &list[1]["sha256"],
            &list[1]["addressing"]
        ),
        (
            &json!(true),
            &json!(hex::encode(Sha256::digest(pdf))),
            &json!("pn")
        )
    );
    let acks_js =
        format!("window.__ev.filter(e => e[0] === 'ack' && e[1] === '{text_id}').map(e => e[2])");
    wait_js(&page, &format!("JSON.stringify({acks_js}) === '[1,2,3]'")).await;
    let adds: Vec<Value> = eval(&page, "window.__ev.filter(e => e[0] === 'add')").await;
    assert_eq!(
        adds[0],
        json!(["add", text_id, true, "hello from wafleet", true])
    );

    // 4. A contact writes: the Msg collection gets an inbound add.
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": phone, "from": "4915550009", "text": "hi back"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let in_id = b["id"].as_str().unwrap().to_owned();
    assert!(in_id.starts_with("false_4915550009@c.us_"), "{in_id}");
    wait_js(
        &page,
        &format!("window.__ev.some(e => e[0] === 'add' && e[1] === '{in_id}' && e[2] === false && e[3] === 'hi back' && e[4] === true)"),
    )
    .await;
    assert!(
        eval::<bool>(
            &page,
            &format!("window.require('WAWebCollections').Msg.get('{in_id}').from._serialized === '4915550009@c.us'")
        )
        .await
    );

    // 5. A dropped socket: OPENING (WhatsApp has no TIMEOUT), then CONNECTED on its own.
    let (s, b) = post(&base, "/sim/faults", json!({"drop_socket": phone})).await;
    assert_eq!((s, b["dropped"].as_u64()), (200, Some(1)));
    wait_js(
        &page,
        "(() => { const s = window.__ev.filter(e => e[0] === 'state').map(e => e[1]); \
         const i = s.lastIndexOf('OPENING'); return i > 0 && s.slice(i).includes('CONNECTED') && \
         window.require('WAWebSocketModel').Socket.state === 'CONNECTED'; })()",
    )
    .await;

    // 6. Browser restart on the same profile: CONNECTED without ever getting a QR ref.
    chrome.close().await;
    let chrome = Chrome::launch(&profile).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("CONNECTED")).await;
    assert!(
        eval::<bool>(&page, "window.require('WAWebConnModel').Conn.ref == null").await,
        "a restored profile never receives a QR ref"
    );
    chrome.close().await;

    // 7. Simulator restart on the same address with its state file: still no QR.
    cancel.cancel();
    sim.wait().await.unwrap();
    let saved: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(saved["devices"][0]["phone"], json!(phone));
    assert!(
        !saved.to_string().contains(&qr),
        "no key material or token in clear"
    );
    let (sim, cancel) = start(SimConfig {
        listen: addr,
        ..config
    })
    .await;
    let chrome = Chrome::launch(&profile).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("CONNECTED")).await;
    assert!(eval::<bool>(&page, LISTEN_JS).await);

    // 8. The phone unlinks the device: credentials wiped, a reload with the logout markers,
    // which the new document strips again (WAWebHandlePreviousLogout), and a fresh QR.
    let (s, b) = post(&base, "/sim/unlink", json!({"phone": phone})).await;
    assert_eq!((s, b["unlinked"].as_u64()), (200, Some(1)));
    wait_js(&page, &after_logout_js("unlinked")).await;
    let new_qr: String = eval(&page, QR_JS).await;
    assert_ne!(
        new_qr.split(',').nth(1),
        qr.split(',').nth(1),
        "new keys after logout"
    );
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}

#[tokio::test]
async fn qr_rotates_goes_idle_refreshes_and_pairs_by_code() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig {
        qr_first_ms: 3_000,
        qr_next_ms: 1_500,
        qr_max_rotations: 2,
        tick_ms: 50,
        page_ballast_mb: 24,
        ..SimConfig::default()
    })
    .await;
    let base = format!("http://{}", sim.addr());
    let chrome = Chrome::launch(&dir.path().join("profile")).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;
    // The ballast is JS heap (small objects and strings), not external array buffers: V8's
    // own heap usage counts it.
    assert!(eval::<bool>(&page, "window.__simBallast.length === 24 * 2650").await);
    let heap = page
        .execute(chromiumoxide::cdp::js_protocol::runtime::GetHeapUsageParams::default())
        .await
        .unwrap();
    assert!(
        heap.result.used_size >= 20.0 * 1048576.0,
        "JS heap used {} bytes with a 24 MiB ballast",
        heap.result.used_size
    );
    let first_ref: String = eval(&page, "window.require('WAWebConnModel').Conn.ref").await;

    // Rotations, then UNPAIRED_IDLE; the page refreshes through the backend event bus.
    wait_js(&page, &state_is("UNPAIRED_IDLE")).await;
    let idle_ref: String = eval(&page, "window.require('WAWebConnModel').Conn.ref").await;
    assert_ne!(first_ref, idle_ref, "the ref rotated before going idle");
    assert!(eval::<bool>(&page, LISTEN_JS).await);
    assert!(
        eval::<bool>(
            &page,
            "(window.require('WAWebBackendEventBus').BackendEventBus.triggerRefreshQR(), true)"
        )
        .await
    );
    wait_js(
        &page,
        &format!(
            "{} && window.require('WAWebConnModel').Conn.ref !== '{idle_ref}'",
            state_is("UNPAIRED")
        ),
    )
    .await;

    // Pairing code for a phone; the phone types it (with a dash, lower case).
    let code: String = eval(
        &page,
        r#"(async () => {
          const api = window.require('WAWebAltDeviceLinkingApi');
          api.setPairingType('ALT_DEVICE_LINKING');
          await api.initializeAltDeviceLinking();
          return api.startAltLinkingFlow('4915550077', true);
        })()"#,
    )
    .await;
    assert_eq!(code.len(), 8, "{code}");
    let typed = format!("{}-{}", &code[..4], code[4..].to_lowercase());
    let (s, _) = post(
        &base,
        "/sim/pair",
        json!({"phone": "4915550078", "code": typed}),
    )
    .await;
    assert_eq!(s, 404, "a code only links the phone it was asked for");
    let (s, b) = post(
        &base,
        "/sim/pair",
        json!({"phone": "4915550077", "code": typed}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    wait_js(&page, &state_is("CONNECTED")).await;
    assert_eq!(
        eval::<String>(
            &page,
            "window.require('WAWebUserPrefsMeUser').getMaybeMePnUser()._serialized"
        )
        .await,
        "4915550077@c.us"
    );
    // A pairing code cannot be asked for once connected.
    let refused: bool = eval(
        &page,
        "window.require('WAWebAltDeviceLinkingApi').startAltLinkingFlow('4915550077', true).then(() => false, () => true)",
    )
    .await;
    assert!(refused);

    // The device logs itself out: starting_logout_from_bridge first, the phone forgets it, a
    // reload to ?post_logout=1&logout_reason=user_initiated, stripped again after boot.
    let logged_out: bool = eval(
        &page,
        "window.require('WAWebSocketModel').Socket.logout().then(() => window.__ev.some(e => e[0] === 'starting_logout'))",
    )
    .await;
    assert!(logged_out);
    wait_js(&page, &after_logout_js("user_initiated")).await;
    let (_, devices) = get(&base, "/sim/devices").await;
    assert!(!devices.to_string().contains("4915550077"), "{devices}");
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}

#[tokio::test]
async fn crash_fault_oom_really_kills_the_renderer() {
    use chromiumoxide::cdp::browser_protocol::{inspector, target};
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig::default()).await;
    let base = format!("http://{}", sim.addr());
    let phone = "4915550055";
    // Bound the V8 heap so the out-of-memory crash costs little memory on the build machine.
    let chrome = Chrome::launch_with(
        &dir.path().join("profile"),
        &["--js-flags=--max-old-space-size=64"],
    )
    .await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;
    let qr: String = eval(&page, QR_JS).await;
    let (s, _) = post(&base, "/sim/link", json!({"qr": qr, "phone": phone})).await;
    assert_eq!(s, 200);
    wait_js(&page, &state_is("CONNECTED")).await;

    let mut from_target = chrome
        .browser
        .event_listener::<target::EventTargetCrashed>()
        .await
        .unwrap();
    let mut from_page = page
        .event_listener::<inspector::EventTargetCrashed>()
        .await
        .unwrap();
    let (s, b) = post(&base, "/sim/faults", json!({"crash": phone, "mode": "oom"})).await;
    assert_eq!((s, b["crashed"].as_u64()), (200, Some(1)));
    let crashed = tokio::time::timeout(DEADLINE, async {
        tokio::select! {
            e = from_target.next() => e.is_some(),
            e = from_page.next() => e.is_some(),
        }
    })
    .await
    .expect("Chromium reports the renderer crashed");
    assert!(crashed);
    // The crashed page's websocket is gone: the simulator sees the device offline.
    wait_for("device offline", || async {
        let (_, d) = get(&base, "/sim/devices").await;
        (d.as_array()?
            .iter()
            .any(|d| d["phone"] == json!(phone) && d["state"] == json!("OFFLINE")))
        .then_some(())
    })
    .await;
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}

#[tokio::test]
async fn slow_load_holds_the_modules_back_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig::default()).await;
    let base = format!("http://{}", sim.addr());
    let (s, _) = post(&base, "/sim/faults", json!({"slow_load_ms": 3_600_000u64})).await;
    assert_eq!(s, 200);

    let chrome = Chrome::launch(&dir.path().join("profile")).await;
    let page = chrome.open("about:blank").await;
    let _ = page
        .evaluate_expression(format!("(location.href = '{base}/', true)"))
        .await;
    wait_for("a chunk request held by the fault", || async {
        let (_, f) = get(&base, "/sim/faults").await;
        (f["held_loads"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    wait_js(&page, "location.protocol === 'http:'").await;
    // The chunks are held: WhatsApp Web's module system is not there.
    assert!(
        eval::<bool>(
            &page,
            "typeof window.require === 'undefined' && typeof window.Debug === 'undefined'"
        )
        .await
    );

    let (s, _) = post(&base, "/sim/faults", json!({"clear": true})).await;
    assert_eq!(s, 200);
    wait_js(&page, &state_is("UNPAIRED")).await;
    let (_, f) = get(&base, "/sim/faults").await;
    assert_eq!(f, json!({"slow_load_ms": 0, "held_loads": 0}));
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}

/// Copies a closed Chromium profile (regular files and directories; Chromium's `Singleton*`
/// symlinks are gone after a clean close and are skipped anyway).
pub(super) fn copy_profile(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let dest = to.join(entry.file_name());
        if meta.is_dir() {
            copy_profile(&entry.path(), &dest);
        } else if meta.is_file() {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

#[tokio::test]
async fn two_browsers_on_copies_of_one_profile_conflict_and_take_over() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    let (sim, cancel) = start(SimConfig::default()).await;
    let base = format!("http://{}", sim.addr());
    let phone = "4915550044";

    let chrome = Chrome::launch(&first).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;
    let qr: String = eval(&page, QR_JS).await;
    let (s, _) = post(&base, "/sim/link", json!({"qr": qr, "phone": phone})).await;
    assert_eq!(s, 200);
    wait_js(&page, &state_is("CONNECTED")).await;
    chrome.close().await;
    copy_profile(&first, &second);

    let a = Chrome::launch(&first).await;
    let page_a = a.open(&format!("{base}/")).await;
    wait_js(&page_a, &state_is("CONNECTED")).await;
    let b = Chrome::launch(&second).await;
    let page_b = b.open(&format!("{base}/")).await;
    wait_js(&page_b, &state_is("CONNECTED")).await;
    wait_js(&page_a, &state_is("CONFLICT")).await;

    assert!(
        eval::<bool>(
            &page_a,
            "(window.require('WAWebSocketModel').Socket.takeover(), true)"
        )
        .await
    );
    wait_js(&page_a, &state_is("CONNECTED")).await;
    wait_js(&page_b, &state_is("CONFLICT")).await;
    a.close().await;
    b.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}
