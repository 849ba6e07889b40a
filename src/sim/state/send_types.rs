//! What the simulated server checks and records of the send types beyond text and media
//! (issue 12): replies, mentions, forwards, locations, contact cards, polls, reactions, edits
//! and revokes, in the fields WhatsApp Web's message data gives them (docs/simulator.md,
//! "Send types"). `/sim/messages` shows each as [`SendExtras`] next to the message.

use serde::{Deserialize, Serialize};
use serde_json::Number;

use super::*;

/// The fields of an outbound message beyond text and media, as the page sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutExtras {
    /// The quoted message's stanza id (a reply).
    #[serde(rename = "quotedStanzaID", default)]
    pub quoted_stanza_id: Option<String>,
    /// The quoted message's sender.
    #[serde(rename = "quotedParticipant", default)]
    pub quoted_participant: Option<String>,
    /// Mentioned user ids.
    #[serde(rename = "mentionedJidList", default)]
    pub mentioned_jid_list: Option<Vec<String>>,
    /// A forwarded copy.
    #[serde(rename = "isForwarded", default)]
    pub is_forwarded: Option<bool>,
    /// Location.
    #[serde(default)]
    pub lat: Option<Number>,
    /// Location.
    #[serde(default)]
    pub lng: Option<Number>,
    /// Location name and address, one per line.
    #[serde(default)]
    pub loc: Option<String>,
    /// A contact card's display name.
    #[serde(rename = "vcardFormattedName", default)]
    pub vcard_formatted_name: Option<String>,
    /// Poll question.
    #[serde(rename = "pollName", default)]
    pub poll_name: Option<String>,
    /// Poll option names.
    #[serde(rename = "pollOptions", default)]
    pub poll_options: Option<Vec<Option<String>>>,
    /// 0: any number of options, 1: one.
    #[serde(rename = "pollSelectableOptionsCount", default)]
    pub poll_selectable_options_count: Option<u32>,
    /// Length of the poll's message secret (the bytes stay on the page).
    #[serde(rename = "messageSecretLen", default)]
    pub message_secret_len: Option<u32>,
    /// A reaction's emoji ("" removes it).
    #[serde(rename = "reactionText", default)]
    pub reaction_text: Option<String>,
    /// The message a reaction is on.
    #[serde(rename = "reactionParentKey", default)]
    pub reaction_parent_key: Option<String>,
    /// `message_edit` or `revoke` for a protocol message.
    #[serde(default)]
    pub subtype: Option<String>,
    /// The message a protocol message acts on.
    #[serde(rename = "protocolMessageKey", default)]
    pub protocol_message_key: Option<String>,
    /// A text's link preview: the URL as it stands in the text.
    #[serde(rename = "matchedText", default)]
    pub matched_text: Option<String>,
    /// A link preview's title.
    #[serde(default)]
    pub title: Option<String>,
    /// A link preview's description.
    #[serde(default)]
    pub description: Option<String>,
    /// A link preview's canonical URL, when the preview names one.
    #[serde(rename = "canonicalUrl", default)]
    pub canonical_url: Option<String>,
}

/// A text's link preview as `/sim/messages` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPreviewView {
    /// The URL as it stands in the text (`matchedText`).
    pub url: String,
    /// Title (the domain in the phone's minimal preview).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub title: Option<String>,
    /// Description (the URL in the minimal preview).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
    /// Canonical URL, when given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub canonical_url: Option<String>,
}

/// A poll as `/sim/messages` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollView {
    /// Question.
    pub name: String,
    /// Options in order.
    pub options: Vec<String>,
    /// 0: any number, 1: exactly one.
    pub selectable: u32,
}

/// A location as `/sim/messages` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationView {
    /// Degrees.
    pub latitude: Number,
    /// Degrees.
    pub longitude: Number,
    /// Name and address, one per line, when given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
}

/// What a message acts on, and with what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionView {
    /// The target message's serialized key.
    pub target: String,
    /// The emoji of a reaction, the new text of an edit.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
}

/// The recorded fields of a sent message beyond text and media (absent ones are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendExtras {
    /// The stanza id of the message replied to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quoted: Option<String>,
    /// Its sender.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quoted_participant: Option<String>,
    /// Mentioned user ids.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mentions: Option<Vec<String>>,
    /// A forwarded copy.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub forwarded: Option<bool>,
    /// Location messages.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<LocationView>,
    /// A contact card: the vCard.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vcard: Option<String>,
    /// A contact card: its display name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vcard_name: Option<String>,
    /// Polls.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub poll: Option<PollView>,
    /// Reactions: the target and the emoji.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reaction: Option<ActionView>,
    /// Edits: the target and the new text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub edit: Option<ActionView>,
    /// Revokes (delete for everyone): the target.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub revoked: Option<String>,
    /// A text's link preview.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link_preview: Option<LinkPreviewView>,
    /// Voice notes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ptt: Option<bool>,
    /// The audio codec the server found in the bytes (`opus` for OGG/Opus, `ogg`, `mp3`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub codec: Option<String>,
}

/// The codec of audio bytes, from their magic: OGG pages (`OggS`) carrying an `OpusHead`
/// are `opus`, other OGG `ogg`; `ID3` or an MPEG frame sync is `mp3`.
pub fn audio_codec(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"OggS") {
        let head = &bytes[..bytes.len().min(128)];
        return Some(if head.windows(8).any(|w| w == b"OpusHead") {
            "opus"
        } else {
            "ogg"
        });
    }
    if bytes.starts_with(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0)
    {
        return Some("mp3");
    }
    None
}

fn bounded(field: &str, s: &Option<String>, max: usize) -> Result<(), String> {
    match s {
        Some(v) if v.is_empty() || v.len() > max => {
            Err(format!("{field} must be 1 to {max} bytes"))
        }
        _ => Ok(()),
    }
}

/// A text's link preview, checked as the server would: the matched URL is an http(s) URL that
/// stands in the text, and every field is bounded.
fn link_preview(x: &OutExtras, body: Option<&str>) -> Result<Option<LinkPreviewView>, String> {
    let Some(url) = &x.matched_text else {
        if x.title.is_some() || x.description.is_some() || x.canonical_url.is_some() {
            return Err("a link preview needs matchedText".into());
        }
        return Ok(None);
    };
    bounded("matchedText", &x.matched_text, 2048)?;
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err("matchedText must be an http(s) URL".into());
    }
    if !body.is_some_and(|b| b.contains(url.as_str())) {
        return Err("matchedText must stand in the text".into());
    }
    bounded("title", &x.title, 1024)?;
    bounded("description", &x.description, 4096)?;
    bounded("canonicalUrl", &x.canonical_url, 2048)?;
    Ok(Some(LinkPreviewView {
        url: url.clone(),
        title: x.title.clone(),
        description: x.description.clone(),
        canonical_url: x.canonical_url.clone(),
    }))
}

impl Sim {
    /// Whether `phone` sent a message with serialized key `id` (not refused).
    fn sent_by(&self, phone: &str, id: &str) -> bool {
        self.sent.get(phone).is_some_and(|l| {
            l.iter()
                .any(|s| s.view.id == id && s.view.refused.is_none())
        })
    }

    /// Checks the fields of `kind` beyond text and media as WhatsApp's servers would, and what
    /// `/sim/messages` records of them.
    pub(super) fn check_extras(
        &self,
        phone: &str,
        m: &OutMsg,
        kind: &str,
    ) -> Result<SendExtras, String> {
        let x = &m.extra;
        let mut out = SendExtras {
            quoted: x.quoted_stanza_id.clone(),
            quoted_participant: x.quoted_participant.clone(),
            mentions: x.mentioned_jid_list.clone().filter(|l| !l.is_empty()),
            forwarded: x.is_forwarded.filter(|f| *f),
            ..SendExtras::default()
        };
        if let Some(q) = &out.quoted
            && (q.is_empty() || q.len() > 64 || !q.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err("quotedStanzaID must be a message's key id".into());
        }
        if out.quoted.is_some() && out.quoted_participant.is_none() {
            return Err("a reply needs quotedParticipant".into());
        }
        if let Some(list) = &out.mentions
            && (list.len() > 1024
                || list
                    .iter()
                    .any(|w| !(w.ends_with("@c.us") || w.ends_with("@lid"))))
        {
            return Err("mentionedJidList must hold user ids".into());
        }
        match kind {
            "chat" => out.link_preview = link_preview(x, m.body.as_deref())?,
            "location" => {
                let (Some(lat), Some(lng)) = (&x.lat, &x.lng) else {
                    return Err("a location needs lat and lng".into());
                };
                let ok = |n: &Number, lim: f64| n.as_f64().is_some_and(|v| v.abs() <= lim);
                if !ok(lat, 90.0) || !ok(lng, 180.0) {
                    return Err("lat must be within ±90 and lng within ±180".into());
                }
                bounded("loc", &x.loc, 1024)?;
                out.location = Some(LocationView {
                    latitude: lat.clone(),
                    longitude: lng.clone(),
                    description: x.loc.clone(),
                });
            }
            "vcard" => {
                let card = m.body.clone().ok_or("a contact card needs a vCard body")?;
                if !card.starts_with("BEGIN:VCARD") || !card.trim_end().ends_with("END:VCARD") {
                    return Err("the body must be a vCard (BEGIN:VCARD … END:VCARD)".into());
                }
                bounded("vcardFormattedName", &x.vcard_formatted_name, 1024)?;
                out.vcard = Some(card);
                out.vcard_name = x.vcard_formatted_name.clone();
            }
            "poll_creation" => {
                let name = x.poll_name.clone().ok_or("a poll needs pollName")?;
                bounded("pollName", &Some(name.clone()), 1024)?;
                let options: Vec<String> = x
                    .poll_options
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect::<Option<_>>()
                    .ok_or("every poll option needs a name")?;
                if !(2..=12).contains(&options.len()) {
                    return Err("a poll has 2 to 12 options".into());
                }
                let selectable = x
                    .poll_selectable_options_count
                    .ok_or("a poll needs pollSelectableOptionsCount")?;
                if selectable as usize > options.len() {
                    return Err("pollSelectableOptionsCount is more than the options".into());
                }
                if x.message_secret_len != Some(32) {
                    return Err("a poll needs a 32-byte messageSecret".into());
                }
                out.poll = Some(PollView {
                    name,
                    options,
                    selectable,
                });
            }
            "reaction" => {
                let target = x
                    .reaction_parent_key
                    .clone()
                    .ok_or("a reaction needs reactionParentKey")?;
                if !target.contains(&format!("_{}_", m.to)) {
                    return Err("a reaction must be on a message of its chat".into());
                }
                let emoji = x
                    .reaction_text
                    .clone()
                    .ok_or("a reaction needs reactionText")?;
                if emoji.len() > 64 {
                    return Err("reactionText is one emoji".into());
                }
                out.reaction = Some(ActionView {
                    target,
                    value: Some(emoji),
                });
            }
            "protocol" => {
                let target = x
                    .protocol_message_key
                    .clone()
                    .ok_or("a protocol message needs protocolMessageKey")?;
                if !self.sent_by(phone, &target) {
                    return Err("only your own sent messages can be edited or revoked".into());
                }
                match x.subtype.as_deref() {
                    Some("message_edit") => {
                        let text = m
                            .body
                            .clone()
                            .or_else(|| m.caption.clone())
                            .ok_or("an edit needs the new body")?;
                        bounded("body", &Some(text.clone()), MAX_TEXT_BYTES)?;
                        out.edit = Some(ActionView {
                            target,
                            value: Some(text),
                        });
                    }
                    Some("revoke") => out.revoked = Some(target),
                    other => return Err(format!("unsupported protocol subtype {other:?}")),
                }
            }
            _ => {}
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_from_magic() {
        let mut ogg = b"OggS\0\x02".to_vec();
        ogg.extend_from_slice(&[0; 22]);
        ogg.extend_from_slice(b"OpusHead\x01\x01");
        assert_eq!(audio_codec(&ogg), Some("opus"));
        assert_eq!(audio_codec(b"OggS\0\x02vorbis"), Some("ogg"));
        assert_eq!(audio_codec(b"ID3\x04\0"), Some("mp3"));
        assert_eq!(audio_codec(&[0xFF, 0xFB, 0x90]), Some("mp3"));
        assert_eq!(audio_codec(b"RIFF\0\0\0\0WAVE"), None);
    }

    #[test]
    fn link_previews_must_match_the_text_and_be_bounded() {
        let x = |m: &str, t: Option<&str>| OutExtras {
            matched_text: Some(m.into()),
            title: t.map(Into::into),
            ..OutExtras::default()
        };
        let body = Some("see https://example.com/a?b=1 now");
        let ok = link_preview(&x("https://example.com/a?b=1", Some("example.com")), body)
            .unwrap()
            .unwrap();
        assert_eq!(ok.url, "https://example.com/a?b=1");
        assert_eq!(ok.title.as_deref(), Some("example.com"));
        assert_eq!(link_preview(&OutExtras::default(), body), Ok(None));
        assert!(link_preview(&x("https://other.example/", None), body).is_err());
        assert!(
            link_preview(&x("ftp://example.com/a", None), Some("ftp://example.com/a")).is_err()
        );
        assert!(link_preview(&x("https://example.com/a?b=1", Some("")), body).is_err());
        let orphan = OutExtras {
            title: Some("t".into()),
            ..OutExtras::default()
        };
        assert!(link_preview(&orphan, body).is_err());
    }
}
