//! The chats, history, contacts and chat actions of the simulated servers (issue 12, item 4).
//!
//! Per linked phone the servers keep its chats (name, unread count, archive, pin, mute and the
//! whole history, oldest first) and the contacts its pages know (names, business and blocked
//! flags, a profile picture). A page gets each chat with only its newest messages (`local` of
//! them) and loads earlier ones page by page (`load_msgs`, what `WAWebChatLoadMessages` asks
//! the message store for), so a caller paging back through a long history exercises the "load
//! earlier" path. The page's actions are recorded for the control API: read receipts
//! (`sendConversationSeen`), archive changes, chat states as the protocol names them
//! (`typing`, `recording_audio`, `idle`), block changes and picture lookups.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{ConnId, Effect, Phase, PhoneError, ServerMsg, Sim, check_phone};

/// Messages one chat's history may hold.
pub const MAX_HISTORY: usize = 5_000;
/// Chats per phone.
pub const MAX_CHATS: usize = 1_000;
/// Contacts per phone.
pub const MAX_CONTACTS: usize = 5_000;
/// Entries kept per phone in each action log; the oldest go first.
pub const MAX_LOG: usize = 10_000;
/// Most messages one `load_msgs` answers.
pub const MAX_LOAD: usize = 200;
/// Default number of newest messages a page gets with a chat.
pub const DEFAULT_LOCAL: usize = 10;

/// One message of a chat's history, as the page gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistMsg {
    /// The key id.
    pub id: String,
    /// Sent by the linked phone.
    pub from_me: bool,
    /// Text.
    pub body: String,
    /// Seconds since the epoch.
    pub ts: u64,
}

/// A chat as a page gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatView {
    /// `<digits>@c.us`, `<digits>@lid` or a group id.
    pub id: String,
    /// Its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unread messages.
    pub unread: i64,
    /// Archived.
    pub archive: bool,
    /// Pin time (seconds), 0 when not pinned.
    pub pin: u64,
    /// Mute expiration (seconds; -1 for ever, 0 not muted).
    pub mute: i64,
    /// Last activity (seconds).
    pub t: u64,
    /// The newest messages, oldest first.
    pub msgs: Vec<HistMsg>,
    /// Whether earlier messages exist on the server.
    pub earlier: bool,
}

/// A contact as a page gets it (and `GET /sim/contacts` lists it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactView {
    /// `<digits>@c.us` or `<digits>@lid`.
    pub id: String,
    /// Address-book name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The contact's own name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushname: Option<String>,
    /// In the address book.
    pub is_my_contact: bool,
    /// A business account.
    pub is_business: bool,
    /// Blocked by the phone.
    pub blocked: bool,
    /// Its profile picture URL, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
}

/// `POST /sim/chats`: creates or replaces a chat of a linked phone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSeed {
    /// The linked phone.
    pub phone: String,
    /// The chat id.
    pub chat: String,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// Unread messages (the newest ones of the history count as unread).
    #[serde(default)]
    pub unread: u32,
    /// Archived.
    #[serde(default)]
    pub archived: bool,
    /// Pinned (at the chat's last activity).
    #[serde(default)]
    pub pinned: bool,
    /// Muted for ever.
    #[serde(default)]
    pub muted: bool,
    /// Messages of history to generate: `history <n>` bodies, one a minute, inbound and
    /// outbound alternating, the newest at `ts` (default: now).
    #[serde(default)]
    pub history: u32,
    /// How many of the newest the page gets with the chat (default 10).
    #[serde(default)]
    pub local: Option<u32>,
    /// The newest message's time (seconds).
    #[serde(default)]
    pub ts: Option<u64>,
}

/// `POST /sim/contacts`: creates or replaces a contact of a linked phone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactSeed {
    /// The linked phone.
    pub phone: String,
    /// `<digits>@c.us` or `<digits>@lid`.
    pub id: String,
    /// Address-book name.
    #[serde(default)]
    pub name: Option<String>,
    /// The contact's own name.
    #[serde(default)]
    pub pushname: Option<String>,
    /// In the address book (default true).
    #[serde(default)]
    pub is_my_contact: Option<bool>,
    /// A business account.
    #[serde(default)]
    pub is_business: bool,
    /// Blocked.
    #[serde(default)]
    pub blocked: bool,
    /// Has a profile picture.
    #[serde(default)]
    pub picture: bool,
}

/// A chat of a phone, as `GET /sim/chats` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatState {
    /// The chat id.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// Unread messages now.
    pub unread_count: i64,
    /// Archived now.
    pub archived: bool,
    /// Pinned now.
    pub pinned: bool,
    /// Muted.
    pub muted: bool,
    /// Messages of history.
    pub history: usize,
    /// Read receipts the pages sent for it (`sendConversationSeen`).
    pub read_receipts: u32,
    /// Earlier-message loads the pages made.
    pub loads: u32,
}

/// One chat state a page sent, as `GET /sim/chatstates` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatStateView {
    /// The chat.
    pub chat: String,
    /// The protocol's name: `typing`, `recording_audio` or `idle`.
    pub state: String,
    /// When, ms since the epoch.
    pub timestamp: u64,
}

#[derive(Debug, Clone)]
struct SimChat {
    name: Option<String>,
    unread: i64,
    archived: bool,
    pin: u64,
    mute: i64,
    t: u64,
    history: Vec<HistMsg>,
    local: usize,
    read_receipts: u32,
    loads: u32,
}

impl SimChat {
    fn view(&self, id: &str) -> ChatView {
        let from = self.history.len().saturating_sub(self.local);
        ChatView {
            id: id.to_owned(),
            name: self.name.clone(),
            unread: self.unread,
            archive: self.archived,
            pin: self.pin,
            mute: self.mute,
            t: self.t,
            msgs: self.history[from..].to_vec(),
            earlier: from > 0,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct PhoneChats {
    chats: BTreeMap<String, SimChat>,
    contacts: BTreeMap<String, ContactView>,
    chatstates: VecDeque<ChatStateView>,
}

/// Chats and contacts per phone (a field of [`Sim`]).
pub(super) type ChatBook = BTreeMap<String, PhoneChats>;

fn is_user_at(s: &str, server: &str) -> bool {
    s.strip_suffix(server)
        .and_then(|u| u.strip_suffix('@'))
        .is_some_and(|u| (5..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_chat(id: &str) -> bool {
    is_user_at(id, "c.us")
        || is_user_at(id, "lid")
        || id.strip_suffix("@g.us").is_some_and(|u| {
            (5..=64).contains(&u.len())
                && u.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && !u.starts_with('-')
                && !u.ends_with('-')
        })
}

fn valid_contact(id: &str) -> bool {
    is_user_at(id, "c.us") || is_user_at(id, "lid")
}

fn invalid(what: &'static str, msg: impl Into<String>) -> PhoneError {
    PhoneError::Invalid(what, msg.into())
}

fn push_log<T>(log: &mut VecDeque<T>, v: T) {
    log.push_back(v);
    while log.len() > MAX_LOG {
        log.pop_front();
    }
}

impl Sim {
    /// The phone of a connected, linked page.
    fn phone_of_conn(&self, conn: ConnId) -> Option<String> {
        self.conns
            .get(&conn)
            .filter(|c| c.phase == Phase::Connected)
            .and_then(|c| c.device.as_ref())
            .and_then(|d| self.devices.get(d))
            .map(|d| d.phone.clone())
    }

    fn push_to_phone(&mut self, phone: &str, msg: ServerMsg) {
        for c in self.online_conns_of_phone(phone) {
            self.effects.push(Effect::Send(c, msg.clone()));
        }
    }

    /// `POST /sim/chats`: creates (or replaces) a chat with its history and sends it to the
    /// phone's connected pages.
    pub fn seed_chat(&mut self, seed: ChatSeed, now: u64) -> Result<ChatState, PhoneError> {
        check_phone(&seed.phone)?;
        if !valid_chat(&seed.chat) {
            return Err(invalid(
                "invalid_chat",
                format!("bad chat id {:?}", seed.chat),
            ));
        }
        let count = seed.history as usize;
        if count > MAX_HISTORY || seed.unread as usize > MAX_HISTORY {
            return Err(invalid(
                "invalid_history",
                format!("history and unread are at most {MAX_HISTORY} messages"),
            ));
        }
        if seed.name.as_ref().is_some_and(|n| n.len() > 256) {
            return Err(invalid("invalid_name", "name is at most 256 bytes"));
        }
        let book = self.chats.entry(seed.phone.clone()).or_default();
        if book.chats.len() >= MAX_CHATS && !book.chats.contains_key(&seed.chat) {
            return Err(PhoneError::Conflict(
                "too_many_chats",
                format!("{MAX_CHATS} chats exist already"),
            ));
        }
        let newest = seed.ts.unwrap_or(now / 1000).max(count as u64 * 60);
        let history: Vec<HistMsg> = (0..count)
            .map(|i| HistMsg {
                id: format!("3EB0H{:06}{:08X}", i, (newest as u32) ^ (i as u32)),
                from_me: i % 2 == 1,
                body: format!("history {i}"),
                ts: newest - (count - 1 - i) as u64 * 60,
            })
            .collect();
        let chat = SimChat {
            name: seed.name,
            unread: i64::from(seed.unread),
            archived: seed.archived,
            pin: if seed.pinned { newest } else { 0 },
            mute: if seed.muted { -1 } else { 0 },
            t: newest,
            history,
            local: seed.local.map_or(DEFAULT_LOCAL, |l| l as usize),
            read_receipts: 0,
            loads: 0,
        };
        let view = chat.view(&seed.chat);
        book.chats.insert(seed.chat.clone(), chat);
        self.push_to_phone(&seed.phone, ServerMsg::Chat { chat: view });
        self.chat_state(&seed.phone, &seed.chat)
    }

    fn chat_state(&self, phone: &str, id: &str) -> Result<ChatState, PhoneError> {
        let c = self
            .chats
            .get(phone)
            .and_then(|b| b.chats.get(id))
            .ok_or_else(|| PhoneError::NotFound("chat_not_found", id.to_owned()))?;
        Ok(ChatState {
            id: id.to_owned(),
            name: c.name.clone(),
            unread_count: c.unread,
            archived: c.archived,
            pinned: c.pin > 0,
            muted: c.mute != 0,
            history: c.history.len(),
            read_receipts: c.read_receipts,
            loads: c.loads,
        })
    }

    /// `GET /sim/chats?phone=`: the phone's chats as the servers hold them.
    pub fn chats_of(&self, phone: &str) -> Result<Vec<ChatState>, PhoneError> {
        check_phone(phone)?;
        let ids: Vec<String> = self
            .chats
            .get(phone)
            .map(|b| b.chats.keys().cloned().collect())
            .unwrap_or_default();
        ids.iter().map(|id| self.chat_state(phone, id)).collect()
    }

    /// `POST /sim/contacts`: creates (or replaces) a contact and sends it to the phone's pages.
    pub fn seed_contact(&mut self, seed: ContactSeed) -> Result<ContactView, PhoneError> {
        check_phone(&seed.phone)?;
        if !valid_contact(&seed.id) {
            return Err(invalid(
                "invalid_contact",
                format!("bad contact id {:?}", seed.id),
            ));
        }
        let long = |s: &Option<String>| s.as_ref().is_some_and(|n| n.len() > 256);
        if long(&seed.name) || long(&seed.pushname) {
            return Err(invalid("invalid_name", "names are at most 256 bytes"));
        }
        let book = self.chats.entry(seed.phone.clone()).or_default();
        if book.contacts.len() >= MAX_CONTACTS && !book.contacts.contains_key(&seed.id) {
            return Err(PhoneError::Conflict(
                "too_many_contacts",
                format!("{MAX_CONTACTS} contacts exist already"),
            ));
        }
        let user = seed.id.split('@').next().unwrap_or_default().to_owned();
        let view = ContactView {
            id: seed.id.clone(),
            name: seed.name,
            pushname: seed.pushname,
            is_my_contact: seed.is_my_contact.unwrap_or(true),
            is_business: seed.is_business,
            blocked: seed.blocked,
            picture: seed
                .picture
                .then(|| format!("https://pps.whatsapp.net/v/t61/{user}.jpg?sim=1")),
        };
        book.contacts.insert(seed.id, view.clone());
        self.push_to_phone(
            &seed.phone,
            ServerMsg::Contact {
                contact: view.clone(),
            },
        );
        Ok(view)
    }

    /// `GET /sim/contacts?phone=`: the phone's contacts.
    pub fn contacts_of(&self, phone: &str) -> Result<Vec<ContactView>, PhoneError> {
        check_phone(phone)?;
        Ok(self
            .chats
            .get(phone)
            .map(|b| b.contacts.values().cloned().collect())
            .unwrap_or_default())
    }

    /// `GET /sim/chatstates?phone=`: the chat states the phone's pages sent, oldest first.
    pub fn chatstates_of(&self, phone: &str) -> Result<Vec<ChatStateView>, PhoneError> {
        check_phone(phone)?;
        Ok(self
            .chats
            .get(phone)
            .map(|b| b.chatstates.iter().cloned().collect())
            .unwrap_or_default())
    }

    /// A page connected: it gets every chat and contact of its phone.
    pub(super) fn chat_sync(&mut self, conn: ConnId) {
        let Some(phone) = self.phone_of_conn(conn) else {
            return;
        };
        let Some(book) = self.chats.get(&phone) else {
            return;
        };
        let mut out: Vec<ServerMsg> = book
            .contacts
            .values()
            .map(|c| ServerMsg::Contact { contact: c.clone() })
            .collect();
        out.extend(
            book.chats
                .iter()
                .map(|(id, c)| ServerMsg::Chat { chat: c.view(id) }),
        );
        for m in out {
            self.effects.push(Effect::Send(conn, m));
        }
    }

    /// A page's message-store query: up to `count` messages of `chat` before the message
    /// `before` (the newest without), oldest first.
    pub(super) fn load_msgs(
        &mut self,
        conn: ConnId,
        req: u64,
        chat: String,
        before: Option<String>,
        count: usize,
    ) {
        let answer = self.phone_of_conn(conn).and_then(|phone| {
            let c = self.chats.get_mut(&phone)?.chats.get_mut(&chat)?;
            let end = match &before {
                Some(id) => c.history.iter().position(|m| &m.id == id)?,
                None => c.history.len(),
            };
            let start = end.saturating_sub(count.clamp(1, MAX_LOAD));
            c.loads += 1;
            Some((c.history[start..end].to_vec(), start > 0))
        });
        let msg = match answer {
            Some((msgs, more)) => ServerMsg::Msgs {
                req,
                status: 200,
                msgs,
                more,
            },
            None => ServerMsg::Msgs {
                req,
                status: 404,
                msgs: Vec::new(),
                more: false,
            },
        };
        self.effects.push(Effect::Send(conn, msg));
    }

    /// A page's chat action (`seen`, `archive`, `unarchive`, `chatstate` with `state`, `block`,
    /// `unblock`, `picture`); answered with a status as WhatsApp's servers do.
    pub(super) fn chat_action(
        &mut self,
        conn: ConnId,
        req: u64,
        action: String,
        chat: String,
        state: Option<String>,
        now: u64,
    ) {
        let (status, url) = match self.phone_of_conn(conn) {
            None => (401, None),
            Some(phone) => self.apply_chat_action(&phone, &action, &chat, state, now),
        };
        self.effects.push(Effect::Send(
            conn,
            ServerMsg::ChatResult { req, status, url },
        ));
    }

    fn apply_chat_action(
        &mut self,
        phone: &str,
        action: &str,
        id: &str,
        state: Option<String>,
        now: u64,
    ) -> (u16, Option<String>) {
        let book = self.chats.entry(phone.to_owned()).or_default();
        match action {
            "seen" | "archive" | "unarchive" => {
                let Some(c) = book.chats.get_mut(id) else {
                    return (404, None);
                };
                match action {
                    "seen" => {
                        c.unread = 0;
                        c.read_receipts += 1;
                    }
                    "archive" => {
                        c.archived = true;
                        c.pin = 0;
                    }
                    _ => c.archived = false,
                }
                (200, None)
            }
            "chatstate" => match state.as_deref() {
                Some(s @ ("typing" | "recording_audio" | "idle")) if valid_chat(id) => {
                    push_log(
                        &mut book.chatstates,
                        ChatStateView {
                            chat: id.to_owned(),
                            state: s.to_owned(),
                            timestamp: now,
                        },
                    );
                    (200, None)
                }
                _ => (400, None),
            },
            "block" | "unblock" if valid_contact(id) => {
                let blocked = action == "block";
                let c = book
                    .contacts
                    .entry(id.to_owned())
                    .or_insert_with(|| ContactView {
                        id: id.to_owned(),
                        name: None,
                        pushname: None,
                        is_my_contact: false,
                        is_business: false,
                        blocked: false,
                        picture: None,
                    });
                c.blocked = blocked;
                (200, None)
            }
            "picture" if valid_contact(id) => {
                match book.contacts.get(id).and_then(|c| c.picture.clone()) {
                    Some(url) => (200, Some(url)),
                    None => (404, None),
                }
            }
            _ => (400, None),
        }
    }
}

#[cfg(test)]
mod tests;
