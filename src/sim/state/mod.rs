//! PURE: the simulated WhatsApp servers and phones, as plain data and functions of time.
//!
//! [`Sim`] keeps the page connections, the linked devices, the messages devices sent and the
//! inbound messages waiting for an offline device. Every method takes the current time in
//! milliseconds and returns nothing that needs I/O: what must reach a page is queued as
//! [`Effect`]s that the websocket layer drains after each call, and `dirty` says that the
//! linked devices changed and the state file should be written. Randomness (QR refs, ids,
//! tokens, pairing codes) comes from a seeded RNG so tests are reproducible.
//!
//! This module does not know about websockets, HTTP or files. It is split by concern:
//! [`wire`] (messages and views), `page` (what a page asks), `phone` (the control API),
//! `addressing` (LIDs and groups), [`media`] (uploads and their checks), `validate`, [`usync`]
//! (the exists query and the accounts it answers from), [`content`] (inbound types, structured
//! messages and quotes in WhatsApp Web's model attributes).

pub mod activity;
mod addressing;
pub mod chats;
pub mod content;
pub mod groups;
pub mod media;
mod page;
mod phone;
pub mod send_types;
pub mod usync;
mod validate;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use base64::Engine as _;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use super::versions::{VersionError, WebVersions, valid_version};
pub use addressing::{Group, lid_of};
pub use usync::QueryView;
pub use validate::valid_phone;
pub(crate) use validate::*;
pub use wire::*;

/// Identifies one websocket connection of a page.
pub type ConnId = u64;

/// Longest text a message may carry, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
pub use media::{MAX_MEDIA_BYTES, MAX_UPLOAD_BYTES};
/// Longest delay of an inbound `ciphertext` placeholder.
pub const MAX_CIPHERTEXT_MS: u64 = 600_000;
/// Inbound messages remembered per phone, so `/sim/revoke` can name one.
pub const MAX_INBOUND_LOG: usize = 10_000;
/// How many old refs of a connection are remembered to tell "expired" from "unknown".
const OLD_REFS_KEPT: usize = 16;
/// Sent messages kept per phone for `/sim/messages`; the oldest go first.
pub const MAX_SENT_PER_PHONE: usize = 10_000;
/// Inbound messages queued per phone while none of its devices is online.
pub const MAX_INBOX_PER_PHONE: usize = 1_000;
/// The pairing-code alphabet WhatsApp uses (no 0, O, I, U).
const CODE_ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTVWXYZ";
/// The phone platform reported in `Conn.platform`.
pub const PHONE_PLATFORM: &str = "android";

/// Timers of the simulated servers, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Lifetime of the first QR ref of a page.
    pub qr_first_ms: u64,
    /// Lifetime of every later ref.
    pub qr_next_ms: u64,
    /// Rotations without a scan before the page goes `UNPAIRED_IDLE`.
    pub qr_max_rotations: u32,
    /// From ack 1 (server) to ack 2 (device).
    pub ack_device_ms: u64,
    /// From ack 2 (device) to ack 3 (read).
    pub ack_read_ms: u64,
    /// How long a page's offline delivery (sync) takes after it connects, before `hasSynced`.
    pub sync_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            qr_first_ms: 60_000,
            qr_next_ms: 20_000,
            qr_max_rotations: 5,
            ack_device_ms: 1_000,
            ack_read_ms: 2_000,
            sync_ms: 0,
        }
    }
}

/// The optional sixth part of WhatsApp Web's QR string (shown when a server-side knob is on; a
/// help link for phones that scan with their camera app).
pub const QR_SIXTH_PART: &str = "https://faq.whatsapp.com/r/ld";
/// How many rotated ADV secrets of a connection are remembered to tell "stale" from "wrong".
const OLD_ADVS_KEPT: usize = 8;

// === state ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connected, no hello yet.
    New,
    Unpaired,
    Idle,
    Connected,
    Conflict,
    /// Booted a retired web version.
    Deprecated,
    /// The phone scanned (or typed the code) and passkey linking holds the link.
    Passkey,
}

/// The `passkey` fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyFault {
    /// A scan or code entry goes through WhatsApp's passkey ("Shortcake") linking, finished or
    /// cancelled by `POST /sim/passkey`.
    Linking,
    /// After CONNECTED the page must pass the integrity checkpoint (`POST /sim/passkey`).
    Checkpoint,
}

#[derive(Debug, Clone)]
struct Conn {
    phase: Phase,
    keys: Option<DeviceKeys>,
    reference: Option<String>,
    old_refs: VecDeque<String>,
    /// ADV secrets this page showed before the current one.
    old_advs: VecDeque<String>,
    rotations: u32,
    next_rotation_at: u64,
    pairing: Option<(String, String)>,
    device: Option<String>,
    /// The web version the page booted.
    version: Option<String>,
    /// While passkey linking holds the link: the phone and the push name it will get.
    passkey: Option<(String, Option<String>)>,
}

/// A linked device, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Device id.
    pub device: String,
    /// Phone digits.
    pub phone: String,
    /// Hex SHA-256 of the token (the token itself lives only in the page's profile).
    pub token_sha256: String,
    /// Push name.
    pub pushname: String,
    /// Noise public key the page had when linked.
    pub noise: String,
    /// When linked, ms since the epoch.
    pub linked_at: u64,
}

/// What `--state-file` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    /// Format version (1).
    pub version: u32,
    /// Linked devices.
    pub devices: Vec<Device>,
    /// Web versions (live, known, retired); absent in files written before versions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebVersions>,
}

#[derive(Debug, Clone)]
struct Sent {
    view: SentView,
    device: String,
    next_ack_at: u64,
}

/// The simulated servers and phones.
#[derive(Debug)]
pub struct Sim {
    timing: Timing,
    rng: StdRng,
    next_conn: ConnId,
    conns: BTreeMap<ConnId, Conn>,
    devices: BTreeMap<String, Device>,
    /// Messages per phone, oldest first.
    sent: BTreeMap<String, VecDeque<Sent>>,
    /// Inbound messages (and revokes) for phones with no connected device.
    inbox: BTreeMap<String, VecDeque<ServerMsg>>,
    /// Inbound messages delivered per phone: (serialized id, sender phone), newest last.
    inbound_log: BTreeMap<String, VecDeque<(String, String)>>,
    /// Groups by wid.
    groups: BTreeMap<String, Group>,
    /// Phones by LID.
    lids: addressing::LidBook,
    /// Completed uploads.
    media: media::MediaStore,
    /// Exists queries per linked phone (`/sim/queries`).
    queries: usync::QueryLogs,
    /// The `usync_error` fault: exists queries fail with this status.
    usync_error: Option<u16>,
    /// The `upload_fail` fault.
    upload_fail: bool,
    /// The `passkey` fault.
    passkey_fault: Option<PasskeyFault>,
    /// Devices that still have to pass the integrity checkpoint.
    checkpoints: std::collections::BTreeSet<String>,
    /// Phones whose reconnects are refused until the given time.
    refusals: BTreeMap<String, u64>,
    effects: Vec<Effect>,
    dirty: bool,
    web: WebVersions,
    /// The `sync_delay_ms` fault, overriding `timing.sync_ms` while set.
    sync_override: Option<u64>,
    /// Chats, history and contacts per phone.
    chats: chats::ChatBook,
    /// Calls and presence subscriptions ([`activity`]).
    activity: activity::Activity,
}

// === impl Sim ===

impl Sim {
    /// A simulator with no devices.
    pub fn new(timing: Timing, seed: u64) -> Self {
        Self {
            timing,
            rng: StdRng::seed_from_u64(seed),
            next_conn: 1,
            conns: BTreeMap::new(),
            devices: BTreeMap::new(),
            sent: BTreeMap::new(),
            inbox: BTreeMap::new(),
            inbound_log: BTreeMap::new(),
            groups: BTreeMap::new(),
            lids: addressing::LidBook::default(),
            media: media::MediaStore::default(),
            queries: usync::QueryLogs::new(),
            usync_error: None,
            upload_fail: false,
            passkey_fault: None,
            checkpoints: std::collections::BTreeSet::new(),
            refusals: BTreeMap::new(),
            effects: Vec::new(),
            dirty: false,
            web: WebVersions::default(),
            sync_override: None,
            chats: chats::ChatBook::new(),
            activity: activity::Activity::default(),
        }
    }

    /// Restores linked devices from a state file's content.
    pub fn restore(&mut self, state: Persisted) {
        for d in state.devices {
            if valid_phone(&d.phone) {
                self.lids.learn(&d.phone);
                self.devices.insert(d.device.clone(), d);
            }
        }
        if let Some(web) = state.web {
            self.web = WebVersions::restored(web);
        }
    }

    /// The linked devices to persist.
    pub fn snapshot(&self) -> Persisted {
        Persisted {
            version: 1,
            devices: self.devices.values().cloned().collect(),
            web: Some(self.web.clone()),
        }
    }

    /// Takes the queued effects.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Whether the linked devices changed since the last call (and resets the flag).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::replace(&mut self.dirty, false)
    }

    // --- page side ---

    /// A page opened its websocket.
    pub fn connect(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                phase: Phase::New,
                keys: None,
                reference: None,
                old_refs: VecDeque::new(),
                old_advs: VecDeque::new(),
                rotations: 0,
                next_rotation_at: u64::MAX,
                pairing: None,
                device: None,
                version: None,
                passkey: None,
            },
        );
        id
    }

    /// A page's websocket closed.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        self.activity_disconnect(conn);
    }

    /// Handles one message from a page.
    pub fn handle(&mut self, conn: ConnId, msg: ClientMsg, now: u64) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        match msg {
            ClientMsg::Hello {
                keys,
                creds,
                version,
            } => self.hello(conn, keys, creds, version, now),
            ClientMsg::RefreshQr => self.refresh_qr(conn, now),
            ClientMsg::PairCodeRequest { req, phone } => self.pair_code_request(conn, req, phone),
            ClientMsg::Send { msg } => self.send(conn, msg, now),
            ClientMsg::Logout { reason } => self.logout(conn, reason),
            ClientMsg::Takeover => self.takeover(conn),
            ClientMsg::QueryExists { req, phone, lid } => {
                self.query_exists(conn, req, phone, lid, now)
            }
            ClientMsg::ChatSync => self.chat_sync(conn),
            ClientMsg::LoadMsgs {
                req,
                chat,
                before,
                count,
            } => self.load_msgs(conn, req, chat, before, count),
            ClientMsg::ChatAction {
                req,
                action,
                chat,
                state,
            } => self.chat_action(conn, req, action, chat, state, now),
            ClientMsg::Stanza { stanza } => self.stanza(conn, &stanza),
            ClientMsg::PresenceSubscribe { jid } => self.presence_subscribe(conn, jid),
            ClientMsg::GroupIq {
                req,
                op,
                group,
                participants,
                value,
            } => self.group_iq(conn, req, &op, group, participants, value, now),
        }
    }

    /// A protocol error from a page (unparseable message).
    pub fn protocol_error(&mut self, conn: ConnId, message: String) {
        self.effects
            .push(Effect::Send(conn, ServerMsg::Error { message }));
    }

    // --- helpers ---

    fn online_conns_of_device(&self, device: &str) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Connected && c.device.as_deref() == Some(device))
            .map(|(id, _)| *id)
            .collect()
    }

    fn online_conns_of_phone(&self, phone: &str) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| {
                c.phase == Phase::Connected
                    && c.device
                        .as_ref()
                        .and_then(|d| self.devices.get(d))
                        .is_some_and(|d| d.phone == phone)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn new_ref(&mut self) -> String {
        let bytes: [u8; 36] = self.rng.random();
        format!(
            "2@{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    fn new_msg_id(&mut self) -> String {
        let bytes: [u8; 8] = self.rng.random();
        format!("3EB0{}", hex::encode_upper(bytes))
    }
}

fn push_old_ref(old: &mut VecDeque<String>, r: String) {
    old.push_back(r);
    while old.len() > OLD_REFS_KEPT {
        old.pop_front();
    }
}
