//! The phone side of the events around messages (issue #12): a contact reacts to, edits or
//! calls; a contact's presence changes. And the page side of the same: a page rejects a call
//! (a `call` stanza with a `reject` child, WhatsApp's wire form) or subscribes to a chat's
//! presence (presence is only sent for subscribed chats, as WhatsApp's server does).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::*;

/// Calls remembered per phone for `GET /sim/calls`.
pub const MAX_CALLS_PER_PHONE: usize = 1_000;
/// Longest reaction text accepted.
pub const MAX_REACTION_BYTES: usize = 64;

/// The per-simulator state of this module.
#[derive(Debug, Default)]
pub struct Activity {
    /// Calls placed to each phone, oldest first.
    calls: BTreeMap<String, VecDeque<CallView>>,
    /// Presence subscriptions per page connection (jids).
    subs: BTreeMap<ConnId, BTreeSet<String>>,
}

/// A call as `GET /sim/calls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallView {
    /// The call id.
    pub id: String,
    /// The caller's digits.
    pub from: String,
    /// The called linked phone.
    pub to: String,
    /// A video call.
    pub video: bool,
    /// `offer` or `rejected`.
    pub state: String,
    /// The device that rejected it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rejected_by: Option<String>,
    /// When it was placed, ms since the epoch.
    pub timestamp: u64,
}

/// `POST /sim/react`: a contact reacts to a message of its chat with a linked phone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactReq {
    /// The linked phone.
    pub to: String,
    /// The reacting contact's digits.
    pub from: String,
    /// The message reacted to (serialized key, as `/sim/inbound` or the page's send gave it).
    pub wa_id: String,
    /// The reaction; `""` removes it.
    #[serde(default)]
    pub emoji: String,
}

/// `POST /sim/edit`: a contact edits a message it sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditReq {
    /// The linked phone.
    pub to: String,
    /// The sender's digits.
    pub from: String,
    /// The message (serialized key from `/sim/inbound`).
    pub wa_id: String,
    /// The new text.
    pub text: String,
}

/// `POST /sim/call`: a contact calls a linked phone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallReq {
    /// The linked phone.
    pub to: String,
    /// The caller's digits.
    pub from: String,
    /// A video call.
    #[serde(default)]
    pub video: bool,
}

/// `POST /sim/presence`: a contact's presence changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceReq {
    /// The linked phone.
    pub to: String,
    /// The contact's digits.
    pub from: String,
    /// `available`, `unavailable`, `typing`, `recording_audio` or `idle` (WhatsApp's types).
    pub state: String,
    /// Last seen, seconds since the epoch.
    #[serde(default)]
    pub last_seen: Option<u64>,
}

/// WhatsApp's chat state types.
pub const PRESENCE_TYPES: [&str; 5] = [
    "available",
    "unavailable",
    "typing",
    "recording_audio",
    "idle",
];

/// The remote (chat) of a serialized key `fromMe_remote_id[_participant]`.
fn remote_of(key: &str) -> Option<&str> {
    let mut parts = key.splitn(4, '_');
    let from_me = parts.next()?;
    if from_me != "true" && from_me != "false" {
        return None;
    }
    let remote = parts.next()?;
    parts.next().filter(|id| !id.is_empty())?;
    Some(remote)
}

impl Sim {
    fn linked(&self, phone: &str) -> Result<(), PhoneError> {
        check_phone(phone)?;
        if self.devices.values().any(|d| d.phone == phone) {
            Ok(())
        } else {
            Err(PhoneError::NotFound(
                "unknown_phone",
                "no device is linked to this phone".into(),
            ))
        }
    }

    /// Whether `wa_id` is a message between `to` and `from`: one `from` sent to `to`
    /// (`/sim/inbound`) or one `to`'s devices sent to `from`.
    fn known_message(&self, to: &str, from: &str, wa_id: &str) -> bool {
        let inbound = self
            .inbound_log
            .get(to)
            .is_some_and(|l| l.iter().any(|(id, s)| id == wa_id && s == from));
        let sent = self
            .sent
            .get(to)
            .is_some_and(|l| l.iter().any(|s| s.view.id == wa_id && s.view.to == from));
        inbound || sent
    }

    /// `/sim/react`.
    pub fn react(&mut self, r: &ReactReq, now: u64) -> Result<String, PhoneError> {
        self.linked(&r.to)?;
        check_phone(&r.from)?;
        if r.emoji.len() > MAX_REACTION_BYTES {
            return Err(PhoneError::Invalid(
                "invalid_emoji",
                format!("a reaction is at most {MAX_REACTION_BYTES} bytes"),
            ));
        }
        if !self.known_message(&r.to, &r.from, &r.wa_id) {
            return Err(PhoneError::NotFound(
                "unknown_message",
                "no message with this wa_id between these phones".into(),
            ));
        }
        let chat = remote_of(&r.wa_id).unwrap_or_default().to_owned();
        let id = self.new_msg_id();
        let key = format!("false_{chat}_{id}");
        self.deliver(
            &r.to,
            ServerMsg::Reaction {
                id,
                chat,
                author: None,
                target: r.wa_id.clone(),
                text: r.emoji.clone(),
                ts_ms: now,
            },
        )?;
        Ok(key)
    }

    /// `/sim/edit`: only the sender's own message.
    pub fn edit(&mut self, e: &EditReq, now: u64) -> Result<(), PhoneError> {
        self.linked(&e.to)?;
        check_phone(&e.from)?;
        if e.text.len() > MAX_TEXT_BYTES {
            return Err(PhoneError::Invalid(
                "text_too_long",
                format!("text is limited to {MAX_TEXT_BYTES} bytes"),
            ));
        }
        let own = self
            .inbound_log
            .get(&e.to)
            .is_some_and(|l| l.iter().any(|(id, s)| id == &e.wa_id && s == &e.from));
        if !own {
            return Err(PhoneError::NotFound(
                "unknown_message",
                "no inbound message with this wa_id from this sender to this phone".into(),
            ));
        }
        let chat = remote_of(&e.wa_id).unwrap_or_default().to_owned();
        let edit_id = self.new_msg_id();
        self.deliver(
            &e.to,
            ServerMsg::Edit {
                target: e.wa_id.clone(),
                chat,
                author: None,
                edit_id,
                body: e.text.clone(),
                ts_ms: now,
            },
        )
    }

    /// `/sim/call`: an offer to the phone's online pages (a call rings only while online).
    pub fn call(&mut self, c: &CallReq, now: u64) -> Result<String, PhoneError> {
        self.linked(&c.to)?;
        check_phone(&c.from)?;
        let conns = self.online_conns_of_phone(&c.to);
        if conns.is_empty() {
            return Err(PhoneError::NotFound(
                "not_online",
                "no device of this phone is online".into(),
            ));
        }
        let bytes: [u8; 16] = self.rng.random();
        let id = hex::encode_upper(bytes);
        self.lids.learn(&c.from);
        for conn in conns {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::Call {
                    id: id.clone(),
                    from: wid_of(&c.from),
                    video: c.video,
                    group: false,
                    ts: now / 1000,
                },
            ));
        }
        let log = self.activity.calls.entry(c.to.clone()).or_default();
        log.push_back(CallView {
            id: id.clone(),
            from: c.from.clone(),
            to: c.to.clone(),
            video: c.video,
            state: "offer".into(),
            rejected_by: None,
            timestamp: now,
        });
        while log.len() > MAX_CALLS_PER_PHONE {
            log.pop_front();
        }
        Ok(id)
    }

    /// `GET /sim/calls?phone=`.
    pub fn calls(&self, phone: &str) -> Result<Vec<CallView>, PhoneError> {
        check_phone(phone)?;
        Ok(self
            .activity
            .calls
            .get(phone)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default())
    }

    /// `/sim/presence`: sent to the phone's pages that subscribed to the contact (by its LID,
    /// as WhatsApp Web subscribes 1:1 chats). Returns how many pages got it.
    pub fn presence(&mut self, p: &PresenceReq) -> Result<usize, PhoneError> {
        self.linked(&p.to)?;
        check_phone(&p.from)?;
        if !PRESENCE_TYPES.contains(&p.state.as_str()) {
            return Err(PhoneError::Invalid(
                "invalid_state",
                format!("state is one of {}", PRESENCE_TYPES.join(", ")),
            ));
        }
        let jid = format!("{}@lid", self.lids.learn(&p.from));
        let conns: Vec<ConnId> = self
            .online_conns_of_phone(&p.to)
            .into_iter()
            .filter(|c| self.activity.subs.get(c).is_some_and(|s| s.contains(&jid)))
            .collect();
        for &conn in &conns {
            self.effects.push(Effect::Send(
                conn,
                ServerMsg::Presence {
                    chat: jid.clone(),
                    participant: None,
                    kind: p.state.clone(),
                    last_seen: p.last_seen,
                },
            ));
        }
        Ok(conns.len())
    }

    /// A page subscribed to a jid's presence.
    pub(super) fn presence_subscribe(&mut self, conn: ConnId, jid: String) {
        if jid.len() > 128 {
            return;
        }
        let subs = self.activity.subs.entry(conn).or_default();
        if subs.len() < 10_000 {
            subs.insert(jid);
        }
    }

    /// A page cast a stanza. The one the simulator understands is a call reject:
    /// `call {to: caller} [reject {call-id, call-creator}]`.
    pub(super) fn stanza(&mut self, conn: ConnId, stanza: &serde_json::Value) {
        let Some(phone) = self
            .conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Connected)
            .and_then(|c| c.device.as_ref())
            .and_then(|d| self.devices.get(d))
            .map(|d| (d.phone.clone(), d.device.clone()))
        else {
            return;
        };
        let attr = |v: &serde_json::Value, k: &str| {
            v.get("attrs")
                .and_then(|a| a.get(k))
                .and_then(|x| x.as_str())
                .map(str::to_owned)
        };
        if stanza.get("tag").and_then(|t| t.as_str()) != Some("call") {
            return;
        }
        let Some(reject) = stanza
            .get("content")
            .and_then(|c| c.as_array())
            .and_then(|c| {
                c.iter()
                    .find(|n| n.get("tag").and_then(|t| t.as_str()) == Some("reject"))
            })
        else {
            return;
        };
        let (Some(call_id), Some(creator)) =
            (attr(reject, "call-id"), attr(reject, "call-creator"))
        else {
            return;
        };
        let to = attr(stanza, "to");
        if let Some(call) = self
            .activity
            .calls
            .get_mut(&phone.0)
            .and_then(|l| l.iter_mut().find(|c| c.id == call_id))
            && wid_of(&call.from) == creator
            && to.as_deref() == Some(creator.as_str())
        {
            call.state = "rejected".into();
            call.rejected_by = Some(phone.1);
        }
    }

    /// Forgets a closed page's subscriptions.
    pub(super) fn activity_disconnect(&mut self, conn: ConnId) {
        self.activity.subs.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::remote_of;

    #[test]
    fn remotes_come_from_serialized_keys() {
        assert_eq!(remote_of("false_491@c.us_3EB0AA"), Some("491@c.us"));
        assert_eq!(remote_of("true_1-2@g.us_3EB0AA_77@lid"), Some("1-2@g.us"));
        assert_eq!(remote_of("maybe_491@c.us_X"), None);
        assert_eq!(remote_of("false_491@c.us_"), None);
    }
}
