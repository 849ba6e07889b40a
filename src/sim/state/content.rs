//! PURE: what an inbound message *is* beyond its text: the `type` a simulated phone sends, its
//! structured fields (location, contact card, poll) and the message it quotes.
//!
//! `/sim/inbound` takes these in the API's own words (`{"type": "location", "location":
//! {"latitude", …}}`); the page must receive them as WhatsApp Web's message model holds them, so
//! this module translates into the model's attribute names, read in WhatsApp Web's own modules
//! (docs/wa-surface.md C1):
//! * location: `type: "location"`, `lat`, `lng`, `loc` (name and address on two lines, as
//!   WhatsApp's location message description is shown);
//! * contact: `type: "vcard"`, `body` (the vCard) and `vcardFormattedName`, as
//!   `WAWebSendContactMsgChatAction` builds them;
//! * poll: `type: "poll_creation"`, `pollName`, `pollOptions` (`[{name, localId}]`) and
//!   `pollSelectableOptionsCount` (0: several answers, 1: one);
//! * a reply: `quotedStanzaID`, `quotedRemoteJid`, `quotedParticipant` (the parts of the quoted
//!   message's key WhatsApp Web keeps) and `quotedMsg` (the quoted message's type).
//!
//! Apart from `phone.rs` because it is a translation table with its own validation, not phone
//! control.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::PhoneError;

/// The types `/sim/inbound` accepts, in the API's names.
pub const INBOUND_TYPES: [&str; 10] = [
    "text", "image", "video", "audio", "voice", "document", "sticker", "location", "contact",
    "poll",
];

/// Longest location name or address, contact name, poll question or option, in bytes.
const MAX_FIELD_BYTES: usize = 1024;
/// Most phones on a contact card, and most poll options (WhatsApp allows 12).
const MAX_PHONES: usize = 10;
const MAX_OPTIONS: usize = 12;

/// `location` of `POST /sim/inbound`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundLocation {
    /// Degrees, −90 to 90.
    pub latitude: serde_json::Number,
    /// Degrees, −180 to 180.
    pub longitude: serde_json::Number,
    /// The place's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its address.
    #[serde(default)]
    pub address: Option<String>,
}

/// `contact` of `POST /sim/inbound`: a contact card the sender shares.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundContact {
    /// The card's display name.
    pub name: String,
    /// Its phone numbers (digits, 5 to 20).
    pub phones: Vec<String>,
}

/// `poll` of `POST /sim/inbound`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundPoll {
    /// The question.
    pub name: String,
    /// The answers (2 to 12, distinct).
    pub options: Vec<String>,
    /// Whether several answers may be picked.
    #[serde(default)]
    pub multiple: bool,
}

/// What the page adds to an inbound message model: WhatsApp's type and its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MsgContent {
    /// WhatsApp Web's `Msg.type` (`chat`, `location`, `vcard`, `poll_creation`); media types
    /// come with the media part instead.
    #[serde(rename = "type")]
    pub kind: String,
    /// Model attributes in WhatsApp Web's names.
    pub attrs: Map<String, Value>,
}

/// The message an inbound one quotes, as the simulator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    /// The quoted message's serialized key (`true|false_<chat>_<id>[_<participant>]`).
    pub wa_id: String,
    /// Its sender's wid (the key's participant in WhatsApp's terms).
    pub participant: String,
}

fn bad(code: &'static str, msg: impl Into<String>) -> PhoneError {
    PhoneError::Invalid(code, msg.into())
}

fn field(what: &str, v: &str) -> Result<(), PhoneError> {
    if v.trim().is_empty() || v.len() > MAX_FIELD_BYTES {
        return Err(bad(
            "invalid_body",
            format!("{what} is 1 to {MAX_FIELD_BYTES} bytes, not blank"),
        ));
    }
    Ok(())
}

fn degrees(what: &str, n: &serde_json::Number, max: f64) -> Result<f64, PhoneError> {
    match n.as_f64() {
        Some(v) if v.is_finite() && v.abs() <= max => Ok(v),
        _ => Err(bad(
            "invalid_body",
            format!("{what} is a number from -{max} to {max}"),
        )),
    }
}

/// The API type a `/sim/inbound` body asks for: `type`, or inferred from which part is there
/// (media → from the mimetype, as before `type` existed; else text).
pub fn inbound_type<'a>(
    kind: Option<&'a str>,
    has_media: bool,
    mimetype_type: Option<&'static str>,
    parts: (bool, bool, bool),
) -> Result<&'a str, PhoneError> {
    let (location, contact, poll) = parts;
    let t = match kind {
        Some(k) => {
            if !INBOUND_TYPES.contains(&k) {
                return Err(bad(
                    "invalid_type",
                    format!("type is one of {}", INBOUND_TYPES.join(", ")),
                ));
            }
            k
        }
        None if has_media => mimetype_type.unwrap_or("document"),
        None if location => "location",
        None if contact => "contact",
        None if poll => "poll",
        None => "text",
    };
    let media_type = matches!(
        t,
        "image" | "video" | "audio" | "voice" | "document" | "sticker"
    );
    if media_type != has_media {
        return Err(bad(
            "invalid_body",
            format!(
                "type {t} {} media",
                if media_type { "needs" } else { "takes no" }
            ),
        ));
    }
    for (present, name) in [(location, "location"), (contact, "contact"), (poll, "poll")] {
        if present != (t == name) {
            return Err(bad(
                "invalid_body",
                if present {
                    format!("{name} goes with type {name}")
                } else {
                    format!("type {name} needs {name}")
                },
            ));
        }
    }
    Ok(t)
}

/// The MMS media type of an API media type (the media server keys files by it).
pub fn mms_type(api_type: &str) -> &'static str {
    match api_type {
        "voice" => "ptt",
        "sticker" => "sticker",
        "video" => "video",
        "audio" => "audio",
        "image" => "image",
        _ => "document",
    }
}

/// WhatsApp's model attributes of a location.
pub fn location(l: &InboundLocation) -> Result<MsgContent, PhoneError> {
    let lat = degrees("location.latitude", &l.latitude, 90.0)?;
    let lng = degrees("location.longitude", &l.longitude, 180.0)?;
    let mut lines = Vec::new();
    for (what, v) in [("location.name", &l.name), ("location.address", &l.address)] {
        if let Some(v) = v {
            field(what, v)?;
            lines.push(v.as_str());
        }
    }
    let mut attrs = Map::new();
    attrs.insert("lat".into(), json!(lat));
    attrs.insert("lng".into(), json!(lng));
    if !lines.is_empty() {
        attrs.insert("loc".into(), json!(lines.join("\n")));
    }
    Ok(MsgContent {
        kind: "location".into(),
        attrs,
    })
}

/// vCard text escaping (RFC 6350 §3.4: backslash, comma, semicolon, newline).
fn vcard_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | ',' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

/// WhatsApp's model attributes of a shared contact card.
pub fn contact(c: &InboundContact) -> Result<MsgContent, PhoneError> {
    field("contact.name", &c.name)?;
    if c.phones.is_empty()
        || c.phones.len() > MAX_PHONES
        || !c.phones.iter().all(|p| super::valid_phone(p))
    {
        return Err(bad(
            "invalid_body",
            format!("contact.phones is 1 to {MAX_PHONES} phone numbers of 5 to 20 digits"),
        ));
    }
    let name = vcard_escape(&c.name);
    let mut card = format!("BEGIN:VCARD\nVERSION:3.0\nN:;{name};;;\nFN:{name}\n");
    for p in &c.phones {
        card.push_str(&format!("TEL;type=CELL;waid={p}:+{p}\n"));
    }
    card.push_str("END:VCARD");
    let mut attrs = Map::new();
    attrs.insert("body".into(), json!(card));
    attrs.insert("vcardFormattedName".into(), json!(c.name));
    Ok(MsgContent {
        kind: "vcard".into(),
        attrs,
    })
}

/// WhatsApp's model attributes of a poll.
pub fn poll(p: &InboundPoll) -> Result<MsgContent, PhoneError> {
    field("poll.name", &p.name)?;
    if p.options.len() < 2 || p.options.len() > MAX_OPTIONS {
        return Err(bad(
            "invalid_body",
            format!("poll.options has 2 to {MAX_OPTIONS} answers"),
        ));
    }
    for (i, o) in p.options.iter().enumerate() {
        field("each poll option", o)?;
        if p.options[..i].contains(o) {
            return Err(bad("invalid_body", "poll.options are distinct"));
        }
    }
    let options: Vec<Value> = p
        .options
        .iter()
        .enumerate()
        .map(|(i, o)| json!({"name": o, "localId": i}))
        .collect();
    let mut attrs = Map::new();
    attrs.insert("pollName".into(), json!(p.name));
    attrs.insert("pollOptions".into(), Value::Array(options));
    attrs.insert(
        "pollSelectableOptionsCount".into(),
        json!(if p.multiple { 0 } else { 1 }),
    );
    Ok(MsgContent {
        kind: "poll_creation".into(),
        attrs,
    })
}

/// The parts of a serialized key: (from_me, chat, id, participant).
pub fn split_key(wa_id: &str) -> Option<(bool, &str, &str, Option<&str>)> {
    let (from_me, rest) = if let Some(r) = wa_id.strip_prefix("true_") {
        (true, r)
    } else {
        (false, wa_id.strip_prefix("false_")?)
    };
    let mut parts = rest.splitn(3, '_');
    let chat = parts.next().filter(|c| c.contains('@'))?;
    let id = parts.next().filter(|i| !i.is_empty())?;
    let participant = parts.next();
    Some((from_me, chat, id, participant))
}

/// Adds the reply context of `q` to `attrs` (WhatsApp Web's names).
pub fn add_quoted(attrs: &mut Map<String, Value>, chat: &str, q: &Quoted) {
    let Some((_, _, id, _)) = split_key(&q.wa_id) else {
        return;
    };
    attrs.insert("quotedStanzaID".into(), json!(id));
    attrs.insert("quotedRemoteJid".into(), json!(chat));
    attrs.insert("quotedParticipant".into(), json!(q.participant));
    // The page fills the quoted message's own fields from its store, as WhatsApp Web does.
    attrs.insert("quotedMsg".into(), json!({"type": "chat"}));
}

impl super::Sim {
    /// The message `wa_id` that an inbound message to `to` in `chat` quotes: one of this
    /// chat's earlier inbound messages to `to`, or one `to`'s devices sent (`me` is how the
    /// chat addresses `to`).
    pub(super) fn quoted(
        &self,
        to: &str,
        wa_id: &str,
        chat: &str,
        me: &str,
    ) -> Result<Quoted, PhoneError> {
        let Some((from_me, q_chat, _, participant)) = split_key(wa_id) else {
            return Err(bad(
                "invalid_body",
                "quoted is a wa_id: true|false_<chat>_<id>[_<participant>]",
            ));
        };
        if q_chat != chat {
            return Err(bad(
                "invalid_body",
                "quoted names a message of another chat",
            ));
        }
        // Our own messages are the ones a linked device sent or the phone wrote itself.
        let in_log = self
            .inbound_log
            .get(to)
            .is_some_and(|l| l.iter().any(|(id, _)| id == wa_id));
        let known = in_log
            || (from_me
                && self
                    .sent
                    .get(to)
                    .is_some_and(|l| l.iter().any(|s| s.view.id == wa_id)));
        if !known {
            return Err(PhoneError::NotFound(
                "unknown_message",
                "quoted: no such message in this chat".into(),
            ));
        }
        // WhatsApp's `quotedParticipant` is the quoted message's sender.
        let participant = match (from_me, participant) {
            (true, _) => me.to_owned(),
            (false, Some(p)) => p.to_owned(),
            (false, None) => chat.to_owned(),
        };
        Ok(Quoted {
            wa_id: wa_id.to_owned(),
            participant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(v: f64) -> serde_json::Number {
        serde_json::Number::from_f64(v).unwrap()
    }

    #[test]
    fn the_type_is_asked_or_inferred_and_must_match_its_parts() {
        let none = (false, false, false);
        assert_eq!(inbound_type(None, false, None, none).unwrap(), "text");
        assert_eq!(
            inbound_type(None, true, Some("image"), none).unwrap(),
            "image"
        );
        assert_eq!(
            inbound_type(Some("voice"), true, Some("audio"), none).unwrap(),
            "voice"
        );
        assert_eq!(
            inbound_type(None, false, None, (true, false, false)).unwrap(),
            "location"
        );
        let code = |r: Result<&str, PhoneError>| match r.unwrap_err() {
            PhoneError::Invalid(c, _) => c,
            e => panic!("{e:?}"),
        };
        assert_eq!(
            code(inbound_type(Some("gif"), false, None, none)),
            "invalid_type"
        );
        assert_eq!(
            code(inbound_type(Some("image"), false, None, none)),
            "invalid_body"
        );
        assert_eq!(
            code(inbound_type(Some("text"), true, Some("image"), none)),
            "invalid_body"
        );
        assert_eq!(
            code(inbound_type(Some("poll"), false, None, none)),
            "invalid_body"
        );
        assert_eq!(
            code(inbound_type(
                Some("text"),
                false,
                None,
                (false, true, false)
            )),
            "invalid_body"
        );
        assert_eq!(mms_type("voice"), "ptt");
    }

    #[test]
    fn structured_parts_become_whatsapps_model_attributes() {
        let l = location(&InboundLocation {
            latitude: num(52.52),
            longitude: num(13.405),
            name: Some("Office".into()),
            address: Some("Main St 1".into()),
        })
        .unwrap();
        assert_eq!(l.kind, "location");
        assert_eq!(l.attrs["lat"], json!(52.52));
        assert_eq!(l.attrs["loc"], json!("Office\nMain St 1"));
        assert!(
            location(&InboundLocation {
                latitude: num(91.0),
                longitude: num(0.0),
                name: None,
                address: None,
            })
            .is_err()
        );

        let c = contact(&InboundContact {
            name: "Ana; B".into(),
            phones: vec!["4915550009".into()],
        })
        .unwrap();
        assert_eq!(c.kind, "vcard");
        let card = c.attrs["body"].as_str().unwrap();
        assert!(card.starts_with("BEGIN:VCARD\n") && card.ends_with("END:VCARD"));
        assert!(card.contains("FN:Ana\\; B\n"));
        assert!(card.contains("waid=4915550009:+4915550009"));
        assert!(
            contact(&InboundContact {
                name: "x".into(),
                phones: vec!["12".into()],
            })
            .is_err()
        );

        let p = poll(&InboundPoll {
            name: "Lunch?".into(),
            options: vec!["yes".into(), "no".into()],
            multiple: false,
        })
        .unwrap();
        assert_eq!(p.kind, "poll_creation");
        assert_eq!(
            p.attrs["pollOptions"][1],
            json!({"name": "no", "localId": 1})
        );
        assert_eq!(p.attrs["pollSelectableOptionsCount"], json!(1));
        for options in [vec!["a".to_owned()], vec!["a".to_owned(), "a".to_owned()]] {
            assert!(
                poll(&InboundPoll {
                    name: "q".into(),
                    options,
                    multiple: true,
                })
                .is_err()
            );
        }
    }

    #[test]
    fn a_quote_keeps_the_keys_parts() {
        assert_eq!(
            split_key("false_123-456@g.us_ABC_49155@c.us"),
            Some((false, "123-456@g.us", "ABC", Some("49155@c.us")))
        );
        assert_eq!(
            split_key("true_49155@c.us_XYZ"),
            Some((true, "49155@c.us", "XYZ", None))
        );
        assert_eq!(split_key("maybe_49155@c.us_XYZ"), None);
        assert_eq!(split_key("true_nochat_XYZ"), None);
        let mut attrs = Map::new();
        add_quoted(
            &mut attrs,
            "49155@c.us",
            &Quoted {
                wa_id: "true_49155@c.us_XYZ".into(),
                participant: "49166@c.us".into(),
            },
        );
        assert_eq!(attrs["quotedStanzaID"], json!("XYZ"));
        assert_eq!(attrs["quotedParticipant"], json!("49166@c.us"));
        assert_eq!(attrs["quotedMsg"]["type"], json!("chat"));
    }
}
