//! Chats and the contact list in a session's page (issue 12, item 4): the chat list, a chat's
//! history (loading earlier pages through WhatsApp Web's `WAWebChatLoadMessages`), marking a
//! chat read, archiving, chat states (typing/recording/paused), the contact list, profile
//! pictures and blocking, as adapter commands (`assets/wa/adapter/chats.js`).
//!
//! Every answer of the page is checked here before it leaves the engine: ids must look like
//! WhatsApp ids and history messages go through the same checks as the `message` report
//! ([`super::events::parse_report`]), so a surprising WhatsApp Web shape becomes an error, never
//! a wrong answer.

use serde::Serialize;
use serde_json::{Value, json};

use super::driver::{BrowserSession, EngineError, js_string};
use super::events::{EngineEvent, InboundMessage, parse_report};
use super::supervisor::{SessionCommandError, SessionHandle};

/// The adapter's error prefix for a chat WhatsApp Web does not have.
pub const CHAT_NOT_FOUND_PREFIX: &str = "chat_not_found:";
/// The adapter's error prefix for a history anchor that is not in the chat.
pub const MESSAGE_NOT_FOUND_PREFIX: &str = "message_not_found:";
/// The adapter's error prefix for a contact WhatsApp Web does not have.
pub const CONTACT_NOT_FOUND_PREFIX: &str = "contact_not_found:";
/// Most items one page command returns (the routes cap `limit` lower).
pub const MAX_PAGE: usize = 200;

/// Whether `s` is `<digits>@<server>` with 5 to 64 digits.
fn is_user_at(s: &str, server: &str) -> bool {
    s.strip_suffix(server)
        .and_then(|u| u.strip_suffix('@'))
        .is_some_and(|u| (5..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `s` is a group id: `<digits>@g.us` or the older `<digits>-<digits>@g.us`.
fn is_group_id(s: &str) -> bool {
    let Some(user) = s.strip_suffix("@g.us") else {
        return false;
    };
    let mut parts = user.split('-');
    let ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (first, second, rest) = (parts.next(), parts.next(), parts.next());
    (5..=64).contains(&user.len())
        && rest.is_none()
        && first.is_some_and(ok)
        && second.is_none_or(ok)
}

/// Whether `s` is a chat id the chat routes accept: `<digits>@c.us`, `<digits>@lid` or a group.
pub fn is_chat_id(s: &str) -> bool {
    is_user_at(s, "c.us") || is_user_at(s, "lid") || is_group_id(s)
}

/// Whether `s` is a contact id: `<digits>@c.us` or `<digits>@lid`.
pub fn is_contact_id(s: &str) -> bool {
    is_user_at(s, "c.us") || is_user_at(s, "lid")
}

/// Where a chat list page starts: after this chat in WhatsApp's order (pinned first, newest pin
/// first, then the newest activity first, then by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatCursor {
    /// The chat's pin time (seconds), 0 when not pinned.
    pub pin: u64,
    /// The chat's last activity (seconds).
    pub t: u64,
    /// The chat's id.
    pub id: String,
}

/// One chat of the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatSummary {
    /// `<digits>@c.us`, `<digits>@lid` or a group id.
    pub id: String,
    /// The chat's name (the contact's, or the group's subject), if WhatsApp Web has one.
    pub name: Option<String>,
    /// Unread messages (WhatsApp uses -1 for "marked unread").
    pub unread_count: i64,
    /// Whether the chat is archived.
    pub archived: bool,
    /// Whether the chat is pinned.
    pub pinned: bool,
    /// The pin time (for the cursor; not in the API).
    #[serde(skip)]
    pub pin: u64,
    /// Whether notifications are muted now.
    pub muted: bool,
    /// Whether it is a group.
    pub is_group: bool,
    /// The last activity, seconds since the epoch.
    pub timestamp: u64,
    /// The newest message WhatsApp Web holds for the chat.
    #[serde(skip)]
    pub last_message: Option<Box<InboundMessage>>,
}

impl ChatSummary {
    /// The cursor that continues after this chat.
    pub fn cursor(&self) -> ChatCursor {
        ChatCursor {
            pin: self.pin,
            t: self.timestamp,
            id: self.id.clone(),
        }
    }
}

/// A page of chats; `more` when chats follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPage {
    /// The chats, in WhatsApp's order.
    pub chats: Vec<ChatSummary>,
    /// Whether more follow.
    pub more: bool,
}

/// A page of a chat's history, newest first; `more` when earlier messages exist.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The messages, newest first.
    pub messages: Vec<InboundMessage>,
    /// Whether earlier messages exist.
    pub more: bool,
}

/// One contact of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ContactSummary {
    /// The contact's id (`<digits>@c.us` or `<digits>@lid`).
    pub id: String,
    /// Its LID, when known.
    pub lid: Option<String>,
    /// Its phone-number id, when known.
    pub pn: Option<String>,
    /// The name in the phone's address book.
    pub name: Option<String>,
    /// The name the contact set for itself.
    pub push_name: Option<String>,
    /// Whether it is a business account.
    pub is_business: bool,
    /// Whether this account blocked it.
    pub is_blocked: bool,
    /// Whether it is in the phone's address book.
    pub is_my_contact: bool,
}

/// A page of contacts (ordered by id); `more` when contacts follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPage {
    /// The contacts.
    pub contacts: Vec<ContactSummary>,
    /// Whether more follow.
    pub more: bool,
}

/// A chat state ("presence in a chat") to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatState {
    /// Composing text (`sendChatStateComposing`).
    Typing,
    /// Recording a voice note (`sendChatStateRecording`).
    Recording,
    /// Stopped (`sendChatStatePaused`).
    Paused,
}

impl ChatState {
    /// From the API's name.
    pub fn parse(s: &str) -> Option<ChatState> {
        match s {
            "typing" => Some(ChatState::Typing),
            "recording" => Some(ChatState::Recording),
            "paused" => Some(ChatState::Paused),
            _ => None,
        }
    }

    /// The API's (and the adapter's) name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatState::Typing => "typing",
            ChatState::Recording => "recording",
            ChatState::Paused => "paused",
        }
    }
}

fn bad(what: &str, v: &Value) -> EngineError {
    let mut s = v.to_string();
    s.truncate(200);
    EngineError::Adapter(format!("unexpected {what} in answer: {s}"))
}

fn opt_string(v: &Value, field: &str) -> Result<Option<String>, EngineError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.chars().take(1024).collect())),
        Some(other) => Err(bad(field, other)),
    }
}

fn opt_id(v: &Value, field: &str, ok: fn(&str) -> bool) -> Result<Option<String>, EngineError> {
    match opt_string(v, field)? {
        Some(s) if !ok(&s) => Err(bad(field, &json!(s))),
        other => Ok(other),
    }
}

fn flag(v: &Value, field: &str) -> bool {
    v.get(field).and_then(Value::as_bool).unwrap_or(false)
}

fn whole(v: &Value, field: &str) -> u64 {
    v.get(field)
        .and_then(Value::as_f64)
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map_or(0, |n| n as u64)
}

fn items<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, EngineError> {
    match v.get(field) {
        Some(Value::Array(a)) if a.len() <= MAX_PAGE => Ok(a),
        other => Err(bad(field, other.unwrap_or(&Value::Null))),
    }
}

/// A serialized message of the page, checked as the `message` report is.
pub fn parse_message(v: &Value) -> Result<InboundMessage, EngineError> {
    let mut report = v.clone();
    let Some(obj) = report.as_object_mut() else {
        return Err(bad("message", v));
    };
    obj.insert("t".into(), json!("message"));
    match parse_report(&report.to_string()) {
        Ok(events) => events
            .into_iter()
            .find_map(|e| match e {
                EngineEvent::Message(m) => Some(*m),
                _ => None,
            })
            .ok_or_else(|| bad("message", v)),
        Err(e) => Err(EngineError::Adapter(format!("bad message in answer: {e}"))),
    }
}

/// Parses the adapter's `listChats` answer.
pub fn parse_chat_page(v: &Value) -> Result<ChatPage, EngineError> {
    let mut chats = Vec::new();
    for c in items(v, "chats")? {
        let id = opt_id(c, "id", is_chat_id)?.ok_or_else(|| bad("chat", c))?;
        let last_message = match c.get("last_message") {
            None | Some(Value::Null) => None,
            Some(m) => Some(Box::new(parse_message(m)?)),
        };
        chats.push(ChatSummary {
            id,
            name: opt_string(c, "name")?,
            unread_count: c
                .get("unread_count")
                .and_then(Value::as_f64)
                .filter(|n| n.is_finite())
                .map_or(0, |n| (n as i64).max(-1)),
            archived: flag(c, "archived"),
            pinned: flag(c, "pinned"),
            pin: whole(c, "pin"),
            muted: flag(c, "muted"),
            is_group: flag(c, "is_group"),
            timestamp: whole(c, "timestamp"),
            last_message,
        });
    }
    Ok(ChatPage {
        chats,
        more: flag(v, "more"),
    })
}

/// Parses the adapter's `chatMessages` answer.
pub fn parse_history(v: &Value) -> Result<History, EngineError> {
    let messages = items(v, "messages")?
        .iter()
        .map(parse_message)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(History {
        messages,
        more: flag(v, "more"),
    })
}

/// Parses the adapter's `listContacts` answer.
pub fn parse_contact_page(v: &Value) -> Result<ContactPage, EngineError> {
    let mut contacts = Vec::new();
    for c in items(v, "contacts")? {
        contacts.push(ContactSummary {
            id: opt_id(c, "id", is_contact_id)?.ok_or_else(|| bad("contact", c))?,
            lid: opt_id(c, "lid", |s| is_user_at(s, "lid"))?,
            pn: opt_id(c, "pn", |s| is_user_at(s, "c.us"))?,
            name: opt_string(c, "name")?,
            push_name: opt_string(c, "push_name")?,
            is_business: flag(c, "is_business"),
            is_blocked: flag(c, "is_blocked"),
            is_my_contact: flag(c, "is_my_contact"),
        });
    }
    Ok(ContactPage {
        contacts,
        more: flag(v, "more"),
    })
}

fn check_chat(id: &str) -> Result<(), EngineError> {
    if is_chat_id(id) {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!("bad chat id {id:?}")))
    }
}

fn check_contact(id: &str) -> Result<(), EngineError> {
    if is_contact_id(id) {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!("bad contact id {id:?}")))
    }
}

fn limit_of(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

// === impl BrowserSession ===

impl BrowserSession {
    /// A page of the chat list, after `after` (from the start without).
    pub async fn list_chats(
        &self,
        after: Option<&ChatCursor>,
        limit: usize,
    ) -> Result<ChatPage, EngineError> {
        let after = match after {
            Some(c) => {
                check_chat(&c.id)?;
                json!({"pin": c.pin, "t": c.t, "id": c.id}).to_string()
            }
            None => "null".into(),
        };
        let expr = format!(
            "window.__wafleetAdapter.listChats({after}, {})",
            limit_of(limit)
        );
        parse_chat_page(&self.call(expr, "chat list").await?)
    }

    /// Up to `limit` messages of `chat` older than `before` (a serialized key; the newest
    /// without), newest first. Loads earlier pages from WhatsApp when the page holds too few.
    pub async fn chat_messages(
        &self,
        chat: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<History, EngineError> {
        check_chat(chat)?;
        let before = before.map_or_else(|| "null".to_owned(), js_string);
        let expr = format!(
            "window.__wafleetAdapter.chatMessages({}, {before}, {})",
            js_string(chat),
            limit_of(limit)
        );
        parse_history(&self.call(expr, "chat history").await?)
    }

    /// Marks `chat` read (read receipts for its unread messages); answers the unread count
    /// after.
    pub async fn mark_chat_read(&self, chat: &str) -> Result<i64, EngineError> {
        check_chat(chat)?;
        let expr = format!("window.__wafleetAdapter.markChatRead({})", js_string(chat));
        let v = self.call(expr, "mark read").await?;
        v.get("unread_count")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("unread_count", &v))
    }

    /// Archives or unarchives `chat`; answers whether it is archived now.
    pub async fn set_chat_archive(&self, chat: &str, archive: bool) -> Result<bool, EngineError> {
        check_chat(chat)?;
        let expr = format!(
            "window.__wafleetAdapter.setChatArchive({}, {archive})",
            js_string(chat)
        );
        let v = self.call(expr, "archive").await?;
        v.get("archived")
            .and_then(Value::as_bool)
            .ok_or_else(|| bad("archived", &v))
    }

    /// Sends a chat state to `chat`.
    pub async fn send_chat_state(&self, chat: &str, state: ChatState) -> Result<(), EngineError> {
        check_chat(chat)?;
        let expr = format!(
            "window.__wafleetAdapter.sendChatState({}, {})",
            js_string(chat),
            js_string(state.as_str())
        );
        self.call(expr, "chat state").await.map(|_| ())
    }

    /// A page of contacts (by id) after `after`, matching `q` (lowercase) when given.
    pub async fn list_contacts(
        &self,
        after: Option<&str>,
        limit: usize,
        q: Option<&str>,
    ) -> Result<ContactPage, EngineError> {
        if let Some(a) = after {
            check_contact(a)?;
        }
        let after = after.map_or_else(|| "null".to_owned(), js_string);
        let q = q.map_or_else(|| "null".to_owned(), js_string);
        let expr = format!(
            "window.__wafleetAdapter.listContacts({after}, {}, {q})",
            limit_of(limit)
        );
        parse_contact_page(&self.call(expr, "contact list").await?)
    }

    /// The URL of `id`'s profile picture, `None` when it has none (or hides it). One server
    /// query.
    pub async fn contact_picture(&self, id: &str) -> Result<Option<String>, EngineError> {
        check_contact(id)?;
        let expr = format!("window.__wafleetAdapter.contactPicture({})", js_string(id));
        let v = self.call(expr, "profile picture").await?;
        match opt_string(&v, "url")? {
            Some(u) if !u.starts_with("https://") && !u.starts_with("http://") => {
                Err(bad("url", &v))
            }
            other => Ok(other),
        }
    }

    /// Blocks or unblocks `id`; answers whether it is blocked now.
    pub async fn set_contact_blocked(&self, id: &str, blocked: bool) -> Result<bool, EngineError> {
        check_contact(id)?;
        let expr = format!(
            "window.__wafleetAdapter.setContactBlocked({}, {blocked})",
            js_string(id)
        );
        let v = self.call(expr, "block").await?;
        v.get("blocked")
            .and_then(Value::as_bool)
            .ok_or_else(|| bad("blocked", &v))
    }
}

// === impl SessionHandle ===

impl SessionHandle {
    /// [`BrowserSession::list_chats`] (the session must be WORKING).
    pub async fn list_chats(
        &self,
        after: Option<&ChatCursor>,
        limit: usize,
    ) -> Result<ChatPage, SessionCommandError> {
        Ok(self.working_browser()?.list_chats(after, limit).await?)
    }

    /// [`BrowserSession::chat_messages`] (the session must be WORKING).
    pub async fn chat_messages(
        &self,
        chat: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<History, SessionCommandError> {
        Ok(self
            .working_browser()?
            .chat_messages(chat, before, limit)
            .await?)
    }

    /// [`BrowserSession::mark_chat_read`] (the session must be WORKING).
    pub async fn mark_chat_read(&self, chat: &str) -> Result<i64, SessionCommandError> {
        Ok(self.working_browser()?.mark_chat_read(chat).await?)
    }

    /// [`BrowserSession::set_chat_archive`] (the session must be WORKING).
    pub async fn set_chat_archive(
        &self,
        chat: &str,
        archive: bool,
    ) -> Result<bool, SessionCommandError> {
        Ok(self
            .working_browser()?
            .set_chat_archive(chat, archive)
            .await?)
    }

    /// [`BrowserSession::send_chat_state`] (the session must be WORKING).
    pub async fn send_chat_state(
        &self,
        chat: &str,
        state: ChatState,
    ) -> Result<(), SessionCommandError> {
        Ok(self.working_browser()?.send_chat_state(chat, state).await?)
    }

    /// [`BrowserSession::list_contacts`] (the session must be WORKING).
    pub async fn list_contacts(
        &self,
        after: Option<&str>,
        limit: usize,
        q: Option<&str>,
    ) -> Result<ContactPage, SessionCommandError> {
        Ok(self
            .working_browser()?
            .list_contacts(after, limit, q)
            .await?)
    }

    /// [`BrowserSession::contact_picture`] (the session must be WORKING).
    pub async fn contact_picture(&self, id: &str) -> Result<Option<String>, SessionCommandError> {
        Ok(self.working_browser()?.contact_picture(id).await?)
    }

    /// [`BrowserSession::set_contact_blocked`] (the session must be WORKING).
    pub async fn set_contact_blocked(
        &self,
        id: &str,
        blocked: bool,
    ) -> Result<bool, SessionCommandError> {
        Ok(self
            .working_browser()?
            .set_contact_blocked(id, blocked)
            .await?)
    }
}

#[cfg(test)]
mod tests;
