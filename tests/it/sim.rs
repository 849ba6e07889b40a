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

mod pipeline;

mod models;
use models::linked_page;

mod versions;

mod linking;

mod control;

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
