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
  W('WAWebCmd').Cmd.on('starting_logout_from_bridge', () => window.__ev.push(['starting_logout']));
  W('WAWebCmd').Cmd.on('logout_from_bridge', () => window.__ev.push(['logout']));
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

/// Sends bytes through WhatsApp's media pipeline (the lazy modules) with WhatsApp's own
/// `MediaPrep.sendToChat`.
fn pipeline_js(
    to: &str,
    mimetype: &str,
    filename: &str,
    bytes: &[u8],
    prep_opts: &str,
    caption: &str,
) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        r#"(async () => {{
  await window.requireDeferred('WAWebPrepRawMedia').load();
  const W = window.require;
  const bin = atob('{b64}');
  const u8 = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
  const file = new File([u8], '{filename}', {{type: '{mimetype}'}});
  const chat = await W('WAWebCollections').Chat.find(W('WAWebWidFactory').createWid('{to}'));
  const opaque = await W('WAWebMediaOpaqueData').createFromData(file, '{mimetype}');
  const prep = W('WAWebPrepRawMedia').prepRawMedia(opaque, {prep_opts});
  try {{
    const r = await prep.sendToChat({{chat, options: {{caption: '{caption}'}}}});
    return {{id: r.msg ? r.msg.id._serialized : null, result: r.messageSendResult}};
  }} catch (e) {{ return {{id: null, result: 'threw: ' + e.message}}; }}
}})()"#
    )
}

/// True once a logout reloaded the page with `?post_logout=1&logout_reason=<reason>` and the
/// new document stripped the markers again and shows a fresh QR.
fn after_logout_js(reason: &str) -> String {
    format!(
        "(() => {{ const nav = performance.getEntriesByType('navigation')[0]; \
         return !!nav && nav.name.includes('post_logout=1&logout_reason={reason}') && \
         location.search === '' && {} && !!window.require('WAWebConnModel').Conn.ref; }})()",
        state_is("UNPAIRED")
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

/// Links a fresh page to `phone`; returns the page once CONNECTED and synced.
async fn linked_page(chrome: &Chrome, base: &str, phone: &str) -> Page {
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;
    let qr: String = eval(&page, QR_JS).await;
    let (s, b) = post(base, "/sim/link", json!({"qr": qr, "phone": phone})).await;
    assert_eq!(s, 200, "{b}");
    wait_js(
        &page,
        &format!(
            "{} && window.require('WAWebSocketModel').Socket.hasSynced",
            state_is("CONNECTED")
        ),
    )
    .await;
    page
}

/// Whether `require(name)` works, as a JS expression.
fn defined(name: &str) -> String {
    format!(
        "(() => {{ try {{ window.require('{name}'); return true; }} catch (e) {{ return false; }} }})()"
    )
}

#[tokio::test]
async fn models_collections_lazy_modules_and_current_names() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig {
        qr_first_ms: 1_200,
        qr_next_ms: 400,
        tick_ms: 50,
        ..SimConfig::default()
    })
    .await;
    let base = format!("http://{}", sim.addr());
    let chrome = Chrome::launch(&dir.path().join("profile")).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;

    // Current names present, July-2025 names absent.
    let names: Vec<Value> = eval(
        &page,
        r#"(() => { const W = window.require;
          const Cmd = W('WAWebCmd').Cmd, Bus = W('WAWebBackendEventBus').BackendEventBus;
          return [Cmd.refreshQR === undefined, typeof Cmd.isOfflineDeliveryEnd,
            ['triggerRefreshQR','onRefreshQR','triggerLogout','onLogout'].every(n => typeof Bus[n] === 'function'),
            Bus.socketState, typeof W('WAWebUserPrefsMultiDevice').advSecretEventEmitter.on,
            W('WAWebBuildConstants').VERSION_STR === window.Debug.VERSION, W('WAWebBuildConstants').VERSION_BASE,
            W('WAWebUserPrefsMeUser').getMeUser === undefined, typeof W('WAWebUserPrefsMeUser').getMeUserOrThrow,
            W('WAWebWidFactory').createUserWid === undefined,
            ['createWid','createUserWidOrThrow','createUserLidOrThrow','asUserWidOrThrow','asChatWid'].every(n => typeof W('WAWebWidFactory')[n] === 'function'),
            W('WAWebCompanionRegClientUtils').DEVICE_PLATFORM,
            (() => { try { new (W('WAWebMsgKey'))({fromMe: true, remote: '1@c.us', id: 'A'}); return 'built'; } catch (e) { return e.message; } })()];
        })()"#,
    )
    .await;
    assert_eq!(
        names,
        vec![
            json!(true),
            json!("boolean"),
            json!(true),
            json!("UNPAIRED"),
            json!("function"),
            json!(true),
            json!("2.3000.1012345678"),
            json!(true),
            json!("function"),
            json!(true),
            json!(true),
            json!("1"),
            json!("MsgKey error: me is undefined"),
        ]
    );

    // Models: attributes behind prototype accessors over __x_ fields; toJSON = props only.
    let models: Vec<Value> = eval(
        &page,
        r#"(() => { const W = window.require; const Conn = W('WAWebConnModel').Conn, Socket = W('WAWebSocketModel').Socket;
          const copy = Object.assign({}, Conn);
          return [Object.prototype.hasOwnProperty.call(Conn, 'ref'), typeof Conn.__x_ref,
            Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Conn), 'ref').get !== undefined,
            copy.ref === undefined && copy.__x_ref === Conn.ref,
            Object.keys(Conn).every(k => k.startsWith('__x_')),
            JSON.stringify(Socket.serialize()), Socket.toJSON().state === undefined,
            Conn.toJSON().ref === Conn.ref, Conn.serialize().refExpiry === undefined];
        })()"#,
    )
    .await;
    assert_eq!(
        models,
        vec![
            json!(false),
            json!("string"),
            json!(true),
            json!(true),
            json!(true),
            json!("{}"),
            json!(true),
            json!(true),
            json!(true)
        ]
    );

    // The lazy media bundle is not there before CONNECTED; a deferred handle waits for it.
    assert!(!eval::<bool>(&page, &defined("WAWebMediaMmsV4Upload")).await);
    assert!(
        eval::<bool>(
            &page,
            "(window.__lazy = null, window.requireDeferred('WAWebMediaMmsV4Upload').load().then(m => { window.__lazy = typeof m.uploadMedia; }), true)"
        )
        .await
    );

    // A batch is six refs with one new ADV secret, then UNPAIRED_IDLE; a refresh starts a new
    // batch with a new secret.
    assert!(
        eval::<bool>(
            &page,
            r#"(() => { const W = window.require; window.__refs = [W('WAWebConnModel').Conn.ref]; window.__advs = 0;
          W('WAWebConnModel').Conn.on('change:ref', (c, r, old) => window.__refs.push(r));
          W('WAWebUserPrefsMultiDevice').advSecretEventEmitter.on('change', () => window.__advs++);
          return true; })()"#
        )
        .await
    );
    wait_js(&page, &state_is("UNPAIRED_IDLE")).await;
    let (refs, advs): (Vec<String>, u32) = eval(&page, "[window.__refs, window.__advs]").await;
    assert_eq!(refs.len(), 6, "{refs:?}");
    assert_eq!(advs, 0, "one secret per batch");
    let before: String = eval(&page, QR_JS).await;
    assert!(
        eval::<bool>(
            &page,
            "(window.require('WAWebBackendEventBus').BackendEventBus.triggerRefreshQR(), true)"
        )
        .await
    );
    wait_js(
        &page,
        &format!("{} && window.__advs === 1", state_is("UNPAIRED")),
    )
    .await;
    let after: String = eval(&page, QR_JS).await;
    assert_ne!(before.split(',').nth(3), after.split(',').nth(3));
    assert_eq!(
        eval::<String>(
            &page,
            "document.querySelector('[data-testid=link-device-qr-code]')?.dataset.ref || ''"
        )
        .await
        .split(',')
        .nth(3),
        after.split(',').nth(3),
        "the rendered QR carries the current secret"
    );

    // Link: the lazy bundle arrives, collections work.
    let (s, _) = post(
        &base,
        "/sim/link",
        json!({"qr": after, "phone": "4915550061"}),
    )
    .await;
    assert_eq!(s, 200);
    wait_js(&page, "window.__lazy === 'function'").await;
    assert!(eval::<bool>(&page, &defined("WAWebMediaMmsV4Upload")).await);
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": "4915550061", "from": "4915550062", "text": "one"}),
    )
    .await;
    assert_eq!(s, 200);
    let id = b["id"].as_str().unwrap().to_owned();
    wait_js(
        &page,
        &format!("!!window.require('WAWebCollections').Msg.get('{id}')"),
    )
    .await;
    let coll: Vec<Value> = eval(
        &page,
        &format!(
            r#"(() => {{ const C = window.require('WAWebCollections'); const m = C.Msg.get('{id}');
          const seen = [];
          C.Msg.on('change:ack', (msg, v, old) => seen.push([msg === m, v, old]));
          C.Msg.on('remove', (msg) => seen.push(['remove', msg === m]));
          m.set('ack', 2);
          C.Msg.remove(m);
          const back = C.Msg.add(m);
          return [Array.isArray(C.Msg._models), C.Msg.getModelsArray().includes(m), C.Msg.toArray().length === C.Msg.length,
            C.Msg.serialize().some(x => x.body === 'one'), m.toJSON().isNewMsg === undefined, m.toJSON().body,
            JSON.stringify(seen), back === m, C.Chat.get('4915550062@c.us').id._serialized];
        }})()"#
        ),
    )
    .await;
    assert_eq!(
        coll,
        vec![
            json!(true),
            json!(true),
            json!(true),
            json!(true),
            json!(true),
            json!("one"),
            json!("[[true,2,1],[\"remove\",true]]"),
            json!(true),
            json!("4915550062@c.us")
        ]
    );

    // A July-2025 build: the old names, and no backend bus.
    let (s, _) = post(&base, "/sim/faults", json!({"legacy_build": true})).await;
    assert_eq!(s, 200);
    // (Same profile, so this tab reconnects as the linked device; only the names matter here.)
    let legacy = chrome.open(&format!("{base}/")).await;
    wait_js(&legacy, "!!(window.require && window.Debug)").await;
    let old: Vec<Value> = eval(
        &legacy,
        r#"(() => { const W = window.require;
          let bus; try { W('WAWebBackendEventBus'); bus = 'present'; } catch (e) { bus = 'absent'; }
          return [typeof W('WAWebCmd').Cmd.refreshQR, typeof W('WAWebCmd').Cmd.logout, bus,
            typeof W('WAWebWidFactory').createUserWid, typeof W('WAWebUserPrefsMeUser').getMeUser]; })()"#,
    )
    .await;
    assert_eq!(
        old,
        vec![
            json!("function"),
            json!("function"),
            json!("absent"),
            json!("function"),
            json!("function")
        ]
    );
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}

#[tokio::test]
async fn lid_groups_ciphertext_revoke_and_media_through_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig {
        tick_ms: 50,
        ..SimConfig::default()
    })
    .await;
    let base = format!("http://{}", sim.addr());
    let (me, peer, other) = ("4915550071", "4915550072", "4915550073");
    let chrome = Chrome::launch(&dir.path().join("profile")).await;
    let page = linked_page(&chrome, &base, me).await;
    let (s, b) = get(&base, &format!("/sim/lid?phone={peer}")).await;
    assert_eq!(s, 200);
    let peer_lid = b["lid"]
        .as_str()
        .unwrap()
        .strip_suffix("@lid")
        .unwrap()
        .to_owned();
    assert_eq!(peer_lid.len(), 15);
    let (s, b) = get(&base, "/sim/lid?phone=12").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_phone")));

    // An inbound LID message: an @lid chat, the mapping learned by the page.
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "from": peer, "text": "via lid", "lid": true}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("false_{peer_lid}@lid_"))
    );
    wait_js(
        &page,
        &format!("!!window.require('WAWebCollections').Chat.get('{peer_lid}@lid')"),
    )
    .await;
    let map: Vec<Value> = eval(
        &page,
        &format!(
            "(() => {{ const A = window.require('WAWebApiContact'), F = window.require('WAWebWidFactory'); \
             return [A.getCurrentLid(F.createWid('{peer}@c.us'))?._serialized, A.getPhoneNumber(F.createWid('{peer_lid}@lid'))?._serialized]; }})()"
        ),
    )
    .await;
    assert_eq!(
        map,
        vec![
            json!(format!("{peer_lid}@lid")),
            json!(format!("{peer}@c.us"))
        ]
    );

    // Sending to the @lid chat: the PN `from` is refused (ack -1), the LID `from` accepted.
    let lid_chat = format!("{peer_lid}@lid");
    let refused: Value = eval(
        &page,
        &send_from_js(&lid_chat, "getMaybeMePnUser", "", "'pn from'"),
    )
    .await;
    assert!(
        refused["result"].as_str().unwrap().starts_with("rejected"),
        "{refused}"
    );
    let ok: Value = eval(
        &page,
        &send_from_js(&lid_chat, "getMaybeMeLidUser", "", "'lid from'"),
    )
    .await;
    assert_eq!(ok["result"], json!("OK"), "{ok}");
    let list = messages(&base, me).await;
    let by_id = |id: &Value| list.iter().find(|m| &m["id"] == id).cloned().unwrap();
    let r = by_id(&refused["id"]);
    assert!(r["refused"].as_str().unwrap().contains("LID"), "{r}");
    let a = by_id(&ok["id"]);
    assert_eq!(
        (&a["to"], &a["addressing"], &a["ack"]),
        (&json!(peer), &json!("lid"), &json!(1))
    );

    // A LID-addressed group: a send without participant is refused, with it accepted.
    let (s, b) = post(
        &base,
        "/sim/groups",
        json!({"subject": "Team", "participants": [me, peer, other], "lid_addressing": true}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let gid = b["id"].as_str().unwrap().to_owned();
    wait_js(
        &page,
        &format!("window.require('WAWebCollections').Chat.get('{gid}')?.groupMetadata?.isLidAddressingMode === true"),
    )
    .await;
    let no_part: Value = eval(
        &page,
        &send_from_js(&gid, "getMaybeMeLidUser", "", "'no participant'"),
    )
    .await;
    assert!(
        no_part["result"].as_str().unwrap().starts_with("rejected"),
        "{no_part}"
    );
    let with_part: Value = eval(
        &page,
        &send_from_js(
            &gid,
            "getMaybeMeLidUser",
            "participant: me,",
            "'with participant'",
        ),
    )
    .await;
    assert_eq!(with_part["result"], json!("OK"), "{with_part}");
    let list = messages(&base, me).await;
    let g = list.iter().find(|m| m["id"] == with_part["id"]).unwrap();
    let (_, me_lid) = get(&base, &format!("/sim/lid?phone={me}")).await;
    assert_eq!(g["participant"], me_lid["lid"]);
    assert!(
        list.iter().find(|m| m["id"] == no_part["id"]).unwrap()["refused"]
            .as_str()
            .unwrap()
            .contains("participant")
    );
    let (s, b) = post(
        &base,
        "/sim/groups",
        json!({"subject": "", "participants": [me]}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_subject")));

    // Inbound in the group: author and key participant; ciphertext first, both paths.
    assert!(
        eval::<bool>(
            &page,
            r#"(() => { window.__ct = []; const Msg = window.require('WAWebCollections').Msg;
          Msg.on('add', m => window.__ct.push(['add', m.id._serialized, m.type, m.author ? m.author._serialized : null]));
          Msg.on('remove', m => window.__ct.push(['remove', m.id._serialized, m.type]));
          Msg.on('change:type', (m, t) => window.__ct.push(['type', m.id._serialized, t, m.body])); return true; })()"#
        )
        .await
    );
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "group": gid, "author": other, "text": "changed", "ciphertext": {"after_ms": 300, "path": "change"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let changed = b["id"].as_str().unwrap().to_owned();
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "from": peer, "text": "readded", "ciphertext": {"after_ms": 300, "path": "readd"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let readded = b["id"].as_str().unwrap().to_owned();
    wait_js(
        &page,
        &format!("window.__ct.some(e => e[0] === 'type' && e[1] === '{changed}') && window.__ct.filter(e => e[1] === '{readded}').length === 3"),
    )
    .await;
    let ev: Vec<Value> = eval(&page, "window.__ct").await;
    let (_, other_lid) = get(&base, &format!("/sim/lid?phone={other}")).await;
    let author = other_lid["lid"].as_str().unwrap().to_owned();
    assert!(changed.ends_with(&format!("_{author}")), "{changed}");
    let of = |id: &str| {
        ev.iter()
            .filter(|e| e[1] == json!(id))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(&changed),
        vec![
            json!(["add", changed, "ciphertext", author]),
            json!(["type", changed, "chat", "changed"])
        ]
    );
    assert_eq!(
        of(&readded),
        vec![
            json!(["add", readded, "ciphertext", null]),
            json!(["remove", readded, "ciphertext"]),
            json!(["add", readded, "chat", null])
        ]
    );
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "from": peer, "text": "x", "ciphertext": {"after_ms": 1, "path": "other"}}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_ciphertext")));

    // Revoke: the original model is replaced by a `revoked` one.
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "from": peer, "text": "oops"}),
    )
    .await;
    assert_eq!(s, 200);
    let oops = b["id"].as_str().unwrap().to_owned();
    wait_js(
        &page,
        &format!("!!window.require('WAWebCollections').Msg.get('{oops}')"),
    )
    .await;
    let (s, b) = post(
        &base,
        "/sim/revoke",
        json!({"from": other, "to": me, "wa_id": oops}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_message")));
    let (s, _) = post(
        &base,
        "/sim/revoke",
        json!({"from": peer, "to": me, "wa_id": oops}),
    )
    .await;
    assert_eq!(s, 200);
    wait_js(
        &page,
        &format!("window.require('WAWebCollections').Msg.get('{oops}')?.type === 'revoked'"),
    )
    .await;
    let rv: Vec<Value> = eval(
        &page,
        &format!(
            "(() => {{ const m = window.require('WAWebCollections').Msg.get('{oops}'); \
             return [m.subtype, m.protocolMessageKey._serialized, m.body === undefined, \
             window.__ct.some(e => e[0] === 'remove' && e[1] === '{oops}')]; }})()"
        ),
    )
    .await;
    assert_eq!(
        rv,
        vec![json!("sender"), json!(oops), json!(true), json!(true)]
    );

    // Media through the pipeline is recorded as uploaded with the server's sha256.
    let png = b"\x89PNG\r\n\x1a\n wafleet pretend image bytes, long enough for two AES blocks";
    let sent: Value = eval(
        &page,
        &pipeline_js(
            &format!("{peer}@c.us"),
            "image/png",
            "p.png",
            png,
            "{}",
            "a picture",
        ),
    )
    .await;
    assert_eq!(sent["result"], json!("OK"), "{sent}");
    // Inline data is refused and recorded as refused.
    let inline: Value = eval(
        &page,
        &send_from_js(
            &format!("{peer}@c.us"),
            "getMaybeMePnUser",
            "type: 'image', mimetype: 'image/png', caption: 'inline',",
            "'data:image/png;base64,iVBORw0KGgo='",
        ),
    )
    .await;
    assert!(
        inline["result"].as_str().unwrap().starts_with("rejected"),
        "{inline}"
    );
    assert_eq!(inline["ack"], json!(-1), "{inline}");
    let list = messages(&base, me).await;
    let img = list.iter().find(|m| m["id"] == sent["id"]).unwrap();
    assert_eq!(
        (
            &img["uploaded"],
            &img["sha256"],
            &img["media"]["mimetype"],
            &img["text"]
        ),
        (
            &json!(true),
            &json!(hex::encode(Sha256::digest(png))),
            &json!("image/png"),
            &json!("a picture")
        )
    );
    let bad = list
        .iter()
        .find(|m| {
            m["text"] == json!("inline")
                && m["refused"].as_str().is_some_and(|r| r.contains("inline"))
        })
        .cloned();
    assert!(bad.is_some(), "{list:?}");

    // The upload_fail fault: uploadMedia resolves {kind: "error"}, nothing is sent.
    let (s, _) = post(&base, "/sim/faults", json!({"upload_fail": true})).await;
    assert_eq!(s, 200);
    let failed: Value = eval(
        &page,
        &pipeline_js(
            &format!("{peer}@c.us"),
            "image/png",
            "p.png",
            png,
            "{}",
            "fails",
        ),
    )
    .await;
    assert_eq!(failed["result"], json!("ERROR_UPLOAD"), "{failed}");
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}

/// Sends a message to `chat` with `from` = `WAWebUserPrefsMeUser.<me_fn>()`; `extra` (fields
/// that override the text defaults) may use `me`. A refused send resolves `rejected: …`.
fn send_from_js(chat: &str, me_fn: &str, extra: &str, body: &str) -> String {
    format!(
        r#"(async () => {{
  const W = window.require;
  const chat = W('WAWebCollections').Chat.get('{chat}') || await W('WAWebCollections').Chat.find(W('WAWebWidFactory').createWid('{chat}'));
  const MsgKey = W('WAWebMsgKey');
  const me = W('WAWebUserPrefsMeUser').{me_fn}();
  const msg = {{ from: me, to: chat.id, body: {body}, type: 'chat', ack: 0, local: true, self: 'out', isNewMsg: true, t: Math.floor(Date.now() / 1000), {extra} }};
  msg.id = new MsgKey({{from: me, to: chat.id, id: await MsgKey.newId(), selfDir: 'out', participant: msg.participant}});
  const [added, sent] = W('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, msg);
  const m = await added;
  try {{ const r = await sent; return {{id: msg.id._serialized, result: r.messageSendResult, ack: m.ack}}; }}
  catch (e) {{ return {{id: msg.id._serialized, result: 'rejected: ' + e.message, ack: m.ack}}; }}
}})()"#
    )
}

#[tokio::test]
async fn passkey_linking_and_the_integrity_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig::default()).await;
    let base = format!("http://{}", sim.addr());
    let phone = "4915550081";
    let (s, b) = post(&base, "/sim/faults", json!({"passkey": "maybe"})).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_fault")));
    let (s, b) = post(&base, "/sim/faults", json!({"passkey": "linking"})).await;
    assert_eq!((s, b["passkey"].as_str()), (200, Some("linking")));
    let chrome = Chrome::launch(&dir.path().join("profile")).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;
    // Watch the frontend bridge the way an adapter would: by wrapping the module function.
    assert!(
        eval::<bool>(
            &page,
            r#"(() => { const api = window.require('WAWebBackendApi'); const orig = api.frontendFireAndForget;
          window.__fe = []; api.frontendFireAndForget = function (name, payload) {
            window.__fe.push([name, payload || null, window.require('WAWebShortcakeLinkingApi').getShortcakeLinkingStage()]);
            return orig.apply(this, arguments); }; return true; })()"#
        )
        .await
    );
    let qr: String = eval(&page, QR_JS).await;
    let (s, b) = post(&base, "/sim/link", json!({"qr": qr, "phone": phone})).await;
    assert_eq!((s, b["passkey"].as_str()), (202, Some("pending")), "{b}");
    wait_js(
        &page,
        "window.__fe.some(e => e[0] === 'shortcakeVerificationCodeReady')",
    )
    .await;
    let fe: Vec<Value> = eval(&page, "window.__fe").await;
    let names: Vec<&str> = fe.iter().map(|e| e[0].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "passkeyPrologueRequest",
            "shortcakePrologueSent",
            "shortcakeVerificationCodeReady"
        ]
    );
    assert_eq!(fe[0][2], json!("Initialized"));
    let code = fe[2][1]["verificationCode"].as_str().unwrap();
    assert_eq!(code.len(), 6);
    assert_eq!(
        eval::<String>(
            &page,
            "window.require('WAWebShortcakeLinkingApi').getShortcakeLinkingStage()"
        )
        .await,
        "WaitingForVerificationCodeConfirmation"
    );
    assert_eq!(
        eval::<String>(&page, STATE).await,
        "UNPAIRED",
        "no link yet"
    );
    let (s, b) = post(
        &base,
        "/sim/passkey",
        json!({"phone": phone, "action": "later"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_action")));
    let (s, b) = post(
        &base,
        "/sim/passkey",
        json!({"phone": phone, "action": "complete"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    wait_js(&page, &state_is("CONNECTED")).await;

    // The integrity checkpoint after CONNECTED: a blocking modal until the passkey is used.
    let (s, _) = post(&base, "/sim/faults", json!({"passkey": "checkpoint"})).await;
    assert_eq!(s, 200);
    let _ = page.reload().await;
    wait_js(
        &page,
        &format!(
            "{} && !!document.querySelector('[data-testid=passkey-checkpoint][role=dialog]')",
            state_is("CONNECTED")
        ),
    )
    .await;
    let (s, b) = post(
        &base,
        "/sim/passkey",
        json!({"phone": phone, "action": "complete"}),
    )
    .await;
    assert_eq!((s, b["checkpoints_passed"].as_u64()), (200, Some(1)), "{b}");
    wait_js(
        &page,
        "!document.querySelector('[data-testid=passkey-checkpoint]')",
    )
    .await;
    let (s, b) = post(
        &base,
        "/sim/passkey",
        json!({"phone": phone, "action": "complete"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("no_passkey")));
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}
