//! Groups (issue 12, item 4): list, create, read, participants, invite links, subject,
//! description and leave, through the session's WhatsApp Web ([`crate::engine::groups`]); and
//! the `group.participants` event payload.
//!
//! * here: PURE. Body validation ([`parse_participants`], [`parse_subject`],
//!   [`parse_description`]), paging ([`page`]), WhatsApp's per-participant codes
//!   ([`participant_status`]) and the event payload ([`change_payload`]).
//! * [`routes`]: the HTTP routes.

pub mod routes;

use serde_json::{Value, json};

use crate::api::ApiError;
use crate::engine::groups::{GroupChange, MAX_PARTICIPANTS, ParticipantResult};
use crate::worker::request::parse_phone;

/// Longest subject WhatsApp accepts, in characters.
pub const MAX_SUBJECT_CHARS: usize = 100;
/// Longest description WhatsApp accepts, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2048;
/// Participants one request may name.
pub const MAX_REQUEST_PARTICIPANTS: usize = 256;
/// Default and largest page of `GET …/groups`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page of `GET …/groups`.
pub const MAX_LIMIT: usize = 500;

const _: () = assert!(MAX_REQUEST_PARTICIPANTS <= MAX_PARTICIPANTS);

/// A participant as the API takes it: a phone number (digits, `+`, spaces, dashes) or a user id
/// `<digits>@c.us` / `<digits>@lid`. Answers the user id.
pub fn parse_participant(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    let bad = || {
        ApiError::bad_request(
            "invalid_participants",
            "participants are phone numbers or <digits>@c.us / <digits>@lid ids",
        )
    };
    match raw.split_once('@') {
        Some((user, "c.us")) => Ok(format!("{}@c.us", parse_phone(user).map_err(|_| bad())?)),
        Some((user, "lid"))
            if (5..=64).contains(&user.len()) && user.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(raw.to_owned())
        }
        Some(_) => Err(bad()),
        None => Ok(format!("{}@c.us", parse_phone(raw).map_err(|_| bad())?)),
    }
}

/// The `participants` of a body: 1 to [`MAX_REQUEST_PARTICIPANTS`] valid participants,
/// duplicates dropped (first kept).
pub fn parse_participants(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list = v.and_then(Value::as_array).ok_or_else(|| {
        ApiError::bad_request("invalid_participants", "participants must be a list")
    })?;
    if list.is_empty() || list.len() > MAX_REQUEST_PARTICIPANTS {
        return Err(ApiError::bad_request(
            "invalid_participants",
            format!("participants are 1 to {MAX_REQUEST_PARTICIPANTS}"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for p in list {
        let id = parse_participant(p.as_str().unwrap_or_default())?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn text_field(
    v: Option<&Value>,
    field: &str,
    code: &str,
    min: usize,
    max: usize,
) -> Result<String, ApiError> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(code, format!("{field} must be a string")))?;
    let n = s.trim().chars().count();
    if n < min || s.chars().count() > max || s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::bad_request(
            code,
            format!("{field} is {min} to {max} characters, no control characters"),
        ));
    }
    Ok(s.to_owned())
}

/// A subject: 1 to [`MAX_SUBJECT_CHARS`] characters, not blank, one line.
pub fn parse_subject(v: Option<&Value>) -> Result<String, ApiError> {
    let s = text_field(v, "subject", "invalid_subject", 1, MAX_SUBJECT_CHARS)?;
    if s.contains('\n') {
        return Err(ApiError::bad_request(
            "invalid_subject",
            "subject is one line",
        ));
    }
    Ok(s)
}

/// A description: 0 (deletes it) to [`MAX_DESCRIPTION_CHARS`] characters.
pub fn parse_description(v: Option<&Value>) -> Result<String, ApiError> {
    text_field(
        v,
        "description",
        "invalid_description",
        0,
        MAX_DESCRIPTION_CHARS,
    )
}

/// What WhatsApp's per-participant code means, as the API names it (docs/api.md "Groups").
pub fn participant_status(code: u16) -> &'static str {
    match code {
        200 => "ok",
        401 => "not_authorized",
        403 => "forbidden",
        404 => "not_found",
        408 => "recently_left",
        409 => "conflict",
        _ => "error",
    }
}

/// The per-participant results as the API answers them.
pub fn results_json(results: &[ParticipantResult]) -> Value {
    Value::Array(
        results
            .iter()
            .map(|r| json!({"id": r.id, "code": r.code, "status": participant_status(r.code)}))
            .collect(),
    )
}

/// A page of `groups` (sorted by id): those after `cursor`, at most `limit`, and the cursor of
/// the next page (`None` on the last one).
pub fn page(
    mut groups: Vec<Value>,
    cursor: Option<&str>,
    limit: usize,
) -> (Vec<Value>, Option<String>) {
    let id = |g: &Value| {
        g.get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    groups.sort_by_key(id);
    if let Some(c) = cursor {
        groups.retain(|g| id(g).as_str() > c);
    }
    let next = (groups.len() > limit).then(|| id(&groups[limit - 1]));
    groups.truncate(limit);
    (groups, next)
}

/// The `group.participants` event payload (docs/webhooks.md).
pub fn change_payload(c: &GroupChange) -> Value {
    json!({
        "group": c.group,
        "action": c.action,
        "participants": c.participants,
        "author": c.author,
        "timestamp": c.timestamp,
        "wa_id": c.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_are_phones_or_user_ids() {
        assert_eq!(
            parse_participant("+49 1555-0002").unwrap(),
            "4915550002@c.us"
        );
        assert_eq!(
            parse_participant("4915550002@c.us").unwrap(),
            "4915550002@c.us"
        );
        assert_eq!(
            parse_participant("123456789012345@lid").unwrap(),
            "123456789012345@lid"
        );
        for bad in ["", "abc", "49@g.us", "12@lid", "4915550002@s.whatsapp.net"] {
            assert!(parse_participant(bad).is_err(), "{bad}");
        }
        let two = json!(["4915550002", "4915550002@c.us", "4915550003"]);
        assert_eq!(parse_participants(Some(&two)).unwrap().len(), 2);
        assert!(parse_participants(Some(&json!([]))).is_err());
        assert!(parse_participants(Some(&json!("4915550002"))).is_err());
        assert!(parse_participants(None).is_err());
    }

    #[test]
    fn subjects_and_descriptions_have_whatsapps_limits() {
        assert!(parse_subject(Some(&json!("Team"))).is_ok());
        for bad in [
            json!(""),
            json!("  "),
            json!("a\nb"),
            json!("x".repeat(101)),
            json!(3),
        ] {
            assert!(parse_subject(Some(&bad)).is_err(), "{bad}");
        }
        assert_eq!(
            parse_subject(Some(&json!("é".repeat(100))))
                .unwrap()
                .chars()
                .count(),
            100
        );
        assert_eq!(parse_description(Some(&json!(""))).unwrap(), "");
        assert!(parse_description(Some(&json!("line\nline"))).is_ok());
        assert!(parse_description(Some(&json!("x".repeat(2049)))).is_err());
    }

    #[test]
    fn pages_follow_the_cursor() {
        let groups: Vec<Value> = (0..5)
            .map(|i| json!({"id": format!("49-{i}@g.us")}))
            .collect();
        let (first, next) = page(groups.clone(), None, 2);
        assert_eq!(first.len(), 2);
        assert_eq!(next.as_deref(), Some("49-1@g.us"));
        let (second, next) = page(groups.clone(), next.as_deref(), 2);
        assert_eq!(second[0]["id"], "49-2@g.us");
        let (last, next) = page(groups, next.as_deref(), 2);
        assert_eq!((last.len(), next), (1, None));
    }

    #[test]
    fn codes_have_names() {
        assert_eq!(participant_status(200), "ok");
        assert_eq!(participant_status(409), "conflict");
        assert_eq!(participant_status(500), "error");
    }
}
