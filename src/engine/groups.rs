//! Groups in a session's page (issue 12, item 4): reads from WhatsApp Web's `GroupMetadata`
//! collection and admin actions through its own group jobs (`WAWebGroupCreateJob`,
//! `WAWebGroupModifyParticipantsJob`, `WAWebGroupInviteAction`, `WAWebGroupModifyInfoJob`,
//! `WAWebExitGroupAction`), as adapter commands (`assets/wa/adapter/groups.js`); and the
//! participant change a `gp2` notification reports ([`GroupChange`]).
//!
//! The page's answers are checked here before anything leaves the engine: group ids must look
//! like `…@g.us` and user ids like `<digits>@c.us` / `<digits>@lid`, so a surprising WhatsApp
//! Web shape becomes an error and never a wrong answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::driver::{BrowserSession, EngineError, js_string};
use super::supervisor::{SessionCommandError, SessionHandle};

/// Most participants one request may name (WhatsApp's own group size limit is 1024).
pub const MAX_PARTICIPANTS: usize = 1024;

/// A participant action of [`BrowserSession::modify_participants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantAction {
    /// Add members.
    Add,
    /// Remove members.
    Remove,
    /// Make members admins.
    Promote,
    /// Make admins plain members.
    Demote,
}

impl ParticipantAction {
    /// The route segment and adapter name.
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantAction::Add => "add",
            ParticipantAction::Remove => "remove",
            ParticipantAction::Promote => "promote",
            ParticipantAction::Demote => "demote",
        }
    }

    /// From a route segment.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "add" => ParticipantAction::Add,
            "remove" => ParticipantAction::Remove,
            "promote" => ParticipantAction::Promote,
            "demote" => ParticipantAction::Demote,
            _ => return None,
        })
    }
}

/// WhatsApp's answer for one participant of a mutation: the user and WhatsApp's status code
/// (`200` done; others per docs/api.md "Groups").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantResult {
    /// The user, `<digits>@c.us` or `<digits>@lid`.
    pub id: String,
    /// WhatsApp's code for this participant.
    pub code: u16,
}

/// A membership change WhatsApp Web announced with a `gp2` notification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChange {
    /// The notification's message key (for deduplication).
    pub id: Option<String>,
    /// The group, `…@g.us`.
    pub group: String,
    /// `add`, `remove`, `promote`, `demote`, `leave` or `join` (by invite link).
    pub action: String,
    /// The users it happened to.
    pub participants: Vec<String>,
    /// Who did it, when WhatsApp says.
    pub author: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: Option<i64>,
}

/// The actions a [`GroupChange`] may carry.
pub const CHANGE_ACTIONS: [&str; 6] = ["add", "remove", "promote", "demote", "leave", "join"];

/// Whether `s` is `<digits>@<server>` with 5 to 64 digits.
fn is_user_id(s: &str) -> bool {
    let Some((user, server)) = s.split_once('@') else {
        return false;
    };
    matches!(server, "c.us" | "lid")
        && (5..=64).contains(&user.len())
        && user.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` is a group id: `<digits>-<digits>@g.us` or `<digits>@g.us`.
pub fn is_group_id(s: &str) -> bool {
    let Some(user) = s.strip_suffix("@g.us") else {
        return false;
    };
    let ok = |p: &str| (1..=32).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    match user.split_once('-') {
        Some((a, b)) => ok(a) && ok(b),
        None => ok(user),
    }
}

fn bad(what: &str, v: &Value) -> EngineError {
    EngineError::Adapter(format!("unexpected {what} in answer: {v}"))
}

/// Parses a `gp2` report into a change; `None` for an action or group that is not one.
pub fn parse_change(mut c: GroupChange) -> Option<GroupChange> {
    if !is_group_id(&c.group) || !CHANGE_ACTIONS.contains(&c.action.as_str()) {
        return None;
    }
    c.participants.retain(|p| is_user_id(p));
    c.participants.truncate(MAX_PARTICIPANTS);
    c.author = c.author.filter(|a| is_user_id(a));
    Some(c)
}

fn check_group(v: &Value) -> Result<Value, EngineError> {
    let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
    if !is_group_id(id) {
        return Err(bad("group id", v));
    }
    if let Some(parts) = v.get("participants") {
        let ok = parts.as_array().is_some_and(|a| {
            a.iter()
                .all(|p| p.get("id").and_then(Value::as_str).is_some_and(is_user_id))
        });
        if !ok {
            return Err(bad("participants", parts));
        }
    }
    Ok(v.clone())
}

/// Parses the per-participant results of a mutation.
pub fn parse_results(v: &Value) -> Result<Vec<ParticipantResult>, EngineError> {
    let list = v
        .get("participants")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("participants", v))?;
    list.iter()
        .map(|p| {
            let id = p.get("id").and_then(Value::as_str).unwrap_or_default();
            let code = p
                .get("code")
                .and_then(|c| {
                    c.as_str()
                        .and_then(|s| s.parse::<u16>().ok())
                        .or_else(|| c.as_u64().and_then(|n| u16::try_from(n).ok()))
                })
                .ok_or_else(|| bad("participant code", p))?;
            if !is_user_id(id) {
                return Err(bad("participant id", p));
            }
            Ok(ParticipantResult {
                id: id.to_owned(),
                code,
            })
        })
        .collect()
}

fn check_ids(group: &str, participants: &[String]) -> Result<(), EngineError> {
    if !is_group_id(group) {
        return Err(EngineError::Invalid(format!("bad group id {group:?}")));
    }
    if participants.len() > MAX_PARTICIPANTS || !participants.iter().all(|p| is_user_id(p)) {
        return Err(EngineError::Invalid("bad participants".into()));
    }
    Ok(())
}

fn js_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| js_string(s)).collect();
    format!("[{}]", parts.join(","))
}

/// A group created by [`BrowserSession::create_group`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedGroup {
    /// `…@g.us`.
    pub id: String,
    /// The subject WhatsApp stored.
    pub subject: String,
    /// The creator (this account).
    pub owner: Option<String>,
    /// Seconds since the epoch.
    pub created_at: Option<i64>,
    /// WhatsApp's answer per requested participant.
    pub participants: Vec<ParticipantResult>,
}

// === impl BrowserSession ===

impl BrowserSession {
    /// The groups WhatsApp Web knows this account is in (without participants).
    pub async fn list_groups(&self) -> Result<Vec<Value>, EngineError> {
        let v = self
            .call("window.__wafleetAdapter.listGroups()".into(), "group list")
            .await?;
        v.get("groups")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("groups", &v))?
            .iter()
            .map(check_group)
            .collect()
    }

    /// One group with its participants; `None` when WhatsApp Web has no such group.
    pub async fn get_group(&self, id: &str) -> Result<Option<Value>, EngineError> {
        check_ids(id, &[])?;
        let expr = format!("window.__wafleetAdapter.getGroup({})", js_string(id));
        match self.call(expr, "group lookup").await {
            Ok(v) => check_group(v.get("group").unwrap_or(&Value::Null)).map(Some),
            Err(EngineError::Adapter(m)) if m.starts_with("group_not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a group with `subject` and `participants` (user ids).
    pub async fn create_group(
        &self,
        subject: &str,
        participants: &[String],
    ) -> Result<CreatedGroup, EngineError> {
        if participants.len() > MAX_PARTICIPANTS || !participants.iter().all(|p| is_user_id(p)) {
            return Err(EngineError::Invalid("bad participants".into()));
        }
        let expr = format!(
            "window.__wafleetAdapter.createGroup({}, {})",
            js_string(subject),
            js_list(participants)
        );
        let v = self.call(expr, "group creation").await?;
        let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
        if !is_group_id(id) {
            return Err(bad("group id", &v));
        }
        Ok(CreatedGroup {
            id: id.to_owned(),
            subject: v
                .get("subject")
                .and_then(Value::as_str)
                .unwrap_or(subject)
                .to_owned(),
            owner: v
                .get("owner")
                .and_then(Value::as_str)
                .filter(|o| is_user_id(o))
                .map(str::to_owned),
            created_at: v.get("created_at").and_then(Value::as_i64),
            participants: parse_results(&v)?,
        })
    }

    /// Adds, removes, promotes or demotes `participants` of group `id`; WhatsApp's answer per
    /// participant. `Ok(None)` when WhatsApp Web has no such group.
    pub async fn modify_participants(
        &self,
        id: &str,
        action: ParticipantAction,
        participants: &[String],
    ) -> Result<Option<Vec<ParticipantResult>>, EngineError> {
        check_ids(id, participants)?;
        let expr = format!(
            "window.__wafleetAdapter.modifyParticipants({}, {}, {})",
            js_string(id),
            js_string(action.as_str()),
            js_list(participants)
        );
        match self.call(expr, "participant change").await {
            Ok(v) => parse_results(&v).map(Some),
            Err(EngineError::Adapter(m)) if m.starts_with("group_not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The group's invite code (a new one when `reset`); `None` for no such group.
    pub async fn group_invite(&self, id: &str, reset: bool) -> Result<Option<String>, EngineError> {
        check_ids(id, &[])?;
        let expr = format!(
            "window.__wafleetAdapter.groupInvite({}, {reset})",
            js_string(id)
        );
        match self.call(expr, "invite code").await {
            Ok(v) => {
                let code = v.get("code").and_then(Value::as_str).unwrap_or_default();
                // Invite codes are short base64url-like tokens; anything else is not one.
                let ok = (8..=64).contains(&code.len())
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(bad("invite code", &v));
                }
                Ok(Some(code.to_owned()))
            }
            Err(EngineError::Adapter(m)) if m.starts_with("group_not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs a group command that answers nothing; `Ok(false)` for no such group.
    async fn group_unit(&self, expr: String, what: &'static str) -> Result<bool, EngineError> {
        match self.call(expr, what).await {
            Ok(_) => Ok(true),
            Err(EngineError::Adapter(m)) if m.starts_with("group_not_found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets the subject; `Ok(false)` for no such group.
    pub async fn set_group_subject(&self, id: &str, subject: &str) -> Result<bool, EngineError> {
        check_ids(id, &[])?;
        let expr = format!(
            "window.__wafleetAdapter.setGroupSubject({}, {})",
            js_string(id),
            js_string(subject)
        );
        self.group_unit(expr, "group subject").await
    }

    /// Sets (or, when empty, deletes) the description; `Ok(false)` for no such group.
    pub async fn set_group_description(&self, id: &str, text: &str) -> Result<bool, EngineError> {
        check_ids(id, &[])?;
        let expr = format!(
            "window.__wafleetAdapter.setGroupDescription({}, {})",
            js_string(id),
            js_string(text)
        );
        self.group_unit(expr, "group description").await
    }

    /// Leaves the group; `Ok(false)` for no such group.
    pub async fn leave_group(&self, id: &str) -> Result<bool, EngineError> {
        check_ids(id, &[])?;
        let expr = format!("window.__wafleetAdapter.leaveGroup({})", js_string(id));
        self.group_unit(expr, "group exit").await
    }
}

// === impl SessionHandle ===

impl SessionHandle {
    /// [`BrowserSession::list_groups`] (the session must be WORKING).
    pub async fn list_groups(&self) -> Result<Vec<Value>, SessionCommandError> {
        Ok(self.working_browser()?.list_groups().await?)
    }

    /// [`BrowserSession::get_group`].
    pub async fn get_group(&self, id: &str) -> Result<Option<Value>, SessionCommandError> {
        Ok(self.working_browser()?.get_group(id).await?)
    }

    /// [`BrowserSession::create_group`].
    pub async fn create_group(
        &self,
        subject: &str,
        participants: &[String],
    ) -> Result<CreatedGroup, SessionCommandError> {
        Ok(self
            .working_browser()?
            .create_group(subject, participants)
            .await?)
    }

    /// [`BrowserSession::modify_participants`].
    pub async fn modify_participants(
        &self,
        id: &str,
        action: ParticipantAction,
        participants: &[String],
    ) -> Result<Option<Vec<ParticipantResult>>, SessionCommandError> {
        Ok(self
            .working_browser()?
            .modify_participants(id, action, participants)
            .await?)
    }

    /// [`BrowserSession::group_invite`].
    pub async fn group_invite(
        &self,
        id: &str,
        reset: bool,
    ) -> Result<Option<String>, SessionCommandError> {
        Ok(self.working_browser()?.group_invite(id, reset).await?)
    }

    /// [`BrowserSession::set_group_subject`].
    pub async fn set_group_subject(
        &self,
        id: &str,
        subject: &str,
    ) -> Result<bool, SessionCommandError> {
        Ok(self
            .working_browser()?
            .set_group_subject(id, subject)
            .await?)
    }

    /// [`BrowserSession::set_group_description`].
    pub async fn set_group_description(
        &self,
        id: &str,
        text: &str,
    ) -> Result<bool, SessionCommandError> {
        Ok(self
            .working_browser()?
            .set_group_description(id, text)
            .await?)
    }

    /// [`BrowserSession::leave_group`].
    pub async fn leave_group(&self, id: &str) -> Result<bool, SessionCommandError> {
        Ok(self.working_browser()?.leave_group(id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn group_ids_have_both_forms() {
        assert!(is_group_id("4915550001-1700000000@g.us"));
        assert!(is_group_id("120363012345678901@g.us"));
        for bad in [
            "",
            "@g.us",
            "49-@g.us",
            "49-1@c.us",
            "4x@g.us",
            "1-2-3@g.us",
        ] {
            assert!(!is_group_id(bad), "{bad}");
        }
    }

    #[test]
    fn results_are_checked() {
        let r = parse_results(&json!({"participants": [
            {"id": "4915550002@c.us", "code": "200"},
            {"id": "123456789012345@lid", "code": 409},
        ]}))
        .unwrap();
        assert_eq!(r[1].code, 409);
        for bad in [
            json!({}),
            json!({"participants": [{"id": "x", "code": "200"}]}),
            json!({"participants": [{"id": "4915550002@c.us", "code": "ok"}]}),
        ] {
            assert!(parse_results(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_keep_only_members_and_known_actions() {
        let c = parse_change(GroupChange {
            group: "49-1@g.us".into(),
            action: "add".into(),
            participants: vec!["4915550002@c.us".into(), "junk".into()],
            author: Some("nobody".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.participants, vec!["4915550002@c.us".to_string()]);
        assert_eq!(c.author, None);
        assert!(
            parse_change(GroupChange {
                group: "49-1@g.us".into(),
                action: "subject".into(),
                ..Default::default()
            })
            .is_none()
        );
    }
}
