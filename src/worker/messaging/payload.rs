//! PURE: the payload of the `message` and `message.any` events, from what the engine reported.
//!
//! WhatsApp's own message types are mapped to the API's (`chat` → `text`, `ptt` → `voice`,
//! `vcard` → `contact`, …; anything else is `unknown`), so a receiver never has to know
//! WhatsApp Web's internal names. For media WhatsApp keeps a thumbnail in `body`, so only text
//! messages carry `text`; media carry `caption` and a `media` object.

use serde_json::{Value, json};

use crate::engine::InboundMessage;
use crate::ids::{SessionId, WorkspaceId};

/// The API's message types, in documentation order.
pub const TYPES: [&str; 13] = [
    "text", "image", "video", "audio", "voice", "document", "sticker", "location", "contact",
    "poll", "reaction", "revoked", "unknown",
];

/// The API type of a WhatsApp message type.
pub fn api_type(wa_type: &str) -> &'static str {
    match wa_type {
        "chat" => "text",
        "image" => "image",
        "video" | "ptv" => "video",
        "audio" => "audio",
        "ptt" => "voice",
        "document" => "document",
        "sticker" => "sticker",
        "location" => "location",
        "vcard" | "multi_vcard" => "contact",
        "poll_creation" => "poll",
        "reaction" => "reaction",
        "revoked" => "revoked",
        _ => "unknown",
    }
}

fn is_media(api_type: &str) -> bool {
    matches!(
        api_type,
        "image" | "video" | "audio" | "voice" | "document" | "sticker"
    )
}

fn is_lid(wid: Option<&str>) -> bool {
    wid.is_some_and(|w| w.ends_with("@lid"))
}

/// The event payload for `m` (documented in docs/webhooks.md).
pub fn message_payload(m: &InboundMessage) -> Value {
    let kind = api_type(&m.kind);
    let media = is_media(kind);
    let text = (kind == "text").then(|| m.body.clone()).flatten();
    let caption = media.then(|| m.caption.clone()).flatten();
    let media_obj = media.then(|| {
        json!({
            "mimetype": m.mimetype,
            "filename": m.filename,
            "size": m.size,
            "sha256": m.sha256,
            // The worker's download route; filled by `with_media_url`, which knows the session.
            "url": Value::Null,
        })
    });
    // The phone number only where it adds something: for a LID sender.
    let from_pn = is_lid(m.from.as_deref())
        .then(|| m.from_pn.clone())
        .flatten();
    let author_pn = is_lid(m.author.as_deref())
        .then(|| m.author_pn.clone())
        .flatten();
    json!({
        "wa_id": m.id,
        "id": m.id,
        "chat": m.chat.clone().or_else(|| if m.from_me { m.to.clone() } else { m.from.clone() }),
        "from": m.from,
        "from_pn": from_pn,
        "to": m.to,
        "author": m.author,
        "author_pn": author_pn,
        "from_me": m.from_me,
        "push_name": m.push_name,
        "type": kind,
        "wa_type": m.kind,
        "text": text,
        "caption": caption,
        "quoted_wa_id": m.quoted_wa_id,
        "mentions": m.mentions,
        "forwarded": m.forwarded,
        "timestamp": m.timestamp,
        "media": media_obj,
        "mimetype": m.mimetype,
        "filename": m.filename,
        "location": structured(m, "location"),
        "contact": structured(m, "contact"),
        "poll": structured(m, "poll"),
    })
}

/// The `location`, `contact` or `poll` object of a structured message, else null.
fn structured(m: &InboundMessage, key: &str) -> Value {
    m.content
        .as_ref()
        .and_then(|c| c.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The worker's download route of a message's media, as the router exposes it.
pub fn media_url(ws: &WorkspaceId, s: &SessionId, wa_id: &str) -> String {
    format!("/v1/workspaces/{ws}/sessions/{s}/messages/{wa_id}/media")
}

/// Fills `media.url` of a payload that has `media` (the route serves the file when the id is
/// one it accepts); answers whether it did.
pub fn with_media_url(payload: &mut Value, ws: &WorkspaceId, s: &SessionId) -> bool {
    let Some(id) = payload["wa_id"].as_str().map(str::to_owned) else {
        return false;
    };
    if !crate::engine::media::valid_wa_id(&id) {
        return false;
    }
    match payload.get_mut("media") {
        Some(media @ Value::Object(_)) => {
            media["url"] = Value::String(media_url(ws, s, &id));
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: &str) -> InboundMessage {
        InboundMessage {
            id: "false_4915550002@c.us_3EB0AA".into(),
            from: Some("4915550002@c.us".into()),
            to: Some("4915550001@c.us".into()),
            kind: kind.into(),
            body: Some("hello".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_whatsapp_type_maps_to_an_api_type() {
        for (wa, api) in [
            ("chat", "text"),
            ("ptt", "voice"),
            ("ptv", "video"),
            ("vcard", "contact"),
            ("multi_vcard", "contact"),
            ("poll_creation", "poll"),
            ("revoked", "revoked"),
            ("gp2", "unknown"),
            ("ciphertext", "unknown"),
        ] {
            assert_eq!(api_type(wa), api, "{wa}");
            assert!(TYPES.contains(&api_type(wa)));
        }
    }

    #[test]
    fn structured_messages_carry_their_object() {
        let mut m = msg("location");
        m.content = Some(serde_json::json!({"location": {"latitude": 1.5, "longitude": 2.5}}));
        let p = message_payload(&m);
        assert_eq!(p["type"], "location");
        assert_eq!(p["location"]["latitude"], 1.5);
        assert!(p["text"].is_null() && p["contact"].is_null() && p["poll"].is_null());
    }

    #[test]
    fn text_carries_text_media_carries_caption_and_media() {
        let p = message_payload(&msg("chat"));
        assert_eq!(
            (p["type"].as_str(), p["text"].as_str()),
            (Some("text"), Some("hello"))
        );
        assert!(p["media"].is_null() && p["caption"].is_null());
        assert_eq!(
            p["chat"], "4915550002@c.us",
            "an inbound chat is its sender"
        );

        let mut m = msg("image");
        m.body = Some("/9j/4AAQ-thumbnail".into());
        m.caption = Some("look".into());
        m.mimetype = Some("image/png".into());
        m.sha256 = Some("ab".repeat(32));
        m.size = Some(10);
        let p = message_payload(&m);
        assert_eq!(p["type"], "image");
        assert!(p["text"].is_null(), "a thumbnail is not text: {p}");
        assert_eq!(p["caption"], "look");
        assert_eq!(p["media"]["sha256"], "ab".repeat(32));
        assert_eq!(p["media"]["size"], 10);
        let mut p = p;
        let (ws, s) = (
            WorkspaceId::new("acme").unwrap(),
            SessionId::new("default").unwrap(),
        );
        assert!(with_media_url(&mut p, &ws, &s));
        assert_eq!(
            p["media"]["url"],
            "/v1/workspaces/acme/sessions/default/messages/false_4915550002@c.us_3EB0AA/media"
        );
        let mut text = message_payload(&msg("chat"));
        assert!(!with_media_url(&mut text, &ws, &s) && text["media"].is_null());
    }

    #[test]
    fn phone_numbers_only_for_lid_senders() {
        let mut m = msg("chat");
        m.from_pn = Some("4915550002@c.us".into());
        assert!(
            message_payload(&m)["from_pn"].is_null(),
            "from is already a number"
        );
        m.from = Some("77001@lid".into());
        assert_eq!(message_payload(&m)["from_pn"], "4915550002@c.us");
        m.chat = Some("123-456@g.us".into());
        m.author = Some("77002@lid".into());
        m.author_pn = Some("4915550003@c.us".into());
        let p = message_payload(&m);
        assert_eq!(
            (p["chat"].as_str(), p["author_pn"].as_str()),
            (Some("123-456@g.us"), Some("4915550003@c.us"))
        );
    }
}
