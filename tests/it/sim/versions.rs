//! Web versions on the simulated page: builds pinned per link, retired builds turned away and
//! deprecated, the adv key rotation, a missing module surface and a delayed history sync.

use super::*;

#[tokio::test]
async fn versioned_pages_pin_old_builds_and_retired_ones_are_deprecated() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig::default()).await;
    let base = format!("http://{}", sim.addr());
    let old = "2.3000.1012345678-sim";
    let new = "2.3000.1012345679-sim";
    let (s, v) = get(&base, "/sim/web-version").await;
    assert_eq!(
        (s, v),
        (200, json!({"live": old, "known": [old], "retired": []}))
    );
    let old_html = client()
        .get(&base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        old_html.contains(&format!("/static/wa-app.js?v={old}")),
        "{old_html}"
    );

    // Validation first: nothing changes on a bad request.
    for (body, status, code) in [
        (json!({"version": "2.3000"}), 400, "invalid_version"),
        (json!({"version": "2.3000.1-BAD"}), 400, "invalid_version"),
        (
            json!({"version": format!("2.3000.{}", "1".repeat(40))}),
            400,
            "invalid_version",
        ),
        (json!({"retire": [old]}), 409, "live_version"),
        (json!({"retire": ["9.9.9"]}), 404, "unknown_version"),
        (json!({}), 400, "invalid_body"),
        (json!({"version": new, "other": 1}), 400, "invalid_body"),
    ] {
        let (s, b) = post(&base, "/sim/web-version", body.clone()).await;
        assert_eq!((s, b["error"].as_str()), (status, Some(code)), "{body}");
    }
    let (_, v) = get(&base, "/sim/web-version").await;
    assert_eq!(v["live"], json!(old));

    // WhatsApp deploys a new build: GET / moves, the old bundles stay served.
    let (s, v) = post(&base, "/sim/web-version", json!({"version": new})).await;
    assert_eq!(
        (s, v),
        (
            200,
            json!({"live": new, "known": [old, new], "retired": []})
        )
    );
    let chrome = Chrome::launch(&dir.path().join("live")).await;
    let live = chrome.open(&format!("{base}/")).await;
    wait_js(&live, &state_is("UNPAIRED")).await;
    assert_eq!(eval::<String>(&live, "window.Debug.VERSION").await, new);
    let (s, _) = get(&base, "/static/wa-app.js?v=1.2.3").await;
    assert_eq!(s, 404, "bundles of a version never served do not exist");

    // A cached old index.html still names the old bundles, and they still carry the old
    // version. (Booting it in Chromium through Fetch.fulfillRequest is not done here: a document
    // fulfilled that way cannot open its websocket to the simulator in this Chromium, see
    // docs/simulator.md §1.8.)
    let old_app = client()
        .get(format!("{base}/static/wa-app.js?v={old}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        old_app.contains(&format!("'{old}'")),
        "the old bundle carries its version"
    );
    assert!(!old_app.contains(new));

    // A page booted on a build that is then retired is turned away at once.
    let newer = "2.3000.1012345680-sim";
    assert!(eval::<bool>(&live, LISTEN_JS).await);
    let (s, v) = post(
        &base,
        "/sim/web-version",
        json!({"version": newer, "retire": [old, new]}),
    )
    .await;
    assert_eq!((s, v["retired"].clone()), (200, json!([old, new])), "{v}");
    wait_js(&live, &state_is("DEPRECATED_VERSION")).await;
    assert!(
        eval::<bool>(&live, "window.require('WAWebConnModel').Conn.ref !== null").await,
        "the page keeps its last ref, but the server no longer knows it"
    );
    let (_, devices) = get(&base, "/sim/devices").await;
    assert!(
        !devices.to_string().contains("UNPAIRED"),
        "the server closed the deprecated page: {devices}"
    );
    // A reload gets the live index.html: the newer build, which works.
    let _ = live.reload().await;
    wait_js(
        &live,
        &format!(
            "{} && window.Debug.VERSION === '{newer}'",
            state_is("UNPAIRED")
        ),
    )
    .await;
    let (s, b) = post(&base, "/sim/web-version", json!({"version": old})).await;
    assert_eq!((s, b["error"].as_str()), (409, Some("retired_version")));
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}

#[tokio::test]
async fn adv_rotation_missing_surface_and_sync_delay() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig {
        sync_delay_ms: 1_500,
        ..SimConfig::default()
    })
    .await;
    let base = format!("http://{}", sim.addr());
    let (s, b) = post(
        &base,
        "/sim/faults",
        json!({"missing_modules": ["bad name"]}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_fault")));
    let (s, b) = post(
        &base,
        "/sim/faults",
        json!({"missing_modules": ["WAWebPrepRawMedia"], "missing_members": ["WAWebBackendEventBus.BackendEventBus.triggerRefreshQR", "WAWebMediaMmsV4Upload.uploadMedia"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["missing_modules"], json!(["WAWebPrepRawMedia"]));

    let chrome = Chrome::launch(&dir.path().join("profile")).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;
    // The build lacks what the faults removed, and says so the way WhatsApp Web does.
    let err: String = eval(
        &page,
        "(() => { try { window.require('WAWebPrepRawMedia'); return 'present'; } catch (e) { return e.message; } })()",
    )
    .await;
    assert_eq!(err, "Requiring unknown module \"WAWebPrepRawMedia\"");
    assert!(
        eval::<bool>(
            &page,
            "(() => { const B = window.require('WAWebBackendEventBus').BackendEventBus; \
             return B.triggerRefreshQR === undefined && typeof B.onRefreshQR === 'function'; })()"
        )
        .await
    );

    // A new batch rotates the ADV secret: the old QR is stale, a QR built again links.
    let before: String = eval(&page, QR_JS).await;
    let (s, b) = post(&base, "/sim/faults", json!({"rotate_adv": true})).await;
    assert_eq!((s, b["rotated"].as_u64()), (200, Some(1)));
    let after: String = wait_for("a new ADV secret in the page", || async {
        let qr: String = eval(&page, QR_JS).await;
        (qr.split(',').nth(3) != before.split(',').nth(3)).then_some(qr)
    })
    .await;
    let stale = format!(
        "{},{}",
        after.split_once(',').unwrap().0,
        before.split_once(',').unwrap().1
    );
    let (s, b) = post(
        &base,
        "/sim/link",
        json!({"qr": stale, "phone": "4915550033"}),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (409, Some("stale_adv_secret")),
        "{b}"
    );
    let six = format!("{after},https://faq.whatsapp.com/r/ld");
    assert!(eval::<bool>(&page, LISTEN_JS).await);
    assert!(
        eval::<bool>(
            &page,
            "(window.__sync = [], window.require('WAWebCmd').Cmd.on('offline_progress_update_from_bridge', () => window.__sync.push([window.require('WAWebOfflineHandler').OfflineMessageHandler.getOfflineDeliveryProgress(), window.require('WAWebSocketModel').Socket.hasSynced])), true)"
        )
        .await
    );
    let (s, b) = post(
        &base,
        "/sim/link",
        json!({"qr": six, "phone": "4915550033"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // Connected first, synced only after the offline delivery's progress events.
    wait_js(&page, &state_is("CONNECTED")).await;
    wait_js(
        &page,
        "window.require('WAWebSocketModel').Socket.hasSynced === true",
    )
    .await;
    let progress: Vec<(u32, bool)> = eval(&page, "window.__sync").await;
    assert!(progress.len() >= 2, "{progress:?}");
    assert!(progress.iter().all(|(_, synced)| !synced), "{progress:?}");
    assert_eq!(progress.last().unwrap().0, 100, "{progress:?}");
    // The faults hold for the lazily loaded media bundle too: its other modules arrive, the
    // removed module and member do not.
    wait_js(
        &page,
        "(() => { try { return !!window.require('WAWebMediaMmsV4Upload'); } catch (e) { return false; } })()",
    )
    .await;
    let lazy: Vec<Value> = eval(
        &page,
        "(() => { const W = window.require; let prep; \
         try { W('WAWebPrepRawMedia'); prep = 'present'; } catch (e) { prep = e.message; } \
         return [prep, W('WAWebMediaMmsV4Upload').uploadMedia === undefined, \
         typeof W('WAWebMediaOpaqueData').createFromData]; })()",
    )
    .await;
    assert_eq!(
        lazy,
        vec![
            json!("Requiring unknown module \"WAWebPrepRawMedia\""),
            json!(true),
            json!("function")
        ]
    );
    let (_, f) = post(&base, "/sim/faults", json!({"clear": true})).await;
    assert_eq!(f, json!({"slow_load_ms": 0, "held_loads": 0}));
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}
