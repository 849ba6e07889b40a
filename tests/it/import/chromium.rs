//! A plain Chromium linked through the simulator, as a whatsapp-web.js user's browser would be: the
//! profile the import starts from.

use super::*;

/// The whatsapp-web.js side: a plain Chromium on a LocalAuth-style profile, linked through the
/// simulator's phone, closed cleanly. This is all the test needs from whatsapp-web.js: it reads
/// the QR ref through the page's own modules (`WAWebConnModel.Conn.ref`), the phone scans the
/// QR that carries that ref, and it waits for `WAWebSocketModel.Socket.state === 'CONNECTED'`.
pub(super) async fn link_plain_chromium(profile: &Path, sim: &str, phone: &str) {
    let chromium = which_chromium();
    let config = BrowserConfig::builder()
        .chrome_executable(chromium)
        .disable_default_args()
        .new_headless_mode()
        .no_sandbox()
        .user_data_dir(profile)
        .args([
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .launch_timeout(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(30))
        .build()
        .expect("browser config");
    let (mut browser, mut handler) = Browser::launch(config).await.expect("launch chromium");
    let pump = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let page = browser
        .new_page(format!("{sim}/"))
        .await
        .expect("open the page");
    let eval = |js: &'static str| {
        let page = page.clone();
        async move {
            page.evaluate_expression(js)
                .await
                .ok()
                .and_then(|r| r.into_value::<Value>().ok())
        }
    };
    const REF: &str = "(() => { try { const c = window.require('WAWebConnModel').Conn; \
        return c.ref || (c.get && c.get('ref')) || null; } catch (e) { return null; } })()";
    let eval = &eval;
    let reference = wait_for("the page shows a QR ref", DEADLINE, || async move {
        eval(REF).await?.as_str().map(str::to_owned)
    })
    .await;
    let reference = &reference;
    // The phone scans the QR that carries this ref.
    let qr = wait_for("the simulator shows that QR", DEADLINE, || async move {
        let devices: Value = support::http()
            .get(format!("{sim}/sim/devices"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        devices.as_array()?.iter().find_map(|d| {
            (d["ref"] == reference.as_str()).then(|| d["qr"].as_str().map(str::to_owned))?
        })
    })
    .await;
    let r = support::http()
        .post(format!("{sim}/sim/link"))
        .json(&json!({"qr": qr, "phone": phone}))
        .send()
        .await
        .expect("link");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    const STATE: &str = "(() => { try { return window.require('WAWebSocketModel').Socket.state; } \
        catch (e) { return null; } })()";
    wait_for("Socket.state CONNECTED", DEADLINE, || async move {
        (eval(STATE).await? == "CONNECTED").then_some(())
    })
    .await;
    // A clean close flushes the profile and removes Chromium's SingletonLock.
    let _ = browser.close().await;
    let _ = tokio::time::timeout(DEADLINE, browser.wait()).await;
    let _ = pump.await;
}

pub(super) fn which_chromium() -> PathBuf {
    let name = std::env::var("WAFLEET_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let p = PathBuf::from(&name);
    if p.is_absolute() {
        return p;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(&name))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not found on PATH; apt-get install -y chromium"))
}
