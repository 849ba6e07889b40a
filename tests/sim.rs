//! The WhatsApp Web simulator, end to end: the control API over real HTTP, the `wafleet sim`
//! binary's readiness line and state file, and the page in a real headless Chromium (Debian's
//! `chromium`, or `WAFLEET_CHROMIUM`) driven through WhatsApp Web's module surface the way the
//! engine's adapter drives it.
//!
//! Every wait polls a condition with a deadline; nothing sleeps as synchronisation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wafleet::shutdown::CancellationToken;
use wafleet::sim::{self, SimConfig};

const DEADLINE: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(100);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn start(config: SimConfig) -> (sim::RunningSim, CancellationToken) {
    let cancel = CancellationToken::new();
    let running = sim::spawn(config, cancel.clone()).await.unwrap();
    (running, cancel)
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let r = client().get(format!("{base}{path}")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `f` until it yields `Some`, or panics after the deadline naming `what`.
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

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

    // Not JSON, too large, unknown routes: JSON errors too.
    let r = client()
        .post(format!("{base}/sim/link"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let big = "x".repeat(100 * 1024);
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": "4915550001", "from": "4915550002", "text": big}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (413, Some("payload_too_large")));
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
    assert!(js.text().await.unwrap().contains("WAWebSendMsgChatAction"));
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
fn sigterm(pid: i32) {
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

// === the page in a real Chromium ===

fn chromium() -> PathBuf {
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

struct Chrome {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
}

impl Chrome {
    async fn launch(profile: &Path) -> Chrome {
        Chrome::launch_with(profile, &[]).await
    }

    async fn launch_with(profile: &Path, extra: &[&str]) -> Chrome {
        let config = BrowserConfig::builder()
            .chrome_executable(chromium())
            .disable_default_args()
            .no_sandbox()
            .user_data_dir(profile)
            .args([
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .args(extra.iter().copied())
            .launch_timeout(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let (browser, mut handler) = Browser::launch(config).await.unwrap();
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Chrome { browser, handler }
    }

    async fn open(&self, url: &str) -> Page {
        self.browser.new_page(url).await.unwrap()
    }

    /// Closes the browser cleanly (so the profile is flushed) and waits for the process.
    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = tokio::time::timeout(DEADLINE, self.browser.wait()).await;
        let _ = self.handler.await;
    }
}

async fn eval<T: DeserializeOwned>(page: &Page, js: &str) -> T {
    page.evaluate_expression(js)
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Waits until a JS expression is `true` in the page (errors, e.g. during a navigation, retry).
async fn wait_js(page: &Page, js: &str) {
    wait_for(js, || async {
        match page.evaluate_expression(js).await {
            Ok(r) => (r.into_value::<bool>().ok() == Some(true)).then_some(()),
            Err(_) => None,
        }
    })
    .await
}

const STATE: &str = "window.require('WAWebSocketModel').Socket.state";

fn state_is(s: &str) -> String {
    format!("!!(window.require && window.Debug && {STATE} === '{s}')")
}

/// Builds the QR string from the modules, exactly as whatsapp-web.js does.
const QR_JS: &str = r#"(async () => {
  const W = window.require;
  const reg = await W('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo();
  const noise = await W('WAWebUserPrefsInfoStore').waNoiseInfo.get();
  const b64 = W('WABase64').encodeB64;
  return [W('WAWebConnModel').Conn.ref, b64(noise.staticKeyPair.pubKey),
    b64(reg.identityKeyPair.pubKey), await W('WAWebAdvSignatureApi').getADVSecretKey(),
    W('WAWebCompanionRegClientUtils').DEVICE_PLATFORM].join(',');
})()"#;

/// Records model events the way an adapter listens to them.
const LISTEN_JS: &str = r#"(() => {
  const W = window.require;
  window.__ev = [];
  W('WAWebSocketModel').Socket.on('change:state', (_s, st) => window.__ev.push(['state', st]));
  W('WAWebConnModel').Conn.on('change:ref', (_c, ref) => window.__ev.push(['ref', ref]));
  W('WAWebCmd').Cmd.on('logout', () => window.__ev.push(['logout']));
  const Msg = W('WAWebCollections').Msg;
  Msg.on('add', (m) => window.__ev.push(['add', m.id._serialized, m.id.fromMe, m.body || null, m.isNewMsg]));
  Msg.on('change:ack', (m, ack) => window.__ev.push(['ack', m.id._serialized, ack]));
  return true;
})()"#;

fn send_js(to: &str, extra: &str) -> String {
    format!(
        r#"(async () => {{
  const W = window.require;
  const wid = W('WAWebWidFactory').createWid('{to}');
  const chat = await W('WAWebCollections').Chat.find(wid);
  const MsgKey = W('WAWebMsgKey');
  const me = W('WAWebUserPrefsMeUser').getMaybeMePnUser();
  const id = new MsgKey({{from: me, to: chat.id, id: await MsgKey.newId(), selfDir: 'out'}});
  const msg = Object.assign({{id, ack: 0, from: me, to: chat.id, local: true, self: 'out',
    t: Math.floor(Date.now() / 1000), isNewMsg: true, type: 'chat'}}, {extra});
  const [added, sent] = W('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, msg);
  await added;
  const r = await sent;
  return {{id: id._serialized, result: r.messageSendResult}};
}})()"#
    )
}

async fn messages(base: &str, phone: &str) -> Vec<Value> {
    let (s, b) = get(base, &format!("/sim/messages?phone={phone}")).await;
    assert_eq!(s, 200);
    b.as_array().cloned().unwrap_or_default()
}

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
    wait_js(&page, &state_is("CONNECTED")).await;
    assert_eq!(
        eval::<String>(
            &page,
            "window.require('WAWebConnModel').Conn.wid._serialized"
        )
        .await,
        "4915550001@c.us"
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
    let pdf_b64 = base64::engine::general_purpose::STANDARD.encode(pdf);
    let media: Value = eval(
        &page,
        &send_js(
            "4915550009@c.us",
            &format!(
                "{{type: 'document', mimetype: 'application/pdf', filename: 'a.pdf', caption: 'the doc', data: '{pdf_b64}'}}"
            ),
        ),
    )
    .await;
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

    // 5. A dropped socket: TIMEOUT, then back to CONNECTED on its own.
    let (s, b) = post(&base, "/sim/faults", json!({"drop_socket": phone})).await;
    assert_eq!((s, b["dropped"].as_u64()), (200, Some(1)));
    wait_js(
        &page,
        "(() => { const s = window.__ev.filter(e => e[0] === 'state').map(e => e[1]); \
         const i = s.lastIndexOf('TIMEOUT'); return i > 0 && s.slice(i).includes('CONNECTED') && \
         window.require('WAWebSocketModel').Socket.state === 'CONNECTED'; })()",
    )
    .await;

    // 6. Browser restart on the same profile: CONNECTED without ever getting a QR ref.
    chrome.close().await;
    let chrome = Chrome::launch(&profile).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("CONNECTED")).await;
    assert!(
        eval::<bool>(&page, "window.require('WAWebConnModel').Conn.ref === null").await,
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

    // 8. The phone unlinks the device: logout event, credentials wiped, a fresh QR after reload.
    let (s, b) = post(&base, "/sim/unlink", json!({"phone": phone})).await;
    assert_eq!((s, b["unlinked"].as_u64()), (200, Some(1)));
    wait_js(
        &page,
        &format!(
            "location.search.includes('post_logout=1') && {} && !!window.require('WAWebConnModel').Conn.ref",
            state_is("UNPAIRED")
        ),
    )
    .await;
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

    // Rotations, then UNPAIRED_IDLE; the page answers with Cmd.refreshQR().
    wait_js(&page, &state_is("UNPAIRED_IDLE")).await;
    let idle_ref: String = eval(&page, "window.require('WAWebConnModel').Conn.ref").await;
    assert_ne!(first_ref, idle_ref, "the ref rotated before going idle");
    assert!(eval::<bool>(&page, LISTEN_JS).await);
    assert!(eval::<bool>(&page, "(window.require('WAWebCmd').Cmd.refreshQR(), true)").await);
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

    // The device logs itself out: Cmd 'logout', the phone forgets it, a fresh QR after reload.
    let logged_out: bool = eval(
        &page,
        "window.require('WAWebSocketModel').Socket.logout().then(() => window.__ev.some(e => e[0] === 'logout'))",
    )
    .await;
    assert!(logged_out);
    wait_js(
        &page,
        &format!(
            "location.search.includes('post_logout=1') && {} && !!window.require('WAWebConnModel').Conn.ref",
            state_is("UNPAIRED")
        ),
    )
    .await;
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
fn copy_profile(from: &Path, to: &Path) {
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
        json!({"missing_modules": ["WAWebPrepRawMedia"], "missing_members": ["WAWebCmd.Cmd.refreshQR"]}),
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
            "window.require('WAWebCmd').Cmd.refreshQR === undefined && typeof window.require('WAWebCmd').Cmd.on === 'function'"
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
    let (_, f) = post(&base, "/sim/faults", json!({"clear": true})).await;
    assert_eq!(f, json!({"slow_load_ms": 0, "held_loads": 0}));
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}
