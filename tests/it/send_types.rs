//! Every send type end to end with real parts (issue 12, item 3): consul-dev, the simulator
//! (whose send modules follow WhatsApp Web's own, docs/wa-surface.md), a worker running a real
//! Chromium session, and the router in front. Each message goes through the paced, idempotent
//! send queue and reaches the simulated server, whose `/sim/messages` shows its type and fields:
//!
//! * text with a reply and mentions, and with a link preview; image with caption, document,
//!   sticker (WebP), location, contact card (vCard), poll;
//! * a voice note made from an MP3 (generated here with ffmpeg from a sine) arrives as OGG/Opus
//!   with `ptt`;
//! * a reaction, an edit, a revoke and a forward act on a message sent earlier;
//! * bad inputs are `400` each, naming the field.

use crate::support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::wa::{LONG, WaRig, get, post};
use support::wait_for;

const PHONE: &str = "4915550301";
const PEER: &str = "4915550302";
const OTHER: &str = "4915550303";
const WS: &str = "send-ws";
const S: &str = "main";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A one-second MP3 of a 440 Hz sine, made by ffmpeg.
fn mp3_sine() -> Vec<u8> {
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            "-ac",
            "2",
            "-c:a",
            "libmp3lame",
            "-f",
            "mp3",
            "pipe:1",
        ])
        .output()
        .expect("ffmpeg is required (scripts/lib.sh ensure_test_deps installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(b"ID3") || out.stdout[0] == 0xFF);
    out.stdout
}

/// A valid 1×1 lossless WebP.
const WEBP: &[u8] = &[
    0x52, 0x49, 0x46, 0x46, 0x1a, 0x00, 0x00, 0x00, 0x57, 0x45, 0x42, 0x50, 0x56, 0x50, 0x38, 0x4c,
    0x0d, 0x00, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x00, 0x10, 0x07, 0x10, 0x11, 0x11, 0x88, 0x88, 0xfe,
    0x07, 0x00,
];

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Sending through session `S` of the rig and finding the result at the simulator.
trait Sends {
    /// Queues a message; answers its id.
    async fn send(&self, body: Value) -> String;
    /// Waits until a queued message was handed to WhatsApp; answers its GET.
    async fn sent(&self, id: &str) -> Value;
    /// Sends and waits; answers (GET of the message, its `/sim/messages` row).
    async fn roundtrip(&self, body: Value) -> (Value, Value);
    /// The simulator's record of the message `wa_id` (for actions: of the newest action on it).
    async fn row(&self, wa_id: &str) -> Value;
}

impl Sends for WaRig {
    async fn send(&self, body: Value) -> String {
        let (st, v) = post(&self.session(S, "/messages"), body.clone()).await;
        assert_eq!(st, 202, "{body}: {v}");
        v["id"].as_str().expect("id").to_owned()
    }

    async fn sent(&self, id: &str) -> Value {
        wait_for(&format!("{id} sent"), LONG, || async {
            let (_, v) = get(&self.session(S, &format!("/messages/{id}"))).await;
            match v["status"].as_str() {
                Some("failed") => panic!("{id} failed: {v}"),
                Some("queued") | None => None,
                Some(_) => Some(v),
            }
        })
        .await
    }

    async fn roundtrip(&self, body: Value) -> (Value, Value) {
        let id = self.send(body).await;
        let msg = self.sent(&id).await;
        let wa_id = msg["wa_id"].as_str().expect("wa_id").to_owned();
        let row = self.row(&wa_id).await;
        (msg, row)
    }

    async fn row(&self, wa_id: &str) -> Value {
        // An action's wa_id is `<type>:<target>` (WhatsApp Web keeps its key to itself).
        let action = wa_id
            .split_once(':')
            .map(|(k, t)| (k.to_owned(), t.to_owned()));
        wait_for(&format!("{wa_id} at the simulator"), LONG, || async {
            let (_, v) = get(&self.sim(&format!("/sim/messages?phone={PHONE}"))).await;
            let rows = v.as_array().cloned().unwrap_or_default();
            rows.into_iter().rev().find(|r| match &action {
                None => r["id"] == wa_id,
                Some((kind, t)) => match kind.as_str() {
                    "reaction" => r["reaction"]["target"] == t.as_str(),
                    "edit" => r["edit"]["target"] == t.as_str(),
                    _ => r["revoked"] == t.as_str(),
                },
            })
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_send_type_reaches_whatsapp_with_its_fields() {
    let mut rig = WaRig::start(WS, &[]).await;
    rig.linked(
        S,
        PHONE,
        json!({"pacing": {"interval_ms": 100, "jitter_ms": 0, "typing": false}}),
    )
    .await;

    // Bad inputs: 400 each, naming the field, before anything is queued.
    let target = format!("true_{PEER}@c.us_3EB0AAAAAAAAAAAA");
    for (body, code, field) in [
        (
            json!({"to": PEER, "type": "fax"}),
            "invalid_request",
            "type",
        ),
        (
            json!({"to": PEER, "type": "location", "location": {"latitude": 100, "longitude": 0}}),
            "invalid_request",
            "location.latitude",
        ),
        (
            json!({"to": PEER, "type": "poll", "poll": {"name": "Q", "options": ["only"]}}),
            "invalid_request",
            "poll.options",
        ),
        (
            json!({"to": PEER, "type": "contact", "contact": {"name": "A", "phones": ["1"]}}),
            "invalid_request",
            "contact.phones[0]",
        ),
        (
            json!({"to": PEER, "type": "reaction", "wa_id": "msg_01", "emoji": "👍"}),
            "invalid_request",
            "wa_id",
        ),
        (
            json!({"to": PEER, "type": "edit", "wa_id": target.replace("true_", "false_"), "text": "x"}),
            "invalid_request",
            "wa_id",
        ),
        (
            json!({"to": PEER, "text": "hi", "reply_to": format!("true_{OTHER}@c.us_3EB0AB")}),
            "invalid_request",
            "reply_to",
        ),
        (
            json!({"to": PEER, "type": "sticker", "media": {"data": b64(PNG)}}),
            "invalid_media",
            "WebP",
        ),
        (
            json!({"to": PEER, "type": "voice", "media": {"data": b64(b"definitely not audio")}}),
            "invalid_media",
            "voice",
        ),
    ] {
        let (st, v) = post(&rig.session(S, "/messages"), body.clone()).await;
        assert_eq!((st, v["error"].as_str()), (400, Some(code)), "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap_or_default().contains(field),
            "{body}: {v}"
        );
    }

    // Text, then a reply to it with mentions.
    let (first, row) = rig.roundtrip(json!({"to": PEER, "text": "first"})).await;
    assert_eq!(
        (row["type"].as_str(), row["text"].as_str()),
        (Some("chat"), Some("first")),
        "{row}"
    );
    assert_eq!(first["type"], "text");
    let first_id = first["wa_id"].as_str().unwrap().to_owned();
    let stanza = first_id.rsplit('_').next().unwrap().to_owned();
    let (_, row) = rig
        .roundtrip(
            json!({"to": PEER, "text": "see above", "reply_to": first_id, "mentions": [OTHER]}),
        )
        .await;
    assert_eq!(row["text"], format!("see above @{OTHER}"), "{row}");
    assert_eq!(row["quoted"], stanza, "{row}");
    assert_eq!(row["mentions"], json!([format!("{OTHER}@c.us")]), "{row}");
    assert!(row.get("link_preview").is_none(), "{row}");

    // A link preview: the phone's minimal preview (title = domain, description = URL) reaches
    // the server with the URL as it stands in the text; without link_preview there is none.
    let url = "https://example.com/pricing?plan=pro";
    let text = format!("our prices: {url} (valid today)");
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "text": text, "link_preview": true}))
        .await;
    assert_eq!(row["text"], text, "{row}");
    assert_eq!(
        row["link_preview"],
        json!({"url": url, "title": "example.com", "description": url}),
        "{row}"
    );
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "text": format!("no card: {url}")}))
        .await;
    assert!(row.get("link_preview").is_none(), "{row}");

    // Media: image with caption, document, sticker.
    let (img, row) = rig
        .roundtrip(json!({"to": PEER, "type": "image", "media": {"data": b64(PNG), "mimetype": "image/png"}, "caption": "a dot"}))
        .await;
    assert_eq!(img["type"], "image");
    assert_eq!(
        (row["type"].as_str(), row["text"].as_str()),
        (Some("image"), Some("a dot")),
        "{row}"
    );
    assert_eq!(row["media"]["mimetype"], "image/png");
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "type": "document", "media": {"data": b64(b"%PDF-1.4 test"), "mimetype": "application/pdf", "filename": "a.pdf"}}))
        .await;
    assert_eq!(
        (row["type"].as_str(), row["media"]["filename"].as_str()),
        (Some("document"), Some("a.pdf")),
        "{row}"
    );
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "type": "sticker", "media": {"data": b64(WEBP)}}))
        .await;
    assert_eq!(
        (row["type"].as_str(), row["media"]["mimetype"].as_str()),
        (Some("sticker"), Some("image/webp")),
        "{row}"
    );

    // A voice note from an MP3 arrives as OGG/Opus, as a ptt.
    let mp3 = mp3_sine();
    let (voice, row) = rig
        .roundtrip(json!({"to": PEER, "type": "voice", "media": {"data": b64(&mp3), "mimetype": "audio/mpeg"}}))
        .await;
    assert_eq!(voice["type"], "voice");
    assert_eq!(row["type"], "ptt", "{row}");
    assert_eq!(row["ptt"], true, "{row}");
    assert_eq!(row["codec"], "opus", "{row}");
    assert_eq!(row["media"]["mimetype"], "audio/ogg; codecs=opus", "{row}");

    // Location, contact card, poll.
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "type": "location", "location": {"latitude": 52.52, "longitude": 13.405, "name": "Berlin", "address": "Pariser Platz"}}))
        .await;
    assert_eq!(row["type"], "location", "{row}");
    assert_eq!(row["location"]["latitude"], 52.52);
    assert_eq!(row["location"]["longitude"], 13.405);
    assert_eq!(row["location"]["description"], "Berlin\nPariser Platz");
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "type": "contact", "contact": {"name": "Doe, Jane", "phones": [format!("+{OTHER}")]}}))
        .await;
    assert_eq!(
        (row["type"].as_str(), row["vcard_name"].as_str()),
        (Some("vcard"), Some("Doe, Jane")),
        "{row}"
    );
    let vcard = row["vcard"].as_str().unwrap();
    assert!(vcard.contains("FN:Doe\\, Jane"), "{vcard}");
    assert!(vcard.contains(&format!("waid={OTHER}:+{OTHER}")), "{vcard}");
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "type": "poll", "poll": {"name": "Lunch?", "options": ["Pizza", "Sushi", "Salad"], "multiple": true}}))
        .await;
    assert_eq!(row["type"], "poll_creation", "{row}");
    assert_eq!(
        row["poll"],
        json!({"name": "Lunch?", "options": ["Pizza", "Sushi", "Salad"], "selectable": 0})
    );

    // Acting on the first text: reaction, edit, forward, then revoke.
    let (reaction, row) = rig
        .roundtrip(json!({"to": PEER, "type": "reaction", "wa_id": first_id, "emoji": "👍"}))
        .await;
    assert_eq!(reaction["type"], "reaction");
    assert_eq!(row["type"], "reaction", "{row}");
    assert_eq!(row["reaction"], json!({"target": first_id, "value": "👍"}));
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "type": "edit", "wa_id": first_id, "text": "first, edited"}))
        .await;
    assert_eq!(
        row["edit"],
        json!({"target": first_id, "value": "first, edited"}),
        "{row}"
    );
    let (fwd, row) = rig
        .roundtrip(json!({"to": OTHER, "type": "forward", "wa_id": first_id}))
        .await;
    assert_ne!(fwd["wa_id"], first_id);
    assert_eq!(
        (row["to"].as_str(), row["forwarded"].as_bool()),
        (Some(OTHER), Some(true)),
        "{row}"
    );
    assert_eq!(
        row["text"], "first, edited",
        "the forward carries the edited text: {row}"
    );
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "type": "delete", "wa_id": first_id}))
        .await;
    assert_eq!(row["revoked"], first_id, "{row}");
    // The revoked message can no longer be forwarded: the send fails with WhatsApp's reason.
    let id = rig
        .send(json!({"to": OTHER, "type": "forward", "wa_id": first_id}))
        .await;
    let failed = wait_for("the forward of a revoked message fails", LONG, || async {
        let (_, v) = get(&rig.session(S, &format!("/messages/{id}"))).await;
        (v["status"] == "failed").then_some(v)
    })
    .await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("forward"),
        "{failed}"
    );
    // The session kept working.
    let (_, row) = rig
        .roundtrip(json!({"to": PEER, "text": "still here"}))
        .await;
    assert_eq!(row["text"], "still here");

    rig.worker.signal("TERM");
    rig.worker.wait_exit(LONG).await;
}
