//! Contact lookups in a session's page: "is this number on WhatsApp?" (one USync query through
//! WhatsApp Web's `WAWebQueryExistsJob`) and the LID ↔ phone number mapping WhatsApp Web keeps
//! (`WAWebApiContact`), as adapter commands (`queryExists`, `lidForPhone`, `phoneForLid`).
//!
//! The page's answers are checked here before anything leaves the engine: ids must look like
//! `<digits>@c.us` / `<digits>@lid`, so a surprising WhatsApp Web shape becomes an error and never
//! a wrong answer.

use serde_json::Value;

use super::driver::{BrowserSession, EngineError, js_string};
use super::supervisor::{SessionCommandError, SessionHandle};

/// The adapter's error prefix for a lookup module this WhatsApp Web build lacks.
pub const UNSUPPORTED_PREFIX: &str = "unsupported_wa_web:";
/// The adapter's error prefix for a WhatsApp server error (`ServerStatusCodeError`).
pub const SERVER_ERROR_PREFIX: &str = "wa_server_error:";

/// The answer to "is this number on WhatsApp?".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exists {
    /// Whether an account has the number.
    pub exists: bool,
    /// The account's phone-number id, `<digits>@c.us`.
    pub wa_id: Option<String>,
    /// Its LID, `<digits>@lid`, when WhatsApp Web knows it.
    pub lid: Option<String>,
}

/// Whether `s` is `<digits>@<server>` with 5 to 64 digits.
fn is_user_id(s: &str, server: &str) -> bool {
    s.strip_suffix(server)
        .and_then(|u| u.strip_suffix('@'))
        .is_some_and(|u| (5..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_digit()))
}

/// The id at `field` of an answer: `None` when absent or null, an error when malformed.
fn id_field(v: &Value, field: &str, server: &str) -> Result<Option<String>, EngineError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if is_user_id(s, server) => Ok(Some(s.clone())),
        Some(other) => Err(EngineError::Adapter(format!(
            "unexpected {field} in answer: {other}"
        ))),
    }
}

/// Parses the adapter's `queryExists` answer.
pub fn parse_exists(v: &Value) -> Result<Exists, EngineError> {
    let exists = v
        .get("exists")
        .and_then(Value::as_bool)
        .ok_or_else(|| EngineError::Adapter("no exists in answer".into()))?;
    let wa_id = id_field(v, "wid", "c.us")?;
    let lid = id_field(v, "lid", "lid")?;
    if exists && wa_id.is_none() {
        return Err(EngineError::Adapter(
            "an existing account without a phone-number id".into(),
        ));
    }
    Ok(if exists {
        Exists { exists, wa_id, lid }
    } else {
        Exists {
            exists,
            wa_id: None,
            lid: None,
        }
    })
}

fn digits_of(phone: &str) -> Result<String, EngineError> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    if !(5..=20).contains(&digits.len()) {
        return Err(EngineError::Invalid(
            "phone must have 5 to 20 digits".into(),
        ));
    }
    Ok(digits)
}

// === impl BrowserSession ===

impl BrowserSession {
    /// Asks WhatsApp whether `phone` (digits) has an account: one server query.
    pub async fn query_exists(&self, phone: &str) -> Result<Exists, EngineError> {
        let digits = digits_of(phone)?;
        let expr = format!(
            "window.__wafleetAdapter.queryExists({})",
            js_string(&digits)
        );
        parse_exists(&self.call(expr, "exists query").await?)
    }

    /// The LID WhatsApp Web has mapped to `phone` (digits), if any. Local, no server query.
    pub async fn lid_for_phone(&self, phone: &str) -> Result<Option<String>, EngineError> {
        let digits = digits_of(phone)?;
        let expr = format!(
            "window.__wafleetAdapter.lidForPhone({})",
            js_string(&digits)
        );
        id_field(&self.call(expr, "LID lookup").await?, "lid", "lid")
    }

    /// The phone-number id WhatsApp Web has mapped to `lid` (`<digits>@lid`), if any. Local.
    pub async fn phone_for_lid(&self, lid: &str) -> Result<Option<String>, EngineError> {
        if !is_user_id(lid, "lid") {
            return Err(EngineError::Invalid(format!("bad LID {lid:?}")));
        }
        let expr = format!("window.__wafleetAdapter.phoneForLid({})", js_string(lid));
        id_field(&self.call(expr, "LID lookup").await?, "pn", "c.us")
    }
}

// === impl SessionHandle ===

impl SessionHandle {
    /// [`BrowserSession::query_exists`] (the session must be WORKING).
    pub async fn query_exists(&self, phone: &str) -> Result<Exists, SessionCommandError> {
        Ok(self.working_browser()?.query_exists(phone).await?)
    }

    /// [`BrowserSession::lid_for_phone`] (the session must be WORKING).
    pub async fn lid_for_phone(&self, phone: &str) -> Result<Option<String>, SessionCommandError> {
        Ok(self.working_browser()?.lid_for_phone(phone).await?)
    }

    /// [`BrowserSession::phone_for_lid`] (the session must be WORKING).
    pub async fn phone_for_lid(&self, lid: &str) -> Result<Option<String>, SessionCommandError> {
        Ok(self.working_browser()?.phone_for_lid(lid).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exists_answers_are_checked() {
        let yes = parse_exists(&json!({"ok": true, "exists": true, "wid": "4915550002@c.us", "lid": "123456789012345@lid"})).unwrap();
        assert_eq!(yes.wa_id.as_deref(), Some("4915550002@c.us"));
        assert_eq!(yes.lid.as_deref(), Some("123456789012345@lid"));
        let no =
            parse_exists(&json!({"ok": true, "exists": false, "wid": null, "lid": null})).unwrap();
        assert_eq!(
            no,
            Exists {
                exists: false,
                wa_id: None,
                lid: None
            }
        );
        for bad in [
            json!({"ok": true}),
            json!({"exists": true, "wid": null}),
            json!({"exists": true, "wid": "123@lid"}),
            json!({"exists": true, "wid": "4915550002@c.us", "lid": "4915550002@c.us"}),
            json!({"exists": true, "wid": "49x5550002@c.us"}),
        ] {
            assert!(parse_exists(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_digits_at_their_server() {
        assert!(is_user_id("123456789012345@lid", "lid"));
        assert!(!is_user_id("1234@lid", "lid"));
        assert!(!is_user_id("123456789012345@c.us", "lid"));
        assert!(!is_user_id("12345-6789@lid", "lid"));
        assert!(digits_of("+49 15").is_err());
        assert_eq!(digits_of("+49 15550001").unwrap(), "4915550001");
    }
}
