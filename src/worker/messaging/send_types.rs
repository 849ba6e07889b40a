//! Every send type of `POST …/messages` (issue 12, item 3): the body `{"to", "type", …}` parsed
//! and validated up front, before anything is queued.
//!
//! PURE: no I/O here. [`parse`] turns the JSON body into a [`Parsed`] request: the stored body
//! the send queue keeps (and the engine later hands to the page adapter's `sendSpec`) plus, for
//! the media types, the media input the route still has to resolve (fetch or decode, convert a
//! voice note, check a sticker). Errors are `400 invalid_request` naming the field, except the
//! codes the text and media sends had before types existed (`invalid_text`, `invalid_media`,
//! `invalid_body`), which stay as they were so old clients see what they saw.
//!
//! A body without `type` is a text when it has `text`, a media message (type from the
//! mimetype) when it has `media`: the API before issue 12, unchanged.

use serde_json::{Map, Value, json};

use crate::api::ApiError;

use super::routes::{MAX_TEXT_BYTES, normalize_recipient};
pub use super::send_fields::{build_vcard, chat_jid, is_webp, media_type_of, parse_msg_key};

/// The send types, as the API names them.
pub const TYPES: &[&str] = &[
    "text", "image", "video", "document", "audio", "voice", "sticker", "location", "contact",
    "poll", "reaction", "edit", "delete", "forward",
];

/// The media send types.
pub const MEDIA_TYPES: &[&str] = &["image", "video", "document", "audio", "voice", "sticker"];

/// Most mentions in one text.
pub const MAX_MENTIONS: usize = 50;
/// Poll options: at least, at most (WhatsApp's own bounds).
pub const POLL_OPTIONS: (usize, usize) = (2, 12);
/// Longest poll question and option, in characters.
pub const MAX_POLL_NAME_CHARS: usize = 255;
/// Longest poll option, in characters.
pub const MAX_POLL_OPTION_CHARS: usize = 100;
/// Most phone numbers on one contact card.
pub const MAX_CONTACT_PHONES: usize = 10;
/// Longest name, location name or address, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest caption, in bytes.
pub const MAX_CAPTION_BYTES: usize = 4096;
/// Longest reaction, in bytes (an emoji with skin tone and ZWJ joins stays far below).
pub const MAX_EMOJI_BYTES: usize = 64;

/// Media as the request gives it, not resolved yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInput {
    /// `http(s)` URL the worker fetches.
    pub url: Option<String>,
    /// Base64 bytes.
    pub data: Option<String>,
    /// `type/subtype`, when given.
    pub mimetype: Option<String>,
    /// File name, when given.
    pub filename: Option<String>,
}

/// A validated send request.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The API type (one of [`TYPES`]).
    pub kind: &'static str,
    /// The body to store, with `to` and `type`; for media types `media` is added by the route
    /// once the bytes are resolved.
    pub stored: Map<String, Value>,
    /// Media to resolve (media types only).
    pub media: Option<MediaInput>,
}

fn bad(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_request", format!("{field}: {why}"))
}

/// A field as a string, `None` when absent or null.
fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

fn req_obj<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a Map<String, Value>, ApiError> {
    obj.get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| bad(field, "must be an object"))
}

/// Refuses fields a type does not take (a typo must not silently send something else).
fn only(obj: &Map<String, Value>, prefix: &str, allowed: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(&format!("{prefix}{k}"), "unknown field for this type")),
        None => Ok(()),
    }
}

fn bounded_chars(field: &str, s: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(bad(field, format!("must be {min} to {max} characters")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad(field, "must not contain control characters"));
    }
    Ok(())
}

/// A `wa_id` field: a message key, of chat `chat` when given, sent by this account when `own`.
fn wa_id_field(
    obj: &Map<String, Value>,
    field: &str,
    chat: Option<&str>,
    own: bool,
) -> Result<String, ApiError> {
    let s = opt_str(obj, field)?.ok_or_else(|| bad(field, "is required"))?;
    let key = parse_msg_key(s).ok_or_else(|| {
        bad(
            field,
            "must be a WhatsApp message id (true|false)_<chat>_<id>[_<participant>]",
        )
    })?;
    if let Some(chat) = chat
        && key.chat != chat
    {
        return Err(bad(field, format!("is not a message of the chat {chat}")));
    }
    if own && !key.from_me {
        return Err(bad(field, "must be a message this session sent (true_…)"));
    }
    Ok(s.to_owned())
}

/// Text with the checks (and error code) text sends always had.
fn text_field(obj: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match opt_str(obj, field)? {
        Some(t) if !t.is_empty() && t.len() <= MAX_TEXT_BYTES => Ok(t.to_owned()),
        _ => Err(ApiError::bad_request(
            "invalid_text",
            format!("{field} must be 1 to {MAX_TEXT_BYTES} bytes"),
        )),
    }
}

/// `mentions`: phones or user ids, as user ids; each `@<user>` is put into the text when the
/// text does not name it yet, which is how WhatsApp renders a mention.
fn mentions(obj: &Map<String, Value>, text: &mut String) -> Result<Vec<String>, ApiError> {
    let list = match obj.get("mentions") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("mentions", "must be a list of phone numbers or ids")),
    };
    if list.len() > MAX_MENTIONS {
        return Err(bad("mentions", format!("at most {MAX_MENTIONS}")));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let wid = m
            .as_str()
            .and_then(normalize_recipient)
            .filter(|w| !w.ends_with("@g.us"))
            .map(|w| chat_jid(&w))
            .ok_or_else(|| {
                bad(
                    &format!("mentions[{i}]"),
                    "must be a phone number or a user id",
                )
            })?;
        if !out.contains(&wid) {
            out.push(wid);
        }
    }
    for wid in &out {
        let user = wid.split('@').next().unwrap_or_default();
        let tag = format!("@{user}");
        let named = text.match_indices(&tag).any(|(at, _)| {
            !text[at + tag.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        });
        if !named {
            text.push(' ');
            text.push_str(&tag);
        }
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::bad_request(
            "invalid_text",
            format!("text with its mentions must be at most {MAX_TEXT_BYTES} bytes"),
        ));
    }
    Ok(out)
}

/// Parses and validates a send body. `to` is the already normalized recipient.
pub fn parse(body: &Map<String, Value>, to: &str) -> Result<Parsed, ApiError> {
    let kind: &'static str = match opt_str(body, "type")? {
        Some(t) => TYPES
            .iter()
            .copied()
            .find(|k| *k == t)
            .ok_or_else(|| bad("type", format!("must be one of {}", TYPES.join(", "))))?,
        None => match (body.contains_key("text"), body.contains_key("media")) {
            (true, false) => "text",
            (false, true) => "media",
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "give exactly one of text and media (or a type)",
                ));
            }
        },
    };
    let chat = chat_jid(to);
    let mut stored = Map::new();
    stored.insert("to".into(), json!(to));
    let mut media = None;
    let kind = match kind {
        "text" => {
            only(
                body,
                "",
                &["to", "type", "text", "reply_to", "mentions", "link_preview"],
            )?;
            let mut text = text_field(body, "text")?;
            let mentions = mentions(body, &mut text)?;
            let link_preview = match body.get("link_preview") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("link_preview", "must be true or false")),
            };
            stored.insert("text".into(), json!(text));
            if !mentions.is_empty() {
                stored.insert("mentions".into(), json!(mentions));
            }
            if link_preview {
                stored.insert("link_preview".into(), json!(true));
            }
            reply_to(body, &chat, &mut stored)?;
            "text"
        }
        "media" | "image" | "video" | "document" | "audio" | "voice" | "sticker" => {
            only(body, "", &["to", "type", "media", "caption", "reply_to"])?;
            let m = body
                .get("media")
                .and_then(Value::as_object)
                .ok_or_else(|| ApiError::bad_request("invalid_media", "media must be an object"))?;
            // The caption lived inside `media` before types; both places are accepted.
            only(
                m,
                "media.",
                &["url", "data", "mimetype", "filename", "caption"],
            )?;
            let input = MediaInput {
                url: opt_str(m, "url")?.map(str::to_owned),
                data: opt_str(m, "data")?.map(str::to_owned),
                mimetype: opt_str(m, "mimetype")?.map(str::to_owned),
                filename: opt_str(m, "filename")?.map(str::to_owned),
            };
            if input.url.is_some() == input.data.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_media",
                    "give exactly one of media.url and media.data",
                ));
            }
            if input
                .filename
                .as_ref()
                .is_some_and(|f| f.is_empty() || f.len() > 255)
            {
                return Err(bad("media.filename", "must be 1 to 255 bytes"));
            }
            let caption = match (opt_str(body, "caption")?, opt_str(m, "caption")?) {
                (Some(_), Some(_)) => {
                    return Err(bad("caption", "give caption or media.caption, not both"));
                }
                (c, d) => c.or(d),
            };
            if let Some(c) = caption {
                if c.len() > MAX_CAPTION_BYTES {
                    return Err(bad("caption", format!("at most {MAX_CAPTION_BYTES} bytes")));
                }
                if matches!(kind, "voice" | "sticker" | "audio") {
                    return Err(bad("caption", format!("a {kind} has no caption")));
                }
                stored.insert("caption".into(), json!(c));
            }
            reply_to(body, &chat, &mut stored)?;
            media = Some(input);
            kind
        }
        "location" => {
            only(body, "", &["to", "type", "location"])?;
            let l = req_obj(body, "location")?;
            only(
                l,
                "location.",
                &["latitude", "longitude", "name", "address"],
            )?;
            let coord = |f: &str, lim: f64| {
                l.get(f)
                    .and_then(Value::as_f64)
                    .filter(|v| v.is_finite() && v.abs() <= lim)
                    .ok_or_else(|| {
                        bad(
                            &format!("location.{f}"),
                            format!("must be a number from -{lim} to {lim}"),
                        )
                    })
            };
            let (lat, lng) = (coord("latitude", 90.0)?, coord("longitude", 180.0)?);
            let mut loc = json!({"latitude": lat, "longitude": lng});
            for f in ["name", "address"] {
                if let Some(s) = opt_str(l, f)? {
                    bounded_chars(&format!("location.{f}"), s, 1, MAX_NAME_CHARS)?;
                    loc[f] = json!(s);
                }
            }
            stored.insert("location".into(), loc);
            "location"
        }
        "contact" => {
            only(body, "", &["to", "type", "contact"])?;
            let c = req_obj(body, "contact")?;
            only(c, "contact.", &["name", "phones"])?;
            let name = opt_str(c, "name")?.ok_or_else(|| bad("contact.name", "is required"))?;
            bounded_chars("contact.name", name, 1, MAX_NAME_CHARS)?;
            let list = c
                .get("phones")
                .and_then(Value::as_array)
                .filter(|a| (1..=MAX_CONTACT_PHONES).contains(&a.len()))
                .ok_or_else(|| {
                    bad(
                        "contact.phones",
                        format!("must be a list of 1 to {MAX_CONTACT_PHONES} phone numbers"),
                    )
                })?;
            let mut phones = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let digits = p
                    .as_str()
                    .and_then(normalize_recipient)
                    .filter(|d| !d.contains('@') && d.len() <= 20)
                    .ok_or_else(|| {
                        bad(
                            &format!("contact.phones[{i}]"),
                            "must be a phone number (5 to 20 digits)",
                        )
                    })?;
                phones.push(digits);
            }
            stored.insert("contact".into(), json!({"name": name, "phones": phones}));
            stored.insert("vcard".into(), json!(build_vcard(name, &phones)));
            "contact"
        }
        "poll" => {
            only(body, "", &["to", "type", "poll"])?;
            let p = req_obj(body, "poll")?;
            only(p, "poll.", &["name", "options", "multiple"])?;
            let name = opt_str(p, "name")?.ok_or_else(|| bad("poll.name", "is required"))?;
            bounded_chars("poll.name", name, 1, MAX_POLL_NAME_CHARS)?;
            let (min, max) = POLL_OPTIONS;
            let list = p
                .get("options")
                .and_then(Value::as_array)
                .filter(|a| (min..=max).contains(&a.len()))
                .ok_or_else(|| {
                    bad(
                        "poll.options",
                        format!("must be a list of {min} to {max} options"),
                    )
                })?;
            let mut options: Vec<&str> = Vec::new();
            for (i, o) in list.iter().enumerate() {
                let field = format!("poll.options[{i}]");
                let o = o.as_str().ok_or_else(|| bad(&field, "must be a string"))?;
                bounded_chars(&field, o, 1, MAX_POLL_OPTION_CHARS)?;
                if options.contains(&o) {
                    return Err(bad(&field, "repeats an earlier option"));
                }
                options.push(o);
            }
            let multiple = match p.get("multiple") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad("poll.multiple", "must be true or false")),
            };
            stored.insert(
                "poll".into(),
                json!({"name": name, "options": options, "multiple": multiple}),
            );
            "poll"
        }
        "reaction" => {
            only(body, "", &["to", "type", "wa_id", "emoji"])?;
            let target = wa_id_field(body, "wa_id", Some(&chat), false)?;
            let emoji = opt_str(body, "emoji")?
                .ok_or_else(|| bad("emoji", "is required (\"\" removes the reaction)"))?;
            if emoji.len() > MAX_EMOJI_BYTES
                || emoji
                    .chars()
                    .any(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || c.is_control())
            {
                return Err(bad(
                    "emoji",
                    format!("must be one emoji (at most {MAX_EMOJI_BYTES} bytes) or empty"),
                ));
            }
            stored.insert("wa_id".into(), json!(target));
            stored.insert("emoji".into(), json!(emoji));
            "reaction"
        }
        "edit" => {
            only(body, "", &["to", "type", "wa_id", "text"])?;
            let target = wa_id_field(body, "wa_id", Some(&chat), true)?;
            stored.insert("wa_id".into(), json!(target));
            stored.insert("text".into(), json!(text_field(body, "text")?));
            "edit"
        }
        "delete" => {
            only(body, "", &["to", "type", "wa_id"])?;
            let target = wa_id_field(body, "wa_id", Some(&chat), true)?;
            stored.insert("wa_id".into(), json!(target));
            "delete"
        }
        "forward" => {
            only(body, "", &["to", "type", "wa_id"])?;
            let target = wa_id_field(body, "wa_id", None, false)?;
            stored.insert("wa_id".into(), json!(target));
            "forward"
        }
        _ => unreachable!("every type is matched above"),
    };
    stored.insert("type".into(), json!(kind));
    Ok(Parsed {
        kind,
        stored,
        media,
    })
}

fn reply_to(
    body: &Map<String, Value>,
    chat: &str,
    stored: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    if body.get("reply_to").is_some_and(|v| !v.is_null()) {
        let id = wa_id_field(body, "reply_to", Some(chat), false)?;
        stored.insert("reply_to".into(), json!(id));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
