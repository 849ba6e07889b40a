//! Inbound media end to end with real parts (issue 12, item 2): consul-dev, the simulator (its
//! media server encrypts the file as a sender's phone would, and its `WAWebDownloadManager`
//! follows WhatsApp Web's own module, docs/wa-surface.md C6), a worker running a real Chromium
//! session, the router in front, and, for S3 mode, a real `moto` S3 server.
//!
//! * an image with a caption from the simulator → the webhook `message` has `type: image`, the
//!   caption and `media.url`; GET on that URL through the router returns bytes with the same
//!   SHA-256 (lazy: downloaded on the request; eager: stored before it);
//! * a bad wa_id is `400 invalid_wa_id`, a text message `404 no_media`, an unknown one
//!   `404 message_not_found`, an expired file `410 media_expired`, a failing media server
//!   `502 whatsapp_error`;
//! * S3 mode stores the file in the bucket (read back from moto directly) and serves it.

use crate::support;

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::hooks::{self, Inbox, receiver};
use support::wa::{LONG, WaRig, delete, post};
use support::{ADMIN_TOKEN, free_port, http, wait_for};

const PHONE: &str = "4915550121";
const PEER: &str = "4915550122";
const WS: &str = "media-ws";

/// The WhatsApp rig and the webhook receiver every session of the test reports to.
struct MediaRig {
    wa: WaRig,
    inbox: Arc<Mutex<Inbox>>,
    hook: std::net::SocketAddr,
}

impl std::ops::Deref for MediaRig {
    type Target = WaRig;

    fn deref(&self) -> &WaRig {
        &self.wa
    }
}

/// (status, headers, bytes) of a GET with the token.
async fn fetch(url: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = http()
        .get(url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    let st = resp.status().as_u16();
    let h = resp.headers().clone();
    (st, h, resp.bytes().await.unwrap_or_default().to_vec())
}

/// A small PNG-like file: bytes that differ per test so hashes do not collide.
fn picture(tag: &str) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    for i in 0..40_000u32 {
        v.extend_from_slice(&(i ^ tag.len() as u32).to_le_bytes());
    }
    v.extend_from_slice(tag.as_bytes());
    v
}

impl MediaRig {
    /// The rig with `extra_env` for the worker (the media store), and a webhook receiver.
    async fn start(extra_env: &[(&str, &str)]) -> MediaRig {
        let wa = WaRig::start_with_env(WS, &[], extra_env).await;
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let hook = receiver(inbox.clone());
        MediaRig { wa, inbox, hook }
    }

    /// Creates session `s` (with `media_download`), links it to PHONE and waits for WORKING.
    async fn linked_session(&self, s: &str, mode: &str) {
        self.linked(
            s,
            PHONE,
            json!({"media_download": mode,
                "webhook": {"url": format!("http://{}/hook", self.hook)}}),
        )
        .await;
    }

    /// The simulator sends an image with a caption; answers session `s`'s `message` event
    /// payload (every session linked to PHONE gets the message).
    async fn inbound_image(&self, s: &str, bytes: &[u8], caption: &str) -> Value {
        let (st, v) = post(
            &self.sim("/sim/inbound"),
            json!({"to": PHONE, "from": PEER, "caption": caption, "media": {
            "mimetype": "image/png", "filename": "photo \"1\".png",
            "data": base64::engine::general_purpose::STANDARD.encode(bytes)}}),
        )
        .await;
        assert_eq!(st, 200, "inbound: {v}");
        let (msg, _, _) = hooks::event(&self.inbox, "the image's message event", LONG, |v| {
            v["event"] == "message" && v["session"] == s && v["payload"]["caption"] == caption
        })
        .await;
        msg["payload"].clone()
    }

    async fn faults(&self, body: Value) {
        let (st, v) = post(&self.sim("/sim/faults"), body).await;
        assert_eq!(st, 200, "faults: {v}");
    }
}

fn check_payload(p: &Value, s: &str, bytes: &[u8]) -> String {
    assert_eq!(p["type"], "image", "{p}");
    assert!(p["text"].is_null(), "{p}");
    let sha = hex::encode(Sha256::digest(bytes));
    assert_eq!(p["media"]["sha256"], sha, "{p}");
    assert_eq!(p["media"]["size"], bytes.len(), "{p}");
    assert_eq!(p["media"]["mimetype"], "image/png", "{p}");
    let url = p["media"]["url"].as_str().expect("media.url").to_owned();
    let wa_id = p["wa_id"].as_str().unwrap();
    assert_eq!(
        url,
        format!("/v1/workspaces/{WS}/sessions/{s}/messages/{wa_id}/media")
    );
    url
}

fn check_file(h: &reqwest::header::HeaderMap, got: &[u8], bytes: &[u8]) {
    let sha = hex::encode(Sha256::digest(bytes));
    assert_eq!(hex::encode(Sha256::digest(got)), sha, "same bytes");
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["content-length"], bytes.len().to_string().as_str());
    assert_eq!(h["x-wafleet-sha256"], sha.as_str());
    assert_eq!(h["etag"], format!("\"{sha}\"").as_str());
    let cd = h["content-disposition"].to_str().unwrap();
    assert!(
        cd.starts_with("attachment; filename=\"photo _1_.png\""),
        "{cd}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbound_media_lazy_and_eager_through_the_router() {
    let rig = MediaRig::start(&[]).await;
    rig.linked_session("lazy", "lazy").await;

    // Lazy: nothing is stored until the request; the request downloads through WhatsApp Web.
    let bytes = picture("lazy");
    let p = rig.inbound_image("lazy", &bytes, "look at this").await;
    let url = check_payload(&p, "lazy", &bytes);
    let (st, h, got) = fetch(&rig.api(&url)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&got));
    check_file(&h, &got, &bytes);
    // Stored now: served again while the media server is down.
    rig.faults(json!({"media_download": "fail"})).await;
    let (st, _, again) = fetch(&rig.api(&url)).await;
    assert_eq!((st, again == got), (200, true));

    // A failing media server for a file not stored yet: 502; an expired one: 410.
    let other = picture("fails");
    let p = rig.inbound_image("lazy", &other, "this one fails").await;
    let url2 = check_payload(&p, "lazy", &other);
    let (st, _, body) = fetch(&rig.api(&url2)).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(
        (st, v["error"].as_str()),
        (502, Some("whatsapp_error")),
        "{v}"
    );
    rig.faults(json!({"media_download": "expired"})).await;
    let (st, _, body) = fetch(&rig.api(&url2)).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(
        (st, v["error"].as_str()),
        (410, Some("media_expired")),
        "{v}"
    );
    rig.faults(json!({"media_download": "off"})).await;
    let (st, h, got) = fetch(&rig.api(&url2)).await;
    assert_eq!(st, 200);
    check_file(&h, &got, &other);

    // Bad ids and messages without media.
    let base = format!("/v1/workspaces/{WS}/sessions/lazy/messages");
    let (st, _, body) = fetch(&rig.api(&format!("{base}/not-an-id/media"))).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_wa_id")),
        "{v}"
    );
    let (st, _, body) = fetch(&rig.api(&format!("{base}/false_{PEER}@c.us_NOSUCHID/media"))).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(
        (st, v["error"].as_str()),
        (404, Some("message_not_found")),
        "{v}"
    );
    let (st, v) = post(
        &rig.sim("/sim/inbound"),
        json!({"to": PHONE, "from": PEER, "text": "just text"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (msg, _, _) = hooks::event(&rig.inbox, "the text event", LONG, |v| {
        v["payload"]["text"] == "just text"
    })
    .await;
    assert!(msg["payload"]["media"].is_null());
    let text_id = msg["payload"]["wa_id"].as_str().unwrap();
    let (st, _, body) = fetch(&rig.api(&format!("{base}/{text_id}/media"))).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!((st, v["error"].as_str()), (404, Some("no_media")), "{v}");
    let (st, _, _) = {
        let resp = http().get(rig.api(&url)).send().await.unwrap();
        (resp.status().as_u16(), (), ())
    };
    assert_eq!(st, 401, "a token is required");

    // Eager: the file is stored before anyone asks, so the media server can be down by then.
    rig.linked_session("eager", "eager").await;
    let bytes = picture("eager");
    let p = rig.inbound_image("eager", &bytes, "eager one").await;
    let url = check_payload(&p, "eager", &bytes);
    let stored = MediaDir(rig.data())
        .wait_for_file(&hex::encode(Sha256::digest(&bytes)))
        .await;
    assert!(stored.contains("/eager/"), "{stored}");
    rig.faults(json!({"media_download": "fail"})).await;
    let (st, h, got) = fetch(&rig.api(&url)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&got));
    check_file(&h, &got, &bytes);

    // Deleting the session deletes its files.
    let (st, v) = delete(&rig.session("eager", "")).await;
    assert!(st < 300, "delete: {st} {v}");
    MediaDir(rig.data())
        .wait_gone(&hex::encode(Sha256::digest(&bytes)))
        .await;
}

/// The shard volume's media directory of the test's worker.
struct MediaDir(std::path::PathBuf);

impl MediaDir {
    fn find(&self, sha: &str) -> Option<String> {
        let root = wafleet::worker::media::MediaService::local_root(&self.0, 0);
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name().is_some_and(|n| n == sha) {
                    return Some(p.display().to_string());
                }
            }
        }
        None
    }

    async fn wait_for_file(&self, sha: &str) -> String {
        wait_for("the eager file stored", LONG, || async { self.find(sha) }).await
    }

    async fn wait_gone(&self, sha: &str) {
        wait_for("the deleted session's file gone", LONG, || async {
            self.find(sha).is_none().then_some(())
        })
        .await
    }
}

/// A `moto_server` on a free port (S3 API), killed on drop.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_bin() -> String {
    // scripts/lib.sh ensure_test_deps installs moto[server] into this venv; a moto_server on
    // PATH serves as well.
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/moto_server");
    if venv.exists() {
        venv.display().to_string()
    } else {
        "moto_server".into()
    }
}

async fn start_moto() -> Moto {
    let port = free_port();
    let child = std::process::Command::new(moto_bin())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server (scripts/lib.sh ensure_test_deps installs it)");
    let moto = Moto { child, port };
    wait_for("moto_server listening", LONG, || async move {
        TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
    })
    .await;
    moto
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_mode_stores_and_serves_through_moto() {
    let moto = start_moto().await;
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    // The bucket, created through the S3 API itself.
    let st = http()
        .put(format!("{endpoint}/wafleet-media"))
        .send()
        .await
        .expect("create bucket")
        .status();
    assert!(st.is_success(), "create bucket: {st}");
    let env = [
        ("WAFLEET_MEDIA_STORE", "s3"),
        ("WAFLEET_MEDIA_S3_BUCKET", "wafleet-media"),
        ("WAFLEET_MEDIA_S3_ENDPOINT", endpoint.as_str()),
        ("WAFLEET_MEDIA_S3_ALLOW_HTTP", "true"),
        ("WAFLEET_MEDIA_S3_PREFIX", "tests"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let rig = MediaRig::start(&env).await;
    rig.linked_session("s3", "lazy").await;
    let bytes = picture("s3 mode");
    let p = rig.inbound_image("s3", &bytes, "to the bucket").await;
    let url = check_payload(&p, "s3", &bytes);
    let (st, h, got) = fetch(&rig.api(&url)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&got));
    check_file(&h, &got, &bytes);

    // The object is in the bucket, under <prefix>/shards/<k>/<ws>/<s>/<sha256>, and nothing
    // was written to the shard volume's media directory.
    let sha = hex::encode(Sha256::digest(&bytes));
    let key = format!("tests/shards/0/{WS}/s3/{sha}");
    let listing = http()
        .get(format!(
            "{endpoint}/wafleet-media?list-type=2&prefix=tests/"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains(&format!("<Key>{key}</Key>")), "{listing}");
    assert!(
        listing.contains(&format!("<Size>{}</Size>", bytes.len())),
        "{listing}"
    );
    assert!(MediaDir(rig.data()).find(&sha).is_none());

    // Served from the bucket while the media server is down.
    rig.faults(json!({"media_download": "fail"})).await;
    let (st, _, again) = fetch(&rig.api(&url)).await;
    assert_eq!((st, again == got), (200, true));
}
