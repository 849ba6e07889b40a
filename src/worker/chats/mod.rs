//! Chats (issue 12, item 4): the chat list, a chat's history, and the chat actions (read,
//! archive, chat state), through the session's WhatsApp Web ([`crate::engine::chats`]).
//!
//! * [`routes`]: the HTTP routes.
//! * here: PURE. The opaque cursors and the query parameters the routes share.
//!
//! Cursors are opaque to clients (base64url of a versioned key): a chat list cursor is the last
//! chat's place in WhatsApp's order (pin, last activity, id), so a page boundary survives chats
//! moving; a contact list cursor is the last contact's id. A cursor that does not decode is
//! `400 invalid_cursor`, never a silent restart from the top.

pub mod routes;

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::api::ApiError;
use crate::engine::chats::{ChatCursor, is_chat_id, is_contact_id};

/// Default page size of the list routes.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size of the list routes.
pub const MAX_LIMIT: usize = 100;
/// Longest cursor accepted, in bytes.
pub const MAX_CURSOR_BYTES: usize = 256;
/// Longest contact search text, in characters.
pub const MAX_QUERY_CHARS: usize = 64;

const CHAT_CURSOR: &str = "c1";
const CONTACT_CURSOR: &str = "k1";

fn invalid_cursor() -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        "cursor must be a next_cursor value this API returned",
    )
}

/// The `limit` parameter: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn parse_limit(query: &HashMap<String, String>) -> Result<usize, ApiError> {
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
            )),
        },
    }
}

fn decode(raw: &str, kind: &str) -> Result<Vec<String>, ApiError> {
    if raw.is_empty() || raw.len() > MAX_CURSOR_BYTES {
        return Err(invalid_cursor());
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid_cursor())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid_cursor())?;
    let mut parts = text.split('|').map(str::to_owned);
    if parts.next().as_deref() != Some(kind) {
        return Err(invalid_cursor());
    }
    Ok(parts.collect())
}

/// The opaque cursor that continues a chat list after `c`.
pub fn encode_chat_cursor(c: &ChatCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CHAT_CURSOR}|{}|{}|{}", c.pin, c.t, c.id))
}

/// Decodes a chat list cursor.
pub fn decode_chat_cursor(raw: &str) -> Result<ChatCursor, ApiError> {
    match decode(raw, CHAT_CURSOR)?.as_slice() {
        [pin, t, id] if is_chat_id(id) => Ok(ChatCursor {
            pin: pin.parse().map_err(|_| invalid_cursor())?,
            t: t.parse().map_err(|_| invalid_cursor())?,
            id: id.clone(),
        }),
        _ => Err(invalid_cursor()),
    }
}

/// The opaque cursor that continues a contact list after the contact `id`.
pub fn encode_contact_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CONTACT_CURSOR}|{id}"))
}

/// Decodes a contact list cursor into the last contact's id.
pub fn decode_contact_cursor(raw: &str) -> Result<String, ApiError> {
    match decode(raw, CONTACT_CURSOR)?.as_slice() {
        [id] if is_contact_id(id) => Ok(id.clone()),
        _ => Err(invalid_cursor()),
    }
}

/// The contact search `q`: trimmed, lowercased, 1 to [`MAX_QUERY_CHARS`] characters without
/// control characters; `None` when absent or empty.
pub fn parse_search(query: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    let Some(q) = query.get("q").map(|q| q.trim()) else {
        return Ok(None);
    };
    if q.is_empty() {
        return Ok(None);
    }
    if q.chars().count() > MAX_QUERY_CHARS || q.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("q must be 1 to {MAX_QUERY_CHARS} characters of text"),
        ));
    }
    Ok(Some(q.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let c = ChatCursor {
            pin: 0,
            t: 1_700_000_000,
            id: "120363025246125486@g.us".into(),
        };
        assert_eq!(decode_chat_cursor(&encode_chat_cursor(&c)).unwrap(), c);
        let k = encode_contact_cursor("4915550002@c.us");
        assert_eq!(decode_contact_cursor(&k).unwrap(), "4915550002@c.us");
        // A contact cursor is not a chat cursor, and nonsense is refused.
        assert!(decode_chat_cursor(&k).is_err());
        for bad in [
            "",
            "!!!",
            "bm9wZQ",
            &URL_SAFE_NO_PAD.encode("c1|x|1|4915550002@c.us"),
            &URL_SAFE_NO_PAD.encode("c1|1|1|../etc"),
            &"A".repeat(300),
        ] {
            assert!(decode_chat_cursor(bad).is_err(), "{bad}");
            assert!(decode_contact_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_and_searches_are_bounded() {
        assert_eq!(parse_limit(&q(&[])).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(&q(&[("limit", "7")])).unwrap(), 7);
        for bad in ["0", "101", "-1", "x", ""] {
            assert!(parse_limit(&q(&[("limit", bad)])).is_err(), "{bad}");
        }
        assert_eq!(
            parse_search(&q(&[("q", "  Ann ")])).unwrap().as_deref(),
            Some("ann")
        );
        assert_eq!(parse_search(&q(&[("q", "")])).unwrap(), None);
        assert!(parse_search(&q(&[("q", &"a".repeat(65))])).is_err());
        assert!(parse_search(&q(&[("q", "a\u{7}")])).is_err());
    }
}
