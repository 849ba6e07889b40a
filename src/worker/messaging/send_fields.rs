//! The pieces of a send body with a format of their own (issue 12): serialized WhatsApp
//! message keys (`wa_id`, `reply_to`), the vCard of a contact card, and media magic. PURE.

use super::routes::normalize_recipient;

/// The chat id WhatsApp uses for a normalized recipient (`<digits>` → `<digits>@c.us`).
pub fn chat_jid(to: &str) -> String {
    if to.contains('@') {
        to.to_owned()
    } else {
        format!("{to}@c.us")
    }
}

/// A serialized WhatsApp message key, `<fromMe>_<chat>_<id>[_<participant>]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgKey<'a> {
    /// Sent by this account.
    pub from_me: bool,
    /// The chat id.
    pub chat: &'a str,
    /// The stanza id.
    pub id: &'a str,
    /// The group member who sent it.
    pub participant: Option<&'a str>,
}

/// Parses a serialized message key; `None` when it has not that shape.
pub fn parse_msg_key(s: &str) -> Option<MsgKey<'_>> {
    let (from_me, rest) = if let Some(r) = s.strip_prefix("true_") {
        (true, r)
    } else {
        (false, s.strip_prefix("false_")?)
    };
    let mut parts = rest.splitn(3, '_');
    let chat = parts.next()?;
    let id = parts.next()?;
    let participant = parts.next();
    let wid = |w: &str| w.contains('@') && normalize_recipient(w).as_deref() == Some(w);
    let ok = wid(chat)
        && (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
        && participant.is_none_or(|p| wid(p) && !p.ends_with("@g.us"));
    ok.then_some(MsgKey {
        from_me,
        chat,
        id,
        participant,
    })
}

/// Escapes a vCard text value (RFC 6350 §3.4: backslash, comma, semicolon, newline).
pub fn vcard_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The vCard 3.0 WhatsApp sends for a contact: the name, and per number a `TEL` with the
/// `waid` parameter that lets the phone offer "message" / "add" for it. `phones` are digits.
pub fn build_vcard(name: &str, phones: &[String]) -> String {
    let n = vcard_escape(name);
    let mut v = format!("BEGIN:VCARD\nVERSION:3.0\nN:;{n};;;\nFN:{n}\n");
    for p in phones {
        v.push_str(&format!("TEL;type=CELL;waid={p}:+{p}\n"));
    }
    v.push_str("END:VCARD");
    v
}

/// The media type of a legacy `media` send (no `type`), from its mimetype.
pub fn media_type_of(mimetype: &str) -> &'static str {
    match mimetype.split('/').next().unwrap_or_default() {
        "image" => "image",
        "video" => "video",
        "audio" => "audio",
        _ => "document",
    }
}

/// Whether `bytes` are a WebP file (`RIFF` size `WEBP`).
pub fn is_webp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP"
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "true_4915550002@c.us_3EB0ABCDEF012345";

    #[test]
    fn message_keys_are_checked() {
        assert!(parse_msg_key(TARGET).is_some());
        let g = "false_4915550001-1700000000@g.us_ABC123_4915550003@c.us";
        assert_eq!(
            parse_msg_key(g).unwrap().participant,
            Some("4915550003@c.us")
        );
        for bad in [
            "",
            "msg_01H",
            "true_4915550002_3EB0",
            "true_4915550002@c.us_",
            "true_4915550002@c.us_3EB0-X",
            "maybe_4915550002@c.us_3EB0",
            "true_4915550002@evil_3EB0",
            "true_4915550002@c.us_3EB0_4915550001-1@g.us",
        ] {
            assert!(parse_msg_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn vcards_escape_what_vcard_reserves() {
        let v = build_vcard(
            "Doe, John; \\ Jr.\nCEO",
            &["4915550003".into(), "4915550004".into()],
        );
        assert_eq!(
            v,
            "BEGIN:VCARD\nVERSION:3.0\nN:;Doe\\, John\\; \\\\ Jr.\\nCEO;;;\nFN:Doe\\, John\\; \\\\ Jr.\\nCEO\n\
             TEL;type=CELL;waid=4915550003:+4915550003\nTEL;type=CELL;waid=4915550004:+4915550004\nEND:VCARD"
        );
    }

    #[test]
    fn webp_magic() {
        assert!(is_webp(b"RIFF\x10\0\0\0WEBPVP8 "));
        assert!(!is_webp(b"\x89PNG\r\n\x1a\n\0\0\0\0"));
        assert_eq!(media_type_of("audio/ogg"), "audio");
        assert_eq!(media_type_of("application/pdf"), "document");
    }
}
